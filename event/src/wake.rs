//! A sleep/notify pair without lost wake-ups, for the thread blocked in `epoll_wait`.
//!
//! [`signal`] makes one [`Waiter`] (the sleeping side, e.g. an application thread in
//! `epoll_wait`) and any number of [`Notifier`] clones (e.g. the stack thread after
//! [`Epoll::notify`](crate::Epoll::notify) queued something). Notifications do not count:
//! any number of them before a wait make that one wait return at once, as an eventfd read
//! would.
//!
//! ## Protocol
//! One atomic state, plus a mutex and condition variable used only while the waiter sleeps:
//!
//! ```text
//!   EMPTY (0) --notify--> NOTIFIED (1) --wait/try_take--> EMPTY
//!   EMPTY --wait, under the mutex--> SLEEPING (2) --notify: lock, signal--> NOTIFIED
//!   SLEEPING --deadline passes--> EMPTY
//! ```
//!
//! - `notify`: `if state.swap(NOTIFIED) == SLEEPING { lock; notify_one }`. When the waiter is
//!   not asleep this is one atomic swap: no lock, no system call.
//! - `wait`: CAS `NOTIFIED → EMPTY` and return (fast path). Otherwise lock the mutex and CAS
//!   `EMPTY → SLEEPING`; if that fails a notification just arrived (only notifiers change the
//!   state while the waiter is in `wait`, and they only store NOTIFIED), so consume it. Then
//!   wait on the condition variable until a CAS `NOTIFIED → EMPTY` succeeds or the deadline
//!   passes; at the deadline CAS `SLEEPING → EMPTY`, and if that fails a notification came in
//!   at the last moment: consume it and report it.
//!
//! Why no wake-up is lost: a notifier that sees SLEEPING was preceded by the waiter's CAS to
//! SLEEPING, which the waiter made while holding the mutex, and the waiter holds the mutex
//! until the condition variable's wait releases it atomically with going to sleep. The
//! notifier takes that mutex before `notify_one`, so it cannot signal in the window between
//! the CAS and the sleep: its signal reaches a sleeping waiter (or one that already woke up and
//! will see NOTIFIED). A notifier that does not see SLEEPING leaves NOTIFIED, which the
//! waiter's next CAS (to SLEEPING, or at a wake-up, or at the deadline) finds. A signal that
//! arrives after the waiter returned only causes a spurious wake-up of a later wait, which
//! finds the state still SLEEPING and sleeps on.
//!
//! The protocol needs a single waiter; [`Waiter`] is therefore `Send` but neither `Sync` nor
//! `Clone`.
//!
//! ```compile_fail
//! fn sync<T: Sync>(_: &T) {}
//! let (_notifier, waiter) = event::wake::signal();
//! sync(&waiter);
//! ```
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

/// No notification pending, waiter not asleep.
const EMPTY: u32 = 0;
/// A notification is pending.
const NOTIFIED: u32 = 1;
/// The waiter is asleep (or about to be, holding the mutex).
const SLEEPING: u32 = 2;

struct Shared {
    state: AtomicU32,
    /// Guards nothing but the window between "state is SLEEPING" and "waiter is asleep".
    lock: Mutex<()>,
    cond: Condvar,
}

/// Creates a connected pair: one [`Notifier`] (clone it for more) and its [`Waiter`].
pub fn signal() -> (Notifier, Waiter) {
    let shared = Arc::new(Shared {
        state: AtomicU32::new(EMPTY),
        lock: Mutex::new(()),
        cond: Condvar::new(),
    });
    (Notifier(Arc::clone(&shared)), Waiter(shared, PhantomData))
}

/// The waking side of a [`signal`] pair; `Send + Sync`, cloned freely.
#[derive(Clone)]
pub struct Notifier(Arc<Shared>);

impl Notifier {
    /// Wakes the waiter, or makes its next wait return at once.
    ///
    /// When the waiter is not asleep this is one atomic swap: no lock, no system call.
    pub fn notify(&self) {
        let shared = &*self.0;
        if shared.state.swap(NOTIFIED, Ordering::AcqRel) == SLEEPING {
            // Taking the lock waits until the waiter is inside the condition variable's wait
            // (it holds the lock from its CAS to SLEEPING until then).
            let _guard = shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
            shared.cond.notify_one();
        }
    }

