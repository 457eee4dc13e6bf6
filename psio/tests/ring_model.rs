//! The shm backend's rings against a queue model (an oracle made of `VecDeque`s).
//!
//! A small in-process pair (8..=16 slots, 1 or 2 queues) is driven by random sequences of
//! operations on both ends — push frames, `txsync`, `rxsync`, read-and-release — and after
//! every operation each counter (`tx_space`, `tx_pending`, `rx_available`) and every visible
//! frame is compared with the model.
//!
//! ## The model: netmap's capacity rules for a ring of N slots
//! Per queue and direction, a frame is in exactly one of these places:
//!
//! ```text
//!   sender's TX ring        receiver's RX ring
//!   ┌─────────┐  txsync    ┌────────┬─────────┬──────────┐  rxsync
//!   │ pending │ ─────────► │ unseen │ visible │ released │ ────────► free
//!   └─────────┘            └────────┴─────────┴──────────┘
//!   pending + unseen + visible + released ≤ N-1
//! ```
//!
//! - `tx_push` needs `tx_space() > 0` and takes one free TX slot; `tx_pending()` counts frames
//!   pushed since the last `txsync`.
//! - `txsync` hands every pending frame to the receiver (they are `unseen` until it syncs)
//!   and returns the new `tx_space`: N-1 minus the frames the receiver has not handed back.
//! - `rxsync` makes every frame handed over visible (`rx_available`, oldest first) and hands
//!   released slots back; the sender sees them free at its next `txsync`.
//!
//! This is the shm backend's documented design (the sender's TX slot `i` and the receiver's
//! RX slot `i` share buffer `i`, so a TX slot is reusable once the receiver is done with its
//! frame, like a NIC completing a transmission): N-1 usable slots in TX, at most N-1 frames in
//! the peer's RX ring, and those are the same N-1 frames.
//!
//! Coverage: the test counts how often rings went full, drained and wrapped, and fails if the
//! generated sequences stop reaching those edges.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use psio::{Port, PortConfig};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Buffer size of the pair: the smallest allowed, so frames up to it are cheap.
const BUF: usize = 128;

/// A frame to push: its length and the seed of its bytes.
#[derive(Debug, Clone, Copy)]
struct FrameSpec {
    len: usize,
    seed: u64,
}

impl FrameSpec {
    fn bytes(&self) -> Vec<u8> {
        let mut x = self.seed | 1;
        (0..self.len)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `side` pushes up to `frames.len()` frames on `queue`, stopping when its TX ring is
    /// full. `ahead`: fill `tx_buf(0..k)` first, then push k times (a batch built in place);
    /// otherwise fill `tx_buf(0)` and push, one frame at a time.
    Push {
        side: usize,
        queue: usize,
        frames: Vec<FrameSpec>,
        ahead: bool,
    },
    TxSync {
        side: usize,
        queue: usize,
    },
    RxSync {
        side: usize,
        queue: usize,
    },
    /// `side` reads the first `min(n, rx_available)` frames on `queue` and releases them.
    Release {
        side: usize,
        queue: usize,
        n: usize,
    },
}

#[derive(Debug, Clone)]
struct Case {
    slots: u32,
    queues: usize,
    ops: Vec<Op>,
}

/// One direction of one queue, in the model.
#[derive(Debug, Default)]
struct Dir {
    /// Free TX slots as the sender last saw them (`tx_space`).
    tx_free: usize,
    /// Pushed by the sender since its last `txsync`.
    pending: VecDeque<Vec<u8>>,
    /// In the receiver's RX ring, not visible until its next `rxsync`.
    unseen: VecDeque<Vec<u8>>,
    /// The receiver's `rx_frame(0..rx_available())`.
    visible: VecDeque<Vec<u8>>,
    /// Released by the receiver, not yet handed back by an `rxsync`.
    released: usize,
}

/// How far one case pushed the rings to their edges.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    /// A push left a TX ring with no free slot.
    tx_full: u64,
    /// A txsync handed over frames and left N-1 of them in the receiver's RX ring.
    rx_full: u64,
    /// A release left a receiver with no visible frame after it had some.
    drained: u64,
    /// Frames moved from a TX ring into an RX ring, in units of the ring size.
    wraps: u64,
}

