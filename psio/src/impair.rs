//! `Impaired`: seeded loss, burst loss, duplication, reordering, delay and corruption of the
//! frames a queue sends (egress) and, optionally, receives (ingress).
//!
//! Like smoltcp's `FaultInjector`, it wraps any [`QueueIo`] and is itself one, so it stacks
//! on any backend: `port.wrap(|q, i| Box::new(Impaired::new(q, cfg.clone(), seed + i as u64)))`.
//!
//! ## What happens to a frame
//! Each frame gets a *fate*, decided in this order from a seeded PRNG (xoshiro256**, seeded
//! through splitmix64), so the same seed and configuration give the same fates, bit for bit:
//!
//! 1. **loss**: independently with probability [`loss`](ImpairmentConfig::loss), or by the
//!    Gilbert–Elliott chain of [`burst_loss`](ImpairmentConfig::burst_loss) (the frame is lost
//!    with the current state's loss probability, then the state may change);
//! 2. **corruption** (probability): one random bit of one random byte is flipped;
//! 3. **duplication** (probability): the frame leaves twice, the copy right after it;
//! 4. **reordering** (probability): the frame is held back until `k` more frames have passed
//!    (lost frames do not count), `k` uniform in [`Reorder::gap`], or until
//!    [`Reorder::timeout_us`] has passed;
//! 5. otherwise **delay** (probability): the frame is held for `fixed + U[0, jitter]` µs. Frames
//!    whose delays overlap leave in due-time order, so jitter can reorder them, as on a real
//!    path.
//!
//! ## Zero copy, bounded memory
//! On egress a frame is built by the user directly in the inner queue's TX buffer. A lost frame
//! is simply not pushed (its slot is reused), corruption flips the bit in place, and a frame
//! that passes is pushed as is. Only frames that must outlive their slot — held (reordered,
//! delayed) frames and duplicate copies — are copied, into a pool preallocated at construction
//! ([`pool_frames`](ImpairmentConfig::pool_frames) buffers). When the pool is full such a frame
//! is sent at once instead (not held, not duplicated) and counted in
//! [`ImpairStats::pool_full`]. Nothing is allocated per frame.
//!
//! On ingress the wrapper shows the user a view of the inner RX ring: frames that pass are
//! still read in place (a duplicate is the same slot shown twice), lost frames are skipped, and
//! corrupted or held frames are shown from a pool copy (the inner RX buffers are read-only).
//! Inner slots go back to the link as soon as nothing the user can still see refers to them.
//!
//! ## Keeping `tx_space`/`tx_buf` consistent with the inner queue
//! Frames the wrapper sends on its own (released held frames, duplicate copies) wait in a FIFO
//! (`ready`) until an inner TX slot is free for them. The inner queue's free TX slots then look
//! like this:
//!
//! ```text
//!   inner free slots:  [ dead × skip ][ lent × L ][ rest ............................ ]
//!   wrapper tx_buf(i) = inner tx_buf(skip + i)
//!   wrapper tx_space  = max(L, inner tx_space − skip − waiting)
//! ```
//!
//! - *dead* slots held frames that were lost or copied away while the user had already been
//!   lent buffers after them (netmap lets a user fill `tx_buf(0..n)` before pushing). They are
//!   skipped, so the user's buffers keep their indices, and reused for the next frames the
//!   wrapper sends itself; once nothing is lent they are plain free slots again.
//! - *lent* slots are those the user asked for with `tx_buf` and has not pushed yet. They always
//!   stay usable: `tx_space` never drops below `L`.
//! - *waiting* frames reserve one inner slot each: `tx_space` leaves room for them, which gives
//!   the released frames priority over new ones and bounds the FIFO.
//!
//! Waiting frames go out, in order, at the next `tx_push`, `txsync` or `arm`: into a dead slot,
//! or the next free slot when nothing is lent. If the user holds lent buffers at a `txsync` or
//! `arm` (say it called `tx_buf(0)` and built nothing), the lent buffers are moved up by one
//! slot to make room — a rare copy that keeps the user's data and indices intact.
//!
//! ## Delay and `select`
//! Held frames leave when the wrapper is called (`tx_push`, `txsync`, `arm` on egress; `rxsync`
//! on ingress) once due: no thread, no timer. So that a thread sleeping in
//! [`PortSet::select`](crate::PortSet::select) still releases them in time, `arm` returns
//! `Ok(None)` while any frame is held with a deadline: `select` then bounds its sleep (to 1 ms)
//! and calls `arm` again at each wake-up, which sends whatever has become due — even when the
//! caller only asked for RX readiness on this queue. A timerfd would wake more precisely but
//! `arm` can return only one descriptor, and the inner queue needs it. While nothing is held
//! with a deadline, `arm` forwards to the inner queue and sleeping costs nothing extra.
//!
//! ## What it does not do
//! It does not rate-limit, does not model a queue with a bandwidth, and does not look inside
//! frames. The *decisions* are reproducible; what happens when the pool is full and the order
//! of delayed frames relative to later ones depend on the clock and on how fast the user calls.

use crate::error::{Error, Result};
use crate::{QueueIo, WaitSpec};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Settings of one direction's impairments. Probabilities are in `0.0..=1.0`; the default
/// impairs nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairmentConfig {
    /// Probability that a frame is lost, independently of every other frame.
    pub loss: f64,
    /// Correlated loss: a Gilbert–Elliott two-state chain, on top of [`loss`](Self::loss).
    pub burst_loss: Option<GilbertElliott>,
    /// Probability that a frame leaves twice.
    pub duplicate: f64,
    /// Holding frames back so that later ones overtake them.
    pub reorder: Option<Reorder>,
    /// Holding frames for a while (frames chosen for reordering are not also delayed).
    pub delay: Option<Delay>,
    /// Probability that one random bit of one random byte of a frame is flipped.
    pub corrupt: f64,
    /// Frames the wrapper can keep copies of (held frames and duplicates), per direction. The
    /// pool (`pool_frames × buf_size` bytes) is allocated once. Default 256.
    pub pool_frames: usize,
}

impl Default for ImpairmentConfig {
    fn default() -> Self {
        ImpairmentConfig {
            loss: 0.0,
            burst_loss: None,
            duplicate: 0.0,
            reorder: None,
            delay: None,
            corrupt: 0.0,
            pool_frames: 256,
        }
    }
}

/// The Gilbert–Elliott burst-loss model: a chain that moves between a *good* and a *bad* state
/// once per frame. With `loss_good = 0` and `loss_bad = 1` (the Gilbert model), losses come in
/// bursts of mean length `1 / p_bad_to_good`, and the long-run loss rate is
/// `p_good_to_bad / (p_good_to_bad + p_bad_to_good)`.
///
/// A chain moved only by frames keeps its bad state through a quiet link: a sender backing
/// off its retransmission timer passes one frame per round, each lost with `loss_bad`, so a
/// bad spell can outlast every round. `max_bad_us` ends a spell after that much time, as a
/// real burst (a fade, a full queue) ends with time, not with frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad after a frame.
    pub p_good_to_bad: f64,
    /// Probability of moving from bad to good after a frame.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state (often 0).
    pub loss_good: f64,
    /// Loss probability in the bad state (often 1).
    pub loss_bad: f64,
    /// A bad spell ends (the chain moves to good) once it has lasted this many µs, frames
    /// or not; 0 means only frames move the chain.
    pub max_bad_us: u64,
}

impl GilbertElliott {
    /// The classic Gilbert model: no loss in the good state, certain loss in the bad one.
    pub fn gilbert(p_good_to_bad: f64, p_bad_to_good: f64) -> GilbertElliott {
        GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
            max_bad_us: 0,
        }
    }

    /// The same chain, whose bad spells end after `us` µs at most.
    pub fn with_max_bad_us(self, us: u64) -> GilbertElliott {
        GilbertElliott {
            max_bad_us: us,
            ..self
        }
    }
}

