//! # event — epoll-like readiness for mtcp-rs sockets
//!
//! Place in the layers: `mtcp-api` feeds socket state changes from `tcp-core` into this crate
//! and applications read them back through `epoll_wait`. It depends on no other crate of the
//! workspace and performs no I/O. The core is `no_std` + `alloc`; the default feature `std`
//! adds the `wake` module, the sleep/notify pair a blocked `epoll_wait` uses.
//!
//! ## What it holds
//! [`Epoll`], one epoll instance with the semantics Linux documents in epoll(7): interest sets
//! with [`Events`] masks (IN/OUT/PRI/ERR/HUP/RDHUP/…, Linux's values, which mTCP's
//! `mtcp_epoll.h` shares), level-triggered, edge-triggered ([`Events::ET`]) and one-shot
//! ([`Events::ONESHOT`]) registrations, and a ready list. Registrations live in a table indexed
//! by key (a socket descriptor); the ready list is threaded through that table, so it holds a
//! registration at most once and never outgrows the registration count:
//!
//! ```text
//!   registration table (index = key)               ready list (FIFO, intrusive)
//!   key  interest      data  armed  prev  next
//!    0   -                                         head -> 3 -> 1 -> 6 <- tail
//!    1   IN|ET          11   yes     3     6
//!    2   OUT            12   yes     -     -       registered, not queued
//!    3   IN|RDHUP       13   yes    NIL    1
//!    4   -                                         free slot
//!    5   IN|ONESHOT     15   no      -     -       fired: disabled until modify
//!    6   IN|OUT         16   yes     1    NIL
//! ```
//!
//! Flow-level aggregation: a socket's wake-ups ([`Epoll::notify`]) only queue its registration;
//! any number of them between two waits leave one entry on the ready list, and
//! [`Epoll::wait`] reports what the socket's readiness is *at wait time* (as Linux re-polls the
//! file), so one event covers every change since the last report.
//!
//! ## Calling order
//! 1. The stack calls [`Epoll::notify`] on every wake-up of a registered socket (new data,
//!    room freed, FIN, reset, …), with the flags of that change.
//! 2. An application's `epoll_wait` calls [`Epoll::wait`] with a closure that answers a
//!    socket's current readiness (what its `poll` would say); when nothing is reported it
//!    sleeps (with `wake`) until the stack rings it after a `notify`.
//! 3. `epoll_ctl` maps to [`Epoll::add`], [`Epoll::modify`] and [`Epoll::delete`]; add and
//!    modify take the socket's readiness at that moment, as Linux polls the file then.
//!
//! ## Invariants
//! - Every operation except `wait` is O(1) (add amortised over the table's growth) and no
//!   operation allocates except `add` with a key above every key used so far.
//! - The ready list holds registered keys only, each at most once; a disabled one-shot
//!   registration is never on it.
//! - `wait` examines at most the entries that were queued when it started.
//! - No argument value makes anything panic: bad keys are errors (`notify` ignores them).
//!
//! What it leaves to others: sockets, threads, locking around an `Epoll` and the mapping to
//! `errno` (`mtcp-api`), the protocol and what makes a socket readable or writable
//! (`tcp-core`). It keeps no socket state of its own: readiness always comes from the caller.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(all(test, not(feature = "std")))]
extern crate std;

use alloc::vec::Vec;
use core::fmt;

#[cfg(feature = "std")]
pub mod wake;

