//! The retransmission timer (RFC 6298): initial RTO, samples from timestamps or from one
//! timed segment per RTT with Karn's rule, exponential backoff, and the SYN and data retry
//! limits ending in a timed-out event.

use crate::harness::*;
use tcp_core::{CloseReason, Duration, Event, SocketError, State};

const MSS: u32 = 1460;

/// RFC 6298 §2.1: "Until a round-trip time (RTT) measurement has been made ... the sender
/// SHOULD set RTO <- 1 second"; §5.5 doubles it at each expiry.
#[test]
fn syn_is_retransmitted_with_exponential_backoff() {
    let mut h = H::plain();
    h.connect(0);
    for t in [1000, 3000, 7000, 15_000] {
        assert_eq!(h.wake(), t);
        h.expect(&[Exp::syn(0).mss(Some(1460))]);
    }
    assert_eq!(h.counters().retransmits, 4);
}

/// RFC 9293 §3.8.3 R2 / RFC 1122 §4.2.3.5: after `syn_retries` retransmissions the
/// connection attempt times out, reported as an event.
#[test]
fn syn_retry_limit_ends_in_a_timed_out_event() {
    let mut cfg = cfg_plain();
    cfg.tcp.syn_retries = 2;
    let mut h = H::new(cfg);
    h.connect(0);
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::syn(0)]);
    assert_eq!(h.wake(), 3000);
    h.expect(&[Exp::syn(0)]);
    assert_eq!(h.wake_within(100_000), None);
    assert_eq!(h.t(), 7000, "gave up when the third RTO expired");
    let c = h.c();
    assert_eq!(h.state(), State::Closed);
    let ev = h.events();
    assert!(ev.contains(&Event::TimedOut(c)), "{ev:?}");
    assert!(
        ev.contains(&Event::Closed(c, CloseReason::TimedOut)),
        "{ev:?}"
    );
    assert_eq!(h.ep.send(c, b"x"), Err(SocketError::TimedOut));
    assert_eq!(h.counters().timeouts, 1);
}

/// The SYN-ACK of a passive open is retransmitted with backoff too, and the embryonic
/// connection is dropped after `syn_retries`, leaving the listener as it was.
#[test]
fn synack_retry_limit_drops_the_embryonic_connection() {
    let mut cfg = cfg_plain();
    cfg.tcp.syn_retries = 2;
    let mut h = H::new(cfg);
    h.listen(4);
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::synack(0, 1)]);
    assert_eq!(h.wake(), 3000);
    h.expect(&[Exp::synack(0, 1)]);
    assert_eq!(h.wake_within(100_000), None);
    assert_eq!(h.ep.connection_count(), 1, "only the listener is left");
    assert!(h.events().is_empty());
}

/// RFC 6298 §5.5: the data RTO doubles at each expiry; §5.4 the earliest segment is sent
/// again; the limit ends in a timed-out event.
#[test]
fn data_retransmissions_back_off_and_time_out() {
    let mut cfg = cfg_plain();
    cfg.tcp.data_retries = 3;
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.at(10);
    h.write(b"hello");
    h.expect(&[Exp::data(1, 1, b"hello")]);
    for t in [1010, 3010, 7010] {
        assert_eq!(h.wake(), t);
        h.expect(&[Exp::data(1, 1, b"hello")]);
    }
    assert_eq!(h.wake_within(1_000_000), None);
    assert_eq!(h.t(), 15_010);
    let c = h.c();
    assert_eq!(h.state(), State::Closed);
    assert!(h
        .events()
        .contains(&Event::Closed(c, CloseReason::TimedOut)));
    assert_eq!(h.counters().retransmits, 3);
}

/// RFC 6298 §2.5: the backed-off RTO is capped at `max_rto` (at least 60 s).
#[test]
fn rto_backoff_is_capped_at_max_rto() {
    let mut cfg = cfg_plain();
    cfg.tcp.max_rto = Duration::from_secs(60);
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.write(b"hello");
    h.take();
    let mut last = 0;
    let mut gaps = Vec::new();
    for _ in 0..9 {
        let t = h.wake();
        h.take();
        gaps.push(t - last);
        last = t;
    }
    assert_eq!(
        gaps,
        vec![1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]
    );
}

