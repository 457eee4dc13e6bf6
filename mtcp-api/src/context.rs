//! Per-core contexts: the stack threads ([`Mtcp`]) and the application's side of each core
//! ([`Context`]), with BSD-like socket calls and epoll.
//!
//! ```text
//!  application thread (core i)                 stack thread (core i, pinned)
//!  ┌───────────────────────────────┐  Cmd     ┌──────────────────────────────────────┐
//!  │ Context: descriptors, epolls, │ ───────► │ StackCore: tcp-core Endpoint, psio   │
//!  │ per-socket receive queues and │ (bounded │ queue i; loop: select → RX → commands │
//!  │ send credit; calls never lock │ channel) │ → timers → events → TX                │
//!  │ and make no system call on    │ ◄─────── │                                      │
//!  │ the fast path                 │  Msg     └──────────────────────────────────────┘
//!  └───────────────────────────────┘  (the doorbell wakes a sleeping stack thread;
//!                                      a blocked epoll_wait wakes on the next Msg)
//! ```
//!
//! Every socket is non-blocking: calls that cannot complete return
//! [`Error::WouldBlock`]/[`Error::InProgress`], and applications wait in
//! [`Context::epoll_wait`], as mTCP applications do.
//!
//! In run-to-completion mode ([`Context::run_to_completion`]) the same calls drive the stack
//! in the calling thread: they operate on the endpoint directly (no commands, no messages;
//! see the `direct` module) and `epoll_wait` runs the stack's loop itself.

mod direct;

use crate::config::Config;
use crate::proto::{Cmd, Fd, Msg, SockOpts};
use crate::stack::{StackCore, StackStats};
use crate::Error;
use core::net::{Ipv4Addr, SocketAddrV4};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use event::{Epoll, EpollEvent, Events};
use psio::{Doorbell, Port};
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tcp_core::config::Keepalive;
use tcp_core::{CloseReason, Endpoint, Handle};

/// How long `destroy` lets each stack send what its closed connections still owe.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Ethernet, IPv4 and TCP headers without options: a frame carrying a full MSS is this much
/// longer than the MSS (TCP options come out of the MSS, RFC 6691).
pub const FRAME_OVERHEAD: usize = 14 + 20 + 20;

/// Most descriptors of one context (sockets and epolls).
pub const MAX_FDS: usize = 1 << 22;

/// Why [`init`] or [`Context::run_to_completion`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum InitError {
    /// The configuration is not usable.
    Config(crate::ConfigError),
    /// A port could not be opened (or has too few queues).
    Port {
        /// The core whose port it is.
        core: usize,
        /// The port name.
        name: String,
        /// What psio said.
        err: psio::Error,
    },
    /// The port's frames are too small for the configured MSS (`tcp.mss`): segments of a
    /// full MSS could never be sent (or received) whole.
    FrameTooSmall {
        /// The core whose port it is.
        core: usize,
        /// The port name.
        name: String,
        /// The configured MSS.
        mss: u16,
        /// The largest frame the port carries (an interface's MTU plus 14).
        max_frame: usize,
    },
    /// The endpoint refused its configuration.
    Endpoint(tcp_core::config::ConfigError),
    /// A stack thread could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Config(e) => write!(f, "{e}"),
            InitError::Port { core, name, err } => write!(f, "core {core}: port {name}: {err}"),
            InitError::FrameTooSmall {
                core,
                name,
                mss,
                max_frame,
            } => write!(
                f,
                "core {core}: port {name} carries frames of at most {max_frame} bytes; \
                 tcp.mss = {mss} needs {} (MSS + {FRAME_OVERHEAD} bytes of Ethernet, IPv4 and \
                 TCP headers): lower tcp.mss to {} or raise the interface's MTU",
                usize::from(*mss) + FRAME_OVERHEAD,
                max_frame.saturating_sub(FRAME_OVERHEAD)
            ),
            InitError::Endpoint(e) => write!(f, "endpoint configuration: {e}"),
            InitError::Thread(e) => write!(f, "starting a stack thread: {e}"),
        }
    }
}

impl std::error::Error for InitError {}

/// What the application side of a core talks to.
enum Link {
    /// A stack thread.
    Thread {
        cmds: Sender<Cmd>,
        msgs: Receiver<Msg>,
        bell: Doorbell,
    },
    /// The stack itself, run by the application's thread; calls go straight to its
    /// endpoint.
    Direct {
        core: Box<StackCore>,
        /// Whose events are whose.
        slots: direct::Slots,
        /// The last pass found nothing to do.
        idle: bool,
    },
}

/// One running core of [`Mtcp`].
struct Core {
    thread: Option<JoinHandle<Result<StackStats, String>>>,
    stop: Arc<AtomicBool>,
    bell: Doorbell,
    app: Option<Context>,
    stats: Arc<Mutex<StackStats>>,
}

/// The running stack: one stack thread per configured core (mTCP's `mtcp_init`).
pub struct Mtcp {
    cores: Vec<Core>,
    printer: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl fmt::Debug for Mtcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mtcp")
            .field("cores", &self.cores.len())
            .finish()
    }
}

/// One queue of a port, whatever its backend.
type Queue = Box<dyn psio::QueueIo>;

/// A core's port name, queue, and steering (queues of the port, this queue's index).
type CoreQueue = (String, Queue, (usize, usize));

/// Opens every core's queue: each distinct port once, core `i` taking its queue (with the
/// port's name).
fn open_queues(config: &Config) -> Result<Vec<CoreQueue>, InitError> {
    let mut opened: Vec<(String, Vec<Option<Queue>>)> = Vec::new();
    let mut out = Vec::with_capacity(config.cores);
    for i in 0..config.cores {
        let (name, queue) = config.port_of(i);
        let err = |err| InitError::Port {
            core: i,
            name: name.clone(),
            err,
        };
        let idx = match opened.iter().position(|(n, _)| *n == name) {
            Some(idx) => idx,
            None => {
                let port = Port::open(&name).map_err(err)?;
                opened.push((
                    name.clone(),
                    port.into_queues().into_iter().map(Some).collect(),
                ));
                opened.len() - 1
            }
        };
        let q = opened[idx]
            .1
            .get_mut(queue)
            .and_then(Option::take)
            .ok_or_else(|| {
                err(psio::Error::InvalidConfig(format!(
                    "queue {queue} is missing or taken by another core"
                )))
            })?;
        out.push((name, q, (opened[idx].1.len(), queue)));
    }
    Ok(out)
}

/// A secret for one process: from the configuration, else random.
fn secret_of(config: &Config) -> [u8; 16] {
    config.secret.unwrap_or_else(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut out = [0u8; 16];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        out
    })
}

fn stack_core(
    config: &Config,
    core: usize,
    port: &str,
    queue: Queue,
    steer: (usize, usize),
    secret: [u8; 16],
) -> Result<StackCore, InitError> {
    let mut ec = config.endpoint_config(core);
    if usize::from(ec.tcp.mss) + FRAME_OVERHEAD > queue.buf_size() {
        return Err(InitError::FrameTooSmall {
            core,
            name: port.into(),
            mss: ec.tcp.mss,
            max_frame: queue.buf_size(),
        });
    }
    ec.secret = secret;
    ec.prefetch = Some(tcp_core::Prefetch(psio::prefetch));
    ec.checksum_accel = Some(tcp_core::ChecksumAccel(psio::checksum_sum));
    let ep = Endpoint::new(ec).map_err(InitError::Endpoint)?;
    // Debugging aid: MTCP_PCAP=<dir> records every frame of every core in <dir>.
    let queue: Queue = match std::env::var_os("MTCP_PCAP") {
        Some(dir) => {
            let file = std::path::Path::new(&dir).join(format!(
                "mtcp-{}-core{core}.pcap",
                config.interface.address.0
            ));
            Box::new(
                psio::PcapTap::create(queue, file).map_err(|err| InitError::Port {
                    core,
                    name: port.into(),
                    err,
                })?,
            )
        }
        None => queue,
    };
    StackCore::new(
        ep,
        port,
        queue,
        config.run_loop.rx_batch,
        Duration::from_micros(config.run_loop.busy_poll_us),
        steer,
    )
    .map_err(|err| InitError::Port {
        core,
        name: port.into(),
        err,
    })
}