bitflags::bitflags! {
    /// Readiness and registration flags, with Linux's values (which mTCP's `mtcp_epoll.h`
    /// shares).
    ///
    /// The readiness bits are what a socket's `poll` reports and what [`Epoll::wait`] reports;
    /// [`Events::ET`] and [`Events::ONESHOT`] only modify a registration and are never
    /// reported. [`Events::ERR`] and [`Events::HUP`] are reported whether asked for or not.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Events: u32 {
        /// `EPOLLIN` (0x001): readable (data, a pending connection, or end of stream).
        const IN = 0x001;
        /// `EPOLLPRI` (0x002): urgent data.
        const PRI = 0x002;
        /// `EPOLLOUT` (0x004): writable (room in the send buffer, or connected).
        const OUT = 0x004;
        /// `EPOLLERR` (0x008): an error is pending; always reported.
        const ERR = 0x008;
        /// `EPOLLHUP` (0x010): hung up (both directions closed); always reported.
        const HUP = 0x010;
        /// `EPOLLRDNORM` (0x040): normal data readable.
        const RDNORM = 0x040;
        /// `EPOLLRDBAND` (0x080): priority band data readable.
        const RDBAND = 0x080;
        /// `EPOLLWRNORM` (0x100): normal data writable.
        const WRNORM = 0x100;
        /// `EPOLLWRBAND` (0x200): priority band data writable.
        const WRBAND = 0x200;
        /// `EPOLLMSG` (0x400): unused by sockets, kept for the value.
        const MSG = 0x400;
        /// `EPOLLRDHUP` (0x2000): the peer closed its side (FIN received).
        const RDHUP = 0x2000;
        /// `EPOLLONESHOT` (0x4000_0000): report once, then disable until [`Epoll::modify`].
        const ONESHOT = 1 << 30;
        /// `EPOLLET` (0x8000_0000): edge-triggered; report once per wake-up.
        const ET = 1 << 31;
    }
}

impl Events {
    /// What a registration with interest `self` reports: its readiness bits plus ERR and HUP.
    fn reportable(self) -> Events {
        // epoll_ctl(2), EPOLLERR and EPOLLHUP: "epoll_wait(2) will always report for [wait
        // for] this event; it is not necessary to set it in events when calling epoll_ctl()".
        self.difference(Events::ET | Events::ONESHOT) | Events::ERR | Events::HUP
    }
}

/// One reported event, as `struct epoll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EpollEvent {
    /// The readiness reported (never [`Events::ET`] or [`Events::ONESHOT`]).
    pub events: Events,
    /// The registration's user data (`epoll_data`), as given to add or modify.
    pub data: u64,
}

/// Why an [`Epoll::add`], [`Epoll::modify`] or [`Epoll::delete`] failed; each variant names
/// the `errno` that `mtcp-api` maps it to.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlError {
    /// `add` of a key already registered (`EEXIST`).
    Exists,
    /// `modify` or `delete` of a key not registered (`ENOENT`).
    NotFound,
    /// `add` beyond the instance's registration limit (`ENOSPC`, as Linux's
    /// `max_user_watches`); also when the table cannot grow for lack of memory.
    Full,
    /// A key not below the instance's key limit (`EINVAL`).
    KeyOutOfRange,
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CtlError::Exists => "key already registered (EEXIST)",
            CtlError::NotFound => "key not registered (ENOENT)",
            CtlError::Full => "registration limit reached (ENOSPC)",
            CtlError::KeyOutOfRange => "key not below the key limit (EINVAL)",
        })
    }
}

impl core::error::Error for CtlError {}

/// End of the ready list. Never a key: keys are below `key_limit`, which is at most this.
const NIL: u32 = u32::MAX;

/// A registration's place on the ready list: its neighbours' keys, [`NIL`] at the ends.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

/// One slot of the registration table.
#[derive(Debug, Clone, Copy)]
struct Registration {
    /// As given to add or modify, with ET/ONESHOT bits.
    interest: Events,
    data: u64,
    /// False for a ONESHOT registration that has been reported; only modify re-arms it.
    armed: bool,
    /// `Some` while on the ready list.
    link: Option<Link>,
}

/// The table index of `key`. `usize` has at least 32 bits on every target this stack runs on.
fn index(key: u32) -> usize {
    key as usize
}

