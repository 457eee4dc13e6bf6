//! Transmit order: control segments (SYN, SYN-ACK, RST) first, then pure ACKs, then data,
//! whatever order they became ready in.

use crate::harness::*;

#[test]
fn transmit_order_is_control_then_acks_then_data() {
    let mut h = H::plain();
    // Three established connections.
    let mut conns = Vec::new();
    for i in 0..3u16 {
        h.peer_port = PEER_PORT + i;
        h.passive_open(0, PeerOpts::plain());
        conns.push(h.c());
    }
    // Without draining in between: data on connection 0, an ACK owed on connection 1, a
    // RST (abort) on connection 2, a SYN-ACK for a new connection 3.
    let now = h.now();
    h.ep.send(conns[0], b"data").unwrap();
    h.peer_port = PEER_PORT + 1;
    let f = h.frame(&Seg::data(1, 1, b"ack me"));
    h.ep.handle_frame(now, &f);
    h.ep.abort(now, conns[2]).unwrap();
    h.peer_port = PEER_PORT + 3;
    let f = h.frame(&Seg::syn(0));
    h.ep.handle_frame(now, &f);
    h.expect(&[
        Exp::rst(1).port(PEER_PORT + 2),
        Exp::synack(0, 1).port(PEER_PORT + 3),
        Exp::ack(1, 7).port(PEER_PORT + 1),
        Exp::data(1, 1, b"data").port(PEER_PORT),
    ]);
}

/// An ACK owed by a connection that also sends data rides on the data segment: one segment,
/// not two.
#[test]
fn a_pending_ack_rides_on_data() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    let now = h.now();
    let f = h.frame(&Seg::data(1, 1, b"ping"));
    h.ep.handle_frame(now, &f);
    h.ep.send(h.c(), b"pong").unwrap();
    h.expect(&[Exp::data(1, 5, b"pong")]);
}
