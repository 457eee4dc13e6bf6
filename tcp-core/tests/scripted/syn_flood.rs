//! SYN flood defence: a bounded SYN queue per listener, and beyond it stateless SYN cookies
//! (RFC 4987 §3.6): a cookie handshake completes; a forged cookie ACK gets a RST.

use crate::harness::*;
use tcp_core::{EndpointConfig, Event, State};

fn cfg(syn_queue: usize, base: EndpointConfig) -> EndpointConfig {
    EndpointConfig { syn_queue, ..base }
}

/// Fills the SYN queue (2) from ports PEER_PORT and PEER_PORT+1; the SYN from PEER_PORT+2
/// gets a cookie. Returns the cookie SYN-ACK.
fn flood(h: &mut H, p: PeerOpts) -> Got {
    h.listen(16);
    for i in 0..2 {
        h.peer_port = PEER_PORT + i;
        h.send(0, Seg::syn(0).with_opts(p));
        h.expect(&[Exp::synack(0, 1).port(PEER_PORT + i)]);
    }
    h.peer_port = PEER_PORT + 2;
    h.send(1, Seg::syn(0).with_opts(p));
    let out = h.expect(&[Exp::synack(0, 1).port(PEER_PORT + 2).mss(Some(1460))]);
    out[0].clone()
}

#[test]
fn syn_queue_is_bounded_then_syn_cookies_are_sent() {
    let mut h = H::new(cfg(2, cfg_plain()));
    flood(&mut h, PeerOpts::plain());
    let c = h.counters();
    assert_eq!((c.syn_queue_full, c.syn_cookies_sent), (1, 1));
    // No state was kept for the third SYN: listener + two embryonic connections.
    assert_eq!(h.ep.connection_count(), 3);
    // Each further SYN gets its own cookie, still without state.
    h.peer_port = PEER_PORT + 3;
    h.reset_flow();
    h.send(2, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1).port(PEER_PORT + 3)]);
    assert_eq!(h.ep.connection_count(), 3);
    assert_eq!(h.counters().syn_cookies_sent, 2);
    // A cookie SYN-ACK is not retransmitted (there is no state to do it with).
    h.at(2500);
    let out = h.take();
    assert!(!out.is_empty(), "the stateful SYN-ACKs are retransmitted");
    assert!(out.iter().all(|g| g.port < PEER_PORT + 2), "{out:?}");
}

/// The ACK echoing a valid cookie creates the connection in ESTABLISHED; the application
/// accepts it and data flows both ways.
#[test]
fn syn_cookie_handshake_completes() {
    let mut h = H::new(cfg(2, cfg_plain()));
    flood(&mut h, PeerOpts::plain());
    h.send(10, Seg::data(1, 1, b"hello"));
    h.expect(&[Exp::ack(1, 6).port(PEER_PORT + 2)]);
    assert_eq!(h.counters().syn_cookies_accepted, 1);
    let l = h.listener.unwrap();
    let ev = h.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Accepted { listener, .. } if *listener == l)),
        "{ev:?}"
    );
    let c = h.ep.accept(l).unwrap();
    h.conn = Some(c);
    assert_eq!(h.ep.peer_addr(c).unwrap().port(), PEER_PORT + 2);
    assert_eq!(h.state(), State::Established);
    assert_eq!(h.read(), b"hello");
    assert_eq!(h.info().smss, 1460, "the MSS survived in the cookie");
    h.write(b"world");
    h.expect(&[Exp::data(1, 6, b"world").port(PEER_PORT + 2)]);
}

/// An ACK whose acknowledgment number is not a valid cookie is answered as LISTEN answers any
/// ACK: <SEQ=SEG.ACK><CTL=RST>, and no connection is made.
#[test]
fn forged_cookie_ack_gets_a_rst() {
    let mut h = H::new(cfg(2, cfg_plain()));
    flood(&mut h, PeerOpts::plain());
    h.send(10, Seg::ack(1, 12_345));
    h.expect(&[Exp::rst(12_345).port(PEER_PORT + 2)]);
    // The valid cookie of PEER_PORT+2, replayed from another port, does not fit there.
    let cookie = h.isn();
    h.peer_port = PEER_PORT + 4;
    h.send(12, Seg::ack(1, cookie.wrapping_add(1)));
    h.expect(&[Exp::rst(cookie.wrapping_add(1)).port(PEER_PORT + 4)]);
    let c = h.counters();
    assert_eq!(c.syn_cookies_accepted, 0);
    assert_eq!(h.ep.connection_count(), 3);
}

