//! Options: MSS (RFC 9293 §3.7.1), window scaling and timestamps with PAWS (RFC 7323),
//! SACK (RFC 2018, RFC 2883, RFC 6675), and peers that negotiate none of them.

use crate::harness::*;
use tcp_core::State;

#[test]
fn mss_option_is_announced_and_the_smaller_mss_is_used() {
    let mut h = H::plain();
    let synack = h.passive_open(
        0,
        PeerOpts {
            mss: Some(536),
            ..PeerOpts::plain()
        },
    );
    assert_eq!(synack.opts.mss, Some(1460));
    assert_eq!(h.info().smss, 536);
    h.set_nodelay(true);
    h.write(&bytes(2000));
    h.expect(&[
        Exp::data_len(1, 1, 536),
        Exp::data_len(537, 1, 536),
        Exp::data_len(1073, 1, 536),
        Exp::data_len(1609, 1, 392),
    ]);
}

#[test]
fn our_mss_caps_the_segment_size() {
    let mut cfg = cfg_plain();
    cfg.tcp.mss = 1000;
    let mut h = H::new(cfg);
    let synack = h.passive_open(0, PeerOpts::plain());
    assert_eq!(synack.opts.mss, Some(1000));
    h.write(&bytes(2000));
    h.expect(&[Exp::data_len(1, 1, 1000), Exp::data_len(1001, 1, 1000)]);
}

/// RFC 9293 §3.7.1: "If an MSS Option is not received at connection setup, TCP
/// implementations MUST assume a default send MSS of 536".
#[test]
fn missing_mss_option_means_536() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::none());
    assert_eq!(h.info().smss, 536);
    h.write(&bytes(600));
    h.expect(&[Exp::data_len(1, 1, 536)]);
}

/// RFC 7323 §2.2/§2.3: both sides offered, so windows after the SYN are scaled: ours is
/// shifted right by our shift, the peer's left by its.
#[test]
fn window_scaling_negotiated_scales_both_windows() {
    let mut h = H::full();
    let synack = h.passive_open(0, PeerOpts::full());
    // 64 KiB of receive buffer needs a shift of 1; the SYN-ACK's own window is unscaled.
    assert_eq!(synack.opts.wscale, Some(1));
    assert_eq!(synack.window, 65_535);
    let i = h.info();
    assert!(i.window_scaling);
    assert_eq!((i.snd_wscale, i.rcv_wscale), (7, 1));
    assert_eq!(i.snd_wnd, 65_535 << 7);
    h.send(1, Seg::data(1, 1, &bytes(100)).win(20));
    h.idle(100);
    // About (65536 - 100) >> 1: the window field is scaled down by our shift.
    let ack = h.expect(&[Exp::ack(1, 101)]);
    assert!((32_717..=32_718).contains(&ack[0].window), "{ack:?}");
    assert_eq!(h.info().snd_wnd, 20 << 7);
    // The scaled window (2560 bytes, where 20 unscaled bytes would allow nothing) lets one
    // full segment go; sender SWS avoidance holds the 1112 bytes left of it.
    h.set_nodelay(true);
    h.write(&bytes(3000));
    h.expect(&[Exp::data_len(1, 101, 1448)]);
}

/// RFC 7323 §2.2: the window of a SYN or SYN-ACK is never scaled.
#[test]
fn syn_window_is_never_scaled() {
    let mut h = H::full();
    h.connect(0);
    h.auto_ts = true;
    h.send(
        1,
        Seg::synack(0, 1).with_opts(PeerOpts {
            window: 1000,
            ..PeerOpts::full()
        }),
    );
    h.expect(&[Exp::ack(1, 1).ts(true)]);
    assert_eq!(h.info().snd_wnd, 1000);
}

#[test]
fn window_scaling_is_off_when_the_peer_does_not_offer_it() {
    let mut h = H::full();
    let synack = h.passive_open(
        0,
        PeerOpts {
            ws: None,
            ..PeerOpts::full()
        },
    );
    assert_eq!(synack.opts.wscale, None);
    let i = h.info();
    assert!(!i.window_scaling);
    assert_eq!((i.snd_wscale, i.rcv_wscale), (0, 0));
    h.send(1, Seg::data(1, 1, &bytes(100)).win(1000));
    h.idle(100);
    // About 65536 - 100: unscaled.
    let ack = h.expect(&[Exp::ack(1, 101)]);
    assert!((65_435..=65_436).contains(&ack[0].window), "{ack:?}");
    assert_eq!(h.info().snd_wnd, 1000);
}

