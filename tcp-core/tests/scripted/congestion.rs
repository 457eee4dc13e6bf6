//! NewReno: initial window (RFC 6928), slow start and congestion avoidance (RFC 5681 §3.1),
//! fast retransmit and fast recovery (RFC 5681 §3.2) with partial ACKs (RFC 6582). Plain
//! segments (no SACK, no timestamps): 1460 bytes each.

use crate::harness::*;

const MSS: u32 = 1460;

/// Plain segments and a send buffer large enough for every test here.
fn plain() -> H {
    let mut cfg = cfg_plain();
    cfg.tcp.send_buffer = 1 << 20;
    H::new(cfg)
}

/// Established (passive), with `n` bytes written; returns what went out at once.
fn established_with(h: &mut H, n: usize) -> Vec<Got> {
    h.passive_open(0, PeerOpts::plain());
    h.write(&bytes(n));
    h.take()
}

fn full_segments(out: &[Got], from: u32) {
    for (i, g) in out.iter().enumerate() {
        assert_eq!(
            (g.seq, g.payload.len()),
            (from + i as u32 * MSS, MSS as usize),
            "segment {i} of {out:?}"
        );
    }
}

/// RFC 6928 §2: IW = min(10·MSS, max(2·MSS, 14600)): ten 1460-byte segments.
#[test]
fn initial_window_is_ten_segments_rfc6928() {
    let mut h = plain();
    let out = established_with(&mut h, 100_000);
    assert_eq!(out.len(), 10, "{out:?}");
    full_segments(&out, 1);
    assert_eq!(h.info().cwnd, 14_600);
    h.idle(500);
    h.expect_nothing();
}

/// RFC 6928 §2 with a large MSS: the 14600-byte cap applies (three 4000-byte segments fit).
#[test]
fn initial_window_with_a_large_mss_is_capped_at_14600_bytes() {
    let mut cfg = cfg_plain();
    cfg.tcp.send_buffer = 1 << 20;
    cfg.tcp.mss = 4000;
    let mut h = H::new(cfg);
    h.passive_open(
        0,
        PeerOpts {
            mss: Some(4000),
            ..PeerOpts::plain()
        },
    );
    h.write(&bytes(100_000));
    let out = h.take();
    let sent: usize = out.iter().map(|g| g.payload.len()).sum();
    assert!((12_000..=14_600).contains(&sent), "{out:?}");
    assert_eq!(h.info().cwnd, 14_600);
}

/// RFC 6928 §2 with a small MSS: 10 segments of 536.
#[test]
fn initial_window_with_a_small_mss_is_ten_segments() {
    let mut h = plain();
    h.passive_open(
        0,
        PeerOpts {
            mss: Some(536),
            ..PeerOpts::plain()
        },
    );
    h.write(&bytes(100_000));
    let out = h.take();
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|g| g.payload.len() == 536));
}

#[test]
fn initial_window_is_configurable() {
    let mut cfg = cfg_plain();
    cfg.tcp.send_buffer = 1 << 20;
    cfg.tcp.initial_window_segments = Some(2);
    let mut h = H::new(cfg);
    let out = established_with(&mut h, 100_000);
    assert_eq!(out.len(), 2);
}

