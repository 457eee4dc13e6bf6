//! A hierarchical timer wheel: O(1) set and cancel, one "next deadline" query.
//!
//! Every connection slot (`key`, a dense `u32`) has one timer per [`TimerKind`]; re-arming a
//! timer replaces its deadline. The endpoint keeps one [`TimerWheel`] per core for all its
//! connections and asks it for [`TimerWheel::next_deadline`] (its `poll_timeout`) and for the
//! timers that are due ([`TimerWheel::poll_expired`] / [`TimerWheel::expire`], its
//! `handle_timeout`). STYLE.md rule 3: spurious or late expiry calls are harmless.
//!
//! ## Layout
//! ```text
//!  nodes: Vec<Node>   (16 bytes each, intrusive circular doubly-linked lists)
//!  ┌──────────── sentinels ────────────┬────────── timers ───────────────────────────┐
//!  │ L0 s0..s63 │ L1 s0..s63 │ … │ L10 │ READY │ key0:Rto key0:DelayedAck … key1:Rto … │
//!  └────────────────────────────────────┴─────────────────────────────────────────────┘
//!   level l, slot s holds timers whose tick (deadline / granularity) agrees with the wheel's
//!   `elapsed` tick above bit 6(l+1) and has s in bits 6l..6l+5; 11 levels of 64 slots cover
//!   all 2^64 ticks, so any deadline (a 2-hour keepalive, `Instant` far in the future) fits.
//! ```
//! Each (key, kind) owns exactly one node at a fixed index, so there is nothing to compact:
//! memory is `16 × TimerKind::COUNT` bytes per key up to the highest key ever armed, plus 705
//! sentinels. With a million connections the nodes are far apart in memory, so unlinking one
//! (which writes its two neighbours) costs cache misses; so `cancel` only marks the node (it
//! stays linked as a ghost until the wheel reaches its list, or the next `set` revives it),
//! and `set` to a deadline no earlier than the node's current one only rewrites the
//! deadline (the node moves on when its list comes up, as a cascade would move it). A
//! connection's timers are then mostly re-armed and cancelled without touching any other
//! connection's memory. A timer cascades at most 10 times
//! towards level 0 as time passes, so expiry costs O(1) amortised per timer.
//!
//! ## Precision and the choice of granularity
//! Timers fire exactly: [`TimerWheel::poll_expired`]`(now)` returns a timer iff its deadline
//! is `<= now` — never early, and not late either, as long as the caller wakes up at
//! [`TimerWheel::next_deadline`]. The granularity only sets the level-0 slot width: the
//! timers of the current slot are compared one by one with `now` at each wake-up inside that
//! slot, so a coarse slot holding many distinct deadlines is scanned many times, while a fine
//! one costs at most one cascade per level (≤ 10) per timer. Prefer 1–64 µs: with a million
//! connections (an RTO and a 2-hour keepalive each) and an event loop that wakes at every
//! distinct deadline, the `million_connections` test runs in about 1 s at 1–64 µs and 15 s at
//! 1 ms (in the 1 ms case ~5000 timers share each slot).
//!
//! `next_deadline` is conservative: never later than the true earliest deadline, sometimes
//! earlier (the start of a coarse slot, or a cancelled timer's deadline); waking up early
//! costs a cascade or a scan, never a wrong expiry.
//!
//! What it does not do: it does not know what a timer means (the connection does), it does
//! not read a clock, and it cannot bound how many timers are due at once — the caller bounds
//! its loop ([`TimerWheel::expire`] takes a budget, STYLE.md rule 9).

use alloc::vec::Vec;

use crate::time::{Duration, Instant};

/// What a timer is for. One pending deadline per (connection slot, kind).
///
/// Add a variant here (and to [`TimerKind::ALL`]) when the endpoint needs a new kind; the
/// wheel sizes itself from [`TimerKind::COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TimerKind {
    /// Retransmission timeout (RFC 6298).
    Rto = 0,
    /// Delayed acknowledgment (RFC 1122 §4.2.3.2, RFC 9293 §3.8.6.3).
    DelayedAck = 1,
    /// Zero-window probe (RFC 9293 §3.8.6.1).
    Persist = 2,
    /// Keepalive probe (RFC 1122 §4.2.3.6).
    Keepalive = 3,
    /// FIN-WAIT-2 orphan timeout.
    FinWait2 = 4,
    /// TIME-WAIT 2*MSL (RFC 9293 §3.6).
    TimeWait = 5,
    /// SYN-ACK retransmission of an embryonic connection.
    SynAckRetry = 6,
    /// ARP request retry / resolution timeout (RFC 826).
    Arp = 7,
}

impl TimerKind {
    /// Every kind, in index order.
    pub const ALL: [TimerKind; 8] = [
        TimerKind::Rto,
        TimerKind::DelayedAck,
        TimerKind::Persist,
        TimerKind::Keepalive,
        TimerKind::FinWait2,
        TimerKind::TimeWait,
        TimerKind::SynAckRetry,
        TimerKind::Arp,
    ];
    /// Number of kinds.
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index in `0..COUNT`.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The kind with index `i`, if any.
    pub fn from_index(i: usize) -> Option<TimerKind> {
        Self::ALL.get(i).copied()
    }
}

