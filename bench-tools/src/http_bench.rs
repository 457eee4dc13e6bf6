//! `mtcp-bench http`: HTTP/1.1 requests per CPU-second of our `epserver` driven by our
//! `epwget` (both on mtcp-rs) against nginx driven by wrk (both on the Linux kernel), over
//! the same kind of link, side by side in one invocation.
//!
//! ## Workload
//! Keep-alive `GET`s of one small static file, [`BODY_LEN`] = 64 bytes (the smallest file
//! of mTCP's NSDI'14 web-server experiments, and the size where per-request stack and
//! system-call costs dominate, which is what this benchmark is about), over `concurrency`
//! connections opened once; each connection runs one request at a time. Both servers
//! answer `200` with `Content-Length: 64`.
//!
//! ## Stacks
//! - **mtcp-shm**: `epserver` and `epwget --keep-alive` as child processes, linked by a
//!   named shared-memory port `shm:httpbench-<pid>-<n>` (no root), 10.0.0.2 and 10.0.0.1
//!   with static ARP entries both ways.
//! - **mtcp-veth** (root): the same two programs, each in its own new network namespace on
//!   one end of a veth pair, on AF_PACKET: server
//!   `afpacket:<dev>/q=C,steer=remote,ring=v2,slots=4096`, client the same with
//!   `steer=local` (the ports `mtcp-bench pingpong` found best). No kernel address on
//!   either end.
//! - **linux-loopback**: nginx on 127.0.0.1 (a free port), wrk against it. Runs without root
//!   when nginx can run as the user; otherwise it is skipped with a message.
//! - **linux-veth** (root): nginx in one namespace with 10.0.0.2 on its veth end, wrk in the
//!   other with 10.0.0.1 (kernel offload defaults, as Linux runs on veth).
//!
//! Both sides get the same number of cores `C` (`--cores`): `-N C` for epserver and epwget
//! (each core an application thread and a stack thread), `worker_processes C` for nginx and
//! `-t C` for wrk. nginx runs in the foreground (`daemon off`) with a master process
//! (`master_process on`: the only way to have `C` workers; the master sleeps and its CPU is
//! counted anyway), every worker with its own listener (`listen … reuseport`, as epserver's
//! per-core listeners), `access_log off`, `open_file_cache` (epserver caches small files
//! too), `sendfile on; tcp_nopush on` (header and body in one segment), and
//! `keepalive_requests` high enough that no connection is closed during a run. Nothing is
//! pinned: the kernel places every thread of both programs on both stacks.
//!
//! ## Measurement
//! Each run starts its server from scratch in its own temporary directory (and, for veth,
//! its own namespaces), runs one warm-up client (wrk for one second; epwget for
//! `max(20 000, 50 × concurrency)` requests), then the measured client. Neither client can
//! leave a warm-up out of its own figures, so the measured interval is the *whole* measured
//! client run: wrk for `--seconds` rounded to whole seconds (wrk's `-d` takes whole
//! seconds; at least 1), epwget for as many requests as the previous run of the same case
//! (or the warm-up) says take that long. Connection set-up (64–256 connects) is a few
//! milliseconds of that. Figures:
//!
//! - requests and wall time as the client reports them (wrk's `N requests in T`; epwget's
//!   `requests:` and `time:`);
//! - CPU: user + system of *both* programs over the client's run: the client's from
//!   `wait4` (its rusage, every thread, start-up and teardown included), the server's from
//!   `/proc/<pid>/task/*/schedstat` (ns, every thread; for nginx the master and every
//!   worker) read just before the client starts and just after it is reaped;
//! - `tx_per_s` = requests / wall, `cpu_us_per_tx` = (server + client CPU) / requests,
//!   `gbit_per_s` = response body bytes × 8 / wall / 1e9, `p50_us`/`p99_us` from the
//!   clients' own latency reports (epwget's percentiles over every request, from its first
//!   request byte to the last response byte; wrk's `--latency` distribution).
//!
//! Each figure is the median over `--runs` runs, and the runs of the stacks alternate
//! (ours, Linux, ours, …) so that a shared host's drift reaches both alike. As in
//! `mtcp-bench pingpong`, softirq work deferred to `ksoftirqd` (not in either process) and
//! the busy time of other processes are measured alongside, and a note says when they are
//! large enough to matter.
//!
//! Any failed request, non-2xx status, socket error, early exit or short run fails the run
//! and the command with the client's output: no figure is reported from a run with errors.
//! Every child is killed, namespace deleted and temporary directory (and shared-memory
//! link) removed on every path, by guards.
//!
//! epserver and epwget run as `mtcp-bench epserver …` and `mtcp-bench epwget …`: the
//! benchmark's own executable (or, from tests in `target/*/deps`, the `mtcp-bench` built
//! beside them), so they are always the same build as the benchmark.
//!
//! Our side runs in both of its modes: a stack thread per core (`mtcp-shm`, `mtcp-veth`) and
//! run-to-completion (`--rtc`: `mtcp-shm-rtc`, `mtcp-veth-rtc`). Over veth our two ends are
//! reserved for the user-level stack as in `mtcp-bench pingpong`
//! ([`netns::Namespaces::reserve_for_user_stack`]): without it the kernel's IPv4 input sees
//! every frame arriving on the address-less ends, routes it and drops it, in the sender's
//! `sendto` (measured 10-15 % of mtcp-veth's CPU).
//!
//! What it does not measure: a NIC, other file sizes, new connections per request (see
//! `mtcp-bench pingpong --mode new-conn` for that), or pinned placements.

