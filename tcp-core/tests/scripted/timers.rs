//! Delayed ACK and Nagle (both switchable), the persist timer with zero-window probes,
//! keepalive, the FIN-WAIT-2 timeout, TIME-WAIT (2·MSL) and its RFC 6191 reuse.

use crate::harness::*;
use tcp_core::config::Keepalive;
use tcp_core::{CloseReason, Duration, Event, State};

const MSS: u32 = 1460;

/// RFC 1122 §4.2.3.2 / RFC 9293 §3.8.6.3: a lone segment is acknowledged after the
/// configured delay (40 ms by default).
#[test]
fn delayed_ack_waits_for_the_configured_delay() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, b"hello"));
    h.expect_nothing();
    assert_eq!(h.wake(), 50);
    h.expect(&[Exp::ack(1, 6)]);
}

#[test]
fn delayed_ack_delay_is_configurable() {
    let mut cfg = cfg_full();
    cfg.tcp.delayed_ack = Some(Duration::from_millis(200));
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, b"hello"));
    assert_eq!(h.wake(), 210);
    h.expect(&[Exp::ack(1, 6)]);
}

/// RFC 1122 §4.2.3.2: "an ACK should be generated for at least every second full-sized
/// segment".
#[test]
fn delayed_ack_every_second_full_segment_is_acked_at_once() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, &bytes(1448)));
    h.expect_nothing();
    h.send(11, Seg::data(1449, 1, &bytes(1448)));
    h.expect(&[Exp::ack(1, 2897)]);
    h.send(12, Seg::data(2897, 1, &bytes(1448)));
    h.expect_nothing();
    h.send(13, Seg::data(4345, 1, &bytes(1448)));
    h.expect(&[Exp::ack(1, 5793)]);
    assert_eq!(h.wake_within(1000), None);
}

/// RFC 1122 §4.2.3.2 asks for "at least" every second full-sized segment; tcp-core
/// acknowledges every second in-order segment whatever its size (as FreeBSD does), and a
/// lone one after the delay.
#[test]
fn delayed_ack_every_second_segment_of_any_size_is_acked_at_once() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, b"a"));
    h.expect_nothing();
    h.send(11, Seg::data(2, 1, b"bc"));
    h.expect(&[Exp::ack(1, 4)]);
    h.send(12, Seg::data(4, 1, b"defg"));
    h.expect_nothing();
    assert_eq!(h.wake(), 52);
    h.expect(&[Exp::ack(1, 8)]);
}

/// A delayed ACK rides on data sent before the timer fires.
#[test]
fn delayed_ack_is_piggybacked_on_data() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, b"ping"));
    h.expect_nothing();
    h.at(20);
    h.write(b"pong");
    h.expect(&[Exp::data(1, 5, b"pong")]);
    assert_eq!(h.wake_within(30), None, "the delayed ACK was cancelled");
}

/// `delayed_ack: None` switches it off: every segment is acknowledged at once.
#[test]
fn delayed_ack_off_acknowledges_every_segment() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(10, Seg::data(1, 1, b"a"));
    h.expect(&[Exp::ack(1, 2)]);
    h.send(11, Seg::data(2, 1, b"b"));
    h.expect(&[Exp::ack(1, 3)]);
}

/// RFC 5681 §4.2: out-of-order segments and segments filling a gap are acknowledged at once,
/// delayed ACK or not.
#[test]
fn out_of_order_and_gap_filling_segments_are_acked_at_once() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(11, 1, b"later"));
    h.expect(&[Exp::ack(1, 1).sack(&[(11, 16)])]);
    h.send(11, Seg::data(1, 1, b"0123456789"));
    h.expect(&[Exp::ack(1, 16).sack(&[])]);
}

/// RFC 1122 §4.2.3.4 (Nagle): while data is unacknowledged, small segments wait and are
/// coalesced.
#[test]
fn nagle_holds_small_segments_while_data_is_unacknowledged() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(b"a");
    h.expect(&[Exp::data(1, 1, b"a")]);
    h.write(b"b");
    h.write(b"c");
    h.expect_nothing();
    h.send(10, Seg::ack(1, 2));
    h.expect(&[Exp::data(2, 1, b"bc").psh(true)]);
    // A full segment is never held.
    h.write(&bytes(MSS as usize));
    h.expect(&[Exp::data_len(4, 1, MSS as usize)]);
}