/// An epoll instance: registrations keyed by a small integer (a socket descriptor) and a
/// ready list.
///
/// Semantics are epoll(7)'s: a registration goes on the ready list when its socket wakes up
/// with a change it is interested in ([`notify`](Epoll::notify)), or when add or modify find
/// the socket ready; [`wait`](Epoll::wait) re-polls each queued socket and reports its
/// current readiness. Level-triggered registrations stay queued while reported; edge-triggered
/// ones wait for the next wake-up; one-shot ones are disabled after one report until modified.
///
/// Like Linux's, the ready list can hold entries whose socket is no longer ready by the time
/// of the wait (the application drained it, or the change was transient):
/// [`has_ready`](Epoll::has_ready) is then true and a wait reports nothing for them. Each
/// queued entry costs at most one such spurious check, after which it leaves the list.
///
/// # Example
/// ```
/// use event::{Epoll, EpollEvent, Events};
///
/// let mut ep = Epoll::new(1024, 1024);
/// // Socket 5, level-triggered interest in reading, nothing to read yet.
/// ep.add(5, Events::IN, 500, Events::OUT)?;
/// assert!(!ep.has_ready());
///
/// // Data arrives twice before the application waits: one entry, one report.
/// ep.notify(5, Events::IN);
/// ep.notify(5, Events::IN);
/// let mut out = [EpollEvent::default(); 8];
/// let n = ep.wait(&mut out, |_socket| Events::IN | Events::OUT);
/// assert_eq!(out[..n], [EpollEvent { events: Events::IN, data: 500 }]);
///
/// // Level-triggered: still readable, so reported again.
/// let n = ep.wait(&mut out, |_socket| Events::IN | Events::OUT);
/// assert_eq!(n, 1);
///
/// // The application drained the socket: the entry leaves the ready list unreported.
/// let n = ep.wait(&mut out, |_socket| Events::OUT);
/// assert_eq!(n, 0);
/// assert!(!ep.has_ready());
/// # Ok::<(), event::CtlError>(())
/// ```
pub struct Epoll {
    /// Indexed by key; grows to the largest key added, never beyond `key_limit` entries.
    slots: Vec<Option<Registration>>,
    registered: usize,
    max_registrations: usize,
    key_limit: u32,
    head: u32,
    tail: u32,
    ready_len: usize,
}

impl fmt::Debug for Epoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoll")
            .field("registered", &self.registered)
            .field("ready", &self.ready_len)
            .field("max_registrations", &self.max_registrations)
            .field("key_limit", &self.key_limit)
            .finish_non_exhaustive()
    }
}

impl Epoll {
    /// An empty instance. `max_registrations`: most registrations at once (beyond:
    /// [`CtlError::Full`]). `key_limit`: keys must be below it (else
    /// [`CtlError::KeyOutOfRange`]).
    ///
    /// Storage grows lazily with the largest key added, never beyond `key_limit` entries (a
    /// few tens of bytes each): choose `key_limit` as the size of the socket table the keys
    /// index.
    pub fn new(max_registrations: usize, key_limit: u32) -> Epoll {
        Epoll {
            slots: Vec::new(),
            registered: 0,
            max_registrations,
            key_limit,
            head: NIL,
            tail: NIL,
            ready_len: 0,
        }
    }

    /// `EPOLL_CTL_ADD`: registers `key` with interest `events` and user data `data`.
    ///
    /// `level` is the socket's readiness now (what its poll would say); if it matches the
    /// interest (or has ERR/HUP) the registration is queued at once, as Linux polls the file
    /// on ADD.
    ///
    /// Errors, checked in this order: [`CtlError::KeyOutOfRange`], [`CtlError::Exists`],
    /// [`CtlError::Full`].
    pub fn add(
        &mut self,
        key: u32,
        events: Events,
        data: u64,
        level: Events,
    ) -> Result<(), CtlError> {
        self.check_key(key)?;
        if self.contains(key) {
            return Err(CtlError::Exists);
        }
        if self.registered >= self.max_registrations {
            return Err(CtlError::Full);
        }
        self.grow_to(key)?;
        let slot = self.slots.get_mut(index(key)).ok_or(CtlError::Full)?;
        *slot = Some(Registration {
            interest: events,
            data,
            armed: true,
            link: None,
        });
        self.registered += 1;
        // epoll_ctl ADD: ep_insert polls the file and queues the item if it is ready.
        if level.intersects(events.reportable()) {
            self.push_back(key);
        }
        Ok(())
    }

    /// `EPOLL_CTL_MOD`: replaces the interest and data of `key`, and re-arms a one-shot
    /// registration that fired.
    ///
    /// Like ADD it re-polls: if `level` matches the new interest the registration is queued,
    /// for level- and edge-triggered registrations alike (Linux's `ep_modify` does this, so a
    /// MOD is also how to ask for a fresh edge). A registration already on the ready list
    /// keeps its place there (the next wait re-polls it anyway).
    ///
    /// Errors: [`CtlError::KeyOutOfRange`], [`CtlError::NotFound`].
    pub fn modify(
        &mut self,
        key: u32,
        events: Events,
        data: u64,
        level: Events,
    ) -> Result<(), CtlError> {
        self.check_key(key)?;
        let reg = self.reg_mut(key).ok_or(CtlError::NotFound)?;
        reg.interest = events;
        reg.data = data;
        reg.armed = true;
        // epoll_ctl MOD: ep_modify polls the file and queues the item if ready and not queued.
        if reg.link.is_none() && level.intersects(events.reportable()) {
            self.push_back(key);
        }
        Ok(())
    }