/// Starts one stack thread per configured core (mTCP's `mtcp_init` plus
/// `mtcp_create_context`): take each core's application side with [`Mtcp::context`].
pub fn init(config: Config) -> Result<Mtcp, InitError> {
    config.validate().map_err(InitError::Config)?;
    let secret = secret_of(&config);
    let queues = open_queues(&config)?;
    let mut cores = Vec::with_capacity(config.cores);
    for (i, (port, queue, steer)) in queues.into_iter().enumerate() {
        let mut sc = stack_core(&config, i, &port, queue, steer, secret)?;
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(config.run_loop.command_queue);
        let (msg_tx, msg_rx) = crossbeam_channel::bounded(config.run_loop.command_queue);
        let bell = sc.doorbell();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(StackStats::default()));
        let cpu = config.cpu_of(i);
        let batch = config.run_loop.command_batch;
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("mtcp-stack-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    // Pinning is a performance matter: an error leaves the thread unpinned.
                    let _ = psio::sys::affinity::pin_current_thread(cpu);
                }
                stack_loop(&mut sc, &cmd_rx, &msg_tx, &stop2, &stats2, batch)
            })
            .map_err(InitError::Thread)?;
        cores.push(Core {
            thread: Some(thread),
            stop,
            bell: bell.clone(),
            app: Some(Context::new(
                i,
                Link::Thread {
                    cmds: cmd_tx,
                    msgs: msg_rx,
                    bell,
                },
                &config,
            )),
            stats,
        });
    }
    let printer = if config.stat_print {
        let stop = Arc::new(AtomicBool::new(false));
        let cells: Vec<_> = cores.iter().map(|c| c.stats.clone()).collect();
        let stop2 = stop.clone();
        let t = std::thread::Builder::new()
            .name("mtcp-stats".into())
            .spawn(move || print_stats(&cells, &stop2))
            .map_err(InitError::Thread)?;
        Some((stop, t))
    } else {
        None
    };
    Ok(Mtcp { cores, printer })
}

/// Prints every core's statistics once a second until `stop` (mTCP's `stat_print`).
fn print_stats(cells: &[Arc<Mutex<StackStats>>], stop: &AtomicBool) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        next += Duration::from_secs(1);
        while Instant::now() < next {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for (i, c) in cells.iter().enumerate() {
            if let Ok(s) = c.lock() {
                println!("[core {i}] {}", *s);
            }
        }
    }
}

/// The stack thread: passes until told to stop, sleeping in `select` when idle.
fn stack_loop(
    sc: &mut StackCore,
    cmds: &Receiver<Cmd>,
    msgs: &Sender<Msg>,
    stop: &AtomicBool,
    stats: &Mutex<StackStats>,
    batch: usize,
) -> Result<StackStats, String> {
    let mut passes_since_stats = 0u32;
    loop {
        let busy = sc
            .pass(cmds.try_iter().take(batch))
            .map_err(|e| e.to_string())?;
        let mut blocked = false;
        while let Some(m) = sc.take_msg() {
            match msgs.try_send(m) {
                Ok(()) => {}
                Err(TrySendError::Full(m)) => {
                    sc.untake_msg(m);
                    blocked = true;
                    break;
                }
                // The application side is gone: nothing left to tell.
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        passes_since_stats += 1;
        if passes_since_stats >= 64 || !busy {
            passes_since_stats = 0;
            if let Ok(mut s) = stats.lock() {
                *s = sc.stats();
            }
        }
        if stop.load(Ordering::Acquire) {
            // Commands sent before the stop are the application's last word (an accept, the
            // bytes it wrote): apply them all, then close.
            sc.shutdown(cmds.try_iter(), SHUTDOWN_GRACE)
                .map_err(|e| e.to_string())?;
            return Ok(sc.stats());
        }
        if !busy && cmds.is_empty() {
            // Messages the application has not taken yet: look again soon.
            let limit = blocked.then_some(1000);
            sc.select(limit).map_err(|e| e.to_string())?;
        }
    }
}

impl Mtcp {
    /// The application side of core `core` (once: `None` if taken or out of range).
    pub fn context(&mut self, core: usize) -> Option<Context> {
        self.cores.get_mut(core)?.app.take()
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// Statistics of core `core`'s stack, as of its last idle moment (or 64 passes): frames
    /// and bytes each way, connections open/accepted/closed/reset, retransmits, drops.
    pub fn stats(&self, core: usize) -> Option<StackStats> {
        let c = self.cores.get(core)?;
        c.stats.lock().ok().map(|s| *s)
    }

    /// Stops every stack thread and waits for them; the final statistics per core. Each
    /// stack first closes its sockets (listeners stop, connections close gracefully: FIN
    /// after the data written) and sends what that produces for up to [`SHUTDOWN_GRACE`].
    /// Contexts still held by applications become unusable ([`Error::ContextGone`]).
    pub fn destroy(mut self) -> Vec<Result<StackStats, String>> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Vec<Result<StackStats, String>> {
        if let Some((stop, t)) = self.printer.take() {
            stop.store(true, Ordering::Release);
            let _ = t.join();
        }
        for c in &self.cores {
            c.stop.store(true, Ordering::Release);
            c.bell.ring();
        }
        self.cores
            .iter_mut()
            .filter_map(|c| c.thread.take())
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("stack thread panicked".into()))
            })
            .collect()
    }
}

impl Drop for Mtcp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A socket's options, as the application set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Opts {
    nodelay: bool,
    keepalive: bool,
    keepalive_params: Keepalive,
    linger: Option<u32>,
    reuse_addr: bool,
}

impl Opts {
    /// Keepalive parameters when `SO_KEEPALIVE` is on.
    fn keepalive_opt(&self) -> Option<Keepalive> {
        self.keepalive.then_some(self.keepalive_params)
    }

