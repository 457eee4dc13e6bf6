//! `select`: mTCP's `ps_select()` — one thread waits on many queues of many ports.
//!
//! [`PortSet::select`] takes a list of [`Interest`]s (port, queue, RX and/or TX) and a
//! timeout in microseconds. It returns at once when an RX queue of interest has frames or a
//! TX queue of interest has room; otherwise it spins for the configured busy-poll budget,
//! then sleeps in `ppoll()` on the queues' descriptors plus the set's [`Doorbell`] until a
//! queue becomes ready, the timeout passes, or another thread rings the doorbell.
//!
//! Readiness is level-triggered, like `poll()`: a TX queue with room is reported every call,
//! so ask for TX only while something waits for room. A wake-up that leaves nothing of
//! interest ready (say, the peer released RX slots we had no frames for) is absorbed inside
//! `select` and never reported, so a returned outcome with no doorbell and no timeout always
//! has at least one ready queue.
//!
//! Sleeping uses the backends' arm → re-check → poll protocol: each backend sets a "waiting"
//! flag the other side checks after publishing, so the wake-up cannot be lost and a busy link
//! makes no system call.

use crate::bell::Bell;
use crate::error::{Error, Result};
use crate::Port;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to wait for on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Index of the port in the set (as returned by [`PortSet::add`]).
    pub port: usize,
    /// Queue pair within the port.
    pub queue: usize,
    /// Wake when received frames are available.
    pub rx: bool,
    /// Wake when the TX ring has room.
    pub tx: bool,
}

/// One ready queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Port index.
    pub port: usize,
    /// Queue pair within the port.
    pub queue: usize,
    /// Frames are available (`rx_available() > 0`, already synced).
    pub rx: bool,
    /// The TX ring has room (`tx_space() > 0`, already synced).
    pub tx: bool,
}

/// Summary of one `select` call; the ready queues are in [`PortSet::ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectOutcome {
    /// Number of entries in [`PortSet::ready`].
    pub ready: usize,
    /// The doorbell was rung since the previous call.
    pub doorbell: bool,
    /// The timeout passed with nothing ready.
    pub timed_out: bool,
}

#[derive(Debug)]
struct BellState {
    bell: Bell,
    rung: AtomicBool,
    sleeping: AtomicBool,
}

/// A handle other threads use to wake a thread in [`PortSet::select`]. Cheap to clone.
///
/// Ringing costs one atomic store when the selecting thread is awake, and one `write()` on an
/// eventfd when it sleeps.
#[derive(Debug, Clone)]
pub struct Doorbell(Arc<BellState>);

impl Doorbell {
    /// Makes the current or next `select` return with `doorbell == true`.
    pub fn ring(&self) {
        let s = &self.0;
        s.rung.store(true, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) {
            s.bell.ring();
        }
    }
}

/// The ports one thread drives, with a doorbell and scratch space for `select`.
pub struct PortSet {
    ports: Vec<Port>,
    bell: Doorbell,
    busy_poll: Duration,
    pollfds: Vec<libc::pollfd>,
    ready: Vec<Ready>,
    sleeps: u64,
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortSet")
            .field("ports", &self.ports)
            .field("busy_poll", &self.busy_poll)
            .finish()
    }
}

impl PortSet {
    /// An empty set with its own doorbell and no busy polling.
    pub fn new() -> Result<PortSet> {
        Ok(PortSet {
            ports: Vec::new(),
            bell: Doorbell(Arc::new(BellState {
                bell: Bell::eventfd()?,
                rung: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
            })),
            busy_poll: Duration::ZERO,
            pollfds: Vec::new(),
            ready: Vec::new(),
            sleeps: 0,
        })
    }

    /// Adds a port; returns its index for [`Interest::port`].
    pub fn add(&mut self, port: Port) -> usize {
        self.ports.push(port);
        self.ports.len() - 1
    }