    /// `EPOLL_CTL_DEL`: unregisters `key`, taking it off the ready list in O(1).
    ///
    /// Errors: [`CtlError::KeyOutOfRange`], [`CtlError::NotFound`].
    pub fn delete(&mut self, key: u32) -> Result<(), CtlError> {
        self.check_key(key)?;
        if !self.contains(key) {
            return Err(CtlError::NotFound);
        }
        self.unlink(key);
        if let Some(slot) = self.slots.get_mut(index(key)) {
            *slot = None;
        }
        self.registered -= 1;
        Ok(())
    }

    /// A state change of socket `key` happened, with these flags: the socket's wake-up, e.g.
    /// IN on new data (even if data was already there), OUT when room frees, IN|RDHUP on the
    /// peer's FIN, ERR|HUP on a reset.
    ///
    /// Queues the registration if `flags` intersect its interest (ERR and HUP always count),
    /// unless it is already queued: a registration is on the ready list at most once. This is
    /// the flow-level aggregation: any number of changes of one socket between two waits
    /// become one report. Unregistered or out-of-range keys, disabled one-shot registrations
    /// and empty `flags` are ignored.
    pub fn notify(&mut self, key: u32, flags: Events) {
        let Some(reg) = self.reg(key) else { return };
        // ep_poll_callback: a disabled one-shot item (no event bits left) ignores every
        // wake-up; otherwise a wake-up whose flags miss the interest is ignored.
        if reg.armed && reg.link.is_none() && flags.intersects(reg.interest.reportable()) {
            self.push_back(key);
        }
    }

    /// `epoll_wait`'s collection step: reports ready registrations into `out` and returns how
    /// many it wrote (at most `out.len()`; entries beyond are left as they were).
    ///
    /// It takes registrations off the ready list in FIFO order, asks `poll(key)` for each
    /// one's current readiness, and reports `poll(key) & (interest | ERR | HUP)` (the interest
    /// without ET/ONESHOT bits) with the registration's data when that is non-empty. Then:
    /// - a level-triggered registration that was reported goes back on the ready list, at
    ///   its tail (it is not examined again in this call);
    /// - an edge-triggered one leaves the list until the next [`notify`](Epoll::notify);
    /// - a one-shot one is disabled after its report until [`modify`](Epoll::modify): no
    ///   notify queues it, not even ERR/HUP;
    /// - a registration whose poll gives nothing reportable leaves the list unreported.
    ///
    /// Registrations not examined because `out` filled up stay at the front of the list, in
    /// their order. Bounded: it examines (and calls `poll` for) at most the entries that were
    /// on the list when called, each once.
    pub fn wait(&mut self, out: &mut [EpollEvent], mut poll: impl FnMut(u32) -> Events) -> usize {
        let mut written = 0;
        // ep_send_events: only the entries queued now; level-triggered ones re-queued below
        // go to the tail, behind all of them, so they are not examined twice.
        let mut budget = self.ready_len;
        while budget > 0 {
            let Some(slot) = out.get_mut(written) else {
                break;
            };
            let Some(key) = self.pop_front() else { break };
            budget -= 1;
            let Some(reg) = self.reg_mut(key) else {
                continue;
            };
            let interest = reg.interest;
            let events = poll(key) & interest.reportable();
            if events.is_empty() {
                // Not ready any more: off the list until the next wake-up.
                continue;
            }
            *slot = EpollEvent {
                events,
                data: reg.data,
            };
            written += 1;
            if interest.contains(Events::ONESHOT) {
                // epoll_ctl(2), EPOLLONESHOT: "after an event notified for the file descriptor
                // by epoll_wait(2), the file descriptor is disabled in the interest list and no
                // other events will be reported by the epoll interface".
                reg.armed = false;
            } else if !interest.contains(Events::ET) {
                // Level-triggered: stays ready until a poll says otherwise.
                self.push_back(key);
            }
        }
        written
    }

