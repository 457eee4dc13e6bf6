//! `mtcp-bench pingpong`: 64-byte requests and responses over mtcp-rs and over Linux, the
//! same application on both, side by side in one invocation.
//!
//! ## What runs
//! One process holds both ends. For each core `i` of `--cores C` there is a server thread
//! and a client thread, each with one epoll instance, running the same code (`Server` and
//! `Client`) over a small socket interface (`Net`) with two implementations:
//!
//! - **mtcp-shm** (`MtcpNet`): two `mtcp_api::init` instances in this process, the server
//!   at 10.0.0.2 and the client at 10.0.0.1, `C` cores (stack threads) each, linked by one
//!   named shared-memory port `shm:pingpong-<pid>-<n>/q=C` (`n` counts the runs of the
//!   process, so that no run meets the previous run's link), with static ARP entries both
//!   ways. Queue `i` of the link joins client core `i` to server core `i` only, so each core
//!   pair is a link of its own and no RSS steering is needed. The application threads use
//!   mtcp-api's public calls only (`Context`: sockets and epoll).
//! - **mtcp-shm-rtc**: the same in run-to-completion mode (`Context::run_to_completion`):
//!   each application thread runs its own stack, no stack threads.
//! - **smoltcp-shm** (`smoltcp::SmolNet`, see `smoltcp.rs`): smoltcp 0.14's TCP, run to
//!   completion in each application thread, over a shared-memory link per core.
//! - **linux-loopback** (`LinuxNet`): kernel TCP sockets on 127.0.0.1 through `nix`:
//!   non-blocking sockets and epoll; each server thread has its own listener on one shared
//!   port (`SO_REUSEPORT`; the kernel spreads connections over them).
//! - Root only, on a veth pair between two new network namespaces (server end, client
//!   end): **mtcp-veth** and **mtcp-veth-rtc**, the two mtcp-rs modes with each end's port
//!   `afpacket:<veth>/q=C,ring=v2,slots=4096` (AF_PACKET rings, large enough for a burst of
//!   1 024 connections; fanout steering by the clients' ports on both
//!   sides, so each flow stays on the core owning its port), no kernel address on either
//!   end, and the kernel's receive path cut after the packet taps on both ends (an
//!   nftables netdev ingress drop: the kernel's IPv4 stack, which would look up a route for
//!   each of our frames and drop it, never sees them; netmap detaches a NIC from the kernel
//!   likewise; measured 15-18 -> 12-15 µs CPU per new-conn transaction at 64 connections);
//!   and **linux-veth**, kernel sockets with 10.0.0.2 and 10.0.0.1 on the two ends
//!   (the client threads live in the client's namespace). Every mtcp-rs row is compared
//!   with Linux over the same kind of link.
//!
//! Every listener exists before any client starts (they are created before the threads).
//! Connections are registered edge-triggered for `IN|OUT` (listeners level-triggered for
//! `IN`): one `epoll_ctl` per connection on both stacks, and every event makes the
//! application go as far as it can (read or write until `EAGAIN`). Event tokens carry a
//! generation number, so an event for a slot's previous connection is ignored.
//!
//! ## Workloads (`--mode`)
//! - **new-conn**: a client slot connects, writes a 64-byte request once connected, reads
//!   the 64-byte response, closes *with a reset* and connects again. The server accepts,
//!   reads the request, writes the response and closes at once (FIN after the response), as
//!   mTCP's `epserver` does for a request without keep-alive; it never waits for the
//!   client. The client's close is an abortive close on both stacks, `SO_LINGER` 0 on Linux
//!   (as the calibration in NOTES.md did) and `Context::abort` on mtcp-rs: the reset ends
//!   the server's FIN-WAIT, so neither end enters TIME-WAIT and ports never run out. Latency
//!   is connect to last response byte.
//! - **persistent**: `concurrency` connections are opened once and each runs a ping-pong
//!   (request, response, next request); latency is request write to last response byte.
//! - **setup** (connection setup rate, the paper's Fig. 8): a client slot connects; the
//!   server accepts and resets the connection at once (abortive close); the transaction ends
//!   when the client reads the reset (`ConnectionReset`; an end of stream or a refusal is an
//!   error), and the slot connects again. Four frames per transaction: SYN, SYN-ACK, ACK,
//!   RST. Latency is connect to the reset read.
//! - **bulk**: each connection (run it at concurrency 1) carries one endless one-way stream:
//!   the client writes 64 KiB chunks until the stack takes no more, the server reads 64 KiB
//!   at a time and discards (the bytes are counted, not checked: byte-exact transfers are
//!   the integration tests' job). A "transaction" is one megabyte (10^6 bytes) read by the
//!   server, so `tx_per_s` is MB/s and `cpu_us_per_tx` CPU µs per MB; no latency.
//!   Linux's loopback has a 64 KiB MTU, mtcp-rs's links 1 500 bytes: the bulk rows compare
//!   stacks as they come, not per segment. Linux autotunes its buffers (up to 4 MiB for
//!   sending); mtcp-rs gets 4 MiB send and receive buffers in this mode ([`BULK_BUFFER`]).
//!
//! `gbit_per_s` is the application payload the window delivered (both directions: 128 B per
//! ping-pong transaction, 0 per setup, the bytes read in bulk) per wall second.
//!
//! Both stacks keep their defaults (Nagle and delayed ACKs on: with one message outstanding
//! per direction neither delays anything, as each message's predecessor is acknowledged by
//! the reply; TIME-WAIT 60 s on both, never entered), except that mtcp-rs's connection
//! table is raised to `4 × concurrency` when that is above its default. A request carries a unique token; the server checks the request and answers
//! with the token and another fixed pattern; the client checks every response byte.
//!
//! ## Measurement
//! `--concurrency N` connections are in flight (split over the `C` client threads); threads
//! run until told to stop. After a warm-up (every client thread has completed a transaction
//! and `min(seconds / 5, 0.2 s)` has passed) the main thread takes a window of `--seconds`:
//! transactions completed (counters the clients bump per transaction), wall time, and CPU
//! time of the whole process, `getrusage(RUSAGE_SELF)` user + system, before and after. That
//! counts every thread of both ends, the stack threads included; for Linux the loopback
//! softirq work runs in the sending syscall and is included too (this kernel has no
//! `IRQ_TIME_ACCOUNTING`, so it is charged to the thread). Softirq work deferred to
//! `ksoftirqd` is not in the process: it is measured alongside (its `schedstat`) and a note
//! is printed when it exceeds 2 % of the process's CPU. Likewise the busy time of all CPUs
//! (`/proc/stat`) minus both: a note says when other processes kept more than 5 % of a CPU
//! busy during the windows, as the figures are then disturbed. Clients record per-transaction
//! latencies during the window in a log-linear histogram (1/64 relative resolution).
//!
//! `tx_per_s` = transactions / wall, `cpu_us_per_tx` = CPU / transactions; each figure is
//! the median over `--runs` runs (each figure on its own). Each run sets both ends up from
//! scratch and tears them down (threads joined, sockets and epolls closed, `Mtcp::destroy`),
//! and the runs of the two stacks alternate (mtcp-rs, Linux, mtcp-rs, …), so that the
//! drift of a shared host's speed reaches both alike.
//!
//! Any error (a failed call, a wrong or short response, an unexpected end of stream or
//! reset, a stack thread that failed) fails the run and the command, with the first
//! messages; no figure is reported from a run with errors. Retransmissions, drops and
//! timeouts counted by the mtcp-rs stacks (`StackStats`) are not errors (TCP recovers) but
//! mark the figures, so a note under the table gives them. Errors after the window (resets
//! of connections torn down mid-transaction) are expected and not counted.
//!
//! ## Threads and CPUs
//! With pinning (the default; `--no-pin` leaves placement to the scheduler), with `n` CPUs:
//! - Linux: the server thread of core `i` on CPU `2i mod n`, the client thread on
//!   `2i + 1 mod n`, as in the calibration of NOTES.md (kernel work runs in their calls).
//! - mtcp-rs: side `s` (0 server, 1 client) of core `i` gets the CPU pair `4i + 2s` (its
//!   stack thread) and `4i + 2s + 1` (its application thread), modulo `n`. On a 2-CPU
//!   machine that puts both stack threads on CPU 0 and both application threads on CPU 1.
//!   mTCP's own layout, each application thread on its stack thread's CPU (server on 0,
//!   client on 1), measured about twice the CPU per transaction here at 64 connections:
//!   14–15 µs per new-conn and 6.7–6.8 µs per persistent transaction, against 8.1–8.6 and
//!   3.2–4.0 µs with this layout (medians of 5 runs, two sets). Each message wakes the
//!   other thread of the same CPU, which preempts the sender (0.6 involuntary context
//!   switches per new-conn transaction against 0.2), so batches stay small. Leaving
//!   placement to the scheduler (`--no-pin`) gave 8.2–10.9 and 3.7–3.8 µs.
//!
//! What it does not measure: a NIC, a network between two hosts, loss, or more than one
//! process. Over veth the ports use TPACKET_V2 frame rings (`ring=v2`): with the default
//! TPACKET_V3 blocks, a frame waits until its block fills or the 1 ms retire timer fires.

mod smoltcp;