/// `set_nodelay(true)` (TCP_NODELAY) switches Nagle off.
#[test]
fn nodelay_sends_small_segments_at_once() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.set_nodelay(true);
    assert!(h.ep.nodelay(h.c()).unwrap());
    h.write(b"a");
    h.write(b"b");
    h.write(b"c");
    h.expect(&[
        Exp::data(1, 1, b"a"),
        Exp::data(2, 1, b"b"),
        Exp::data(3, 1, b"c"),
    ]);
    // Back on: held again.
    h.set_nodelay(false);
    h.write(b"d");
    h.expect_nothing();
}

#[test]
fn nodelay_can_be_the_default() {
    let mut cfg = cfg_plain();
    cfg.tcp.nodelay = true;
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.write(b"a");
    h.write(b"b");
    h.expect(&[Exp::data(1, 1, b"a"), Exp::data(2, 1, b"b")]);
}

/// RFC 9293 §3.8.6.1: with a zero window and data to send, probe after the RTO with one
/// octet of new data (the documented choice), backing off exponentially (RFC 1122
/// §4.2.2.17); when the window opens, data flows.
#[test]
fn persist_timer_sends_zero_window_probes_with_backoff() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::ack(1, 1).win(0));
    h.write(b"0123456789");
    h.expect_nothing();
    assert_eq!(h.wake(), 1001);
    h.expect(&[Exp::data(1, 1, b"0")]);
    // The probe octet is not accepted: ACK 1, window 0.
    h.send(1010, Seg::ack(1, 1).win(0));
    h.expect_nothing();
    assert_eq!(h.wake(), 3001);
    h.expect(&[Exp::data(1, 1, b"0")]);
    h.send(3010, Seg::ack(1, 1).win(0));
    assert_eq!(h.wake(), 7001);
    h.expect(&[Exp::data(1, 1, b"0")]);
    // The window opens (the probe octet was taken).
    h.send(7010, Seg::ack(1, 2).win(1000));
    h.expect(&[Exp::data(2, 1, b"123456789")]);
    assert_eq!(h.state(), State::Established);
}

/// The probe octet may be all the data there is: with it out, nothing is unsent, yet it is
/// probed again (with backoff) until the window opens. (A fuzz input found the persist timer
/// giving up here, leaving a connection with no timer at all: an orphan in FIN-WAIT-1 never
/// ended.)
#[test]
fn persist_keeps_probing_when_the_probe_octet_is_all_the_data() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::ack(1, 1).win(0));
    h.write(b"x");
    h.expect_nothing();
    assert_eq!(h.wake(), 1001);
    h.expect(&[Exp::data(1, 1, b"x")]);
    h.send(1010, Seg::ack(1, 1).win(0));
    h.expect_nothing();
    assert_eq!(h.wake(), 3001);
    h.expect(&[Exp::data(1, 1, b"x")]);
    // Unanswered: probed again after the next backoff.
    assert_eq!(h.wake(), 7001);
    h.expect(&[Exp::data(1, 1, b"x")]);
    // Taken, window open: nothing left to send, no timer left.
    h.send(7010, Seg::ack(1, 2).win(1000));
    h.expect_nothing();
    assert_eq!(h.info().send_buffered, 0);
}

/// A window update that does not take the probe octet (SEG.ACK below it) makes the sender
/// go on from SND.UNA: the octet is sent again at the head of the data, not left as a hole
/// behind it until the RTO. (Seen against mtcp-api: a reader that drained a full buffer got
/// the data after the probe octet and waited 200 ms for the octet.)
#[test]
fn window_update_after_a_refused_probe_resends_the_probe_octet_first() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::ack(1, 1).win(0));
    h.write(b"0123456789");
    h.expect_nothing();
    assert_eq!(h.wake(), 1001);
    h.expect(&[Exp::data(1, 1, b"0")]);
    // Refused (window 0), then the reader drains and the window opens: ACK still 1.
    h.send(1010, Seg::ack(1, 1).win(0));
    h.send(1500, Seg::ack(1, 1).win(4000));
    h.expect(&[Exp::data(1, 1, b"0123456789")]);
}