use crate::cpu::median;
use crate::netns;
use crate::pingpong::{ksoftirqd_time, system_busy, Record};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Size of the file every request fetches, bytes.
pub const BODY_LEN: usize = 64;
/// Its name under the document root.
const FILE: &str = "64.bin";
/// The server's address on the mtcp-rs links and on linux-veth.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The client's address there.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The server's port, except on loopback (a free port there).
const PORT: u16 = 8080;
/// How long a server may take to come up.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a stopped child may take to exit before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// A note is printed when `ksoftirqd` ran more than this share of the measured CPU time.
const SOFTIRQ_NOTE: f64 = 0.02;
/// A note is printed when other processes kept this share of one CPU busy in the runs.
const OTHERS_NOTE: f64 = 0.05;

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// The four server/client pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpStack {
    /// epserver and epwget over a shared-memory link.
    MtcpShm,
    /// The same in run-to-completion mode (`--rtc`: each application thread runs its
    /// core's stack).
    MtcpShmRtc,
    /// epserver and epwget on AF_PACKET over a veth pair between two namespaces (root).
    MtcpVeth,
    /// The same in run-to-completion mode (root).
    MtcpVethRtc,
    /// nginx and wrk over 127.0.0.1.
    LinuxLoopback,
    /// nginx and wrk over a veth pair between two namespaces (root).
    LinuxVeth,
}

impl HttpStack {
    /// Every stack, in table order.
    pub const ALL: [HttpStack; 6] = [
        HttpStack::MtcpShm,
        HttpStack::MtcpShmRtc,
        HttpStack::LinuxLoopback,
        HttpStack::MtcpVeth,
        HttpStack::MtcpVethRtc,
        HttpStack::LinuxVeth,
    ];

    /// The stacks that need no root: the default.
    pub const NO_ROOT: [HttpStack; 3] = [
        HttpStack::MtcpShm,
        HttpStack::MtcpShmRtc,
        HttpStack::LinuxLoopback,
    ];

    /// The stacks on a veth pair (root).
    pub const VETH: [HttpStack; 3] = [
        HttpStack::MtcpVeth,
        HttpStack::MtcpVethRtc,
        HttpStack::LinuxVeth,
    ];

    /// The name in options and records.
    pub fn name(self) -> &'static str {
        match self {
            HttpStack::MtcpShm => "mtcp-shm",
            HttpStack::MtcpShmRtc => "mtcp-shm-rtc",
            HttpStack::MtcpVeth => "mtcp-veth",
            HttpStack::MtcpVethRtc => "mtcp-veth-rtc",
            HttpStack::LinuxLoopback => "linux-loopback",
            HttpStack::LinuxVeth => "linux-veth",
        }
    }

    /// Whether it runs in network namespaces (root only).
    pub fn needs_root(self) -> bool {
        HttpStack::VETH.contains(&self)
    }

    /// Whether it is ours (epserver and epwget) rather than nginx and wrk.
    pub fn is_mtcp(self) -> bool {
        !matches!(self, HttpStack::LinuxLoopback | HttpStack::LinuxVeth)
    }

    /// Whether epserver and epwget run in run-to-completion mode.
    pub fn is_rtc(self) -> bool {
        matches!(self, HttpStack::MtcpShmRtc | HttpStack::MtcpVethRtc)
    }

    /// Linux over the same kind of link: what this one is compared with.
    pub fn baseline(self) -> HttpStack {
        if self.needs_root() {
            HttpStack::LinuxVeth
        } else {
            HttpStack::LinuxLoopback
        }
    }

    /// Parses a comma-separated list of stack names, `shm` (the stacks that need no root),
    /// `veth` (the stacks on a veth pair) or `all`.
    pub fn parse_list(text: &str) -> Result<Vec<HttpStack>, String> {
        let groups: &[(&str, &[HttpStack])] =
            &[("shm", &HttpStack::NO_ROOT), ("veth", &HttpStack::VETH)];
        crate::cli::parse_names(text, &HttpStack::ALL, HttpStack::name, groups, "--stack")
    }
}

impl fmt::Display for HttpStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of the `http` subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stacks measured, in this order within each run.
    pub stacks: Vec<HttpStack>,
    /// Connections, one table row per level.
    pub concurrency: Vec<usize>,
    /// Cores per side (server and client alike).
    pub cores: usize,
    /// Target length of a measured client run, seconds (rounded to whole seconds, at least
    /// 1: wrk's unit).
    pub seconds: f64,
    /// Runs per case (medians are reported).
    pub runs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stacks: HttpStack::NO_ROOT.to_vec(),
            concurrency: vec![64],
            cores: 1,
            seconds: 2.0,
            runs: 3,
        }
    }
}

/// One run's parameters.
#[derive(Debug, Clone, Copy)]
struct Plan {
    concurrency: usize,
    cores: usize,
    /// Whole seconds of a measured run.
    seconds: u64,
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Sample {
    requests: u64,
    body_bytes: u64,
    /// The client's own wall time of its run.
    wall: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
    p50_us: f64,
    p99_us: f64,
    /// `ksoftirqd` CPU during the client's run (in neither process).
    ksoftirqd: Duration,
    /// Busy CPU time of everything else during the client's run.
    others: Duration,
    /// Our own wall time of the client's run (spawn to reap).
    span: Duration,
}

impl Sample {
    fn cpu_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.requests as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child process with its output collected by two reader threads; stopped (SIGTERM, then
/// SIGKILL after [`STOP_LIMIT`]) and reaped on drop. Reaped with `wait4`, which also gives
/// its CPU time. `also_kill` are processes it started (nginx's workers) that are killed too
/// if it has to be killed.
struct Proc {
    pid: Pid,
    name: String,
    reaped: Option<(i32, Duration)>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    also_kill: Vec<Pid>,
}

fn collect<R: Read + Send + 'static>(
    from: R,
    into: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf).into_owned();
            if let Ok(mut s) = into.lock() {
                s.push_str(&line);
            }
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
            buf.clear();
        }
    })
}

