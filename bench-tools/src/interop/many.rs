//! Scenario 4 of issue 6: many connections at once, both ways, through the lab's relay.
//!
//! - [`many_wrk`]: epserver on our side (run-to-completion, one core) and `wrk` in the
//!   kernel namespace with `connections` keep-alive connections for a few seconds. Passes
//!   when wrk reports no socket error (connect, read, write, timeout) and no non-2xx
//!   response, and the kernel namespace held all the connections established at once.
//! - [`many_epwget`]: nginx in the kernel namespace and our `epwget` (its library entry,
//!   [`epwget::fetch`], run-to-completion) with `connections` keep-alive connections.
//!   Passes when every request completed with status 200 and the file's bytes (epwget's
//!   `--verify`: every body equal to the first, and the first equal to the file), no
//!   error, and both epwget and the kernel namespace saw all the connections established
//!   at once.
//!
//! "At once" is measured on both sides where it can be: the kernel's `CurrEstab`
//! (`/proc/net/snmp` of the kernel namespace: connections in ESTABLISHED or CLOSE-WAIT,
//! sampled every [`SAMPLE`] by a thread in that namespace, peak kept) and, for epwget, its
//! own count of connections whose first write succeeded and that are not closed yet.
//!
//! ## Settings that make 10 000 connections possible
//! Our stack: `max_concurrency` above the connection count (listener and leftovers
//! included), 16 KiB buffers (allocated lazily anyway), a SYN backlog and a listen
//! backlog of [`BACKLOG`]. The kernel namespace: `net.core.somaxconn` and
//! `net.ipv4.tcp_max_syn_backlog` at [`BACKLOG`]; wrk runs under `ulimit -n` raised to the
//! hard limit (at most 65 536; a container may forbid raising the hard limit itself, even
//! to root); nginx with `worker_connections` ≥ 16 384, `worker_rlimit_nofile` (up to the
//! hard limit) and `listen … backlog=16384`.
//!
//! ## Why a run lasts seconds
//! Both clients open all their connections in one burst, and a burst of thousands of frames
//! into a veth overflows the kernel's per-CPU input queue (`net.core.netdev_max_backlog`,
//! 1000, global: not ours to change from a namespace; the drops show in
//! `/proc/net/softnet_stat`). The lost SYNs and SYN-ACKs come again after 1 s, 3 s, 7 s:
//! the last connections were seen established 0.5 to 4.2 s after the start (a 5 s wrk run
//! once ended with 9 926 of 10 000). So wrk runs 10 s and epwget makes 20 requests per
//! connection (its connections close when the shared pool of requests runs dry, so the pool
//! must outlast the slowest handshake). The time when the kernel first counted every
//! connection is in the figure.
//!
//! ## What it does not do
//! No timing assertions: requests/s is printed, not checked. The relay forwards on one
//! thread of a two-core machine, so requests/s here is the relay's and the machine's
//! figure more than the stacks'.

use super::{size_text, snmp_counter, verdict, Lab, LinkKind, Outcome, Pattern, Record};
use super::{start_epserver, TempDir, LINUX, OURS};
use crate::epserver;
use crate::epwget::{self, Fetch};
use crate::netns;
use sha2::{Digest, Sha256};
use std::io;
use std::net::{SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The number of connections at once.
pub const CONNECTIONS: usize = 10_000;
/// Listen and SYN backlogs on both sides.
pub const BACKLOG: usize = 16_384;
/// How often the kernel's established connections are counted.
pub const SAMPLE: Duration = Duration::from_millis(20);
/// The HTTP port of both servers.
const PORT: u16 = 8080;
/// The file both servers serve, and its size.
const FILE: &str = "many.bin";
const FILE_BYTES: usize = 1024;
/// Our stack's buffers, each way, per connection.
const BUFFER: usize = 16 * 1024;

/// The load of one run of scenario 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Connections at once, both ways.
    pub connections: usize,
    /// How long wrk runs.
    pub wrk_duration: Duration,
    /// Requests epwget makes on each connection (keep-alive).
    pub requests_per_connection: u64,
}