/// Reordering: a chosen frame is held until `k` more frames (not lost) have passed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reorder {
    /// Probability that a frame is held back.
    pub probability: f64,
    /// `k`, the number of frames that overtake a held frame: uniform in `min..=max`, `min ≥ 1`.
    pub gap: (u32, u32),
    /// A held frame also leaves when this many µs have passed, so it is not stuck when traffic
    /// stops; 0 means never (only `k` frames release it). [`Reorder::new`] sets 10 ms.
    pub timeout_us: u64,
}

impl Reorder {
    /// Holds frames with probability `probability`, for `gap.0..=gap.1` frames, at most 10 ms.
    pub fn new(probability: f64, gap: (u32, u32)) -> Reorder {
        Reorder {
            probability,
            gap,
            timeout_us: 10_000,
        }
    }
}

/// Delay: a chosen frame is held for `fixed_us + U[0, jitter_us]` microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    /// Probability that a frame is delayed (1.0: every frame).
    pub probability: f64,
    /// The fixed part of the delay, µs.
    pub fixed_us: u64,
    /// The largest extra delay, µs, drawn uniformly.
    pub jitter_us: u64,
}

impl Delay {
    /// Delays every frame by `fixed_us + U[0, jitter_us]` µs.
    pub fn all(fixed_us: u64, jitter_us: u64) -> Delay {
        Delay {
            probability: 1.0,
            fixed_us,
            jitter_us,
        }
    }
}

