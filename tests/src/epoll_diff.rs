//! # Epoll differential test: scenarios, and the runner over Linux sockets
//!
//! A [`Scenario`] is a script of socket and epoll operations ([`Step`]) on a few named
//! sockets, with [`Step::Wait`] points where one `epoll_wait` is recorded. Running the same
//! scenarios on two stacks and comparing what each recorded (a [`WaitResult`] per wait: which
//! sockets were reported, with which [`COMPARED`] flags) checks that our stack's epoll says
//! what Linux's says. This module holds the stack-neutral half (the step language, the
//! [`catalog`] of scenarios, [`Scenario::validate`], [`describe`]) and [`LinuxSockets`], the
//! reference runner: real TCP sockets on 127.0.0.1 and a real epoll instance.
//!
//! ## The contract of a runner ([`Sockets`])
//! - Execute the steps in order, one socket per name, one epoll instance per scenario.
//!   A registration's data is the socket's index in [`Scenario::names`] (first mention order).
//! - Steps never wait for the network, except where a step says otherwise. The network makes
//!   progress at [`Step::Settle`] and [`Step::Wait`]: a runner on virtual time runs its
//!   stacks until they are idle there (every timer that would fire within the settle period
//!   included); Linux's kernel runs the network all the time, so the Linux runner sleeps
//!   [`LINUX_SETTLE`] instead. Scenarios therefore put a `Settle` or a `Wait` between a step
//!   and anything that depends on the network having carried its effect (an `Accept` after a
//!   `Connect`, a `Read` after the peer's `Write`).
//! - A step that cannot do what it says (nothing to accept, nothing to read, a short write)
//!   fails the run with a message naming the scenario, the step and the reason: a scenario
//!   never silently continues on a path another stack would not take.
//! - Listening ports are the runner's business (the Linux runner lets the kernel choose);
//!   sockets only refer to listeners by name.
//!
//! ## Flags
//! Interest and readiness flags are `u32`s with Linux's `EPOLL*` values ([`EPOLLIN`], …),
//! which the `event` crate and mTCP's `mtcp_epoll.h` share. Only the [`COMPARED`] bits of a
//! reported event are recorded; `EPOLLRDNORM` and friends are left out.
//!
//! ## What it does not do
//! It compares readiness only: not the order of events within one `epoll_wait` (results are
//! sorted by name; scenarios pass a `maxevents` large enough for all of them), not byte
//! counts, not timing, not error codes of the steps themselves.

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, MsgFlags, Shutdown, SockFlag, SockType, SockaddrIn,
};
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

/// `EPOLLIN` (0x001): readable: data, a pending connection, end of stream.
pub const EPOLLIN: u32 = 0x001;
/// `EPOLLPRI` (0x002): urgent data.
pub const EPOLLPRI: u32 = 0x002;
/// `EPOLLOUT` (0x004): writable.
pub const EPOLLOUT: u32 = 0x004;
/// `EPOLLERR` (0x008): an error is pending; reported whether asked for or not.
pub const EPOLLERR: u32 = 0x008;
/// `EPOLLHUP` (0x010): hung up; reported whether asked for or not.
pub const EPOLLHUP: u32 = 0x010;
/// `EPOLLRDHUP` (0x2000): the peer closed its sending side (a FIN arrived).
pub const EPOLLRDHUP: u32 = 0x2000;
/// `EPOLLONESHOT` (0x4000_0000), interest only: report once, then nothing until re-armed.
pub const EPOLLONESHOT: u32 = 0x4000_0000;
/// `EPOLLET` (0x8000_0000), interest only: edge-triggered.
pub const EPOLLET: u32 = 0x8000_0000;

/// Readiness flags compared between stacks: Linux's `EPOLL*` values restricted to these bits.
pub const COMPARED: u32 = EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDHUP | EPOLLPRI;

/// A socket named by the scenario (`"listener"`, `"client"`, `"server"`, …).
pub type Name = &'static str;

/// One operation of a scenario. "Creates" means the step gives the name a new socket; a step
/// that "creates if absent" also accepts a name that [`Step::Socket`] created and that has
/// done nothing yet. Every other step needs a name that is open (created, not closed). A name
/// is created once and never reused after [`Step::Close`] or [`Step::Abort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creates a non-blocking TCP socket, neither bound nor connected.
    Socket(Name),
    /// Creates if absent; binds to a local port the runner chooses and listens (backlog 16).
    Listen(Name),
    /// `Connect(client, listener)`: creates `client` if absent and starts a non-blocking
    /// connect to `listener`'s address (Linux: `EINPROGRESS` is fine).
    Connect(Name, Name),
    /// Creates if absent and starts a non-blocking connect to a local port on which nothing
    /// listens: the connection is refused (a RST answers the SYN).
    ConnectRefused(Name),
    /// `Accept(new, listener)`: creates `new` from a connection waiting on `listener`, which
    /// must be there (a runner may retry for a moment to absorb scheduling delays).
    Accept(Name, Name),
    /// Writes `n` bytes (a pattern); every byte must be taken.
    Write(Name, usize),
    /// Writes until the send buffer stays full: write until would-block, let the network
    /// settle, and repeat until a write right after settling would block. At least one byte
    /// must be taken. (Linux: see [`LINUX_BUFFER`].)
    FillSendBuffer(Name),
    /// Reads once, up to `n` bytes; at least one byte must be read (not would-block, not end
    /// of stream, not an error).
    Read(Name, usize),
    /// Reads until would-block or end of stream, or until a connection error (which the read
    /// reports and so clears, as Linux's `recv` does with `ECONNRESET`).
    ReadAll(Name),
    /// Reads everything the peer has sent or will send without being asked again:
    /// [`Step::ReadAll`], settle, and repeat until a `ReadAll` finds nothing. Unlike the other
    /// steps it lets the network run (it needs to, to reopen the window).
    Drain(Name),
    /// Fetches and clears the socket's pending error (`SO_ERROR`); there must be one.
    TakeError(Name),
    /// Shuts down the sending side (sends a FIN once the queued data is out).
    ShutdownWrite(Name),
    /// Closes the socket (which also removes it from the epoll instance).
    Close(Name),
    /// Closes with `SO_LINGER {on, 0}`: sends a RST and drops queued data.
    Abort(Name),
    /// Registers the socket with these interest flags ([`COMPARED`] bits, [`EPOLLET`],
    /// [`EPOLLONESHOT`]); the registration's data is the name's index in
    /// [`Scenario::names`].
    EpollAdd(Name, u32),
    /// Changes a registration's interest (re-arms a one-shot one).
    EpollMod(Name, u32),
    /// Removes a registration.
    EpollDel(Name),
    /// Lets the network settle (Linux: sleep [`LINUX_SETTLE`]; a virtual-time runner: run
    /// until idle).
    Settle,
    /// Settles, then calls `epoll_wait` with `maxevents` = the argument and a zero timeout,
    /// and records the result.
    Wait(usize),
}