struct Model {
    usable: usize,
    /// `dirs[queue][from_side]`.
    dirs: Vec<[Dir; 2]>,
    cov: Coverage,
    moved: u64,
}

impl Model {
    fn new(slots: u32, queues: usize) -> Model {
        Model {
            usable: slots as usize - 1,
            dirs: (0..queues)
                .map(|_| {
                    [0, 1].map(|_| Dir {
                        tx_free: slots as usize - 1,
                        ..Dir::default()
                    })
                })
                .collect(),
            cov: Coverage::default(),
            moved: 0,
        }
    }
}

fn op_strategy(queues: usize) -> impl Strategy<Value = Op> {
    let side = 0..2usize;
    let queue = 0..queues;
    let len = prop_oneof![
        1 => Just(0usize),
        1 => Just(BUF),
        1 => Just(BUF - 1),
        6 => 0..=BUF,
    ];
    let frame = (len, any::<u64>()).prop_map(|(len, seed)| FrameSpec { len, seed });
    prop_oneof![
        4 => (side.clone(), queue.clone(), prop::collection::vec(frame, 0..=20), any::<bool>())
            .prop_map(|(side, queue, frames, ahead)| Op::Push { side, queue, frames, ahead }),
        3 => (side.clone(), queue.clone()).prop_map(|(side, queue)| Op::TxSync { side, queue }),
        3 => (side.clone(), queue.clone()).prop_map(|(side, queue)| Op::RxSync { side, queue }),
        4 => (side, queue, 0..=20usize).prop_map(|(side, queue, n)| Op::Release { side, queue, n }),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (8..=16u32, 1..=2usize).prop_flat_map(|(slots, queues)| {
        prop::collection::vec(op_strategy(queues), 1..=400).prop_map(move |ops| Case {
            slots,
            queues,
            ops,
        })
    })
}

/// Compares every counter and every visible frame of every queue with the model.
fn check_all(ports: &mut [Port; 2], m: &Model, step: usize) -> Result<(), TestCaseError> {
    for (qi, dirs) in m.dirs.iter().enumerate() {
        for side in 0..2 {
            let out = &dirs[side];
            let inc = &dirs[1 - side];
            let q = ports[side].queue(qi);
            prop_assert_eq!(
                q.tx_space(),
                out.tx_free,
                "step {}: tx_space of side {} queue {}",
                step,
                side,
                qi
            );
            prop_assert_eq!(
                q.tx_pending(),
                out.pending.len(),
                "step {}: tx_pending of side {} queue {}",
                step,
                side,
                qi
            );
            prop_assert_eq!(
                q.rx_available(),
                inc.visible.len(),
                "step {}: rx_available of side {} queue {}",
                step,
                side,
                qi
            );
            for (i, want) in inc.visible.iter().enumerate() {
                prop_assert_eq!(
                    q.rx_frame(i),
                    &want[..],
                    "step {}: rx_frame({}) of side {} queue {}",
                    step,
                    i,
                    side,
                    qi
                );
            }
        }
    }
    Ok(())
}

fn apply(ports: &mut [Port; 2], m: &mut Model, op: &Op, step: usize) -> Result<(), TestCaseError> {
    let usable = m.usable;
    match *op {
        Op::Push {
            side,
            queue,
            ref frames,
            ahead,
        } => {
            let q = ports[side].queue(queue);
            let dir = &mut m.dirs[queue][side];
            let k = frames.len().min(q.tx_space());
            let bytes: Vec<Vec<u8>> = frames[..k].iter().map(FrameSpec::bytes).collect();
            if ahead {
                for (i, b) in bytes.iter().enumerate() {
                    let buf = q.tx_buf(i);
                    prop_assert_eq!(buf.len(), BUF, "step {}: tx_buf({}) length", step, i);
                    buf[..b.len()].copy_from_slice(b);
                }
                for b in &bytes {
                    q.tx_push(b.len());
                }
            } else {
                for b in &bytes {
                    q.tx_buf(0)[..b.len()].copy_from_slice(b);
                    q.tx_push(b.len());
                }
            }
            dir.tx_free -= k;
            dir.pending.extend(bytes);
            if k > 0 && dir.tx_free == 0 {
                m.cov.tx_full += 1;
            }
        }
        Op::TxSync { side, queue } => {
            let got = ports[side].queue(queue).txsync().map_err(fail)?;
            let dir = &mut m.dirs[queue][side];
            let n = dir.pending.len();
            dir.unseen.extend(dir.pending.drain(..));
            let occupancy = dir.unseen.len() + dir.visible.len() + dir.released;
            prop_assert!(occupancy <= usable, "model: {} frames in flight", occupancy);
            dir.tx_free = usable - occupancy;
            m.moved += n as u64;
            if n > 0 && occupancy == usable {
                m.cov.rx_full += 1;
            }
            prop_assert_eq!(
                got,
                dir.tx_free,
                "step {}: txsync of side {} queue {}",
                step,
                side,
                queue
            );
        }
        Op::RxSync { side, queue } => {
            let got = ports[side].queue(queue).rxsync().map_err(fail)?;
            let dir = &mut m.dirs[queue][1 - side];
            dir.released = 0;
            let unseen: Vec<_> = dir.unseen.drain(..).collect();
            dir.visible.extend(unseen);
            prop_assert_eq!(
                got,
                dir.visible.len(),
                "step {}: rxsync of side {} queue {}",
                step,
                side,
                queue
            );
        }
        Op::Release { side, queue, n } => {
            let q = ports[side].queue(queue);
            let dir = &mut m.dirs[queue][1 - side];
            let k = n.min(dir.visible.len());
            for i in 0..k {
                prop_assert_eq!(
                    q.rx_frame(i),
                    &dir.visible[i][..],
                    "step {}: frame {} read by side {} queue {}",
                    step,
                    i,
                    side,
                    queue
                );
            }
            q.rx_release(k);
            dir.visible.drain(..k);
            dir.released += k;
            if k > 0 && dir.visible.is_empty() {
                m.cov.drained += 1;
            }
        }
    }
    Ok(())
}

fn fail(e: psio::Error) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn run_case(case: &Case) -> Result<Coverage, TestCaseError> {
    let (a, b) = psio::sys::shm::pair(&PortConfig {
        queues: case.queues,
        slots: case.slots,
        buf_size: BUF as u32,
        ..PortConfig::default()
    })
    .map_err(fail)?;
    let mut ports = [a, b];
    let mut m = Model::new(case.slots, case.queues);
    check_all(&mut ports, &m, 0)?;
    for (step, op) in case.ops.iter().enumerate() {
        apply(&mut ports, &mut m, op, step + 1)?;
        check_all(&mut ports, &m, step + 1)?;
    }
    m.cov.wraps = m.moved / u64::from(case.slots);
    Ok(m.cov)
}

#[test]
fn shm_rings_behave_like_the_queue_model() {
    let config = Config {
        cases: 256,
        // A failing case is saved next to this file and replayed first on the next run.
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let seen = RefCell::new(Vec::<Coverage>::new());
    let result = runner.run(&case_strategy(), |case| {
        let cov = run_case(&case)?;
        seen.borrow_mut().push(cov);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The oracle only catches what the sequences reach: most cases must fill, drain and wrap
    // the rings several times (about 4 in 5 do; short sequences, kept so that shrinking can
    // find a short failing one, make up the rest).
    let seen = seen.into_inner();
    let n = seen.len() as u64;
    assert!(n >= u64::from(cases), "only {n} cases ran");
    let thorough = seen
        .iter()
        .filter(|c| c.tx_full >= 3 && c.rx_full >= 3 && c.drained >= 3 && c.wraps >= 3)
        .count() as u64;
    let total = seen.iter().fold(Coverage::default(), |t, c| Coverage {
        tx_full: t.tx_full + c.tx_full,
        rx_full: t.rx_full + c.rx_full,
        drained: t.drained + c.drained,
        wraps: t.wraps + c.wraps,
    });
    eprintln!("{n} cases, {thorough} thorough; totals {total:?}");
    assert!(
        thorough * 3 >= n * 2,
        "only {thorough} of {n} cases filled, drained and wrapped the rings 3 times: {total:?}"
    );
    let least = total
        .tx_full
        .min(total.rx_full)
        .min(total.drained)
        .min(total.wraps);
    assert!(
        least >= 4 * n,
        "fewer than 4 edges of some kind per case: {total:?}"
    );
}

/// A hand-written sequence that walks every edge, so a regression shows up with a readable
/// trace even without proptest's shrinking: fill TX, hand over, find TX still full while the
/// receiver holds the frames, release part (invisible to the sender until both sides sync),
/// refill, drain, and wrap the 8-slot ring several times, with traffic the other way too.
#[test]
fn fill_drain_and_wrap_by_hand() {
    let frames = |n: usize, salt: u64| -> Vec<FrameSpec> {
        (0..n)
            .map(|i| FrameSpec {
                len: (i * 37 + salt as usize) % (BUF + 1),
                seed: salt * 1000 + i as u64,
            })
            .collect()
    };
    let push = |side, frames, ahead| Op::Push {
        side,
        queue: 0,
        frames,
        ahead,
    };
    let txsync = |side| Op::TxSync { side, queue: 0 };
    let rxsync = |side| Op::RxSync { side, queue: 0 };
    let release = |side, n| Op::Release { side, queue: 0, n };
    let mut ops = Vec::new();
    for round in 0..5u64 {
        ops.extend([
            push(0, frames(20, round), round % 2 == 0),
            txsync(0),
            push(0, frames(20, round + 10), false),
            rxsync(1),
            release(1, 3),
            txsync(0),
            push(1, frames(2, round + 20), true),
            rxsync(1),
            txsync(1),
            txsync(0),
            push(0, frames(20, round + 30), round % 2 == 1),
            txsync(0),
            rxsync(1),
            rxsync(0),
            release(0, 1),
            release(1, 20),
            release(0, 1),
            rxsync(1),
            rxsync(0),
            txsync(0),
            txsync(1),
        ]);
    }
    let cov = run_case(&Case {
        slots: 8,
        queues: 1,
        ops,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(cov.tx_full >= 10 && cov.rx_full >= 10, "{cov:?}");
    assert!(cov.drained >= 10 && cov.wraps >= 7, "{cov:?}");
}

/// A slot's `len` is a `u16`: the largest buffer `PortConfig` accepts (65472) must carry a
/// frame that fills it, and 65536 must be refused rather than truncate lengths.
#[test]
fn a_frame_filling_the_largest_buffer_arrives_whole() {
    let too_big = PortConfig {
        slots: 8,
        buf_size: 65536,
        ..PortConfig::default()
    };
    assert!(psio::sys::shm::pair(&too_big).is_err());
    let (mut a, mut b) = psio::sys::shm::pair(&PortConfig {
        buf_size: 65472,
        ..too_big
    })
    .expect("pair");
    let (qa, qb) = (a.queue(0), b.queue(0));
    for len in [65471usize, 65472] {
        let frame = FrameSpec { len, seed: 7 }.bytes();
        qa.tx_buf(0)[..len].copy_from_slice(&frame);
        qa.tx_push(len);
        qa.txsync().expect("txsync");
        assert_eq!(qb.rxsync().expect("rxsync"), 1);
        assert_eq!(qb.rx_frame(0).len(), len, "length of a {len}-byte frame");
        assert!(qb.rx_frame(0) == &frame[..], "bytes of a {len}-byte frame");
        qb.rx_release(1);
        qb.rxsync().expect("rxsync");
    }
}