impl Load {
    /// CI: the 10 000 connections, a few seconds each way.
    pub const CI: Load = Load {
        connections: CONNECTIONS,
        wrk_duration: Duration::from_secs(10),
        requests_per_connection: 20,
    };
    /// `--long`: the same connections, longer.
    pub const LONG: Load = Load {
        connections: CONNECTIONS,
        wrk_duration: Duration::from_secs(30),
        requests_per_connection: 50,
    };
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/// Our stack's configuration for `connections` at once (see the module doc).
fn our_config(lab: &Lab, connections: usize, seed: u64) -> Result<mtcp_api::Config, String> {
    let tcp = format!(
        "max_concurrency = {}\nsyn_backlog = {BACKLOG}\nsend_buffer = {BUFFER}\n\
         recv_buffer = {BUFFER}",
        connections + BACKLOG
    );
    lab.our_config(seed, &tcp)
}

/// Raises the kernel namespace's accept and SYN backlogs.
fn kernel_backlogs(lab: &Lab) -> io::Result<()> {
    lab.linux_sysctl("net/core/somaxconn", &BACKLOG.to_string())?;
    lab.linux_sysctl("net/ipv4/tcp_max_syn_backlog", &BACKLOG.to_string())
}

/// A document root in a temporary directory holding [`FILE`] (seeded bytes); its sha256.
fn document_root(tag: &str, seed: u64) -> io::Result<(TempDir, [u8; 32])> {
    let dir = std::env::temp_dir().join(format!("mtcp-interop-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir = TempDir(dir);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www)?;
    let mut body = vec![0u8; FILE_BYTES];
    Pattern::new(seed).fill(&mut body);
    std::fs::write(www.join(FILE), &body)?;
    Ok((dir, Sha256::digest(&body).into()))
}

/// The peak of the kernel namespace's `CurrEstab`, sampled by a thread inside it until
/// stopped, and when it first reached a target.
struct EstablishedPeak {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<io::Result<Established>>>>,
}

/// What [`EstablishedPeak`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Established {
    /// Most connections established at once.
    peak: u64,
    /// From the start of sampling to the first sample at the target, if it was reached.
    reached: Option<Duration>,
}

impl EstablishedPeak {
    fn start(lab: &Lab, target: u64) -> EstablishedPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let start = Instant::now();
        let thread = netns::spawn_in(lab.linux_ns(), move || -> io::Result<Established> {
            let mut seen = Established {
                peak: 0,
                reached: None,
            };
            loop {
                let text = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
                let now = snmp_counter(&text, "Tcp", "CurrEstab")
                    .ok_or_else(|| io::Error::other("no Tcp CurrEstab in /proc/net/snmp"))?;
                seen.peak = seen.peak.max(now);
                if now >= target && seen.reached.is_none() {
                    seen.reached = Some(start.elapsed());
                }
                if flag.load(Ordering::Acquire) {
                    return Ok(seen);
                }
                std::thread::sleep(SAMPLE);
            }
        });
        EstablishedPeak {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; what it saw, or why sampling failed.
    fn stop(mut self) -> Result<Established, String> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(Ok(seen)))) => Ok(seen),
            Some(Ok(Ok(Err(e)) | Err(e))) => Err(format!("counting connections: {e}")),
            Some(Err(_)) | None => Err("the counting thread panicked".into()),
        }
    }
}

impl std::fmt::Display for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reached {
            Some(t) => write!(
                f,
                "kernel peak {}, all after {:.1} s",
                self.peak,
                t.as_secs_f64()
            ),
            None => write!(f, "kernel peak {}", self.peak),
        }
    }
}

impl Drop for EstablishedPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process: SIGTERM on drop, SIGKILL if it has not ended 5 s later.
struct Proc(Child);

impl Proc {
    /// Waits up to `limit` for the process to end; kills it after that. Its exit status,
    /// or `None` when it had to be killed.
    fn wait(&mut self, limit: Duration) -> io::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.wait(Duration::from_secs(5));
    }
}