/// RFC 7323 §2.3: "If a Window Scale option is received with a shift.cnt value larger than
/// 14, the TCP SHOULD log the error but MUST use 14 instead of the specified value."
#[test]
fn window_scale_above_14_is_used_as_14() {
    let mut h = H::full();
    h.passive_open(
        0,
        PeerOpts {
            ws: Some(15),
            ..PeerOpts::full()
        },
    );
    assert_eq!(h.info().snd_wscale, 14);
}

/// RFC 7323 §3.2: TSecr echoes the TSval of the segment being acknowledged.
#[test]
fn timestamps_echo_the_peers_tsval() {
    let mut h = H::full();
    let synack = h.passive_open(0, PeerOpts::full());
    assert_eq!(synack.opts.timestamp.map(|t| t.1), Some(PEER_TS0));
    h.send(10, Seg::data(1, 1, b"x").ts(PEER_TS0 + 10, h.last_tsval()));
    h.idle(100);
    h.expect(&[Exp::ack(1, 2).tsecr(PEER_TS0 + 10)]);
    assert!(h.info().timestamps);
}

/// RFC 7323 §4.3: TS.Recent is updated only from a segment with SEG.SEQ =< Last.ACK.sent:
/// an out-of-order segment does not move it, the segment filling the hole does.
#[test]
fn ts_recent_is_taken_only_from_segments_at_the_left_edge() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    let e = h.last_tsval();
    h.send(10, Seg::data(1, 1, b"a").ts(100_000_000, e));
    h.idle(100);
    h.expect(&[Exp::ack(1, 2).tsecr(100_000_000)]);
    // Out of order, newer TSval: the duplicate ACK still echoes 100_000_000.
    h.send(200, Seg::data(3, 1, b"c").ts(300_000_000, e));
    h.expect(&[Exp::ack(1, 2).tsecr(100_000_000).sack(&[(3, 4)])]);
    // The hole is filled by a segment with an older (but not PAWS-old) TSval.
    h.send(210, Seg::data(2, 1, b"b").ts(200_000_000, e));
    h.expect(&[Exp::ack(1, 4).tsecr(200_000_000)]);
}

/// RFC 7323 §5.3 R1: "If SEG.TSval < TS.Recent and if TS.Recent is valid ... treat the
/// arriving segment as not acceptable: Send an acknowledgment in reply ... and drop the
/// segment."
#[test]
fn paws_drops_a_segment_with_an_old_timestamp_and_acks() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    let e = h.last_tsval();
    h.send(10, Seg::data(1, 1, b"new").ts(PEER_TS0 + 10, e));
    h.idle(100);
    h.expect(&[Exp::ack(1, 4).tsecr(PEER_TS0 + 10)]);
    let before = h.counters().out_of_window;
    // A wrapped-around old duplicate: in window, but with an older TSval.
    h.send(200, Seg::data(4, 1, b"old").ts(PEER_TS0 + 5, e));
    h.expect(&[Exp::ack(1, 4).tsecr(PEER_TS0 + 10)]);
    assert_eq!(h.read(), b"new");
    assert_eq!(h.counters().out_of_window, before + 1);
}

/// RFC 7323 §5.3 R1 does not apply to RST segments: a RST with an old TSval at RCV.NXT still
/// resets.
#[test]
fn paws_does_not_apply_to_rst() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, b"x").ts(PEER_TS0 + 10, h.last_tsval()));
    h.send(20, Seg::rst(2).ts(PEER_TS0, 0));
    h.expect_nothing();
    assert_eq!(h.state(), State::Closed);
}