    /// Whether the ready list is non-empty, i.e. whether a wait is worth doing.
    ///
    /// A wait may still report nothing: a queued entry whose socket is no longer ready (or a
    /// wake-up the interest takes but the socket's poll does not show) is found out, and
    /// dropped, by the next wait that examines it; each queued entry costs at most one such
    /// spurious check.
    pub fn has_ready(&self) -> bool {
        self.ready_len != 0
    }

    /// The number of registrations.
    pub fn len(&self) -> usize {
        self.registered
    }

    /// Whether there are no registrations.
    pub fn is_empty(&self) -> bool {
        self.registered == 0
    }

    /// Whether `key` is registered.
    pub fn contains(&self, key: u32) -> bool {
        self.reg(key).is_some()
    }

    /// The interest (as given, with ET/ONESHOT bits) and data of `key`.
    ///
    /// A one-shot registration that fired still shows the interest it was given.
    pub fn registration(&self, key: u32) -> Option<(Events, u64)> {
        self.reg(key).map(|reg| (reg.interest, reg.data))
    }

    fn check_key(&self, key: u32) -> Result<(), CtlError> {
        if key < self.key_limit {
            Ok(())
        } else {
            Err(CtlError::KeyOutOfRange)
        }
    }

    fn reg(&self, key: u32) -> Option<&Registration> {
        self.slots.get(index(key))?.as_ref()
    }

    fn reg_mut(&mut self, key: u32) -> Option<&mut Registration> {
        self.slots.get_mut(index(key))?.as_mut()
    }

    fn link_mut(&mut self, key: u32) -> Option<&mut Link> {
        self.reg_mut(key)?.link.as_mut()
    }

    /// Makes the table long enough for `key` (`key < key_limit`), doubling its capacity up
    /// to `key_limit` entries so that growth costs O(1) per slot.
    fn grow_to(&mut self, key: u32) -> Result<(), CtlError> {
        let len = self.slots.len();
        let needed = index(key) + 1;
        if needed <= len {
            return Ok(());
        }
        let target = needed.max(len.saturating_mul(2)).min(index(self.key_limit));
        if target > self.slots.capacity() {
            self.slots
                .try_reserve_exact(target - len)
                .map_err(|_| CtlError::Full)?;
        }
        self.slots.resize(needed, None);
        Ok(())
    }

    /// Appends registered, unqueued `key` to the ready list.
    fn push_back(&mut self, key: u32) {
        let tail = self.tail;
        let Some(reg) = self.reg_mut(key) else { return };
        debug_assert!(reg.link.is_none(), "key {key} queued twice");
        if reg.link.is_some() {
            return;
        }
        reg.link = Some(Link {
            prev: tail,
            next: NIL,
        });
        if tail == NIL {
            self.head = key;
        } else if let Some(link) = self.link_mut(tail) {
            link.next = key;
        }
        self.tail = key;
        self.ready_len += 1;
    }