    /// Whether the waiter of this pair is asleep now (for statistics and tests; the
    /// [`Waiter`] itself cannot be observed from another thread).
    pub fn is_waiter_sleeping(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == SLEEPING
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

/// The sleeping side of a [`signal`] pair; `Send`, not `Sync` (one thread waits at a time).
pub struct Waiter(Arc<Shared>, PhantomData<Cell<()>>);

impl Waiter {
    /// Consumes a pending notification without sleeping: true if there was one.
    pub fn try_take(&self) -> bool {
        self.0
            .state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Sleeps until notified or `deadline` (`None`: no deadline) passes; true if a
    /// notification was consumed. Spurious OS wake-ups are absorbed.
    ///
    /// A deadline already past still consumes a pending notification (and returns true).
    pub fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.try_take() {
            return true;
        }
        let shared = &*self.0;
        let mut guard = shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if shared
            .state
            .compare_exchange(EMPTY, SLEEPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // The state is NOTIFIED: a notifier came in since try_take.
            shared.state.store(EMPTY, Ordering::Release);
            return true;
        }
        loop {
            guard = match deadline {
                None => shared
                    .cond
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    shared
                        .cond
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            if self.try_take() {
                return true;
            }
            // Still SLEEPING: a spurious wake-up, a stale signal, or the timeout (checked
            // at the top of the loop).
        }
        drop(guard);
        if shared
            .state
            .compare_exchange(SLEEPING, EMPTY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            false
        } else {
            // A notify swapped SLEEPING for NOTIFIED at the last moment; its signal (if it
            // has not happened yet) only causes a spurious wake-up of a later wait.
            shared.state.store(EMPTY, Ordering::Release);
            true
        }
    }

    /// Whether the waiter is asleep now (for statistics/tests).
    ///
    /// Called on the waiting thread this is false; see [`Notifier::is_waiter_sleeping`] to
    /// observe a waiter from another thread.
    pub fn is_sleeping(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == SLEEPING
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("sleeping", &self.is_sleeping())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::Duration;

    /// Long enough that only a lost wake-up reaches it; a bug fails instead of hanging.
    const PATIENCE: Duration = Duration::from_secs(5);

    fn soon() -> Option<Instant> {
        Some(Instant::now() + PATIENCE)
    }

    #[test]
    fn notify_before_wait_returns_at_once() {
        let (notifier, waiter) = signal();
        notifier.notify();
        // A deadline in the past: returning true proves it did not need to sleep.
        assert!(waiter.wait_until(Some(Instant::now())));
        assert!(!waiter.try_take());
    }

    #[test]
    fn wait_without_notify_returns_false_after_deadline() {
        let (_notifier, waiter) = signal();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(20);
        assert!(!waiter.wait_until(Some(deadline)));
        assert!(Instant::now() >= deadline);
        assert!(!waiter.is_sleeping());
    }

    #[test]
    fn notify_while_not_sleeping_does_not_block_and_coalesces() {
        let (notifier, waiter) = signal();
        for _ in 0..1000 {
            notifier.clone().notify();
        }
        assert!(!waiter.is_sleeping());
        assert!(waiter.try_take());
        assert!(!waiter.try_take());
        assert!(!waiter.wait_until(Some(Instant::now())));
    }

    #[test]
    fn notify_wakes_a_sleeping_waiter() {
        let (notifier, waiter) = signal();
        let sleeper = thread::spawn(move || waiter.wait_until(None));
        let give_up = Instant::now() + PATIENCE;
        while !notifier.is_waiter_sleeping() {
            assert!(Instant::now() < give_up, "waiter never went to sleep");
            thread::yield_now();
        }
        notifier.notify();
        assert!(sleeper.join().unwrap());
        assert!(!notifier.is_waiter_sleeping());
    }

    #[test]
    fn ping_pong_loses_no_wake_up() {
        const ROUNDS: usize = 10_000;
        let (to_pong, pong_waits) = signal();
        let (to_ping, ping_waits) = signal();
        let pong = thread::spawn(move || {
            for round in 0..ROUNDS {
                assert!(pong_waits.wait_until(soon()), "pong lost round {round}");
                to_ping.notify();
            }
        });
        for round in 0..ROUNDS {
            to_pong.notify();
            assert!(ping_waits.wait_until(soon()), "ping lost round {round}");
        }
        pong.join().unwrap();
    }
}