/// RFC 7323 §3.2: "If a non-RST segment is received without a TSopt, a TCP SHOULD silently
/// drop the segment" (the documented choice).
#[test]
fn segment_without_timestamp_is_dropped_when_timestamps_are_in_use() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, b"nots").no_ts());
    h.idle(1000);
    h.expect_nothing();
    assert_eq!(h.read(), b"");
    // RFC 7323 §3.2 exempts RST: a RST without timestamps is processed.
    h.send(1100, Seg::rst(1).no_ts());
    assert_eq!(h.state(), State::Closed);
}

#[test]
fn timestamps_are_not_used_when_the_peer_does_not_offer_them() {
    let mut h = H::full();
    let synack = h.passive_open(
        0,
        PeerOpts {
            ts: false,
            ..PeerOpts::full()
        },
    );
    assert_eq!(synack.opts.timestamp, None);
    assert!(!h.info().timestamps);
    h.set_nodelay(true);
    h.write(b"hello");
    h.expect(&[Exp::data(1, 1, b"hello").ts(false)]);
}

/// RFC 2018 §2: SACK-permitted in the SYN-ACK only if the SYN carried it.
#[test]
fn sack_permitted_is_negotiated() {
    let mut h = H::full();
    let synack = h.passive_open(0, PeerOpts::full());
    assert!(synack.opts.sack_permitted);
    assert!(h.info().sack);
    let mut h = H::full();
    let synack = h.passive_open(
        0,
        PeerOpts {
            sack: false,
            ..PeerOpts::full()
        },
    );
    assert!(!synack.opts.sack_permitted);
    assert!(!h.info().sack);
    // Out-of-order data then gets a duplicate ACK without SACK blocks.
    h.send(10, Seg::data(101, 1, b"late"));
    h.expect(&[Exp::ack(1, 1).sack(&[])]);
}

/// RFC 2018 §4: an out-of-order segment is acknowledged at once with SACK blocks, the first
/// block being the most recently received; RFC 5681 §4.2: the ACK filling the hole goes at
/// once too.
#[test]
fn sack_blocks_are_sent_on_out_of_order_data() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1001, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 1).sack(&[(1001, 1101)])]);
    h.send(11, Seg::data(2001, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 1).sack(&[(2001, 2101), (1001, 1101)])]);
    h.send(12, Seg::data(1101, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 1).sack(&[(1001, 1201), (2001, 2101)])]);
    h.send(13, Seg::data(1, 1, &bytes(1000)));
    h.expect(&[Exp::ack(1, 1201).sack(&[(2001, 2101)])]);
}

/// RFC 2883 §4: a duplicate segment is reported in a D-SACK block, first.
#[test]
fn duplicate_segment_is_reported_with_a_dsack_block() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1, 1, &bytes(100)));
    h.idle(100);
    h.expect(&[Exp::ack(1, 101).sack(&[])]);
    h.send(200, Seg::data(1, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 101).sack(&[(1, 101)])]);
}

/// RFC 2883 §4: a segment that partly duplicates data held out of order is reported with a
/// D-SACK block for the duplicated stretch, followed by the block that now contains it.
#[test]
fn partly_duplicate_out_of_order_segment_is_reported_with_a_dsack_block() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(1001, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 1).sack(&[(1001, 1101)])]);
    h.send(11, Seg::data(2001, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 1).sack(&[(2001, 2101), (1001, 1101)])]);
    h.send(12, Seg::data(1051, 1, &bytes(150)));
    h.expect(&[Exp::ack(1, 1).sack(&[(1051, 1101), (1001, 1201), (2001, 2101)])]);
}

/// RFC 2883 §4 and RFC 5681 §4.2: an in-order segment that covers data already held out of
/// order is acknowledged at once, with the duplicated stretch in a D-SACK block.
#[test]
fn in_order_segment_over_held_data_is_reported_with_a_dsack_block() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    h.send(10, Seg::data(101, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 1).sack(&[(101, 201)])]);
    h.send(11, Seg::data(1, 1, &bytes(200)));
    h.expect(&[Exp::ack(1, 201).sack(&[(101, 201)])]);
}

