//! The next hop of a connection comes from the routes and the ARP cache, never from the
//! Ethernet source of a segment: no checksum covers the Ethernet header, so a bit flipped
//! there on the way is invisible to IP and TCP. Seen in the interop soak: a relay flipped one
//! bit of the kernel's MAC in a SYN (de:53:df:… became de:53:db:…); our SYN-ACK and all its
//! retransmissions went to that address, the kernel's interface dropped them as addressed to
//! another host (drop reason OTHERHOST), and the kernel client stayed in SYN-SENT. Linux
//! itself answers through its neighbour table (the SYN-ACK is routed like any other packet).
//!
//! The harness checks the destination MAC of every frame the stack sends against the peer's
//! (the static ARP entry of the configuration).

use crate::harness::*;
use std::net::Ipv4Addr;
use tcp_core::wire::{self, ChecksumMode, EthIpv4Header, EthernetAddress, Inbound, TcpSegmentOut};
use tcp_core::{EndpointConfig, State};

/// `frame` with one bit of its Ethernet source flipped, as the relay did (byte 2 of the
/// address, 0x04): still a unicast address, and the IP and TCP checksums still hold.
fn damaged_source(mut frame: Vec<u8>) -> Vec<u8> {
    frame[6 + 2] ^= 0x04;
    assert!(
        matches!(
            wire::parse_frame(&frame, ChecksumMode::SOFTWARE),
            Ok(Inbound::Tcp { .. })
        ),
        "the damaged frame still parses as a valid segment"
    );
    frame
}

/// A SYN whose Ethernet source was damaged on the way is answered at the peer's address as
/// the ARP cache has it, and so are the SYN-ACK's retransmissions; the handshake completes.
#[test]
fn a_syn_from_a_damaged_source_mac_is_answered_at_the_arp_entry() {
    let mut h = H::full();
    h.listen(16);
    let syn = h.frame(&Seg::syn(0).with_opts(PeerOpts::full()));
    h.raw(&damaged_source(syn));
    h.expect(&[Exp::synack(0, 1)]);
    // The SYN-ACK is lost: its retransmission goes to the same, right, address.
    let t = h.wake();
    h.expect(&[Exp::synack(0, 1)]);
    h.auto_ts = true;
    h.send(t, Seg::ack(1, 1));
    h.expect_nothing();
    let c = h.ep.accept(h.listener.unwrap()).expect("accept");
    h.conn = Some(c);
    assert_eq!(h.state(), State::Established);
    h.write(b"hello");
    h.expect(&[Exp::data(1, 1, b"hello")]);
}

/// The same for a connection made by a SYN cookie: the ACK that carries the cookie (and
/// creates the connection) came with a damaged Ethernet source; what the connection sends
/// goes to the ARP entry's address.
#[test]
fn a_cookie_ack_from_a_damaged_source_mac_makes_a_connection_that_sends_to_the_arp_entry() {
    let mut h = H::new(EndpointConfig {
        syn_queue: 1,
        ..cfg_plain()
    });
    h.listen(16);
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);
    // The queue is full: the next SYN gets a cookie.
    h.peer_port = PEER_PORT + 1;
    h.send(1, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1).port(PEER_PORT + 1)]);
    let ack = h.frame(&Seg::data(1, 1, b"hello"));
    h.at(10);
    h.raw(&damaged_source(ack));
    h.expect(&[Exp::ack(1, 6).port(PEER_PORT + 1)]);
    assert_eq!(h.counters().syn_cookies_accepted, 1);
}

/// A SYN from an address we have no route to (off our subnet, no gateway) is still answered,
/// at the MAC it came from: there is no ARP entry to go by. (The harness's checks expect the
/// peer's address, so this test reads the endpoint's output itself.)
#[test]
fn a_syn_from_an_address_with_no_route_is_answered_at_its_source_mac() {
    let mut h = H::full();
    h.listen(16);
    let frame = h.frame(&Seg::syn(0).with_opts(PeerOpts::full()));
    let Ok(Inbound::Tcp { eth, ip, seg }) = wire::parse_frame(&frame, ChecksumMode::SOFTWARE)
    else {
        panic!("the script's SYN parses");
    };
    let (stranger_ip, stranger_mac) = (
        Ipv4Addr::new(192, 0, 2, 7),
        EthernetAddress([2, 0, 0, 0, 0x77, 7]),
    );
    let hdr = EthIpv4Header::new(stranger_mac, eth.dst, stranger_ip, ip.dst);
    let out = TcpSegmentOut {
        src_port: seg.src_port,
        dst_port: seg.dst_port,
        seq: seg.seq,
        ack: seg.ack,
        flags: seg.flags,
        window: seg.window,
        urgent: 0,
        options: seg.options,
    };
    let mut buf = vec![0u8; 1514];
    let n = wire::emit_tcp(&mut buf, &hdr, &out, &[], ChecksumMode::SOFTWARE).unwrap();
    let now = h.now();
    h.ep.handle_frame(now, &buf[..n]);
    let n = h.ep.poll_transmit(now, &mut buf).expect("a SYN-ACK");
    let Ok(Inbound::Tcp { eth, ip, seg }) = wire::parse_frame(&buf[..n], ChecksumMode::SOFTWARE)
    else {
        panic!("the stack sent a valid segment");
    };
    assert_eq!((eth.dst, ip.dst), (stranger_mac, stranger_ip));
    assert_eq!(seg.flags, SYN | ACK);
    assert!(h.ep.poll_transmit(now, &mut buf).is_none());
}