/// The key passed to [`TimerWheel::set`] is beyond [`TimerWheel::MAX_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOutOfRange;

impl core::fmt::Display for KeyOutOfRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("timer key out of range")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyOutOfRange {}

const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// 11 × 6 bits ≥ 64 bits: every tick has a level.
const LEVELS: usize = 11;
/// Timers that are due and wait to be returned by `poll_expired`.
const READY: u32 = (LEVELS * SLOTS) as u32;
const SENTINELS: u32 = READY + 1;
const NIL: u32 = u32::MAX;

/// One timer (or a list sentinel). A timer is linked iff `next != NIL`, and armed iff linked
/// and not a ghost (see `TimerWheel::ghosts`).
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Deadline in µs (timers only; a ghost keeps the one it was linked with).
    deadline: u64,
    prev: u32,
    next: u32,
}

const UNARMED: Node = Node {
    deadline: 0,
    prev: NIL,
    next: NIL,
};

/// A hierarchical timer wheel keyed by (connection slot, [`TimerKind`]).
///
/// Calling order: [`set`](Self::set) / [`cancel`](Self::cancel) at any time; to sleep, take
/// [`next_deadline`](Self::next_deadline); on wake-up (or whenever — spurious calls are
/// harmless) drain [`poll_expired`](Self::poll_expired) or call [`expire`](Self::expire).
/// A timer returned as expired is disarmed before it is returned, so the handler may re-arm
/// it at once.
#[derive(Debug, Clone)]
pub struct TimerWheel {
    /// Slot width in µs (≥ 1).
    granularity: u64,
    /// All ticks before `elapsed` have been processed.
    elapsed: u64,
    /// Bit s of `occupied[l]` is set if list (l, s) may be non-empty (cleared lazily).
    occupied: [u64; LEVELS],
    /// Lower bound of the deadlines in each level-0 slot (exact after a scan).
    min0: [u64; SLOTS],
    /// Lower bound of the deadlines of the READY timers.
    ready_min: u64,
    /// Armed timers.
    len: usize,
    nodes: Vec<Node>,
    /// Per key, bit `kind`: the timer was cancelled but is still linked (a ghost).
    ghosts: Vec<u8>,
}

impl TimerWheel {
    /// The largest key [`set`](Self::set) accepts.
    pub const MAX_KEY: u32 = ((NIL - 1 - SENTINELS) as usize / TimerKind::COUNT - 1) as u32;

    /// A wheel whose slots are `granularity` wide (1 µs if zero), with room reserved for keys
    /// `0..capacity_hint` (it grows on demand beyond that).
    pub fn new(granularity: Duration, capacity_hint: usize) -> TimerWheel {
        let mut nodes = Vec::new();
        let timers = capacity_hint.saturating_mul(TimerKind::COUNT);
        nodes.reserve(timers.saturating_add(SENTINELS as usize));
        for i in 0..SENTINELS {
            nodes.push(Node {
                deadline: 0,
                prev: i,
                next: i,
            });
        }
        TimerWheel {
            granularity: granularity.micros().max(1),
            elapsed: 0,
            occupied: [0; LEVELS],
            min0: [u64::MAX; SLOTS],
            ready_min: 0,
            len: 0,
            nodes,
            ghosts: Vec::new(),
        }
    }