impl Step {
    /// The names the step mentions, in argument order.
    pub fn names(&self) -> impl Iterator<Item = Name> {
        let (a, b) = match *self {
            Step::Socket(n)
            | Step::Listen(n)
            | Step::ConnectRefused(n)
            | Step::Write(n, _)
            | Step::FillSendBuffer(n)
            | Step::Read(n, _)
            | Step::ReadAll(n)
            | Step::Drain(n)
            | Step::TakeError(n)
            | Step::ShutdownWrite(n)
            | Step::Close(n)
            | Step::Abort(n)
            | Step::EpollAdd(n, _)
            | Step::EpollMod(n, _)
            | Step::EpollDel(n) => (Some(n), None),
            Step::Connect(a, b) | Step::Accept(a, b) => (Some(a), Some(b)),
            Step::Settle | Step::Wait(_) => (None, None),
        };
        a.into_iter().chain(b)
    }
}

/// A named script of steps. See the [module docs](self) for what a runner must do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Unique among [`scenarios`]; the name of the function in [`catalog`] that builds it.
    pub name: &'static str,
    /// The script.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Every name the scenario mentions, in order of first mention; a name's index here is the
    /// data of its epoll registrations.
    pub fn names(&self) -> Vec<Name> {
        let mut names = Vec::new();
        for n in self.steps.iter().flat_map(Step::names) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }

    /// How many results a run records: the number of [`Step::Wait`]s.
    pub fn wait_count(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Wait(_)))
            .count()
    }

    /// Checks that the script makes sense whatever the stack: names created before use, once,
    /// and not used after closing; connects and accepts aimed at open listeners, data steps at
    /// connections; registrations added before being changed or removed, and not twice;
    /// interest flags within [`COMPARED`], [`EPOLLET`] and [`EPOLLONESHOT`]; `maxevents` at
    /// least 1. Runners call it before running, so a bad script fails the same way everywhere.
    pub fn validate(&self) -> Result<(), String> {
        let names = self.names();
        let mut state = Validation {
            role: vec![None; names.len()],
            registered: vec![false; names.len()],
            names,
        };
        for (i, step) in self.steps.iter().enumerate() {
            state
                .step(step)
                .map_err(|why| format!("{}: step {} {step:?}: {why}", self.name, i + 1))?;
        }
        Ok(())
    }
}

/// What a name stands for at some point of a scenario (for [`Scenario::validate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Created by [`Step::Socket`], nothing done with it yet.
    Fresh,
    Listener,
    /// Connecting, connected, refused, or accepted.
    Connection,
    Closed,
}

/// [`Scenario::validate`]'s view of the names, indexed like [`Scenario::names`].
struct Validation {
    names: Vec<Name>,
    /// `None` until created.
    role: Vec<Option<Role>>,
    registered: Vec<bool>,
}

impl Validation {
    fn index(&self, n: Name) -> usize {
        self.names
            .iter()
            .position(|&m| m == n)
            .expect("names lists every name of the scenario")
    }