/// A window update ends the persist state without waiting for the next probe.
#[test]
fn persist_ends_when_a_window_update_arrives() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::ack(1, 1).win(0));
    h.write(b"hello");
    h.expect_nothing();
    h.send(500, Seg::ack(1, 1).win(4000));
    h.expect(&[Exp::data(1, 1, b"hello")]);
}

/// Probes that are answered (the peer is alive, its window just stays closed) go out once
/// per persist expiry, with backoff, and never time the connection out. The answers to
/// probes are not duplicate ACKs (RFC 5681 §2 counts them for loss detection; a probe octet
/// refused by a closed window was not lost): no fast retransmit, no cut of cwnd or ssthresh.
#[test]
fn zero_window_probe_answers_are_not_duplicate_acks() {
    let mut cfg = cfg_plain();
    cfg.tcp.data_retries = 3;
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::ack(1, 1).win(0));
    h.write(b"hello");
    let mut times = Vec::new();
    for _ in 0..6 {
        times.push(h.wake());
        h.expect(&[Exp::data(1, 1, b"h")]);
        let t = h.t() + 5;
        h.send(t, Seg::ack(1, 1).win(0));
        h.expect_nothing();
    }
    assert_eq!(times, vec![1001, 3001, 7001, 15_001, 31_001, 63_001]);
    assert_eq!(h.state(), State::Established);
    let i = h.info();
    assert_eq!((i.cwnd, i.ssthresh), (14_600, u32::MAX));
    assert_eq!(h.counters().fast_retransmits, 0);
}

/// RFC 1122 §4.2.3.6: after `idle` without a segment, a probe <SEQ=SND.NXT-1> with no data;
/// then one every `interval`; after `count` unanswered probes the connection is dead.
#[test]
fn keepalive_probes_after_idle_then_times_out_after_count_probes() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.set_keepalive(Some(Keepalive {
        idle: Duration::from_secs(10),
        interval: Duration::from_secs(1),
        count: 3,
    }));
    for t in [10_000, 11_000, 12_000] {
        assert_eq!(h.wake(), t);
        h.expect(&[Exp::ack(0, 1)]);
    }
    assert_eq!(h.wake_within(100_000), None);
    assert_eq!(h.t(), 13_000);
    let c = h.c();
    assert_eq!(h.state(), State::Closed);
    assert!(h
        .events()
        .contains(&Event::Closed(c, CloseReason::TimedOut)));
}

/// An answered probe restarts the idle period.
#[test]
fn keepalive_answered_restarts_the_idle_period() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.set_keepalive(Some(Keepalive {
        idle: Duration::from_secs(10),
        interval: Duration::from_secs(1),
        count: 3,
    }));
    assert_eq!(h.wake(), 10_000);
    h.expect(&[Exp::ack(0, 1)]);
    h.send(10_050, Seg::ack(1, 1));
    h.expect_nothing();
    assert_eq!(h.wake(), 20_050);
    h.expect(&[Exp::ack(0, 1)]);
    assert_eq!(h.state(), State::Established);
}

/// Keepalive is off by default, and a configured default applies to new connections.
#[test]
fn keepalive_is_off_by_default_and_configurable() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    assert_eq!(h.ep.keepalive(h.c()).unwrap(), None);
    assert_eq!(h.wake_within(10_000_000), None);
    let mut cfg = cfg_plain();
    cfg.tcp.keepalive = Some(Keepalive {
        idle: Duration::from_secs(5),
        interval: Duration::from_secs(1),
        count: 1,
    });
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    assert_eq!(h.wake(), 5000);
    h.expect(&[Exp::ack(0, 1)]);
}

/// The idle timeout (mTCP's `tcp_timeout`) resets a connection that received nothing for
/// that long, and reports it timed out.
#[test]
fn idle_timeout_resets_a_silent_connection() {
    let mut cfg = cfg_plain();
    cfg.tcp.idle_timeout = Some(Duration::from_secs(5));
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    assert_eq!(h.wake(), 5_000);
    h.expect(&[Exp::rst(1)]);
    let c = h.c();
    assert_eq!(h.state(), State::Closed);
    assert!(h
        .events()
        .contains(&Event::Closed(c, CloseReason::TimedOut)));
}