/// `program args…` inside namespace `ns`, output to `out` (stdout and stderr).
fn command_in(ns: &str, program: &str, args: &[String], out: &std::path::Path) -> io::Result<Proc> {
    let file = std::fs::File::create(out)?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting {program}: {e}")))?;
    Ok(Proc(child))
}

/// The open-file limit children can raise themselves to: the hard `RLIMIT_NOFILE`, at most
/// 65 536 (raising the hard limit itself needs `CAP_SYS_RESOURCE`, which containers may
/// lack even for root).
fn file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard.min(65_536))
}

/// True when `program` is on the `PATH` (or in `/usr/sbin`, where Debian puts nginx).
fn installed(program: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    on_path || std::path::Path::new("/usr/sbin").join(program).is_file()
}

/// The "success rate": completed requests among all tried.
fn success_rate(ok: u64, errors: u64) -> String {
    let all = ok + errors;
    if all == 0 {
        return "no requests".into();
    }
    format!("{:.2} % success", ok as f64 * 100.0 / all as f64)
}

// ---------------------------------------------------------------------------------------------
// wrk against epserver
// ---------------------------------------------------------------------------------------------

/// What wrk printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    /// `N requests in …`.
    pub requests: u64,
    /// `Requests/sec:`.
    pub requests_per_s: f64,
    /// `Socket errors: connect A, read B, write C, timeout D` (zeros when absent).
    pub socket_errors: [u64; 4],
    /// `Non-2xx or 3xx responses: N` (0 when absent).
    pub non_2xx: u64,
}

impl WrkReport {
    /// Parses wrk's output; `None` when it has no request count.
    pub fn parse(text: &str) -> Option<WrkReport> {
        let mut r = WrkReport::default();
        let mut counted = false;
        for line in text.lines().map(str::trim) {
            if let Some((n, _)) = line.split_once(" requests in ") {
                r.requests = n.trim().parse().ok()?;
                counted = true;
            } else if let Some(v) = line.strip_prefix("Requests/sec:") {
                r.requests_per_s = v.trim().parse().ok()?;
            } else if let Some(v) = line.strip_prefix("Socket errors:") {
                // "connect 0, read 0, write 0, timeout 0"
                for (i, part) in v.split(',').enumerate().take(4) {
                    r.socket_errors[i] = part.split_whitespace().nth(1)?.parse().ok()?;
                }
            } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
                r.non_2xx = v.trim().parse().ok()?;
            }
        }
        counted.then_some(r)
    }

    /// Socket errors of every kind together.
    pub fn errors(&self) -> u64 {
        self.socket_errors.iter().sum()
    }
}

/// Scenario 4a: `wrk` with `connections` connections (two threads) for `duration` against
/// epserver on our side, through the clean relay. Figure: connections at once (kernel
/// peak), requests/s, socket errors and non-2xx.
pub fn many_wrk(connections: usize, duration: Duration, seed: u64) -> Record {
    Record::from_result("many-wrk", wrk_inner(connections, duration, seed))
}