/// RFC 2883 §4.2 / RFC 6675 §2: ACKs whose only SACK news is a D-SACK block (a duplicate the
/// peer received) are not duplicate ACKs: three of them trigger no fast retransmit.
#[test]
fn dsack_from_the_peer_is_not_a_duplicate_ack() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    let s = send_segments(&mut h, 4);
    h.send(10, Seg::ack(1, s[1]));
    for t in 11..15 {
        h.send(t, Seg::ack(1, s[1]).sack(&[(s[0], s[1])]));
    }
    h.expect_nothing();
    assert_eq!(h.counters().fast_retransmits, 0);
}

/// RFC 9293 §3.7.1: options count against the MSS. While out-of-order data is held, our
/// data segments carry SACK blocks, and their payload shrinks so that payload and options
/// stay within the peer's MSS (1460): 1448 with timestamps alone, 1448 − 12 with one SACK
/// block, 1448 − 28 with three. A full-sized segment with SACK blocks would exceed the MTU.
#[test]
fn data_segments_carrying_sack_blocks_stay_within_the_mss() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    // One hole in what the peer sends: one SACK block on everything we send.
    h.send(10, Seg::data(1001, 1, &bytes(100)));
    h.expect(&[Exp::ack(1, 1).sack(&[(1001, 1101)])]);
    h.write(&bytes(4000));
    let out = h.take();
    assert!(!out.is_empty());
    for g in &out {
        let opts = tcp_core::wire::tcp_options_len(&g.opts);
        assert!(g.payload.len() + opts <= 1460, "{g:?}: {opts} option bytes");
        assert_eq!(g.sack, [(1001, 1101)], "{g:?}");
    }
    assert_eq!(out[0].payload.len(), 1448 - 12);
    // Three holes: three blocks, 28 bytes of SACK option.
    h.send(20, Seg::data(2001, 1, &bytes(100)));
    h.send(21, Seg::data(3001, 1, &bytes(100)));
    h.take();
    h.write(&bytes(4000));
    for g in h.take().iter().filter(|g| !g.payload.is_empty()) {
        let opts = tcp_core::wire::tcp_options_len(&g.opts);
        assert_eq!(g.sack.len(), 3, "{g:?}");
        assert!(g.payload.len() + opts <= 1460, "{g:?}: {opts} option bytes");
    }
    // Every hole filled: full segments again.
    h.send(30, Seg::data(1, 1, &bytes(3100)));
    h.take();
    h.write(&bytes(1448));
    let full = h.take();
    assert!(
        full.iter()
            .any(|g| g.payload.len() == 1448 && g.sack.is_empty()),
        "{full:?}"
    );
}

/// Without timestamps four SACK blocks fit (36 option bytes) and the payload is 1460 − 36.
#[test]
fn data_segments_with_four_sack_blocks_and_no_timestamps_stay_within_the_mss() {
    let mut h = H::full();
    h.passive_open(
        0,
        PeerOpts {
            ts: false,
            ..PeerOpts::full()
        },
    );
    for (i, t) in (10..14).enumerate() {
        h.send(t, Seg::data(1001 + 1000 * i as u32, 1, &bytes(100)).no_ts());
    }
    h.take();
    h.write(&bytes(3000));
    let out = h.take();
    assert!(!out.is_empty());
    for g in &out {
        let opts = tcp_core::wire::tcp_options_len(&g.opts);
        assert_eq!(g.sack.len(), 4, "{g:?}");
        assert!(g.payload.len() + opts <= 1460, "{g:?}: {opts} option bytes");
    }
    assert_eq!(out[0].payload.len(), 1460 - 36);
}

/// Sends `n` full segments (1448 bytes with timestamps) and returns their relative start
/// sequence numbers.
fn send_segments(h: &mut H, n: u32) -> Vec<u32> {
    h.write(&bytes(1448 * n as usize));
    let out = h.take();
    assert_eq!(out.len(), n as usize, "{out:?}");
    out.iter().map(|g| g.seq).collect()
}