impl ImpairmentConfig {
    /// Checks that probabilities are in `0..=1`, the reorder gap is `1 ≤ min ≤ max` and the
    /// pool is non-empty when something needs it.
    pub fn validate(&self) -> Result<()> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(Error::InvalidConfig(format!(
                    "impairment {name} = {p} (must be a probability in 0..=1)"
                )))
            }
        };
        prob("loss", self.loss)?;
        prob("duplicate", self.duplicate)?;
        prob("corrupt", self.corrupt)?;
        if let Some(g) = &self.burst_loss {
            prob("burst_loss.p_good_to_bad", g.p_good_to_bad)?;
            prob("burst_loss.p_bad_to_good", g.p_bad_to_good)?;
            prob("burst_loss.loss_good", g.loss_good)?;
            prob("burst_loss.loss_bad", g.loss_bad)?;
        }
        if let Some(r) = &self.reorder {
            prob("reorder.probability", r.probability)?;
            if r.gap.0 == 0 || r.gap.0 > r.gap.1 {
                return Err(Error::InvalidConfig(format!(
                    "reorder gap = {}..={} (must be 1 <= min <= max)",
                    r.gap.0, r.gap.1
                )));
            }
        }
        if let Some(d) = &self.delay {
            prob("delay.probability", d.probability)?;
        }
        let needs_pool = self.duplicate > 0.0
            || self.reorder.is_some_and(|r| r.probability > 0.0)
            || self.delay.is_some_and(|d| d.probability > 0.0);
        if needs_pool && self.pool_frames == 0 {
            return Err(Error::InvalidConfig(
                "impairment pool_frames = 0, but duplication, reordering or delay needs copies"
                    .into(),
            ));
        }
        if self.pool_frames > 1 << 20 {
            return Err(Error::InvalidConfig(format!(
                "impairment pool_frames = {} (at most 1048576)",
                self.pool_frames
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// splitmix64: expands a seed into well-mixed state words.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
#[derive(Debug, Clone)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut sm = seed;
        Rng([
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`; draws nothing when `p` is 0.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (bias below 2⁻⁴⁴ for our `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo + 1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fates
// ---------------------------------------------------------------------------------------------

/// How long a frame is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Not held.
    No,
    /// Until this many more frames have passed.
    Reorder(u32),
    /// For this many µs.
    Delay(u64),
}

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fate {
    lost: bool,
    /// Byte index and bit to flip.
    corrupt: Option<(usize, u8)>,
    duplicate: bool,
    hold: Hold,
}

/// The decision maker: PRNG, Gilbert–Elliott state, configuration. No I/O; the clock is read
/// only to end a bad spell that lasted `max_bad_us`.
#[derive(Debug, Clone)]
struct Engine {
    cfg: ImpairmentConfig,
    rng: Rng,
    /// Gilbert–Elliott chain in its bad state.
    bad: bool,
    /// When the current bad spell began (with `max_bad_us` only).
    bad_since: Option<Instant>,
}

impl Engine {
    fn new(cfg: ImpairmentConfig, seed: u64) -> Engine {
        Engine {
            cfg,
            rng: Rng::new(seed),
            bad: false,
            bad_since: None,
        }
    }

    fn decide(&mut self, len: usize) -> Fate {
        let rng = &mut self.rng;
        let mut lost = false;
        if let Some(ge) = &self.cfg.burst_loss {
            if self.bad && ge.max_bad_us > 0 {
                let since = *self.bad_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_micros(ge.max_bad_us) {
                    self.bad = false;
                    self.bad_since = None;
                }
            }
            lost = rng.chance(if self.bad { ge.loss_bad } else { ge.loss_good });
            let was_bad = self.bad;
            self.bad = if self.bad {
                !rng.chance(ge.p_bad_to_good)
            } else {
                rng.chance(ge.p_good_to_bad)
            };
            if self.bad && !was_bad && ge.max_bad_us > 0 {
                self.bad_since = Some(Instant::now());
            } else if !self.bad {
                self.bad_since = None;
            }
        }
        lost |= rng.chance(self.cfg.loss);
        if lost {
            return Fate {
                lost,
                corrupt: None,
                duplicate: false,
                hold: Hold::No,
            };
        }
        let corrupt = (len > 0 && rng.chance(self.cfg.corrupt))
            .then(|| (rng.below(len as u64) as usize, rng.below(8) as u8));
        let duplicate = rng.chance(self.cfg.duplicate);
        let mut hold = Hold::No;
        if let Some(r) = &self.cfg.reorder {
            if rng.chance(r.probability) {
                hold = Hold::Reorder(rng.between(r.gap.0.into(), r.gap.1.into()) as u32);
            }
        }
        if let (Hold::No, Some(d)) = (hold, &self.cfg.delay) {
            if rng.chance(d.probability) {
                hold = Hold::Delay(d.fixed_us + rng.between(0, d.jitter_us));
            }
        }
        Fate {
            lost,
            corrupt,
            duplicate,
            hold,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------------

/// What one direction's impairments did, counted since the wrapper was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// Frames offered (pushed by the user on egress, arrived from the link on ingress).
    pub seen: u64,
    /// Frames lost (independent or burst loss).
    pub dropped: u64,
    /// Frames that left twice.
    pub duplicated: u64,
    /// Frames held back for reordering.
    pub reordered: u64,
    /// Frames delayed.
    pub delayed: u64,
    /// Frames with a bit flipped.
    pub corrupted: u64,
    /// Frames that should have been copied (held, duplicated, or corrupted on ingress) but
    /// found the pool full, and went through unimpaired instead.
    pub pool_full: u64,
}

/// Live counters of one direction: written by the wrapper's thread only, read by anyone.
#[derive(Debug, Default)]
struct Counters {
    seen: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    delayed: AtomicU64,
    corrupted: AtomicU64,
    pool_full: AtomicU64,
}

/// Adds one to a counter that has a single writer: a plain load and store, no locked
/// read-modify-write on the per-frame path.
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> ImpairStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ImpairStats {
            seen: r(&self.seen),
            dropped: r(&self.dropped),
            duplicated: r(&self.duplicated),
            reordered: r(&self.reordered),
            delayed: r(&self.delayed),
            corrupted: r(&self.corrupted),
            pool_full: r(&self.pool_full),
        }
    }
}

/// A handle on an [`Impaired`] queue's counters that stays readable after the queue has been
/// boxed into a [`Port`](crate::Port) or moved to another thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ImpairStatsHandle {
    egress: Arc<Counters>,
    ingress: Arc<Counters>,
}

impl ImpairStatsHandle {
    /// Counters of transmitted frames.
    pub fn egress(&self) -> ImpairStats {
        self.egress.snapshot()
    }

    /// Counters of received frames (all zero unless ingress impairment is on).
    pub fn ingress(&self) -> ImpairStats {
        self.ingress.snapshot()
    }
}

// ---------------------------------------------------------------------------------------------
// Pool and held frames: the machinery both directions share
// ---------------------------------------------------------------------------------------------

/// Preallocated frame copies with a reference count (a duplicate is one copy used twice).
struct Pool {
    bytes: Vec<u8>,
    buf: usize,
    lens: Vec<u32>,
    refs: Vec<u8>,
    free: Vec<u32>,
}

impl Pool {
    fn new(frames: usize, buf: usize) -> Pool {
        Pool {
            bytes: vec![0; frames * buf],
            buf,
            lens: vec![0; frames],
            refs: vec![0; frames],
            free: (0..frames as u32).rev().collect(),
        }
    }

    /// Copies `frame` into a free buffer used `refs` times; `None` when the pool is full.
    fn stash(&mut self, frame: &[u8], refs: u8) -> Option<u32> {
        let idx = self.free.pop()?;
        let i = idx as usize;
        self.bytes[i * self.buf..][..frame.len()].copy_from_slice(frame);
        self.lens[i] = frame.len() as u32;
        self.refs[i] = refs;
        Some(idx)
    }

    fn frame(&self, idx: u32) -> &[u8] {
        let i = idx as usize;
        &self.bytes[i * self.buf..][..self.lens[i] as usize]
    }

    fn frame_mut(&mut self, idx: u32) -> &mut [u8] {
        let i = idx as usize;
        &mut self.bytes[i * self.buf..][..self.lens[i] as usize]
    }

    fn refs(&self, idx: u32) -> u8 {
        self.refs[idx as usize]
    }

    /// Drops one use; the buffer is free again after its last.
    fn unref(&mut self, idx: u32) {
        let r = &mut self.refs[idx as usize];
        *r -= 1;
        if *r == 0 {
            self.free.push(idx);
        }
    }
}

/// A frame copy waiting for its release.
#[derive(Debug, Clone, Copy)]
struct Held {
    idx: u32,
    /// Released once `Line::passed` reaches this (`u64::MAX`: never by count).
    after: u64,
    /// Released once the clock reaches this.
    due: Option<Instant>,
}

/// One direction's impairment state: decisions, counters, copies, held frames, and the FIFO of
/// released copies waiting to be delivered (`ready`).
struct Line {
    engine: Engine,
    pool: Pool,
    /// Held frames, in the order they were held; at most `pool_frames`.
    held: Vec<Held>,
    /// Held frames with a deadline (they make `arm` bound the sleep).
    timed: usize,
    /// Released copies, in release order; each is delivered `pool.refs(idx)` times.
    ready: VecDeque<u32>,
    /// Deliveries still to make from `ready` (sum of their refs).
    waiting: usize,
    /// Frames that were not lost, so far.
    passed: u64,
    stats: Arc<Counters>,
}

impl Line {
    fn new(cfg: ImpairmentConfig, seed: u64, buf: usize, stats: Arc<Counters>) -> Line {
        let frames = cfg.pool_frames;
        Line {
            engine: Engine::new(cfg, seed),
            pool: Pool::new(frames, buf),
            held: Vec::with_capacity(frames),
            timed: 0,
            ready: VecDeque::with_capacity(frames),
            waiting: 0,
            passed: 0,
            stats,
        }
    }

    /// Decides a frame's fate and counts it.
    fn decide(&mut self, len: usize) -> Fate {
        let fate = self.engine.decide(len);
        bump(&self.stats.seen);
        if fate.lost {
            bump(&self.stats.dropped);
        } else {
            self.passed += 1;
        }
        fate
    }

    /// Holds the pool copy `idx` as `hold` says, and counts it.
    fn hold(&mut self, idx: u32, hold: Hold, now: Option<Instant>) {
        let held = match hold {
            Hold::No => unreachable!("only held frames are held"),
            Hold::Reorder(k) => {
                bump(&self.stats.reordered);
                let timeout = self.engine.cfg.reorder.map_or(0, |r| r.timeout_us);
                Held {
                    idx,
                    after: self.passed + u64::from(k),
                    due: (timeout > 0).then(|| later(now, timeout)),
                }
            }
            Hold::Delay(us) => {
                bump(&self.stats.delayed);
                Held {
                    idx,
                    after: u64::MAX,
                    due: Some(later(now, us)),
                }
            }
        };
        self.timed += usize::from(held.due.is_some());
        self.held.push(held);
    }

    /// Queues a copy for delivery now.
    fn make_ready(&mut self, idx: u32) {
        self.waiting += usize::from(self.pool.refs(idx));
        self.ready.push_back(idx);
    }

    /// Releases the held frames that enough frames have passed, in the order they were held.
    fn release_passed(&mut self) {
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].after <= self.passed {
                let h = self.held.remove(i);
                self.timed -= usize::from(h.due.is_some());
                self.make_ready(h.idx);
            } else {
                i += 1;
            }
        }
    }

    /// Releases held frames whose deadline has come, earliest deadline first.
    fn release_due(&mut self, now: Instant) {
        while self.timed > 0 {
            let next = self
                .held
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.due.filter(|d| *d <= now).map(|d| (d, i)))
                .min();
            let Some((_, i)) = next else { break };
            let h = self.held.remove(i);
            self.timed -= 1;
            self.make_ready(h.idx);
        }
    }

    /// Releases every held frame, in the order they were held.
    fn release_all(&mut self) {
        for h in std::mem::take(&mut self.held) {
            self.make_ready(h.idx);
        }
        self.timed = 0;
    }

    /// The clock, read only if a held frame may have become due.
    fn now_if_timed(&self) -> Option<Instant> {
        (self.timed > 0).then(Instant::now)
    }

    /// Does the engine possibly need the clock for the next frame?
    fn may_delay(&self) -> bool {
        let cfg = &self.engine.cfg;
        cfg.delay.is_some_and(|d| d.probability > 0.0)
            || cfg
                .reorder
                .is_some_and(|r| r.probability > 0.0 && r.timeout_us > 0)
    }
}

fn later(now: Option<Instant>, us: u64) -> Instant {
    now.unwrap_or_else(Instant::now) + Duration::from_micros(us)
}

// ---------------------------------------------------------------------------------------------
// Ingress view
// ---------------------------------------------------------------------------------------------

/// A frame the user sees on ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// The inner RX frame with this sequence number (in place).
    Inner(u64),
    /// A pool copy.
    Pool(u32),
}

/// Ingress state: the line, and the view of the inner RX ring it produces.
struct Ingress {
    line: Line,
    /// What `rx_frame(i)` shows. Inner entries appear in increasing sequence order.
    view: VecDeque<Entry>,
    /// Sequence number of the inner queue's first available frame.
    base: u64,
    /// Sequence number of the next inner frame to decide.
    decided: u64,
    /// Inner slots released since the last inner `rxsync` (which hands them back).
    unpublished: bool,
}

/// At most this many inner `rxsync` rounds per wrapper `rxsync` (bounded work per call).
const RX_ROUNDS: usize = 4;