use crate::core_bench::{check_response, request, response_to, MSG_LEN};
use crate::cpu::{median, pin};
use crate::netns;
use core::net::{Ipv4Addr, SocketAddrV4};
use mtcp_api::{Config, Context, EpollOp, Events, Fd, Mtcp};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollFlags, EpollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The server's address on the mtcp-rs link.
pub const MTCP_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The client's address on the mtcp-rs link.
pub const MTCP_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The port the mtcp-rs server listens on (Linux's is chosen by the kernel).
pub const MTCP_PORT: u16 = 8080;

/// How long application threads sleep in `epoll_wait` before looking at the stop flags.
const WAIT_MS: u16 = 10;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Event token of a listener; connections use `generation << 32 | slot`.
const LISTENER: u64 = u64::MAX;
/// Error messages kept per thread (all errors are counted).
const MAX_LOGGED: usize = 5;
/// A warm-up in which some client completes nothing for this long fails the run.
const WARMUP_LIMIT: Duration = Duration::from_secs(20);
/// A note is printed when `ksoftirqd` ran more than this share of the process's CPU time.
const SOFTIRQ_NOTE: f64 = 0.02;
/// A note is printed when other processes kept this share of one CPU busy in the windows.
const OTHERS_NOTE: f64 = 0.05;

// ---------------------------------------------------------------------------------------------
// Options, records
// ---------------------------------------------------------------------------------------------

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connect, 64 B request, 64 B response, close, per transaction.
    NewConn,
    /// Long-lived connections, one 64 B request/response per transaction.
    Persistent,
    /// Connection setup: connect, the server accepts and resets at once; a transaction ends
    /// when the client reads the reset.
    Setup,
    /// One-way bulk transfer: the client writes 64 KiB chunks as fast as the connection
    /// takes them, the server reads and discards; a transaction is one megabyte (10^6
    /// bytes) delivered to the server.
    Bulk,
}

impl Mode {
    /// Every workload, in table order.
    pub const ALL: [Mode; 4] = [Mode::NewConn, Mode::Persistent, Mode::Setup, Mode::Bulk];

    /// The two ping-pong workloads: what `pingpong` runs by default.
    pub const PING_PONG: [Mode; 2] = [Mode::NewConn, Mode::Persistent];

    /// The name in options and records.
    pub fn name(self) -> &'static str {
        match self {
            Mode::NewConn => "new-conn",
            Mode::Persistent => "persistent",
            Mode::Setup => "setup",
            Mode::Bulk => "bulk",
        }
    }

    /// Parses a comma-separated list of workload names, or `all`.
    pub fn parse_list(text: &str) -> Result<Vec<Mode>, String> {
        crate::cli::parse_names(text, &Mode::ALL, Mode::name, &[], "--mode")
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// mtcp-rs: two `mtcp_api` instances over a shared-memory link.
    MtcpShm,
    /// mtcp-rs in run-to-completion mode: each application thread runs its own stack
    /// (`Context::run_to_completion`), no stack threads.
    MtcpShmRtc,
    /// Linux's TCP over 127.0.0.1.
    LinuxLoopback,
    /// mtcp-rs with stack threads on both ends of a veth pair between two network
    /// namespaces, through AF_PACKET (root).
    MtcpVeth,
    /// [`Stack::MtcpVeth`] in run-to-completion mode.
    MtcpVethRtc,
    /// Linux's TCP over the same kind of veth pair, client and server in their namespaces
    /// (root).
    LinuxVeth,
    /// smoltcp's TCP over the same kind of shared-memory link as mtcp-shm, run to completion
    /// in the application threads (`smoltcp.rs`).
    SmoltcpShm,
}

impl Stack {
    /// Every stack, in table order.
    pub const ALL: [Stack; 7] = [
        Stack::MtcpShm,
        Stack::MtcpShmRtc,
        Stack::LinuxLoopback,
        Stack::MtcpVeth,
        Stack::MtcpVethRtc,
        Stack::LinuxVeth,
        Stack::SmoltcpShm,
    ];

    /// The stacks that need no root: the default.
    pub const NO_ROOT: [Stack; 4] = [
        Stack::MtcpShm,
        Stack::MtcpShmRtc,
        Stack::LinuxLoopback,
        Stack::SmoltcpShm,
    ];

    /// The stacks on a veth pair (root).
    pub const VETH: [Stack; 3] = [Stack::MtcpVeth, Stack::MtcpVethRtc, Stack::LinuxVeth];

    /// The name in options and records.
    pub fn name(self) -> &'static str {
        match self {
            Stack::MtcpShm => "mtcp-shm",
            Stack::MtcpShmRtc => "mtcp-shm-rtc",
            Stack::LinuxLoopback => "linux-loopback",
            Stack::MtcpVeth => "mtcp-veth",
            Stack::MtcpVethRtc => "mtcp-veth-rtc",
            Stack::LinuxVeth => "linux-veth",
            Stack::SmoltcpShm => "smoltcp-shm",
        }
    }

    /// Whether it runs in network namespaces (root only).
    pub fn needs_root(self) -> bool {
        Stack::VETH.contains(&self)
    }

    /// Linux's stack over the same kind of link: what this one is compared with.
    pub fn baseline(self) -> Stack {
        if self.needs_root() {
            Stack::LinuxVeth
        } else {
            Stack::LinuxLoopback
        }
    }

    /// Parses a comma-separated list of stack names, `shm` (the stacks that need no root,
    /// the default), `veth` (the stacks on a veth pair) or `all`.
    pub fn parse_list(text: &str) -> Result<Vec<Stack>, String> {
        let groups: &[(&str, &[Stack])] = &[("shm", &Stack::NO_ROOT), ("veth", &Stack::VETH)];
        crate::cli::parse_names(text, &Stack::ALL, Stack::name, groups, "--stack")
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of the `pingpong` subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workloads, in order.
    pub modes: Vec<Mode>,
    /// Connections in flight, one table row per level.
    pub concurrency: Vec<usize>,
    /// Cores per side: stack threads per mtcp-rs instance, server and client threads.
    pub cores: usize,
    /// Stacks measured.
    pub stacks: Vec<Stack>,
    /// Seconds per measured window.
    pub seconds: f64,
    /// Runs per case (medians are reported).
    pub runs: usize,
    /// Pin threads to CPUs (see the module doc).
    pub pin: bool,
    /// mtcp-rs's busy-poll budget before a thread sleeps, µs (its `loop.busy_poll_us`).
    pub busy_poll_us: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            modes: Mode::PING_PONG.to_vec(),
            concurrency: vec![64],
            cores: 1,
            stacks: Stack::NO_ROOT.to_vec(),
            seconds: 2.0,
            runs: 3,
            pin: true,
            busy_poll_us: 0,
        }
    }
}

/// One line of the result, one JSON record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The stack (`mtcp-shm`, `linux-loopback`, …, see [`Stack`]).
    pub stack: String,
    /// The workload (`new-conn`, `persistent`, `setup`, `bulk`; `http` in `mtcp-bench
    /// http`).
    pub mode: String,
    /// Connections in flight.
    pub concurrency: usize,
    /// Cores per side.
    pub cores: usize,
    /// Transactions per wall second (median of the runs).
    #[serde(deserialize_with = "nan_if_null")]
    pub tx_per_s: f64,
    /// Process CPU µs (user + system, all threads) per transaction (median of the runs).
    #[serde(deserialize_with = "nan_if_null")]
    pub cpu_us_per_tx: f64,
    /// Application payload delivered per wall second, both directions, Gbit/s (median of
    /// the runs).
    #[serde(deserialize_with = "nan_if_null")]
    pub gbit_per_s: f64,
    /// Median transaction latency, µs (median of the runs).
    #[serde(deserialize_with = "nan_if_null")]
    pub p50_us: f64,
    /// 99th percentile transaction latency, µs (median of the runs).
    #[serde(deserialize_with = "nan_if_null")]
    pub p99_us: f64,
}

/// Figures that do not apply are NaN, which JSON writes as `null`: read `null` back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One run's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The workload.
    pub mode: Mode,
    /// Connections in flight (at least `cores`).
    pub concurrency: usize,
    /// Cores per side.
    pub cores: usize,
    /// Seconds of the measured window.
    pub seconds: f64,
    /// Pin threads to CPUs.
    pub pin: bool,
    /// mtcp-rs's busy-poll budget, µs.
    pub busy_poll_us: u64,
}

impl Plan {
    /// Connections of client thread `i`.
    fn conns(&self, i: usize) -> usize {
        self.concurrency / self.cores + usize::from(i < self.concurrency % self.cores)
    }

    /// The CPU of a thread of side `side` (0 server, 1 client) of core `i`, when pinning
    /// (see the module doc): mtcp-rs's stack (`app` false) and application threads, or
    /// Linux's application threads.
    fn cpu(&self, stack: Stack, side: usize, i: usize, app: bool) -> Option<usize> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu = match stack {
            Stack::MtcpShm | Stack::MtcpVeth => 4 * i + 2 * side + usize::from(app),
            Stack::MtcpShmRtc
            | Stack::LinuxLoopback
            | Stack::MtcpVethRtc
            | Stack::LinuxVeth
            | Stack::SmoltcpShm => 2 * i + side,
        };
        (self.pin && n > 1).then_some(cpu % n)
    }

    fn check(&self) -> Result<(), String> {
        if self.cores == 0 || self.cores > 64 {
            return Err("--cores must be 1..=64".into());
        }
        if self.concurrency < self.cores {
            return Err(format!(
                "--concurrency {} is below --cores {}: every client thread needs a connection",
                self.concurrency, self.cores
            ));
        }
        if !self.seconds.is_finite() || self.seconds <= 0.0 {
            return Err("--seconds must be positive".into());
        }
        Ok(())
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Transactions completed in the window.
    pub tx: u64,
    /// Application payload bytes delivered in the window, both directions.
    pub bytes: u64,
    /// Wall time of the window.
    pub wall: Duration,
    /// Process CPU time (user + system) in the window.
    pub cpu: Duration,
    /// CPU time of the `ksoftirqd` threads in the window (not part of `cpu`).
    pub ksoftirqd: Duration,
    /// CPU time of everything else on the machine in the window (all CPUs busy, minus `cpu`
    /// and `ksoftirqd`; 10 ms resolution): other processes disturbing the figures.
    pub others: Duration,
    /// Latencies of the transactions completed in the window.
    pub latency: Histogram,
    /// mtcp-rs: the stacks' retransmissions, drops and timeouts over the whole run (warm-up
    /// and teardown included), when there were any.
    pub stack_note: Option<String>,
}