    /// The role of an open name.
    fn open(&self, n: Name) -> Result<Role, String> {
        match self.role[self.index(n)] {
            Some(Role::Closed) => Err(format!("{n} is closed")),
            Some(r) => Ok(r),
            None => Err(format!("{n} does not exist yet")),
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        // The name the step is about must be in the right state.
        match *step {
            Step::Socket(n) | Step::Accept(n, _) if self.role[self.index(n)].is_some() => {
                return Err(format!("{n} already exists"));
            }
            Step::Listen(n) | Step::Connect(n, _) | Step::ConnectRefused(n)
                if !matches!(self.role[self.index(n)], None | Some(Role::Fresh)) =>
            {
                return Err(format!("{n} was used already"));
            }
            Step::Write(n, _)
            | Step::FillSendBuffer(n)
            | Step::Read(n, _)
            | Step::ReadAll(n)
            | Step::Drain(n)
            | Step::ShutdownWrite(n)
                if self.open(n)? != Role::Connection =>
            {
                return Err(format!("{n} is not a connection"));
            }
            Step::TakeError(n)
            | Step::Close(n)
            | Step::Abort(n)
            | Step::EpollAdd(n, _)
            | Step::EpollMod(n, _)
            | Step::EpollDel(n) => {
                self.open(n)?;
            }
            Step::Wait(0) => return Err("maxevents must be at least 1".into()),
            Step::Read(_, 0) => return Err("a read of 0 bytes reads nothing".into()),
            _ => {}
        }
        if let Step::Connect(_, l) | Step::Accept(_, l) = *step {
            if self.open(l)? != Role::Listener {
                return Err(format!("{l} is not a listener"));
            }
        }
        if let Step::EpollAdd(_, f) | Step::EpollMod(_, f) = *step {
            if f & !(COMPARED | EPOLLET | EPOLLONESHOT) != 0 {
                return Err(format!("interest {f:#x} has bits outside the compared set"));
            }
        }
        // Registrations.
        match *step {
            Step::EpollAdd(n, _) if self.registered[self.index(n)] => {
                return Err(format!("{n} is registered already"));
            }
            Step::EpollMod(n, _) | Step::EpollDel(n) if !self.registered[self.index(n)] => {
                return Err(format!("{n} is not registered"));
            }
            Step::EpollAdd(n, _) => {
                let i = self.index(n);
                self.registered[i] = true;
            }
            Step::EpollDel(n) | Step::Close(n) | Step::Abort(n) => {
                let i = self.index(n);
                self.registered[i] = false;
            }
            _ => {}
        }
        // What the name stands for from now on.
        let new_role = match *step {
            Step::Socket(n) => Some((n, Role::Fresh)),
            Step::Listen(n) => Some((n, Role::Listener)),
            Step::Connect(n, _) | Step::ConnectRefused(n) | Step::Accept(n, _) => {
                Some((n, Role::Connection))
            }
            Step::Close(n) | Step::Abort(n) => Some((n, Role::Closed)),
            _ => None,
        };
        if let Some((n, r)) = new_role {
            let i = self.index(n);
            self.role[i] = Some(r);
        }
        Ok(())
    }
}

/// One `epoll_wait`'s result: (socket name, flags & [`COMPARED`]), sorted by name for
/// comparison (epoll's order is not part of the contract when all events fit).
pub type WaitResult = Vec<(Name, u32)>;

/// What a stack must offer to run scenarios (see the [module docs](self) for the contract).
pub trait Sockets {
    /// Runs the scenario from scratch and returns one [`WaitResult`] per [`Step::Wait`], or
    /// why it could not (a step failed, the scenario is invalid, the stack broke).
    fn run(&mut self, s: &Scenario) -> Result<Vec<WaitResult>, String>;
}

/// Flags rendered like `IN|OUT|RDHUP` (in bit order, unknown bits in hex; `-` for none).
pub fn describe_flags(flags: u32) -> String {
    const NAMES: [(u32, &str); 8] = [
        (EPOLLIN, "IN"),
        (EPOLLPRI, "PRI"),
        (EPOLLOUT, "OUT"),
        (EPOLLERR, "ERR"),
        (EPOLLHUP, "HUP"),
        (EPOLLRDHUP, "RDHUP"),
        (EPOLLONESHOT, "ONESHOT"),
        (EPOLLET, "ET"),
    ];
    let mut parts: Vec<String> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| (*name).to_string())
        .collect();
    let known = NAMES.iter().fold(0, |acc, (bit, _)| acc | bit);
    if flags & !known != 0 {
        parts.push(format!("{:#x}", flags & !known));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("|")
    }
}

/// A recording rendered one wait per line: `wait 2: client OUT, server IN|RDHUP` (`-` when
/// nothing was reported).
pub fn describe(r: &[WaitResult]) -> String {
    let mut out = String::new();
    for (i, w) in r.iter().enumerate() {
        let events: Vec<String> = w
            .iter()
            .map(|(n, f)| format!("{n} {}", describe_flags(*f)))
            .collect();
        let events = if events.is_empty() {
            "-".to_string()
        } else {
            events.join(", ")
        };
        let _ = writeln!(out, "wait {}: {events}", i + 1);
    }
    out
}

/// Every scenario of the [`catalog`].
pub fn scenarios() -> Vec<Scenario> {
    catalog::all()
}

/// The scenarios, one function each. Each function's doc says what Linux reports at each
/// [`Step::Wait`] (as recorded by [`LinuxSockets`] on Linux 6.x); the test
/// `linux_results_match_documented_semantics` checks the key facts. Socket names: `listener`,
/// `client` (connects to it), `server` (accepted from it).
pub mod catalog {
    use super::Step::*;
    use super::*;

    const L: Name = "listener";
    const C: Name = "client";
    const S: Name = "server";
    /// Room for every event any scenario expects, so none is cut off.
    const MAX: usize = 8;

    /// Every scenario, in the order of this module.
    pub fn all() -> Vec<Scenario> {
        vec![
            lt_data_arrival(),
            et_data_arrival(),
            et_reports_all_ready_flags(),
            oneshot(),
            peer_fin(),
            own_shutdown_write(),
            peer_rst(),
            close_with_unread_data(),
            send_buffer_full(),
            et_writable_again(),
            connect_success(),
            connect_refused(),
            accept_ready(),
            two_pending_connections(),
            et_listener(),
            fresh_socket(),
            epoll_del(),
            close_registered(),
        ]
    }

    /// `listener`, `client` connected to it, `server` accepted; nothing registered.
    fn connected(name: &'static str, rest: Vec<Step>) -> Scenario {
        let mut steps = vec![Listen(L), Connect(C, L), Settle, Accept(S, L)];
        steps.extend(rest);
        Scenario { name, steps }
    }

