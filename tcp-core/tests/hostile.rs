//! Hostile input in every state: random segment sequences, mangled and raw frames, time and
//! socket calls, thrown at a connection brought into each of the eleven RFC 9293 states by
//! [`Harness`]. After every input the harness checks that each frame sent parses, that no
//! RST answers a segment carrying RST, and the invariants of
//! [`check_conn`](tcp_core::testing::check_conn) (SND.UNA ≤ SND.NXT ≤ SND.MAX, buffers
//! within bounds, cwnd ≥ SMSS); at the end, with everything released and the peer silent,
//! the endpoint must fall quiet (no connection, no timer). A panic anywhere fails too.
//!
//! The proptest seed is fixed so that CI replays the same cases; `PROPTEST_RNG_SEED` and
//! `PROPTEST_CASES` explore further.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use tcp_core::testing::strategy;
use tcp_core::testing::{
    run_fuzz_input, Anchor, Harness, Num, Op, PeerOptions, PortSpec, SackSpec, SegmentSpec, Setup,
    TsSpec, Violation,
};
use tcp_core::wire::{self, ChecksumMode, Inbound, TcpFlags};
use tcp_core::{ConnInfo, Duration, State};

/// Fixed seed unless `PROPTEST_RNG_SEED` says otherwise; `cases` unless `PROPTEST_CASES`.
fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            cases
        },
        rng_seed: match base.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x0068_6f73_7469_6c65),
            fixed => fixed,
        },
        failure_persistence: None,
        ..base
    }
}

/// An ACK at or just above SND.UNA with the peer's usual window (a duplicate or partial
/// ACK), carrying up to four SACK blocks near the data in flight or anywhere; or time passing.
fn recovery_op() -> impl Strategy<Value = Op> {
    let edge = (
        proptest::sample::select(vec![Anchor::SndUna, Anchor::SndMax, Anchor::SndNxt]),
        prop_oneof![6 => 0..60_000i32, 2 => -3..=3i32, 1 => any::<i32>()],
    )
        .prop_map(|(anchor, delta)| Num { anchor, delta });
    let block = (edge, prop_oneof![4 => 1..5000i32, 1 => any::<i32>()])
        .prop_map(|(left, len)| SackSpec { left, len });
    let ack = (
        prop_oneof![6 => Just(0i32), 2 => 1..3000i32, 1 => -3..=3i32],
        proptest::collection::vec(block, 0..=4),
        prop_oneof![8 => Just(u16::MAX), 1 => Just(0u16)],
    )
        .prop_map(|(delta, sack, window)| {
            Op::Segment(SegmentSpec {
                ack: Num {
                    anchor: Anchor::SndUna,
                    delta,
                },
                sack,
                window,
                ..SegmentSpec::expected(TcpFlags::ACK)
            })
        });
    prop_oneof![
        8 => ack,
        1 => (1..3_000_000u64).prop_map(|us| Op::Advance(Duration::from_micros(us))),
        1 => (1..20_000u16).prop_map(Op::Send),
        1 => Just(Op::PeerAck),
    ]
}

fn ok(r: Result<(), Violation>) -> Result<(), TestCaseError> {
    r.map_err(|v| TestCaseError::fail(v.0))
}

/// A harness in `setup.state`, which the setup must reach.
fn harness(setup: Setup) -> Result<Harness, TestCaseError> {
    let h = Harness::new(setup.clone()).map_err(|v| TestCaseError::fail(v.0))?;
    prop_assert!(
        h.reached(),
        "setup did not reach {}: in {:?}",
        setup.state,
        h.state()
    );
    Ok(h)
}

// ---------------------------------------------------------------------------------------------
// The harness reaches every state
// ---------------------------------------------------------------------------------------------

