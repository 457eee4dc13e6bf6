//! Counters: segments in and out, retransmissions, bad checksums, RSTs sent, challenge ACKs.

use crate::harness::*;
use tcp_core::wire::{ETHERNET_HEADER_LEN, IPV4_HEADER_LEN};

#[test]
fn counters_count_segments_in_and_out() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    let c = h.counters();
    assert_eq!((c.segments_in, c.segments_out), (2, 1));
    assert_eq!((c.frames_in, c.frames_out), (2, 1));
    assert_eq!(c.connections_opened, 1);
    h.send(1, Seg::data(1, 1, b"abc"));
    h.write(b"xyz");
    h.take();
    let c = h.counters();
    assert_eq!((c.segments_in, c.segments_out), (3, 3));
}

#[test]
fn counters_count_retransmissions() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(b"abc");
    h.take();
    h.wake();
    h.wake();
    h.take();
    let c = h.counters();
    assert_eq!(c.retransmits, 2);
    assert_eq!(c.segments_out, 1 + 1 + 2);
}

/// A frame with a bad TCP checksum is dropped before any processing (not even a RST), and
/// counted.
#[test]
fn counters_count_bad_checksums() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    let mut frame = h.frame(&Seg::data(1, 1, b"abc"));
    frame[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 16] ^= 0x55;
    h.raw(&frame);
    h.expect_nothing();
    assert_eq!(h.read(), b"");
    let c = h.counters();
    assert_eq!((c.bad_checksum, c.segments_in), (1, 2));
    // To a closed port too: no RST for a corrupt segment.
    h.peer_port = PEER_PORT + 1;
    let mut frame = h.frame(&Seg::syn(0));
    frame[ETHERNET_HEADER_LEN + 10] ^= 0x01; // IPv4 header checksum
    h.raw(&frame);
    h.expect_nothing();
    assert_eq!(h.counters().bad_checksum, 2);
}

#[test]
fn counters_count_rsts_sent() {
    let mut h = H::plain();
    h.peer_port = PEER_PORT + 1;
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::rstack(0, 1).port(PEER_PORT + 1)]);
    h.peer_port = PEER_PORT;
    h.passive_open(1, PeerOpts::plain());
    h.abort();
    h.take();
    let c = h.counters();
    assert_eq!(c.rst_sent, 2);
    assert_eq!(c.aborts, 1);
}

#[test]
fn counters_count_rsts_received_and_challenge_acks() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::rst(50));
    h.send(1, Seg::syn(1));
    h.take();
    assert_eq!(h.counters().challenge_acks, 2);
    assert_eq!(h.counters().rst_received, 0);
    h.send(2, Seg::rst(1));
    assert_eq!(h.counters().rst_received, 1);
}
