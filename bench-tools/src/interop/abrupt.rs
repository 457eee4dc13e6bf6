//! Scenario 5 of issue 6, abrupt ends: a Linux peer process killed mid-transfer, a link cut
//! mid-transfer, and TIME-WAIT reuse under a narrow port range.
//!
//! 1. [`kill`] (`abrupt-kill`): the kernel peer is a separate process in the Linux namespace
//!    (a small `python3` program, [`PEER_PY`]) that never reads. We send to it, and it to us;
//!    mid-transfer it gets SIGKILL. Its kernel closes a socket with unread data by answering
//!    with RST (RFC 2525 §2.17), so our application's next `write` or `read` must fail with
//!    `ConnectionReset` at once — not hang, not time out. Both roles: it serves and we
//!    connect, then it connects to our server. Checked too: our stack counted the RST and
//!    freed the connection (`open` back to where it was).
//! 2. [`link_cut`] (`abrupt-link-cut`): mid-transfer to a kernel server the relay drops
//!    every frame both ways ([`Relay::set_cut`](crate::relay::Relay::set_cut)). With
//!    `data_retries` = [`DATA_RETRIES`], our stack retransmits with exponential backoff and
//!    the application gets `TimedOut`; then a `connect` while the link is still cut ends in
//!    `TimedOut` after [`SYN_RETRIES`] SYN retransmissions. Figures: retransmissions and time
//!    to the error.
//! 3. [`tw_reuse`] (`abrupt-tw-reuse`): the kernel's `ip_local_port_range` is
//!    [`PEER_PORTS`] (4 ports) and a kernel client makes hundreds of sequential short
//!    connections (8-byte request, 8-byte answer) to our server, whose TIME-WAIT lasts 60 s:
//!    (a) we close first, so every 4-tuple the kernel reuses is in TIME-WAIT on our side and
//!    our stack must let the new SYN in (RFC 6191 §2, RFC 9293 §3.6.1); (b) the kernel closes
//!    first and reuses its own TIME-WAIT ports (`tcp_tw_reuse = 1`). And (c) the other way
//!    round: our stack as the client with 4 ephemeral ports, the kernel server closing first
//!    (the kernel's TIME-WAIT must let our SYNs in: our ISNs and timestamps grow per
//!    4-tuple). Every connection must succeed, and neither side may send a RST (a refused
//!    SYN shows as one: the SYN-SENT side resets the ACK that TIME-WAIT answers it with);
//!    figure: connections, ports, time. (Linux's `connect` tries even ports first, so part
//!    (a), where it holds no port, runs over 40000 and 40002 only.)
//!
//! ## What it does not do
//! It does not check the data of the killed transfers (scenario 1 does integrity), and no
//! timing: "promptly" means before a generous deadline, and the times are printed.

use super::{api, size_text, verdict, Lab, LinkKind, Ours, Outcome, Pattern, Record};
use super::{KERNEL_PORT, LINUX, OURS, OUR_PORT};
use crate::netns;
use mtcp_api::{EpollOp, Error, Events, Fd, StackStats};
use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The kernel peer process: `serve HOST PORT SEND` listens and accepts one connection,
/// `connect HOST PORT SEND` connects; either way it prints `ready`, sends SEND bytes,
/// prints `sent` and sleeps without ever reading (so what we send stays queued in its
/// socket), until killed.
pub const PEER_PY: &str = r#"
import socket, sys, time
mode, host, port, send = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "serve":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(1)
    print("ready", flush=True)
    s, _ = l.accept()
else:
    s = socket.create_connection((host, port), timeout=20)
    s.settimeout(None)
    print("ready", flush=True)
s.sendall(b"k" * send)
print("sent", flush=True)
time.sleep(3600)
"#;

/// Bytes the killed peer sends us before it stops.
const PEER_SENDS: u64 = 64 << 10;
/// Bytes we have written (and the peer's [`PEER_SENDS`] received) when the peer is killed.
const KILL_AFTER: u64 = 48 << 10;
/// Bytes written before the link is cut.
const CUT_AFTER: u64 = 256 << 10;
/// Our `data_retries` in the link-cut scenario.
pub const DATA_RETRIES: u32 = 3;
/// Our `syn_retries` in the link-cut scenario.
pub const SYN_RETRIES: u32 = 2;
/// The kernel's `ip_local_port_range` in the TIME-WAIT scenario.
pub const PEER_PORTS: (u16, u16) = (40000, 40003);
/// Our ephemeral ports when we are the client of the TIME-WAIT scenario.
pub const OUR_PORTS: (u16, u16) = (50000, 50003);
/// Connections per part of the TIME-WAIT scenario in CI.
pub const TW_CONNECTIONS: usize = 300;
/// Generous bound on anything that should take milliseconds.
const SOON: Duration = Duration::from_secs(15);
/// The request and the answer of the short connections.
const REQUEST: &[u8; 8] = b"abrupt-q";
const ANSWER: &[u8; 8] = b"abrupt-a";