    fn for_stack(&self, rcvbuf: usize, sndbuf: usize) -> SockOpts {
        SockOpts {
            nodelay: self.nodelay,
            keepalive: self.keepalive.then_some(self.keepalive_params),
            recv_limit: rcvbuf,
            send_limit: sndbuf,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Created, maybe bound.
    Fresh,
    /// Listen sent, answer pending.
    ListenPending,
    Listening,
    Connecting,
    Connected,
}

struct Sock {
    phase: Phase,
    /// The endpoint's connection or listener (run-to-completion contexts only: there the
    /// bytes and the readiness are the endpoint's, and `rx`/`credit` stay unused).
    handle: Option<Handle>,
    /// `shutdown(SHUT_RD)` (run-to-completion contexts): arriving bytes are discarded.
    rd_shut: bool,
    bound_port: Option<u16>,
    local: Option<SocketAddrV4>,
    peer: Option<SocketAddrV4>,
    backlog: usize,
    accept_q: VecDeque<(Handle, SocketAddrV4, SocketAddrV4)>,
    rx: VecDeque<Vec<u8>>,
    rx_off: usize,
    rx_bytes: usize,
    /// Bytes read and not yet reported to the stack.
    unreported: usize,
    credit: usize,
    /// `SO_SNDBUF`: the most unacknowledged bytes the application may have written.
    sndbuf: usize,
    /// `SO_RCVBUF`: the most received bytes waiting for the application.
    rcvbuf: usize,
    /// Linux's `SOCK_NOSPACE`: a write fell short or a poll found the socket not writable,
    /// so the next room freed is a wake-up (an edge for ET registrations); without it,
    /// acknowledgments wake nobody. A `Cell`: polling (through `&self`) sets it.
    nospace: Cell<bool>,
    rd_closed: bool,
    wr_shut: bool,
    ended: Option<CloseReason>,
    error: Option<Error>,
    /// Epoll descriptors this socket is registered with.
    watchers: Vec<Fd>,
    opts: Opts,
}

/// One end of an in-context pipe ([`Context::pipe`], mTCP's `mtcp_pipe`).
struct PipeEnd {
    /// Index in `Context::pipes`.
    id: usize,
    write: bool,
    watchers: Vec<Fd>,
}

/// The bytes of a pipe between its two ends.
struct PipeBuf {
    data: VecDeque<u8>,
    reader: Option<Fd>,
    writer: Option<Fd>,
}

/// Bytes a pipe holds (Linux's default pipe size).
pub const PIPE_CAPACITY: usize = 64 * 1024;

/// Socket records kept for reuse.
const SOCK_POOL: usize = 4096;

impl Sock {
    /// A new socket record.
    fn new(opts: Opts, sndbuf: usize, rcvbuf: usize) -> Sock {
        Sock {
            phase: Phase::Fresh,
            handle: None,
            rd_shut: false,
            bound_port: None,
            local: None,
            peer: None,
            backlog: 0,
            accept_q: VecDeque::new(),
            rx: VecDeque::new(),
            rx_off: 0,
            rx_bytes: 0,
            unreported: 0,
            credit: 0,
            sndbuf,
            rcvbuf,
            nospace: Cell::new(false),
            rd_closed: false,
            wr_shut: false,
            ended: None,
            error: None,
            watchers: Vec::new(),
            opts,
        }
    }

    /// This record as a new socket's, keeping its collections' memory.
    fn renew(&mut self, opts: Opts, sndbuf: usize, rcvbuf: usize) {
        let (mut accept_q, mut rx, mut watchers) = (
            std::mem::take(&mut self.accept_q),
            std::mem::take(&mut self.rx),
            std::mem::take(&mut self.watchers),
        );
        accept_q.clear();
        rx.clear();
        watchers.clear();
        *self = Sock {
            accept_q,
            rx,
            watchers,
            ..Sock::new(opts, sndbuf, rcvbuf)
        };
    }

    /// Back to a fresh, unconnected socket (after a failed connect), keeping its options,
    /// buffer sizes, binding and epoll registrations.
    fn reset_unconnected(&mut self) {
        self.phase = Phase::Fresh;
        self.handle = None;
        self.rd_shut = false;
        self.peer = None;
        self.local = self
            .bound_port
            .map(|p| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p));
        self.rx.clear();
        self.rx_off = 0;
        self.rx_bytes = 0;
        self.unreported = 0;
        self.credit = 0;
        self.nospace.set(false);
        self.rd_closed = false;
        self.wr_shut = false;
        self.ended = None;
        self.error = None;
    }

    /// What a read finds when no byte is ready: the pending error, end of stream, or not
    /// yet (`WouldBlock`; `NotConnected` on a socket that is not connected).
    fn nothing_to_read(&mut self) -> Result<usize, Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.rd_closed || self.ended.is_some() {
            return Ok(0);
        }
        Err(match self.phase {
            Phase::Connected | Phase::Connecting => Error::WouldBlock,
            _ => Error::NotConnected,
        })
    }

    /// Linux's `sk_stream_is_writeable`: the free space is at least half of what is queued
    /// (free ≥ (sndbuf − free) / 2).
    fn writable(&self) -> bool {
        self.credit > 0 && 3 * self.credit >= self.sndbuf
    }
}

/// What `poll` says of a pipe end (as Linux's `pipe_poll`).
fn pipe_level(pipes: &[Option<PipeBuf>], end: &PipeEnd) -> Events {
    let Some(Some(p)) = pipes.get(end.id) else {
        return Events::empty();
    };
    let mut m = Events::empty();
    if end.write {
        if p.data.len() < PIPE_CAPACITY {
            m |= Events::OUT | Events::WRNORM;
        }
        if p.reader.is_none() {
            m |= Events::ERR;
        }
    } else {
        if !p.data.is_empty() {
            m |= Events::IN | Events::RDNORM;
        }
        if p.writer.is_none() {
            m |= Events::HUP;
        }
    }
    m
}

/// Smallest `SO_SNDBUF`/`SO_RCVBUF` accepted (smaller requests are raised to it).
pub const MIN_SOCKET_BUFFER: usize = 2048;

/// A socket option with its value (`setsockopt`, and what `getsockopt` returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SockOpt {
    /// `SO_ERROR` (read only): the pending error; reading clears it.
    Error(Option<Error>),
    /// `TCP_NODELAY`: Nagle's algorithm off.
    NoDelay(bool),
    /// `SO_SNDBUF`: the most unacknowledged bytes written, at most the stack's `send_buffer`.
    SendBuffer(usize),
    /// `SO_RCVBUF`: the most received bytes held unread, at most the stack's `recv_buffer`.
    RecvBuffer(usize),
    /// `SO_KEEPALIVE`.
    KeepAlive(bool),
    /// `TCP_KEEPIDLE`, seconds (at least 1).
    KeepIdle(u32),
    /// `TCP_KEEPINTVL`, seconds (at least 1).
    KeepInterval(u32),
    /// `TCP_KEEPCNT` (at least 1).
    KeepCount(u32),
    /// `SO_LINGER`, seconds: `Some(0)` makes `close` reset the connection; other values
    /// close gracefully without blocking (every socket is non-blocking).
    Linger(Option<u32>),
    /// `SO_REUSEADDR`. Kept and reported; listening never fails because of TIME-WAIT
    /// connections here, so it changes nothing else.
    ReuseAddr(bool),
}

/// The names of [`SockOpt`]s, for `getsockopt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SockOptName {
    /// `SO_ERROR`.
    Error,
    /// `TCP_NODELAY`.
    NoDelay,
    /// `SO_SNDBUF`.
    SendBuffer,
    /// `SO_RCVBUF`.
    RecvBuffer,
    /// `SO_KEEPALIVE`.
    KeepAlive,
    /// `TCP_KEEPIDLE`.
    KeepIdle,
    /// `TCP_KEEPINTVL`.
    KeepInterval,
    /// `TCP_KEEPCNT`.
    KeepCount,
    /// `SO_LINGER`.
    Linger,
    /// `SO_REUSEADDR`.
    ReuseAddr,
}

/// The wake-up of a state change (connected, FIN, reset, closed): Linux's `sk_state_change`
/// wakes every waiter whatever it waits for.
const STATE_CHANGE: Events = Events::IN
    .union(Events::OUT)
    .union(Events::ERR)
    .union(Events::HUP)
    .union(Events::RDHUP)
    .union(Events::PRI);

enum Obj {
    /// A free descriptor number.
    Free,
    Sock(Box<Sock>),
    Epoll(Box<Epoll>),
    Pipe(Box<PipeEnd>),
    /// Closed by the application; the number returns once the stack released it.
    Closing,
}

/// The application side of one core: its descriptors and the calls on them. Owned by one
/// application thread (it is `Send`, not `Sync`).
pub struct Context {
    core: usize,
    link: Link,
    objs: Vec<Obj>,
    free: Vec<Fd>,
    pipes: Vec<Option<PipeBuf>>,
    local_ip: Ipv4Addr,
    sndbuf: usize,
    rcvbuf: usize,
    /// Options of new sockets (from the configuration's `[tcp]`).
    defaults: Opts,
    /// `MTCP_TRACE` was set when the context was made.
    trace: bool,
    /// Emptied receive buffers, reused for `Write`s (see the stack's `spare`).
    spare: Vec<Vec<u8>>,
    /// Socket records of closed descriptors, reused (with their collections' capacity) by
    /// `socket`: a short connection then allocates nothing on this side.
    // Boxed on purpose: the boxes themselves are what is reused (`Obj::Sock` holds one).
    #[allow(clippy::vec_box)]
    sock_pool: Vec<Box<Sock>>,
    gone: bool,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("core", &self.core)
            .field("descriptors", &(self.objs.len() - self.free.len()))
            .finish()
    }
}

/// `epoll_ctl` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpollOp {
    /// `EPOLL_CTL_ADD`.
    Add,
    /// `EPOLL_CTL_MOD`.
    Mod,
    /// `EPOLL_CTL_DEL`.
    Del,
}

/// `shutdown` directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// `SHUT_RD`: reads return end of stream (data keeps arriving and is discarded).
    Read,
    /// `SHUT_WR`: FIN after the data written.
    Write,
    /// `SHUT_RDWR`.
    Both,
}