impl Sample {
    /// Transactions per wall second.
    pub fn tx_per_s(&self) -> f64 {
        self.tx as f64 / self.wall.as_secs_f64()
    }

    /// Process CPU µs per transaction.
    pub fn cpu_us_per_tx(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.tx as f64
    }

    /// Application payload delivered per wall second, both directions, Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.wall.as_secs_f64() / 1e9
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------

/// Sub-buckets per power of two (relative resolution 1/64).
const SUB: u64 = 64;
/// Values below this are their own bucket.
const LINEAR: u64 = 2 * SUB;
/// Buckets for every `u64`.
const BUCKETS: usize = (LINEAR + (64 - 7) * SUB) as usize;

/// A log-linear histogram of nanosecond values: exact below 128 ns, then 64 buckets per
/// power of two. Recording is an index computation and an increment.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < LINEAR {
            return ns as usize;
        }
        let e = 63 - u64::from(ns.leading_zeros()); // >= 7
        let sub = (ns >> (e - 6)) & (SUB - 1);
        (LINEAR + (e - 7) * SUB + sub) as usize
    }

    /// The middle of bucket `i`'s range, ns.
    fn value(i: usize) -> f64 {
        let i = i as u64;
        if i < LINEAR {
            return i as f64;
        }
        let e = (i - LINEAR) / SUB + 7;
        let sub = (i - LINEAR) % SUB;
        let width = 1u64 << (e - 6);
        ((SUB + sub) * width) as f64 + (width as f64 - 1.0) / 2.0
    }

    /// Records one value.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (0 < q ≤ 1), µs; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i) / 1000.0);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// The socket interface both applications run on
// ---------------------------------------------------------------------------------------------

/// What an `epoll_wait` reported for one registration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    pub(crate) token: u64,
    pub(crate) writable: bool,
    /// `ERR` or `HUP`.
    pub(crate) failed: bool,
}

/// One application thread's view of a stack: its sockets and one epoll instance. Every
/// socket is non-blocking; connections are registered edge-triggered for `IN|OUT` with the
/// token given, listeners level-triggered for `IN`. Errors are `io::Error`s (`WouldBlock`
/// when a call cannot complete now).
pub(crate) trait Net {
    /// A socket.
    type Sock;
    /// A listener on `port` (every local address of the stack).
    fn listen(&mut self, port: u16, backlog: usize, token: u64) -> io::Result<Self::Sock>;
    /// A connection waiting on `listener`, registered with `token`; `None` when none waits.
    fn accept(&mut self, listener: &Self::Sock, token: u64) -> io::Result<Option<Self::Sock>>;
    /// Starts a connection to `to`, registered with `token`; OUT or ERR tells how it ended.
    fn connect(&mut self, to: SocketAddrV4, token: u64) -> io::Result<Self::Sock>;
    /// `SO_ERROR`.
    fn take_error(&mut self, s: &Self::Sock) -> io::Result<Option<io::Error>>;
    /// `recv`: `Ok(0)` at end of stream.
    fn read(&mut self, s: &Self::Sock, buf: &mut [u8]) -> io::Result<usize>;
    /// `send`: bytes taken.
    fn write(&mut self, s: &Self::Sock, data: &[u8]) -> io::Result<usize>;
    /// Graceful close (FIN after the data written).
    fn close(&mut self, s: Self::Sock) -> io::Result<()>;
    /// Abortive close (RST): `SO_LINGER` 0.
    fn abort(&mut self, s: Self::Sock) -> io::Result<()>;
    /// `epoll_wait` for at most `timeout_ms`; fills `out` (cleared first).
    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: u16) -> io::Result<()>;
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// [`Net`] over one mtcp-rs context.
pub(crate) struct MtcpNet {
    pub(crate) ctx: Context,
    ep: Fd,
    events: Vec<mtcp_api::EpollEvent>,
}

impl MtcpNet {
    pub(crate) fn new(mut ctx: Context, registrations: usize) -> io::Result<MtcpNet> {
        let ep = ctx.epoll_create(registrations)?;
        Ok(MtcpNet {
            ctx,
            ep,
            events: vec![mtcp_api::EpollEvent::default(); EVENTS],
        })
    }

    /// Registers a connection, closing it if that fails.
    fn register(&mut self, fd: Fd, token: u64) -> io::Result<Fd> {
        let interest = Events::IN | Events::OUT | Events::ET;
        match self
            .ctx
            .epoll_ctl(self.ep, EpollOp::Add, fd, interest, token)
        {
            Ok(()) => Ok(fd),
            Err(e) => {
                let _ = self.ctx.close(fd);
                Err(e.into())
            }
        }
    }
}

impl Net for MtcpNet {
    type Sock = Fd;

    fn listen(&mut self, port: u16, backlog: usize, token: u64) -> io::Result<Fd> {
        let s = self.ctx.socket()?;
        self.ctx
            .bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
        self.ctx.listen(s, backlog)?;
        self.ctx
            .epoll_ctl(self.ep, EpollOp::Add, s, Events::IN, token)?;
        Ok(s)
    }

    fn accept(&mut self, listener: &Fd, token: u64) -> io::Result<Option<Fd>> {
        match self.ctx.accept(*listener) {
            Ok((fd, _)) => self.register(fd, token).map(Some),
            Err(mtcp_api::Error::WouldBlock) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn connect(&mut self, to: SocketAddrV4, token: u64) -> io::Result<Fd> {
        let s = self.ctx.socket()?;
        match self.ctx.connect(s, to) {
            Ok(()) | Err(mtcp_api::Error::InProgress) => self.register(s, token),
            Err(e) => {
                let _ = self.ctx.close(s);
                Err(e.into())
            }
        }
    }

    fn take_error(&mut self, s: &Fd) -> io::Result<Option<io::Error>> {
        Ok(self.ctx.take_error(*s)?.map(io::Error::from))
    }

    fn read(&mut self, s: &Fd, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.ctx.read(*s, buf)?)
    }

    fn write(&mut self, s: &Fd, data: &[u8]) -> io::Result<usize> {
        Ok(self.ctx.write(*s, data)?)
    }

    fn close(&mut self, s: Fd) -> io::Result<()> {
        Ok(self.ctx.close(s)?)
    }

    fn abort(&mut self, s: Fd) -> io::Result<()> {
        Ok(self.ctx.abort(s)?)
    }

    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: u16) -> io::Result<()> {
        let n = self
            .ctx
            .epoll_wait(self.ep, &mut self.events, i32::from(timeout_ms))?;
        out.clear();
        out.extend(self.events[..n].iter().map(|e| Ready {
            token: e.data,
            writable: e.events.contains(Events::OUT),
            failed: e.events.intersects(Events::ERR | Events::HUP),
        }));
        Ok(())
    }
}

/// [`Net`] over Linux's sockets and one epoll instance.
pub(crate) struct LinuxNet {
    ep: Epoll,
    events: Vec<nix::sys::epoll::EpollEvent>,
}

impl LinuxNet {
    pub(crate) fn new() -> io::Result<LinuxNet> {
        Ok(LinuxNet {
            ep: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            events: vec![nix::sys::epoll::EpollEvent::empty(); EVENTS],
        })
    }

    fn tcp_socket() -> io::Result<OwnedFd> {
        Ok(socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?)
    }

    fn register(&self, fd: OwnedFd, token: u64) -> io::Result<OwnedFd> {
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        self.ep
            .add(&fd, nix::sys::epoll::EpollEvent::new(interest, token))?;
        Ok(fd)
    }

    /// The port a socket is bound to.
    fn local_port(s: &OwnedFd) -> io::Result<u16> {
        Ok(socket::getsockname::<socket::SockaddrIn>(s.as_raw_fd())?.port())
    }
}

impl Net for LinuxNet {
    type Sock = OwnedFd;

    fn listen(&mut self, port: u16, backlog: usize, token: u64) -> io::Result<OwnedFd> {
        let s = Self::tcp_socket()?;
        socket::setsockopt(&s, sockopt::ReuseAddr, &true)?;
        socket::setsockopt(&s, sockopt::ReusePort, &true)?;
        let addr = socket::SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        socket::bind(s.as_raw_fd(), &addr)?;
        let max = i32::from(Backlog::MAXCONN);
        let backlog = Backlog::new(i32::try_from(backlog).unwrap_or(max).min(max))?;
        socket::listen(&s, backlog)?;
        self.ep.add(
            &s,
            nix::sys::epoll::EpollEvent::new(EpollFlags::EPOLLIN, token),
        )?;
        Ok(s)
    }

