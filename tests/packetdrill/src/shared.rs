//! The [`Stack`] shared by packetdrill's two threads (the main thread and the one that runs
//! blocking system calls), and how calls block on a virtual clock.
//!
//! - A call that would block waits on a condition variable and tries again whenever the
//!   stack changes (a packet came in, time moved, another call acted).
//! - Before moving time on (`usleep`, `gettimeofday`, `netdev_receive`), the clock's owner
//!   first lets every blocked call look at the stack as it is (`Shared::settle`), so that a
//!   call made ready by an event returns at that event's time, not after the clock moved on.
//!   A blocked call's return time is also what the next `gettimeofday` of its thread reports
//!   (packetdrill reads the clock right after a blocking call returns, while the other
//!   thread may already have moved it).
//! - A call blocked while nobody else touches the stack for [`IDLE_ADVANCE`] of real time
//!   moves the clock to the next timer itself, as time would pass for a kernel (a blocking
//!   call packetdrill runs on its main thread has nobody else to wait for).

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration as RealDuration;

use crate::flags::Settings;
use crate::stack::{Attempt, Stack, Sys};

/// How long a blocked call waits for a change before it looks again (real time).
const WAIT_STEP: RealDuration = RealDuration::from_millis(20);
/// Real time without any change after which a blocked call moves the clock itself.
pub const IDLE_ADVANCE: RealDuration = RealDuration::from_millis(500);
/// How long the clock's owner waits, at most, for blocked calls to look at a change.
const SETTLE_LIMIT: RealDuration = RealDuration::from_millis(500);