fn wrk_inner(connections: usize, duration: Duration, seed: u64) -> Outcome {
    let fail = |e: String| (format!("failed: {e}"), String::new());
    if !netns::is_root() {
        return Err(fail(netns::skip_message("wrk against epserver")));
    }
    if !installed("wrk") {
        return Err(fail("wrk is not installed (apt-get install wrk)".into()));
    }
    let (dir, _) = document_root("many-wrk", seed).map_err(|e| fail(e.to_string()))?;
    let mut lab =
        Lab::new("manywrk", LinkKind::Clean, seed, None).map_err(|e| fail(e.to_string()))?;
    kernel_backlogs(&lab).map_err(|e| fail(e.to_string()))?;
    let config = our_config(&lab, connections, seed).map_err(fail)?;
    let guard = start_epserver(
        &lab,
        epserver::Serve {
            config,
            root: dir.0.join("www"),
            port: PORT,
            backlog: BACKLOG,
            rtc: true,
        },
    )
    .map_err(fail)?;
    let files = file_limit();
    if files < connections as u64 + 64 {
        return Err(fail(format!(
            "the open-file limit ({files}) is too low for {connections} connections"
        )));
    }
    let out = dir.0.join("wrk.txt");
    let wrk = format!(
        "ulimit -n {files} && exec wrk -t2 -c{connections} -d{}s --timeout 30s \
         http://{OURS}:{PORT}/{FILE}",
        duration.as_secs().max(1)
    );
    let rtx_before = lab.linux_tcp_counter("RetransSegs").unwrap_or(0);
    let peak = EstablishedPeak::start(&lab, connections as u64);
    let start = Instant::now();
    let status = command_in(lab.linux_ns(), "sh", &["-c".into(), wrk], &out)
        .and_then(|mut p| p.wait(duration + Duration::from_secs(90)));
    let elapsed = start.elapsed();
    let kernel_peak = peak.stop();
    let linux_rtx = lab
        .linux_tcp_counter("RetransSegs")
        .map_or(0, |n| n.saturating_sub(rtx_before));
    drop(guard);
    let relay = lab.stop_relay();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut detail = vec![format!(
        "wrk ({:.1} s):\n{}",
        elapsed.as_secs_f64(),
        text.trim_end()
    )];
    match &relay {
        Ok(r) => detail.push(format!(
            "linux retransmitted {linux_rtx} segments; relay ours->linux: {}; linux->ours: {}",
            r.a_to_b, r.b_to_a
        )),
        Err(e) => detail.push(format!("relay failed: {e}")),
    }
    let detail = detail.join("\n");
    let status = match status {
        Ok(Some(s)) => s,
        Ok(None) => return Err(("failed: wrk did not end; killed".into(), detail)),
        Err(e) => return Err((format!("failed: wrk: {e}"), detail)),
    };
    let Some(w) = WrkReport::parse(&text) else {
        return Err((format!("failed: wrk {status}, no report"), detail));
    };
    let kernel = kernel_peak.map_err(|e| (format!("failed: {e}"), detail.clone()))?;
    let kernel_peak = kernel.peak;
    let [c, r, wr, t] = w.socket_errors;
    let figure = format!(
        "{kernel_peak} connections at once (of {connections}; {kernel}), {:.0} requests/s, \
         {} requests, socket errors {} (connect {c}, read {r}, write {wr}, timeout {t}), \
         non-2xx {}, {}",
        w.requests_per_s,
        w.requests,
        w.errors(),
        w.non_2xx,
        success_rate(w.requests.saturating_sub(w.non_2xx), w.errors() + w.non_2xx)
    );
    let mut problems = Vec::new();
    if !status.success() {
        problems.push(format!("wrk {status}"));
    }
    if w.errors() > 0 {
        problems.push("socket errors".into());
    }
    if w.non_2xx > 0 {
        problems.push("non-2xx responses".into());
    }
    if w.requests == 0 {
        problems.push("no request completed".into());
    }
    if kernel_peak < connections as u64 {
        problems.push(format!(
            "only {kernel_peak} of {connections} connections were established at once"
        ));
    }
    if let Err(e) = relay {
        problems.push(format!("relay: {e}"));
    }
    verdict(figure, detail, &problems)
}

// ---------------------------------------------------------------------------------------------
// epwget against nginx
// ---------------------------------------------------------------------------------------------

/// nginx's configuration for `connections` keep-alive connections, serving `dir`/www.
fn nginx_conf(dir: &std::path::Path, connections: usize, file_limit: u64) -> String {
    let workers = (connections + 1024).max(BACKLOG);
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
         worker_rlimit_nofile {files};\n\
         pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections {workers}; multi_accept on; }}\n\
         http {{\n access_log off;\n sendfile on;\n keepalive_requests 1000000;\n\
         keepalive_timeout 120s;\n\
         client_body_temp_path {d}/t-body;\n proxy_temp_path {d}/t-proxy;\n\
         fastcgi_temp_path {d}/t-fcgi;\n uwsgi_temp_path {d}/t-uwsgi;\n\
         scgi_temp_path {d}/t-scgi;\n\
         server {{ listen {LINUX}:{PORT} backlog={BACKLOG}; root {d}/www; }}\n}}\n",
        files = (2 * workers as u64 + 64).min(file_limit),
        d = dir.display()
    )
}