    fn accept(&mut self, listener: &OwnedFd, token: u64) -> io::Result<Option<OwnedFd>> {
        loop {
            let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
            match socket::accept4(listener.as_fd(), flags) {
                Ok(fd) => return self.register(fd, token).map(Some),
                Err(Errno::EAGAIN) => return Ok(None),
                // accept(2): a connection reset while queued; take the next one.
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn connect(&mut self, to: SocketAddrV4, token: u64) -> io::Result<OwnedFd> {
        let s = Self::tcp_socket()?;
        match socket::connect(s.as_raw_fd(), &socket::SockaddrIn::from(to)) {
            Ok(()) | Err(Errno::EINPROGRESS) => self.register(s, token),
            Err(e) => Err(e.into()),
        }
    }

    fn take_error(&mut self, s: &OwnedFd) -> io::Result<Option<io::Error>> {
        let e = socket::getsockopt(s, sockopt::SocketError)?;
        Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
    }

    fn read(&mut self, s: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match socket::recv(s.as_raw_fd(), buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    fn write(&mut self, s: &OwnedFd, data: &[u8]) -> io::Result<usize> {
        loop {
            match socket::send(s.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
                Err(Errno::EINTR) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    fn close(&mut self, s: OwnedFd) -> io::Result<()> {
        // Closing the only descriptor of the socket also removes it from the epoll set.
        drop(s);
        Ok(())
    }

    fn abort(&mut self, s: OwnedFd) -> io::Result<()> {
        let zero = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        socket::setsockopt(&s, sockopt::Linger, &zero)?;
        drop(s);
        Ok(())
    }

    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: u16) -> io::Result<()> {
        out.clear();
        let n = match self
            .ep
            .wait(&mut self.events, EpollTimeout::from(timeout_ms))
        {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        out.extend(self.events[..n].iter().map(|e| {
            Ready {
                token: e.data(),
                writable: e.events().contains(EpollFlags::EPOLLOUT),
                failed: e
                    .events()
                    .intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP),
            }
        }));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The application: shared state, client, server
// ---------------------------------------------------------------------------------------------

/// A counter on a cache line of its own: each client thread bumps one per transaction.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Counter(AtomicU64);

/// What the main thread and the application threads share.
#[derive(Debug, Default)]
struct Shared {
    /// Clients: abort every connection and return. Servers: errors are no longer counted
    /// (clients tear connections down mid-transaction).
    stop: AtomicBool,
    /// Servers: close everything and return (set once the clients have returned).
    exit: AtomicBool,
    /// Clients record latencies while set (the measured window).
    measuring: AtomicBool,
    /// Errors counted so far, every thread.
    errors: AtomicU64,
    /// Transactions completed, per client thread (bulk: chunks written).
    done: Vec<Counter>,
    /// Bulk: bytes the servers have read.
    received: Counter,
}

/// What bulk clients write, chunk after chunk.
static BULK_DATA: [u8; BULK_CHUNK] = [0x5a; BULK_CHUNK];

/// Bytes of one bulk "transaction".
const BULK_TX: u64 = 1_000_000;
/// mtcp-rs's send and receive buffers per connection in bulk mode (its default, 64 KiB, is
/// sized for many short connections): 4 MiB, Linux's `tcp_wmem` autotuning ceiling. At 64 KiB
/// the window, not the stack, limits a stream (2-6 Gbit/s here, against 23-29 at 4 MiB).
pub const BULK_BUFFER: usize = 4 << 20;

/// Bytes per bulk write and read call.
const BULK_CHUNK: usize = 64 * 1024;

impl Shared {
    fn new(clients: usize) -> Shared {
        Shared {
            done: (0..clients).map(|_| Counter::default()).collect(),
            ..Shared::default()
        }
    }

    /// Transactions so far and the application payload they carried (both directions).
    fn progress(&self, mode: Mode) -> (u64, u64) {
        match mode {
            Mode::Bulk => {
                let bytes = self.received.0.load(Ordering::Relaxed);
                (bytes / BULK_TX, bytes)
            }
            _ => {
                let tx = self.done.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
                let per = if mode == Mode::Setup { 0 } else { 2 * MSG_LEN };
                (tx, tx * per as u64)
            }
        }
    }
}

/// Errors of one thread: all counted, the first few kept.
#[derive(Debug, Default)]
struct ErrorLog {
    who: String,
    count: u64,
    first: Vec<String>,
}

impl ErrorLog {
    fn new(who: String) -> ErrorLog {
        ErrorLog {
            who,
            ..ErrorLog::default()
        }
    }

    fn add(&mut self, shared: &Shared, msg: impl fmt::Display) {
        self.count += 1;
        shared.errors.fetch_add(1, Ordering::Relaxed);
        if self.first.len() < MAX_LOGGED {
            self.first.push(format!("{}: {msg}", self.who));
        }
    }
}

/// What an application thread hands back.
#[derive(Debug, Default)]
struct Report {
    errors: ErrorLog,
    latency: Option<Histogram>,
}

fn token(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPhase {
    /// No connection (after an error, or before the first connect).
    Idle,
    Connecting,
    Sending,
    Receiving,
}

struct ClientSlot<S> {
    generation: u32,
    sock: Option<S>,
    phase: ClientPhase,
    /// The current transaction's token and request.
    tx: u64,
    req: [u8; MSG_LEN],
    sent: usize,
    resp: [u8; MSG_LEN],
    got: usize,
    /// Start of the current transaction.
    t0: Instant,
}

/// The client of one core: `slots` connections, each a closed loop of transactions.
struct Client<'a, N: Net> {
    net: N,
    mode: Mode,
    to: SocketAddrV4,
    slots: Vec<ClientSlot<N::Sock>>,
    /// This thread's index in [`Shared::done`].
    me: usize,
    next_tx: u64,
    shared: &'a Shared,
    latency: Histogram,
    errors: ErrorLog,
}

impl<'a, N: Net> Client<'a, N> {
    fn run(
        net: N,
        plan: Plan,
        me: usize,
        to: SocketAddrV4,
        shared: &'a Shared,
        who: String,
    ) -> Report {
        let now = Instant::now();
        let mut c = Client {
            net,
            mode: plan.mode,
            to,
            slots: (0..plan.conns(me))
                .map(|_| ClientSlot {
                    generation: 0,
                    sock: None,
                    phase: ClientPhase::Idle,
                    tx: 0,
                    req: [0; MSG_LEN],
                    sent: 0,
                    resp: [0; MSG_LEN],
                    got: 0,
                    t0: now,
                })
                .collect(),
            me,
            // Tokens are unique across client threads.
            next_tx: (me as u64) << 48,
            shared,
            latency: Histogram::new(),
            errors: ErrorLog::new(who),
        };
        for i in 0..c.slots.len() {
            c.start(i, Instant::now());
        }
        let mut ready = Vec::with_capacity(EVENTS);
        while !shared.stop.load(Ordering::Relaxed) {
            if let Err(e) = c.net.wait(&mut ready, WAIT_MS) {
                c.errors.add(shared, format_args!("epoll_wait: {e}"));
                break;
            }
            for r in &ready {
                let i = (r.token & 0xffff_ffff) as usize;
                if c.slots
                    .get(i)
                    .is_some_and(|s| token(i, s.generation) == r.token)
                {
                    c.on_ready(i, *r);
                }
            }
        }
        for i in 0..c.slots.len() {
            if let Some(s) = c.slots[i].sock.take() {
                if let Err(e) = c.net.abort(s) {
                    c.errors.add(shared, format_args!("close at the end: {e}"));
                }
            }
        }
        Report {
            errors: c.errors,
            latency: Some(c.latency),
        }
    }

    /// Connects slot `i` (a new transaction in new-conn mode), starting at `now`.
    fn start(&mut self, i: usize, now: Instant) {
        let s = &mut self.slots[i];
        s.generation = s.generation.wrapping_add(1);
        s.t0 = now;
        match self.net.connect(self.to, token(i, s.generation)) {
            Ok(sock) => {
                s.sock = Some(sock);
                s.phase = ClientPhase::Connecting;
            }
            Err(e) => self.fail(i, format_args!("connect: {e}")),
        }
    }

    /// Prepares the next request of slot `i`, at `now` (persistent mode times from there).
    fn begin_request(&mut self, i: usize, now: Instant) {
        self.next_tx += 1;
        let s = &mut self.slots[i];
        s.tx = self.next_tx;
        s.req = request(s.tx);
        s.sent = 0;
        s.got = 0;
        // Setup: nothing to send, the server's reset is the answer.
        s.phase = match self.mode {
            Mode::Setup => ClientPhase::Receiving,
            _ => ClientPhase::Sending,
        };
        if self.mode == Mode::Persistent {
            s.t0 = now;
        }
    }

    fn on_ready(&mut self, i: usize, r: Ready) {
        let s = &mut self.slots[i];
        match s.phase {
            ClientPhase::Idle => return,
            ClientPhase::Connecting => {
                let Some(sock) = s.sock.as_ref() else { return };
                // Setup: the server may have reset the connection before this event; the
                // read says which (a reset completes the transaction, a refusal fails it).
                if r.failed && self.mode == Mode::Setup {
                    self.begin_request(i, Instant::now());
                    return self.drive(i);
                }
                if r.failed {
                    let why = match self.net.take_error(sock) {
                        Ok(Some(e)) => e.to_string(),
                        Ok(None) => "hang-up without a pending error".into(),
                        Err(e) => format!("SO_ERROR failed: {e}"),
                    };
                    self.fail(i, format_args!("connect failed: {why}"));
                    return;
                }
                if !r.writable {
                    return;
                }
                self.begin_request(i, Instant::now());
            }
            ClientPhase::Sending | ClientPhase::Receiving => {}
        }
        self.drive(i);
    }

    /// Writes and reads slot `i` as far as it goes.
    fn drive(&mut self, i: usize) {
        loop {
            let s = &mut self.slots[i];
            let Some(sock) = s.sock.as_ref() else { return };
            match s.phase {
                ClientPhase::Idle | ClientPhase::Connecting => return,
                ClientPhase::Sending if self.mode == Mode::Bulk => {
                    match self.net.write(sock, &BULK_DATA[..]) {
                        Ok(_) => {
                            self.shared.done[self.me].0.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if would_block(&e) => return,
                        Err(e) => return self.fail(i, format_args!("write: {e}")),
                    }
                }
                ClientPhase::Receiving if self.mode == Mode::Setup => {
                    let mut buf = [0u8; MSG_LEN];
                    return match self.net.read(sock, &mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.complete(i),
                        Err(e) if would_block(&e) => {}
                        Err(e) => self.fail(i, format_args!("read: {e}")),
                        Ok(0) => self.fail(i, "end of stream instead of a reset"),
                        Ok(n) => self.fail(i, format_args!("{n} bytes instead of a reset")),
                    };
                }
                ClientPhase::Sending => match self.net.write(sock, &s.req[s.sent..]) {
                    Ok(n) => {
                        s.sent += n;
                        if s.sent == MSG_LEN {
                            s.phase = ClientPhase::Receiving;
                        }
                    }
                    Err(e) if would_block(&e) => return,
                    Err(e) => return self.fail(i, format_args!("write: {e}")),
                },
                ClientPhase::Receiving => {
                    // Room for more than the response, to catch extra bytes.
                    let mut buf = [0u8; 2 * MSG_LEN];
                    match self.net.read(sock, &mut buf) {
                        Ok(0) => {
                            let got = s.got;
                            return self.fail(
                                i,
                                format_args!(
                                    "end of stream after {got} of {MSG_LEN} response bytes"
                                ),
                            );
                        }
                        Ok(n) if s.got + n > MSG_LEN => {
                            let extra = s.got + n - MSG_LEN;
                            return self.fail(i, format_args!("{extra} bytes after the response"));
                        }
                        Ok(n) => {
                            s.resp[s.got..s.got + n].copy_from_slice(&buf[..n]);
                            s.got += n;
                            if s.got == MSG_LEN {
                                self.complete(i);
                            }
                        }
                        Err(e) if would_block(&e) => return,
                        Err(e) => return self.fail(i, format_args!("read: {e}")),
                    }
                }
            }
        }
    }

    /// Slot `i` has its whole response.
    fn complete(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if self.mode != Mode::Setup {
            if let Err(m) = check_response(s.tx, &s.resp) {
                return self.fail(i, m);
            }
        }
        // One clock read per transaction: its end is the next one's start.
        let now = Instant::now();
        if self.shared.measuring.load(Ordering::Relaxed) {
            self.latency.record(now.saturating_duration_since(s.t0));
        }
        self.shared.done[self.me].0.fetch_add(1, Ordering::Relaxed);
        match self.mode {
            Mode::Persistent | Mode::Bulk => self.begin_request(i, now),
            Mode::NewConn | Mode::Setup => {
                let sock = s.sock.take();
                s.phase = ClientPhase::Idle;
                if let Some(sock) = sock {
                    if let Err(e) = self.net.abort(sock) {
                        return self.errors.add(self.shared, format_args!("close: {e}"));
                    }
                }
                self.start(i, now);
            }
        }
    }

    /// Counts an error and leaves slot `i` without a connection.
    fn fail(&mut self, i: usize, msg: impl fmt::Display) {
        let s = &mut self.slots[i];
        let tx = s.tx;
        self.errors.add(
            self.shared,
            format_args!("connection {i}, transaction {tx}: {msg}"),
        );
        s.phase = ClientPhase::Idle;
        if let Some(sock) = s.sock.take() {
            let _ = self.net.abort(sock);
        }
    }
}

struct ServerConn<S> {
    generation: u32,
    sock: Option<S>,
    req: [u8; MSG_LEN],
    got: usize,
    resp: [u8; MSG_LEN],
    /// Response bytes written; `MSG_LEN` when no response is pending.
    sent: usize,
}

/// The server of one core: accepts, answers each 64-byte request with a 64-byte response,
/// and in new-conn mode closes after its response.
struct Server<'a, N: Net> {
    net: N,
    mode: Mode,
    conns: Vec<ServerConn<N::Sock>>,
    free: Vec<usize>,
    shared: &'a Shared,
    errors: ErrorLog,
    /// Bulk: where reads land (discarded).
    sink: Vec<u8>,
}

impl<'a, N: Net> Server<'a, N> {
    fn run(net: N, listener: N::Sock, mode: Mode, shared: &'a Shared, who: String) -> Report {
        let mut s = Server {
            net,
            mode,
            conns: Vec::new(),
            free: Vec::new(),
            shared,
            errors: ErrorLog::new(who),
            sink: if mode == Mode::Bulk {
                vec![0; BULK_CHUNK]
            } else {
                Vec::new()
            },
        };
        let mut ready = Vec::with_capacity(EVENTS);
        while !shared.exit.load(Ordering::Relaxed) {
            if let Err(e) = s.net.wait(&mut ready, WAIT_MS) {
                s.errors.add(shared, format_args!("epoll_wait: {e}"));
                break;
            }
            for r in &ready {
                if r.token == LISTENER {
                    s.accept_all(&listener);
                    continue;
                }
                let i = (r.token & 0xffff_ffff) as usize;
                if s.conns
                    .get(i)
                    .is_some_and(|c| c.sock.is_some() && token(i, c.generation) == r.token)
                {
                    s.drive(i);
                }
            }
        }
        for i in 0..s.conns.len() {
            if let Some(sock) = s.conns[i].sock.take() {
                let _ = s.net.close(sock);
            }
        }
        let _ = s.net.close(listener);
        Report {
            errors: s.errors,
            latency: None,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn accept_all(&mut self, listener: &N::Sock) {
        loop {
            let i = self.free.pop().unwrap_or_else(|| {
                self.conns.push(ServerConn {
                    generation: 0,
                    sock: None,
                    req: [0; MSG_LEN],
                    got: 0,
                    resp: [0; MSG_LEN],
                    sent: MSG_LEN,
                });
                self.conns.len() - 1
            });
            let c = &mut self.conns[i];
            c.generation = c.generation.wrapping_add(1);
            match self.net.accept(listener, token(i, c.generation)) {
                Ok(Some(sock)) if self.mode == Mode::Setup => {
                    self.free.push(i);
                    if let Err(e) = self.net.abort(sock) {
                        if !self.stopping() {
                            self.errors.add(self.shared, format_args!("abort: {e}"));
                        }
                    }
                }
                Ok(Some(sock)) => {
                    c.sock = Some(sock);
                    c.got = 0;
                    c.sent = MSG_LEN;
                }
                Ok(None) => {
                    self.free.push(i);
                    return;
                }
                Err(e) => {
                    self.free.push(i);
                    if !self.stopping() {
                        self.errors.add(self.shared, format_args!("accept: {e}"));
                    }
                    return;
                }
            }
        }
    }

    /// Reads and writes connection `i` as far as it goes.
    fn drive(&mut self, i: usize) {
        if self.mode == Mode::Bulk {
            return self.drain(i);
        }
        loop {
            let c = &mut self.conns[i];
            let Some(sock) = c.sock.as_ref() else { return };
            if c.sent < MSG_LEN {
                match self.net.write(sock, &c.resp[c.sent..]) {
                    Ok(n) => {
                        c.sent += n;
                        if c.sent == MSG_LEN && self.mode == Mode::NewConn {
                            return self.end(i, None);
                        }
                        continue;
                    }
                    Err(e) if would_block(&e) => return,
                    Err(e) => return self.end(i, Some(format!("write: {e}"))),
                }
            }
            match self.net.read(sock, &mut c.req[c.got..]) {
                Ok(0) => {
                    // A persistent connection may end between requests (clients abort at
                    // the end, which shows as a reset, but a FIN is fine too).
                    let clean = c.got == 0 && self.mode == Mode::Persistent;
                    let got = c.got;
                    let why = (!clean)
                        .then(|| format!("end of stream after {got} of {MSG_LEN} request bytes"));
                    return self.end(i, why);
                }
                Ok(n) => {
                    c.got += n;
                    if c.got == MSG_LEN {
                        c.got = 0;
                        match response_to(&c.req) {
                            Ok(r) => {
                                c.resp = r;
                                c.sent = 0;
                            }
                            Err(m) => return self.end(i, Some(m)),
                        }
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) => return self.end(i, Some(format!("read: {e}"))),
            }
        }
    }

    /// Bulk: reads connection `i` until it would block, counting the bytes.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(sock) = self.conns[i].sock.as_ref() else {
                return;
            };
            match self.net.read(sock, &mut self.sink) {
                Ok(0) => return self.end(i, Some("end of stream".into())),
                Ok(n) => {
                    self.shared
                        .received
                        .0
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if would_block(&e) => return,
                Err(e) => return self.end(i, Some(format!("read: {e}"))),
            }
        }
    }

    /// Closes connection `i` gracefully; counts `error` unless the run is stopping.
    fn end(&mut self, i: usize, error: Option<String>) {
        let stopping = self.stopping();
        if let Some(m) = error.filter(|_| !stopping) {
            self.errors
                .add(self.shared, format_args!("connection {i}: {m}"));
        }
        if let Some(sock) = self.conns[i].sock.take() {
            if let Err(e) = self.net.close(sock) {
                if !stopping {
                    self.errors.add(self.shared, format_args!("close: {e}"));
                }
            }
        }
        self.free.push(i);
    }
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// Process CPU time, user + system, every thread: `getrusage(RUSAGE_SELF)`.
fn rusage_self() -> Duration {
    // SAFETY: rusage is plain data (integers and timevals); all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF exists and `ru` is a valid out-pointer for the call's duration.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of the `ksoftirqd/N` threads so far (their `schedstat`, ns): softirq work the
/// kernel deferred out of our threads' system calls. 0 where `/proc` does not tell.
pub(crate) fn ksoftirqd_time() -> Duration {
    static PIDS: OnceLock<Vec<String>> = OnceLock::new();
    let pids = PIDS.get_or_init(|| {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.starts_with("ksoftirqd/"))
            })
            .collect()
    });
    let ns: u64 = pids
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(ns)
}

/// Busy time of all CPUs so far (`/proc/stat`: everything but idle and iowait), at
/// `USER_HZ` resolution; `None` where `/proc/stat` does not tell.
pub(crate) fn system_busy() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(busy as f64 / hz as f64))
}

/// The window's figures, before the threads' reports are merged in.
struct Window {
    tx: u64,
    bytes: u64,
    wall: Duration,
    cpu: Duration,
    ksoftirqd: Duration,
    others: Duration,
}

/// Warm-up, then the measured window. Returns early with an error when a thread counted
/// one (the messages come from the reports).
fn window(shared: &Shared, plan: &Plan) -> Result<Window, String> {
    let errors = || shared.errors.load(Ordering::Relaxed) > 0;
    let start = Instant::now();
    let warm = Duration::from_secs_f64((plan.seconds / 5.0).min(0.2));
    loop {
        std::thread::sleep(Duration::from_millis(5));
        if errors() {
            return Err("errors during the warm-up".into());
        }
        let all_done = shared.done.iter().all(|c| c.0.load(Ordering::Relaxed) > 0);
        if all_done && start.elapsed() >= warm {
            break;
        }
        if start.elapsed() > WARMUP_LIMIT {
            let per: Vec<u64> = shared
                .done
                .iter()
                .map(|c| c.0.load(Ordering::Relaxed))
                .collect();
            return Err(format!(
                "warm-up: a client completed no transaction in {WARMUP_LIMIT:?} \
                 (transactions per client thread: {per:?})"
            ));
        }
    }
    let (soft0, busy0) = (ksoftirqd_time(), system_busy());
    shared.measuring.store(true, Ordering::Relaxed);
    let (t0, c0, (n0, b0)) = (Instant::now(), rusage_self(), shared.progress(plan.mode));
    let span = Duration::from_secs_f64(plan.seconds);
    loop {
        let left = span.saturating_sub(t0.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
        if errors() {
            return Err("errors during the window".into());
        }
    }
    let ((n1, b1), c1, wall) = (shared.progress(plan.mode), rusage_self(), t0.elapsed());
    shared.measuring.store(false, Ordering::Relaxed);
    let (soft1, busy1) = (ksoftirqd_time(), system_busy());
    if n1 == n0 {
        return Err("no transaction completed in the window".into());
    }
    let (cpu, ksoftirqd) = (c1.saturating_sub(c0), soft1.saturating_sub(soft0));
    let others = match (busy0, busy1) {
        (Some(b0), Some(b1)) => b1.saturating_sub(b0).saturating_sub(cpu + ksoftirqd),
        _ => Duration::ZERO,
    };
    Ok(Window {
        tx: n1 - n0,
        bytes: b1 - b0,
        wall,
        cpu,
        ksoftirqd,
        others,
    })
}

fn spawn<F>(name: String, cpu: Option<usize>, f: F) -> Result<JoinHandle<Report>, String>
where
    F: FnOnce() -> Report + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Some(c) = cpu {
                pin(c);
            }
            f()
        })
        .map_err(|e| format!("starting thread {name}: {e}"))
}

fn join(handles: Vec<JoinHandle<Report>>, reports: &mut Vec<Report>) {
    for h in handles {
        let name = h.thread().name().unwrap_or("?").to_string();
        reports.push(h.join().unwrap_or_else(|_| {
            let mut errors = ErrorLog::new(name);
            errors.count = 1;
            errors
                .first
                .push(format!("{}: thread panicked", errors.who));
            Report {
                errors,
                latency: None,
            }
        }));
    }
}

/// Runs the servers and clients of one run, measures, stops them and joins them. The
/// listeners already exist.
fn drive_run<S, C>(
    stack: Stack,
    plan: &Plan,
    servers: Vec<(S, S::Sock)>,
    clients: Vec<C>,
    to: SocketAddrV4,
    client_ns: Option<&str>,
) -> Result<Sample, String>
where
    S: Net + Send + 'static,
    S::Sock: Send + 'static,
    C: Net + Send + 'static,
{
    let shared = Arc::new(Shared::new(clients.len()));
    let (mut server_threads, mut client_threads) = (Vec::new(), Vec::new());
    let mut started = Ok(());
    for (i, (net, listener)) in servers.into_iter().enumerate() {
        let sh = shared.clone();
        let (mode, who) = (plan.mode, format!("{stack} server {i}"));
        let f = move || Server::run(net, listener, mode, &sh, who);
        match spawn(format!("pp-server-{i}"), plan.cpu(stack, 0, i, true), f) {
            Ok(h) => server_threads.push(h),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    for (i, net) in clients.into_iter().enumerate() {
        if started.is_err() {
            break;
        }
        let (sh, p) = (shared.clone(), *plan);
        let who = format!("{stack} client {i}");
        let ns = client_ns.map(str::to_string);
        let f = move || {
            // Linux's client sockets belong to the namespace of the thread that opens them.
            let _inside = match ns.as_deref().map(netns::enter).transpose() {
                Ok(g) => g,
                Err(e) => {
                    let mut errors = ErrorLog::new(who);
                    errors.add(&sh, format_args!("entering the client's namespace: {e}"));
                    return Report {
                        errors,
                        latency: None,
                    };
                }
            };
            Client::run(net, p, i, to, &sh, who)
        };
        match spawn(format!("pp-client-{i}"), plan.cpu(stack, 1, i, true), f) {
            Ok(h) => client_threads.push(h),
            Err(e) => started = Err(e),
        }
    }
    let measured = started.and_then(|()| window(&shared, plan));
    shared.stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    join(client_threads, &mut reports);
    shared.exit.store(true, Ordering::SeqCst);
    join(server_threads, &mut reports);

    let count: u64 = reports.iter().map(|r| r.errors.count).sum();
    if count > 0 {
        let first: Vec<&str> = reports
            .iter()
            .flat_map(|r| r.errors.first.iter().map(String::as_str))
            .collect();
        return Err(format!(
            "{count} errors; the first:\n    {}",
            first.join("\n    ")
        ));
    }
    let w = measured?;
    let mut latency = Histogram::new();
    for h in reports.iter().filter_map(|r| r.latency.as_ref()) {
        latency.merge(h);
    }
    Ok(Sample {
        tx: w.tx,
        bytes: w.bytes,
        wall: w.wall,
        cpu: w.cpu,
        ksoftirqd: w.ksoftirqd,
        others: w.others,
        latency,
        stack_note: None,
    })
}

/// The link between the two mtcp-rs instances of a run.
enum Wire {
    /// A shared-memory link of this name.
    Shm(String),
    /// A veth pair between two namespaces, the server on end `a`, the client on end `b`
    /// (the namespaces go when this drops).
    Veth {
        _lab: netns::Namespaces,
        pair: netns::VethPair,
        macs: [[u8; 6]; 2],
    },
}

impl Wire {
    /// A shared-memory link with a name of its own.
    fn shm(tag: &str) -> Wire {
        static RUN: AtomicU32 = AtomicU32::new(0);
        Wire::Shm(format!(
            "pingpong-{tag}-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Two new namespaces joined by a veth pair (root); `ours`: both ends belong to
    /// user-level stacks, and the kernel's receive path stops at the packet taps
    /// ([`netns::Namespaces::reserve_for_user_stack`]).
    fn veth(tag: &str, ours: bool) -> Result<Wire, String> {
        if !netns::is_root() {
            return Err(netns::skip_message("pingpong over veth"));
        }
        let mut lab = netns::Namespaces::new(tag);
        let pair = lab
            .veth_pair("pp-srv", "pp-cli")
            .map_err(|e| format!("veth pair: {e}"))?;
        if ours {
            for (ns, dev) in [(&pair.ns_a, &pair.dev_a), (&pair.ns_b, &pair.dev_b)] {
                lab.reserve_for_user_stack(ns, dev)
                    .map_err(|e| format!("reserving {dev}: {e}"))?;
            }
        }
        let mac = |ns: &str, dev: &str| lab.mac(ns, dev).map_err(|e| format!("MAC of {dev}: {e}"));
        let macs = [mac(&pair.ns_a, &pair.dev_a)?, mac(&pair.ns_b, &pair.dev_b)?];
        Ok(Wire::Veth {
            _lab: lab,
            pair,
            macs,
        })
    }

    /// The psio port of `side` (0 server, 1 client) with `cores` queues.
    fn port(&self, side: usize, cores: usize) -> String {
        match self {
            Wire::Shm(link) => format!("shm:{link}/q={cores}"),
            // Fanout steering by port: the server by its clients' (source) ports, the client
            // by its own (destination) ports, so that each flow stays on the core that owns
            // its port on both sides.
            Wire::Veth { pair, .. } if side == 0 => {
                format!(
                    "afpacket:{}/q={cores},steer=remote,ring=v2,slots=4096",
                    pair.dev_a
                )
            }
            Wire::Veth { pair, .. } => {
                format!(
                    "afpacket:{}/q={cores},steer=local,ring=v2,slots=4096",
                    pair.dev_b
                )
            }
        }
    }

    /// The MAC address of `side`'s interface.
    fn mac(&self, side: usize, ip: Ipv4Addr) -> String {
        let m = match self {
            Wire::Shm(_) => [2, 0, 0, 0, 0, ip.octets()[3]],
            Wire::Veth { macs, .. } => macs[side],
        };
        m.map(|b| format!("{b:02x}")).join(":")
    }

    /// The namespace of `side`, if any.
    fn ns(&self, side: usize) -> Option<&str> {
        match self {
            Wire::Shm(_) => None,
            Wire::Veth { pair, .. } => Some(if side == 0 { &pair.ns_a } else { &pair.ns_b }),
        }
    }

    /// Moves the calling thread into `side`'s namespace (if any) until the guard drops:
    /// ports and sockets opened meanwhile belong there.
    fn enter(&self, side: usize) -> Result<Option<netns::Entered>, String> {
        self.ns(side)
            .map(netns::enter)
            .transpose()
            .map_err(|e| format!("entering a namespace: {e}"))
    }
}

/// The configuration of one mtcp-rs instance (`side` 0 the server, 1 the client; `me`
/// talks to `peer`) on `wire`.
fn mtcp_config(
    wire: &Wire,
    plan: &Plan,
    stack: Stack,
    side: usize,
    me: Ipv4Addr,
    peer: Ipv4Addr,
) -> Result<Config, String> {
    let cpus: Vec<String> = (0..plan.cores)
        .filter_map(|i| plan.cpu(stack, side, i, false).map(|c| c.to_string()))
        .collect();
    let pinned = cpus.len() == plan.cores;
    let text = format!(
        "cores = {cores}\nport = \"{port}\"\npin_threads = {pinned}\n\
         cpus = [{cpus}]\nsecret = \"{secret:032x}\"\n\
         [interface]\nmac = \"{my_mac}\"\naddress = \"{me}/24\"\n\
         [[arp]]\nip = \"{peer}\"\nmac = \"{peer_mac}\"\n\
         [tcp]\nmax_concurrency = {max}\n{buffers}[loop]\nbusy_poll_us = {busy}\n",
        cores = plan.cores,
        port = wire.port(side, plan.cores),
        cpus = if pinned {
            cpus.join(", ")
        } else {
            String::new()
        },
        secret = u32::from(me),
        my_mac = wire.mac(side, me),
        peer_mac = wire.mac(1 - side, peer),
        max = (4 * plan.concurrency).max(65_536),
        busy = plan.busy_poll_us,
        buffers = if plan.mode == Mode::Bulk {
            format!("send_buffer = {BULK_BUFFER}\nrecv_buffer = {BULK_BUFFER}\n")
        } else {
            String::new()
        },
    );
    Config::from_toml_str(&text, "pingpong mtcp-rs configuration").map_err(|e| e.to_string())
}

/// A listen backlog that never turns away a connection of the closed loop.
fn backlog(plan: &Plan) -> usize {
    (2 * plan.concurrency).max(128)
}

/// Epoll registrations a server thread may need.
fn server_registrations(plan: &Plan) -> usize {
    2 * plan.concurrency + 64
}

/// One run on two mtcp-rs instances over shared memory.
fn mtcp_run(plan: &Plan, stack: Stack) -> Result<Sample, String> {
    let wire = match stack {
        Stack::MtcpVeth => Wire::veth("pingpong", true)?,
        _ => Wire::shm("threads"),
    };
    let init = |side, me, peer| -> Result<Mtcp, String> {
        let config = mtcp_config(&wire, plan, stack, side, me, peer)?;
        let _inside = wire.enter(side)?;
        mtcp_api::init(config).map_err(|e| format!("mtcp_api::init: {e}"))
    };
    let mut srv = init(0, MTCP_SERVER, MTCP_CLIENT)?;
    let mut cli = match init(1, MTCP_CLIENT, MTCP_SERVER) {
        Ok(c) => c,
        Err(e) => {
            let _ = srv.destroy();
            return Err(e);
        }
    };
    let mut run = || -> Result<Sample, String> {
        let mut servers = Vec::new();
        for i in 0..plan.cores {
            let ctx = srv.context(i).ok_or("server context missing")?;
            let io = |e: io::Error| format!("server core {i}: {e}");
            let mut net = MtcpNet::new(ctx, server_registrations(plan)).map_err(io)?;
            let l = net.listen(MTCP_PORT, backlog(plan), LISTENER).map_err(io)?;
            servers.push((net, l));
        }
        let mut clients = Vec::new();
        for i in 0..plan.cores {
            let ctx = cli.context(i).ok_or("client context missing")?;
            let net = MtcpNet::new(ctx, plan.conns(i) + 16)
                .map_err(|e| format!("client core {i}: {e}"))?;
            clients.push(net);
        }
        let to = SocketAddrV4::new(MTCP_SERVER, MTCP_PORT);
        drive_run(stack, plan, servers, clients, to, None)
    };
    let result = run();
    let (mut failed, mut anomalies) = (Vec::new(), Vec::new());
    for (side, m) in [("client", cli), ("server", srv)] {
        for (core, r) in m.destroy().into_iter().enumerate() {
            match r {
                Err(e) => failed.push(format!("{side} stack thread {core}: {e}")),
                Ok(st) if st.retransmits + st.dropped + st.timed_out > 0 => {
                    let c = &st.endpoint;
                    let reasons: Vec<String> = [
                        ("out of window", c.out_of_window),
                        ("bad checksum", c.bad_checksum),
                        ("malformed", c.malformed),
                        ("control queue full", c.control_dropped),
                        ("table full", c.table_full),
                        ("accept queue full", c.accept_queue_full),
                        ("reassembly", c.reassembly_dropped),
                        ("ARP", c.arp_dropped),
                    ]
                    .iter()
                    .filter(|(_, v)| *v > 0)
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect();
                    anomalies.push(format!(
                        "{side} core {core}: {} retransmits, {} frames dropped ({}), {} timed out",
                        st.retransmits,
                        st.dropped,
                        reasons.join(", "),
                        st.timed_out
                    ))
                }
                Ok(_) => {}
            }
        }
    }
    if !failed.is_empty() {
        let prior = result
            .err()
            .map(|e| format!("; and {e}"))
            .unwrap_or_default();
        return Err(format!("{}{prior}", failed.join("; ")));
    }
    result.map(|s| Sample {
        stack_note: (!anomalies.is_empty()).then(|| anomalies.join("; ")),
        ..s
    })
}

/// One run on two mtcp-rs run-to-completion contexts per core (server and client) over
/// shared memory: each application thread runs its own stack.
fn mtcp_rtc_run(plan: &Plan, stack: Stack) -> Result<Sample, String> {
    let wire = match stack {
        Stack::MtcpVethRtc => Wire::veth("pingpong", true)?,
        _ => Wire::shm("rtc"),
    };
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let srv = mtcp_config(&wire, plan, stack, 0, MTCP_SERVER, MTCP_CLIENT)?;
    let srv = {
        let _inside = wire.enter(0)?;
        Context::run_to_completion_cores(&srv).map_err(|e| format!("server: {e}"))?
    };
    for (i, ctx) in srv.into_iter().enumerate() {
        let io = |e: io::Error| format!("server core {i}: {e}");
        let mut net = MtcpNet::new(ctx, server_registrations(plan)).map_err(io)?;
        let l = net.listen(MTCP_PORT, backlog(plan), LISTENER).map_err(io)?;
        servers.push((net, l));
    }
    let cli = mtcp_config(&wire, plan, stack, 1, MTCP_CLIENT, MTCP_SERVER)?;
    let cli = {
        let _inside = wire.enter(1)?;
        Context::run_to_completion_cores(&cli).map_err(|e| format!("client: {e}"))?
    };
    for (i, ctx) in cli.into_iter().enumerate() {
        let net =
            MtcpNet::new(ctx, plan.conns(i) + 16).map_err(|e| format!("client core {i}: {e}"))?;
        clients.push(net);
    }
    let to = SocketAddrV4::new(MTCP_SERVER, MTCP_PORT);
    drive_run(stack, plan, servers, clients, to, None)
}

/// One run on Linux's loopback.
fn linux_run(plan: &Plan) -> Result<Sample, String> {
    fn io(what: &'static str) -> impl Fn(io::Error) -> String {
        move |e| format!("{what}: {e}")
    }
    let mut port = 0;
    let mut servers = Vec::new();
    for _ in 0..plan.cores {
        let mut net = LinuxNet::new().map_err(io("epoll_create"))?;
        let l = net
            .listen(port, backlog(plan), LISTENER)
            .map_err(io("listen"))?;
        if port == 0 {
            port = LinuxNet::local_port(&l).map_err(io("getsockname"))?;
        }
        servers.push((net, l));
    }
    let clients = (0..plan.cores)
        .map(|_| LinuxNet::new().map_err(io("epoll_create")))
        .collect::<Result<Vec<_>, _>>()?;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    drive_run(Stack::LinuxLoopback, plan, servers, clients, to, None)
}

/// One run on Linux over a veth pair: the server in one namespace (10.0.0.2), the client in
/// the other (10.0.0.1).
fn linux_veth_run(plan: &Plan) -> Result<Sample, String> {
    fn io(what: &'static str) -> impl Fn(io::Error) -> String {
        move |e| format!("{what}: {e}")
    }
    let Wire::Veth {
        _lab: lab, pair, ..
    } = Wire::veth("pingpong", false)?
    else {
        return Err("no veth pair".into());
    };
    lab.add_address(&pair.ns_a, &pair.dev_a, &format!("{MTCP_SERVER}/24"))
        .map_err(io("server address"))?;
    lab.add_address(&pair.ns_b, &pair.dev_b, &format!("{MTCP_CLIENT}/24"))
        .map_err(io("client address"))?;
    let mut servers = Vec::new();
    {
        let _inside = netns::enter(&pair.ns_a).map_err(io("entering the server's namespace"))?;
        for _ in 0..plan.cores {
            let mut net = LinuxNet::new().map_err(io("epoll_create"))?;
            let l = net
                .listen(MTCP_PORT, backlog(plan), LISTENER)
                .map_err(io("listen"))?;
            servers.push((net, l));
        }
    }
    let clients = (0..plan.cores)
        .map(|_| LinuxNet::new().map_err(io("epoll_create")))
        .collect::<Result<Vec<_>, _>>()?;
    let to = SocketAddrV4::new(MTCP_SERVER, MTCP_PORT);
    let r = drive_run(
        Stack::LinuxVeth,
        plan,
        servers,
        clients,
        to,
        Some(&pair.ns_b),
    );
    drop(lab);
    r
}

/// One run of `stack` (set up, warm-up, window, torn down).
pub fn run_once(stack: Stack, plan: &Plan) -> Result<Sample, String> {
    plan.check()?;
    match stack {
        Stack::MtcpShm | Stack::MtcpVeth => mtcp_run(plan, stack),
        Stack::MtcpShmRtc | Stack::MtcpVethRtc => mtcp_rtc_run(plan, stack),
        Stack::LinuxLoopback => linux_run(plan),
        Stack::LinuxVeth => linux_veth_run(plan),
        Stack::SmoltcpShm => smoltcp::smoltcp_run(plan),
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

fn record(stack: Stack, plan: &Plan, samples: &[Sample]) -> Record {
    let med = |f: &dyn Fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    let q = |s: &Sample, q| s.latency.quantile_us(q).unwrap_or(f64::NAN);
    Record {
        stack: stack.name().into(),
        mode: plan.mode.name().into(),
        concurrency: plan.concurrency,
        cores: plan.cores,
        tx_per_s: med(&|s| s.tx_per_s()),
        cpu_us_per_tx: med(&|s| s.cpu_us_per_tx()),
        gbit_per_s: med(&|s| s.gbit_per_s()),
        p50_us: med(&|s| q(s, 0.5)),
        p99_us: med(&|s| q(s, 0.99)),
    }
}

/// Prints the table's header.
pub fn print_header() {
    println!(
        "{:<14} {:<10} {:>5} {:>5} | {:>9} {:>9} {:>7} {:>8} {:>8} | {:>10}",
        "stack",
        "mode",
        "conc",
        "cores",
        "tx/s",
        "CPU µs/tx",
        "Gbit/s",
        "p50 µs",
        "p99 µs",
        "linux/mtcp"
    );
}

fn print_row(r: &Record, ratio: Option<f64>) {
    println!(
        "{:<14} {:<10} {:>5} {:>5} | {:>9.0} {:>9.2} {:>7.2} {:>8.1} {:>8.1} | {:>10}",
        r.stack,
        r.mode,
        r.concurrency,
        r.cores,
        r.tx_per_s,
        r.cpu_us_per_tx,
        r.gbit_per_s,
        r.p50_us,
        r.p99_us,
        ratio.map_or("-".into(), |x| format!("{x:.2}x")),
    );
}

/// One case of the table: every stack of `stacks` on `plan`, `runs` times each, the runs of
/// the stacks alternating (see the module doc).
#[derive(Debug, Clone)]
pub struct Case {
    /// One record per stack, in the order of the stacks.
    pub records: Vec<Record>,
    /// Notes on the figures (ksoftirqd work not counted, retransmissions, a busy machine).
    pub notes: Vec<String>,
}

/// Runs one case; an error names the stack and run that failed.
pub fn run_case(stacks: &[Stack], plan: &Plan, runs: usize) -> Result<Case, String> {
    plan.check()?;
    if runs == 0 {
        return Err("--runs must be positive".into());
    }
    let (mode, concurrency) = (plan.mode, plan.concurrency);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); stacks.len()];
    for r in 0..runs {
        for (k, &stack) in stacks.iter().enumerate() {
            let s = run_once(stack, plan).map_err(|e| {
                format!(
                    "{stack} {mode} at concurrency {concurrency}, {} cores, run {}: {e}",
                    plan.cores,
                    r + 1
                )
            })?;
            samples[k].push(s);
        }
    }
    let records = stacks
        .iter()
        .zip(&samples)
        .map(|(&stack, s)| record(stack, plan, s))
        .collect();
    let mut notes = Vec::new();
    for (&stack, s) in stacks.iter().zip(&samples) {
        let soft: f64 = s.iter().map(|s| s.ksoftirqd.as_secs_f64()).sum();
        let cpu: f64 = s.iter().map(|s| s.cpu.as_secs_f64()).sum();
        let tx: u64 = s.iter().map(|s| s.tx).sum();
        if soft > SOFTIRQ_NOTE * cpu {
            notes.push(format!(
                "{stack} {mode} {concurrency}: ksoftirqd ran {:.2} µs per transaction besides, \
                 not counted",
                soft * 1e6 / tx as f64
            ));
        }
        if let Some((r, note)) = s
            .iter()
            .enumerate()
            .find_map(|(r, s)| s.stack_note.as_ref().map(|n| (r, n)))
        {
            notes.push(format!(
                "{stack} {mode} {concurrency} run {} (whole run): {note}",
                r + 1
            ));
        }
        let others: f64 = s.iter().map(|s| s.others.as_secs_f64()).sum();
        let wall: f64 = s.iter().map(|s| s.wall.as_secs_f64()).sum();
        if others > OTHERS_NOTE * wall {
            notes.push(format!(
                "{stack} {mode} {concurrency}: other processes kept {:.0}% of a CPU busy \
                 during the windows; these figures are disturbed",
                100.0 * others / wall
            ));
        }
    }
    Ok(Case { records, notes })
}

/// Drops the stacks that need root when not root, saying so.
pub fn without_root_stacks(stacks: &mut Vec<Stack>) {
    if !netns::is_root() && stacks.iter().any(|s| s.needs_root()) {
        let skipped: Vec<&str> = stacks
            .iter()
            .filter(|s| s.needs_root())
            .map(|s| s.name())
            .collect();
        println!("{}", netns::skip_message(&skipped.join(", ")));
        stacks.retain(|s| !s.needs_root());
    }
}

/// Runs every selected case, printing the table as it goes; returns the records.
pub fn run(opts: &Options) -> Result<Vec<Record>, String> {
    if opts.runs == 0 {
        return Err("--runs must be positive".into());
    }
    let mut stacks = opts.stacks.clone();
    without_root_stacks(&mut stacks);
    if stacks.is_empty() || opts.modes.is_empty() || opts.concurrency.is_empty() {
        return Err("nothing to run".into());
    }
    let mut out = Vec::new();
    for &mode in &opts.modes {
        for &concurrency in &opts.concurrency {
            let plan = Plan {
                mode,
                concurrency,
                cores: opts.cores,
                seconds: opts.seconds,
                pin: opts.pin,
                busy_poll_us: opts.busy_poll_us,
            };
            let case = run_case(&stacks, &plan, opts.runs)?;
            let cpu_of = |stack: Stack| {
                case.records
                    .iter()
                    .find(|r| r.stack == stack.name())
                    .map(|r| r.cpu_us_per_tx)
            };
            // Every mtcp-rs row gets Linux's CPU per transaction (over the same kind of
            // link) over its own.
            for (r, &stack) in case.records.iter().zip(&stacks) {
                let ratio = cpu_of(stack.baseline())
                    .filter(|_| stack != stack.baseline())
                    .map(|l| l / r.cpu_us_per_tx);
                print_row(r, ratio);
            }
            for n in &case.notes {
                println!("  note: {n}");
            }
            out.extend(case.records);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode, cores: usize) -> Plan {
        Plan {
            mode,
            concurrency: 4,
            cores,
            seconds: 0.2,
            pin: false,
            busy_poll_us: 0,
        }
    }

    #[test]
    fn histogram_quantiles_land_in_the_right_bucket() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile_us(0.5), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5).unwrap();
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((p50 - 50.0).abs() <= 50.0 / 64.0, "p50 {p50}");
        assert!((p99 - 99.0).abs() <= 99.0 / 64.0, "p99 {p99}");
        // Every bucket's middle maps back to the bucket.
        for i in 0..BUCKETS - 1 {
            assert_eq!(
                Histogram::index(Histogram::value(i) as u64),
                i,
                "bucket {i}"
            );
        }
        h.record(Duration::from_secs(1 << 40));
        assert_eq!(h.len(), 101);
    }

    /// A run's figures are there: transactions, payload where the workload carries some,
    /// and latencies (bulk has none).
    fn assert_measured(s: &Sample, mode: Mode, what: &str) {
        assert!(s.tx > 0, "{what} {mode}: {s:?}");
        assert_eq!(s.bytes > 0, mode != Mode::Setup, "{what} {mode}: {s:?}");
        assert_eq!(
            s.latency.is_empty(),
            mode == Mode::Bulk,
            "{what} {mode}: {s:?}"
        );
    }

    #[test]
    fn mtcp_shm_runs_every_mode_without_errors() {
        for cores in [1, 2] {
            for mode in Mode::ALL {
                let s = run_once(Stack::MtcpShm, &plan(mode, cores))
                    .unwrap_or_else(|e| panic!("{mode}, {cores} cores: {e}"));
                assert_measured(&s, mode, "mtcp-shm");
            }
        }
    }

    #[test]
    fn linux_loopback_runs_every_mode_without_errors() {
        for mode in Mode::ALL {
            let s = run_once(Stack::LinuxLoopback, &plan(mode, 1))
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert_measured(&s, mode, "linux-loopback");
        }
    }

    /// Root only: every veth stack (both mtcp-rs modes over AF_PACKET, and Linux) carries
    /// every workload between two namespaces, on one core and on two.
    #[test]
    fn veth_stacks_run_every_mode_without_errors() {
        if netns::skip_unless_root("pingpong over veth") {
            return;
        }
        for stack in Stack::VETH {
            for cores in [1, 2] {
                for mode in Mode::ALL {
                    let s = run_once(stack, &plan(mode, cores))
                        .unwrap_or_else(|e| panic!("{stack} {mode}, {cores} cores: {e}"));
                    assert_measured(&s, mode, &format!("{stack}, {cores} cores"));
                }
            }
        }
    }

    #[test]
    fn bad_plans_are_refused() {
        let mut p = plan(Mode::NewConn, 2);
        p.concurrency = 1;
        assert!(run_once(Stack::MtcpShm, &p).is_err());
        assert!(Mode::parse_list("both").is_err());
        assert_eq!(
            Mode::parse_list("setup,bulk,setup").unwrap(),
            [Mode::Setup, Mode::Bulk]
        );
        assert_eq!(Stack::parse_list("all").unwrap(), Stack::ALL.to_vec());
        assert_eq!(
            Stack::parse_list("shm,linux-veth,mtcp-shm").unwrap(),
            [Stack::NO_ROOT.as_slice(), &[Stack::LinuxVeth]].concat()
        );
        assert!(Stack::parse_list("mtcp-shm,nope").is_err());
    }
}
