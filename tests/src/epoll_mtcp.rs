//! The mtcp-api half of the epoll differential test: [`MtcpSockets`] runs the scenarios of
//! [`epoll_diff`](crate::epoll_diff) on two mtcp-api contexts (a "client" stack at 10.0.0.1 and
//! a "server" stack at 10.0.0.2) joined by a shared-memory link, in either of mtcp-api's modes
//! ([`Mode`]): run-to-completion contexts, or contexts whose stacks run in their own threads
//! ([`mtcp_api::init`]). The two modes reach the TCP endpoint by different paths (directly,
//! or through command and message queues), so the test runs every scenario in both.
//!
//! A socket belongs to the server when its first role is to listen or to be accepted, to the
//! client otherwise. Each context has its own epoll instance (an mtcp epoll watches the
//! sockets of its own context only); a `Wait` records the union of both, which is what one
//! Linux epoll watching every socket reports as long as `maxevents` holds them all (the
//! scenarios make sure it does).
//!
//! How the network moves depends on the mode. In run-to-completion mode it moves only while a
//! context is called (its `poll` runs a pass of its stack). With stack threads it moves on
//! its own, like Linux's, but what a context sees of it changes only when the context applies
//! what its stack sent (`poll`, `epoll_wait`, `listen`). Either way, [`Step::Settle`] and
//! [`Step::Wait`] poll both contexts for [`SETTLE`] of wall time (longer than the delayed-ACK
//! timer, so every ACK the peer owes has been sent; with stack threads, sleeping [`PAUSE`]
//! between polls so that the stack threads get the CPU), and the steps that wait on the
//! network (`FillSendBuffer`, `Drain`) settle between rounds as the Linux runner does.

use crate::epoll_diff::{describe, Name, Scenario, Sockets, Step, WaitResult, COMPARED};
use core::net::{Ipv4Addr, SocketAddrV4};
use mtcp_api::{Config, Context, EpollEvent, EpollOp, Error, Events, Fd, Mtcp, Shutdown};
use std::time::{Duration, Instant};

/// How long the stacks run at a settle point.
pub const SETTLE: Duration = Duration::from_millis(60);
/// With stack threads, the sleep between two polls of a settle: the stack threads (two per
/// run, and the test runs many at once) get the CPU instead of the polling thread spinning.
pub const PAUSE: Duration = Duration::from_micros(50);
/// Socket buffers of both stacks (Linux's runner fixes 256 KiB too).
pub const BUFFER: usize = 256 * 1024;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Port where nothing listens, for `ConnectRefused`.
const REFUSING_PORT: u16 = 9999;
const MAX_ROUNDS: usize = 50;

/// How [`MtcpSockets`] runs its two stacks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// [`Context::run_to_completion`]: each stack runs in the runner's thread, inside its
    /// context's calls (`poll`, `epoll_wait`).
    #[default]
    Rtc,
    /// [`mtcp_api::init`]: each stack runs in its own thread; a context's `poll` applies what
    /// its stack sent.
    Threaded,
}

impl Mode {
    /// `"rtc"` or `"threaded"`: for reports and link names.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Rtc => "rtc",
            Mode::Threaded => "threaded",
        }
    }
}

