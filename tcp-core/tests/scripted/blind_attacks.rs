//! RFC 5961: challenge ACKs for in-window RST and SYN, exact-sequence RST acceptance, the
//! ACK range check, and the challenge-ACK rate limit.

use crate::harness::*;
use tcp_core::{CloseReason, Event, State};

fn established() -> H {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h
}

/// RFC 5961 §3.2: "If the RST bit is set and the sequence number does not exactly match the
/// next expected sequence value, yet is within the current receive window, TCP MUST send an
/// acknowledgment (challenge ACK)".
#[test]
fn rst_in_window_but_not_exact_gets_a_challenge_ack() {
    let mut h = established();
    h.send(10, Seg::rst(1000));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.state(), State::Established);
    h.send(11, Seg::rstack(2, 1));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.state(), State::Established);
    let c = h.counters();
    assert_eq!((c.challenge_acks, c.rst_received), (2, 0));
}

/// RFC 5961 §3.2: "If the RST bit is set and the sequence number exactly matches the next
/// expected sequence number (RCV.NXT), then TCP MUST reset the connection."
#[test]
fn rst_at_exactly_rcv_nxt_resets_the_connection() {
    let mut h = established();
    h.send(10, Seg::data(1, 1, b"abc"));
    h.take();
    h.send(11, Seg::rst(4));
    h.expect_nothing();
    let c = h.c();
    assert_eq!(h.state(), State::Closed);
    let ev = h.events();
    assert!(ev.contains(&Event::Reset(c)), "{ev:?}");
    assert!(ev.contains(&Event::Closed(c, CloseReason::Reset)), "{ev:?}");
    assert_eq!(h.counters().rst_received, 1);
}

/// RFC 5961 §3.2: "If the RST bit is set and the sequence number is outside the current
/// receive window, silently drop the segment."
#[test]
fn rst_outside_the_window_is_silently_dropped() {
    let mut h = established();
    for seq in [0u32, 70_000, 0x8000_0000, u32::MAX] {
        h.send(10, Seg::rst(seq));
        h.expect_nothing();
    }
    assert_eq!(h.state(), State::Established);
    assert_eq!(h.counters().challenge_acks, 0);
}

/// RFC 5961 §4.2: "If the SYN bit is set, irrespective of the sequence number, TCP MUST send
/// an ACK (also referred to as challenge ACK) to the remote peer"; the connection stays.
#[test]
fn syn_in_a_synchronized_state_gets_a_challenge_ack() {
    let mut h = established();
    for seq in [1u32, 500, 0, 100_000] {
        h.send(10, Seg::syn(seq));
        h.expect(&[Exp::ack(1, 1)]);
        assert_eq!(h.state(), State::Established);
    }
    h.send(11, Seg::synack(1, 1));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.state(), State::Established);
    assert!(h.counters().challenge_acks >= 2);
}

/// RFC 5961 §5.2: "If the ACK value ... acknowledges something not yet sent (SEG.ACK >
/// SND.NXT) ... discard the segment and send an ACK back": its data is not taken.
#[test]
fn ack_beyond_snd_nxt_is_dropped_with_an_ack() {
    let mut h = established();
    h.send(10, Seg::data(1, 1000, b"forged"));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.read(), b"");
    h.send(11, Seg::data(1, 1, b"real"));
    h.expect(&[Exp::ack(1, 5)]);
    assert_eq!(h.read(), b"real");
}

/// RFC 5961 §5.2: "The ACK value is considered acceptable only if it is in the range of
/// ((SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT)"; older ACKs are discarded with an ACK.
#[test]
fn ack_older_than_max_snd_wnd_is_dropped_with_an_ack() {
    let mut h = established();
    // MAX.SND.WND is 65535 (the peer's largest window).
    h.send(10, Seg::data(1, 1u32.wrapping_sub(70_000), b"blind"));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.read(), b"");
    // Old but within MAX.SND.WND: a duplicate ACK, ignored, and the data is taken.
    h.write(b"0123456789");
    h.take();
    h.send(11, Seg::ack(1, 11));
    h.send(12, Seg::data(1, 1u32.wrapping_sub(30_000), b"ok"));
    h.expect(&[Exp::ack(11, 3)]);
    assert_eq!(h.read(), b"ok");
}

/// RFC 5961 §7: challenge ACKs are limited per second (here 2); the rest are counted.
#[test]
fn challenge_acks_are_rate_limited() {
    let mut cfg = cfg_plain();
    cfg.tcp.challenge_ack_limit = 2;
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    for i in 0..5u32 {
        h.send(2000, Seg::rst(100 + i));
    }
    h.expect(&[Exp::ack(1, 1), Exp::ack(1, 1)]);
    let c = h.counters();
    assert_eq!((c.challenge_acks, c.challenge_acks_limited), (2, 3));
    // A second later the budget is back.
    h.send(3000, Seg::syn(5));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.counters().challenge_acks, 3);
    assert_eq!(h.state(), State::Established);
}

/// The limit is per endpoint: challenge ACKs on one connection use up the budget of all.
#[test]
fn challenge_ack_limit_is_shared_by_all_connections() {
    let mut cfg = cfg_plain();
    cfg.tcp.challenge_ack_limit = 1;
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.peer_port = PEER_PORT + 1;
    h.send(1, Seg::syn(0));
    h.take();
    h.send(1, Seg::ack(1, 1));
    h.peer_port = PEER_PORT;
    h.send(2000, Seg::rst(100));
    h.expect(&[Exp::ack(1, 1)]);
    h.peer_port = PEER_PORT + 1;
    h.send(2000, Seg::rst(100));
    h.expect_nothing();
    assert_eq!(h.counters().challenge_acks_limited, 1);
}

/// RFC 5961 §3.2 in every synchronized state: a RST in the window but not at RCV.NXT gets a
/// challenge ACK <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and changes nothing; a RST at RCV.NXT
/// resets — after the peer's FIN too (its FIN does not shrink RCV.WND); TIME-WAIT ignores
/// every RST (RFC 1337).
#[test]
fn rst_rules_hold_in_every_synchronized_state() {
    use crate::state_machine::{conn_state, setup};
    for state in [
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ] {
        for full in [false, true] {
            let (mut h, c) = setup(state, full);
            h.send(10, Seg::rst(c.rcv + 1));
            if state == State::TimeWait {
                h.expect_nothing();
            } else {
                h.expect(&[Exp::ack(c.snd, c.rcv)]);
            }
            assert_eq!(conn_state(&h), Some(state), "{state} (options: {full})");
            h.send(11, Seg::rst(c.rcv));
            h.expect_nothing();
            let after = if state == State::TimeWait {
                Some(state)
            } else {
                None
            };
            assert_eq!(conn_state(&h), after, "{state} (options: {full})");
        }
    }
}

/// RFC 5961 §4.2, "irrespective of the sequence number": a SYN far outside the window gets
/// the challenge ACK too (counted and rate limited as one), not the plain ACK of an
/// unacceptable segment.
#[test]
fn syn_outside_the_window_gets_a_counted_challenge_ack() {
    let mut h = established();
    h.send(10, Seg::syn(0x4000_0000));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.state(), State::Established);
    assert_eq!(h.counters().challenge_acks, 1);
}