thread_local! {
    /// When this thread's last blocked call returned, until `gettimeofday` reports it.
    static RETURNED_AT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// What `userdata` points to.
#[derive(Debug)]
pub struct Shared {
    stack: Mutex<State>,
    changed: Condvar,
}

/// The stack and the blocked calls: waiter id → the generation it last saw.
#[derive(Debug)]
pub struct State {
    /// The stack.
    pub stack: Stack,
    waiters: std::collections::BTreeMap<u64, u64>,
    next_waiter: u64,
}

impl Shared {
    /// A stack with `settings`.
    pub fn new(settings: Settings) -> Shared {
        Shared {
            stack: Mutex::new(State {
                stack: Stack::new(settings),
                waiters: std::collections::BTreeMap::new(),
                next_waiter: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// The state; a lock poisoned by a panic (caught at the FFI edge) is taken as it is.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.stack.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a call that does not block, and wakes blocked calls if it changed the stack.
    pub fn call<T>(&self, f: impl FnOnce(&mut Stack) -> Sys<T>) -> Sys<T> {
        let mut g = self.lock();
        let before = g.stack.generation;
        let r = f(&mut g.stack);
        if g.stack.generation != before {
            self.changed.notify_all();
        }
        r
    }

    /// Runs a call that may block: tries `attempt` until it is done (see the module doc).
    pub fn block_on<T>(&self, mut attempt: impl FnMut(&mut Stack) -> Attempt<T>) -> Sys<T> {
        let mut g = self.lock();
        let mut me = None;
        let mut idle = RealDuration::ZERO;
        let result = loop {
            let deadline = match attempt(&mut g.stack) {
                Attempt::Done(r) => break r,
                Attempt::Pending(deadline) => deadline,
            };
            let id = match me {
                Some(id) => id,
                None => {
                    g.next_waiter += 1;
                    let id = g.next_waiter;
                    me = Some(id);
                    id
                }
            };
            let seen = g.stack.generation;
            g.waiters.insert(id, seen);
            self.changed.notify_all();
            let (guard, timeout) = self
                .changed
                .wait_timeout(g, WAIT_STEP)
                .unwrap_or_else(|p| p.into_inner());
            g = guard;
            if g.stack.generation != seen || !timeout.timed_out() {
                idle = RealDuration::ZERO;
                continue;
            }
            idle += WAIT_STEP;
            if idle >= IDLE_ADVANCE {
                idle = RealDuration::ZERO;
                let next = match (g.stack.next_timer(), deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(t) = next {
                    g.stack.advance_to(t);
                }
            }
        };
        if let Some(id) = me {
            g.waiters.remove(&id);
            RETURNED_AT.with(|r| r.set(Some(g.stack.now)));
        }
        self.changed.notify_all();
        result
    }

    /// Waits (bounded) until every blocked call has seen the stack's latest change.
    fn settle<'a>(&'a self, mut g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let start = std::time::Instant::now();
        loop {
            let generation = g.stack.generation;
            if g.waiters.values().all(|&seen| seen >= generation) {
                return g;
            }
            let Some(left) = SETTLE_LIMIT.checked_sub(start.elapsed()) else {
                return g;
            };
            self.changed.notify_all();
            g = self
                .changed
                .wait_timeout(g, left.min(WAIT_STEP))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Moves the clock by `us` (`usleep`).
    pub fn sleep(&self, us: u64) {
        let g = self.lock();
        let mut g = self.settle(g);
        let t = g.stack.now.saturating_add(us);
        g.stack.advance_to(t);
        self.changed.notify_all();
    }

    /// The time `gettimeofday` reports, µs: the clock moves 1 µs per call, so that a caller
    /// spinning on the clock (packetdrill does, for the last 20 µs before an event) gets there.
    pub fn clock(&self) -> u64 {
        if let Some(t) = RETURNED_AT.with(Cell::take) {
            return t;
        }
        let g = self.lock();
        let mut g = self.settle(g);
        let t = g.stack.now + 1;
        g.stack.advance_to(t);
        self.changed.notify_all();
        t
    }

    /// The next packet the stack sends, with its send time: moves the clock through the
    /// stack's timers until one leaves, up to `horizon_us` ahead (`None` then).
    pub fn next_packet(&self, horizon_us: u64) -> Option<(u64, Vec<u8>)> {
        let g = self.lock();
        let mut g = self.settle(g);
        let limit = g.stack.now.saturating_add(horizon_us);
        let packet = loop {
            if let Some(p) = g.stack.take_packet() {
                break Some(p);
            }
            match g.stack.next_timer() {
                Some(t) if t <= limit => {
                    g.stack.advance_to(t);
                    self.changed.notify_all();
                    g = self.settle(g);
                }
                _ => break None,
            }
        };
        self.changed.notify_all();
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::Arc;

    #[test]
    fn the_clock_moves_a_microsecond_per_reading_and_sleep_adds() {
        let s = Shared::new(Settings::default());
        let t0 = s.clock();
        assert_eq!(s.clock(), t0 + 1);
        s.sleep(1000);
        assert_eq!(s.clock(), t0 + 1002);
    }

    #[test]
    fn a_blocked_accept_returns_when_another_thread_acts() {
        let s = Arc::new(Shared::new(Settings::default()));
        let fd = s
            .call(|st| {
                let fd = st.socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
                st.bind(fd, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))?;
                st.listen(fd, 1)?;
                Ok(fd)
            })
            .unwrap();
        let s2 = Arc::clone(&s);
        let t = std::thread::spawn(move || s2.block_on(|st| st.accept(fd)));
        std::thread::sleep(RealDuration::from_millis(50));
        // Closing the listener makes the blocked accept fail (EBADF), as it would on Linux
        // only with shutdown(); here it shows the waiter sees other threads' changes.
        s.call(|st| st.close(fd)).unwrap();
        assert_eq!(t.join().unwrap().map(|(fd, _)| fd), Err(libc::EBADF));
    }

    #[test]
    fn next_packet_runs_timers_until_something_leaves() {
        let s = Shared::new(Settings::default());
        let remote = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 8080);
        let fd = s
            .call(|st| st.socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0))
            .unwrap();
        let e = s.block_on(|st| st.connect(fd, remote, true));
        assert_eq!(e, Err(libc::EINPROGRESS));
        let (t0, _) = s.next_packet(1_000_000).expect("SYN");
        let (t1, _) = s.next_packet(10_000_000).expect("SYN again after the RTO");
        assert_eq!(t1 - t0, 1_000_000);
        assert_eq!(s.next_packet(0), None);
    }
}