    /// The slot width.
    pub fn granularity(&self) -> Duration {
        Duration::from_micros(self.granularity)
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No timer is armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arm (or re-arm, replacing the previous deadline) the `kind` timer of `key` for `at`.
    /// O(1) (amortised: the table grows to the highest key armed, 16 bytes per kind, so keys
    /// should be dense connection slots). A deadline in the past fires on the next expiry
    /// call.
    pub fn set(&mut self, key: u32, kind: TimerKind, at: Instant) -> Result<(), KeyOutOfRange> {
        let idx = Self::index(key, kind).ok_or(KeyOutOfRange)?;
        let needed = (idx as usize).saturating_add(1);
        if self.nodes.len() < needed {
            // Grow by whole keys so every kind of a key exists together.
            let keys = (needed - SENTINELS as usize).div_ceil(TimerKind::COUNT);
            let len = (SENTINELS as usize).saturating_add(keys.saturating_mul(TimerKind::COUNT));
            self.nodes.resize(len, UNARMED);
            self.ghosts.resize(keys, 0);
        }
        let at = at.micros();
        let n = self.node(idx);
        let ghost = self.take_ghost(idx);
        if ghost || n.next == NIL {
            self.len = self.len.saturating_add(1);
        }
        if n.next != NIL {
            if at >= n.deadline {
                // Later than the list it is in (or a ghost being revived): it stays there and
                // moves on when that list comes up. No other node is touched.
                if let Some(n) = self.nodes.get_mut(idx as usize) {
                    n.deadline = at;
                }
                return Ok(());
            }
            self.unlink(idx);
        }
        if let Some(n) = self.nodes.get_mut(idx as usize) {
            n.deadline = at;
        }
        self.insert(idx);
        Ok(())
    }

    /// Disarm the `kind` timer of `key`; nothing happens if it is not armed. O(1): the node
    /// stays in its list as a ghost, dropped when the wheel reaches it or revived by the next
    /// [`set`](Self::set), so no other node is touched.
    pub fn cancel(&mut self, key: u32, kind: TimerKind) {
        if let Some(idx) = Self::index(key, kind) {
            if self.is_armed(idx) {
                self.mark_ghost(idx);
                self.len = self.len.saturating_sub(1);
            }
        }
    }

    /// Disarm every timer of `key` (the connection slot is being freed).
    pub fn cancel_all(&mut self, key: u32) {
        let armed = self.armed_kinds(key);
        if armed != 0 {
            if let Some(g) = self.ghosts.get_mut(key as usize) {
                *g |= armed;
                self.len = self.len.saturating_sub(armed.count_ones() as usize);
            }
        }
    }

    /// The pending deadline of the `kind` timer of `key`, if armed.
    pub fn deadline(&self, key: u32, kind: TimerKind) -> Option<Instant> {
        let idx = Self::index(key, kind)?;
        let n = self.nodes.get(idx as usize)?;
        (n.next != NIL && !self.is_ghost(idx)).then(|| Instant::from_micros(n.deadline))
    }

    /// A time at or before the earliest pending deadline; `None` if no timer is armed.
    ///
    /// Conservative: it may be earlier than the true earliest deadline (the start of a coarse
    /// slot, or the deadline of a cancelled timer), never later. Waking up then and calling
    /// [`poll_expired`](Self::poll_expired) makes progress, so repeating "sleep until
    /// `next_deadline`, expire" reaches every deadline exactly, after at most one early
    /// wake-up per level. Constant time (at most 11 × 64 bit tests).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let ready = (!self.list_is_empty(READY)).then_some(self.ready_min);
        let wheel = self.wheel_deadline();
        match (ready, wheel) {
            (Some(r), Some(w)) => Some(Instant::from_micros(r.min(w))),
            (Some(at), None) | (None, Some(at)) => Some(Instant::from_micros(at)),
            // Unreachable while `len` is right; any answer but a late one is allowed.
            (None, None) => Some(Instant::ZERO),
        }
    }

    /// A lower bound of the deadlines in the wheel's earliest non-empty list, in µs.
    fn wheel_deadline(&self) -> Option<u64> {
        for level in 0..LEVELS {
            let pos = self.pos(level);
            let mut bits = self.occupied_from(level, pos);
            while bits != 0 {
                let slot = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if self.list_is_empty(Self::list(level, slot)) {
                    continue;
                }
                let at = if level == 0 {
                    self.min0.get(slot).copied().unwrap_or(0)
                } else {
                    self.slot_start(level, slot)
                        .saturating_mul(self.granularity)
                };
                return Some(at);
            }
        }
        None
    }

    /// Remove and return one timer whose deadline is `<= now`, or `None` if none is due.
    ///
    /// Call repeatedly until `None` (bounding the loop as STYLE.md rule 9 asks). Amortised
    /// O(1) per returned timer; a single call may cascade one slot or scan the current
    /// tick's slot (each timer is cascaded at most 10 times and scanned once per wake-up of
    /// its tick). Timers re-armed for `<= now` by the caller's handler come back in the same
    /// loop.
    #[must_use = "the returned timer is disarmed; dropping it loses the expiry"]
    pub fn poll_expired(&mut self, now: Instant) -> Option<(u32, TimerKind)> {
        let now_us = now.micros();
        let now_tick = now_us / self.granularity;
        loop {
            if let Some(idx) = self.first(READY) {
                if let Some(fired) = self.fire_if_due(idx, now_us) {
                    return Some(fired);
                }
                continue;
            }
            let Some((level, slot, start)) = self.next_slot() else {
                self.elapsed = self.elapsed.max(now_tick);
                return None;
            };
            if start > now_tick {
                // Every list starts after `now_tick`, so `elapsed` may move there.
                self.elapsed = self.elapsed.max(now_tick);
                return None;
            }
            // Levels below `level` are empty and this is the earliest list of `level`:
            // no tick before `start` has anything left.
            self.elapsed = self.elapsed.max(start);
            let list = Self::list(level, slot);
            if level > 0 {
                self.cascade(level, slot, list);
            } else if start < now_tick {
                // A whole tick before now's: every timer in it is due, unless cancelled or set
                // later since it was linked here.
                if let Some(idx) = self.first(list) {
                    if let Some(fired) = self.fire_if_due(idx, now_us) {
                        return Some(fired);
                    }
                }
            } else {
                // The current tick: compare deadlines with `now` one by one.
                if now_us < self.min0.get(slot).copied().unwrap_or(0) {
                    return None;
                }
                self.scan_current(slot, list, now_us);
                if self.list_is_empty(READY) {
                    return None;
                }
            }
        }
    }