    /// Level-triggered data arrival: `server` registered for `IN`.
    ///
    /// Linux: 1 nothing; 2 `server IN` (100 bytes arrived); 3 `server IN` again (LT: unread
    /// data is reported on every wait); 4 `server IN` after reading 10 of the 100; 5 nothing
    /// after reading everything.
    pub fn lt_data_arrival() -> Scenario {
        connected(
            "lt_data_arrival",
            vec![
                EpollAdd(S, EPOLLIN),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
                Wait(MAX),
                Read(S, 10),
                Wait(MAX),
                ReadAll(S),
                Wait(MAX),
            ],
        )
    }

    /// Edge-triggered data arrival: `server` registered for `IN|ET`.
    ///
    /// Linux: 1 nothing; 2 `server IN` (100 bytes arrived); 3 nothing (still unread, but no
    /// new arrival); 4 nothing after a partial read (reading is not an edge); 5 `server IN`
    /// (another 100 bytes arrived); 6 nothing; 7 `server IN` after a third write, even though
    /// the bytes before it were never read to the end.
    pub fn et_data_arrival() -> Scenario {
        connected(
            "et_data_arrival",
            vec![
                EpollAdd(S, EPOLLIN | EPOLLET),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
                Wait(MAX),
                Read(S, 10),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
            ],
        )
    }

    /// Edge-triggered `IN|OUT`: an edge reports everything that is ready at wait time, not
    /// only what caused the edge.
    ///
    /// Linux: 1 `server OUT` (registering a ready socket is an edge); 2 nothing; 3
    /// `server IN|OUT` (data arrival woke it; OUT rides along because epoll re-polls the
    /// socket); 4 nothing.
    pub fn et_reports_all_ready_flags() -> Scenario {
        connected(
            "et_reports_all_ready_flags",
            vec![
                EpollAdd(S, EPOLLIN | EPOLLOUT | EPOLLET),
                Wait(MAX),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
                Wait(MAX),
            ],
        )
    }

    /// One-shot: `server` registered for `IN|RDHUP|ONESHOT`.
    ///
    /// Linux: 1 `server IN` (data arrived; the registration is now disabled); 2 nothing; 3
    /// nothing although more data arrived; 4 nothing although the peer's FIN arrived; 5
    /// `server IN|RDHUP` right after `EpollMod` re-armed it (still ready); 6 nothing (fired
    /// again).
    pub fn oneshot() -> Scenario {
        let interest = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
        connected(
            "oneshot",
            vec![
                EpollAdd(S, interest),
                Write(C, 100),
                Wait(MAX),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
                ShutdownWrite(C),
                Wait(MAX),
                EpollMod(S, interest),
                Wait(MAX),
                Wait(MAX),
            ],
        )
    }