    /// Port `i`.
    pub fn port(&mut self, i: usize) -> &mut Port {
        &mut self.ports[i]
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// True when no port was added.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// A doorbell other threads can ring to wake `select`.
    pub fn doorbell(&self) -> Doorbell {
        self.bell.clone()
    }

    /// How long `select` re-checks queues before going to sleep (default zero).
    pub fn set_busy_poll(&mut self, budget: Duration) {
        self.busy_poll = budget;
    }

    /// How many times `select` has slept in the kernel (`ppoll`) so far: with frames or
    /// requests counted elsewhere, the wake-ups per unit of work.
    pub fn sleeps(&self) -> u64 {
        self.sleeps
    }

    /// Queues found ready by the last `select`.
    pub fn ready(&self) -> &[Ready] {
        &self.ready
    }

    /// Checks every interest once (syncing the rings involved); fills `self.ready`.
    fn check(&mut self, interests: &[Interest]) -> Result<usize> {
        self.ready.clear();
        for it in interests {
            let port = self.ports.get_mut(it.port).ok_or_else(|| {
                Error::InvalidConfig(format!("select: no port {} in the set", it.port))
            })?;
            if it.queue >= port.num_queues() {
                return Err(Error::InvalidConfig(format!(
                    "select: port {} has no queue {}",
                    it.port, it.queue
                )));
            }
            let q = port.queue(it.queue);
            let rx = it.rx && q.rxsync()? > 0;
            let tx = it.tx && q.txsync()? > 0;
            if rx || tx {
                self.ready.push(Ready {
                    port: it.port,
                    queue: it.queue,
                    rx,
                    tx,
                });
            }
        }
        Ok(self.ready.len())
    }

    fn disarm_all(&mut self, interests: &[Interest]) {
        for it in interests {
            self.ports[it.port].queue(it.queue).disarm();
        }
    }

    /// Waits until a queue of interest is ready, the doorbell rings, or `timeout_us`
    /// microseconds pass (`None`: no timeout; `Some(0)`: just check).
    ///
    /// The queues of interest are synced as a side effect, so a ready RX queue's frames are
    /// already visible through `rx_frame`.
    pub fn select(
        &mut self,
        interests: &[Interest],
        timeout_us: Option<u64>,
    ) -> Result<SelectOutcome> {
        let start = Instant::now();
        let deadline = timeout_us.map(|us| start + Duration::from_micros(us));
        let spin_until = start + self.busy_poll;
        let mut spins = 0u32;
        loop {
            let n = self.check(interests)?;
            let rung = &self.bell.0.rung;
            let doorbell = rung.load(Ordering::Relaxed) && rung.swap(false, Ordering::SeqCst);
            if n > 0 || doorbell {
                return Ok(SelectOutcome {
                    ready: n,
                    doorbell,
                    timed_out: false,
                });
            }
            // While spinning, read the clock only every 16th round: it costs more than a check.
            spins = spins.wrapping_add(1);
            if spins % 16 != 1 {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(SelectOutcome {
                    ready: 0,
                    doorbell: false,
                    timed_out: true,
                });
            }
            if now < spin_until {
                // Let another thread on this CPU run now and then (a stack thread and an
                // application thread sharing a CPU would otherwise each spin out the other's
                // time slice); a yield with nobody waiting returns at once.
                if spins % 256 == 1 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            self.sleep(interests, deadline)?;
            spins = 0;
        }
    }

    /// Arms every queue and the doorbell, re-checks, and sleeps in `ppoll` if still idle.
    fn sleep(&mut self, interests: &[Interest], deadline: Option<Instant>) -> Result<()> {
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.bell.0.bell.fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.bell.0.sleeping.store(true, Ordering::SeqCst);
        let mut armed = Ok(());
        let mut unpollable = false;
        for it in interests {
            match self.ports[it.port].queue(it.queue).arm(it.rx, it.tx) {
                Ok(Some(w)) => match self.pollfds.iter_mut().find(|p| p.fd == w.fd) {
                    Some(p) => p.events |= w.events,
                    None => self.pollfds.push(libc::pollfd {
                        fd: w.fd,
                        events: w.events,
                        revents: 0,
                    }),
                },
                // A queue that cannot be slept on bounds the sleep instead.
                Ok(None) => unpollable = true,
                Err(e) => {
                    armed = Err(e);
                    break;
                }
            }
        }
        // Re-check after arming: whatever became ready before the flags were visible to the
        // other side is seen here. Errors still go through the clean-up below.
        let idle = match armed {
            Ok(()) => match self.check(interests) {
                Ok(n) => n == 0 && !self.bell.0.rung.load(Ordering::SeqCst),
                Err(e) => {
                    armed = Err(e);
                    false
                }
            },
            Err(_) => false,
        };
        if idle {
            let mut remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if unpollable {
                remaining = Some(remaining.map_or(Duration::from_millis(1), |r| {
                    r.min(Duration::from_millis(1))
                }));
            }
            let ts = remaining.map(|r| libc::timespec {
                tv_sec: r.as_secs() as libc::time_t,
                tv_nsec: r.subsec_nanos() as libc::c_long,
            });
            let tsp = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            self.sleeps += 1;
            // SAFETY: `pollfds` is a valid array of its length; `tsp` is null or points to a
            // live timespec; no signal mask is changed.
            let r = unsafe {
                libc::ppoll(
                    self.pollfds.as_mut_ptr(),
                    self.pollfds.len() as libc::nfds_t,
                    tsp,
                    std::ptr::null(),
                )
            };
            if r == -1 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                armed = Err(Error::last_os("ppoll in select"));
            }
        }
        self.bell.0.sleeping.store(false, Ordering::SeqCst);
        if self.pollfds[0].revents != 0 || !idle {
            self.bell.0.bell.drain();
        }
        self.disarm_all(interests);
        armed
    }
}