    /// Takes `key` off the ready list if it is on it.
    fn unlink(&mut self, key: u32) {
        let Some(Link { prev, next }) = self.reg_mut(key).and_then(|reg| reg.link.take()) else {
            return;
        };
        if prev == NIL {
            self.head = next;
        } else if let Some(link) = self.link_mut(prev) {
            link.next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else if let Some(link) = self.link_mut(next) {
            link.prev = prev;
        }
        self.ready_len -= 1;
    }

    /// Takes the head of the ready list off it.
    fn pop_front(&mut self) -> Option<u32> {
        let key = self.head;
        if key == NIL {
            return None;
        }
        self.unlink(key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const LT_IN: Events = Events::IN;
    const NONE: Events = Events::empty();

    /// Runs a wait with room for `room` events against fixed readiness per key.
    fn wait(ep: &mut Epoll, room: usize, level: impl Fn(u32) -> Events) -> Vec<EpollEvent> {
        let mut out = vec![EpollEvent::default(); room];
        let n = ep.wait(&mut out, level);
        out.truncate(n);
        out
    }

    fn ev(events: Events, data: u64) -> EpollEvent {
        EpollEvent { events, data }
    }

    #[test]
    fn level_triggered_reports_again_while_ready() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, LT_IN, 10, NONE).unwrap();
        ep.notify(1, Events::IN);
        for _ in 0..3 {
            assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
            assert!(ep.has_ready());
        }
    }

    #[test]
    fn level_triggered_stops_when_no_longer_ready() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, LT_IN, 10, Events::IN).unwrap();
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
        // Drained: the re-queued entry is checked once, then leaves.
        assert!(ep.has_ready());
        assert_eq!(wait(&mut ep, 4, |_| NONE), []);
        assert!(!ep.has_ready());
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), []);
    }

    #[test]
    fn edge_triggered_reports_once_per_notify() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::IN | Events::ET, 10, NONE).unwrap();
        ep.notify(1, Events::IN);
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
        assert!(!ep.has_ready());
        // Still readable, but no new wake-up: nothing.
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), []);
    }

    #[test]
    fn edge_triggered_reports_again_on_new_data_while_still_readable() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::IN | Events::ET, 10, Events::IN).unwrap();
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
        // More data on a socket the application has not drained. epoll(7): "even with
        // edge-triggered epoll, multiple events can be generated upon receipt of multiple
        // chunks of data" (each arrival is a wake-up, not only empty -> non-empty).
        ep.notify(1, Events::IN);
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
    }

    #[test]
    fn oneshot_reports_once_until_modify() {
        let mut ep = Epoll::new(8, 8);
        let oneshot = Events::IN | Events::ONESHOT;
        ep.add(1, oneshot, 10, Events::IN).unwrap();
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
        ep.notify(1, Events::IN);
        assert!(!ep.has_ready());
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), []);
        assert_eq!(ep.registration(1), Some((oneshot, 10)));
        ep.modify(1, oneshot, 11, Events::IN).unwrap();
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 11)]);
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), []);
    }

    #[test]
    fn oneshot_not_disabled_when_nothing_reported() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::IN | Events::ONESHOT, 10, NONE).unwrap();
        ep.notify(1, Events::IN);
        assert_eq!(wait(&mut ep, 4, |_| NONE), []);
        ep.notify(1, Events::IN);
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
    }

    #[test]
    fn oneshot_disabled_ignores_err_and_hup() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::IN | Events::ONESHOT, 10, Events::IN)
            .unwrap();
        assert_eq!(wait(&mut ep, 4, |_| Events::IN).len(), 1);
        ep.notify(1, Events::ERR | Events::HUP);
        assert!(!ep.has_ready());
        assert_eq!(wait(&mut ep, 4, |_| Events::ERR | Events::HUP), []);
    }

    #[test]
    fn err_and_hup_reported_without_interest() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::OUT, 10, NONE).unwrap();
        ep.add(2, NONE, 20, NONE).unwrap();
        ep.notify(1, Events::ERR | Events::HUP);
        ep.notify(2, Events::HUP);
        let reset = Events::IN | Events::ERR | Events::HUP;
        assert_eq!(
            wait(&mut ep, 4, |_| reset),
            [
                ev(Events::ERR | Events::HUP, 10),
                ev(Events::ERR | Events::HUP, 20)
            ]
        );
    }

    #[test]
    fn add_polls_current_readiness() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::IN | Events::ET, 10, Events::IN | Events::OUT)
            .unwrap();
        ep.add(2, Events::IN, 20, Events::OUT).unwrap();
        ep.add(3, Events::OUT, 30, Events::ERR).unwrap();
        // Socket 2 is writable only, which its interest ignores: not queued, never polled.
        let level = |key| match key {
            1 => Events::IN | Events::OUT,
            2 => unreachable!("socket 2 polled"),
            _ => Events::OUT | Events::ERR,
        };
        assert_eq!(
            wait(&mut ep, 4, level),
            [ev(Events::IN, 10), ev(Events::OUT | Events::ERR, 30)]
        );
    }

    #[test]
    fn modify_requeues_when_ready() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::IN | Events::ET, 10, Events::OUT).unwrap();
        assert!(!ep.has_ready());
        // New interest matches what the socket already is: queued, ET or not.
        ep.modify(1, Events::OUT | Events::ET, 11, Events::OUT)
            .unwrap();
        assert_eq!(wait(&mut ep, 4, |_| Events::OUT), [ev(Events::OUT, 11)]);
        // Same interest again: re-polled and queued again (Linux's ep_modify does so).
        ep.modify(1, Events::OUT | Events::ET, 12, Events::OUT)
            .unwrap();
        assert_eq!(wait(&mut ep, 4, |_| Events::OUT), [ev(Events::OUT, 12)]);
        // Not ready for the new interest: nothing queued.
        ep.modify(1, Events::IN, 13, Events::OUT).unwrap();
        assert!(!ep.has_ready());
    }

    #[test]
    fn modify_keeps_place_of_queued_entry() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, LT_IN, 10, Events::IN).unwrap();
        ep.add(2, LT_IN, 20, Events::IN).unwrap();
        ep.modify(1, LT_IN, 11, Events::IN).unwrap();
        assert_eq!(
            wait(&mut ep, 4, |_| Events::IN),
            [ev(Events::IN, 11), ev(Events::IN, 20)]
        );
    }

    #[test]
    fn delete_removes_from_ready_list() {
        let mut ep = Epoll::new(8, 8);
        for key in 1..=3 {
            ep.add(key, LT_IN, u64::from(key), Events::IN).unwrap();
        }
        ep.delete(2).unwrap();
        assert_eq!(
            wait(&mut ep, 4, |_| Events::IN),
            [ev(Events::IN, 1), ev(Events::IN, 3)]
        );
        ep.delete(1).unwrap();
        ep.delete(3).unwrap();
        assert!(!ep.has_ready());
        assert!(ep.is_empty());
        assert!(!ep.contains(1));
        assert_eq!(ep.registration(1), None);
        // The same key registers again from scratch.
        ep.add(2, LT_IN, 22, NONE).unwrap();
        assert_eq!(ep.registration(2), Some((LT_IN, 22)));
        assert!(!ep.has_ready());
    }

    #[test]
    fn changes_between_waits_aggregate_into_one_event() {
        let mut ep = Epoll::new(8, 8);
        ep.add(
            1,
            Events::IN | Events::OUT | Events::RDHUP | Events::ET,
            10,
            NONE,
        )
        .unwrap();
        ep.notify(1, Events::OUT);
        ep.notify(1, Events::IN);
        ep.notify(1, Events::IN);
        ep.notify(1, Events::IN | Events::RDHUP);
        let now = Events::IN | Events::OUT | Events::RDHUP;
        assert_eq!(wait(&mut ep, 4, |_| now), [ev(now, 10)]);
        assert!(!ep.has_ready());
    }

    #[test]
    fn unprocessed_entries_stay_in_order_when_out_is_small() {
        let mut ep = Epoll::new(8, 8);
        for key in 1..=4 {
            ep.add(key, Events::IN | Events::ET, u64::from(key), Events::IN)
                .unwrap();
        }
        assert_eq!(
            wait(&mut ep, 2, |_| Events::IN),
            [ev(Events::IN, 1), ev(Events::IN, 2)]
        );
        assert_eq!(wait(&mut ep, 1, |_| Events::IN), [ev(Events::IN, 3)]);
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 4)]);
    }

    #[test]
    fn lt_requeued_entries_not_examined_twice_in_one_wait() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, LT_IN, 10, Events::IN).unwrap();
        ep.add(2, LT_IN, 20, Events::IN).unwrap();
        let mut polls = Vec::new();
        let mut out = [EpollEvent::default(); 8];
        let n = ep.wait(&mut out, |key| {
            polls.push(key);
            Events::IN
        });
        assert_eq!(n, 2);
        assert_eq!(polls, [1, 2]);
        // Behind entries that were not examined: with room for one, 2 goes first next time.
        assert_eq!(wait(&mut ep, 1, |_| Events::IN), [ev(Events::IN, 10)]);
        assert_eq!(
            wait(&mut ep, 4, |_| Events::IN),
            [ev(Events::IN, 20), ev(Events::IN, 10)]
        );
    }

    #[test]
    fn interest_filters_notify() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::OUT, 10, NONE).unwrap();
        ep.notify(1, Events::IN);
        ep.notify(1, Events::IN | Events::RDHUP);
        ep.notify(1, NONE);
        assert!(!ep.has_ready());
        // And the report is filtered too: readable is not reported to an OUT-only interest.
        ep.notify(1, Events::OUT);
        assert_eq!(
            wait(&mut ep, 4, |_| Events::IN | Events::OUT),
            [ev(Events::OUT, 10)]
        );
    }

    #[test]
    fn notify_ignores_unregistered_and_out_of_range_keys() {
        let mut ep = Epoll::new(8, 8);
        ep.notify(3, Events::all());
        ep.notify(8, Events::all());
        ep.notify(u32::MAX, Events::all());
        assert!(!ep.has_ready());
        assert_eq!(wait(&mut ep, 4, |_| Events::all()), []);
    }

    #[test]
    fn bounds_full_and_key_out_of_range() {
        let mut ep = Epoll::new(2, 4);
        assert_eq!(ep.add(4, LT_IN, 0, NONE), Err(CtlError::KeyOutOfRange));
        assert_eq!(
            ep.add(u32::MAX, LT_IN, 0, NONE),
            Err(CtlError::KeyOutOfRange)
        );
        assert_eq!(ep.modify(4, LT_IN, 0, NONE), Err(CtlError::KeyOutOfRange));
        assert_eq!(ep.delete(u32::MAX), Err(CtlError::KeyOutOfRange));
        assert_eq!(ep.modify(3, LT_IN, 0, NONE), Err(CtlError::NotFound));
        assert_eq!(ep.delete(3), Err(CtlError::NotFound));
        ep.add(3, LT_IN, 0, NONE).unwrap();
        assert_eq!(ep.add(3, LT_IN, 0, NONE), Err(CtlError::Exists));
        ep.add(0, LT_IN, 0, NONE).unwrap();
        assert_eq!(ep.add(1, LT_IN, 0, NONE), Err(CtlError::Full));
        assert_eq!(ep.len(), 2);
        assert!(ep.slots.len() <= 4 && ep.slots.capacity() <= 4);
        ep.delete(0).unwrap();
        ep.add(1, LT_IN, 0, NONE).unwrap();
        assert!(!ep.contains(u32::MAX));
        assert_eq!(ep.registration(u32::MAX), None);
    }

    #[test]
    fn storage_grows_only_with_keys_used() {
        let mut ep = Epoll::new(usize::MAX, u32::MAX);
        assert_eq!(ep.slots.capacity(), 0);
        ep.add(9, LT_IN, 0, NONE).unwrap();
        assert_eq!(ep.slots.len(), 10);
        ep.add(2, LT_IN, 0, NONE).unwrap();
        assert_eq!(ep.slots.len(), 10);
    }

    #[test]
    fn empty_out_buffer_reports_nothing_and_keeps_list() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::IN | Events::ET, 10, Events::IN).unwrap();
        let mut polled = false;
        assert_eq!(
            ep.wait(&mut [], |_| {
                polled = true;
                Events::IN
            }),
            0
        );
        assert!(!polled);
        assert!(ep.has_ready());
        assert_eq!(wait(&mut ep, 4, |_| Events::IN), [ev(Events::IN, 10)]);
    }

    #[test]
    fn et_and_oneshot_bits_never_reported() {
        let mut ep = Epoll::new(8, 8);
        ep.add(1, Events::all(), 10, NONE).unwrap();
        ep.notify(1, Events::IN);
        assert_eq!(
            wait(&mut ep, 4, |_| Events::all()),
            [ev(Events::all() - Events::ET - Events::ONESHOT, 10)]
        );
    }

    #[test]
    fn events_have_linux_values() {
        assert_eq!(Events::IN.bits(), 0x001);
        assert_eq!(Events::RDHUP.bits(), 0x2000);
        assert_eq!(Events::ONESHOT.bits(), 0x4000_0000);
        assert_eq!(Events::ET.bits(), 0x8000_0000);
    }

    #[test]
    fn ctl_error_display_texts() {
        assert_eq!(
            CtlError::Exists.to_string(),
            "key already registered (EEXIST)"
        );
        assert_eq!(
            CtlError::NotFound.to_string(),
            "key not registered (ENOENT)"
        );
        assert_eq!(
            CtlError::Full.to_string(),
            "registration limit reached (ENOSPC)"
        );
        assert_eq!(
            CtlError::KeyOutOfRange.to_string(),
            "key not below the key limit (EINVAL)"
        );
    }
}