/// Segments 0 and 4 of ten are lost, the others SACKed one ACK at a time, up to the point
/// where both holes have been retransmitted; returns the segments' start numbers.
fn sack_recovery(h: &mut H) -> Vec<u32> {
    h.passive_open(0, PeerOpts::full());
    let s = send_segments(h, 10);
    let end = s[9] + 1448;
    let ack = |h: &mut H, t, blocks: &[(u32, u32)]| {
        h.send(t, Seg::ack(1, 1).sack(blocks));
    };
    ack(h, 10, &[(s[1], s[2])]);
    ack(h, 11, &[(s[1], s[3])]);
    h.expect_nothing();
    // RFC 6675 §5 (4): the third duplicate ACK retransmits the first hole.
    ack(h, 12, &[(s[5], s[6]), (s[1], s[4])]);
    h.expect(&[Exp::data_len(s[0], 1, 1448)]);
    ack(h, 13, &[(s[5], s[7]), (s[1], s[4])]);
    h.expect_nothing();
    // Three SACKed segments above segment 4 now: it is lost (IsLost) and NextSeg() rule (1)
    // picks it, not the SACKed segments before it; then rule (4), the rescue retransmission
    // of the highest unSACKed segment.
    ack(h, 14, &[(s[5], s[8]), (s[1], s[4])]);
    h.expect(&[Exp::data_len(s[4], 1, 1448), Exp::data_len(s[9], 1, 1448)]);
    ack(h, 15, &[(s[5], end), (s[1], s[4])]);
    h.expect_nothing();
    s
}

/// RFC 6675 §5: on the third duplicate ACK with SACK information the sender retransmits the
/// first hole, then, as `cwnd - pipe` allows, the next segment NextSeg() picks: the next
/// hole; the cumulative ACK ends recovery.
#[test]
fn sack_blocks_drive_the_retransmission_of_every_hole() {
    let mut h = H::full();
    let s = sack_recovery(&mut h);
    h.send(25, Seg::ack(1, s[9] + 1448));
    h.expect_nothing();
    let c = h.counters();
    assert_eq!((c.fast_retransmits, c.retransmits), (1, 3));
}

/// RFC 6675 §5 (C): during SACK recovery every transmission is chosen by NextSeg(), whose
/// rules only pick sequence numbers above HighRxt: a partial ACK does not retransmit a hole
/// that was already retransmitted in this episode (RFC 6582's partial-ACK retransmission is
/// for recovery without SACK).
#[test]
fn sack_recovery_does_not_retransmit_a_hole_twice_on_a_partial_ack() {
    let mut h = H::full();
    let s = sack_recovery(&mut h);
    let end = s[9] + 1448;
    // The retransmission of segment 0 arrives: the ACK covers up to the second hole, whose
    // retransmission is on its way.
    h.send(21, Seg::ack(1, s[4]).sack(&[(s[5], end)]));
    h.expect_nothing();
    h.send(25, Seg::ack(1, end));
    h.expect_nothing();
    assert_eq!(h.counters().retransmits, 3);
}

/// RFC 6675 §5 (3) step (2): "If DupAcks < DupThresh but IsLost (HighACK + 1) returns
/// true -- indicating at least three segments have arrived above the current cumulative
/// acknowledgment point, which is taken to indicate loss -- go to step (4)": fast
/// retransmit on the first duplicate ACK. A receiver that acknowledges a whole burst at
/// once (Linux coalesces the ACKs of the segments one interrupt brought) sends one
/// duplicate ACK for it, SACKing everything above the hole; waiting for two more that
/// never come left the hole to the retransmission timer.
#[test]
fn one_duplicate_ack_sacking_three_segments_above_a_hole_starts_recovery() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    let s = send_segments(&mut h, 10);
    let end = s[9] + 1448;
    // Segment 0 is lost; one ACK reports the nine segments after it. Segment 0 goes again
    // at once (NextSeg() rule (1)), then, with nothing else to send, the rescue
    // retransmission of the final segment (rule (4)).
    h.send(10, Seg::ack(1, 1).sack(&[(s[1], end)]));
    h.expect(&[Exp::data_len(s[0], 1, 1448), Exp::data_len(s[9], 1, 1448)]);
    assert_eq!(h.counters().fast_retransmits, 1);
    h.send(20, Seg::ack(1, end));
    h.expect_nothing();
    assert_eq!(h.counters().retransmits, 2);
}