impl Ingress {
    /// Decides the fates of the inner frames not yet seen, `inner[0..avail]` being available.
    fn admit(&mut self, inner: &dyn QueueIo, avail: usize) {
        let end = self.base + avail as u64;
        let mut now = None;
        while self.decided < end {
            let seq = self.decided;
            self.decided += 1;
            let frame = inner.rx_frame((seq - self.base) as usize);
            let line = &mut self.line;
            let fate = line.decide(frame.len());
            if fate.lost {
                line.release_passed();
                continue;
            }
            let copies = 1 + u8::from(fate.duplicate);
            let needs_copy = fate.corrupt.is_some() || fate.hold != Hold::No;
            let stashed = if needs_copy {
                let s = line.pool.stash(frame, copies);
                if s.is_none() {
                    bump(&line.stats.pool_full);
                }
                s
            } else {
                None
            };
            if fate.duplicate {
                bump(&line.stats.duplicated);
            }
            match stashed {
                Some(idx) => {
                    if let Some((byte, bit)) = fate.corrupt {
                        line.pool.frame_mut(idx)[byte] ^= 1 << bit;
                        bump(&line.stats.corrupted);
                    }
                    if fate.hold == Hold::No {
                        line.make_ready(idx);
                    } else {
                        if now.is_none() && line.may_delay() {
                            now = Some(Instant::now());
                        }
                        line.hold(idx, fate.hold, now);
                    }
                }
                None => {
                    // In place, possibly twice; a frame that needed a copy but found the pool
                    // full goes through unimpaired.
                    for _ in 0..copies {
                        self.view.push_back(Entry::Inner(seq));
                    }
                }
            }
            line.release_passed();
            self.show_ready();
        }
    }

    /// Moves released copies into the view (each as often as it is to be seen).
    fn show_ready(&mut self) {
        while let Some(idx) = self.line.ready.pop_front() {
            let refs = self.line.pool.refs(idx);
            self.line.waiting -= usize::from(refs);
            for _ in 0..refs {
                self.view.push_back(Entry::Pool(idx));
            }
        }
    }

    /// Releases the inner frames nothing in the view refers to any more; returns how many.
    fn release_inner(&mut self, inner: &mut dyn QueueIo) -> usize {
        let limit = self
            .view
            .iter()
            .find_map(|e| match e {
                Entry::Inner(seq) => Some(*seq),
                Entry::Pool(_) => None,
            })
            .unwrap_or(self.decided);
        let n = (limit - self.base) as usize;
        if n > 0 {
            inner.rx_release(n);
            self.base = limit;
            self.unpublished = true;
        }
        n
    }
}

// ---------------------------------------------------------------------------------------------
// The wrapper
// ---------------------------------------------------------------------------------------------

/// A queue wrapped with seeded impairments of the frames it sends and, optionally
/// ([`with_ingress`](Impaired::with_ingress)), of those it receives.
///
/// See the [module documentation](self) for what happens to a frame, how `tx_space` stays
/// consistent with the inner queue, and how delays interact with `select`.
pub struct Impaired {
    inner: Box<dyn QueueIo>,
    tx: Line,
    rx: Option<Ingress>,
    /// Dead inner TX slots in front of the user's (see the module documentation).
    skip: usize,
    /// Inner TX slots after the dead ones the user has been lent with `tx_buf`.
    lent: usize,
    /// One buffer, to move frames between two inner TX slots.
    scratch: Vec<u8>,
    /// `arm` armed the inner queue (so `disarm` must disarm it).
    armed_inner: bool,
    stats: ImpairStatsHandle,
    seed: u64,
}

impl std::fmt::Debug for Impaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impaired")
            .field("egress", &self.tx.engine.cfg)
            .field("ingress", &self.rx.as_ref().map(|i| &i.line.engine.cfg))
            .field("seed", &self.seed)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

/// The ingress PRNG's seed, derived from the wrapper's so both directions differ.
fn ingress_seed(seed: u64) -> u64 {
    let mut s = seed ^ 0x5851_f42d_4c95_7f2d;
    splitmix64(&mut s)
}

impl Impaired {
    /// Wraps `inner`, impairing the frames it transmits as `egress` says, with decisions drawn
    /// from `seed`.
    ///
    /// # Panics
    /// If `egress` is invalid ([`ImpairmentConfig::validate`]); see [`Impaired::try_new`].
    pub fn new(inner: Box<dyn QueueIo>, egress: ImpairmentConfig, seed: u64) -> Impaired {
        Impaired::try_new(inner, egress, seed).unwrap_or_else(|e| panic!("Impaired::new: {e}"))
    }

    /// Like [`Impaired::new`], returning an error for an invalid configuration.
    pub fn try_new(
        inner: Box<dyn QueueIo>,
        egress: ImpairmentConfig,
        seed: u64,
    ) -> Result<Impaired> {
        egress.validate()?;
        let buf = inner.buf_size();
        let stats = ImpairStatsHandle {
            egress: Arc::default(),
            ingress: Arc::default(),
        };
        Ok(Impaired {
            tx: Line::new(egress, seed, buf, stats.egress.clone()),
            rx: None,
            skip: 0,
            lent: 0,
            scratch: vec![0; buf],
            armed_inner: false,
            inner,
            stats,
            seed,
        })
    }

    /// Also impairs received frames, as `ingress` says (with its own pool and a PRNG stream
    /// derived from the seed).
    ///
    /// # Panics
    /// If `ingress` is invalid; see [`Impaired::try_with_ingress`].
    pub fn with_ingress(self, ingress: ImpairmentConfig) -> Impaired {
        self.try_with_ingress(ingress)
            .unwrap_or_else(|e| panic!("Impaired::with_ingress: {e}"))
    }

    /// Like [`Impaired::with_ingress`], returning an error for an invalid configuration.
    ///
    /// Call it before the first `rxsync`.
    pub fn try_with_ingress(mut self, ingress: ImpairmentConfig) -> Result<Impaired> {
        ingress.validate()?;
        let buf = self.inner.buf_size();
        let line = Line::new(
            ingress,
            ingress_seed(self.seed),
            buf,
            self.stats.ingress.clone(),
        );
        self.rx = Some(Ingress {
            view: VecDeque::with_capacity(4096 + line.pool.lens.len()),
            line,
            base: 0,
            decided: 0,
            unpublished: false,
        });
        Ok(self)
    }

    /// Counters of transmitted frames.
    pub fn stats(&self) -> ImpairStats {
        self.stats.egress()
    }

    /// Counters of received frames (all zero without [`with_ingress`](Impaired::with_ingress)).
    pub fn ingress_stats(&self) -> ImpairStats {
        self.stats.ingress()
    }

    /// A handle to read the counters after this queue has been boxed into a port.
    pub fn stats_handle(&self) -> ImpairStatsHandle {
        self.stats.clone()
    }

    /// Frames currently held back or waiting for a slot, egress and ingress together.
    pub fn held(&self) -> usize {
        let line = |l: &Line| l.held.len() + l.ready.len();
        line(&self.tx) + self.rx.as_ref().map_or(0, |i| line(&i.line))
    }

    /// Releases every held frame now, in the order they were held, as if its time had come:
    /// egress ones are sent at once as far as the inner ring has room (the rest at the next
    /// `txsync`), ingress ones become visible at the next `rxsync`. For draining a link at the
    /// end of a test or before shutdown.
    pub fn release_all(&mut self) {
        self.tx.release_all();
        self.drain(true);
        if let Some(rx) = &mut self.rx {
            rx.line.release_all();
        }
    }