/// A passive open whose handshake takes `rtt` ms (SYN at 0, ACK at `rtt`), with timestamps
/// and a 1 ms minimum RTO so that the computed RTO shows.
fn open_with_rtt(rtt: u64) -> H {
    let mut cfg = cfg_full();
    cfg.tcp.min_rto = Duration::from_millis(1);
    let mut h = H::new(cfg);
    let l = h.listen(4);
    h.send(0, Seg::syn(0).with_opts(PeerOpts::full()));
    h.expect(&[Exp::synack(0, 1).ts(true)]);
    h.auto_ts = true;
    h.send(rtt, Seg::ack(1, 1));
    h.conn = Some(h.ep.accept(l).unwrap());
    h
}

/// RFC 7323 §4.1 / RFC 6298 §2.2: an RTT sample from the echoed timestamp (here the
/// handshake's): SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR.
#[test]
fn rto_is_computed_from_timestamp_samples() {
    let mut h = open_with_rtt(50);
    let i = h.info();
    assert_eq!(i.srtt, Some(Duration::from_millis(50)));
    assert_eq!(i.rto, Duration::from_millis(150));
    h.at(100);
    h.write(b"hello");
    h.expect(&[Exp::data(1, 1, b"hello").ts(true)]);
    assert_eq!(h.wake(), 250);
    h.expect(&[Exp::data(1, 1, b"hello")]);
}

/// RFC 7323 §4: with timestamps, the ACK of a retransmission gives a valid sample (the
/// echoed TSval tells which transmission it acknowledges).
#[test]
fn timestamps_give_samples_even_for_retransmissions() {
    let mut h = open_with_rtt(50);
    h.at(100);
    h.write(b"hello");
    h.take();
    assert_eq!(h.wake(), 250);
    h.take();
    // The ACK echoes the retransmission's TSval: RTT 20 ms; SRTT = 7/8·50 + 1/8·20.
    h.send(270, Seg::ack(1, 6));
    assert_eq!(h.info().srtt, Some(Duration::from_micros(46_250)));
}

/// RFC 6298 §3: without timestamps one segment per RTT is timed; ACKs of segments sent
/// while it was timed give no sample.
#[test]
fn rto_without_timestamps_times_one_segment_per_rtt() {
    let mut cfg = cfg_plain();
    cfg.tcp.min_rto = Duration::from_millis(1);
    let mut h = H::new(cfg);
    h.passive_open(0, PeerOpts::plain());
    h.write(&bytes(3 * MSS as usize));
    assert_eq!(h.take().len(), 3);
    h.send(100, Seg::ack(1, 1 + MSS));
    assert_eq!(h.info().srtt, Some(Duration::from_millis(100)));
    assert_eq!(h.info().rto, Duration::from_millis(300));
    h.send(400, Seg::ack(1, 1 + 2 * MSS));
    h.send(450, Seg::ack(1, 1 + 3 * MSS));
    assert_eq!(h.info().srtt, Some(Duration::from_millis(100)));
    // The next new segment is timed.
    h.write(b"x");
    h.take();
    h.send(470, Seg::ack(1, 2 + 3 * MSS));
    // RFC 6298 §2.3: SRTT = 7/8·100 + 1/8·20 = 90.
    assert_eq!(h.info().srtt, Some(Duration::from_millis(90)));
}

/// RFC 6298 §3 (Karn): the ACK of a retransmitted segment gives no sample, and the
/// backed-off RTO is kept until a valid sample arrives (§5.7's note on Karn's algorithm).
#[test]
fn karns_rule_no_sample_from_a_retransmitted_segment() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(b"hello");
    h.take();
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::data(1, 1, b"hello")]);
    h.send(1010, Seg::ack(1, 6));
    let i = h.info();
    assert_eq!(i.srtt, None);
    assert_eq!(i.rto, Duration::from_secs(2), "the backed-off RTO stays");
    h.write(b"again");
    h.take();
    h.send(1060, Seg::ack(1, 11));
    assert_eq!(h.info().srtt, Some(Duration::from_millis(50)));
}