impl core::fmt::Display for Mode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs scenarios on mtcp-api contexts in one [`Mode`] (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub struct MtcpSockets {
    /// How the stacks run.
    pub mode: Mode,
}

impl MtcpSockets {
    /// A runner in `mode`.
    pub fn new(mode: Mode) -> MtcpSockets {
        MtcpSockets { mode }
    }
}

fn config(link: &str, me: Ipv4Addr, peer: Ipv4Addr) -> Result<Config, String> {
    let mut c = Config::shm_host(link, me, peer);
    c.pin_threads = false;
    c.secret = Some([u32::from(me) as u8; 16]);
    (c.tcp.send_buffer, c.tcp.recv_buffer) = (BUFFER, BUFFER);
    c.tcp.time_wait_ms = 1000;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

struct Run {
    names: Vec<Name>,
    sides: Vec<Side>,
    fds: Vec<Option<Fd>>,
    /// Listening port per name (listeners only).
    ports: Vec<Option<u16>>,
    ctx: [Context; 2],
    ep: [Fd; 2],
    results: Vec<WaitResult>,
    mode: Mode,
    /// The stack threads behind `ctx` ([`Mode::Threaded`]; empty otherwise). Declared after
    /// `ctx` so that they are dropped (stopped) after the contexts.
    stacks: Vec<Mtcp>,
}

/// Which side each name is on: the server for names whose first role is to listen or be
/// accepted.
fn sides(s: &Scenario, names: &[Name]) -> Vec<Side> {
    names
        .iter()
        .map(|&n| {
            let role = s.steps.iter().find_map(|st| match *st {
                Step::Listen(m) if m == n => Some(Side::Server),
                Step::Accept(m, _) if m == n => Some(Side::Server),
                Step::Connect(m, _) | Step::ConnectRefused(m) if m == n => Some(Side::Client),
                _ => None,
            });
            role.unwrap_or(Side::Client)
        })
        .collect()
}

fn err(what: &str) -> impl Fn(Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The context of core 0 of `config` in `mode`; with stack threads, their [`Mtcp`] goes to
/// `stacks` (it must outlive the context).
fn context(mode: Mode, config: Config, stacks: &mut Vec<Mtcp>) -> Result<Context, String> {
    match mode {
        Mode::Rtc => Context::run_to_completion(&config, 0).map_err(|e| e.to_string()),
        Mode::Threaded => {
            let mut mtcp = mtcp_api::init(config).map_err(|e| e.to_string())?;
            let ctx = mtcp.context(0).ok_or("no context for core 0")?;
            stacks.push(mtcp);
            Ok(ctx)
        }
    }
}

impl Run {
    fn new(s: &Scenario, mode: Mode) -> Result<Run, String> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        // Runs go on in parallel (each scenario, in each mode): each has its own link.
        let link = format!(
            "epoll-diff-{mode}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut stacks = Vec::new();
        let mut client = context(mode, config(&link, CLIENT, SERVER)?, &mut stacks)?;
        let mut server = context(mode, config(&link, SERVER, CLIENT)?, &mut stacks)?;
        let ep = [
            client.epoll_create(64).map_err(err("epoll_create"))?,
            server.epoll_create(64).map_err(err("epoll_create"))?,
        ];
        let names = s.names();
        Ok(Run {
            sides: sides(s, &names),
            fds: vec![None; names.len()],
            ports: vec![None; names.len()],
            names,
            ctx: [client, server],
            ep,
            results: Vec::new(),
            mode,
            stacks,
        })
    }

    fn index(&self, n: Name) -> usize {
        self.names.iter().position(|&m| m == n).unwrap_or(0)
    }

    fn side(&self, n: Name) -> usize {
        match self.sides[self.index(n)] {
            Side::Client => 0,
            Side::Server => 1,
        }
    }

    fn fd(&self, n: Name) -> Result<Fd, String> {
        self.fds[self.index(n)].ok_or_else(|| format!("{n} is not open"))
    }

    /// `n`'s socket, created if absent; with its context index.
    fn take_or_create(&mut self, n: Name) -> Result<(usize, Fd), String> {
        let (i, side) = (self.index(n), self.side(n));
        if let Some(fd) = self.fds[i] {
            return Ok((side, fd));
        }
        let fd = self.ctx[side].socket().map_err(err("socket"))?;
        self.fds[i] = Some(fd);
        Ok((side, fd))
    }

    /// Runs both stacks for `d` (run-to-completion), or lets them run and applies what they
    /// sent (stack threads, pausing [`PAUSE`] between polls).
    fn settle_for(&mut self, d: Duration) -> Result<(), String> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            for c in &mut self.ctx {
                c.poll().map_err(err("poll"))?;
            }
            if self.mode == Mode::Threaded {
                std::thread::sleep(PAUSE);
            }
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<(), String> {
        self.settle_for(SETTLE)
    }

    fn connect(&mut self, n: Name, port: u16) -> Result<(), String> {
        let (side, fd) = self.take_or_create(n)?;
        match self.ctx[side].connect(fd, SocketAddrV4::new(SERVER, port)) {
            Err(Error::InProgress) => Ok(()),
            other => Err(format!("connect: {other:?}")),
        }
    }

    /// Writes up to `n` bytes; the count taken.
    fn send(&mut self, name: Name, n: usize) -> Result<usize, String> {
        let (side, fd) = (self.side(name), self.fd(name)?);
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while sent < n {
            let len = (n - sent).min(chunk.len());
            match self.ctx[side].write(fd, &chunk[..len]) {
                Ok(k) => sent += k,
                Err(Error::WouldBlock) => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(sent)
    }

    fn read_all(&mut self, name: Name) -> Result<usize, String> {
        let (side, fd) = (self.side(name), self.fd(name)?);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match self.ctx[side].read(fd, &mut buf) {
                Ok(0) | Err(Error::WouldBlock) => return Ok(total),
                Ok(k) => total += k,
                Err(
                    Error::ConnectionReset
                    | Error::ConnectionRefused
                    | Error::TimedOut
                    | Error::BrokenPipe,
                ) => return Ok(total),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Socket(n) => {
                self.take_or_create(n)?;
            }
            Step::Listen(n) => {
                let (side, fd) = self.take_or_create(n)?;
                let port = 8000 + self.index(n) as u16;
                let c = &mut self.ctx[side];
                c.bind(fd, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
                    .map_err(err("bind"))?;
                c.listen(fd, 16).map_err(err("listen"))?;
                let i = self.index(n);
                self.ports[i] = Some(port);
            }
            Step::Connect(n, l) => {
                let port = self.ports[self.index(l)].ok_or(format!("{l} is not listening"))?;
                self.connect(n, port)?;
            }
            Step::ConnectRefused(n) => self.connect(n, REFUSING_PORT)?,
            Step::Accept(n, l) => {
                let (side, lfd) = (self.side(l), self.fd(l)?);
                let start = Instant::now();
                let fd = loop {
                    match self.ctx[side].accept(lfd) {
                        Ok((fd, _)) => break fd,
                        Err(Error::WouldBlock) if start.elapsed() < Duration::from_secs(1) => {
                            self.settle_for(Duration::from_millis(1))?;
                        }
                        Err(e) => return Err(format!("accept: {e}")),
                    }
                };
                let i = self.index(n);
                self.fds[i] = Some(fd);
            }
            Step::Write(n, len) => {
                let sent = self.send(n, len)?;
                if sent != len {
                    return Err(format!("only {sent} of {len} bytes written"));
                }
            }
            Step::FillSendBuffer(n) => {
                let mut total = 0;
                for _ in 0..MAX_ROUNDS {
                    let sent = self.send(n, usize::MAX)?;
                    total += sent;
                    if sent == 0 && total > 0 {
                        return Ok(());
                    }
                    self.settle()?;
                }
                return Err(format!("send buffer still taking data ({total} bytes)"));
            }
            Step::Read(n, len) => {
                let (side, fd) = (self.side(n), self.fd(n)?);
                let mut buf = vec![0u8; len];
                match self.ctx[side].read(fd, &mut buf) {
                    Ok(0) => return Err("end of stream".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            Step::ReadAll(n) => {
                self.read_all(n)?;
            }
            Step::Drain(n) => {
                let mut rounds = 0;
                while self.read_all(n)? > 0 {
                    rounds += 1;
                    if rounds == MAX_ROUNDS {
                        return Err(format!("still reading after {rounds} rounds"));
                    }
                    self.settle()?;
                }
            }
            Step::TakeError(n) => {
                let (side, fd) = (self.side(n), self.fd(n)?);
                if self.ctx[side]
                    .take_error(fd)
                    .map_err(err("SO_ERROR"))?
                    .is_none()
                {
                    return Err("no pending error".into());
                }
            }
            Step::ShutdownWrite(n) => {
                let (side, fd) = (self.side(n), self.fd(n)?);
                self.ctx[side]
                    .shutdown(fd, Shutdown::Write)
                    .map_err(err("shutdown"))?;
            }
            Step::Close(n) | Step::Abort(n) => {
                let (side, fd) = (self.side(n), self.fd(n)?);
                let r = if matches!(step, Step::Abort(_)) {
                    self.ctx[side].abort(fd)
                } else {
                    self.ctx[side].close(fd)
                };
                r.map_err(err("close"))?;
                let i = self.index(n);
                self.fds[i] = None;
            }
            Step::EpollAdd(n, flags) | Step::EpollMod(n, flags) => {
                let (side, fd) = (self.side(n), self.fd(n)?);
                let op = if matches!(step, Step::EpollAdd(..)) {
                    EpollOp::Add
                } else {
                    EpollOp::Mod
                };
                let data = self.index(n) as u64;
                self.ctx[side]
                    .epoll_ctl(self.ep[side], op, fd, Events::from_bits_retain(flags), data)
                    .map_err(err("epoll_ctl"))?;
            }
            Step::EpollDel(n) => {
                let (side, fd) = (self.side(n), self.fd(n)?);
                self.ctx[side]
                    .epoll_ctl(self.ep[side], EpollOp::Del, fd, Events::empty(), 0)
                    .map_err(err("epoll_ctl"))?;
            }
            Step::Settle => self.settle()?,
            Step::Wait(max) => {
                self.settle()?;
                let mut result: WaitResult = Vec::new();
                for side in 0..2 {
                    let mut out = vec![EpollEvent::default(); max];
                    let k = self.ctx[side]
                        .epoll_wait(self.ep[side], &mut out, 0)
                        .map_err(err("epoll_wait"))?;
                    for e in &out[..k] {
                        let name = self.names.get(e.data as usize).copied().unwrap_or("?");
                        result.push((name, e.events.bits() & COMPARED));
                    }
                }
                result.sort_unstable();
                self.results.push(result);
            }
        }
        Ok(())
    }
}

impl Sockets for MtcpSockets {
    fn run(&mut self, s: &Scenario) -> Result<Vec<WaitResult>, String> {
        s.validate()?;
        let mut run = Run::new(s, self.mode).map_err(|e| format!("{}: setup: {e}", s.name))?;
        for (i, step) in s.steps.iter().enumerate() {
            run.step(step).map_err(|e| {
                let before = match describe(&run.results) {
                    d if d.is_empty() => "no wait recorded before it".to_string(),
                    d => format!("recorded before it:\n{d}"),
                };
                format!("{}: step {} {step:?}: {e}; {before}", s.name, i + 1)
            })?;
        }
        let Run {
            ctx,
            stacks,
            results,
            ..
        } = run;
        // The contexts go first; then the stack threads stop (and report how they ended).
        drop(ctx);
        for (i, r) in stacks.into_iter().flat_map(Mtcp::destroy).enumerate() {
            r.map_err(|e| format!("{}: stack {i}: {e}", s.name))?;
        }
        Ok(results)
    }
}