impl Context {
    fn new(core: usize, link: Link, config: &Config) -> Self {
        let t = &config.tcp;
        let secs = |v: u64| tcp_core::Duration::from_secs(v);
        Context {
            core,
            link,
            objs: Vec::new(),
            free: Vec::new(),
            pipes: Vec::new(),
            local_ip: config.interface.address.0,
            sndbuf: t.send_buffer,
            rcvbuf: t.recv_buffer,
            defaults: Opts {
                nodelay: t.nodelay,
                keepalive: t.keepalive,
                keepalive_params: Keepalive {
                    idle: secs(t.keepalive_idle_s),
                    interval: secs(t.keepalive_interval_s),
                    count: t.keepalive_count,
                },
                linger: None,
                reuse_addr: false,
            },
            trace: std::env::var_os("MTCP_TRACE").is_some(),
            spare: Vec::new(),
            sock_pool: Vec::new(),
            gone: false,
        }
    }

    /// A context whose stack runs in the calling thread (no stack thread, no queues between
    /// threads): core `core` of `config`. Its `epoll_wait` and [`poll`](Self::poll) run the
    /// stack. It opens the whole port and keeps one queue: for several cores of one port,
    /// use [`run_to_completion_cores`](Self::run_to_completion_cores).
    pub fn run_to_completion(config: &Config, core: usize) -> Result<Context, InitError> {
        let mut all = Context::run_to_completion_cores(config)?;
        if core >= all.len() {
            return Err(InitError::Config(crate::ConfigError {
                source: "configuration".into(),
                line: None,
                field: "cores".into(),
                message: format!("core {core} is not configured"),
            }));
        }
        Ok(all.swap_remove(core))
    }

    /// Run-to-completion contexts for every core of `config` (each to be driven by its own
    /// thread), sharing the ports they open.
    pub fn run_to_completion_cores(config: &Config) -> Result<Vec<Context>, InitError> {
        config.validate().map_err(InitError::Config)?;
        let secret = secret_of(config);
        open_queues(config)?
            .into_iter()
            .enumerate()
            .map(|(core, (port, queue, steer))| {
                let sc = stack_core(config, core, &port, queue, steer, secret)?;
                Ok(Context::new(
                    core,
                    Link::Direct {
                        core: Box::new(sc),
                        slots: direct::Slots::default(),
                        idle: false,
                    },
                    config,
                ))
            })
            .collect()
    }

    /// Whether this is a run-to-completion context (calls go to the endpoint directly).
    fn is_direct(&self) -> bool {
        matches!(self.link, Link::Direct { .. })
    }

    /// The endpoint of a run-to-completion context.
    fn endpoint(&self) -> Option<&Endpoint> {
        match &self.link {
            Link::Direct { core, .. } => Some(core.endpoint()),
            Link::Thread { .. } => None,
        }
    }

    /// The core this context belongs to.
    pub fn core(&self) -> usize {
        self.core
    }

    /// The statistics of this context's stack, now, in run-to-completion mode (`None` for a
    /// context whose stack runs in its own thread: ask [`Mtcp::stats`]).
    pub fn stats(&self) -> Option<StackStats> {
        match &self.link {
            Link::Direct { core, .. } => Some(core.stats()),
            Link::Thread { .. } => None,
        }
    }

    /// Heap bytes held by this context's endpoint in run-to-completion mode: its connection
    /// table and the buffers of its connections (tcp-core's `Endpoint::memory_usage`; walks
    /// every slot). `None` for a context whose stack runs in its own thread.
    pub fn memory_usage(&self) -> Option<usize> {
        self.endpoint().map(Endpoint::memory_usage)
    }

    // ----- plumbing -------------------------------------------------------------------