/// RFC 6298 §5.7: "If the timer expires awaiting the ACK of a SYN segment and the TCP
/// implementation is using an RTO less than 3 seconds, the RTO MUST be re-initialized to 3
/// seconds when data transmission begins"; RFC 5681 §3.1: the initial window is then one
/// segment.
#[test]
fn after_a_lost_syn_rto_is_three_seconds_and_the_initial_window_one_segment() {
    let mut h = H::plain();
    h.connect(0);
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::syn(0)]);
    h.send(1010, Seg::synack(0, 1).with_opts(PeerOpts::plain()));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.info().rto, Duration::from_secs(3));
    assert_eq!(h.info().cwnd, MSS);
    h.write(&bytes(10 * MSS as usize));
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    assert_eq!(h.wake(), 4010);
}

/// RFC 6298 §5.3: an ACK of new data restarts the timer (RTO from the last ACK, not from
/// the first transmission); §5.2: all data acknowledged stops it.
#[test]
fn rto_restarts_on_new_acks_and_stops_when_all_is_acknowledged() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(&bytes(2 * MSS as usize));
    assert_eq!(h.take().len(), 2);
    // The first segment was timed: a 600 ms sample, and the timer restarts from here.
    h.send(600, Seg::ack(1, 1 + MSS));
    let rto = h.info().rto.millis();
    assert_eq!(h.wake(), 600 + rto);
    h.expect(&[Exp::data_len(1 + MSS, 1, MSS as usize)]);
    h.send(h.t() + 10, Seg::ack(1, 1 + 2 * MSS));
    assert_eq!(h.wake_within(600_000), None);
}

/// RFC 5681 §3.1: on a timeout cwnd is one segment (the loss window) and ssthresh
/// max(FlightSize/2, 2·SMSS); only the first segment goes again.
#[test]
fn rto_collapses_cwnd_to_one_segment() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(&bytes(10 * MSS as usize));
    assert_eq!(h.take().len(), 10);
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    let i = h.info();
    assert_eq!((i.cwnd, i.ssthresh), (MSS, 7300));
    // Go-back-N: the ACK of the first segment lets the next two go (slow start).
    h.send(1100, Seg::ack(1, 1 + MSS));
    h.expect(&[
        Exp::data_len(1 + MSS, 1, MSS as usize),
        Exp::data_len(1 + 2 * MSS, 1, MSS as usize),
    ]);
}

/// A FIN is retransmitted by the timer like data.
#[test]
fn fin_is_retransmitted_by_the_timer() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.shutdown();
    h.expect(&[Exp::fin(1, 1)]);
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::fin(1, 1)]);
    h.send(1010, Seg::ack(1, 2));
    assert_eq!(h.state(), State::FinWait2);
    assert_eq!(h.wake_within(30_000), None);
}

/// The documented choice: a pure ACK carries SEQ = the highest sequence number sent
/// (RFC 9293's SND.NXT), also while go-back-N retransmits from further back.
#[test]
fn acks_during_go_back_n_carry_the_highest_sequence_number_sent() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(&bytes(10 * MSS as usize));
    assert_eq!(h.take().len(), 10);
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    h.send(1001, Seg::data(1, 1, b"hi"));
    h.expect(&[Exp::ack(1 + 10 * MSS, 3)]);
}

/// RFC 5681 §2 and §3.1: SMSS excludes the TCP options, and after an RTO the window is one
/// SMSS: with timestamps (1448 bytes per full segment) exactly one whole segment is
/// retransmitted — not a segment and a 12-byte fragment, as when windows counted the 1460
/// bytes of the MSS option. The initial window is ten whole segments.
#[test]
fn after_an_rto_one_whole_segment_is_retransmitted() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.write(&bytes(20 * 1448));
    let first = h.take();
    assert_eq!(first.len(), 10, "initial window: {first:?}");
    assert!(first.iter().all(|g| g.payload.len() == 1448), "{first:?}");
    h.wake();
    let rtx = h.take();
    assert_eq!(rtx.len(), 1, "one segment after the RTO: {rtx:?}");
    assert_eq!((rtx[0].seq, rtx[0].payload.len()), (1, 1448), "{rtx:?}");
}
