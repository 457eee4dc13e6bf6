//! Connections in TIME-WAIT that the application has let go of, kept in compact form.
//!
//! RFC 9293 §3.6 keeps a closed connection in TIME-WAIT for 2·MSL so that late segments of
//! it are answered and do not reach a new incarnation. A server or load generator of short
//! connections therefore holds many more TIME-WAIT connections than live ones (at a
//! million transactions per second, a TIME-WAIT of only 1 ms is a thousand of them). Like
//! Linux's `inet_timewait_sock`, the endpoint keeps such a connection here, in about a
//! fifth of the memory of a connection slot and without timer-wheel entries, once the
//! application has closed it and its last ACK is out; its slot is free for the next
//! connection at once. A segment for it rebuilds the full TCB for the time of processing
//! (see the endpoint), so TIME-WAIT behaves exactly as for a full connection.
//!
//! ```text
//!  records: [rec 0][rec 1][rec 2] …   slab, freed records reused (generation per record)
//!  fifo:    (idx, gen, expires) … oldest first = soonest first
//! ```
//! Every record enters with the endpoint's TIME-WAIT duration from the moment it started,
//! and the endpoint only adds a record whose deadline is not earlier than the newest one's,
//! so the FIFO is sorted by deadline and expiry is a pop from its front. A record whose
//! deadline moves (a retransmitted FIN restarts TIME-WAIT) gets a new FIFO entry; the old
//! one is recognised as stale by its deadline and skipped.
//!
//! Bounds: the endpoint counts records among its `max_connections` and never adds one
//! beyond it. Stale FIFO entries leave it when their time comes; should they pile up (a
//! peer restarting TIME-WAIT again and again), the FIFO is compacted once it holds more
//! than twice as many entries as there are records, so it never exceeds that bound by more
//! than a constant.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::conn::TimeWaitState;
use crate::flow::FourTuple;
use crate::time::Instant;

#[derive(Debug)]
struct Record {
    generation: u32,
    /// The record's deadline; `None` while the record is free.
    expires: Option<Instant>,
    state: Option<TimeWaitState>,
}

/// The compact TIME-WAIT connections of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct TimeWaitTable {
    records: Vec<Record>,
    free: Vec<u32>,
    fifo: VecDeque<(u32, u32, Instant)>,
    len: usize,
}

impl TimeWaitTable {
    /// Heap bytes held.
    pub fn allocated(&self) -> usize {
        self.records.capacity() * core::mem::size_of::<Record>()
            + self.free.capacity() * 4
            + self.fifo.capacity() * core::mem::size_of::<(u32, u32, Instant)>()
    }

    /// The latest deadline of any record added so far (the FIFO's back), if any: a new
    /// record must not expire before it.
    pub fn newest_deadline(&self) -> Option<Instant> {
        self.fifo.back().map(|&(_, _, t)| t)
    }

    /// When the next record may expire (a stale entry may make it early, never late).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.fifo.front().map(|&(_, _, t)| t)
    }

    /// Adds `state` until `expires` (not before [`newest_deadline`](Self::newest_deadline));
    /// returns its index.
    pub fn insert(&mut self, state: TimeWaitState, expires: Instant) -> u32 {
        debug_assert!(self.newest_deadline().is_none_or(|t| t <= expires));
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.records.push(Record {
                    generation: 0,
                    expires: None,
                    state: None,
                });
                (self.records.len() - 1) as u32
            }
        };
        let r = &mut self.records[idx as usize];
        r.expires = Some(expires);
        r.state = Some(state);
        let generation = r.generation;
        self.push(idx, generation, expires);
        self.len += 1;
        idx
    }

    /// Appends a FIFO entry, first dropping the stale ones if they have piled up.
    fn push(&mut self, idx: u32, generation: u32, expires: Instant) {
        if self.fifo.len() >= 2 * self.len + 16 {
            let records = &self.records;
            self.fifo.retain(|&(i, g, at)| {
                records
                    .get(i as usize)
                    .is_some_and(|r| r.generation == g && r.expires == Some(at))
            });
        }
        self.fifo.push_back((idx, generation, expires));
    }

    /// The record at `idx`, with its deadline.
    pub fn get(&self, idx: u32) -> Option<(&TimeWaitState, Instant)> {
        let r = self.records.get(idx as usize)?;
        Some((r.state.as_ref()?, r.expires?))
    }

    /// Replaces the state of the record at `idx` and moves its deadline to `expires`, which
    /// is either its current one or not earlier than [`newest_deadline`](Self::newest_deadline).
    pub fn update(&mut self, idx: u32, state: TimeWaitState, expires: Instant) {
        let newest = self.newest_deadline();
        let Some(r) = self.records.get_mut(idx as usize) else {
            return;
        };
        if r.state.is_none() {
            return;
        }
        r.state = Some(state);
        if r.expires != Some(expires) {
            debug_assert!(newest.is_none_or(|t| t <= expires));
            r.expires = Some(expires);
            let generation = r.generation;
            self.push(idx, generation, expires);
        }
    }

    /// Removes the record at `idx`; returns its state.
    pub fn remove(&mut self, idx: u32) -> Option<TimeWaitState> {
        let r = self.records.get_mut(idx as usize)?;
        let state = r.state.take()?;
        r.expires = None;
        r.generation = r.generation.wrapping_add(1);
        self.free.push(idx);
        self.len -= 1;
        Some(state)
    }

    /// Removes and returns the next record whose deadline is at or before `now`: its index
    /// and 4-tuple. Stale FIFO entries met on the way are dropped.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(u32, FourTuple)> {
        while let Some(&(idx, generation, at)) = self.fifo.front() {
            if at > now {
                return None;
            }
            self.fifo.pop_front();
            let current = self
                .records
                .get(idx as usize)
                .is_some_and(|r| r.generation == generation && r.expires == Some(at));
            if current {
                let state = self.remove(idx)?;
                return Some((idx, state.tuple));
            }
        }
        None
    }

    /// The record `k` entries from the FIFO's front: its address (for a cache hint) and its
    /// 4-tuple (reading it touches the record). Stale entries are not skipped: a hint for
    /// one only costs a wasted prefetch.
    pub fn ahead(&self, k: usize) -> Option<(*const u8, Option<FourTuple>)> {
        let &(idx, _, _) = self.fifo.get(k)?;
        let r = self.records.get(idx as usize)?;
        Some((
            (r as *const Record).cast::<u8>(),
            r.state.as_ref().map(|s| s.tuple),
        ))
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = &TimeWaitState> + '_ {
        self.records.iter().filter_map(|r| r.state.as_ref())
    }
}