    fn send(&mut self, cmd: Cmd) -> Result<(), Error> {
        match &mut self.link {
            Link::Thread { cmds, bell, .. } => {
                let r = cmds.try_send(cmd);
                bell.ring();
                match r {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(cmd)) => {
                        // The stack thread is behind: wait for room (it drains every pass).
                        cmds.send(cmd).map_err(|_| Error::ContextGone)
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.gone = true;
                        Err(Error::ContextGone)
                    }
                }
            }
            Link::Direct { .. } => {
                // Run-to-completion calls operate on the endpoint directly.
                debug_assert!(false, "a command in a run-to-completion context: {cmd:?}");
                Ok(())
            }
        }
    }

    /// Applies every message already there; in run-to-completion mode, runs one pass of the
    /// stack first. Returns whether anything arrived.
    pub fn poll(&mut self) -> Result<bool, Error> {
        if let Link::Direct { .. } = self.link {
            return self.d_pass();
        }
        let mut any = false;
        while let Some(m) = self.try_msg()? {
            any = true;
            self.apply(m);
        }
        Ok(any)
    }

    fn try_msg(&mut self) -> Result<Option<Msg>, Error> {
        match &mut self.link {
            Link::Thread { msgs, .. } => match msgs.try_recv() {
                Ok(m) => Ok(Some(m)),
                Err(TryRecvError::Empty) => Ok(None),
                Err(TryRecvError::Disconnected) => {
                    self.gone = true;
                    Err(Error::ContextGone)
                }
            },
            Link::Direct { .. } => Ok(None),
        }
    }

    /// Waits for something to happen, at most until `deadline`; applies what arrived.
    fn block(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        match &mut self.link {
            Link::Thread { msgs, .. } => {
                let r = match deadline {
                    Some(d) => msgs.recv_deadline(d),
                    None => msgs.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match r {
                    Ok(m) => {
                        self.apply(m);
                        Ok(())
                    }
                    Err(RecvTimeoutError::Timeout) => Ok(()),
                    Err(RecvTimeoutError::Disconnected) => {
                        self.gone = true;
                        Err(Error::ContextGone)
                    }
                }
            }
            Link::Direct { .. } => {
                let limit = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()).as_micros() as u64);
                self.d_block(limit)
            }
        }
    }

    fn alloc(&mut self, obj: Obj) -> Result<Fd, Error> {
        if self.gone {
            return Err(Error::ContextGone);
        }
        if let Some(fd) = self.free.pop() {
            self.objs[fd as usize] = obj;
            return Ok(fd);
        }
        if self.objs.len() >= MAX_FDS {
            return Err(Error::TooManySockets);
        }
        self.objs.push(obj);
        Ok((self.objs.len() - 1) as Fd)
    }

    fn sock(&self, fd: Fd) -> Result<&Sock, Error> {
        match self.objs.get(fd as usize) {
            Some(Obj::Sock(s)) => Ok(s),
            Some(Obj::Epoll(_) | Obj::Pipe(_)) => Err(Error::NotSocket),
            _ => Err(Error::BadDescriptor),
        }
    }

    fn sock_mut(&mut self, fd: Fd) -> Result<&mut Sock, Error> {
        match self.objs.get_mut(fd as usize) {
            Some(Obj::Sock(s)) => Ok(s),
            Some(Obj::Epoll(_) | Obj::Pipe(_)) => Err(Error::NotSocket),
            _ => Err(Error::BadDescriptor),
        }
    }

    /// The epoll instances watching `fd` (a socket or a pipe end).
    fn watchers_mut(&mut self, fd: Fd) -> Option<&mut Vec<Fd>> {
        match self.objs.get_mut(fd as usize) {
            Some(Obj::Sock(s)) => Some(&mut s.watchers),
            Some(Obj::Pipe(p)) => Some(&mut p.watchers),
            _ => None,
        }
    }

    /// Tells every epoll watching `fd` about a change with these flags.
    fn notify(&mut self, fd: Fd, flags: Events) {
        direct::notify(&mut self.objs, fd, flags);
    }

    /// Applies one message from the stack.
    fn apply(&mut self, m: Msg) {
        if self.trace {
            // Debugging aid: every message, as the application side applies it.
            eprintln!("[{}] {:?}", self.local_ip, m);
        }
        let (fd, flags) = match m {
            Msg::Released { fd } => {
                if let Some(o @ Obj::Closing) = self.objs.get_mut(fd as usize) {
                    *o = Obj::Free;
                    self.free.push(fd);
                }
                return;
            }
            Msg::Listening { fd, port } => {
                if let Ok(s) = self.sock_mut(fd) {
                    s.phase = Phase::Listening;
                    s.bound_port = Some(port);
                    let ip = s.local.map_or(Ipv4Addr::UNSPECIFIED, |a| *a.ip());
                    s.local = Some(SocketAddrV4::new(ip, port));
                }
                return;
            }
            Msg::Failed { fd, err } => {
                let Ok(s) = self.sock_mut(fd) else { return };
                if s.phase == Phase::ListenPending {
                    s.phase = Phase::Fresh;
                    s.error = Some(err);
                    return;
                }
                s.error = Some(err);
                s.ended = Some(CloseReason::Aborted);
                (fd, STATE_CHANGE)
            }
            Msg::Connecting { fd, local } => {
                if let Ok(s) = self.sock_mut(fd) {
                    s.local = Some(local);
                }
                return;
            }
            Msg::Connected { fd } => {
                let Ok(s) = self.sock_mut(fd) else { return };
                s.phase = Phase::Connected;
                (fd, STATE_CHANGE)
            }
            Msg::Accepted {
                fd,
                handle,
                local,
                peer,
            } => {
                let Ok(s) = self.sock_mut(fd) else { return };
                s.accept_q.push_back((handle, local, peer));
                (fd, Events::IN | Events::RDNORM)
            }
            Msg::Data { fd, buf } => {
                let Ok(s) = self.sock_mut(fd) else { return };
                s.rx_bytes += buf.len();
                s.rx.push_back(buf);
                (fd, Events::IN | Events::RDNORM)
            }
            Msg::Credit { fd, n } => {
                let Ok(s) = self.sock_mut(fd) else { return };
                s.credit = (s.credit + n).min(s.sndbuf);
                // Linux's sk_stream_write_space: a wake-up only for a writer that found no
                // room, and only once there is enough room again.
                if !(s.nospace.get() && s.writable()) {
                    return;
                }
                s.nospace.set(false);
                (fd, Events::OUT | Events::WRNORM)
            }
            Msg::PeerClosed { fd } => {
                let Ok(s) = self.sock_mut(fd) else { return };
                s.rd_closed = true;
                (fd, STATE_CHANGE)
            }
            Msg::Ended { fd, reason } => {
                let Ok(s) = self.sock_mut(fd) else { return };
                s.ended = Some(reason);
                s.error = match reason {
                    CloseReason::Reset => Some(Error::ConnectionReset),
                    CloseReason::Refused => Some(Error::ConnectionRefused),
                    CloseReason::TimedOut => Some(Error::TimedOut),
                    _ => s.error,
                };
                (
                    fd,
                    Events::ERR | Events::HUP | Events::IN | Events::OUT | Events::RDHUP,
                )
            }
        };
        self.notify(fd, flags);
    }

    /// What `poll` would say of descriptor `fd` (modelled on Linux's `tcp_poll`).
    /// `ep`: the endpoint of a run-to-completion context, which holds the bytes.
    fn level(objs: &[Obj], pipes: &[Option<PipeBuf>], ep: Option<&Endpoint>, fd: Fd) -> Events {
        let s = match objs.get(fd as usize) {
            Some(Obj::Sock(s)) => s,
            Some(Obj::Pipe(p)) => return pipe_level(pipes, p),
            _ => return Events::empty(),
        };
        let direct = ep.zip(s.handle);
        let mut m = Events::empty();
        match s.phase {
            Phase::Listening | Phase::ListenPending => {
                let ready = match direct {
                    Some((ep, h)) => ep.accept_ready(h),
                    None => !s.accept_q.is_empty(),
                };
                if ready {
                    m |= Events::IN | Events::RDNORM;
                }
                return m;
            }
            Phase::Fresh if s.ended.is_none() => {
                // An unconnected TCP socket is in CLOSE: Linux reports OUT|HUP.
                return Events::OUT | Events::WRNORM | Events::HUP;
            }
            _ => {}
        }
        let rd_shut = s.rd_closed || s.ended.is_some();
        let wr_shut = s.wr_shut || s.ended.is_some();
        if (rd_shut && wr_shut) || s.ended.is_some() {
            m |= Events::HUP;
        }
        if rd_shut {
            m |= Events::IN | Events::RDNORM | Events::RDHUP;
        }
        if s.phase != Phase::Connecting || s.ended.is_some() {
            let (readable, writable) = match direct {
                Some((ep, h)) => (
                    !s.rd_shut && ep.recv_available(h).unwrap_or(0) > 0,
                    direct::writable(ep, h, s.sndbuf),
                ),
                None => (s.rx_bytes > 0, s.writable()),
            };
            if readable {
                m |= Events::IN | Events::RDNORM;
            }
            if wr_shut || writable {
                m |= Events::OUT | Events::WRNORM;
            } else {
                s.nospace.set(true);
            }
        }
        if s.error.is_some() {
            m |= Events::ERR;
        }
        m
    }

    // ----- socket calls --------------------------------------------------------------

    /// `socket(AF_INET, SOCK_STREAM, 0)`: a new (non-blocking) TCP socket.
    pub fn socket(&mut self) -> Result<Fd, Error> {
        let sock = match self.sock_pool.pop() {
            Some(mut b) => {
                b.renew(self.defaults, self.sndbuf, self.rcvbuf);
                b
            }
            None => Box::new(Sock::new(self.defaults, self.sndbuf, self.rcvbuf)),
        };
        self.alloc(Obj::Sock(sock))
    }

    /// `bind`: the local address (ours or 0.0.0.0) and port (0: chosen at connect).
    pub fn bind(&mut self, fd: Fd, addr: SocketAddrV4) -> Result<(), Error> {
        let local_ip = self.local_ip;
        let s = self.sock_mut(fd)?;
        if s.phase != Phase::Fresh || s.bound_port.is_some() {
            return Err(Error::InvalidInput);
        }
        if !addr.ip().is_unspecified() && *addr.ip() != local_ip {
            return Err(Error::AddrNotAvailable);
        }
        s.bound_port = (addr.port() != 0).then_some(addr.port());
        // As given: a wildcard bind reads back as 0.0.0.0 (connections then name the
        // address they use).
        s.local = Some(addr);
        Ok(())
    }

    /// `listen`: waits for the stack's answer (a port taken is [`Error::AddrInUse`]). A
    /// socket not bound to a port gets a free ephemeral one, as on Linux. The only call that
    /// waits for its stack (up to 5 s).
    pub fn listen(&mut self, fd: Fd, backlog: usize) -> Result<(), Error> {
        let direct = self.is_direct();
        let s = self.sock_mut(fd)?;
        if s.phase == Phase::Listening {
            s.backlog = backlog.max(1);
            return Ok(());
        }
        if s.phase != Phase::Fresh {
            return Err(Error::InvalidInput);
        }
        // Port 0: the stack picks a free one.
        let port = s.bound_port.unwrap_or(0);
        if direct {
            s.backlog = backlog.max(1);
            s.error = None;
            return self.d_listen(fd, port, backlog.max(1));
        }
        s.phase = Phase::ListenPending;
        s.backlog = backlog.max(1);
        s.error = None;
        self.send(Cmd::Listen {
            fd,
            port,
            backlog: backlog.max(1),
        })?;
        loop {
            let s = self.sock_mut(fd)?;
            match s.phase {
                Phase::Listening => return Ok(()),
                Phase::Fresh => return Err(s.error.take().unwrap_or(Error::InvalidInput)),
                _ => self.block(Some(Instant::now() + Duration::from_secs(5)))?,
            }
        }
    }

    /// `accept`: a waiting connection's descriptor and peer, or [`Error::WouldBlock`].
    pub fn accept(&mut self, fd: Fd) -> Result<(Fd, SocketAddrV4), Error> {
        let s = self.sock_mut(fd)?;
        if s.phase != Phase::Listening {
            return Err(Error::InvalidInput);
        }
        if let Link::Direct { .. } = self.link {
            return self.d_accept(fd);
        }
        let Some(s) = self.sock_mut(fd).ok() else {
            return Err(Error::BadDescriptor);
        };
        let (handle, local, peer) = s.accept_q.pop_front().ok_or(Error::WouldBlock)?;
        let (opts, lsndbuf, lrcvbuf) = (s.opts, s.sndbuf, s.rcvbuf);
        let new = self.accepted_socket(fd, local, peer)?;
        if let Ok(c) = self.sock_mut(new) {
            c.credit = lsndbuf;
        }
        self.send(Cmd::Adopt {
            fd: new,
            handle,
            opts: opts.for_stack(lrcvbuf, lsndbuf),
        })?;
        Ok((new, peer))
    }

    /// A new connected socket for a connection `accept` took from listener `fd`: its
    /// addresses, and the listener's options and buffer sizes (inherited, as on Linux).
    fn accepted_socket(
        &mut self,
        fd: Fd,
        local: SocketAddrV4,
        peer: SocketAddrV4,
    ) -> Result<Fd, Error> {
        let l = self.sock(fd)?;
        let (opts, sndbuf, rcvbuf) = (l.opts, l.sndbuf, l.rcvbuf);
        let new = self.socket()?;
        let c = self.sock_mut(new)?;
        c.phase = Phase::Connected;
        c.local = Some(local);
        c.peer = Some(peer);
        c.opts = opts;
        c.sndbuf = sndbuf;
        c.rcvbuf = rcvbuf;
        Ok(new)
    }

    /// `connect`: starts the handshake and returns [`Error::InProgress`]; OUT (connected) or
    /// ERR (with the reason in `SO_ERROR`) follows.
    pub fn connect(&mut self, fd: Fd, remote: SocketAddrV4) -> Result<(), Error> {
        let direct = self.is_direct();
        let s = self.sock_mut(fd)?;
        match s.phase {
            Phase::Connecting if s.ended.is_some() => {
                // Linux's __inet_stream_connect: a connect that failed reports its error
                // (or ECONNABORTED once taken) and leaves the socket unconnected; the next
                // connect starts anew. The stack forgets the old connection first.
                let err = s.error.take().unwrap_or(Error::ConnectionAborted);
                if direct {
                    self.d_forget(fd);
                    self.sock_mut(fd)?.reset_unconnected();
                    return Err(err);
                }
                s.reset_unconnected();
                self.send(Cmd::Close { fd, abort: true })?;
                return Err(err);
            }
            Phase::Connecting => return Err(Error::Already),
            Phase::Connected => return Err(Error::IsConnected),
            Phase::Listening | Phase::ListenPending => return Err(Error::IsConnected),
            Phase::Fresh if s.ended.is_some() => return Err(Error::InvalidInput),
            Phase::Fresh => {}
        }
        if let Link::Direct { .. } = self.link {
            return self.d_connect(fd, remote);
        }
        let Ok(s) = self.sock_mut(fd) else {
            return Err(Error::BadDescriptor);
        };
        s.phase = Phase::Connecting;
        s.peer = Some(remote);
        s.credit = s.sndbuf;
        let (local_port, opts) = (s.bound_port, s.opts.for_stack(s.rcvbuf, s.sndbuf));
        self.send(Cmd::Connect {
            fd,
            remote,
            local_port,
            opts,
        })?;
        Err(Error::InProgress)
    }

    /// `read`/`recv`: bytes received, `Ok(0)` at end of stream, or [`Error::WouldBlock`].
    pub fn read(&mut self, fd: Fd, buf: &mut [u8]) -> Result<usize, Error> {
        self.recv(fd, buf, false)
    }

    /// `recv` with `MSG_PEEK` when `peek`: the bytes stay to be read again.
    pub fn recv(&mut self, fd: Fd, buf: &mut [u8], peek: bool) -> Result<usize, Error> {
        if let Some(Obj::Pipe(_)) = self.objs.get(fd as usize) {
            return self.pipe_read(fd, buf, peek);
        }
        let s = self.sock(fd)?;
        if let (Some(h), true) = (s.handle, self.is_direct()) {
            return self.d_recv(fd, h, buf, peek);
        }
        let Context { objs, spare, .. } = self;
        let Some(Obj::Sock(s)) = objs.get_mut(fd as usize) else {
            return Err(Error::BadDescriptor);
        };
        let rcvbuf = s.rcvbuf;
        if buf.is_empty() && s.phase == Phase::Connected {
            // Linux returns 0 at once for a zero-length read.
            return Ok(0);
        }
        if s.rx_bytes == 0 {
            return s.nothing_to_read();
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        let mut off = s.rx_off;
        let mut chunks = 0;
        for chunk in s.rx.iter() {
            let part = &chunk[off..];
            let k = part.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&part[..k]);
            n += k;
            if k < part.len() {
                off += k;
                break;
            }
            off = 0;
            chunks += 1;
            if n == buf.len() {
                break;
            }
        }
        if peek {
            return Ok(n);
        }
        for mut b in s.rx.drain(..chunks) {
            if spare.len() < crate::stack::SPARE_BUFFERS {
                b.clear();
                spare.push(b);
            }
        }
        s.rx_off = off;
        s.rx_bytes -= n;
        s.unreported += n;
        // Report reads once a quarter of the window was read: the stack then still has
        // three quarters to deliver, so it never waits for a report, and a stream of small
        // reads costs a command per quarter window, not per read.
        if s.unreported >= rcvbuf / 4 {
            let k = std::mem::take(&mut s.unreported);
            self.send(Cmd::Consumed { fd, n: k })?;
        }
        Ok(n)
    }

    /// `readv`: fills `bufs` in order.
    pub fn readv(&mut self, fd: Fd, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        let mut total = 0;
        for b in bufs.iter_mut() {
            if b.is_empty() {
                continue;
            }
            match self.read(fd, b) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    /// `write`/`send`: how many bytes were taken (all or part), or [`Error::WouldBlock`]
    /// when the send buffer is full.
    pub fn write(&mut self, fd: Fd, data: &[u8]) -> Result<usize, Error> {
        if let Some(Obj::Pipe(_)) = self.objs.get(fd as usize) {
            return self.pipe_write(fd, data);
        }
        let s = self.sock_mut(fd)?;
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        if s.wr_shut || s.ended.is_some() {
            return Err(Error::BrokenPipe);
        }
        match s.phase {
            Phase::Connected => {}
            Phase::Connecting => return Err(Error::WouldBlock),
            _ => return Err(Error::NotConnected),
        }
        if data.is_empty() {
            return Ok(0);
        }
        if s.handle.is_some() {
            return self.d_write(fd, data);
        }
        let n = data.len().min(s.credit);
        if n < data.len() {
            s.nospace.set(true);
        }
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        s.credit -= n;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.extend_from_slice(&data[..n]);
        self.send(Cmd::Write { fd, buf })?;
        Ok(n)
    }

    /// `writev`: writes `bufs` in order, as one call.
    pub fn writev(&mut self, fd: Fd, bufs: &[&[u8]]) -> Result<usize, Error> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut joined = Vec::with_capacity(total);
        for b in bufs {
            joined.extend_from_slice(b);
        }
        self.write(fd, &joined)
    }

    /// `shutdown`.
    pub fn shutdown(&mut self, fd: Fd, how: Shutdown) -> Result<(), Error> {
        let s = self.sock_mut(fd)?;
        if !matches!(s.phase, Phase::Connected | Phase::Connecting) {
            return Err(Error::NotConnected);
        }
        if s.handle.is_some() {
            let read = matches!(how, Shutdown::Read | Shutdown::Both);
            let write = matches!(how, Shutdown::Write | Shutdown::Both);
            self.d_shutdown(fd, read, write);
            self.notify(fd, Events::OUT | Events::IN | Events::HUP);
            return Ok(());
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            s.rd_closed = true;
            let n = s.rx_bytes + std::mem::take(&mut s.unreported);
            s.rx.clear();
            s.rx_off = 0;
            s.rx_bytes = 0;
            if n > 0 {
                self.send(Cmd::Consumed { fd, n })?;
            }
        }
        let s = self.sock_mut(fd)?;
        if matches!(how, Shutdown::Write | Shutdown::Both) && !s.wr_shut {
            s.wr_shut = true;
            self.send(Cmd::Shutdown { fd })?;
        }
        self.notify(fd, Events::OUT | Events::IN | Events::HUP);
        Ok(())
    }

    /// `close`: graceful (FIN after the data written), or a reset when received data was
    /// left unread or `SO_LINGER` is zero (as Linux).
    pub fn close(&mut self, fd: Fd) -> Result<(), Error> {
        match self.objs.get(fd as usize) {
            Some(Obj::Epoll(_)) => {
                self.objs[fd as usize] = Obj::Free;
                self.free.push(fd);
                for o in &mut self.objs {
                    match o {
                        Obj::Sock(s) => s.watchers.retain(|&w| w != fd),
                        Obj::Pipe(p) => p.watchers.retain(|&w| w != fd),
                        _ => {}
                    }
                }
                return Ok(());
            }
            Some(Obj::Pipe(_)) => return self.pipe_close(fd),
            Some(Obj::Sock(_)) => {}
            _ => return Err(Error::BadDescriptor),
        }
        let Obj::Sock(s) = std::mem::replace(&mut self.objs[fd as usize], Obj::Closing) else {
            return Err(Error::BadDescriptor);
        };
        for ep in &s.watchers {
            if let Some(Obj::Epoll(e)) = self.objs.get_mut(*ep as usize) {
                let _ = e.delete(fd);
            }
        }
        let talked = !matches!(s.phase, Phase::Fresh) || s.ended.is_some();
        let abort = s.rx_bytes > 0 || s.opts.linger == Some(0);
        let (handle, listener) = (s.handle, s.phase == Phase::Listening);
        if self.sock_pool.len() < SOCK_POOL {
            self.sock_pool.push(s);
        }
        if self.is_direct() {
            // The endpoint resets a connection closed with unread bytes itself.
            if let Some(h) = handle {
                self.d_close(h, listener, abort);
            }
            self.objs[fd as usize] = Obj::Free;
            self.free.push(fd);
            return Ok(());
        }
        if !talked {
            // The stack never heard of it.
            self.objs[fd as usize] = Obj::Free;
            self.free.push(fd);
            return Ok(());
        }
        self.send(Cmd::Close { fd, abort })
    }

    /// Resets the connection (RST) and closes the descriptor.
    pub fn abort(&mut self, fd: Fd) -> Result<(), Error> {
        self.sock_mut(fd)?.opts.linger = Some(0);
        self.close(fd)
    }

    /// `getsockname`.
    pub fn local_addr(&self, fd: Fd) -> Result<SocketAddrV4, Error> {
        let s = self.sock(fd)?;
        Ok(s.local
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// `getpeername`.
    pub fn peer_addr(&self, fd: Fd) -> Result<SocketAddrV4, Error> {
        let s = self.sock(fd)?;
        match (s.phase, s.peer) {
            (Phase::Connected, Some(p)) if s.ended.is_none() => Ok(p),
            _ => Err(Error::NotConnected),
        }
    }

    /// `getsockopt(SO_ERROR)`: the pending error, cleared by reading it.
    pub fn take_error(&mut self, fd: Fd) -> Result<Option<Error>, Error> {
        Ok(self.sock_mut(fd)?.error.take())
    }

    /// `ioctl(FIONREAD)`: bytes ready to read (on a socket: those already handed to this
    /// side, at most `SO_RCVBUF`; the stack may hold more).
    pub fn bytes_readable(&self, fd: Fd) -> Result<usize, Error> {
        if let Some(Obj::Pipe(p)) = self.objs.get(fd as usize) {
            return Ok(self
                .pipes
                .get(p.id)
                .and_then(Option::as_ref)
                .map_or(0, |b| if p.write { 0 } else { b.data.len() }));
        }
        let s = self.sock(fd)?;
        match s.handle {
            Some(h) if !s.rd_shut => Ok(self.d_available(h)),
            Some(_) => Ok(0),
            None => Ok(s.rx_bytes),
        }
    }

    /// `setsockopt(TCP_NODELAY)`.
    pub fn set_nodelay(&mut self, fd: Fd, on: bool) -> Result<(), Error> {
        self.setsockopt(fd, SockOpt::NoDelay(on))
    }

    /// `getsockopt(TCP_NODELAY)`.
    pub fn nodelay(&self, fd: Fd) -> Result<bool, Error> {
        Ok(self.sock(fd)?.opts.nodelay)
    }

    // ----- socket options --------------------------------------------------------------

    /// `setsockopt`. Values take effect at once, on a connected socket too.
    pub fn setsockopt(&mut self, fd: Fd, opt: SockOpt) -> Result<(), Error> {
        let (max_snd, max_rcv) = (self.sndbuf, self.rcvbuf);
        let s = self.sock_mut(fd)?;
        let positive = |v: u32| {
            if v == 0 {
                Err(Error::InvalidInput)
            } else {
                Ok(v)
            }
        };
        match opt {
            // SO_ERROR is read-only: ENOPROTOOPT, as Linux.
            SockOpt::Error(_) => return Err(Error::NotSupported),
            SockOpt::NoDelay(on) => s.opts.nodelay = on,
            SockOpt::SendBuffer(n) => {
                // Bounded by the stack's own send buffer, which holds what is unacknowledged.
                let n = n.clamp(MIN_SOCKET_BUFFER.min(max_snd), max_snd);
                let held = s.sndbuf.saturating_sub(s.credit);
                s.sndbuf = n;
                s.credit = n.saturating_sub(held);
            }
            SockOpt::RecvBuffer(n) => s.rcvbuf = n.clamp(MIN_SOCKET_BUFFER.min(max_rcv), max_rcv),
            SockOpt::KeepAlive(on) => s.opts.keepalive = on,
            SockOpt::KeepIdle(v) => {
                s.opts.keepalive_params.idle =
                    tcp_core::Duration::from_secs(u64::from(positive(v)?))
            }
            SockOpt::KeepInterval(v) => {
                s.opts.keepalive_params.interval =
                    tcp_core::Duration::from_secs(u64::from(positive(v)?))
            }
            SockOpt::KeepCount(v) => s.opts.keepalive_params.count = positive(v)?,
            SockOpt::Linger(l) => s.opts.linger = l,
            SockOpt::ReuseAddr(on) => s.opts.reuse_addr = on,
        }
        let talked = !matches!(s.phase, Phase::Fresh | Phase::ListenPending) && s.ended.is_none();
        let needs_stack = matches!(
            opt,
            SockOpt::NoDelay(_)
                | SockOpt::SendBuffer(_)
                | SockOpt::RecvBuffer(_)
                | SockOpt::KeepAlive(_)
                | SockOpt::KeepIdle(_)
                | SockOpt::KeepInterval(_)
                | SockOpt::KeepCount(_)
        );
        if s.handle.is_some() {
            if needs_stack {
                self.d_set_opts(fd);
            }
        } else if talked && needs_stack {
            let opts = s.opts.for_stack(s.rcvbuf, s.sndbuf);
            self.send(Cmd::SetOpts { fd, opts })?;
        }
        let s = self.sock(fd)?;
        let writable = match s.handle {
            Some(h) => self.d_writable(h, s.sndbuf),
            None => s.writable(),
        };
        if matches!(opt, SockOpt::SendBuffer(_)) && writable {
            self.notify(fd, Events::OUT | Events::WRNORM);
        }
        Ok(())
    }

    /// `getsockopt`. Reading [`SockOptName::Error`] clears the pending error.
    pub fn getsockopt(&mut self, fd: Fd, name: SockOptName) -> Result<SockOpt, Error> {
        let s = self.sock_mut(fd)?;
        let secs = |d: tcp_core::Duration| (d.micros() / 1_000_000) as u32;
        Ok(match name {
            SockOptName::Error => SockOpt::Error(s.error.take()),
            SockOptName::NoDelay => SockOpt::NoDelay(s.opts.nodelay),
            SockOptName::SendBuffer => SockOpt::SendBuffer(s.sndbuf),
            SockOptName::RecvBuffer => SockOpt::RecvBuffer(s.rcvbuf),
            SockOptName::KeepAlive => SockOpt::KeepAlive(s.opts.keepalive),
            SockOptName::KeepIdle => SockOpt::KeepIdle(secs(s.opts.keepalive_params.idle)),
            SockOptName::KeepInterval => {
                SockOpt::KeepInterval(secs(s.opts.keepalive_params.interval))
            }
            SockOptName::KeepCount => SockOpt::KeepCount(s.opts.keepalive_params.count),
            SockOptName::Linger => SockOpt::Linger(s.opts.linger),
            SockOptName::ReuseAddr => SockOpt::ReuseAddr(s.opts.reuse_addr),
        })
    }

    // ----- pipes ---------------------------------------------------------------------

    /// `pipe` (mTCP's `mtcp_pipe`): a byte pipe inside this context whose ends epoll can
    /// watch; returns (read end, write end). Both ends are non-blocking.
    pub fn pipe(&mut self) -> Result<(Fd, Fd), Error> {
        let id = match self.pipes.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.pipes.push(None);
                self.pipes.len() - 1
            }
        };
        let r = self.alloc(Obj::Pipe(Box::new(PipeEnd {
            id,
            write: false,
            watchers: Vec::new(),
        })))?;
        let w = match self.alloc(Obj::Pipe(Box::new(PipeEnd {
            id,
            write: true,
            watchers: Vec::new(),
        }))) {
            Ok(w) => w,
            Err(e) => {
                self.objs[r as usize] = Obj::Free;
                self.free.push(r);
                return Err(e);
            }
        };
        self.pipes[id] = Some(PipeBuf {
            data: VecDeque::new(),
            reader: Some(r),
            writer: Some(w),
        });
        Ok((r, w))
    }

    fn pipe_of(&mut self, fd: Fd) -> Result<(bool, &mut PipeBuf), Error> {
        let Some(Obj::Pipe(p)) = self.objs.get(fd as usize) else {
            return Err(Error::BadDescriptor);
        };
        let (id, write) = (p.id, p.write);
        let buf = self
            .pipes
            .get_mut(id)
            .and_then(Option::as_mut)
            .ok_or(Error::BadDescriptor)?;
        Ok((write, buf))
    }

    fn pipe_read(&mut self, fd: Fd, out: &mut [u8], peek: bool) -> Result<usize, Error> {
        let (write, p) = self.pipe_of(fd)?;
        if write {
            return Err(Error::BadDescriptor);
        }
        if p.data.is_empty() {
            return if p.writer.is_none() {
                Ok(0)
            } else {
                Err(Error::WouldBlock)
            };
        }
        let n = out.len().min(p.data.len());
        for (o, b) in out.iter_mut().zip(p.data.iter()) {
            *o = *b;
        }
        if peek {
            return Ok(n);
        }
        let was_full = p.data.len() >= PIPE_CAPACITY;
        p.data.drain(..n);
        let writer = p.writer;
        if let (true, Some(w)) = (was_full, writer) {
            self.notify(w, Events::OUT | Events::WRNORM);
        }
        Ok(n)
    }

    fn pipe_write(&mut self, fd: Fd, data: &[u8]) -> Result<usize, Error> {
        let (write, p) = self.pipe_of(fd)?;
        if !write {
            return Err(Error::BadDescriptor);
        }
        if p.reader.is_none() {
            return Err(Error::BrokenPipe);
        }
        let n = data.len().min(PIPE_CAPACITY - p.data.len());
        if n == 0 && !data.is_empty() {
            return Err(Error::WouldBlock);
        }
        p.data.extend(&data[..n]);
        if let Some(r) = p.reader {
            self.notify(r, Events::IN | Events::RDNORM);
        }
        Ok(n)
    }

    fn pipe_close(&mut self, fd: Fd) -> Result<(), Error> {
        let Obj::Pipe(end) = std::mem::replace(&mut self.objs[fd as usize], Obj::Free) else {
            return Err(Error::BadDescriptor);
        };
        self.free.push(fd);
        for ep in &end.watchers {
            if let Some(Obj::Epoll(e)) = self.objs.get_mut(*ep as usize) {
                let _ = e.delete(fd);
            }
        }
        let Some(p) = self.pipes.get_mut(end.id).and_then(Option::as_mut) else {
            return Ok(());
        };
        let other = if end.write {
            p.writer = None;
            p.reader
        } else {
            p.reader = None;
            p.writer
        };
        match other {
            // The other end sees end of stream (HUP) or a broken pipe (ERR).
            Some(o) => self.notify(o, Events::all()),
            None => self.pipes[end.id] = None,
        }
        Ok(())
    }

    // ----- epoll ---------------------------------------------------------------------

    /// `epoll_create`: an epoll instance for at most `size` registrations.
    pub fn epoll_create(&mut self, size: usize) -> Result<Fd, Error> {
        if size == 0 {
            return Err(Error::InvalidInput);
        }
        self.alloc(Obj::Epoll(Box::new(Epoll::new(size, MAX_FDS as u32))))
    }

    /// `epoll_ctl`.
    pub fn epoll_ctl(
        &mut self,
        ep: Fd,
        op: EpollOp,
        fd: Fd,
        events: Events,
        data: u64,
    ) -> Result<(), Error> {
        self.epoll_fd(ep)?;
        if ep == fd {
            return Err(Error::InvalidInput);
        }
        match self.objs.get(fd as usize) {
            Some(Obj::Sock(_) | Obj::Pipe(_)) => {}
            // Linux refuses epolls inside epolls only for loops; we have no use for nesting.
            Some(Obj::Epoll(_)) => return Err(Error::NotSupported),
            _ => return Err(Error::BadDescriptor),
        }
        let level = Self::level(&self.objs, &self.pipes, self.endpoint(), fd);
        let Some(Obj::Epoll(e)) = self.objs.get_mut(ep as usize) else {
            return Err(Error::BadDescriptor);
        };
        let r = match op {
            EpollOp::Add => e.add(fd, events, data, level),
            EpollOp::Mod => e.modify(fd, events, data, level),
            EpollOp::Del => e.delete(fd),
        };
        r.map_err(|e| match e {
            event::CtlError::Exists => Error::Exists,
            event::CtlError::NotFound => Error::NotFound,
            event::CtlError::Full => Error::NoBufferSpace,
            _ => Error::InvalidInput,
        })?;
        if let Some(w) = self.watchers_mut(fd) {
            match op {
                EpollOp::Add => w.push(ep),
                EpollOp::Del => w.retain(|&x| x != ep),
                EpollOp::Mod => {}
            }
        }
        Ok(())
    }

    /// `epoll_wait`: fills `out` with ready sockets; waits up to `timeout_ms` (negative:
    /// forever) when none is ready. Never spins: it sleeps until the stack has news.
    pub fn epoll_wait(
        &mut self,
        ep: Fd,
        out: &mut [EpollEvent],
        timeout_ms: i32,
    ) -> Result<usize, Error> {
        self.epoll_fd(ep)?;
        if out.is_empty() {
            return Err(Error::InvalidInput);
        }
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        loop {
            self.poll()?;
            let n = self.collect(ep, out);
            if n > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(n);
            }
            self.block(deadline)?;
        }
    }

    /// `ep` is an epoll instance: else EBADF when it is not open, EINVAL when it is open but
    /// something else (as Linux).
    fn epoll_fd(&self, ep: Fd) -> Result<(), Error> {
        match self.objs.get(ep as usize) {
            Some(Obj::Epoll(_)) => Ok(()),
            Some(Obj::Sock(_) | Obj::Pipe(_)) => Err(Error::InvalidInput),
            _ => Err(Error::BadDescriptor),
        }
    }

    fn collect(&mut self, ep: Fd, out: &mut [EpollEvent]) -> usize {
        let Some(Obj::Epoll(mut e)) = self
            .objs
            .get_mut(ep as usize)
            .map(|o| std::mem::replace(o, Obj::Closing))
        else {
            return 0;
        };
        let endpoint = match &self.link {
            Link::Direct { core, .. } => Some(core.endpoint()),
            Link::Thread { .. } => None,
        };
        let (objs, pipes) = (&self.objs, &self.pipes);
        let n = e.wait(out, |fd| Self::level(objs, pipes, endpoint, fd));
        self.objs[ep as usize] = Obj::Epoll(e);
        n
    }
}