/// RFC 5681 §3.1 slow start with RFC 3465 byte counting: each ACK of one segment grows cwnd
/// by one segment, so two segments go out per ACK.
#[test]
fn slow_start_sends_two_segments_per_acked_segment() {
    let mut h = plain();
    established_with(&mut h, 200_000);
    for i in 1..=5u32 {
        h.send(10 + u64::from(i), Seg::ack(1, 1 + i * MSS));
        let out = h.expect(&[
            Exp::data_len(1 + (10 + 2 * (i - 1)) * MSS, 1, MSS as usize),
            Exp::data_len(1 + (11 + 2 * (i - 1)) * MSS, 1, MSS as usize),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(h.info().cwnd, 14_600 + i * MSS);
    }
}

/// RFC 3465 §2.2 (L = 2): a stretch ACK for ten segments grows cwnd by at most 2·SMSS.
#[test]
fn slow_start_growth_per_ack_is_capped_at_two_smss() {
    let mut h = plain();
    established_with(&mut h, 200_000);
    h.send(10, Seg::ack(1, 1 + 10 * MSS));
    assert_eq!(h.info().cwnd, 14_600 + 2 * MSS);
    let out = h.take();
    assert_eq!(out.len(), 12, "a new window of 12 segments");
}

/// RFC 5681 §3.1: after a loss, cwnd grows exponentially up to ssthresh, then by one SMSS
/// per cwnd of acknowledged bytes (congestion avoidance).
#[test]
fn congestion_avoidance_adds_one_smss_per_window_of_acked_bytes() {
    let mut h = plain();
    established_with(&mut h, 300_000);
    // The RTO collapses cwnd to one segment and halves ssthresh (FlightSize 14600).
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    assert_eq!((h.info().cwnd, h.info().ssthresh), (MSS, 7300));
    let mut acked = 1;
    let mut cwnds = Vec::new();
    for i in 0..12u64 {
        acked += MSS;
        h.send(1010 + i, Seg::ack(1, acked));
        h.take();
        cwnds.push(h.info().cwnd);
    }
    assert_eq!(
        cwnds,
        vec![
            2920, 4380, 5840, 7300, // slow start up to ssthresh
            7300, 7300, 7300, 7300, 8760, // + one SMSS after 7300 bytes acknowledged
            8760, 8760, 8760,
        ]
    );
}

/// RFC 5681 §3.2: two duplicate ACKs send nothing (no limited transmit data here); the third
/// retransmits the first unacknowledged segment and sets ssthresh = FlightSize/2,
/// cwnd = ssthresh + 3·SMSS.
#[test]
fn fast_retransmit_on_the_third_duplicate_ack() {
    let mut h = plain();
    established_with(&mut h, 10 * MSS as usize);
    h.send(10, Seg::ack(1, 1));
    h.send(11, Seg::ack(1, 1));
    h.expect_nothing();
    h.send(12, Seg::ack(1, 1));
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    let i = h.info();
    assert_eq!((i.ssthresh, i.cwnd), (7300, 7300 + 3 * MSS));
    let c = h.counters();
    assert_eq!((c.fast_retransmits, c.retransmits), (1, 1));
}

/// RFC 5681 §2: an ACK that changes the window, or carries data, is not a duplicate ACK.
#[test]
fn acks_with_data_or_a_new_window_are_not_duplicate_acks() {
    let mut h = plain();
    established_with(&mut h, 10 * MSS as usize);
    h.send(10, Seg::ack(1, 1).win(60_000));
    h.send(11, Seg::data(1, 1, b"x").win(60_000));
    h.send(12, Seg::ack(1, 1).win(50_000));
    h.take();
    assert_eq!(h.counters().fast_retransmits, 0);
}

/// RFC 3042 limited transmit, then RFC 5681 §3.2: the first two duplicate ACKs each let one
/// new segment go beyond cwnd; the third retransmits, with ssthresh computed without the
/// limited-transmit data ("MUST NOT be included"); each further duplicate ACK inflates cwnd
/// by SMSS, and new data goes out once cwnd exceeds FlightSize (step 4).
#[test]
fn fast_recovery_inflates_cwnd_per_further_duplicate_ack() {
    let mut h = plain();
    established_with(&mut h, 20 * MSS as usize);
    h.send(10, Seg::ack(1, 1));
    h.expect(&[Exp::data_len(1 + 10 * MSS, 1, MSS as usize)]);
    h.send(11, Seg::ack(1, 1));
    h.expect(&[Exp::data_len(1 + 11 * MSS, 1, MSS as usize)]);
    assert_eq!(
        h.info().cwnd,
        10 * MSS,
        "limited transmit leaves cwnd alone"
    );
    h.send(12, Seg::ack(1, 1));
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    let i = h.info();
    assert_eq!((i.ssthresh, i.cwnd), (5 * MSS, 8 * MSS));
    // cwnd 9, 10, 11, 12 SMSS: FlightSize is 12 segments, nothing new yet.
    for t in 13..17 {
        h.send(t, Seg::ack(1, 1));
    }
    h.expect_nothing();
    // cwnd 13 SMSS: one new segment.
    h.send(17, Seg::ack(1, 1));
    h.expect(&[Exp::data_len(1 + 12 * MSS, 1, MSS as usize)]);
    h.send(18, Seg::ack(1, 1));
    h.expect(&[Exp::data_len(1 + 13 * MSS, 1, MSS as usize)]);
}

/// RFC 3042: with nothing unsent, the first two duplicate ACKs send nothing, and limited
/// transmit never adds to a window the receiver did not offer.
#[test]
fn limited_transmit_needs_unsent_data_and_the_receivers_window() {
    let mut h = plain();
    established_with(&mut h, 10 * MSS as usize);
    h.send(10, Seg::ack(1, 1));
    h.send(11, Seg::ack(1, 1));
    h.expect_nothing();
    let mut h = plain();
    established_with(&mut h, 20 * MSS as usize);
    // The peer's window is exactly the ten segments in flight.
    h.send(10, Seg::ack(1, 1).win((10 * MSS) as u16));
    h.send(11, Seg::ack(1, 1).win((10 * MSS) as u16));
    h.expect_nothing();
}

/// RFC 6582 §3.2 step 3: a partial ACK during fast recovery retransmits the first
/// unacknowledged segment at once and deflates cwnd by the amount acknowledged (less one SMSS
/// added back).
#[test]
fn partial_ack_retransmits_the_next_hole_rfc6582() {
    let mut h = plain();
    established_with(&mut h, 10 * MSS as usize);
    // Segments 0 and 3 lost.
    for t in 10..13 {
        h.send(t, Seg::ack(1, 1));
    }
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    let cwnd = h.info().cwnd;
    // The retransmission of segment 0 fills the first hole: ACK up to segment 3.
    h.send(20, Seg::ack(1, 1 + 3 * MSS));
    h.expect(&[Exp::data_len(1 + 3 * MSS, 1, MSS as usize)]);
    assert_eq!(h.info().cwnd, cwnd - 3 * MSS + MSS);
    assert_eq!(h.counters().fast_retransmits, 1, "one recovery episode");
    assert_eq!(h.counters().retransmits, 2);
}

/// RFC 6582 §3.2 step 3, full acknowledgment: recovery ends and cwnd is
/// min(ssthresh, max(FlightSize, SMSS) + SMSS) (option 1).
#[test]
fn full_ack_ends_fast_recovery() {
    let mut h = plain();
    established_with(&mut h, 10 * MSS as usize);
    for t in 10..13 {
        h.send(t, Seg::ack(1, 1));
    }
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    h.send(20, Seg::ack(1, 1 + 10 * MSS));
    h.expect_nothing();
    let i = h.info();
    assert_eq!((i.cwnd, i.ssthresh), (2 * MSS, 7300));
    // A new loss later is a new episode: the two unsent segments go on the first two
    // duplicate ACKs (RFC 3042 limited transmit), the third retransmits again.
    h.write(&bytes(4 * MSS as usize));
    assert_eq!(h.take().len(), 2);
    h.send(30, Seg::ack(1, 1 + 10 * MSS));
    h.expect(&[Exp::data_len(1 + 12 * MSS, 1, MSS as usize)]);
    h.send(31, Seg::ack(1, 1 + 10 * MSS));
    h.expect(&[Exp::data_len(1 + 13 * MSS, 1, MSS as usize)]);
    h.send(32, Seg::ack(1, 1 + 10 * MSS));
    h.expect(&[Exp::data_len(1 + 10 * MSS, 1, MSS as usize)]);
    assert_eq!(h.counters().fast_retransmits, 2);
}

/// RFC 6582 §3.2 step 2 (careful variant): duplicate ACKs that do not cover more than
/// `recover` after a timeout do not start another fast retransmit.
#[test]
fn duplicate_acks_below_recover_after_rto_do_not_fast_retransmit() {
    let mut h = plain();
    established_with(&mut h, 10 * MSS as usize);
    assert_eq!(h.wake(), 1000);
    h.expect(&[Exp::data_len(1, 1, MSS as usize)]);
    // The original segments 1.. arrive late and produce duplicate ACKs for segment 0.
    for t in 1001..1004 {
        h.send(t, Seg::ack(1, 1));
    }
    h.expect_nothing();
    assert_eq!(h.counters().fast_retransmits, 0);
}

/// RFC 5681 §4.1: after an idle period longer than the RTO, cwnd is reduced to the restart
/// window min(IW, cwnd) before sending again.
#[test]
fn cwnd_restarts_from_the_initial_window_after_idle() {
    let mut h = plain();
    established_with(&mut h, 10 * MSS as usize);
    h.send(10, Seg::ack(1, 1 + 10 * MSS));
    assert_eq!(h.info().cwnd, 14_600 + 2 * MSS);
    // Idle for 5 s (the RTO is 1 s), then a burst of data: ten segments, not twelve.
    h.at(5000);
    h.write(&bytes(20 * MSS as usize));
    let out = h.take();
    assert_eq!(out.len(), 10, "{out:?}");
    full_segments(&out, 1 + 10 * MSS);
}