/// The idle time counts from the last segment received; keepalive probes that go
/// unanswered do not reset it, and the sooner of the two limits acts first.
#[test]
fn idle_timeout_counts_from_the_last_segment_received() {
    let mut cfg = cfg_plain();
    cfg.tcp.idle_timeout = Some(Duration::from_secs(5));
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.send(3_000, Seg::data(1, 1, b"hi"));
    h.expect(&[Exp::ack(1, 3)]);
    assert_eq!(h.wake(), 8_000);
    h.expect(&[Exp::rst(1)]);
    let mut cfg = cfg_plain();
    cfg.tcp.idle_timeout = Some(Duration::from_secs(5));
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.set_keepalive(Some(Keepalive {
        idle: Duration::from_secs(2),
        interval: Duration::from_secs(2),
        count: 9,
    }));
    for t in [2_000, 4_000] {
        assert_eq!(h.wake(), t);
        h.expect(&[Exp::ack(0, 1)]);
    }
    assert_eq!(h.wake(), 5_000);
    h.expect(&[Exp::rst(1)]);
    assert_eq!(h.state(), State::Closed);
}

/// An orphaned connection (closed by the application) in FIN-WAIT-2 is dropped after
/// `fin_wait2_timeout`; a later segment meets a closed port.
#[test]
fn fin_wait_2_timeout_drops_an_orphaned_connection() {
    let mut cfg = cfg_plain();
    cfg.tcp.fin_wait2_timeout = Duration::from_secs(5);
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.close();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(10, Seg::ack(1, 2));
    assert_eq!(h.ep.connections().next().unwrap().state, State::FinWait2);
    h.at(5009);
    assert_eq!(h.ep.connection_count(), 2);
    h.at(5010);
    assert_eq!(h.ep.connection_count(), 1, "only the listener");
    h.expect_nothing();
    h.send(6000, Seg::fin(1, 2));
    h.expect(&[Exp::rst(2)]);
}

/// A half-closed connection the application still holds waits in FIN-WAIT-2 as long as
/// the peer wants (it may still send).
#[test]
fn fin_wait_2_without_close_has_no_timeout() {
    let mut cfg = cfg_plain();
    cfg.tcp.fin_wait2_timeout = Duration::from_secs(5);
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.shutdown();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(10, Seg::ack(1, 2));
    h.idle(100_000);
    assert_eq!(h.state(), State::FinWait2);
    h.send(100_100, Seg::data(1, 2, b"still here"));
    h.expect(&[Exp::ack(2, 11)]);
}

/// RFC 9293 §3.6: TIME-WAIT lasts 2·MSL, configurable.
#[test]
fn time_wait_lasts_two_msl_as_configured() {
    let mut cfg = cfg_plain();
    cfg.tcp.time_wait = Duration::from_secs(4);
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.shutdown();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(10, Seg::fin(1, 2));
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.state(), State::TimeWait);
    h.at(4009);
    assert_eq!(h.state(), State::TimeWait);
    h.at(4010);
    assert_eq!(h.state(), State::Closed);
    let c = h.c();
    assert!(h.events().contains(&Event::Closed(c, CloseReason::Normal)));
}

/// RFC 9293 §3.10.7.4, TIME-WAIT: "The only thing that can arrive in this state is a
/// retransmission of the remote FIN. Acknowledge it, and restart the 2 MSL timeout."
#[test]
fn time_wait_retransmitted_fin_is_acked_and_restarts_2msl() {
    let mut cfg = cfg_plain();
    cfg.tcp.time_wait = Duration::from_secs(4);
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.shutdown();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(10, Seg::fin(1, 2));
    h.expect(&[Exp::ack(2, 2)]);
    // Our ACK was lost: the peer retransmits its FIN.
    h.send(3000, Seg::fin(1, 2));
    h.expect(&[Exp::ack(2, 2)]);
    h.at(4010);
    assert_eq!(h.state(), State::TimeWait, "2·MSL restarted at 3000");
    h.at(7000);
    assert_eq!(h.state(), State::Closed);
}