    /// Pass every timer due at `now` to `out` (at most `budget` of them), disarming each
    /// before the call. Returns `true` if timers may remain due (the budget ran out); call
    /// again then. `budget = usize::MAX` drains everything.
    pub fn expire(
        &mut self,
        now: Instant,
        budget: usize,
        mut out: impl FnMut(u32, TimerKind),
    ) -> bool {
        for _ in 0..budget {
            match self.poll_expired(now) {
                Some((key, kind)) => out(key, kind),
                None => return false,
            }
        }
        self.next_deadline().is_some_and(|d| d <= now)
    }

    // ---- internals -------------------------------------------------------------------

    fn index(key: u32, kind: TimerKind) -> Option<u32> {
        if key > Self::MAX_KEY {
            return None;
        }
        let i = (key as u64) * (TimerKind::COUNT as u64) + kind.index() as u64 + SENTINELS as u64;
        u32::try_from(i).ok().filter(|&i| i != NIL)
    }

    fn key_kind(idx: u32) -> Option<(u32, TimerKind)> {
        let t = idx.checked_sub(SENTINELS)? as usize;
        let kind = TimerKind::from_index(t % TimerKind::COUNT)?;
        Some(((t / TimerKind::COUNT) as u32, kind))
    }

    const fn list(level: usize, slot: usize) -> u32 {
        (level * SLOTS + slot) as u32
    }

    fn node(&self, i: u32) -> Node {
        self.nodes.get(i as usize).copied().unwrap_or(UNARMED)
    }

    fn set_prev(&mut self, i: u32, prev: u32) {
        if let Some(n) = self.nodes.get_mut(i as usize) {
            n.prev = prev;
        }
    }

    fn set_next(&mut self, i: u32, next: u32) {
        if let Some(n) = self.nodes.get_mut(i as usize) {
            n.next = next;
        }
    }

    /// The kinds armed for `key`, as a bit mask (`1 << kind.index()`).
    pub fn armed_kinds(&self, key: u32) -> u8 {
        let Some(first) = Self::index(key, TimerKind::Rto) else {
            return 0;
        };
        let ghosts = self.ghosts.get(key as usize).copied().unwrap_or(0);
        let mut mask = 0u8;
        for (i, n) in self
            .nodes
            .get(first as usize..)
            .unwrap_or(&[])
            .iter()
            .take(TimerKind::COUNT)
            .enumerate()
        {
            mask |= u8::from(n.next != NIL) << i;
        }
        mask & !ghosts
    }

    fn is_armed(&self, idx: u32) -> bool {
        self.node(idx).next != NIL && !self.is_ghost(idx)
    }

    /// The ghost byte of `idx`'s key and `idx`'s bit in it.
    fn ghost_bit(idx: u32) -> Option<(usize, u8)> {
        let (key, kind) = Self::key_kind(idx)?;
        Some((key as usize, 1 << kind.index()))
    }

    fn is_ghost(&self, idx: u32) -> bool {
        Self::ghost_bit(idx)
            .is_some_and(|(k, bit)| self.ghosts.get(k).is_some_and(|g| g & bit != 0))
    }

    fn mark_ghost(&mut self, idx: u32) {
        if let Some((k, bit)) = Self::ghost_bit(idx) {
            if let Some(g) = self.ghosts.get_mut(k) {
                *g |= bit;
            }
        }
    }

    /// Clears `idx`'s ghost bit; returns whether it was set.
    fn take_ghost(&mut self, idx: u32) -> bool {
        let Some((k, bit)) = Self::ghost_bit(idx) else {
            return false;
        };
        match self.ghosts.get_mut(k) {
            Some(g) if *g & bit != 0 => {
                *g &= !bit;
                true
            }
            _ => false,
        }
    }

    fn list_is_empty(&self, list: u32) -> bool {
        self.node(list).next == list
    }

    fn first(&self, list: u32) -> Option<u32> {
        let n = self.node(list).next;
        (n != list && n != NIL).then_some(n)
    }

    fn link_back(&mut self, list: u32, idx: u32) {
        let tail = self.node(list).prev;
        self.set_prev(idx, tail);
        self.set_next(idx, list);
        self.set_next(tail, idx);
        self.set_prev(list, idx);
    }

    fn unlink(&mut self, idx: u32) {
        let Node { prev, next, .. } = self.node(idx);
        if next == NIL {
            return;
        }
        self.set_next(prev, next);
        self.set_prev(next, prev);
        self.set_prev(idx, NIL);
        self.set_next(idx, NIL);
    }

    /// Position of `elapsed` within `level`.
    fn pos(&self, level: usize) -> usize {
        ((self.elapsed >> (BITS as usize * level)) & SLOT_MASK) as usize
    }

    fn occupied_from(&self, level: usize, pos: usize) -> u64 {
        self.occupied.get(level).copied().unwrap_or(0) >> pos << pos
    }

    /// First tick covered by `slot` of `level` in the current block of `elapsed`.
    fn slot_start(&self, level: usize, slot: usize) -> u64 {
        let shift = BITS as usize * level;
        let block_shift = shift + BITS as usize;
        let prefix = if block_shift >= 64 {
            0
        } else {
            (self.elapsed >> block_shift) << block_shift
        };
        prefix | ((slot as u64) << shift)
    }

