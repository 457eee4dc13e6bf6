//! Compact TIME-WAIT (`EndpointConfig::compact_time_wait`, the `timewait` module) against
//! the full TCB it replaces: two endpoints, one with each setting, are brought into
//! TIME-WAIT the same way, the application closes the connection (so the compact one keeps
//! it in compact form), and then both get the same operations — hostile and plausible
//! segments, retransmitted FINs, SYNs that may or may not reuse the 4-tuple (RFC 6191),
//! time passing. After every operation both must have sent the same frames byte for byte
//! and counted the same, and list the same connections; at the end both must fall quiet.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use tcp_core::testing::strategy;
use tcp_core::testing::{Anchor, Harness, Num, Op, SegmentSpec, Setup, TsSpec};
use tcp_core::wire::TcpFlags;
use tcp_core::{ConnInfo, Duration, State};

fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            cases
        },
        rng_seed: match base.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x0074_696d_6577_6169),
            fixed => fixed,
        },
        failure_persistence: None,
        ..base
    }
}

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

/// What reaches a TIME-WAIT connection.
fn tw_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => strategy::plausible_segment().prop_map(Op::Segment),
        3 => strategy::op(),
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
