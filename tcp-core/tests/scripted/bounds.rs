//! Bounded memory: the reassembly bound, the receive and send buffers, the connection limit
//! (the SYN queue is in `syn_flood`). What exceeds a bound is dropped and counted.

use crate::harness::*;
use std::net::SocketAddrV4;
use tcp_core::testing::pair_addr;
use tcp_core::{EndpointConfig, SocketError};

/// At most `max_ooo_ranges` out-of-order ranges are kept; a segment needing another is
/// dropped (and counted in `reassembly_dropped`), and still gets its duplicate ACK.
#[test]
fn reassembly_bound_drops_and_counts() {
    let mut cfg = cfg_full();
    cfg.tcp.max_ooo_ranges = 2;
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(101, 1, b"aa"));
    h.expect(&[Exp::ack(1, 1).sack(&[(101, 103)])]);
    h.send(11, Seg::data(201, 1, b"bb"));
    h.expect(&[Exp::ack(1, 1).sack(&[(201, 203), (101, 103)])]);
    h.send(12, Seg::data(301, 1, b"cc"));
    h.expect(&[Exp::ack(1, 1).sack(&[(201, 203), (101, 103)])]);
    assert_eq!(h.counters().reassembly_dropped, 1);
    // Adjacent to a kept range: merged, no new range needed.
    h.send(13, Seg::data(203, 1, b"BB"));
    h.expect(&[Exp::ack(1, 1).sack(&[(201, 205), (101, 103)])]);
    assert_eq!(h.counters().reassembly_dropped, 1);
}

/// The receive buffer bounds the window: once it is full the stack advertises zero and
/// drops (and counts) what arrives beyond it, answering with an ACK.
#[test]
fn receive_buffer_bounds_the_window() {
    let mut cfg = cfg_plain();
    cfg.tcp.recv_buffer = 2000;
    let mut h = H::new(cfg);
    let synack = h.passive_open(0, PeerOpts::plain());
    assert_eq!(synack.window, 2000);
    h.send(10, Seg::data(1, 1, &bytes(1460)));
    h.expect(&[Exp::ack(1, 1461)]);
    h.send(11, Seg::data(1461, 1, &bytes(540)));
    h.expect(&[Exp::ack(1, 2001).win(0)]);
    let before = h.counters().out_of_window;
    h.send(12, Seg::data(2001, 1, b"over"));
    h.expect(&[Exp::ack(1, 2001).win(0)]);
    assert_eq!(h.counters().out_of_window, before + 1);
    assert_eq!(h.read().len(), 2000);
    // Reading opens the window again: a window update goes out.
    h.expect(&[Exp::ack(1, 2001).win(2000)]);
}

/// The send buffer bounds what the application can queue: a partial write, then
/// `WouldBlock`.
#[test]
fn send_buffer_bounds_writes() {
    let mut cfg = cfg_plain();
    cfg.tcp.send_buffer = 4000;
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    let c = h.c();
    assert_eq!(h.ep.send(c, &bytes(5000)), Ok(4000));
    assert_eq!(h.ep.send(c, b"x"), Err(SocketError::WouldBlock));
    assert_eq!(h.ep.send_space(c), Ok(0));
    h.take();
    h.send(10, Seg::ack(1, 1461));
    assert_eq!(h.ep.send_space(c), Ok(1460));
}

/// `max_connections` counts listeners and connections in every state; a SYN beyond it is
/// dropped and counted in `table_full`, and so is a `connect`.
#[test]
fn connection_limit_drops_syns_and_refuses_connects() {
    let mut h = H::new(EndpointConfig {
        max_connections: 2,
        ..cfg_plain()
    });
    h.passive_open(0, PeerOpts::plain());
    h.peer_port = PEER_PORT + 1;
    h.send(1, Seg::syn(0));
    h.expect_nothing();
    assert_eq!(h.counters().table_full, 1);
    let now = h.now();
    assert_eq!(
        h.ep.connect(now, SocketAddrV4::new(pair_addr(0).1, 9)),
        Err(SocketError::TooManyConnections)
    );
    assert_eq!(h.counters().table_full, 2);
    // A slot freed (the connection closes) makes room again.
    h.peer_port = PEER_PORT;
    h.abort();
    h.take();
    let c = h.c();
    assert_eq!(h.ep.state(c), Err(SocketError::BadHandle));
    h.peer_port = PEER_PORT + 1;
    h.send(2, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1).port(PEER_PORT + 1)]);
    assert_eq!(h.ep.connection_count(), 2);
}

/// RFC 9293 §3.8.6: "shrinking the window" (moving its right edge to the left) "is strongly
/// discouraged"; RFC 1122 §4.2.2.16: "A TCP receiver SHOULD NOT shrink the window". The
/// SYN-ACK offered 2000 octets; after 1460 of them the window is 540, not 0 (receiver SWS
/// avoidance keeps the right edge where it is, RFC 9293 §3.8.6.2.2).
#[test]
fn receive_window_does_not_shrink_below_what_the_syn_ack_offered() {
    let mut cfg = cfg_plain();
    cfg.tcp.recv_buffer = 2000;
    let mut h = H::new(cfg);
    let synack = h.passive_open(0, PeerOpts::plain());
    assert_eq!(synack.window, 2000);
    h.send(10, Seg::data(1, 1, &bytes(1460)));
    h.expect(&[Exp::ack(1, 1461).win(540)]);
}

/// The same after an active open: our SYN offered 2000 octets.
#[test]
fn receive_window_does_not_shrink_below_what_the_syn_offered() {
    let mut cfg = cfg_plain();
    cfg.tcp.recv_buffer = 2000;
    let mut h = H::new(cfg);
    let syn = h.connect(0);
    assert_eq!(syn.window, 2000);
    h.send(1, Seg::synack(0, 1).with_opts(PeerOpts::plain()));
    h.expect(&[Exp::ack(1, 1)]);
    h.send(10, Seg::data(1, 1, &bytes(1460)));
    h.expect(&[Exp::ack(1, 1461).win(540)]);
}