/// RFC 6675 §5 (3) step (2) asks for IsLost (HighACK + 1): fewer than three segments SACKed
/// above the hole (two, here, in one ACK) are no loss yet; the duplicate ACK only counts.
#[test]
fn one_duplicate_ack_sacking_two_segments_above_a_hole_waits_for_more() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    let s = send_segments(&mut h, 3);
    h.send(10, Seg::ack(1, 1).sack(&[(s[1], s[2] + 1448)]));
    h.expect_nothing();
    assert_eq!(h.counters().fast_retransmits, 0);
}

/// A peer that offers no option at all (not even MSS): everything works with plain
/// segments of 536 bytes, and the stack sends no option after its SYN-ACK.
#[test]
fn works_with_a_peer_that_negotiates_no_option() {
    let mut h = H::full();
    let synack = h.passive_open(0, PeerOpts::none());
    assert_eq!(synack.opts.mss, Some(1460));
    assert_eq!(synack.opts.wscale, None);
    assert!(!synack.opts.sack_permitted);
    assert_eq!(synack.opts.timestamp, None);
    let i = h.info();
    assert!(!i.timestamps && !i.sack && !i.window_scaling);
    h.write(&bytes(1000));
    h.expect(&[Exp::data_len(1, 1, 536).no_opts()]);
    h.send(10, Seg::ack(1, 537));
    h.expect(&[Exp::data_len(537, 1, 464).no_opts()]);
    h.send(20, Seg::data(1, 1001, b"reply"));
    h.idle(100);
    // Receiver SWS avoidance keeps the right edge where it was: 65_536 - 6.
    h.expect(&[Exp::ack(1001, 6).no_opts().win(65_530)]);
    assert_eq!(h.read(), b"reply");
    // Out-of-order data: a duplicate ACK without SACK blocks.
    h.send(200, Seg::data(100, 1001, b"late"));
    h.expect(&[Exp::ack(1001, 6).no_opts()]);
}

/// Active open against a peer that answers with no options: the SYN offered everything,
/// none is used.
#[test]
fn active_open_to_a_peer_without_options() {
    let mut h = H::full();
    let syn = h.connect(0);
    assert_eq!(syn.opts.mss, Some(1460));
    assert!(syn.opts.sack_permitted);
    assert!(syn.opts.timestamp.is_some());
    assert_eq!(syn.opts.wscale, Some(1));
    h.send(5, Seg::synack(0, 1).with_opts(PeerOpts::none()));
    h.expect(&[Exp::ack(1, 1).no_opts()]);
    let i = h.info();
    assert!(!i.timestamps && !i.sack && !i.window_scaling);
    assert_eq!(i.smss, 536);
}

/// SACK blocks outside what was sent (or inverted) are ignored: they are no new SACK
/// information (RFC 6675 §2), so ACKs carrying them (each with a new window, so not classic
/// duplicate ACKs either) start no recovery, and the connection carries on.
#[test]
fn sack_blocks_outside_the_sent_range_are_ignored() {
    let mut h = H::full();
    h.passive_open(0, PeerOpts::full());
    let s = send_segments(&mut h, 4);
    let end = s[3] + 1448;
    h.send(
        10,
        Seg::ack(1, 1).sack(&[(end + 1000, end + 2000)]).win(60_000),
    );
    h.send(11, Seg::ack(1, 1).sack(&[(s[2], s[1])]).win(59_000));
    h.send(
        12,
        Seg::ack(1, 1)
            .sack(&[(0u32.wrapping_sub(5000), 1)])
            .win(58_000),
    );
    h.expect_nothing();
    assert_eq!(h.counters().retransmits, 0);
    h.send(20, Seg::ack(1, end));
    h.write(b"more");
    h.expect(&[Exp::data(end, 1, b"more")]);
}

/// Active open against a peer that answers with every option: all are in effect.
#[test]
fn active_open_with_every_option() {
    let mut h = H::full();
    h.active_open(0, PeerOpts::full());
    let i = h.info();
    assert!(i.timestamps && i.sack && i.window_scaling);
    assert_eq!((i.snd_wscale, i.rcv_wscale, i.smss), (7, 1, 1460));
    h.write(b"hi");
    h.expect(&[Exp::data(1, 1, b"hi").ts(true).sack(&[])]);
}