#[test]
fn every_state_is_reachable_with_every_option_set() {
    let peers = [
        PeerOptions::default(),
        PeerOptions {
            mss: None,
            wscale: None,
            sack: false,
            timestamps: false,
            window: 8192,
        },
        PeerOptions {
            mss: Some(0),
            wscale: Some(200),
            sack: true,
            timestamps: false,
            window: 1024,
        },
    ];
    for state in State::ALL {
        for active in [false, true] {
            for peer in &peers {
                for (unacked, unread, ooo) in [(0, 0, 0), (3000, 700, 300)] {
                    let setup = Setup {
                        active,
                        peer: peer.clone(),
                        unacked,
                        unread,
                        out_of_order: ooo,
                        ..Setup::new(state)
                    };
                    let mut h = Harness::new(setup.clone()).unwrap_or_else(|v| panic!("{v}"));
                    assert_eq!(h.state(), Some(state), "{setup:?}");
                    h.finish().unwrap_or_else(|v| panic!("{setup:?}: {v}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    /// Random operation sequences (mostly hostile segments) in every state.
    #[test]
    fn hostile_sequences_keep_invariants_in_every_state(
        setup in strategy::setup(),
        ops in proptest::collection::vec(strategy::op(), 1..40),
    ) {
        let mut h = harness(setup)?;
        for op in &ops {
            ok(h.apply(op))?;
        }
        ok(h.finish())?;
    }

    /// One RST-bearing segment, whatever else it carries, in every state: nothing sent in
    /// answer carries RST.
    #[test]
    fn rst_is_never_answered_with_rst(
        setup in strategy::setup(),
        before in proptest::collection::vec(strategy::op(), 0..8),
        rst in strategy::rst_segment(),
    ) {
        let mut h = harness(setup)?;
        for op in &before {
            ok(h.apply(op))?;
        }
        ok(h.apply(&Op::Segment(rst)))?;
        for frame in &h.last_output {
            if let Ok(Inbound::Tcp { seg, .. }) = wire::parse_frame(frame, ChecksumMode::SOFTWARE)
            {
                prop_assert!(!seg.flags.rst(), "RST answered with {seg:?}");
            }
        }
        ok(h.finish())?;
    }

    /// Arbitrary bytes and damaged segments into `handle_frame` in every state, with and
    /// without checksum verification.
    #[test]
    fn random_bytes_never_panic_in_any_state(
        setup in strategy::setup(),
        frames in proptest::collection::vec(
            prop_oneof![strategy::raw_frame().prop_map(Op::Raw), strategy::mangled()],
            1..20,
        ),
    ) {
        let mut h = harness(setup)?;
        for op in &frames {
            ok(h.apply(op))?;
        }
        ok(h.finish())?;
    }

    /// Duplicate and partial ACKs with SACK blocks in and out of range, and timeouts, while
    /// data is in flight: loss recovery (RFC 5681/6582/6675) under a lying receiver.
    #[test]
    fn loss_recovery_under_hostile_acks_keeps_invariants(
        setup in (
            prop_oneof![Just(State::Established), Just(State::CloseWait), Just(State::FinWait1)],
            5_000..60_000usize,
            any::<bool>(),
        )
            .prop_flat_map(|(state, unacked, ts)| {
                strategy::setup_in(state).prop_map(move |mut s| {
                    s.unacked = unacked;
                    s.peer.timestamps = ts;
                    s.peer.sack = true;
                    s.small_buffers = false;
                    s
                })
            }),
        acks in proptest::collection::vec(recovery_op(), 1..60),
    ) {
        let mut h = harness(setup)?;
        for op in &acks {
            ok(h.apply(op))?;
        }
        ok(h.finish())?;
    }

    /// The fuzz target's interpretation of bytes, on random bytes.
    #[test]
    fn fuzz_harness_on_random_input(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        ok(run_fuzz_input(&data))?;
    }
}

/// Inputs the fuzz target (`fuzz/`, `cargo +nightly fuzz run endpoint`) found breaking a
/// rule, minimized, replayed on every test run.
#[test]
fn fuzz_regressions() {
    let cases: &[(&str, &[u8])] = &[(
        // A SYN-SENT connection with one byte queued gets a SYN-ACK with FIN and window 0;
        // the byte goes out as a zero-window probe, the application writes more and closes.
        // The FIN was dropped as out of order, and the persist timer stopped once the probe
        // octet was all that was unsent: an orphan in FIN-WAIT-1 with no timer, forever.
        "probe octet alone, FIN in the SYN-ACK",
        &[
            0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00, 0x38, 0x38, 0x38, 0x38, 0x38, 0x13, 0x13,
            0x11, 0x38, 0x3d, 0x00, 0x00, 0x38, 0xff, 0x38, 0x38, 0x9b, 0x38,
        ],
    )];
    for (what, data) in cases {
        if let Err(v) = run_fuzz_input(data) {
            panic!("{what}: {v}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted checks of single rules in every state
// ---------------------------------------------------------------------------------------------

/// RFC 9293 / RFC 5961: a RST exactly at RCV.NXT, one inside the window and one outside,
/// each with every other flag combination, in every state: never answered with RST.
#[test]
fn rst_at_every_position_in_every_state() {
    for state in State::ALL {
        for delta in [0, 1, -1, 1000, 70_000, i32::MIN] {
            for extra in 0..=255u8 {
                let mut h = Harness::new(Setup::new(state)).unwrap();
                let spec = SegmentSpec {
                    seq: Num {
                        anchor: Anchor::RcvNxt,
                        delta,
                    },
                    ..SegmentSpec::expected(TcpFlags::from_bits(extra) | TcpFlags::RST)
                };
                h.apply(&Op::Segment(spec))
                    .unwrap_or_else(|v| panic!("{state} delta {delta} flags {extra:#x}: {v}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Window stalls: a regression test for a bug `sim.rs` found (a usable window smaller than a
// segment, with nothing in flight, armed no timer; fixed by the sender SWS override timer),
// and its zero-window sibling
// ---------------------------------------------------------------------------------------------

/// RFC 9293 §3.8.6.1: "The sending TCP must regularly transmit at least one octet of new data
/// (if available) ... even if the send window is zero". An ACK that acknowledges everything
/// and closes the window leaves data waiting with nothing in flight: a persist timer must be
/// armed, or a lost window update deadlocks the connection.
#[test]
fn zero_window_ack_of_everything_arms_the_persist_timer() {
    let mut h = Harness::new(Setup {
        peer: PeerOptions {
            window: 4000,
            ..PeerOptions::default()
        },
        ..Setup::new(State::Established)
    })
    .unwrap();
    // 10 000 bytes: 4000 fit in the peer's window, 6000 wait.
    h.apply(&Op::Send(10_000)).unwrap();
    // The peer takes everything sent and closes its window.
    let ack = SegmentSpec {
        window: 0,
        ..SegmentSpec::expected(TcpFlags::ACK)
    };
    h.apply(&Op::Segment(ack)).unwrap();
    let info = h.target().unwrap();
    assert_eq!(info.snd_una, info.snd_max, "{info:?}");
    assert!(info.send_buffered > 0);
    assert!(
        h.ep.poll_timeout().is_some(),
        "data waits behind a zero window and no timer is armed: {info:?}"
    );
    // The window update never comes; the endpoint probes.
    h.apply(&Op::Advance(Duration::from_secs(5))).unwrap();
    assert!(h.frames_sent > 0 && h.target().unwrap().snd_max != info.snd_max);
}

/// RFC 1122 §4.2.3.4: when sender SWS avoidance holds back data because the usable window
/// is smaller than a segment (and smaller than half the largest window seen), "the override
/// timeout" sends it anyway; otherwise a lost window update deadlocks the connection (found
/// by `sim.rs`: a 1461-byte receive buffer left 13 bytes of window, the window update was
/// lost, and the connection stalled for good; an orphaned connection in LAST-ACK then never
/// ended).
#[test]
fn small_window_below_sws_threshold_arms_a_timer() {
    let mut h = Harness::new(Setup {
        peer: PeerOptions {
            window: 4000,
            wscale: None,
            ..PeerOptions::default()
        },
        ..Setup::new(State::Established)
    })
    .unwrap();
    h.apply(&Op::Send(10_000)).unwrap();
    let ack = SegmentSpec {
        window: 13,
        ..SegmentSpec::expected(TcpFlags::ACK)
    };
    h.apply(&Op::Segment(ack)).unwrap();
    let info = h.target().unwrap();
    assert_eq!(info.snd_una, info.snd_max, "{info:?}");
    assert_eq!(info.snd_wnd, 13);
    assert!(
        h.ep.poll_timeout().is_some(),
        "data waits behind a 13-byte window and no timer is armed: {info:?}"
    );
    h.apply(&Op::Advance(Duration::from_secs(5))).unwrap();
    assert!(h.target().unwrap().snd_max != info.snd_max);
}

// ---------------------------------------------------------------------------------------------
// Compact TIME-WAIT against the full TCB it replaces
// ---------------------------------------------------------------------------------------------
//
// Two endpoints, one with each `EndpointConfig::compact_time_wait` setting, are brought into
// TIME-WAIT the same way, the application closes the connection (so the compact one keeps it
// in compact form, the `timewait` module), and then both get the same operations — hostile
// and plausible segments, retransmitted FINs, SYNs that may or may not reuse the 4-tuple
// (RFC 6191), time passing. After every operation both must have sent the same frames byte
// for byte, counted the same and list the same connections; at the end both must fall quiet.

fn fail(v: tcp_core::testing::Violation) -> TestCaseError {
    TestCaseError::fail(v.0)
}

/// The connections of `h`, in a fixed order.
fn conns(h: &Harness) -> Vec<String> {
    let mut v: Vec<String> =
        h.ep.connections()
            .map(|i: ConnInfo| format!("{i:?}"))
            .collect();
    v.sort();
    v
}

/// Both harnesses look the same from outside.
fn same(compact: &Harness, full: &Harness, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        &compact.last_output,
        &full.last_output,
        "frames after {}",
        what
    );
    prop_assert_eq!(
        compact.ep.counters(),
        full.ep.counters(),
        "counters after {}",
        what
    );
    prop_assert_eq!(conns(compact), conns(full), "connections after {}", what);
    prop_assert_eq!(
        compact.ep.connection_count(),
        full.ep.connection_count(),
        "connection count after {}",
        what
    );
    Ok(())
}

/// A SYN for the connection's 4-tuple: with a sequence number and timestamp around what the
/// old incarnation saw, so it sometimes may take the 4-tuple over and sometimes not.
fn syn_op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![Just(-1000i32), Just(0), Just(1), 1..100_000i32],
        prop_oneof![Just(-5i32), Just(0), Just(1), 1..10_000i32],
        any::<bool>(),
    )
        .prop_map(|(seq, ts, with_ts)| {
            Op::Segment(SegmentSpec {
                seq: Num {
                    anchor: Anchor::RcvNxt,
                    delta: seq,
                },
                timestamp: with_ts.then_some(TsSpec {
                    val_delta: ts,
                    from_zero: false,
                    ecr: Some(0),
                }),
                mss: Some(1460),
                sack_permitted: true,
                wscale: Some(7),
                ..SegmentSpec::expected(TcpFlags::SYN)
            })
        })
}

/// What reaches a TIME-WAIT connection: segments on its own 4-tuple only. A segment from
/// another port would open another connection, and the harness aims segments at the first
/// connection the endpoint lists, whose order differs between the two settings.
fn tw_op() -> impl Strategy<Value = Op> {
    let own_port = |op: Op| match op {
        Op::Segment(spec) => Op::Segment(SegmentSpec {
            port: PortSpec::Conn,
            ..spec
        }),
        Op::Mangled {
            spec,
            edits,
            truncate,
        } => Op::Mangled {
            spec: SegmentSpec {
                port: PortSpec::Conn,
                ..spec
            },
            edits,
            truncate,
        },
        other => other,
    };
    prop_oneof![
        4 => strategy::plausible_segment().prop_map(Op::Segment),
        3 => strategy::op().prop_map(own_port),
        2 => Just(Op::PeerFin),
        1 => Just(Op::PeerAck),
        2 => syn_op(),
        2 => (1..80_000u64).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn compact_time_wait_answers_as_the_full_connection(
        setup in strategy::setup_in(State::TimeWait),
        ops in proptest::collection::vec(tw_op(), 1..30),
    ) {
        let compact_setup = Setup { compact_time_wait: true, ..setup.clone() };
        let full_setup = Setup { compact_time_wait: false, ..setup };
        let mut a = Harness::new(compact_setup).map_err(fail)?;
        let mut b = Harness::new(full_setup).map_err(fail)?;
        prop_assume!(a.reached() && b.reached());
        same(&a, &b, "setup")?;
        a.apply(&Op::Close).map_err(fail)?;
        b.apply(&Op::Close).map_err(fail)?;
        same(&a, &b, "close")?;
        for (i, op) in ops.iter().enumerate() {
            a.apply(op).map_err(fail)?;
            b.apply(op).map_err(fail)?;
            same(&a, &b, &format!("op {i}: {op:?}"))?;
        }
        a.finish().map_err(fail)?;
        b.finish().map_err(fail)?;
    }
}

/// A closed TIME-WAIT connection still counts, answers a retransmitted FIN, restarts
/// TIME-WAIT for it, and is gone when TIME-WAIT ends (with no timer left).
#[test]
fn a_closed_time_wait_connection_is_kept_compact_and_answers() {
    let mut h = Harness::new(Setup::new(State::TimeWait)).unwrap();
    // The listener is one of them.
    assert_eq!(h.ep.connection_count(), 2);
    h.apply(&Op::Close).unwrap();
    assert_eq!(h.ep.connection_count(), 2);
    let info = h.ep.connections().next().unwrap();
    assert_eq!(info.state, State::TimeWait);
    // Half of TIME-WAIT passes, then the peer's FIN comes again: ACKed, TIME-WAIT restarts.
    let tw = Duration::from_micros(h.ep.config().tcp.time_wait.micros());
    let half = Duration::from_micros(tw.micros() / 2);
    h.apply(&Op::Advance(half)).unwrap();
    h.apply(&Op::PeerFin).unwrap();
    assert_eq!(h.last_output.len(), 1, "the FIN is acknowledged");
    h.apply(&Op::Advance(half + Duration::from_millis(1)))
        .unwrap();
    assert_eq!(h.ep.connection_count(), 2, "TIME-WAIT was restarted");
    h.apply(&Op::Advance(half)).unwrap();
    assert_eq!(h.ep.connection_count(), 1);
    assert_eq!(h.ep.poll_timeout(), None);
}