/// Sets up TIME-WAIT on PEER_PORT (active close by the stack), returning the stack's old
/// ISN (absolute).
fn time_wait(h: &mut H, p: PeerOpts) -> u32 {
    h.passive_open(0, p);
    h.shutdown();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(10, Seg::fin(1, 2));
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.state(), State::TimeWait);
    h.isn()
}

/// RFC 6191 §2: a SYN with a timestamp newer than the last one of the TIME-WAIT connection
/// reuses the 4-tuple at once, even with a lower sequence number.
#[test]
fn time_wait_reuse_by_a_syn_with_a_newer_timestamp() {
    let mut h = H::full();
    time_wait(&mut h, PeerOpts::full());
    h.reset_flow();
    h.send(1000, Seg::syn(0).with_opts(PeerOpts::full()));
    h.expect(&[Exp::synack(0, 1).ts(true)]);
    h.send(1001, Seg::ack(1, 1));
    h.expect_nothing();
    let l = h.listener.unwrap();
    let c = h.ep.accept(l).unwrap();
    h.conn = Some(c);
    assert_eq!(h.state(), State::Established);
}

/// RFC 6191 §2: a SYN whose timestamp is not newer does not reuse the 4-tuple (PAWS: it is
/// answered with an ACK of the old connection).
#[test]
fn time_wait_is_not_reused_by_a_syn_with_an_old_timestamp() {
    let mut h = H::full();
    time_wait(&mut h, PeerOpts::full());
    h.send(
        1000,
        Seg::syn(100).with_opts(PeerOpts::full()).ts(PEER_TS0, 0),
    );
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.state(), State::TimeWait);
}

/// RFC 6191 §2: a SYN whose timestamp equals the last one of the TIME-WAIT connection
/// reuses the 4-tuple when its sequence number is above the old RCV.NXT (Linux reconnecting
/// within one tick of its millisecond timestamp clock; seen in the interop tests as a refused
/// SYN, an RST from Linux and a retransmitted SYN per reused port), and not otherwise.
#[test]
fn time_wait_reuse_by_a_syn_with_an_equal_timestamp_needs_a_higher_sequence_number() {
    let mut h = H::full();
    time_wait(&mut h, PeerOpts::full());
    // The peer's FIN came at 10 with TSval PEER_TS0 + 10.
    let last = PEER_TS0 + 10;
    h.send(1000, Seg::syn(2).with_opts(PeerOpts::full()).ts(last, 0));
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.state(), State::TimeWait);
    h.reset_flow();
    h.send(1001, Seg::syn(1000).with_opts(PeerOpts::full()).ts(last, 0));
    h.expect(&[Exp::synack(0, 1001).ts(true)]);
}

/// RFC 1122 §4.2.2.13 (no timestamps): a SYN may reuse a TIME-WAIT 4-tuple if its sequence
/// number is above the old RCV.NXT; the new ISN is above the old SND.NXT.
#[test]
fn time_wait_reuse_without_timestamps_needs_a_higher_sequence_number() {
    let mut h = H::plain();
    let old_isn = time_wait(&mut h, PeerOpts::plain());
    // At or below the old RCV.NXT: not a new incarnation.
    h.send(1000, Seg::syn(2));
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.state(), State::TimeWait);
    h.reset_flow();
    h.send(1001, Seg::syn(1000));
    h.expect(&[Exp::synack(0, 1001)]);
    let new_isn = h.isn();
    assert!(
        new_isn.wrapping_sub(old_isn.wrapping_add(2)) < 1 << 31,
        "new ISN {new_isn} above the old SND.NXT {}",
        old_isn.wrapping_add(2)
    );
}

/// RFC 9293 §3.8.6.2.1: a window too small to send by the sender SWS rules (less than an MSS
/// and less than half the largest window seen) holds data back only until the override
/// timeout; then what the window allows goes out.
#[test]
fn sws_override_timeout_sends_into_a_small_window() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::ack(1, 1).win(100));
    h.write(&bytes(3000));
    h.expect_nothing();
    let t = h.wake();
    assert!(
        (500..=1100).contains(&t),
        "override after about an RTO, not {t}"
    );
    h.expect(&[Exp::data_len(1, 1, 100)]);
    assert_eq!(h.state(), State::Established);
}