    /// Moves frames the wrapper sends itself (`ready`) into inner TX slots, in order: a dead
    /// slot, else the next slot when nothing is lent, else (`shift`) after moving the lent
    /// buffers up by one. Returns how many were pushed.
    fn drain(&mut self, shift: bool) -> usize {
        let mut pushed = 0;
        while let Some(&idx) = self.tx.ready.front() {
            if self.skip > 0 {
                // The dead slot in front is free for us; pushing it consumes it.
                self.skip -= 1;
            } else if self.lent == 0 {
                if self.inner.tx_space() == 0 {
                    break;
                }
            } else if shift && self.inner.tx_space() > self.lent {
                for j in (0..self.lent).rev() {
                    let src = self.inner.tx_buf(j);
                    let n = src.len().min(self.scratch.len());
                    self.scratch[..n].copy_from_slice(&src[..n]);
                    let dst = self.inner.tx_buf(j + 1);
                    let n = n.min(dst.len());
                    dst[..n].copy_from_slice(&self.scratch[..n]);
                }
            } else {
                break;
            }
            let frame = self.tx.pool.frame(idx);
            self.inner.tx_buf(0)[..frame.len()].copy_from_slice(frame);
            self.inner.tx_push(frame.len());
            pushed += 1;
            self.tx.waiting -= 1;
            if self.tx.pool.refs(idx) == 1 {
                self.tx.ready.pop_front();
            }
            self.tx.pool.unref(idx);
        }
        pushed
    }

    /// Egress: releases what is due and sends what is ready (see `drain`); returns whether
    /// anything was pushed into the inner ring.
    fn pump_tx(&mut self, shift: bool) -> bool {
        if let Some(now) = self.tx.now_if_timed() {
            self.tx.release_due(now);
        }
        self.drain(shift) > 0
    }

    /// Sends the user's frame, at inner index `at`, as is.
    fn send_in_place(&mut self, at: usize, len: usize) {
        if at > 0 {
            // Dead slots in front: move the frame into the first one. The slot it came from
            // becomes dead in turn, so `skip` is unchanged.
            self.scratch[..len].copy_from_slice(&self.inner.tx_buf(at)[..len]);
            self.inner.tx_buf(0)[..len].copy_from_slice(&self.scratch[..len]);
        }
        self.inner.tx_push(len);
    }
}

impl QueueIo for Impaired {
    fn rxsync(&mut self) -> Result<usize> {
        let Some(rx) = &mut self.rx else {
            return self.inner.rxsync();
        };
        for _ in 0..RX_ROUNDS {
            let avail = self.inner.rxsync()?;
            rx.unpublished = false;
            rx.admit(&*self.inner, avail);
            if let Some(now) = rx.line.now_if_timed() {
                rx.line.release_due(now);
            }
            rx.show_ready();
            // Lost and copied frames free their inner slots at once; hand them back to the
            // link now (the next inner rxsync does), or the peer could wait for room.
            if rx.release_inner(&mut *self.inner) == 0 {
                break;
            }
        }
        Ok(rx.view.len())
    }

    fn rx_available(&self) -> usize {
        match &self.rx {
            Some(rx) => rx.view.len(),
            None => self.inner.rx_available(),
        }
    }

    fn rx_frame(&self, i: usize) -> &[u8] {
        let Some(rx) = &self.rx else {
            return self.inner.rx_frame(i);
        };
        assert!(i < rx.view.len(), "rx_frame({i}) beyond available frames");
        match rx.view[i] {
            Entry::Inner(seq) => self.inner.rx_frame((seq - rx.base) as usize),
            Entry::Pool(idx) => rx.line.pool.frame(idx),
        }
    }

    fn rx_release(&mut self, n: usize) {
        let Some(rx) = &mut self.rx else {
            return self.inner.rx_release(n);
        };
        assert!(
            n <= rx.view.len(),
            "rx_release({n}) beyond available frames"
        );
        for e in rx.view.drain(..n) {
            if let Entry::Pool(idx) = e {
                rx.line.pool.unref(idx);
            }
        }
        rx.release_inner(&mut *self.inner);
    }

    fn txsync(&mut self) -> Result<usize> {
        self.pump_tx(true);
        self.inner.txsync()?;
        if self.lent == 0 {
            self.skip = 0;
        }
        // The sync may have made room for frames still waiting.
        if self.pump_tx(true) {
            self.inner.txsync()?;
        }
        Ok(self.tx_space())
    }

    fn tx_space(&self) -> usize {
        self.inner
            .tx_space()
            .saturating_sub(self.skip + self.tx.waiting)
            .max(self.lent)
    }