    /// Put armed-but-unlinked timer `idx` in the list its deadline belongs to.
    fn insert(&mut self, idx: u32) {
        let deadline = self.node(idx).deadline;
        // A past tick goes to the current slot; `poll_expired` compares exact deadlines.
        let tick = (deadline / self.granularity).max(self.elapsed);
        let significant = 63 - ((tick ^ self.elapsed) | SLOT_MASK).leading_zeros() as usize;
        let level = significant / BITS as usize;
        let slot = ((tick >> (BITS as usize * level)) & SLOT_MASK) as usize;
        let list = Self::list(level, slot);
        if level == 0 {
            let was_empty = self.list_is_empty(list);
            if let Some(m) = self.min0.get_mut(slot) {
                *m = if was_empty {
                    deadline
                } else {
                    (*m).min(deadline)
                };
            }
        }
        self.link_back(list, idx);
        if let Some(o) = self.occupied.get_mut(level) {
            *o |= 1 << slot;
        }
    }

    /// The earliest non-empty list: (level, slot, first tick). Clears stale occupancy bits.
    fn next_slot(&mut self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let pos = self.pos(level);
            loop {
                let bits = self.occupied_from(level, pos);
                if bits == 0 {
                    break;
                }
                let slot = bits.trailing_zeros() as usize;
                if self.list_is_empty(Self::list(level, slot)) {
                    if let Some(o) = self.occupied.get_mut(level) {
                        *o &= !(1u64 << slot);
                    }
                    continue;
                }
                return Some((level, slot, self.slot_start(level, slot)));
            }
        }
        None
    }

    /// Move every timer of (level, slot) down, relative to the new `elapsed` (its start).
    fn cascade(&mut self, level: usize, slot: usize, list: u32) {
        if let Some(o) = self.occupied.get_mut(level) {
            *o &= !(1u64 << slot);
        }
        while let Some(idx) = self.first(list) {
            self.unlink(idx);
            if !self.take_ghost(idx) {
                self.insert(idx);
            }
        }
    }

    /// Move the due timers of the current tick's slot to READY; recompute the slot's minimum.
    fn scan_current(&mut self, slot: usize, list: u32, now_us: u64) {
        let mut min = u64::MAX;
        let mut cur = self.node(list).next;
        while cur != list && cur != NIL {
            let n = self.node(cur);
            if self.take_ghost(cur) {
                self.unlink(cur);
            } else if n.deadline / self.granularity > self.elapsed {
                // Set later since it was linked here: to the list of its new deadline, so
                // that this slot's minimum stays the earliest deadline of the wheel.
                self.unlink(cur);
                self.insert(cur);
            } else if n.deadline <= now_us {
                self.ready_min = if self.list_is_empty(READY) {
                    n.deadline
                } else {
                    self.ready_min.min(n.deadline)
                };
                self.unlink(cur);
                self.link_back(READY, cur);
            } else {
                min = min.min(n.deadline);
            }
            cur = n.next;
        }
        if let Some(m) = self.min0.get_mut(slot) {
            *m = min;
        }
    }

    /// Unlinks `idx` and returns it as expired if it is armed and due at `now_us`; a ghost is
    /// dropped and a timer set later since it was linked goes to its list (`None` for both).
    fn fire_if_due(&mut self, idx: u32, now_us: u64) -> Option<(u32, TimerKind)> {
        self.unlink(idx);
        if self.take_ghost(idx) {
            return None;
        }
        let deadline = self.node(idx).deadline;
        if deadline > now_us {
            self.insert(idx);
            return None;
        }
        self.len = self.len.saturating_sub(1);
        Self::key_kind(idx)
    }

    /// Test support: every armed timer is in a list consistent with `elapsed`.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut count = 0;
        for level in 0..LEVELS {
            for slot in 0..SLOTS {
                let list = Self::list(level, slot);
                let mut cur = self.node(list).next;
                while cur != list {
                    let n = self.node(cur);
                    // Ghosts (cancelled, still linked) are not counted in `len`.
                    count += usize::from(!self.is_ghost(cur));
                    let deadline = n.deadline;
                    let tick = (deadline / self.granularity).max(self.elapsed);
                    if level == 0 {
                        assert!(slot >= self.pos(0), "level-0 slot behind elapsed");
                        assert!(deadline >= self.min0[slot], "min0 not a lower bound");
                    } else {
                        assert!(
                            slot > self.pos(level),
                            "slot {slot} of level {level} behind"
                        );
                        assert!(tick >= self.slot_start(level, slot));
                    }
                    cur = n.next;
                }
            }
        }
        let mut cur = self.node(READY).next;
        while cur != READY {
            count += usize::from(!self.is_ghost(cur));
            cur = self.node(cur).next;
        }
        assert_eq!(count, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use proptest::prelude::*;

    fn ms(x: u64) -> Instant {
        Instant::from_millis(x)
    }

    fn drain(w: &mut TimerWheel, now: Instant) -> Vec<(u32, TimerKind)> {
        let mut v = Vec::new();
        let more = w.expire(now, usize::MAX, |k, t| v.push((k, t)));
        assert!(!more);
        v.sort();
        v
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = TimerWheel::new(Duration::from_millis(1), 4);
        w.set(3, TimerKind::Rto, Instant::from_micros(10_500))
            .unwrap();
        assert_eq!(
            w.next_deadline().map(|d| d <= Instant::from_micros(10_500)),
            Some(true)
        );
        assert!(drain(&mut w, Instant::from_micros(10_000)).is_empty());
        assert!(drain(&mut w, Instant::from_micros(10_499)).is_empty());
        assert_eq!(
            drain(&mut w, Instant::from_micros(10_500)),
            vec![(3, TimerKind::Rto)]
        );
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    /// Lazy cancel and lazy later re-arm: a ghost never fires, a revived ghost fires at its
    /// new deadline only, and a timer pushed later fires then, not at its first deadline.
    #[test]
    fn ghosts_and_later_rearm_fire_exactly() {
        let mut w = TimerWheel::new(Duration::from_micros(1), 4);
        w.set(0, TimerKind::Rto, ms(5)).unwrap();
        w.set(1, TimerKind::Rto, ms(5)).unwrap();
        w.set(2, TimerKind::DelayedAck, ms(5)).unwrap();
        // 0: cancelled (ghost). 1: cancelled, then revived later. 2: pushed later.
        w.cancel(0, TimerKind::Rto);
        w.cancel(1, TimerKind::Rto);
        w.set(1, TimerKind::Rto, ms(9)).unwrap();
        w.set(2, TimerKind::DelayedAck, ms(7)).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.deadline(0, TimerKind::Rto), None);
        assert_eq!(w.deadline(1, TimerKind::Rto), Some(ms(9)));
        w.check_invariants();
        assert!(drain(&mut w, ms(6)).is_empty());
        assert_eq!(drain(&mut w, ms(7)), vec![(2, TimerKind::DelayedAck)]);
        assert!(drain(&mut w, ms(8)).is_empty());
        assert_eq!(drain(&mut w, ms(9)), vec![(1, TimerKind::Rto)]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        w.check_invariants();
        // Earlier re-arm of a ghost relinks it.
        w.set(3, TimerKind::Rto, ms(50)).unwrap();
        w.cancel(3, TimerKind::Rto);
        w.set(3, TimerKind::Rto, ms(20)).unwrap();
        assert!(w.next_deadline().unwrap() <= ms(20));
        assert_eq!(drain(&mut w, ms(20)), vec![(3, TimerKind::Rto)]);
        assert!(drain(&mut w, ms(60)).is_empty());
    }

    #[test]
    fn rearm_replaces_and_cancel_removes() {
        let mut w = TimerWheel::new(Duration::from_millis(1), 0);
        w.set(1, TimerKind::DelayedAck, ms(40)).unwrap();
        w.set(1, TimerKind::DelayedAck, ms(200)).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(1, TimerKind::DelayedAck), Some(ms(200)));
        assert!(drain(&mut w, ms(100)).is_empty());
        w.set(2, TimerKind::Persist, ms(150)).unwrap();
        w.cancel(2, TimerKind::Persist);
        w.cancel(2, TimerKind::Persist); // twice is harmless
        w.cancel(999, TimerKind::Arp); // never armed, beyond the table
        assert!(drain(&mut w, ms(199)).is_empty());
        assert_eq!(drain(&mut w, ms(250)), vec![(1, TimerKind::DelayedAck)]);
        // Spurious and late calls are harmless.
        assert!(drain(&mut w, ms(250)).is_empty());
        assert!(drain(&mut w, ms(10_000)).is_empty());
    }

    #[test]
    fn two_hour_keepalive_and_far_future() {
        let mut w = TimerWheel::new(Duration::from_millis(1), 1);
        let two_h = Instant::ZERO + Duration::from_secs(7200);
        w.set(0, TimerKind::Keepalive, two_h).unwrap();
        w.set(0, TimerKind::TimeWait, Instant::from_micros(u64::MAX))
            .unwrap();
        w.set(0, TimerKind::Rto, ms(1)).unwrap();
        // Follow next_deadline like an event loop would.
        let mut now = Instant::ZERO;
        let mut fired = Vec::new();
        let mut wakeups = 0;
        while let Some(d) = w.next_deadline() {
            now = now.max(d);
            wakeups += 1;
            assert!(wakeups < 100, "no progress");
            while let Some((k, t)) = w.poll_expired(now) {
                fired.push((now, k, t));
            }
            w.check_invariants();
        }
        assert_eq!(
            fired,
            vec![
                (ms(1), 0, TimerKind::Rto),
                (two_h, 0, TimerKind::Keepalive),
                (Instant::from_micros(u64::MAX), 0, TimerKind::TimeWait),
            ]
        );
    }

    #[test]
    fn past_deadline_fires_next_call() {
        let mut w = TimerWheel::new(Duration::from_millis(10), 0);
        assert!(drain(&mut w, ms(1000)).is_empty());
        w.set(5, TimerKind::Arp, ms(10)).unwrap();
        assert!(w.next_deadline().unwrap() <= ms(1000));
        assert_eq!(drain(&mut w, ms(1000)), vec![(5, TimerKind::Arp)]);
    }

    #[test]
    fn budget_bounds_work() {
        let mut w = TimerWheel::new(Duration::from_millis(1), 100);
        for k in 0..100 {
            w.set(k, TimerKind::Rto, ms(u64::from(k % 7))).unwrap();
        }
        let mut n = 0;
        assert!(w.expire(ms(10), 30, |_, _| n += 1));
        assert_eq!(n, 30);
        assert!(!w.expire(ms(10), 1000, |_, _| n += 1));
        assert_eq!(n, 100);
    }

    #[test]
    fn handler_may_rearm() {
        let mut w = TimerWheel::new(Duration::from_millis(1), 1);
        w.set(0, TimerKind::Rto, ms(5)).unwrap();
        let (k, t) = w.poll_expired(ms(5)).unwrap();
        w.set(k, t, ms(10)).unwrap();
        assert_eq!(w.poll_expired(ms(5)), None);
        assert_eq!(w.poll_expired(ms(10)), Some((0, TimerKind::Rto)));
    }

    #[test]
    fn key_range() {
        let mut w = TimerWheel::new(Duration::from_millis(1), 0);
        assert_eq!(
            w.set(TimerWheel::MAX_KEY + 1, TimerKind::Rto, ms(1)),
            Err(KeyOutOfRange)
        );
        assert_eq!(w.set(u32::MAX, TimerKind::Arp, ms(1)), Err(KeyOutOfRange));
        assert!(TimerWheel::index(TimerWheel::MAX_KEY, TimerKind::Arp).is_some());
        assert_eq!(TimerKind::from_index(TimerKind::COUNT), None);
        for k in TimerKind::ALL {
            assert_eq!(TimerKind::from_index(k.index()), Some(k));
        }
    }

    /// Proptest regression: READY timers must report their own minimum deadline, and
    /// `next_deadline` must take the smaller of READY's and the wheel's.
    #[test]
    fn next_deadline_covers_ready_and_wheel() {
        let mut w = TimerWheel::new(Duration::from_micros(1), 0);
        let max = Instant::from_micros(u64::MAX);
        w.set(12, TimerKind::Rto, max).unwrap();
        w.set(0, TimerKind::Rto, max).unwrap();
        w.set(0, TimerKind::DelayedAck, Instant::from_micros(u64::MAX - 1))
            .unwrap();
        // One fired; the others may wait in READY.
        assert!(w.expire(max, 1, |_, _| {}));
        let earliest = [
            (12, TimerKind::Rto),
            (0, TimerKind::Rto),
            (0, TimerKind::DelayedAck),
        ]
        .iter()
        .filter_map(|&(k, t)| w.deadline(k, t))
        .min()
        .unwrap();
        assert!(w.next_deadline().unwrap() <= earliest);
        w.set(3, TimerKind::Rto, Instant::from_micros(u64::MAX - 5))
            .unwrap();
        assert!(w.next_deadline().unwrap() <= Instant::from_micros(u64::MAX - 5));
        // A timer set in the past after READY was filled goes to the wheel.
        let mut w = TimerWheel::new(Duration::from_micros(1), 0);
        let half = Instant::from_micros(u64::MAX / 2);
        w.set(0, TimerKind::Rto, Instant::ZERO).unwrap();
        w.set(1, TimerKind::Rto, half).unwrap();
        w.set(2, TimerKind::Rto, half).unwrap();
        assert!(w.expire(half, 2, |_, _| {}));
        w.set(0, TimerKind::Rto, Instant::from_micros(u64::MAX / 2 - 1))
            .unwrap();
        assert!(w.next_deadline().unwrap() <= Instant::from_micros(u64::MAX / 2 - 1));
        assert_eq!(drain(&mut w, half).len(), 2);
        w.check_invariants();
    }

    /// A million connections with an RTO and a 2-hour keepalive each, driven by an event
    /// loop (a scale check, not a benchmark: no timing assertions).
    #[test]
    fn million_connections() {
        for gran in [1, 64] {
            million_connections_with(Duration::from_micros(gran));
        }
    }

    fn million_connections_with(gran: Duration) {
        const N: u32 = 1_000_000;
        let mut w = TimerWheel::new(gran, N as usize);
        for k in 0..N {
            let jitter = u64::from(k.wrapping_mul(2_654_435_761) % 200_000);
            w.set(k, TimerKind::Rto, Instant::from_micros(200_000 + jitter))
                .unwrap();
            w.set(
                k,
                TimerKind::Keepalive,
                Instant::from_micros(7_200_000_000 + jitter),
            )
            .unwrap();
        }
        // Half the RTOs are cancelled (ACKs arrived), re-armed later.
        for k in (0..N).step_by(2) {
            w.cancel(k, TimerKind::Rto);
        }
        let mut now = Instant::ZERO;
        let mut fired = 0u64;
        while let Some(d) = w.next_deadline() {
            now = now.max(d);
            while w.expire(now, 4096, |_, _| fired += 1) {}
        }
        assert_eq!(fired, u64::from(N) + u64::from(N) / 2);
        assert!(w.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u32, usize, u64),
        SetPast(u32, usize, u64),
        Cancel(u32, usize),
        Advance(u64, usize),
        JumpToNext,
    }

    fn op() -> impl Strategy<Value = Op> {
        let delay = prop_oneof![
            0u64..100,
            0u64..5_000,
            0u64..1_000_000,
            0u64..10_000_000_000,
            Just(u64::MAX / 2),
        ];
        prop_oneof![
            4 => (0u32..24, 0..TimerKind::COUNT, delay.clone()).prop_map(|(k, t, d)| Op::Set(k, t, d)),
            1 => (0u32..24, 0..TimerKind::COUNT, 0u64..5_000).prop_map(|(k, t, d)| Op::SetPast(k, t, d)),
            2 => (0u32..24, 0..TimerKind::COUNT).prop_map(|(k, t)| Op::Cancel(k, t)),
            3 => (delay, 1usize..50).prop_map(|(d, b)| Op::Advance(d, b)),
            2 => Just(Op::JumpToNext),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Against a BTreeMap model: exactly the due timers fire, each once, never early;
        /// `next_deadline` is never later than the model's earliest deadline.
        #[test]
        fn matches_model(gran in prop_oneof![Just(1u64), Just(1000u64), 1u64..100_000],
                         ops in proptest::collection::vec(op(), 1..200)) {
            let mut w = TimerWheel::new(Duration::from_micros(gran), 8);
            let mut model: BTreeMap<(u32, usize), u64> = BTreeMap::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Set(k, t, d) | Op::SetPast(k, t, d) => {
                        let at = if matches!(op, Op::SetPast(..)) {
                            now.saturating_sub(d)
                        } else {
                            now.saturating_add(d)
                        };
                        let kind = TimerKind::ALL[t];
                        w.set(k, kind, Instant::from_micros(at)).unwrap();
                        model.insert((k, t), at);
                    }
                    Op::Cancel(k, t) => {
                        w.cancel(k, TimerKind::ALL[t]);
                        model.remove(&(k, t));
                    }
                    Op::Advance(_, _) | Op::JumpToNext => {
                        let budget = match op {
                            Op::Advance(d, b) => { now = now.saturating_add(d); b }
                            _ => {
                                if let Some(d) = w.next_deadline() { now = now.max(d.micros()); }
                                usize::MAX
                            }
                        };
                        let mut fired = Vec::new();
                        let more = w.expire(Instant::from_micros(now), budget,
                                            |k, t| fired.push((k, t.index())));
                        for f in &fired {
                            let at = model.remove(f);
                            prop_assert!(at.is_some(), "fired unarmed or twice: {:?}", f);
                            prop_assert!(at.unwrap() <= now, "fired early: {:?}", f);
                        }
                        if !more {
                            let due = model.iter().find(|(_, &at)| at <= now);
                            prop_assert!(due.is_none(), "due timer not fired: {:?}", due);
                        }
                    }
                }
                w.check_invariants();
                prop_assert_eq!(w.len(), model.len());
                let earliest = model.values().min().copied();
                match (w.next_deadline(), earliest) {
                    (None, None) => {}
                    (Some(d), Some(e)) => prop_assert!(d.micros() <= e, "next {} > {}", d.micros(), e),
                    (d, e) => prop_assert!(false, "next_deadline {:?} vs model {:?}", d, e),
                }
                for (&(k, t), &at) in &model {
                    prop_assert_eq!(w.deadline(k, TimerKind::ALL[t]), Some(Instant::from_micros(at)));
                }
            }
        }

        /// An event loop that sleeps until `next_deadline` fires each timer exactly at its
        /// deadline, with a bounded number of early wake-ups.
        #[test]
        fn event_loop_fires_on_time(gran in 1u64..50_000,
                                    deadlines in proptest::collection::vec(0u64..50_000_000_000, 1..64)) {
            let mut w = TimerWheel::new(Duration::from_micros(gran), 64);
            for (i, &d) in deadlines.iter().enumerate() {
                w.set(i as u32, TimerKind::Rto, Instant::from_micros(d)).unwrap();
            }
            let mut now = 0u64;
            let mut wakeups = 0usize;
            let mut fired = 0usize;
            while let Some(d) = w.next_deadline() {
                now = now.max(d.micros());
                wakeups += 1;
                prop_assert!(wakeups <= deadlines.len() * (LEVELS + 2));
                while let Some((k, _)) = w.poll_expired(Instant::from_micros(now)) {
                    prop_assert_eq!(deadlines[k as usize], now, "timer {} fired late/early", k);
                    fired += 1;
                }
            }
            prop_assert_eq!(fired, deadlines.len());
        }
    }
}