/// Waits until nginx accepts connections in the kernel namespace.
fn await_nginx(lab: &Lab, nginx: &mut Proc, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = nginx.0.try_wait() {
            return Err(format!("nginx exited: {s}"));
        }
        let up = netns::spawn_in(lab.linux_ns(), || {
            TcpStream::connect_timeout(
                &SocketAddrV4::new(LINUX, PORT).into(),
                Duration::from_secs(1),
            )
            .is_ok()
        })
        .join()
        .is_ok_and(|r| r.is_ok_and(|up| up));
        if up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err("nginx did not come up".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Scenario 4b: our `epwget` opens `connections` keep-alive connections to nginx in the
/// kernel namespace and makes `per_connection` requests on each, bodies verified. Figure:
/// connections at once (epwget's peak and the kernel's), requests/s, errors.
pub fn many_epwget(connections: usize, per_connection: u64, seed: u64) -> Record {
    Record::from_result(
        "many-epwget",
        epwget_inner(connections, per_connection, seed),
    )
}

fn epwget_inner(connections: usize, per_connection: u64, seed: u64) -> Outcome {
    let fail = |e: String| (format!("failed: {e}"), String::new());
    if !netns::is_root() {
        return Err(fail(netns::skip_message("epwget against nginx")));
    }
    if !installed("nginx") {
        return Err(fail(
            "nginx is not installed (apt-get install nginx)".into(),
        ));
    }
    let (dir, file_sha) = document_root("many-nginx", seed).map_err(|e| fail(e.to_string()))?;
    let conf = dir.0.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir.0, connections, file_limit()))
        .map_err(|e| fail(e.to_string()))?;
    let mut lab =
        Lab::new("manyngx", LinkKind::Clean, seed, None).map_err(|e| fail(e.to_string()))?;
    kernel_backlogs(&lab).map_err(|e| fail(e.to_string()))?;
    let config = our_config(&lab, connections, seed).map_err(fail)?;
    let args = [
        "-c".to_string(),
        conf.display().to_string(),
        "-p".into(),
        dir.0.display().to_string(),
        "-e".into(),
        dir.0.join("nginx-error.log").display().to_string(),
    ];
    let mut nginx = command_in(lab.linux_ns(), "nginx", &args, &dir.0.join("nginx.out"))
        .map_err(|e| fail(e.to_string()))?;
    await_nginx(&lab, &mut nginx, Duration::from_secs(10)).map_err(fail)?;

    let requests = connections as u64 * per_connection;
    let fetch = Fetch {
        config,
        target: SocketAddrV4::new(LINUX, PORT),
        host: format!("{LINUX}:{PORT}"),
        path: format!("/{FILE}"),
        requests,
        concurrency: connections,
        keep_alive: true,
        keep_body: true,
        verify: true,
        rtc: true,
        timeout: Some(Duration::from_secs(120)),
        progress: false,
    };
    let rtx_before = lab.linux_tcp_counter("RetransSegs").unwrap_or(0);
    let peak = EstablishedPeak::start(&lab, connections as u64);
    let run = netns::spawn_in(lab.ours_ns(), move || epwget::fetch(fetch))
        .join()
        .map_err(|_| "epwget panicked".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .and_then(|r| r);
    let kernel_peak = peak.stop();
    let linux_rtx = lab
        .linux_tcp_counter("RetransSegs")
        .map_or(0, |n| n.saturating_sub(rtx_before));
    drop(nginx);
    let relay = lab.stop_relay();
    let mut detail = Vec::new();
    if let Ok(s) = &run {
        detail.push(format!("epwget:\n{}", s.to_string().trim_end()));
    }
    let errors = std::fs::read_to_string(dir.0.join("nginx-error.log")).unwrap_or_default();
    if !errors.trim().is_empty() {
        let tail: Vec<&str> = errors.lines().rev().take(5).collect();
        detail.push(format!(
            "nginx error log (last lines, newest first): {tail:?}"
        ));
    }
    match &relay {
        Ok(r) => detail.push(format!(
            "linux retransmitted {linux_rtx} segments; relay ours->linux: {}; linux->ours: {}",
            r.a_to_b, r.b_to_a
        )),
        Err(e) => detail.push(format!("relay failed: {e}")),
    }
    let detail = detail.join("\n");
    let s = run.map_err(|e| (format!("failed: epwget: {e}"), detail.clone()))?;
    let kernel = kernel_peak.map_err(|e| (format!("failed: {e}"), detail.clone()))?;
    let kernel_peak = kernel.peak;
    let ok = s.statuses.get(&200).copied().unwrap_or(0);
    let figure = format!(
        "{} connections at once (of {connections}; {kernel}), {:.0} requests/s, \
         {} requests of {} each, {} errors, {}",
        s.peak_connections,
        s.requests_per_s(),
        s.requests,
        size_text(FILE_BYTES as u64),
        s.errors,
        success_rate(ok, s.errors + (s.requests - ok))
    );
    let mut problems = Vec::new();
    if s.errors > 0 {
        problems.push(format!("errors: {:?}", s.error_kinds));
    }
    if ok != requests {
        problems.push(format!("{ok} of {requests} requests answered 200"));
    }
    if s.body_bytes != requests * FILE_BYTES as u64 {
        problems.push(format!("{} body bytes", s.body_bytes));
    }
    match &s.first_body {
        Some(b) if <[u8; 32]>::from(Sha256::digest(b)) == file_sha => {}
        Some(_) => problems.push("the first body is not the file".into()),
        None => problems.push("no body kept".into()),
    }
    for (who, peak) in [("epwget", s.peak_connections), ("the kernel", kernel_peak)] {
        if peak < connections as u64 {
            problems.push(format!(
                "{who} saw only {peak} of {connections} connections at once"
            ));
        }
    }
    if let Err(e) = relay {
        problems.push(format!("relay: {e}"));
    }
    verdict(figure, detail, &problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_parsed() {
        let text = "Running 5s test @ http://10.0.0.2:8080/many.bin\n  \
                    2 threads and 10000 connections\n  \
                    Thread Stats   Avg      Stdev     Max   +/- Stdev\n    \
                    Latency   300.00ms  100.00ms   1.00s    70.00%\n  \
                    123456 requests in 5.01s, 150.00MB read\n  \
                    Socket errors: connect 1, read 2, write 3, timeout 4\n  \
                    Non-2xx or 3xx responses: 5\n\
                    Requests/sec:  24641.52\nTransfer/sec:     29.94MB\n";
        let r = WrkReport::parse(text).unwrap();
        assert_eq!(r.requests, 123_456);
        assert_eq!(r.socket_errors, [1, 2, 3, 4]);
        assert_eq!(r.errors(), 10);
        assert_eq!(r.non_2xx, 5);
        assert!((r.requests_per_s - 24641.52).abs() < 1e-6);
        // A clean run prints neither line.
        let clean = "  10 requests in 1.00s, 1.00KB read\nRequests/sec:     10.00\n";
        let r = WrkReport::parse(clean).unwrap();
        assert_eq!((r.requests, r.errors(), r.non_2xx), (10, 0, 0));
        assert_eq!(WrkReport::parse("wrk: unable to connect"), None);
    }

    #[test]
    fn nginx_allows_more_than_the_connections() {
        let conf = nginx_conf(std::path::Path::new("/tmp/x"), 10_000, 65_536);
        assert!(conf.contains("worker_connections 16384;"), "{conf}");
        assert!(conf.contains("worker_rlimit_nofile 32832;"), "{conf}");
        let conf = nginx_conf(std::path::Path::new("/tmp/x"), 20_000, 20_000);
        assert!(conf.contains("worker_connections 21024;"), "{conf}");
        assert!(conf.contains("worker_rlimit_nofile 20000;"), "{conf}");
        assert!(conf.contains("backlog=16384"), "{conf}");
    }

    #[test]
    fn success_rates() {
        assert_eq!(success_rate(10, 0), "100.00 % success");
        assert_eq!(success_rate(3, 1), "75.00 % success");
        assert_eq!(success_rate(0, 0), "no requests");
    }
}