    /// The peer's FIN: `server` registered for `IN|OUT|RDHUP`, `client` for `IN|OUT` (no
    /// `RDHUP`).
    ///
    /// Linux: 1 `client OUT, server OUT`; 2 after `client` shut down its sending side:
    /// `client OUT, server IN|OUT|RDHUP`; 3 the same after `server` read the end of stream
    /// (end of stream stays readable); 4 after `server` shut down too: `client IN|OUT|HUP`
    /// (`RDHUP` not asked for, `HUP` always reported), `server IN|OUT|HUP|RDHUP`.
    pub fn peer_fin() -> Scenario {
        connected(
            "peer_fin",
            vec![
                EpollAdd(S, EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                EpollAdd(C, EPOLLIN | EPOLLOUT),
                Wait(MAX),
                ShutdownWrite(C),
                Wait(MAX),
                ReadAll(S),
                Wait(MAX),
                ShutdownWrite(S),
                Wait(MAX),
            ],
        )
    }

    /// Our own `shutdown(SHUT_WR)`: `client` registered for `IN|OUT|RDHUP`.
    ///
    /// Linux: 1 after `client` shut down its sending side: `client OUT` (no `HUP`: only one
    /// direction is closed; `OUT` because a write would not block, it would fail); 2
    /// `client IN|OUT` when `server` sends data; 3 `client IN|OUT|HUP|RDHUP` after `server`
    /// shut down too.
    pub fn own_shutdown_write() -> Scenario {
        connected(
            "own_shutdown_write",
            vec![
                EpollAdd(C, EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                ShutdownWrite(C),
                Wait(MAX),
                Write(S, 100),
                Wait(MAX),
                ShutdownWrite(S),
                Wait(MAX),
            ],
        )
    }

    /// The peer aborts (RST): `server` registered for `IN|OUT|RDHUP`.
    ///
    /// Linux: 1 `server OUT`; 2 after `client` aborted: `server IN|OUT|ERR|HUP|RDHUP`; 3 after
    /// `server`'s `ReadAll` (whose `recv` returned `ECONNRESET`, clearing the error):
    /// `server IN|OUT|HUP|RDHUP`.
    pub fn peer_rst() -> Scenario {
        connected(
            "peer_rst",
            vec![
                EpollAdd(S, EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                Wait(MAX),
                Abort(C),
                Wait(MAX),
                ReadAll(S),
                Wait(MAX),
            ],
        )
    }

    /// Closing with unread data sends a RST (RFC 2525 §2.17), not a FIN: `client` registered
    /// for `IN|OUT|RDHUP` sends 100 bytes that `server` never reads.
    ///
    /// Linux: 1 `client OUT`; 2 after `server` closed: `client IN|OUT|ERR|HUP|RDHUP`.
    pub fn close_with_unread_data() -> Scenario {
        connected(
            "close_with_unread_data",
            vec![
                EpollAdd(C, EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                Write(C, 100),
                Wait(MAX),
                Close(S),
                Wait(MAX),
            ],
        )
    }

    /// A full send buffer: `client` registered for `OUT`, `server` for `IN` (level-triggered).
    ///
    /// Linux: 1 `client OUT`; 2 after `client` filled its send buffer: `server IN` only
    /// (`client` is not writable); 3 after `server` drained everything: `client OUT` again.
    pub fn send_buffer_full() -> Scenario {
        connected(
            "send_buffer_full",
            vec![
                EpollAdd(C, EPOLLOUT),
                EpollAdd(S, EPOLLIN),
                Wait(MAX),
                FillSendBuffer(C),
                Wait(MAX),
                Drain(S),
                Wait(MAX),
            ],
        )
    }

    /// Edge-triggered `OUT`: `client` registered for `OUT|ET`.
    ///
    /// Linux: 1 `client OUT` (registration); 2 nothing; 3 nothing after a small write whose
    /// ACK came back (room freed while the buffer never was full is no edge); 4 nothing
    /// after filling the send buffer; 5 `client OUT` once `server` drained it; 6 nothing.
    pub fn et_writable_again() -> Scenario {
        connected(
            "et_writable_again",
            vec![
                EpollAdd(C, EPOLLOUT | EPOLLET),
                Wait(MAX),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
                FillSendBuffer(C),
                Wait(MAX),
                Drain(S),
                Wait(MAX),
                Wait(MAX),
            ],
        )
    }

    /// A successful connect, registered before it starts: `client` for `OUT`, `listener` for
    /// `IN`.
    ///
    /// Linux: 1 `client OUT, listener IN` (connected; a connection waits); 2 `client OUT`
    /// after the accept.
    pub fn connect_success() -> Scenario {
        Scenario {
            name: "connect_success",
            steps: vec![
                Listen(L),
                Socket(C),
                EpollAdd(L, EPOLLIN),
                EpollAdd(C, EPOLLOUT),
                Connect(C, L),
                Wait(MAX),
                Accept(S, L),
                Wait(MAX),
            ],
        }
    }

    /// A refused connect: `client` registered for `IN|OUT|RDHUP` before connecting to a port
    /// where nothing listens.
    ///
    /// Linux: 1 `client IN|OUT|ERR|HUP|RDHUP` (the socket is closed in both directions with
    /// `ECONNREFUSED` pending); 2 `client IN|OUT|HUP|RDHUP` once `SO_ERROR` was read.
    pub fn connect_refused() -> Scenario {
        Scenario {
            name: "connect_refused",
            steps: vec![
                Socket(C),
                EpollAdd(C, EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                ConnectRefused(C),
                Wait(MAX),
                TakeError(C),
                Wait(MAX),
            ],
        }
    }

    /// A listener with a connection to accept: `listener` registered for `IN`.
    ///
    /// Linux: 1 nothing; 2 `listener IN` after a connect; 3 `listener IN` again (LT); 4
    /// nothing after the accept.
    pub fn accept_ready() -> Scenario {
        Scenario {
            name: "accept_ready",
            steps: vec![
                Listen(L),
                EpollAdd(L, EPOLLIN),
                Wait(MAX),
                Connect(C, L),
                Wait(MAX),
                Wait(MAX),
                Accept(S, L),
                Wait(MAX),
            ],
        }
    }

    /// Two pending connections: `listener` registered for `IN`.
    ///
    /// Linux: 1 `listener IN`; 2 `listener IN` after the first accept (one still waits); 3
    /// nothing after the second.
    pub fn two_pending_connections() -> Scenario {
        Scenario {
            name: "two_pending_connections",
            steps: vec![
                Listen(L),
                EpollAdd(L, EPOLLIN),
                Connect("client1", L),
                Connect("client2", L),
                Wait(MAX),
                Accept("server1", L),
                Wait(MAX),
                Accept("server2", L),
                Wait(MAX),
            ],
        }
    }

    /// An edge-triggered listener: `listener` registered for `IN|ET`.
    ///
    /// Linux: 1 `listener IN` (two connections arrived); 2 nothing; 3 nothing after one
    /// accept (one still waits: no edge); 4 `listener IN` when a third arrives; 5 nothing
    /// after accepting the other two.
    pub fn et_listener() -> Scenario {
        Scenario {
            name: "et_listener",
            steps: vec![
                Listen(L),
                EpollAdd(L, EPOLLIN | EPOLLET),
                Connect("client1", L),
                Connect("client2", L),
                Wait(MAX),
                Wait(MAX),
                Accept("server1", L),
                Wait(MAX),
                Connect("client3", L),
                Wait(MAX),
                Accept("server2", L),
                Accept("server3", L),
                Wait(MAX),
            ],
        }
    }

    /// Fresh, unconnected sockets: `fresh1` registered for `IN|OUT|RDHUP`, `fresh2` for `IN`.
    ///
    /// Linux: 1 `fresh1 OUT|HUP, fresh2 HUP` (a socket in CLOSED state is "hung up" and a
    /// write would not block; `HUP` needs no interest); 2 `fresh2 HUP` once `fresh1` listens
    /// (a listener with nothing to accept reports nothing).
    pub fn fresh_socket() -> Scenario {
        Scenario {
            name: "fresh_socket",
            steps: vec![
                Socket("fresh1"),
                Socket("fresh2"),
                EpollAdd("fresh1", EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                EpollAdd("fresh2", EPOLLIN),
                Wait(MAX),
                Listen("fresh1"),
                Wait(MAX),
            ],
        }
    }

    /// Removing a registration: `server` registered for `IN`, with unread data.
    ///
    /// Linux: 1 `server IN`; 2 nothing after `EpollDel`; 3 nothing although more data
    /// arrived; 4 `server IN` after registering it again.
    pub fn epoll_del() -> Scenario {
        connected(
            "epoll_del",
            vec![
                EpollAdd(S, EPOLLIN),
                Write(C, 100),
                Wait(MAX),
                EpollDel(S),
                Wait(MAX),
                Write(C, 100),
                Wait(MAX),
                EpollAdd(S, EPOLLIN),
                Wait(MAX),
            ],
        )
    }

    /// Closing a registered socket removes its registration: both ends registered for
    /// `IN|OUT|RDHUP`.
    ///
    /// Linux: 1 `client OUT, server OUT`; 2 `client IN|OUT|RDHUP` after `server` closed
    /// (its FIN arrived; `server` is gone from the results); 3 nothing after `client` closed.
    pub fn close_registered() -> Scenario {
        connected(
            "close_registered",
            vec![
                EpollAdd(C, EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                EpollAdd(S, EPOLLIN | EPOLLOUT | EPOLLRDHUP),
                Wait(MAX),
                Close(S),
                Wait(MAX),
                Close(C),
                Wait(MAX),
            ],
        )
    }
}

// ---------------------------------------------------------------------------------------
// The Linux runner.

/// How long the Linux runner lets loopback settle at [`Step::Settle`] and [`Step::Wait`].
/// Loopback delivers within microseconds; the margin covers a busy machine. Linux's delayed
/// ACK (40 ms at least) is longer, which only [`Step::FillSendBuffer`] cares about (it
/// settles with [`LINUX_FILL_SETTLE`]).
pub const LINUX_SETTLE: Duration = Duration::from_millis(25);

/// How long [`Step::FillSendBuffer`] and [`Step::Drain`] settle between rounds on Linux:
/// longer than the 40 ms delayed-ACK timer. A send buffer that just refused a write takes
/// another ~320 KiB about 44 ms later, when the receiver's delayed ACK frees what it holds
/// (measured on loopback with [`LINUX_BUFFER`]); the round after that one finds it full for
/// good. (Around 250 ms the receiver takes one more segment, which frees too little to make
/// the sender writable.)
pub const LINUX_FILL_SETTLE: Duration = Duration::from_millis(60);

/// `SO_SNDBUF` and `SO_RCVBUF` the Linux runner sets on every socket it creates, before it
/// connects or listens (accepted sockets inherit the listener's). Fixed sizes turn off the
/// kernel's buffer autotuning, so [`Step::FillSendBuffer`] stops after a few hundred KiB, fast
/// and the same every run. (The kernel doubles the value for its bookkeeping; 256 KiB is
/// still several of loopback's 64 KiB segments, so the window never drops below one.)
pub const LINUX_BUFFER: usize = 256 * 1024;

/// How long [`Step::Accept`] retries on Linux before failing (it normally succeeds at once).
const LINUX_ACCEPT_PATIENCE: Duration = Duration::from_secs(1);
/// Bound on [`Step::FillSendBuffer`] and [`Step::Drain`] rounds.
const LINUX_MAX_ROUNDS: usize = 50;
/// Bytes per `send`/`recv` call.
const CHUNK: usize = 64 * 1024;

/// Runs scenarios on Linux: real TCP sockets on 127.0.0.1 (ports chosen by the kernel), one
/// real epoll instance per run (`epoll_create1`, `epoll_ctl`, `epoll_wait`). Every descriptor
/// is an [`OwnedFd`], closed when the run ends however it ends.
///
/// Linux specifics, none of which leak into the results: [`Step::Settle`] sleeps
/// [`LINUX_SETTLE`]; sockets get fixed buffers ([`LINUX_BUFFER`]); [`Step::ConnectRefused`]
/// aims at a port that a socket of the run holds bound without listening (so nothing else can
/// listen there); [`Step::Accept`] retries for up to a second.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSockets;

impl Sockets for LinuxSockets {
    fn run(&mut self, s: &Scenario) -> Result<Vec<WaitResult>, String> {
        s.validate()?;
        let mut run = LinuxRun::new(s).map_err(|e| format!("{}: setup: {e}", s.name))?;
        for (i, step) in s.steps.iter().enumerate() {
            run.step(step)
                .map_err(|e| format!("{}: step {} {step:?}: {e}", s.name, i + 1))?;
        }
        Ok(run.results)
    }
}

/// One socket of a Linux run.
struct LinuxSocket {
    fd: OwnedFd,
    /// The port it listens on, for a listener.
    port: Option<u16>,
}

/// The state of one Linux run.
struct LinuxRun {
    names: Vec<Name>,
    /// Indexed like `names`; `None` before creation and after closing.
    sockets: Vec<Option<LinuxSocket>>,
    epoll: Epoll,
    /// A socket bound to 127.0.0.1 without listening, holding a port for `ConnectRefused`.
    refusing: Option<(OwnedFd, u16)>,
    results: Vec<WaitResult>,
}

/// `nix` errors as step failures: "what: errno".
fn os(what: &'static str) -> impl Fn(Errno) -> String {
    move |e| format!("{what}: {e}")
}

/// 127.0.0.1:`port`.
fn loopback(port: u16) -> SockaddrIn {
    SockaddrIn::new(127, 0, 0, 1, port)
}

impl LinuxRun {
    fn new(s: &Scenario) -> Result<Self, String> {
        let names = s.names();
        Ok(Self {
            sockets: names.iter().map(|_| None).collect(),
            names,
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(os("epoll_create1"))?,
            refusing: None,
            results: Vec::new(),
        })
    }

    fn index(&self, n: Name) -> usize {
        self.names
            .iter()
            .position(|&m| m == n)
            .expect("names lists every name of the scenario")
    }

    fn socket(&self, n: Name) -> Result<&LinuxSocket, String> {
        self.sockets[self.index(n)]
            .as_ref()
            .ok_or_else(|| format!("{n} is not open"))
    }

    fn fd(&self, n: Name) -> Result<&OwnedFd, String> {
        self.socket(n).map(|s| &s.fd)
    }

    /// A new non-blocking TCP socket with the run's fixed buffers.
    fn new_socket() -> Result<OwnedFd, String> {
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(os("socket"))?;
        socket::setsockopt(&fd, sockopt::SndBuf, &LINUX_BUFFER).map_err(os("SO_SNDBUF"))?;
        socket::setsockopt(&fd, sockopt::RcvBuf, &LINUX_BUFFER).map_err(os("SO_RCVBUF"))?;
        Ok(fd)
    }

    /// The socket `n` for a step that creates if absent: the `Socket`-made one, or a new one.
    fn take_or_create(&mut self, n: Name) -> Result<OwnedFd, String> {
        let i = self.index(n);
        match self.sockets[i].take() {
            Some(s) => Ok(s.fd),
            None => Self::new_socket(),
        }
    }

    fn put(&mut self, n: Name, fd: OwnedFd, port: Option<u16>) {
        let i = self.index(n);
        self.sockets[i] = Some(LinuxSocket { fd, port });
    }

    fn bound_port(fd: &OwnedFd) -> Result<u16, String> {
        socket::bind(fd.as_raw_fd(), &loopback(0)).map_err(os("bind"))?;
        let addr: SockaddrIn = socket::getsockname(fd.as_raw_fd()).map_err(os("getsockname"))?;
        Ok(addr.port())
    }

    /// Starts a non-blocking connect; on loopback the kernel processes the answer only once
    /// `connect` releases the socket, so it reports `EINPROGRESS` (or success) and leaves any
    /// refusal pending for epoll to see.
    fn start_connect(fd: &OwnedFd, port: u16) -> Result<(), String> {
        match socket::connect(fd.as_raw_fd(), &loopback(port)) {
            Ok(()) | Err(Errno::EINPROGRESS) => Ok(()),
            Err(e) => Err(format!("connect: {e}")),
        }
    }

    /// Sends from the pattern until `n` bytes are taken or the socket would block; returns
    /// the count.
    fn send(fd: &OwnedFd, n: usize) -> Result<usize, String> {
        let pattern: Vec<u8> = (0..CHUNK.min(n)).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while sent < n {
            let len = (n - sent).min(CHUNK);
            match socket::send(fd.as_raw_fd(), &pattern[..len], MsgFlags::MSG_NOSIGNAL) {
                Ok(k) => sent += k,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        Ok(sent)
    }

    /// `ReadAll`: bytes read until would-block, end of stream or a connection error.
    fn read_all(fd: &OwnedFd) -> Result<usize, String> {
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(total),
                Ok(k) => total += k,
                Err(Errno::EINTR) => {}
                Err(Errno::ECONNRESET | Errno::ECONNREFUSED | Errno::ETIMEDOUT | Errno::EPIPE) => {
                    return Ok(total)
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
    }

    fn register(&self, n: Name, flags: u32, add: bool) -> Result<(), String> {
        // Flags are Linux's values; `from_bits_retain` keeps them bit for bit.
        let flags = EpollFlags::from_bits_retain(flags as i32);
        let mut event = EpollEvent::new(flags, self.index(n) as u64);
        let fd = self.fd(n)?;
        if add {
            self.epoll.add(fd, event).map_err(os("EPOLL_CTL_ADD"))
        } else {
            self.epoll
                .modify(fd, &mut event)
                .map_err(os("EPOLL_CTL_MOD"))
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Socket(n) => {
                let fd = Self::new_socket()?;
                self.put(n, fd, None);
            }
            Step::Listen(n) => {
                let fd = self.take_or_create(n)?;
                let port = Self::bound_port(&fd)?;
                socket::listen(&fd, Backlog::new(16).map_err(os("backlog"))?)
                    .map_err(os("listen"))?;
                self.put(n, fd, Some(port));
            }
            Step::Connect(n, l) => {
                let port = self
                    .socket(l)?
                    .port
                    .ok_or(format!("{l} is not listening"))?;
                let fd = self.take_or_create(n)?;
                Self::start_connect(&fd, port)?;
                self.put(n, fd, None);
            }
            Step::ConnectRefused(n) => {
                let port = match &self.refusing {
                    Some((_, port)) => *port,
                    None => {
                        let holder = Self::new_socket()?;
                        let port = Self::bound_port(&holder)?;
                        self.refusing = Some((holder, port));
                        port
                    }
                };
                let fd = self.take_or_create(n)?;
                Self::start_connect(&fd, port)?;
                self.put(n, fd, None);
            }
            Step::Accept(n, l) => {
                let start = Instant::now();
                let fd = loop {
                    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
                    match socket::accept4(self.fd(l)?.as_fd(), flags) {
                        Ok(fd) => break fd,
                        Err(Errno::EAGAIN) if start.elapsed() < LINUX_ACCEPT_PATIENCE => {
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(Errno::EINTR) => {}
                        Err(e) => return Err(format!("accept4: {e}")),
                    }
                };
                self.put(n, fd, None);
            }
            Step::Write(n, len) => {
                let sent = Self::send(self.fd(n)?, len)?;
                if sent != len {
                    return Err(format!("only {sent} of {len} bytes written"));
                }
            }
            Step::FillSendBuffer(n) => {
                let fd = self.fd(n)?;
                let mut total = 0;
                for _ in 0..LINUX_MAX_ROUNDS {
                    let sent = Self::send(fd, usize::MAX)?;
                    total += sent;
                    if sent == 0 && total > 0 {
                        return Ok(());
                    }
                    thread::sleep(LINUX_FILL_SETTLE);
                }
                return Err(format!(
                    "send buffer still taking data after {LINUX_MAX_ROUNDS} rounds ({total} bytes)"
                ));
            }
            Step::Read(n, len) => {
                let mut buf = vec![0u8; len];
                match socket::recv(self.fd(n)?.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(0) => return Err("end of stream".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
            Step::ReadAll(n) => {
                Self::read_all(self.fd(n)?)?;
            }
            Step::Drain(n) => {
                let fd = self.fd(n)?;
                let mut rounds = 0;
                while Self::read_all(fd)? > 0 {
                    rounds += 1;
                    if rounds == LINUX_MAX_ROUNDS {
                        return Err(format!("still reading after {rounds} rounds"));
                    }
                    thread::sleep(LINUX_FILL_SETTLE);
                }
            }
            Step::TakeError(n) => {
                let err = socket::getsockopt(self.fd(n)?, sockopt::SocketError)
                    .map_err(os("SO_ERROR"))?;
                if err == 0 {
                    return Err("no pending error".into());
                }
            }
            Step::ShutdownWrite(n) => {
                socket::shutdown(self.fd(n)?.as_raw_fd(), Shutdown::Write)
                    .map_err(os("shutdown"))?;
            }
            Step::Close(n) => {
                let i = self.index(n);
                drop(self.sockets[i].take().ok_or(format!("{n} is not open"))?);
            }
            Step::Abort(n) => {
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                socket::setsockopt(self.fd(n)?, sockopt::Linger, &linger)
                    .map_err(os("SO_LINGER"))?;
                let i = self.index(n);
                drop(self.sockets[i].take());
            }
            Step::EpollAdd(n, flags) => self.register(n, flags, true)?,
            Step::EpollMod(n, flags) => self.register(n, flags, false)?,
            Step::EpollDel(n) => self
                .epoll
                .delete(self.fd(n)?)
                .map_err(os("EPOLL_CTL_DEL"))?,
            Step::Settle => thread::sleep(LINUX_SETTLE),
            Step::Wait(max) => {
                thread::sleep(LINUX_SETTLE);
                let mut events = vec![EpollEvent::empty(); max];
                let k = loop {
                    match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                        Err(Errno::EINTR) => {}
                        other => break other.map_err(os("epoll_wait"))?,
                    }
                };
                let mut result: WaitResult = events[..k]
                    .iter()
                    .map(|e| {
                        let name = usize::try_from(e.data())
                            .ok()
                            .and_then(|i| self.names.get(i).copied())
                            .unwrap_or("?");
                        (name, e.events().bits() as u32 & COMPARED)
                    })
                    .collect();
                result.sort_unstable();
                self.results.push(result);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_linuxs() {
        assert_eq!(EPOLLIN, libc::EPOLLIN as u32);
        assert_eq!(EPOLLPRI, libc::EPOLLPRI as u32);
        assert_eq!(EPOLLOUT, libc::EPOLLOUT as u32);
        assert_eq!(EPOLLERR, libc::EPOLLERR as u32);
        assert_eq!(EPOLLHUP, libc::EPOLLHUP as u32);
        assert_eq!(EPOLLRDHUP, libc::EPOLLRDHUP as u32);
        assert_eq!(EPOLLONESHOT, libc::EPOLLONESHOT as u32);
        assert_eq!(EPOLLET, libc::EPOLLET as u32);
    }

    #[test]
    fn every_scenario_is_valid_and_named_once() {
        let all = scenarios();
        for s in &all {
            s.validate().unwrap();
            assert!(s.wait_count() > 0, "{} records nothing", s.name);
            assert_eq!(all.iter().filter(|t| t.name == s.name).count(), 1);
        }
    }

    #[test]
    fn validate_refuses_bad_scripts() {
        use Step::*;
        let bad = [
            vec![Write("a", 1)],
            vec![Socket("a"), Socket("a")],
            vec![Listen("l"), Close("l"), Listen("l")],
            vec![Socket("a"), Connect("b", "a")],
            vec![Listen("l"), EpollMod("l", EPOLLIN)],
            vec![Listen("l"), EpollAdd("l", EPOLLIN), EpollAdd("l", EPOLLIN)],
            vec![Listen("l"), EpollAdd("l", 0x40)],
            vec![Listen("l"), Write("l", 1)],
            vec![Listen("l"), Connect("c", "l"), Read("c", 0)],
            vec![Listen("l"), Close("l"), Connect("c", "l")],
            vec![Wait(0)],
        ];
        for steps in bad {
            let s = Scenario { name: "bad", steps };
            assert!(s.validate().is_err(), "accepted {:?}", s.steps);
        }
        let closed_unregisters = Scenario {
            name: "ok",
            steps: vec![
                Listen("l"),
                EpollAdd("l", EPOLLIN),
                Connect("c", "l"),
                EpollAdd("c", EPOLLOUT),
                Close("c"),
            ],
        };
        closed_unregisters.validate().unwrap();
    }

    #[test]
    fn names_in_first_mention_order() {
        assert_eq!(
            catalog::connect_success().names(),
            ["listener", "client", "server"]
        );
    }

    #[test]
    fn describe_renders_flags_and_empty_waits() {
        assert_eq!(
            describe_flags(EPOLLIN | EPOLLOUT | EPOLLRDHUP),
            "IN|OUT|RDHUP"
        );
        assert_eq!(describe_flags(0), "-");
        assert_eq!(describe_flags(EPOLLHUP | 0x40), "HUP|0x40");
        let r = vec![vec![("client", EPOLLOUT), ("server", EPOLLIN)], vec![]];
        assert_eq!(describe(&r), "wait 1: client OUT, server IN\nwait 2: -\n");
    }
}