impl Proc {
    /// Starts `cmd` (stdin empty, outputs collected) inside network namespace `ns`, if any:
    /// the spawning thread enters it, and the child inherits the thread's namespace.
    fn spawn(mut cmd: Command, ns: Option<&str>, name: &str) -> Result<Proc, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = {
            let _inside = ns
                .map(netns::enter)
                .transpose()
                .map_err(|e| format!("entering {ns:?}: {e}"))?;
            cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?
        };
        let pid = Pid::from_raw(child.id() as i32);
        let (stdout, stderr) = Default::default();
        let (tx, lines) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(o) = child.stdout.take() {
            readers.push(collect(o, Arc::clone(&stdout), Some(tx)));
        }
        if let Some(e) = child.stderr.take() {
            readers.push(collect(e, Arc::clone(&stderr), None));
        }
        // `child` is dropped without waiting: this guard reaps it (wait4) instead.
        Ok(Proc {
            pid,
            name: name.to_string(),
            reaped: None,
            stdout,
            stderr,
            lines,
            readers,
            also_kill: Vec::new(),
        })
    }

    /// Reaps the child if it has exited: its wait status and CPU time (user + system, every
    /// thread).
    fn try_reap(&mut self) -> Option<(i32, Duration)> {
        if self.reaped.is_none() {
            let mut status = 0;
            // SAFETY: rusage is plain data (integers and timevals); all-zero is valid.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: `status` and `ru` are valid out-pointers for the call's duration; the
            // pid is our own unreaped child (std's handle was dropped without waiting).
            let r = unsafe { libc::wait4(self.pid.as_raw(), &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid.as_raw() {
                let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
                self.reaped = Some((status, tv(ru.ru_utime) + tv(ru.ru_stime)));
            } else if r == -1 {
                // Not our child any more (cannot happen); never signal that pid again.
                self.reaped = Some((-1, Duration::ZERO));
            }
        }
        self.reaped
    }

    /// Waits up to `limit` for the child to exit (killing it after that, an error): its
    /// wait status and CPU time.
    fn wait(&mut self, limit: Duration) -> Result<(i32, Duration), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.try_reap() {
                return Ok(r);
            }
            if Instant::now() > deadline {
                self.stop();
                let out = self.output();
                return Err(format!(
                    "{} did not finish in {limit:?}; killed\n{out}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for a line of standard output containing `needle`.
    fn await_line(&mut self, needle: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(l) if l.contains(needle) => return Ok(()),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Output closed: wait for the exit itself, then report it.
                    let _ = self.wait(Duration::from_secs(1));
                    let out = self.output();
                    return Err(format!("{} ended early\n{out}", self.name));
                }
            }
            if self.try_reap().is_some() {
                let out = self.output();
                return Err(format!("{} ended early\n{out}", self.name));
            }
            if Instant::now() > deadline {
                let out = self.output();
                return Err(format!(
                    "{} did not say {needle:?} in {limit:?}\n{out}",
                    self.name
                ));
            }
        }
    }

    /// Both outputs so far (complete once the child is reaped and its readers are done).
    fn output(&mut self) -> String {
        if self.reaped.is_some() {
            // The pipes close with the child (none of ours leaves descendants holding them).
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
        let o = self.stdout.lock().map(|s| s.clone()).unwrap_or_default();
        let e = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{o}--- {} stderr ---\n{e}",
            self.name, self.name
        )
    }

    /// SIGTERM, up to [`STOP_LIMIT`] to exit, then SIGKILL (and SIGKILL to `also_kill`);
    /// reaps the child. Its wait status.
    fn stop(&mut self) -> i32 {
        if let Some((status, _)) = self.reaped {
            return status;
        }
        let _ = kill(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Some((status, _)) = self.try_reap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        for &p in &self.also_kill {
            // Only if it is still the same program (a pid is reused only after a reap).
            if comm(p).is_some_and(|c| self.name.starts_with(c.trim())) {
                let _ = kill(p, Signal::SIGKILL);
            }
        }
        loop {
            if let Some((status, _)) = self.try_reap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/proc/<pid>/comm`.
fn comm(pid: Pid) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()
}

/// A wait status in words, `None` for a clean exit.
fn exit_problem(status: i32) -> Option<String> {
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => None,
            c => Some(format!("exit status {c}")),
        }
    } else if libc::WIFSIGNALED(status) {
        Some(format!("killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Some(format!("wait status {status:#x}"))
    }
}

/// CPU time so far of every thread of every process in `pids` (`/proc/<pid>/task/*/
/// schedstat`, ns: user and system alike).
fn tree_cpu(pids: &[Pid]) -> Result<Duration, String> {
    let mut ns = 0u64;
    for pid in pids {
        let dir = format!("/proc/{pid}/task");
        let tasks = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
        for t in tasks.flatten() {
            let path = t.path().join("schedstat");
            // A thread may end between the listing and the read: it then counts nothing
            // (servers do not end threads while serving).
            if let Ok(text) = std::fs::read_to_string(&path) {
                ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("{}: unexpected {text:?}", path.display()))?;
            }
        }
    }
    Ok(Duration::from_nanos(ns))
}

/// The processes whose parent is `parent`.
fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(parent.as_raw())
            })
        })
        .map(Pid::from_raw)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A run's surroundings
// ---------------------------------------------------------------------------------------------

/// The served file: printable, so that a mismatch reads well in a dump.
fn body() -> Vec<u8> {
    (0..BODY_LEN)
        .map(|i| {
            if i + 1 == BODY_LEN {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mtcp-http-bench-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        let dir = TempDir(path);
        std::fs::create_dir_all(dir.0.join("www")).map_err(|e| format!("{e}"))?;
        // Printable, so a mismatch is readable in a dump; ends with a newline.
        let body: Vec<u8> = (0..BODY_LEN)
            .map(|i| {
                if i + 1 == BODY_LEN {
                    b'\n'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect();
        std::fs::write(dir.0.join("www").join(FILE), body).map_err(|e| format!("{e}"))?;
        Ok(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let p = self.path(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A shared-memory link name; its files in `/dev/shm` are removed on drop (a process that
/// was killed leaves its side behind).
struct ShmLink(String);

impl ShmLink {
    fn new() -> ShmLink {
        static N: AtomicU32 = AtomicU32::new(0);
        ShmLink(format!(
            "httpbench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for ShmLink {
    fn drop(&mut self) {
        let prefix = format!("psio-{}.", self.0);
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Two new namespaces joined by a veth pair, the server on end `a`, the client on end `b`;
/// deleted on drop.
struct Veth {
    lab: netns::Namespaces,
    pair: netns::VethPair,
}

impl Veth {
    fn new() -> Result<Veth, String> {
        if !netns::is_root() {
            return Err(netns::skip_message("http over veth"));
        }
        let mut lab = netns::Namespaces::new("http");
        let pair = lab
            .veth_pair("hb-srv", "hb-cli")
            .map_err(|e| format!("veth pair: {e}"))?;
        Ok(Veth { lab, pair })
    }

    fn mac(&self, side: usize) -> Result<String, String> {
        let (ns, dev) = if side == 0 {
            (&self.pair.ns_a, &self.pair.dev_a)
        } else {
            (&self.pair.ns_b, &self.pair.dev_b)
        };
        let m = self
            .lab
            .mac(ns, dev)
            .map_err(|e| format!("MAC of {dev}: {e}"))?;
        Ok(m.map(|b| format!("{b:02x}")).join(":"))
    }
}

/// The `mtcp-bench` executable, which runs epserver and epwget (`mtcp-bench epserver …`):
/// this process when it is `mtcp-bench`, or else (tests run from `target/*/deps`) the one
/// next to it or in its parent directory. Running the applications from the benchmark's own
/// executable means they are never older than it.
fn our_executable() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    if exe.file_name().is_some_and(|n| n == "mtcp-bench") {
        return Ok(exe);
    }
    let mut dirs = Vec::new();
    if let Some(d) = exe.parent() {
        dirs.push(d.to_path_buf());
        if let Some(p) = d.parent() {
            dirs.push(p.to_path_buf());
        }
    }
    for d in &dirs {
        let b = d.join("mtcp-bench");
        if b.is_file() {
            return Ok(b);
        }
    }
    Err(format!(
        "mtcp-bench (which runs epserver and epwget) not found in {}: build it with \
         `cargo build --release -p bench-tools`",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    ))
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// One `GET` of the file over the kernel's TCP from namespace `ns` (if any): whether a
/// `200` with the whole body came back.
fn kernel_get_ok(addr: SocketAddrV4, ns: Option<&str>) -> bool {
    let get = move || -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /{FILE} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut resp = Vec::new();
        if s.write_all(req.as_bytes()).is_err() || s.read_to_end(&mut resp).is_err() {
            return false;
        }
        resp.starts_with(b"HTTP/1.1 200") && resp.ends_with(&body())
    };
    match ns {
        Some(ns) => netns::spawn_in(ns, get)
            .join()
            .is_ok_and(|r| r.unwrap_or(false)),
        None => get(),
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring a client run
// ---------------------------------------------------------------------------------------------

/// What the client said, and what both processes cost.
struct Measured {
    output: String,
    client_cpu: Duration,
    server_cpu: Duration,
    span: Duration,
    ksoftirqd: Duration,
    others: Duration,
}

/// Runs `client` in `ns` to the end (at most `limit`) while `server` (every process in
/// `server_pids`) serves it; fails on a non-zero exit.
fn measure(
    client: Command,
    ns: Option<&str>,
    name: &str,
    server_pids: &[Pid],
    limit: Duration,
) -> Result<Measured, String> {
    let (soft0, busy0) = (ksoftirqd_time(), system_busy());
    let s0 = tree_cpu(server_pids)?;
    let t0 = Instant::now();
    let mut p = Proc::spawn(client, ns, name)?;
    let (status, client_cpu) = p.wait(limit)?;
    let span = t0.elapsed();
    let s1 = tree_cpu(server_pids)?;
    let (soft1, busy1) = (ksoftirqd_time(), system_busy());
    let output = p.output();
    if let Some(problem) = exit_problem(status) {
        return Err(format!("{name}: {problem}\n{output}"));
    }
    let server_cpu = s1.saturating_sub(s0);
    let ksoftirqd = soft1.saturating_sub(soft0);
    let others = match (busy0, busy1) {
        (Some(b0), Some(b1)) => b1
            .saturating_sub(b0)
            .saturating_sub(client_cpu + server_cpu + ksoftirqd),
        _ => Duration::ZERO,
    };
    Ok(Measured {
        output,
        client_cpu,
        server_cpu,
        span,
        ksoftirqd,
        others,
    })
}

/// What a client reported.
#[derive(Debug, PartialEq)]
struct ClientReport {
    requests: u64,
    wall: Duration,
    p50_us: f64,
    p99_us: f64,
}

/// Reads epwget's summary; an error unless all `asked` requests completed with 200 and
/// the full body, without errors.
fn parse_epwget(out: &str, asked: u64) -> Result<ClientReport, String> {
    let field = |name: &str| -> Option<&str> {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map(str::trim)
    };
    let number = |name: &str| -> Result<u64, String> {
        field(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {name:?} in epwget's output"))
    };
    let requests = number("requests")?;
    let errors = number("errors")?;
    let ok = field("status 200").and_then(|v| v.parse::<u64>().ok());
    let body = number("body bytes")?;
    if errors != 0 || requests != asked || ok != Some(asked) || body != asked * BODY_LEN as u64 {
        return Err(format!(
            "epwget: {requests} of {asked} requests, {errors} errors, {ok:?} with status 200, \
             {body} body bytes"
        ));
    }
    let secs: f64 = field("time")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no \"time\" in epwget's output")?;
    let lat = field("latency us").ok_or("no \"latency us\" in epwget's output")?;
    let pick = |key: &str| -> f64 {
        let mut w = lat.split_whitespace();
        while let Some(k) = w.next() {
            if k == key {
                return w.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            }
        }
        f64::NAN
    };
    Ok(ClientReport {
        requests,
        wall: Duration::from_secs_f64(secs),
        p50_us: pick("p50"),
        p99_us: pick("p99"),
    })
}

/// A wrk duration (`572.00us`, `1.06ms`, `2.00s`, `1.00m`) in µs.
fn wrk_time_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (v, unit) = text.split_at(split);
    let v: f64 = v.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(v * scale)
}

/// Reads wrk's report (`--latency`); an error on any socket error or non-2xx response, or
/// when it ran less than `seconds`.
fn parse_wrk(out: &str, seconds: u64) -> Result<ClientReport, String> {
    if let Some(l) = out
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        return Err(format!("wrk: {}", l.trim()));
    }
    let (requests, wall) = out
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(" requests in ")?;
            let t = rest.split(',').next()?;
            Some((n.parse::<u64>().ok()?, wrk_time_us(t)?))
        })
        .ok_or("no \"requests in\" line in wrk's output")?;
    if requests == 0 || wall < seconds as f64 * 0.9e6 {
        return Err(format!(
            "wrk: a short run ({requests} requests in {wall:.0} µs)"
        ));
    }
    let pct = |p: &str| -> f64 {
        out.lines()
            .skip_while(|l| !l.contains("Latency Distribution"))
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == p).then(|| wrk_time_us(w.next()?))?
            })
            .unwrap_or(f64::NAN)
    };
    Ok(ClientReport {
        requests,
        wall: Duration::from_secs_f64(wall / 1e6),
        p50_us: pct("50%"),
        p99_us: pct("99%"),
    })
}

fn sample(m: Measured, r: ClientReport) -> Sample {
    Sample {
        requests: r.requests,
        body_bytes: r.requests * BODY_LEN as u64,
        wall: r.wall,
        server_cpu: m.server_cpu,
        client_cpu: m.client_cpu,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        ksoftirqd: m.ksoftirqd,
        others: m.others,
        span: m.span,
    }
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// An mtcp-api configuration: `port`, `me` talking to `peer` (at `peer_mac`).
fn mtcp_config(port: &str, me: Ipv4Addr, my_mac: &str, peer: Ipv4Addr, peer_mac: &str) -> String {
    format!(
        "port = \"{port}\"\n\
         # Two processes share the machine's CPUs: placement is left to the kernel.\n\
         pin_threads = false\n\
         [interface]\nmac = \"{my_mac}\"\naddress = \"{me}/24\"\n\
         [[arp]]\nip = \"{peer}\"\nmac = \"{peer_mac}\"\n"
    )
}

/// One run of epserver and epwget. `rate`: requests per second of the previous run of this
/// case (sizes the measured run), updated.
fn mtcp_run(stack: HttpStack, plan: &Plan, rate: &mut Option<f64>) -> Result<Sample, String> {
    let exe = our_executable()?;
    let dir = TempDir::new(stack.name())?;
    let (link, veth);
    let (server_ns, client_ns, server_conf, client_conf);
    let c = plan.cores;
    if stack.needs_root() {
        let v = Veth::new()?;
        // Both ends are ours: the kernel's IPv4 input never sees their frames.
        for (ns, dev) in [(&v.pair.ns_a, &v.pair.dev_a), (&v.pair.ns_b, &v.pair.dev_b)] {
            v.lab
                .reserve_for_user_stack(ns, dev)
                .map_err(|e| format!("reserving {dev}: {e}"))?;
        }
        let (mac_s, mac_c) = (v.mac(0)?, v.mac(1)?);
        let ps = format!(
            "afpacket:{}/q={c},steer=remote,ring=v2,slots=4096",
            v.pair.dev_a
        );
        let pc = format!(
            "afpacket:{}/q={c},steer=local,ring=v2,slots=4096",
            v.pair.dev_b
        );
        server_conf = mtcp_config(&ps, SERVER, &mac_s, CLIENT, &mac_c);
        client_conf = mtcp_config(&pc, CLIENT, &mac_c, SERVER, &mac_s);
        (server_ns, client_ns) = (Some(v.pair.ns_a.clone()), Some(v.pair.ns_b.clone()));
        (link, veth) = (None, Some(v));
    } else {
        let l = ShmLink::new();
        let port = format!("shm:{}/q={c}", l.0);
        let mac = |ip: Ipv4Addr| format!("02:00:00:00:00:{:02x}", ip.octets()[3]);
        server_conf = mtcp_config(&port, SERVER, &mac(SERVER), CLIENT, &mac(CLIENT));
        client_conf = mtcp_config(&port, CLIENT, &mac(CLIENT), SERVER, &mac(SERVER));
        (server_ns, client_ns) = (None, None);
        (link, veth) = (Some(l), None);
    }
    let server_conf = dir.write("server.toml", &server_conf)?;
    let client_conf = dir.write("client.toml", &client_conf)?;
    let mut cmd = Command::new(&exe);
    cmd.arg("epserver")
        .arg("-p")
        .arg(dir.path("www"))
        .arg("-f")
        .arg(&server_conf)
        .args(["-N", &c.to_string(), "--port", &PORT.to_string()]);
    if stack.is_rtc() {
        cmd.arg("--rtc");
    }
    let mut server = Proc::spawn(cmd, server_ns.as_deref(), "epserver")?;
    server.await_line("listening", START_LIMIT)?;
    let client = |requests: u64, limit: Duration| {
        let mut cmd = Command::new(&exe);
        cmd.arg("epwget")
            .arg(format!("{SERVER}:{PORT}/{FILE}"))
            .arg(requests.to_string())
            .arg("-f")
            .arg(&client_conf)
            .args(["-N", &c.to_string(), "-c", &plan.concurrency.to_string()])
            .args(["--keep-alive", "--timeout", &limit.as_secs().to_string()]);
        if stack.is_rtc() {
            cmd.arg("--rtc");
        }
        cmd
    };
    // Warm-up: not measured, but it must be clean too.
    let warm = (50 * plan.concurrency as u64).max(20_000);
    let limit = Duration::from_secs(10 * plan.seconds + 30);
    let m = measure(
        client(warm, limit),
        client_ns.as_deref(),
        "epwget (warm-up)",
        &[server.pid],
        limit + Duration::from_secs(10),
    )
    .map_err(|e| format!("warm-up: {e}"))?;
    let w = parse_epwget(&m.output, warm).map_err(|e| format!("warm-up: {e}\n{}", m.output))?;
    let r = rate.unwrap_or(w.requests as f64 / w.wall.as_secs_f64());
    let asked = ((r * plan.seconds as f64) as u64).max(10 * plan.concurrency as u64);
    let m = measure(
        client(asked, limit),
        client_ns.as_deref(),
        "epwget",
        &[server.pid],
        limit + Duration::from_secs(10),
    )?;
    let report = parse_epwget(&m.output, asked).map_err(|e| format!("{e}\n{}", m.output))?;
    *rate = Some(report.requests as f64 / report.wall.as_secs_f64());
    let status = server.stop();
    if let Some(problem) = exit_problem(status) {
        return Err(format!("epserver: {problem}\n{}", server.output()));
    }
    drop(server);
    drop((link, veth));
    Ok(sample(m, report))
}

/// nginx's configuration: `cores` workers serving `dir/www` on `listen`.
fn nginx_conf(dir: &Path, listen: SocketAddrV4, plan: &Plan) -> String {
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {cores};\n{user}\
         pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections {conns}; }}\n\
         http {{\n access_log off;\n default_type application/octet-stream;\n\
         sendfile on;\n tcp_nopush on;\n tcp_nodelay on;\n\
         open_file_cache max=64 inactive=600s;\n\
         keepalive_requests 1000000000;\n keepalive_timeout 600s;\n\
         client_body_temp_path {d}/t-body;\n proxy_temp_path {d}/t-proxy;\n\
         fastcgi_temp_path {d}/t-fcgi;\n uwsgi_temp_path {d}/t-uwsgi;\n\
         scgi_temp_path {d}/t-scgi;\n\
         server {{ listen {listen} reuseport; root {d}/www; }}\n}}\n",
        cores = plan.cores,
        // As root, workers would otherwise run as nobody, who cannot read the directory.
        user = if netns::is_root() { "user root;\n" } else { "" },
        conns = 2 * plan.concurrency + 64,
        d = dir.display(),
    )
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// Starts nginx in `ns` on `listen` and waits until a GET from `client_ns` works; the guard
/// and every process of it (master and workers).
fn start_nginx(
    dir: &TempDir,
    listen: SocketAddrV4,
    plan: &Plan,
    ns: Option<&str>,
    client_ns: Option<&str>,
) -> Result<(Proc, Vec<Pid>), String> {
    let conf = dir.write("nginx.conf", &nginx_conf(&dir.0, listen, plan))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir.0)
        .arg("-e")
        .arg(dir.path("nginx-error.log"));
    let mut nginx = Proc::spawn(cmd, ns, "nginx")?;
    let deadline = Instant::now() + START_LIMIT;
    let log = || std::fs::read_to_string(dir.path("nginx-error.log")).unwrap_or_default();
    while !kernel_get_ok(listen, client_ns) {
        if nginx.try_reap().is_some() || Instant::now() > deadline {
            return Err(format!(
                "nginx did not come up\n{}--- error log ---\n{}",
                nginx.output(),
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every worker started (each has its own listener: all must count).
    let mut workers = children_of(nginx.pid);
    while workers.len() < plan.cores && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        workers = children_of(nginx.pid);
    }
    if workers.len() != plan.cores {
        return Err(format!(
            "nginx has {} workers, not {}",
            workers.len(),
            plan.cores
        ));
    }
    nginx.also_kill = workers.clone();
    let mut all = vec![nginx.pid];
    all.extend(workers);
    Ok((nginx, all))
}

/// One run of nginx and wrk.
fn linux_run(stack: HttpStack, plan: &Plan) -> Result<Sample, String> {
    let dir = TempDir::new(stack.name())?;
    let (veth, listen) = if stack == HttpStack::LinuxVeth {
        let v = Veth::new()?;
        let p = &v.pair;
        v.lab
            .add_address(&p.ns_a, &p.dev_a, &format!("{SERVER}/24"))
            .map_err(|e| format!("server address: {e}"))?;
        v.lab
            .add_address(&p.ns_b, &p.dev_b, &format!("{CLIENT}/24"))
            .map_err(|e| format!("client address: {e}"))?;
        (Some(v), SocketAddrV4::new(SERVER, PORT))
    } else {
        (None, SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()?))
    };
    let server_ns = veth.as_ref().map(|v| v.pair.ns_a.clone());
    let client_ns = veth.as_ref().map(|v| v.pair.ns_b.clone());
    let (mut nginx, pids) = start_nginx(
        &dir,
        listen,
        plan,
        server_ns.as_deref(),
        client_ns.as_deref(),
    )?;
    let wrk = |seconds: u64| {
        let mut cmd = Command::new("wrk");
        cmd.args([
            "-t",
            &plan.cores.to_string(),
            "-c",
            &plan.concurrency.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--timeout",
            "10s",
            "--latency",
            &format!("http://{listen}/{FILE}"),
        ]);
        cmd
    };
    let limit = Duration::from_secs(plan.seconds + 30);
    let m = measure(wrk(1), client_ns.as_deref(), "wrk (warm-up)", &pids, limit)
        .map_err(|e| format!("warm-up: {e}"))?;
    parse_wrk(&m.output, 1).map_err(|e| format!("warm-up: {e}\n{}", m.output))?;
    let m = measure(wrk(plan.seconds), client_ns.as_deref(), "wrk", &pids, limit)?;
    let report = parse_wrk(&m.output, plan.seconds).map_err(|e| format!("{e}\n{}", m.output))?;
    // nginx answers SIGTERM with a fast shutdown; its exit status is not the figure.
    nginx.stop();
    drop(nginx);
    drop(veth);
    Ok(sample(m, report))
}

fn run_once(stack: HttpStack, plan: &Plan, rate: &mut Option<f64>) -> Result<Sample, String> {
    if stack.is_mtcp() {
        mtcp_run(stack, plan, rate)
    } else {
        linux_run(stack, plan)
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

fn record(stack: HttpStack, plan: &Plan, samples: &[Sample]) -> Record {
    let med = |f: &dyn Fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    Record {
        stack: stack.name().into(),
        mode: "http".into(),
        concurrency: plan.concurrency,
        cores: plan.cores,
        tx_per_s: med(&|s| s.requests as f64 / s.wall.as_secs_f64()),
        cpu_us_per_tx: med(&|s| s.cpu_us(s.server_cpu + s.client_cpu)),
        gbit_per_s: med(&|s| s.body_bytes as f64 * 8.0 / s.wall.as_secs_f64() / 1e9),
        p50_us: med(&|s| s.p50_us),
        p99_us: med(&|s| s.p99_us),
    }
}

/// Prints the table's header ([`run`] does).
pub fn print_header() {
    println!(
        "{:<14} {:<4} {:>5} {:>5} | {:>9} {:>10} {:>7} {:>7} {:>8} {:>8} | {:>10}",
        "stack",
        "mode",
        "conc",
        "cores",
        "req/s",
        "CPU µs/req",
        "server",
        "client",
        "p50 µs",
        "p99 µs",
        "linux/mtcp"
    );
}

fn print_row(r: &Record, samples: &[Sample], ratio: Option<f64>) {
    let med = |f: &dyn Fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    println!(
        "{:<14} {:<4} {:>5} {:>5} | {:>9.0} {:>10.2} {:>7.2} {:>7.2} {:>8.1} {:>8.1} | {:>10}",
        r.stack,
        r.mode,
        r.concurrency,
        r.cores,
        r.tx_per_s,
        r.cpu_us_per_tx,
        med(&|s| s.cpu_us(s.server_cpu)),
        med(&|s| s.cpu_us(s.client_cpu)),
        r.p50_us,
        r.p99_us,
        ratio.map_or("-".into(), |x| format!("{x:.2}x")),
    );
}

/// Drops the stacks that cannot run here, printing why: veth stacks without root, Linux
/// stacks without nginx or wrk (or when nginx cannot run as this user). An error when
/// epserver or epwget is missing.
fn runnable(opts: &Options) -> Result<Vec<HttpStack>, String> {
    let mut stacks = opts.stacks.clone();
    if !netns::is_root() && stacks.iter().any(|s| s.needs_root()) {
        let skipped: Vec<&str> = stacks
            .iter()
            .filter(|s| s.needs_root())
            .map(|s| s.name())
            .collect();
        println!("{}", netns::skip_message(&skipped.join(", ")));
        stacks.retain(|s| !s.needs_root());
    }
    if stacks.iter().any(|s| !s.is_mtcp()) {
        let missing: Vec<&str> = ["nginx", "wrk"]
            .into_iter()
            .filter(|t| !in_path(t))
            .collect();
        if !missing.is_empty() {
            println!(
                "skipped: linux-loopback, linux-veth: {} not installed (Debian packages: \
                 `apt-get install {}`)",
                missing.join(" and "),
                missing.join(" ")
            );
            stacks.retain(|s| s.is_mtcp());
        }
    }
    if !netns::is_root() && stacks.contains(&HttpStack::LinuxLoopback) {
        // nginx may refuse to run as this user: try once.
        let plan = Plan {
            concurrency: 1,
            cores: 1,
            seconds: 1,
        };
        let trial = TempDir::new("trial").and_then(|dir| {
            let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()?);
            start_nginx(&dir, listen, &plan, None, None).map(drop)
        });
        if let Err(e) = trial {
            println!("skipped: linux-loopback: nginx cannot run as this user: {e}");
            stacks.retain(|&s| s != HttpStack::LinuxLoopback);
        }
    }
    if stacks.iter().any(|s| s.is_mtcp()) {
        our_executable()?;
    }
    Ok(stacks)
}

/// Runs every selected case, printing the table as it goes; returns the records.
pub fn run(opts: &Options) -> Result<Vec<Record>, String> {
    if opts.runs == 0 || !opts.seconds.is_finite() || opts.seconds <= 0.0 {
        return Err("--runs and --seconds must be positive".into());
    }
    if opts.cores == 0 || opts.cores > 64 {
        return Err("--cores must be 1..=64".into());
    }
    if let Some(&c) = opts.concurrency.iter().find(|&&c| c < opts.cores) {
        return Err(format!(
            "--concurrency {c} is below --cores {}: every client thread needs a connection",
            opts.cores
        ));
    }
    let stacks = runnable(opts)?;
    if stacks.is_empty() || opts.concurrency.is_empty() {
        return Err("nothing to run".into());
    }
    let seconds = opts.seconds.round().max(1.0) as u64;
    print_header();
    let mut out = Vec::new();
    for &concurrency in &opts.concurrency {
        let plan = Plan {
            concurrency,
            cores: opts.cores,
            seconds,
        };
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); stacks.len()];
        let mut rates: HashMap<HttpStack, Option<f64>> = HashMap::new();
        // Runs alternate between the stacks (see the module doc).
        for r in 0..opts.runs {
            for (k, &stack) in stacks.iter().enumerate() {
                let rate = rates.entry(stack).or_default();
                let s = run_once(stack, &plan, rate).map_err(|e| {
                    format!("{stack} at concurrency {concurrency}, run {}: {e}", r + 1)
                })?;
                samples[k].push(s);
            }
        }
        let records: Vec<Record> = stacks
            .iter()
            .zip(&samples)
            .map(|(&stack, s)| record(stack, &plan, s))
            .collect();
        let cpu_of = |stack: HttpStack| {
            records
                .iter()
                .find(|r| r.stack == stack.name())
                .map(|r| r.cpu_us_per_tx)
        };
        for ((r, &stack), s) in records.iter().zip(&stacks).zip(&samples) {
            let ratio = cpu_of(stack.baseline())
                .filter(|_| stack.is_mtcp())
                .map(|l| l / r.cpu_us_per_tx);
            print_row(r, s, ratio);
        }
        for (&stack, s) in stacks.iter().zip(&samples) {
            let sum = |f: &dyn Fn(&Sample) -> Duration| -> f64 {
                s.iter().map(|s| f(s).as_secs_f64()).sum()
            };
            let cpu = sum(&|s| s.server_cpu + s.client_cpu);
            let soft = sum(&|s| s.ksoftirqd);
            let requests: u64 = s.iter().map(|s| s.requests).sum();
            if soft > SOFTIRQ_NOTE * cpu {
                println!(
                    "  note: {stack}: ksoftirqd ran {:.2} µs per request besides, not counted \
                     above",
                    soft * 1e6 / requests as f64
                );
            }
            let (others, span) = (sum(&|s| s.others), sum(&|s| s.span));
            if others > OTHERS_NOTE * span {
                println!(
                    "  note: {stack}: other processes kept {:.0}% of a CPU busy during the \
                     runs; these figures are disturbed",
                    100.0 * others / span
                );
            }
        }
        out.extend(records);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_lists_parse() {
        assert_eq!(
            HttpStack::parse_list("all").unwrap(),
            HttpStack::ALL.to_vec()
        );
        assert_eq!(
            HttpStack::parse_list("mtcp-veth, shm").unwrap(),
            [
                HttpStack::MtcpVeth,
                HttpStack::MtcpShm,
                HttpStack::MtcpShmRtc,
                HttpStack::LinuxLoopback
            ]
        );
        assert!(HttpStack::parse_list("mtcp-shm,nginx").is_err());
        assert_eq!(HttpStack::MtcpVeth.baseline(), HttpStack::LinuxVeth);
        assert_eq!(HttpStack::MtcpShm.baseline(), HttpStack::LinuxLoopback);
    }

    #[test]
    fn epwget_reports_parse_and_errors_fail() {
        let out = "[   1 s] requests 5 (+5, 5/s), errors 0, 0.001 Gbit/s\n\
                   requests: 10\nerrors: 0\nstatus 200: 10\nbody bytes: 640\n\
                   time: 0.500 s, 20 requests/s, 0.000 Gbit/s\n\
                   latency us: p50 122 p90 148 p99 215 max 1936\n";
        assert_eq!(
            parse_epwget(out, 10).unwrap(),
            ClientReport {
                requests: 10,
                wall: Duration::from_millis(500),
                p50_us: 122.0,
                p99_us: 215.0
            }
        );
        assert!(parse_epwget(out, 11).is_err(), "a short run");
        let bad = out.replace("errors: 0", "errors: 1");
        assert!(parse_epwget(&bad, 10).is_err());
        let bad = out.replace("status 200: 10", "status 200: 9\nstatus 404: 1");
        assert!(parse_epwget(&bad, 10).is_err());
    }

    #[test]
    fn wrk_reports_parse_and_errors_fail() {
        let out = "Running 1s test @ http://127.0.0.1:18080/64.bin\n\
                   \x20 1 threads and 64 connections\n\
                   \x20 Latency Distribution\n\
                   \x20    50%  572.00us\n     75%  611.00us\n     90%  675.00us\n\
                   \x20    99%    1.06ms\n\
                   \x20 105941 requests in 1.00s, 30.41MB read\n\
                   Requests/sec: 105691.15\nTransfer/sec:     30.34MB\n";
        let r = parse_wrk(out, 1).unwrap();
        assert_eq!(r.requests, 105_941);
        assert_eq!(r.wall, Duration::from_secs(1));
        assert!((r.p50_us - 572.0).abs() < 1e-9 && (r.p99_us - 1060.0).abs() < 1e-9);
        assert!(parse_wrk(out, 2).is_err(), "a short run");
        let bad = out.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 3\nRequests/sec",
        );
        assert!(parse_wrk(&bad, 1).is_err());
        let bad = out.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 1, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&bad, 1).is_err());
        assert_eq!(wrk_time_us("1.50m"), Some(90e6));
        assert_eq!(wrk_time_us("7"), None);
    }
}