    fn tx_buf(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.tx_space(), "tx_buf({i}) beyond free slots");
        self.lent = self.lent.max(i + 1);
        self.inner.tx_buf(self.skip + i)
    }

    fn tx_push(&mut self, len: usize) {
        assert!(self.tx_space() > 0, "tx_push with no free slot");
        assert!(
            len <= self.inner.buf_size(),
            "tx_push({len}) beyond buffer size"
        );
        let at = self.skip;
        self.lent = self.lent.saturating_sub(1);
        let fate = self.tx.decide(len);
        if fate.lost {
            // Not pushed: the slot is reused.
            self.skip += 1;
        } else {
            if let Some((byte, bit)) = fate.corrupt {
                self.inner.tx_buf(at)[byte] ^= 1 << bit;
                bump(&self.tx.stats.corrupted);
            }
            let copies = 1 + u8::from(fate.duplicate);
            let line = &mut self.tx;
            let stashed = if fate.hold != Hold::No {
                let s = line.pool.stash(&self.inner.tx_buf(at)[..len], copies);
                if let Some(idx) = s {
                    let now = line.may_delay().then(Instant::now);
                    line.hold(idx, fate.hold, now);
                    if fate.duplicate {
                        bump(&line.stats.duplicated);
                    }
                } else {
                    bump(&line.stats.pool_full);
                }
                s.is_some()
            } else {
                false
            };
            if stashed {
                // Copied away: the slot is reused.
                self.skip += 1;
            } else {
                // A frame that could not be held is not duplicated either (the pool is full).
                if fate.duplicate && fate.hold == Hold::No {
                    match self.tx.pool.stash(&self.inner.tx_buf(at)[..len], 1) {
                        Some(idx) => {
                            self.tx.make_ready(idx);
                            bump(&self.tx.stats.duplicated);
                        }
                        None => bump(&self.tx.stats.pool_full),
                    }
                }
                self.send_in_place(at, len);
            }
        }
        self.tx.release_passed();
        if self.lent == 0 {
            self.skip = 0;
        }
        self.pump_tx(false);
    }

    fn tx_pending(&self) -> usize {
        self.inner.tx_pending() + self.tx.waiting
    }

    fn buf_size(&self) -> usize {
        self.inner.buf_size()
    }

    fn arm(&mut self, rx: bool, tx: bool) -> Result<Option<WaitSpec>> {
        if self.pump_tx(true) {
            self.inner.txsync()?;
        }
        let mut timed = self.tx.timed > 0;
        if let Some(ing) = &mut self.rx {
            if ing.unpublished {
                // Hand back inner slots released since the last sync before sleeping.
                self.inner.rxsync()?;
                ing.unpublished = false;
            }
            timed |= ing.line.timed > 0;
        }
        if timed {
            // Held frames have deadlines: make `select` poll us (it bounds its sleep and calls
            // `arm` again, which sends what has become due).
            return Ok(None);
        }
        self.armed_inner = true;
        self.inner.arm(rx, tx || self.tx.waiting > 0)
    }

    fn disarm(&mut self) {
        if std::mem::take(&mut self.armed_inner) {
            self.inner.disarm();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sys::shm;
    use crate::{Interest, Port, PortConfig, PortSet};

    /// Takes queue 0 out of a one-queue port, to drive a wrapper directly.
    pub(crate) fn take_queue(port: Port) -> Box<dyn QueueIo> {
        port.into_queues()
            .into_iter()
            .next()
            .expect("the port has a queue")
    }

    fn shm_pair(slots: u32) -> (Box<dyn QueueIo>, Box<dyn QueueIo>) {
        let (a, b) = shm::pair(&PortConfig {
            slots,
            ..PortConfig::default()
        })
        .unwrap();
        (take_queue(a), take_queue(b))
    }

    const LEN: usize = 60;

    /// Frame `seq`: `seq`, `!seq`, then bytes derived from `seq`, so a receiver can tell which
    /// frame it is and how many bits were flipped, wherever the flip is.
    fn write_frame(seq: u64, buf: &mut [u8]) {
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..16].copy_from_slice(&(!seq).to_le_bytes());
        let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for b in &mut buf[16..LEN] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }

    /// The frame's sequence number and how many bits differ from what was sent.
    fn decode(frame: &[u8]) -> (u64, u32) {
        assert_eq!(frame.len(), LEN);
        let a = u64::from_le_bytes(frame[..8].try_into().unwrap());
        let b = !u64::from_le_bytes(frame[8..16].try_into().unwrap());
        let mut expect = [0u8; LEN];
        let mut dist = |seq: u64| {
            write_frame(seq, &mut expect);
            let d: u32 = frame
                .iter()
                .zip(&expect)
                .map(|(x, y)| (x ^ y).count_ones())
                .sum();
            (d, seq)
        };
        let (d, seq) = if a == b {
            dist(a)
        } else {
            dist(a).min(dist(b))
        };
        (seq, d)
    }

    /// Receives everything available; returns how many frames it took.
    fn drain_rx(rx: &mut dyn QueueIo, got: &mut Vec<(u64, u32)>) -> usize {
        let n = rx.rxsync().unwrap();
        for i in 0..n {
            got.push(decode(rx.rx_frame(i)));
        }
        rx.rx_release(n);
        n
    }

    /// Sends frames `0..n` through `tx` the simple way (build in `tx_buf(0)`, push), receiving
    /// on `rx` as it goes, then releases whatever is held and collects the rest.
    fn run(tx: &mut dyn QueueIo, rx: &mut dyn QueueIo, n: u64) -> Vec<(u64, u32)> {
        let mut got = Vec::with_capacity(n as usize * 2);
        for seq in 0..n {
            while tx.tx_space() == 0 {
                tx.txsync().unwrap();
                drain_rx(rx, &mut got);
            }
            write_frame(seq, tx.tx_buf(0));
            tx.tx_push(LEN);
            if seq % 64 == 63 {
                tx.txsync().unwrap();
                drain_rx(rx, &mut got);
            }
        }
        got
    }

    /// `run` through an egress `Impaired`, flushing held frames at the end.
    fn run_egress(cfg: &ImpairmentConfig, seed: u64, n: u64) -> (Vec<(u64, u32)>, ImpairStats) {
        let (a, mut b) = shm_pair(1024);
        let mut tx = Impaired::new(a, cfg.clone(), seed);
        let mut got = run(&mut tx, &mut *b, n);
        flush(&mut tx, &mut *b, &mut got);
        (got, tx.stats())
    }

    fn flush(tx: &mut Impaired, rx: &mut dyn QueueIo, got: &mut Vec<(u64, u32)>) {
        tx.release_all();
        for _ in 0..1000 {
            tx.txsync().unwrap();
            drain_rx(rx, got);
            if tx.held() == 0 && tx.tx_pending() == 0 {
                drain_rx(rx, got);
                return;
            }
        }
        panic!("frames still held after release_all");
    }

    /// What a receiver can tell about the frames it got.
    #[derive(Debug, Default)]
    struct Observed {
        unique: u64,
        dups: u64,
        /// First arrivals after a higher sequence number.
        late: u64,
        /// First arrivals with exactly one bit flipped.
        corrupted: u64,
    }

    fn observe(n: u64, got: &[(u64, u32)]) -> Observed {
        let mut seen = vec![false; n as usize];
        let mut o = Observed::default();
        let mut max = None;
        for &(seq, bits) in got {
            assert!(seq < n, "frame {seq} was never sent");
            assert!(bits <= 1, "frame {seq} has {bits} bits flipped");
            if std::mem::replace(&mut seen[seq as usize], true) {
                o.dups += 1;
                continue;
            }
            o.unique += 1;
            o.corrupted += u64::from(bits);
            if max.is_some_and(|m| seq < m) {
                o.late += 1;
            }
            max = max.max(Some(seq));
        }
        o
    }

    /// Asserts `k` is within 5 standard deviations of Binomial(n, p)'s mean.
    fn assert_binomial(what: &str, k: u64, n: u64, p: f64) {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (k as f64 - mean).abs() <= 5.0 * sd,
            "{what}: {k} of {n}, expected {mean:.0} ± {:.0} (5 sd)",
            5.0 * sd
        );
    }

    const N: u64 = 100_000;

    #[test]
    fn independent_loss_rate_matches_its_probability() {
        let cfg = ImpairmentConfig {
            loss: 0.05,
            ..ImpairmentConfig::default()
        };
        let (got, st) = run_egress(&cfg, 1, N);
        let o = observe(N, &got);
        assert_binomial("lost", N - o.unique, N, 0.05);
        assert_eq!(st.dropped, N - o.unique);
        assert_eq!(st.seen, N);
        assert_eq!((o.dups, o.late, o.corrupted), (0, 0, 0));
    }

    #[test]
    fn duplication_rate_matches_its_probability() {
        let cfg = ImpairmentConfig {
            duplicate: 0.03,
            ..ImpairmentConfig::default()
        };
        let (got, st) = run_egress(&cfg, 2, N);
        let o = observe(N, &got);
        assert_eq!(o.unique, N);
        assert_binomial("duplicated", o.dups, N, 0.03);
        assert_eq!(st.duplicated, o.dups);
        // A copy follows its original directly.
        let adjacent = got.windows(2).filter(|w| w[0].0 == w[1].0).count() as u64;
        assert_eq!(adjacent, o.dups);
    }

    #[test]
    fn reordering_changes_order_and_loses_nothing() {
        let cfg = ImpairmentConfig {
            reorder: Some(Reorder::new(0.02, (1, 3))),
            ..ImpairmentConfig::default()
        };
        let (got, st) = run_egress(&cfg, 3, N);
        let o = observe(N, &got);
        assert_eq!((o.unique, o.dups), (N, 0), "every frame exactly once");
        assert_eq!(got.len() as u64, N);
        assert_binomial("reordered", st.reordered, N, 0.02);
        // A held frame arrives late unless the frames that passed it were all held too.
        assert!(o.late > 0 && o.late <= st.reordered, "{o:?} {st:?}");
        assert!(o.late as f64 >= 0.9 * st.reordered as f64, "{o:?} {st:?}");
        // Nobody is overtaken by more than `gap.1` frames plus the other held ones.
        let mut pos = vec![0usize; N as usize];
        for (i, &(seq, _)) in got.iter().enumerate() {
            pos[seq as usize] = i;
        }
        let worst = (0..N as usize)
            .map(|s| pos[s].saturating_sub(s))
            .max()
            .unwrap();
        assert!((1..=10).contains(&worst), "displacement {worst}");
    }

    #[test]
    fn corruption_flips_exactly_one_bit_at_its_rate() {
        let cfg = ImpairmentConfig {
            corrupt: 0.01,
            ..ImpairmentConfig::default()
        };
        let (got, st) = run_egress(&cfg, 4, N);
        // `observe` asserts at most one flipped bit per frame.
        let o = observe(N, &got);
        assert_eq!(o.unique, N);
        assert_binomial("corrupted", o.corrupted, N, 0.01);
        assert_eq!(st.corrupted, o.corrupted);
    }

    fn combined() -> ImpairmentConfig {
        ImpairmentConfig {
            loss: 0.05,
            duplicate: 0.03,
            reorder: Some(Reorder::new(0.02, (1, 3))),
            corrupt: 0.01,
            ..ImpairmentConfig::default()
        }
    }

    /// Checks the rates of `combined()` and that the counters agree with what arrived.
    fn check_combined(n: u64, got: &[(u64, u32)], st: &ImpairStats) {
        let o = observe(n, got);
        let lost = n - o.unique;
        assert_binomial("lost", lost, n, 0.05);
        assert_eq!(st.dropped, lost);
        // The other impairments apply to frames that were not lost.
        assert_binomial("duplicated", o.dups, o.unique, 0.03);
        assert_eq!(st.duplicated, o.dups);
        assert_binomial("corrupted", o.corrupted, o.unique, 0.01);
        assert_eq!(st.corrupted, o.corrupted);
        assert_binomial("reordered", st.reordered, o.unique, 0.02);
        assert!(o.late <= st.reordered && o.late as f64 >= 0.85 * st.reordered as f64);
        assert_eq!((st.seen, st.pool_full), (n, 0));
    }

    #[test]
    fn combined_impairments_keep_their_rates() {
        let (got, st) = run_egress(&combined(), 5, N);
        check_combined(N, &got, &st);
    }

    #[test]
    fn burst_loss_follows_the_gilbert_model() {
        let (p, r) = (0.01, 0.25);
        let cfg = ImpairmentConfig {
            burst_loss: Some(GilbertElliott::gilbert(p, r)),
            ..ImpairmentConfig::default()
        };
        let n = 200_000;
        let (got, st) = run_egress(&cfg, 6, n);
        // In order, no duplicates: the gaps are the bursts.
        let mut bursts = Vec::new();
        let mut next = 0;
        for &(seq, _) in &got {
            assert!(seq >= next, "out of order");
            if seq > next {
                bursts.push(seq - next);
            }
            next = seq + 1;
        }
        if next < n {
            bursts.push(n - next);
        }
        let lost: u64 = bursts.iter().sum();
        assert_eq!(lost, st.dropped);
        // Burst lengths are geometric with mean 1/r and variance (1-r)/r².
        let mean = lost as f64 / bursts.len() as f64;
        let sd_of_mean = ((1.0 - r) / (r * r) / bursts.len() as f64).sqrt();
        assert!(
            (mean - 1.0 / r).abs() <= 5.0 * sd_of_mean,
            "mean burst {mean:.3}, expected {} ± {:.3}",
            1.0 / r,
            5.0 * sd_of_mean
        );
        // Long-run loss p/(p+r); the chain's correlation λ = 1-p-r inflates the variance of
        // the count by (1+λ)/(1-λ).
        let pi = p / (p + r);
        let lambda = 1.0 - p - r;
        let sd = (n as f64 * pi * (1.0 - pi) * (1.0 + lambda) / (1.0 - lambda)).sqrt();
        assert!(
            (lost as f64 - n as f64 * pi).abs() <= 5.0 * sd,
            "lost {lost}, expected {:.0} ± {:.0}",
            n as f64 * pi,
            5.0 * sd
        );
        // Independent loss at the same rate would make far shorter bursts.
        assert!(mean > 3.0, "{mean}");
    }

    #[test]
    fn a_bad_spell_ends_with_time_when_max_bad_us_is_set() {
        // Into the bad state after every good frame, never out of it by frames.
        let lost_after_a_pause = |max_bad_us| {
            let cfg = ImpairmentConfig {
                burst_loss: Some(GilbertElliott::gilbert(1.0, 0.0).with_max_bad_us(max_bad_us)),
                ..ImpairmentConfig::default()
            };
            let mut e = Engine::new(cfg, 1);
            assert!(!e.decide(100).lost, "the chain starts good");
            assert!(e.decide(100).lost, "then it is bad");
            std::thread::sleep(Duration::from_millis(5));
            e.decide(100).lost
        };
        assert!(
            lost_after_a_pause(0),
            "without a limit the spell outlasts the pause"
        );
        assert!(
            !lost_after_a_pause(1_000),
            "with 1 ms the spell is over after 5 ms"
        );
    }

    #[test]
    fn a_seed_replays_the_same_fates_and_another_seed_does_not() {
        let fates = |seed| {
            let mut e = Engine::new(
                ImpairmentConfig {
                    burst_loss: Some(GilbertElliott::gilbert(0.01, 0.3)),
                    delay: Some(Delay {
                        probability: 0.1,
                        fixed_us: 100,
                        jitter_us: 50,
                    }),
                    ..combined()
                },
                seed,
            );
            (0..20_000)
                .map(|i| e.decide(60 + i % 1400))
                .collect::<Vec<_>>()
        };
        assert_eq!(fates(7), fates(7));
        assert_ne!(fates(7), fates(8));
        // End to end: the same frames arrive, in the same order, with the same bits flipped.
        let (a, sa) = run_egress(&combined(), 7, 20_000);
        let (b, sb) = run_egress(&combined(), 7, 20_000);
        let (c, _) = run_egress(&combined(), 8, 20_000);
        assert_eq!((&a, sa), (&b, sb));
        assert_ne!(a, c);
    }

    #[test]
    fn the_prng_is_xoshiro256starstar() {
        // Reference: xoshiro256** from state {1, 2, 3, 4} yields 11520, 0, 1509978240.
        let mut r = Rng([1, 2, 3, 4]);
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [11520, 0, 1509978240]
        );
        let mut s = 0;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn delayed_frames_are_held_at_least_the_configured_time() {
        let (fixed, jitter) = (3_000, 2_000);
        let cfg = ImpairmentConfig {
            delay: Some(Delay::all(fixed, jitter)),
            ..ImpairmentConfig::default()
        };
        let (a, mut b) = shm_pair(64);
        let mut tx = Impaired::new(a, cfg, 9);
        let mut sent = Vec::new();
        for seq in 0..20 {
            write_frame(seq, tx.tx_buf(0));
            tx.tx_push(LEN);
            sent.push(Instant::now());
        }
        assert_eq!(tx.txsync().unwrap(), 63, "held frames take no inner slot");
        // While frames are held, select must poll this queue.
        assert_eq!(tx.arm(true, false).unwrap(), None);
        tx.disarm();
        let mut arrived = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while arrived.len() < 20 && Instant::now() < deadline {
            tx.txsync().unwrap();
            let n = b.rxsync().unwrap();
            let now = Instant::now();
            for i in 0..n {
                arrived.push((decode(b.rx_frame(i)).0, now));
            }
            b.rx_release(n);
            std::thread::yield_now();
        }
        assert_eq!(arrived.len(), 20);
        for (seq, at) in &arrived {
            let held = *at - sent[*seq as usize];
            assert!(
                held >= Duration::from_micros(fixed),
                "frame {seq} held {held:?}"
            );
        }
        // Jitter reorders frames whose delays overlap; all arrive once.
        let mut seqs: Vec<u64> = arrived.iter().map(|a| a.0).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
        assert_eq!(tx.stats().delayed, 20);
        assert_eq!(tx.held(), 0);
        // Nothing held: `arm` forwards to the inner queue again.
        assert!(tx.arm(true, false).unwrap().is_some());
        tx.disarm();
    }

    #[test]
    fn select_wakes_in_time_to_send_delayed_frames() {
        let delay = 2_000;
        let cfg = ImpairmentConfig {
            delay: Some(Delay::all(delay, 0)),
            ..ImpairmentConfig::default()
        };
        let (a, b) = shm::pair(&PortConfig::default()).unwrap();
        let a = a.wrap(|q, i| Box::new(Impaired::new(q, cfg.clone(), 10 + i as u64)));
        let mut set = PortSet::new().unwrap();
        let (pa, pb) = (set.add(a), set.add(b));
        let start = Instant::now();
        let qa = set.port(pa).queue(0);
        write_frame(0, qa.tx_buf(0));
        qa.tx_push(LEN);
        qa.txsync().unwrap();
        // Only RX interest: the delayed frame still leaves, from `arm` at a bounded wake-up.
        let interests = [
            Interest {
                port: pa,
                queue: 0,
                rx: true,
                tx: false,
            },
            Interest {
                port: pb,
                queue: 0,
                rx: true,
                tx: false,
            },
        ];
        let out = set.select(&interests, Some(5_000_000)).unwrap();
        assert!(!out.timed_out);
        assert!(set.ready().iter().any(|r| r.port == pb && r.rx));
        assert!(start.elapsed() >= Duration::from_micros(delay));
        assert_eq!(decode(set.port(pb).queue(0).rx_frame(0)), (0, 0));
    }

    #[test]
    fn a_full_pool_sends_frames_at_once_and_counts_them() {
        let cfg = ImpairmentConfig {
            delay: Some(Delay::all(60_000_000, 0)),
            pool_frames: 4,
            ..ImpairmentConfig::default()
        };
        let (a, mut b) = shm_pair(64);
        let mut tx = Impaired::new(a, cfg, 11);
        for seq in 0..10 {
            write_frame(seq, tx.tx_buf(0));
            tx.tx_push(LEN);
        }
        tx.txsync().unwrap();
        let mut got = Vec::new();
        assert_eq!(drain_rx(&mut *b, &mut got), 6);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            [4, 5, 6, 7, 8, 9]
        );
        let st = tx.stats();
        assert_eq!((st.delayed, st.pool_full), (4, 6));
        flush(&mut tx, &mut *b, &mut got);
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn prefilled_batches_keep_their_buffers_through_drops_and_holds() {
        // netmap lets a user fill tx_buf(0..n) before pushing: dropped and held frames must not
        // shift the user's other buffers, nor released frames overwrite them.
        let cfg = ImpairmentConfig {
            loss: 0.2,
            duplicate: 0.1,
            reorder: Some(Reorder::new(0.1, (1, 2))),
            pool_frames: 32,
            ..ImpairmentConfig::default()
        };
        let (a, mut b) = shm_pair(64);
        let mut tx = Impaired::new(a, cfg, 12);
        let mut got = Vec::new();
        let mut seq = 0;
        let n = 20_000;
        while seq < n {
            let room = tx.tx_space().min((n - seq) as usize);
            for i in 0..room {
                write_frame(seq + i as u64, tx.tx_buf(i));
            }
            for _ in 0..room {
                tx.tx_push(LEN);
            }
            seq += room as u64;
            tx.txsync().unwrap();
            drain_rx(&mut *b, &mut got);
        }
        flush(&mut tx, &mut *b, &mut got);
        let o = observe(n, &got);
        let st = tx.stats();
        assert_eq!(o.corrupted, 0, "no buffer was overwritten");
        assert_eq!(st.dropped, n - o.unique);
        assert_eq!(st.duplicated, o.dups);
        assert!(st.reordered > 0 && st.dropped > 0 && st.duplicated > 0);
    }

    #[test]
    fn a_lent_buffer_survives_frames_released_before_it_is_pushed() {
        let cfg = ImpairmentConfig {
            reorder: Some(Reorder {
                probability: 1.0,
                gap: (1, 1),
                timeout_us: 0,
            }),
            ..ImpairmentConfig::default()
        };
        let (a, mut b) = shm_pair(16);
        let mut tx = Impaired::new(a, cfg, 13);
        write_frame(0, tx.tx_buf(0));
        tx.tx_push(LEN);
        assert_eq!(tx.held(), 1);
        // Frame 1 is built but not pushed when frame 0 is released and sent.
        write_frame(1, tx.tx_buf(0));
        tx.release_all();
        tx.txsync().unwrap();
        let mut got = Vec::new();
        assert_eq!(drain_rx(&mut *b, &mut got), 1);
        assert_eq!(
            decode(&tx.tx_buf(0)[..LEN]),
            (1, 0),
            "the lent buffer kept frame 1"
        );
        tx.tx_push(LEN);
        flush(&mut tx, &mut *b, &mut got);
        assert_eq!(got, [(0, 0), (1, 0)]);
    }

    /// `run` with the impairments on the receiving side.
    fn run_ingress(
        cfg: &ImpairmentConfig,
        seed: u64,
        n: u64,
        slots: u32,
    ) -> (Vec<(u64, u32)>, ImpairStats) {
        let (mut a, b) = shm_pair(slots);
        let mut rx = Impaired::new(b, ImpairmentConfig::default(), seed).with_ingress(cfg.clone());
        let mut got = run(&mut *a, &mut rx, n);
        a.txsync().unwrap();
        drain_rx(&mut rx, &mut got);
        rx.release_all();
        for _ in 0..1000 {
            drain_rx(&mut rx, &mut got);
            if rx.held() == 0 && rx.rx_available() == 0 {
                break;
            }
        }
        assert_eq!(rx.held(), 0);
        assert_eq!(rx.stats(), ImpairStats::default(), "egress untouched");
        (got, rx.ingress_stats())
    }

    #[test]
    fn ingress_impairments_keep_their_rates() {
        // A small ring: lost and copied frames must give their slots back, or the sender stalls.
        let (got, st) = run_ingress(&combined(), 14, N, 64);
        check_combined(N, &got, &st);
        // Duplicates are shown in place, next to their original.
        let adjacent = got.windows(2).filter(|w| w[0].0 == w[1].0).count() as u64;
        assert!(adjacent as f64 >= 0.9 * st.duplicated as f64);
    }

    #[test]
    fn ingress_loses_everything_without_stalling_the_sender() {
        let cfg = ImpairmentConfig {
            loss: 1.0,
            ..ImpairmentConfig::default()
        };
        let (got, st) = run_ingress(&cfg, 15, 5_000, 16);
        assert!(got.is_empty());
        assert_eq!((st.seen, st.dropped), (5_000, 5_000));
    }

    #[test]
    fn ingress_delay_hides_frames_until_due() {
        let cfg = ImpairmentConfig {
            delay: Some(Delay::all(2_000, 0)),
            ..ImpairmentConfig::default()
        };
        let (mut a, b) = shm_pair(64);
        let mut rx = Impaired::new(b, ImpairmentConfig::default(), 16).with_ingress(cfg);
        let start = Instant::now();
        for seq in 0..5 {
            write_frame(seq, a.tx_buf(0));
            a.tx_push(LEN);
        }
        a.txsync().unwrap();
        let mut got = Vec::new();
        drain_rx(&mut rx, &mut got);
        if start.elapsed() < Duration::from_micros(2_000) {
            assert!(got.is_empty());
            assert_eq!(rx.arm(true, false).unwrap(), None);
            rx.disarm();
        }
        while got.len() < 5 && start.elapsed() < Duration::from_secs(5) {
            drain_rx(&mut rx, &mut got);
        }
        assert!(start.elapsed() >= Duration::from_micros(2_000));
        assert_eq!(got, (0..5).map(|s| (s, 0)).collect::<Vec<_>>());
        // The frames were copied: the inner ring is free again.
        assert_eq!(a.txsync().unwrap(), 63);
    }

    #[test]
    fn invalid_configurations_are_rejected_with_a_reason() {
        let bad = [
            ImpairmentConfig {
                loss: 1.5,
                ..ImpairmentConfig::default()
            },
            ImpairmentConfig {
                corrupt: f64::NAN,
                ..ImpairmentConfig::default()
            },
            ImpairmentConfig {
                reorder: Some(Reorder::new(0.1, (0, 3))),
                ..ImpairmentConfig::default()
            },
            ImpairmentConfig {
                duplicate: 0.1,
                pool_frames: 0,
                ..ImpairmentConfig::default()
            },
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("impairment") || e.contains("reorder"), "{e}");
            let (a, _b) = shm_pair(8);
            assert!(Impaired::try_new(a, cfg, 0).is_err());
        }
    }
}