/// With timestamps, the cookie keeps window scaling and SACK in the TSval's low bits: the
/// connection made from it uses them.
#[test]
fn syn_cookie_with_timestamps_keeps_window_scaling_and_sack() {
    let mut h = H::new(cfg(2, cfg_full()));
    let synack = flood(&mut h, PeerOpts::full());
    assert_eq!(synack.opts.wscale, Some(1));
    assert!(synack.opts.sack_permitted);
    assert!(synack.opts.timestamp.is_some());
    h.auto_ts = true;
    h.send(10, Seg::ack(1, 1));
    h.expect_nothing();
    let c = h.ep.accept(h.listener.unwrap()).unwrap();
    h.conn = Some(c);
    let i = h.info();
    assert!(i.timestamps && i.sack && i.window_scaling, "{i:?}");
    assert_eq!((i.snd_wscale, i.rcv_wscale), (7, 1));
}

/// Without timestamps a cookie cannot carry window scaling or SACK, so the cookie SYN-ACK
/// does not offer them.
#[test]
fn syn_cookie_without_timestamps_offers_no_window_scaling_or_sack() {
    let mut h = H::new(cfg(2, cfg_full()));
    let synack = flood(
        &mut h,
        PeerOpts {
            ts: false,
            ..PeerOpts::full()
        },
    );
    assert_eq!(synack.opts.wscale, None);
    assert!(!synack.opts.sack_permitted);
    assert_eq!(synack.opts.timestamp, None);
}

/// Once the SYN queue drains (a handshake completes), SYNs get a stateful SYN-ACK again.
#[test]
fn syn_queue_room_ends_syn_cookies() {
    let mut h = H::new(cfg(2, cfg_plain()));
    flood(&mut h, PeerOpts::plain());
    h.peer_port = PEER_PORT;
    h.send(10, Seg::ack(1, 1));
    h.peer_port = PEER_PORT + 5;
    h.send(11, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1).port(PEER_PORT + 5)]);
    assert_eq!(h.counters().syn_cookies_sent, 1);
    assert_eq!(h.ep.connection_count(), 4);
}

/// A late duplicate of the peer's last ACK, arriving after a passive close freed the
/// connection, is not taken for a cookie ACK. (In an exchange with as many bytes each way,
/// its SEG.ACK − SEG.SEQ equals the handshake ACK's, so the cookie arithmetic accepts it: a
/// bogus connection was made, seen in mtcp-api's 10 000-connection test.) It is dropped; a
/// new SYN from the same port starts a connection as usual.
#[test]
fn a_late_last_ack_after_a_passive_close_is_not_a_cookie_ack() {
    let mut h = H::new(cfg(2, cfg_plain()));
    flood(&mut h, PeerOpts::plain());
    h.send(10, Seg::data(1, 1, b"hello"));
    h.expect(&[Exp::ack(1, 6).port(PEER_PORT + 2)]);
    let l = h.listener.unwrap();
    let c = h.ep.accept(l).unwrap();
    h.conn = Some(c);
    let _ = h.events();
    assert_eq!(h.read(), b"hello");
    h.write(b"world");
    h.expect(&[Exp::data(1, 6, b"world").port(PEER_PORT + 2)]);
    // The peer acknowledges and closes; the application closes: LAST-ACK, then CLOSED.
    h.send(20, Seg::fin(6, 6));
    h.expect(&[Exp::ack(6, 7).port(PEER_PORT + 2)]);
    h.close();
    h.expect(&[Exp::fin(6, 7).port(PEER_PORT + 2)]);
    h.send(30, Seg::ack(7, 7));
    h.expect_nothing();
    let opened = h.counters().connections_opened;
    // The same last ACK again (the peer answering a FIN retransmitted meanwhile).
    h.send(40, Seg::ack(7, 7));
    h.expect_nothing();
    assert_eq!(h.counters().syn_cookies_accepted, 1);
    assert_eq!(h.counters().connections_opened, opened);
    assert!(!h.ep.accept_ready(l));
    // A new incarnation from the same port (a new SYN) still completes with a cookie.
    h.set_peer_isn(900_000);
    h.reset_flow();
    h.send(50, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1).port(PEER_PORT + 2)]);
    h.send(51, Seg::ack(1, 1));
    h.expect_nothing();
    assert_eq!(h.counters().syn_cookies_accepted, 2);
    assert!(h.ep.accept_ready(l));
}