fn fail(e: impl std::fmt::Display) -> (String, String) {
    (format!("failed: {e}"), String::new())
}

/// Waits (running our stack) until its `open` count is back to `baseline`; false if it
/// was not by `deadline`.
/// The end of a scenario: our stack's and the relay's counters go to the detail, the relay
/// stops (its failure is a problem too), and the scenario passed if no problem was found.
fn conclude(
    mut lab: Lab,
    ours: Ours,
    figures: &[String],
    mut detail: Vec<String>,
    mut problems: Vec<String>,
) -> Outcome {
    detail.push(format!("our stack: {}", ours.stats()));
    drop(ours);
    match lab.stop_relay() {
        Ok(r) => detail.push(format!(
            "relay ours->linux: {}; linux->ours: {}",
            r.a_to_b, r.b_to_a
        )),
        Err(e) => problems.push(format!("relay: {e}")),
    }
    let figure = figures.join("; ");
    verdict(figure, detail.join("\n"), &problems)
}

fn settle(ours: &mut Ours, baseline: u64, deadline: Instant) -> bool {
    loop {
        if ours.stats().open == baseline {
            return true;
        }
        if Instant::now() >= deadline || ours.ctx.epoll_wait(ours.ep, &mut ours.events, 10).is_err()
        {
            return ours.stats().open == baseline;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The peer process killed
// ---------------------------------------------------------------------------------------------

/// A kernel peer process ([`PEER_PY`]) in the lab's Linux namespace; killed and reaped on
/// drop.
struct PeerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PeerProcess {
    /// Starts `python3 -c PEER_PY args…` inside the Linux namespace (the child inherits the
    /// namespace of the thread that spawns it).
    fn start(lab: &Lab, args: Vec<String>) -> Result<PeerProcess, String> {
        let mut child = netns::spawn_in(lab.linux_ns(), move || {
            Command::new("python3")
                .arg("-c")
                .arg(PEER_PY)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .join()
        .map_err(|_| "the spawning thread panicked".to_string())?
        .and_then(|r| r)
        .map_err(|e| format!("python3 (the kernel peer process): {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(PeerProcess { child, lines })
    }

    /// Waits until the process prints `word` (running our stack meanwhile: in
    /// run-to-completion mode nothing answers the peer otherwise).
    fn wait_for(&mut self, ours: &mut Ours, word: &str, deadline: Instant) -> Result<(), String> {
        loop {
            match self.lines.try_recv() {
                Ok(l) if l == word => return Ok(()),
                Ok(_) => {}
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(format!("the peer process ended: {}", self.stderr()));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("the peer process never said {word:?}"));
            }
            ours.ctx
                .epoll_wait(ours.ep, &mut ours.events, 5)
                .map_err(api("epoll_wait"))?;
        }
    }

    /// SIGKILL (what `Child::kill` sends), then reaps it.
    fn kill(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// What it wrote to stderr (after it ended).
    fn stderr(&mut self) -> String {
        let _ = self.kill();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s.trim().to_string()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How one killed transfer ended on our side.
#[derive(Debug, Clone)]
struct Killed {
    /// The call that failed first and its error.
    call: &'static str,
    error: Error,
    /// From the SIGKILL to that error.
    after: Duration,
    sent: u64,
    received: u64,
}

/// Writes to and reads from `fd` until the peer (killed once we wrote [`KILL_AFTER`] bytes
/// and received its [`PEER_SENDS`]) makes a call fail; the first failing call is the
/// outcome. Failures before the kill, and an end of stream instead of an error, are errors.
fn until_killed(ours: &mut Ours, fd: Fd, peer: &mut PeerProcess) -> Result<Killed, String> {
    ours.ctx
        .epoll_ctl(ours.ep, EpollOp::Add, fd, Events::IN | Events::OUT, 0)
        .map_err(api("epoll_ctl"))?;
    let mut out = vec![0u8; 16 << 10];
    Pattern::new(1).fill(&mut out);
    let mut buf = vec![0u8; 64 << 10];
    let (mut sent, mut received) = (0u64, 0u64);
    let mut killed: Option<Instant> = None;
    let deadline = Instant::now() + SOON;
    loop {
        let now = Instant::now();
        if killed.is_none() && sent >= KILL_AFTER && received >= PEER_SENDS {
            peer.kill().map_err(|e| format!("kill: {e}"))?;
            killed = Some(Instant::now());
        }
        if now >= deadline || killed.is_some_and(|t| now >= t + SOON) {
            return Err(match killed {
                None => format!("stalled before the kill: sent {sent}, received {received}"),
                Some(_) => format!(
                    "no error {} s after the kill (sent {sent}, received {received})",
                    SOON.as_secs()
                ),
            });
        }
        let mut failed = None;
        loop {
            match ours.ctx.write(fd, &out) {
                Ok(n) => sent += n as u64,
                Err(Error::WouldBlock) => break,
                Err(e) => {
                    failed = Some(("write", e));
                    break;
                }
            }
        }
        while failed.is_none() {
            match ours.ctx.read(fd, &mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "end of stream instead of a reset (sent {sent}, received {received}){}",
                        if killed.is_some() {
                            ""
                        } else {
                            " before the kill"
                        }
                    ))
                }
                Ok(n) => received += n as u64,
                Err(Error::WouldBlock) => break,
                Err(e) => failed = Some(("read", e)),
            }
        }
        if let Some((call, error)) = failed {
            let Some(t) = killed else {
                return Err(format!("{call} failed before the kill: {error}"));
            };
            let _ = ours
                .ctx
                .epoll_ctl(ours.ep, EpollOp::Del, fd, Events::empty(), 0);
            return Ok(Killed {
                call,
                error,
                after: t.elapsed(),
                sent,
                received,
            });
        }
        ours.ctx
            .epoll_wait(ours.ep, &mut ours.events, 20)
            .map_err(api("epoll_wait"))?;
    }
}

/// Scenario 5a: the kernel peer process killed with SIGKILL mid-transfer, first as our
/// server (we connect), then as our client (it connects to our server). Passes when both
/// times the first failing call on our side says `ConnectionReset`, our stack counted the
/// RSTs and freed both connections.
pub fn kill(seed: u64) -> Record {
    Record::from_result("abrupt-kill", kill_inner(seed))
}

fn kill_inner(seed: u64) -> Outcome {
    let lab = Lab::new("kill", LinkKind::Clean, seed, None).map_err(fail)?;
    let config = lab.our_config(seed, "").map_err(fail)?;
    let mut ours = Ours::new(&lab, &config).map_err(fail)?;
    let mut detail = Vec::new();
    let mut problems = Vec::new();
    let mut figures = Vec::new();
    for role in ["server", "client"] {
        match kill_one(&lab, &mut ours, role) {
            Ok((k, before, after, freed)) => {
                let rsts = after.endpoint.rst_received - before.endpoint.rst_received;
                figures.push(format!(
                    "killed {role}: {} {} after {:.2} ms",
                    k.call,
                    k.error,
                    k.after.as_secs_f64() * 1e3
                ));
                detail.push(format!(
                    "killed {role} after we sent {} and received {}: {} failed with {:?} \
                     {:.2} ms after SIGKILL; RSTs received {rsts}; open {} -> {}",
                    size_text(k.sent),
                    size_text(k.received),
                    k.call,
                    k.error,
                    k.after.as_secs_f64() * 1e3,
                    before.open,
                    after.open,
                ));
                if k.error != Error::ConnectionReset {
                    problems.push(format!("killed {role}: {} got {:?}", k.call, k.error));
                }
                if rsts == 0 {
                    problems.push(format!("killed {role}: our stack counted no RST"));
                }
                if !freed {
                    problems.push(format!(
                        "killed {role}: the connection was not freed (open {} -> {})",
                        before.open, after.open
                    ));
                }
            }
            Err(e) => {
                problems.push(format!("killed {role}: {e}"));
                detail.push(format!("killed {role}: FAILED {e}"));
            }
        }
    }
    conclude(lab, ours, &figures, detail, problems)
}

/// One killed transfer; `role` is the peer's (`server`: it listens, we connect). Returns
/// the outcome, our stack's counters before and after, and whether `open` came back.
fn kill_one(
    lab: &Lab,
    ours: &mut Ours,
    role: &str,
) -> Result<(Killed, StackStats, StackStats, bool), String> {
    let deadline = Instant::now() + SOON;
    let (host, port) = if role == "server" {
        (LINUX, KERNEL_PORT)
    } else {
        if ours.listener.is_none() {
            ours.listen(OUR_PORT)?;
        }
        (OURS, OUR_PORT)
    };
    let before = ours.stats();
    let mode = if role == "server" { "serve" } else { "connect" };
    let args = [
        mode,
        &host.to_string(),
        &port.to_string(),
        &PEER_SENDS.to_string(),
    ];
    let mut peer = PeerProcess::start(lab, args.iter().map(|a| a.to_string()).collect())?;
    let fd = if role == "server" {
        peer.wait_for(ours, "ready", deadline)?;
        ours.connect(SocketAddrV4::new(host, port))?
    } else {
        ours.accept(deadline)?
    };
    let k = until_killed(ours, fd, &mut peer);
    let _ = ours.ctx.close(fd);
    let freed = settle(ours, before.open, Instant::now() + Duration::from_secs(5));
    Ok((k?, before, ours.stats(), freed))
}

// ---------------------------------------------------------------------------------------------
// 2. The link cut
// ---------------------------------------------------------------------------------------------

/// A kernel server that reads and discards everything from the connections it accepts,
/// until `stop`.
fn sink(lab: &Lab, port: u16, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<io::Result<u64>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = netns::spawn_in(lab.linux_ns(), move || -> io::Result<u64> {
        let l = TcpListener::bind(SocketAddrV4::new(LINUX, port));
        let _ = ready_tx.send(l.as_ref().map(drop).map_err(|e| e.to_string()));
        let l = l?;
        l.set_nonblocking(true)?;
        let mut streams = Vec::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        while !stop.load(Ordering::Acquire) {
            if let Ok((s, _)) = l.accept() {
                s.set_nonblocking(true)?;
                streams.push(s);
            }
            for s in &mut streams {
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    total += n as u64;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(total)
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(super::Flatten::map_flatten(t)),
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => Err(io::Error::other("the kernel sink did not start")),
    }
}

/// Scenario 5b: the link cut mid-transfer (we send to a kernel server), then a connect
/// while it is still cut. Passes when both end in `TimedOut` on our side, after at least
/// [`DATA_RETRIES`] retransmissions and [`SYN_RETRIES`] + 1 SYNs, and both connections are
/// freed.
pub fn link_cut(seed: u64) -> Record {
    Record::from_result("abrupt-link-cut", link_cut_inner(seed))
}

fn link_cut_inner(seed: u64) -> Outcome {
    let mut lab = Lab::new("cut", LinkKind::Clean, seed, None).map_err(fail)?;
    let tcp = format!("data_retries = {DATA_RETRIES}\nsyn_retries = {SYN_RETRIES}");
    let config = lab.our_config(seed, &tcp).map_err(fail)?;
    let mut ours = Ours::new(&lab, &config).map_err(fail)?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = sink(&lab, KERNEL_PORT, stop.clone()).map_err(fail)?;
    let r = cut_transfer_then_connect(&lab, &mut ours);
    stop.store(true, Ordering::Release);
    let sunk = server.join();
    let stats = ours.stats();
    drop(ours);
    let relay = lab.stop_relay();
    let mut detail = Vec::new();
    match &relay {
        Ok(r) => detail.push(format!(
            "relay ours->linux: {}; linux->ours: {}",
            r.a_to_b, r.b_to_a
        )),
        Err(e) => detail.push(format!("relay failed: {e}")),
    }
    if let Ok(Ok(n)) = sunk {
        detail.push(format!("the kernel server read {}", size_text(n)));
    }
    detail.push(format!("our stack: {stats}"));
    let (cut, problems) = match r {
        Ok(c) => {
            let p = c.problems();
            (Some(c), p)
        }
        Err(e) => (None, vec![e]),
    };
    if let Some(c) = &cut {
        detail.insert(0, c.to_string());
    }
    let figure = cut.as_ref().map(Cut::figure).unwrap_or_default();
    let detail = detail.join("\n");
    match (problems.is_empty(), relay) {
        (true, Ok(_)) => Ok((figure, detail)),
        (true, Err(e)) => Err((format!("{figure}; relay failed: {e}"), detail)),
        (false, _) => Err((format!("{figure}; failed: {}", problems.join("; ")), detail)),
    }
}

/// What the cut link did to our two connections.
#[derive(Debug, Clone)]
struct Cut {
    sent: u64,
    /// The established connection's first error, its time after the cut, our
    /// retransmissions meanwhile, our frames the cut dropped.
    transfer: (Error, Duration, u64, u64),
    /// The connect's error, its time, our frames (SYNs) the cut dropped.
    connect: (Error, Duration, u64),
    timed_out: u64,
    freed: bool,
}

impl Cut {
    fn figure(&self) -> String {
        let (e, t, rtx, _) = self.transfer;
        let (ce, ct, syns) = self.connect;
        format!(
            "transfer: {e} after {rtx} retransmits in {:.1} s; connect: {ce} after {syns} SYNs \
             in {:.1} s",
            t.as_secs_f64(),
            ct.as_secs_f64()
        )
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.transfer.0 != Error::TimedOut {
            p.push(format!("the transfer ended with {:?}", self.transfer.0));
        }
        if self.transfer.2 < u64::from(DATA_RETRIES) {
            p.push(format!(
                "{} retransmissions, fewer than data_retries = {DATA_RETRIES}",
                self.transfer.2
            ));
        }
        if self.connect.0 != Error::TimedOut {
            p.push(format!("the connect ended with {:?}", self.connect.0));
        }
        if self.connect.2 < u64::from(SYN_RETRIES) + 1 {
            p.push(format!(
                "{} SYNs, fewer than 1 + syn_retries = {}",
                self.connect.2,
                SYN_RETRIES + 1
            ));
        }
        if self.timed_out < 2 {
            p.push(format!("our stack counted {} timeouts", self.timed_out));
        }
        if !self.freed {
            p.push("the connections were not freed".into());
        }
        p
    }
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (e, t, rtx, dropped) = self.transfer;
        let (ce, ct, syns) = self.connect;
        write!(
            f,
            "cut after we wrote {}: {e:?} {:.2} s later, {rtx} retransmissions, {dropped} of our \
             frames dropped by the cut; connect while cut: {ce:?} after {:.2} s, {syns} SYNs; \
             timeouts counted {}, connections freed: {}",
            size_text(self.sent),
            t.as_secs_f64(),
            ct.as_secs_f64(),
            self.timed_out,
            self.freed
        )
    }
}

fn cut_transfer_then_connect(lab: &Lab, ours: &mut Ours) -> Result<Cut, String> {
    let relay = lab.relay.as_ref().ok_or("no relay")?;
    let before = ours.stats();
    let to = SocketAddrV4::new(LINUX, KERNEL_PORT);
    let fd = ours.connect(to)?;
    ours.ctx
        .epoll_ctl(ours.ep, EpollOp::Add, fd, Events::OUT, 0)
        .map_err(api("epoll_ctl"))?;
    let mut out = vec![0u8; 64 << 10];
    Pattern::new(2).fill(&mut out);
    let mut sent = 0u64;
    let mut cut_at: Option<(Instant, u64, u64)> = None;
    let give_up = Instant::now() + SOON;
    let transfer = loop {
        let now = Instant::now();
        if cut_at.is_none() && sent >= CUT_AFTER {
            relay.set_cut(true);
            cut_at = Some((now, ours.stats().retransmits, lab.relay_stats().a_to_b.cut));
        }
        if let Some((t, _, _)) = cut_at {
            if now >= t + Duration::from_secs(60) {
                return Err("no error 60 s after the cut".into());
            }
        } else if now >= give_up {
            return Err(format!("stalled before the cut after {sent} bytes"));
        }
        let mut error = None;
        loop {
            match ours.ctx.write(fd, &out) {
                Ok(n) => sent += n as u64,
                Err(Error::WouldBlock) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            let Some((t, rtx, dropped)) = cut_at else {
                return Err(format!("write failed before the cut: {e}"));
            };
            break (
                e,
                t.elapsed(),
                ours.stats().retransmits - rtx,
                lab.relay_stats().a_to_b.cut - dropped,
            );
        }
        ours.ctx
            .epoll_wait(ours.ep, &mut ours.events, 20)
            .map_err(api("epoll_wait"))?;
    };
    let _ = ours.ctx.close(fd);
    // A connect while the link is still cut.
    let dropped = lab.relay_stats().a_to_b.cut;
    let start = Instant::now();
    let fd = ours.connect(to)?;
    ours.ctx
        .epoll_ctl(ours.ep, EpollOp::Add, fd, Events::OUT, 0)
        .map_err(api("epoll_ctl"))?;
    let connect = loop {
        if let Some(e) = ours.ctx.take_error(fd).map_err(api("SO_ERROR"))? {
            break (e, start.elapsed(), lab.relay_stats().a_to_b.cut - dropped);
        }
        if start.elapsed() >= Duration::from_secs(60) {
            let _ = ours.ctx.close(fd);
            return Err("the connect did not end 60 s into the cut".into());
        }
        ours.ctx
            .epoll_wait(ours.ep, &mut ours.events, 20)
            .map_err(api("epoll_wait"))?;
    };
    let _ = ours.ctx.close(fd);
    let freed = settle(ours, before.open, Instant::now() + Duration::from_secs(5));
    Ok(Cut {
        sent,
        transfer,
        connect,
        timed_out: ours.stats().timed_out - before.timed_out,
        freed,
    })
}

// ---------------------------------------------------------------------------------------------
// 3. TIME-WAIT reuse
// ---------------------------------------------------------------------------------------------

/// Who closes each short connection first (and so holds its TIME-WAIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    /// We close first: our stack holds TIME-WAIT.
    Ours,
    /// The kernel closes first (and reuses its TIME-WAIT ports with `tcp_tw_reuse`).
    Linux,
}

/// What one run of short connections did.
#[derive(Debug, Clone, Default)]
struct Short {
    done: usize,
    ports: BTreeSet<u16>,
    elapsed: Duration,
    /// Connects that waited for a port (`EADDRNOTAVAIL`, retried).
    port_waits: u64,
    /// Connections whose handshake took more than 500 ms (a SYN retransmitted).
    slow: usize,
    /// Time of each connection, connect to close.
    times: Vec<Duration>,
    failures: Vec<String>,
}

impl Short {
    /// Median and longest connection.
    fn times_text(&self) -> String {
        let mut t = self.times.clone();
        t.sort();
        match (t.get(t.len() / 2), t.last()) {
            (Some(m), Some(x)) => format!(
                "per connection median {:.2} ms, longest {:.1} ms",
                m.as_secs_f64() * 1e3,
                x.as_secs_f64() * 1e3
            ),
            _ => "no connection".into(),
        }
    }

    fn line(&self, what: &str, n: usize) -> String {
        format!(
            "{what}: {}/{n} in {:.2} s over {} ports",
            self.done,
            self.elapsed.as_secs_f64(),
            self.ports.len()
        )
    }
}

/// Scenario 5c: `connections` sequential short connections in each of the three parts (see
/// the module doc). Passes when every connection of every part succeeded.
pub fn tw_reuse(connections: usize, seed: u64) -> Record {
    Record::from_result("abrupt-tw-reuse", tw_inner(connections, seed))
}

fn tw_inner(n: usize, seed: u64) -> Outcome {
    let lab = Lab::new("twreuse", LinkKind::Clean, seed, None).map_err(fail)?;
    let range = format!("{} {}", PEER_PORTS.0, PEER_PORTS.1);
    lab.linux_sysctl("net/ipv4/ip_local_port_range", &range)
        .and_then(|()| lab.linux_sysctl("net/ipv4/tcp_tw_reuse", "1"))
        .map_err(fail)?;
    // Linux reuses a TIME-WAIT port for a connect one second after its last segment by
    // default; the delay is a sysctl since 6.13. Without it, part (b) waits for ports.
    let delay = lab
        .linux_sysctl("net/ipv4/tcp_tw_reuse_delay", "2")
        .map(|()| "tcp_tw_reuse_delay 2 ms".to_string())
        .unwrap_or_else(|e| format!("tcp_tw_reuse_delay not set ({e}): 1 s"));
    let tcp = format!("ephemeral_ports = \"{}-{}\"", OUR_PORTS.0, OUR_PORTS.1);
    let mut config = lab.our_config(seed, &tcp).map_err(fail)?;
    config.tcp.time_wait_ms = 60_000;
    let mut ours = Ours::new(&lab, &config).map_err(fail)?;
    let mut detail = vec![format!(
        "linux ip_local_port_range {range}, tcp_tw_reuse 1, {delay}; our time_wait 60 s, \
         ephemeral ports {}-{}",
        OUR_PORTS.0, OUR_PORTS.1
    )];
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    let parts = [
        ("linux->ours, we close first", Some(Closer::Ours), OUR_PORT),
        (
            "linux->ours, linux closes first",
            Some(Closer::Linux),
            OUR_PORT + 1,
        ),
        ("ours->linux, linux closes first", None, KERNEL_PORT),
    ];
    for (what, closer, port) in parts {
        let recycled = linux_netstat(&lab, "TWRecycled").unwrap_or(0);
        let rsts = (
            lab.linux_tcp_counter("OutRsts").unwrap_or(0),
            ours.stats().rst_sent,
        );
        let r = match closer {
            Some(c) => kernel_clients(&lab, &mut ours, c, port, n),
            None => our_clients(&lab, &mut ours, port, n),
        };
        let recycled = linux_netstat(&lab, "TWRecycled").unwrap_or(0) - recycled;
        let rsts = (
            lab.linux_tcp_counter("OutRsts").unwrap_or(0) - rsts.0,
            ours.stats().rst_sent - rsts.1,
        );
        let short = match r {
            Ok(s) => s,
            Err(e) => Short {
                failures: vec![e],
                ..Short::default()
            },
        };
        figures.push(short.line(what, n));
        detail.push(format!(
            "{}; {}; {} slow handshakes (> 0.5 s), {} connects waited for a port, linux's \
             connect took over its TIME-WAIT {recycled} times (TWRecycled), RSTs sent: linux {} \
             ours {}; ports {:?}; open on our side now {}",
            short.line(what, n),
            short.times_text(),
            short.slow,
            short.port_waits,
            rsts.0,
            rsts.1,
            short.ports,
            ours.stats().open
        ));
        if short.done != n {
            problems.push(format!(
                "{what}: {} of {n} ({})",
                short.done,
                short.failures.join("; ")
            ));
        }
        // A refused SYN shows as a reset: the SYN-SENT side answers the ACK a TIME-WAIT
        // sends to a SYN it does not take with RST, then retries.
        if rsts != (0, 0) {
            problems.push(format!(
                "{what}: RSTs sent (linux {}, ours {}): a SYN for a reused 4-tuple was refused",
                rsts.0, rsts.1
            ));
        }
        let allowed = match closer {
            Some(_) => PEER_PORTS.0..=PEER_PORTS.1,
            None => OUR_PORTS.0..=OUR_PORTS.1,
        };
        if short.ports.iter().any(|p| !allowed.contains(p)) {
            problems.push(format!(
                "{what}: ports outside {allowed:?}: {:?}",
                short.ports
            ));
        }
        if short.done > 0 && short.done <= short.ports.len() {
            problems.push(format!(
                "{what}: no port was reused (the test did not test)"
            ));
        }
    }
    conclude(lab, ours, &figures, detail, problems)
}

/// A counter of the kernel peer's `/proc/net/netstat` (`TcpExt` line).
fn linux_netstat(lab: &Lab, name: &str) -> Option<u64> {
    let text = netns::spawn_in(lab.linux_ns(), || {
        std::fs::read_to_string("/proc/thread-self/net/netstat")
    })
    .join()
    .ok()?
    .ok()?
    .ok()?;
    super::snmp_counter(&text, "TcpExt", name)
}

/// A kernel client making `n` sequential short connections to our `port`, each sending
/// [`REQUEST`] and reading [`ANSWER`]: to the end of the stream when we close first, then
/// closing first itself otherwise. Stops at the third failure.
fn kernel_client(lab: &Lab, port: u16, closer: Closer, n: usize) -> JoinHandle<io::Result<Short>> {
    netns::spawn_in(lab.linux_ns(), move || {
        let to = SocketAddr::V4(SocketAddrV4::new(OURS, port));
        let mut s = Short::default();
        let start = Instant::now();
        for i in 0..n {
            if s.failures.len() >= 3 {
                break;
            }
            let t = Instant::now();
            let mut waits = 0;
            let stream = loop {
                match TcpStream::connect_timeout(&to, SOON) {
                    Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && waits < 5000 => {
                        waits += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    r => break r,
                }
            };
            s.port_waits += waits;
            let r = stream.and_then(|mut c| {
                if t.elapsed() > Duration::from_millis(500) {
                    s.slow += 1;
                }
                s.ports.insert(c.local_addr()?.port());
                c.set_read_timeout(Some(SOON))?;
                c.write_all(REQUEST)?;
                let mut got = Vec::new();
                match closer {
                    Closer::Ours => {
                        c.read_to_end(&mut got)?;
                    }
                    Closer::Linux => {
                        got.resize(ANSWER.len(), 0);
                        c.read_exact(&mut got)?;
                    }
                }
                if got != ANSWER {
                    return Err(io::Error::other(format!("answer {got:?}")));
                }
                Ok(())
            });
            s.times.push(t.elapsed());
            match r {
                Ok(()) => s.done += 1,
                Err(e) => s.failures.push(format!("connection {i}: {e}")),
            }
        }
        s.elapsed = start.elapsed();
        s
    })
}

/// Our server's side of one short connection.
#[derive(Debug, Default)]
struct Served {
    got: Vec<u8>,
    answered: usize,
}

/// Serves `n` short connections of a kernel client on our `port` (a listener of its own).
fn kernel_clients(
    lab: &Lab,
    ours: &mut Ours,
    closer: Closer,
    port: u16,
    n: usize,
) -> Result<Short, String> {
    let l = ours.ctx.socket().map_err(api("socket"))?;
    ours.ctx
        .bind(l, SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port))
        .map_err(api("bind"))?;
    ours.ctx.listen(l, 16).map_err(api("listen"))?;
    ours.ctx
        .epoll_ctl(ours.ep, EpollOp::Add, l, Events::IN, u64::from(l))
        .map_err(api("epoll_ctl"))?;
    let client = kernel_client(lab, port, closer, n);
    let mut conns: HashMap<Fd, Served> = HashMap::new();
    let mut errors = Vec::new();
    let deadline = Instant::now() + SOON * 4;
    let mut buf = [0u8; 64];
    while !(client.is_finished() && conns.is_empty()) && Instant::now() < deadline {
        ours.ctx
            .epoll_wait(ours.ep, &mut ours.events, 5)
            .map_err(api("epoll_wait"))?;
        while let Ok((fd, _)) = ours.ctx.accept(l) {
            ours.ctx
                .epoll_ctl(ours.ep, EpollOp::Add, fd, Events::IN, u64::from(fd))
                .map_err(api("epoll_ctl"))?;
            conns.insert(fd, Served::default());
        }
        let mut finished = Vec::new();
        for (&fd, c) in &mut conns {
            match serve_short(ours, fd, c, closer, &mut buf) {
                Ok(false) => {}
                Ok(true) => finished.push((fd, None)),
                Err(e) => finished.push((fd, Some(e))),
            }
        }
        for (fd, e) in finished {
            conns.remove(&fd);
            let _ = ours
                .ctx
                .epoll_ctl(ours.ep, EpollOp::Del, fd, Events::empty(), 0);
            if let Some(e) = e {
                let _ = ours.ctx.abort(fd);
                errors.push(e);
            } else {
                let _ = ours.ctx.close(fd);
            }
        }
    }
    for (fd, _) in conns.drain() {
        let _ = ours.ctx.abort(fd);
    }
    let _ = ours.ctx.close(l);
    let mut short = client
        .join()
        .map_err(|_| "the kernel client panicked".to_string())?
        .map_err(|e| e.to_string())?;
    short
        .failures
        .extend(errors.into_iter().take(3).map(|e| format!("ours: {e}")));
    Ok(short)
}

/// Advances one served connection: reads the request, answers, and closes at once (we
/// close first) or after the client's end of stream. True when it may be closed.
fn serve_short(
    ours: &mut Ours,
    fd: Fd,
    c: &mut Served,
    closer: Closer,
    buf: &mut [u8],
) -> Result<bool, String> {
    while c.got.len() < REQUEST.len() {
        match ours.ctx.read(fd, buf) {
            Ok(0) => return Err("end of stream before the request".into()),
            Ok(k) => c.got.extend_from_slice(&buf[..k]),
            Err(Error::WouldBlock) => return Ok(false),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if c.got != REQUEST {
        return Err(format!("request {:?}", c.got));
    }
    while c.answered < ANSWER.len() {
        match ours.ctx.write(fd, &ANSWER[c.answered..]) {
            Ok(k) => c.answered += k,
            Err(Error::WouldBlock) => return Ok(false),
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    if closer == Closer::Ours {
        return Ok(true);
    }
    match ours.ctx.read(fd, buf) {
        Ok(0) => Ok(true),
        Ok(_) => Err("more than the request".into()),
        Err(Error::WouldBlock) => Ok(false),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Our stack as the client of `n` sequential short connections to a kernel server on
/// `port` that answers and closes first (so the kernel holds TIME-WAIT on the 4-tuples our
/// 4 ephemeral ports make).
fn our_clients(lab: &Lab, ours: &mut Ours, port: u16, n: usize) -> Result<Short, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let flag = stop.clone();
    let server = netns::spawn_in(lab.linux_ns(), move || -> io::Result<u64> {
        let l = TcpListener::bind(SocketAddrV4::new(LINUX, port));
        let _ = ready_tx.send(l.as_ref().map(drop).map_err(|e| e.to_string()));
        let l = l?;
        l.set_nonblocking(true)?;
        let mut served = 0;
        while !flag.load(Ordering::Acquire) {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            };
            c.set_nonblocking(false)?;
            c.set_read_timeout(Some(SOON))?;
            let mut req = [0u8; 8];
            if c.read_exact(&mut req).is_ok() && &req == REQUEST && c.write_all(ANSWER).is_ok() {
                served += 1;
            }
            // Dropped here: the kernel closes first.
        }
        Ok(served)
    });
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("kernel server: {e}")),
        Err(_) => return Err("the kernel server did not start".into()),
    }
    let to = SocketAddrV4::new(LINUX, port);
    let mut s = Short::default();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    for i in 0..n {
        if s.failures.len() >= 3 {
            break;
        }
        let t = Instant::now();
        let r = our_short(ours, to, &mut buf, &mut s.port_waits);
        s.times.push(t.elapsed());
        match r {
            Ok(local) => {
                s.done += 1;
                s.ports.insert(local);
                if t.elapsed() > Duration::from_millis(500) {
                    s.slow += 1;
                }
            }
            Err(e) => s.failures.push(format!("connection {i}: {e}")),
        }
    }
    s.elapsed = start.elapsed();
    stop.store(true, Ordering::Release);
    let _ = server.join();
    Ok(s)
}

/// One short connection of ours: connect (waiting for a free port if none is), request,
/// answer and end of stream, close. Returns our local port.
fn our_short(
    ours: &mut Ours,
    to: SocketAddrV4,
    buf: &mut [u8],
    waits: &mut u64,
) -> Result<u16, String> {
    let deadline = Instant::now() + SOON;
    let fd = loop {
        let s = ours.ctx.socket().map_err(api("socket"))?;
        match ours.ctx.connect(s, to) {
            Ok(()) | Err(Error::InProgress) => break s,
            Err(Error::AddrNotAvailable) if Instant::now() < deadline => {
                let _ = ours.ctx.close(s);
                *waits += 1;
                ours.ctx
                    .epoll_wait(ours.ep, &mut ours.events, 1)
                    .map_err(api("epoll_wait"))?;
            }
            Err(e) => {
                let _ = ours.ctx.close(s);
                return Err(format!("connect: {e}"));
            }
        }
    };
    let r = our_short_on(ours, fd, buf, deadline);
    let _ = ours
        .ctx
        .epoll_ctl(ours.ep, EpollOp::Del, fd, Events::empty(), 0);
    match r {
        Ok(port) => {
            let _ = ours.ctx.close(fd);
            Ok(port)
        }
        Err(e) => {
            let _ = ours.ctx.abort(fd);
            Err(e)
        }
    }
}

fn our_short_on(ours: &mut Ours, fd: Fd, buf: &mut [u8], deadline: Instant) -> Result<u16, String> {
    ours.ctx
        .epoll_ctl(ours.ep, EpollOp::Add, fd, Events::IN | Events::OUT, 0)
        .map_err(api("epoll_ctl"))?;
    let mut sent = 0;
    let mut got = Vec::new();
    loop {
        if Instant::now() >= deadline {
            return Err(format!("timed out (sent {sent} bytes, received {got:?})"));
        }
        if let Some(e) = ours.ctx.take_error(fd).map_err(api("SO_ERROR"))? {
            return Err(format!("after {sent} bytes: {e}"));
        }
        while sent < REQUEST.len() {
            match ours.ctx.write(fd, &REQUEST[sent..]) {
                Ok(k) => sent += k,
                Err(Error::WouldBlock) => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        loop {
            match ours.ctx.read(fd, buf) {
                Ok(0) if got == ANSWER => {
                    return ours
                        .ctx
                        .local_addr(fd)
                        .map(|a| a.port())
                        .map_err(api("local_addr"));
                }
                Ok(0) => return Err(format!("answer {got:?}")),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(Error::WouldBlock) | Err(Error::NotConnected) => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        ours.ctx
            .epoll_wait(ours.ep, &mut ours.events, 5)
            .map_err(api("epoll_wait"))?;
    }
}
