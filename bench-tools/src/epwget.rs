//! `epwget <ip[:port]/path> <requests> -f <config> [-N cores] [-c concurrency] [-o outfile]
//! [--keep-alive] [--verify] [--rtc] [--timeout S]`: an HTTP load generator on mtcp-api,
//! after mTCP's `epwget`.
//!
//! ## Design
//! One application thread per core with its own context and epoll instance; the
//! `requests` and the `-c` concurrent connections are split over the cores (core `i` gets
//! its share, the first cores one more when it does not divide). Each of a core's
//! connection slots runs requests one after another: by default a new connection per
//! request (`Connection: close`, the server closes; latency counts from `connect`), with
//! `--keep-alive` one connection for as long as the server keeps it (latency from the
//! request's first byte). `--rtc` runs each core's stack in its thread.
//!
//! A response needs `Content-Length` (or `Connection: close`, then the body ends with the
//! connection); chunked responses are errors. Errors are failed connects, resets, early
//! ends, malformed responses and (with `--verify`) bodies that differ; each failed request
//! counts once and the slot goes on with a new connection. Statuses are counted apart:
//! a 404 is a completed request, not an error.
//!
//! ## Output
//! A progress line per second (requests, errors, Gbit/s of received bytes, heads
//! included), then the totals: requests, errors, statuses, body bytes, the most connections
//! established at once (counted from a connection's first successful write to its close),
//! Gbit/s, latency p50/p90/p99/max (µs). `-o FILE` writes the body of the first 200 response (mTCP's
//! `epwget` saves what it downloads; one copy is what is useful for checking it).
//! `--verify` checks every 200 body against that first one, byte for byte. Both keep the
//! first body in memory (each core its own, compared at the end). Exit status 0 when every
//! request completed without error.
//!
//! [`fetch`] is the program without its arguments and output, for callers that run it in a
//! thread (the interoperability scenarios): it returns the totals as a [`Summary`].

use crate::{apps, http};
use mtcp_api::{Config, Context, EpollEvent, EpollOp, Error, Events, Fd};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: epwget <ip[:port]/path> <requests> -f <config> [-N cores] [-c concurrency] [-o outfile]
              [--keep-alive] [--verify] [--rtc] [--timeout S]
  -f FILE       mtcp-api configuration (TOML)
  -N CORES      cores (default: the configuration's); sets the port's queue count on shm/afpacket
  -c N          concurrent connections over all cores (default 1)
  -o FILE       write the body of the first 200 response to FILE
  --keep-alive  reuse connections (default: a new connection per request)
  --verify      check that every 200 body equals the first, byte for byte
  --rtc         run-to-completion: each core's stack runs in its application thread
  --timeout S   give up after S seconds, counting what is left as errors (default: none)";

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Largest body kept for `-o` / `--verify`.
const MAX_KEPT_BODY: u64 = 1 << 30;

struct Args {
    target: SocketAddrV4,
    host: String,
    path: String,
    requests: u64,
    config: PathBuf,
    cores: Option<usize>,
    concurrency: usize,
    out: Option<PathBuf>,
    keep_alive: bool,
    verify: bool,
    rtc: bool,
    timeout: Option<Duration>,
}

/// `[http://]ip[:port]/path` → address, `Host` value, path.
fn parse_target(text: &str) -> Result<(SocketAddrV4, String, String), String> {
    let t = text.strip_prefix("http://").unwrap_or(text);
    let (hostport, path) = match t.find('/') {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "/"),
    };
    let (ip, port) = match hostport.split_once(':') {
        Some((ip, p)) => (ip, p.parse().map_err(|_| format!("bad port in {text:?}"))?),
        None => (hostport, 80),
    };
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{text:?}: the host must be an IPv4 address"))?;
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{text:?}: the path must be percent-encoded"));
    }
    Ok((
        SocketAddrV4::new(ip, port),
        hostport.to_string(),
        path.to_string(),
    ))
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut config = None;
    let mut cores = None;
    let mut concurrency = 1;
    let mut out = None;
    let (mut keep_alive, mut verify, mut rtc) = (false, false, false);
    let mut timeout = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => config = it.next().map(PathBuf::from),
            "-N" => cores = Some(apps::number("-N", it.next())?),
            "-c" => concurrency = apps::number("-c", it.next())?,
            "-o" => out = it.next().map(PathBuf::from),
            "--keep-alive" => keep_alive = true,
            "--verify" => verify = true,
            "--rtc" => rtc = true,
            "--timeout" => {
                timeout = Some(Duration::from_secs_f64(apps::number(
                    "--timeout",
                    it.next(),
                )?))
            }
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown flag {s:?}\n{USAGE}")),
            s => positional.push(s.to_string()),
        }
    }
    let [target, requests] = positional.as_slice() else {
        return Err(format!("need a target and a number of requests\n{USAGE}"));
    };
    let (target, host, path) = parse_target(target)?;
    let requests: u64 = apps::number("<requests>", Some(requests))?;
    let config = config.ok_or_else(|| format!("-f is required\n{USAGE}"))?;
    if cores == Some(0) || concurrency == 0 {
        return Err("-N and -c must be at least 1".into());
    }
    Ok(Args {
        target,
        host,
        path,
        requests,
        config,
        cores,
        concurrency,
        out,
        keep_alive,
        verify,
        rtc,
        timeout,
    })
}

/// `epwget` with its command-line arguments (without the program name); the process's
/// exit status.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("epwget: {e}");
            ExitCode::from(2)
        }
    }
}

/// Counters the cores bump and the progress line reads.
#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    /// Connections established now, and the most at once.
    open: AtomicU64,
    peak: AtomicU64,
}

/// What a core reports at the end.
#[derive(Default)]
struct Report {
    requests: u64,
    errors: u64,
    body_bytes: u64,
    statuses: BTreeMap<u16, u64>,
    latencies_us: Vec<u32>,
    first_body: Option<Vec<u8>>,
    error_kinds: BTreeMap<String, u64>,
}

fn run(args: &[String]) -> Result<bool, String> {
    let args = parse_args(args)?;
    let mut config = Config::from_file(&args.config).map_err(|e| e.to_string())?;
    if let Some(n) = args.cores {
        apps::set_cores(&mut config, n, true);
    }
    let summary = fetch(Fetch {
        config,
        target: args.target,
        host: args.host,
        path: args.path,
        requests: args.requests,
        concurrency: args.concurrency,
        keep_alive: args.keep_alive,
        keep_body: args.out.is_some() || args.verify,
        verify: args.verify,
        rtc: args.rtc,
        timeout: args.timeout,
        progress: true,
    })?;
    print!("{summary}");
    if let Some(path) = &args.out {
        match &summary.first_body {
            Some(b) => std::fs::write(path, b).map_err(|e| format!("{}: {e}", path.display()))?,
            None => {
                println!("no 200 response: {} not written", path.display());
                return Ok(false);
            }
        }
    }
    Ok(summary.errors == 0 && summary.requests == args.requests)
}

/// What [`fetch`] does: the program's options, with the configuration already read (and
/// `-N` applied).
#[derive(Debug, Clone)]
pub struct Fetch {
    /// The stack's configuration.
    pub config: Config,
    /// The server's address.
    pub target: SocketAddrV4,
    /// The `Host` header's value.
    pub host: String,
    /// The path requested (percent-encoded).
    pub path: String,
    /// Requests in all.
    pub requests: u64,
    /// Concurrent connections over all cores (`-c`).
    pub concurrency: usize,
    /// Reuse connections (`--keep-alive`).
    pub keep_alive: bool,
    /// Keep the first 200 body (`-o` or `--verify`).
    pub keep_body: bool,
    /// Check every 200 body against the first (`--verify`).
    pub verify: bool,
    /// Run-to-completion (`--rtc`).
    pub rtc: bool,
    /// Give up after this long (`--timeout`).
    pub timeout: Option<Duration>,
    /// Print a progress line per second.
    pub progress: bool,
}

/// What a run of [`fetch`] did: the totals the program prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests completed (any status).
    pub requests: u64,
    /// Requests failed, bodies that differ included.
    pub errors: u64,
    /// The errors by kind (`connect failed`, `body differs`, …).
    pub error_kinds: BTreeMap<String, u64>,
    /// Completed requests by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Body bytes received.
    pub body_bytes: u64,
    /// Bytes received, heads included.
    pub wire_bytes: u64,
    /// From the start to the last core's end.
    pub elapsed: Duration,
    /// Latency p50, p90, p99 and max, µs.
    pub latency_us: Option<(u32, u32, u32, u32)>,
    /// The first 200 body, when kept.
    pub first_body: Option<Vec<u8>>,
    /// Most connections established at once (from the first byte of a request written on
    /// a connection to its close), over all cores.
    pub peak_connections: u64,
    /// Bodies that differ between cores (counted in `errors` too).
    pub body_mismatch: u64,
}

impl Summary {
    /// Completed requests per second.
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    /// The program's totals, one per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "requests: {}", self.requests)?;
        writeln!(f, "errors: {}", self.errors)?;
        for (k, n) in &self.error_kinds {
            writeln!(f, "  {k}: {n}")?;
        }
        if self.body_mismatch > 0 {
            writeln!(f, "  bodies differ between cores: {}", self.body_mismatch)?;
        }
        for (s, n) in &self.statuses {
            writeln!(f, "status {s}: {n}")?;
        }
        writeln!(f, "body bytes: {}", self.body_bytes)?;
        writeln!(f, "peak connections: {}", self.peak_connections)?;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "time: {secs:.3} s, {:.0} requests/s, {:.3} Gbit/s",
            self.requests_per_s(),
            self.wire_bytes as f64 * 8.0 / secs / 1e9
        )?;
        if let Some((p50, p90, p99, max)) = self.latency_us {
            writeln!(f, "latency us: p50 {p50} p90 {p90} p99 {p99} max {max}")?;
        }
        Ok(())
    }
}

/// Runs epwget in the calling process: the body of the `epwget` program without its
/// argument parsing and output, for callers that run it in a thread (say, inside a network
/// namespace the thread entered; the stack's port is opened there).
pub fn fetch(options: Fetch) -> Result<Summary, String> {
    let config = &options.config;
    let (contexts, mtcp) = if options.rtc {
        let c = Context::run_to_completion_cores(config).map_err(|e| e.to_string())?;
        (c, None)
    } else {
        let mut m = mtcp_api::init(config.clone()).map_err(|e| e.to_string())?;
        let c: Vec<Context> = (0..m.cores()).filter_map(|i| m.context(i)).collect();
        (c, Some(m))
    };
    let cores = contexts.len() as u64;
    let shared = Arc::new(Shared::default());
    let done = Arc::new(AtomicBool::new(false));
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: epwget (mtcp-rs)\r\nAccept: */*\r\n",
        options.path, options.host
    );
    if !options.keep_alive {
        request.push_str("Connection: close\r\n");
    }
    request.push_str("\r\n");
    let request: Arc<[u8]> = request.into_bytes().into();
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let start = Instant::now();
    let mut threads = Vec::new();
    for (i, ctx) in contexts.into_iter().enumerate() {
        let i = i as u64;
        let requests = options.requests / cores + u64::from(i < options.requests % cores);
        let concurrency = options.concurrency as u64;
        let conc = concurrency / cores + u64::from(i < concurrency % cores);
        let client = Client {
            ctx,
            target: options.target,
            request: request.clone(),
            keep_alive: options.keep_alive,
            keep_body: options.keep_body,
            verify: options.verify,
            shared: shared.clone(),
            to_issue: requests,
            outstanding: 0,
            slots: Vec::new(),
            idle: Vec::new(),
            report: Report::default(),
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            ep: 0,
        };
        let slots = conc.clamp(1, requests.max(1)) as usize;
        let t = std::thread::Builder::new()
            .name(format!("epwget-{i}"))
            .spawn(move || client.run(slots, deadline))
            .map_err(|e| format!("starting core {i}: {e}"))?;
        threads.push(t);
    }
    // Progress, once a second, until every core is done.
    let progress = options.progress.then(|| {
        let (shared, done) = (shared.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut last_req, mut last_bytes, mut last_t) = (0, 0, Instant::now());
            let mut next = last_t + Duration::from_secs(1);
            while !done.load(Ordering::Acquire) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                next += Duration::from_secs(1);
                let now = Instant::now();
                let (r, b) = (
                    shared.requests.load(Ordering::Relaxed),
                    shared.bytes.load(Ordering::Relaxed),
                );
                let dt = now.duration_since(last_t).as_secs_f64();
                println!(
                    "[{:>4.0} s] requests {r} (+{}, {:.0}/s), errors {}, {:.3} Gbit/s",
                    now.duration_since(start).as_secs_f64(),
                    r - last_req,
                    (r - last_req) as f64 / dt,
                    shared.errors.load(Ordering::Relaxed),
                    (b - last_bytes) as f64 * 8.0 / dt / 1e9
                );
                (last_req, last_bytes, last_t) = (r, b, now);
            }
        })
    });
    let mut reports = Vec::new();
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("an application thread panicked".into()),
        }
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Release);
    if let Some(p) = progress {
        let _ = p.join();
    }
    if let Some(m) = mtcp {
        m.destroy();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut summary = merge(reports, options.verify);
    summary.elapsed = elapsed;
    summary.wire_bytes = shared.bytes.load(Ordering::Relaxed);
    summary.peak_connections = shared.peak.load(Ordering::Relaxed);
    Ok(summary)
}

/// The cores' reports as one summary (without the run's time and shared counters).
fn merge(reports: Vec<Report>, verify: bool) -> Summary {
    let mut total = Summary::default();
    let mut latencies = Vec::new();
    for r in reports {
        total.requests += r.requests;
        total.errors += r.errors;
        total.body_bytes += r.body_bytes;
        for (s, n) in r.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
        for (k, n) in r.error_kinds {
            *total.error_kinds.entry(k).or_default() += n;
        }
        latencies.extend(r.latencies_us);
        match (&total.first_body, r.first_body) {
            (None, b) => total.first_body = b,
            (Some(a), Some(b)) if verify && *a != b => total.body_mismatch += 1,
            _ => {}
        }
    }
    total.errors += total.body_mismatch;
    total.latency_us = apps::percentiles(&mut latencies);
    total
}

/// Where a slot's request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection, nothing in flight.
    Idle,
    /// Waiting for the connection to be established.
    Connecting,
    /// Writing the request (`sent` bytes so far).
    Sending(usize),
    /// Reading the head.
    Head,
    /// Reading the body: bytes still to come (`None`: until the connection ends).
    Body(Option<u64>),
}

/// One connection slot of a core.
struct Slot {
    fd: Option<Fd>,
    generation: u32,
    phase: Phase,
    start: Instant,
    /// Head bytes (bounded by `MAX_HEAD`), then the kept body.
    buf: Vec<u8>,
    status: u16,
    /// The server closes after this response.
    server_closes: bool,
    body_len: u64,
    /// Keeping this body (`-o` / `--verify` and no reference yet).
    keeping: bool,
    /// Offset into the reference body when verifying against it.
    verify_at: u64,
    mismatch: bool,
    /// The connection is counted in `Shared::open` (a write on it succeeded).
    counted: bool,
}

/// One core's client.
struct Client {
    ctx: Context,
    target: SocketAddrV4,
    request: Arc<[u8]>,
    keep_alive: bool,
    keep_body: bool,
    verify: bool,
    shared: Arc<Shared>,
    /// Requests not yet started.
    to_issue: u64,
    /// Requests started and not finished.
    outstanding: u64,
    slots: Vec<Slot>,
    /// Slots whose request ended: they start their next one from the loop (not from the
    /// call that ended it, so a run of failures does not nest).
    idle: Vec<usize>,
    report: Report,
    buf: Box<[u8]>,
    ep: Fd,
}

fn token(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

impl Client {
    fn run(mut self, slots: usize, deadline: Option<Instant>) -> Result<Report, String> {
        let core = self.ctx.core();
        self.ep = self
            .ctx
            .epoll_create(slots.max(1) * 2)
            .map_err(|e| format!("core {core}: epoll_create: {e}"))?;
        let now = Instant::now();
        for _ in 0..slots {
            self.slots.push(Slot {
                fd: None,
                generation: 0,
                phase: Phase::Idle,
                start: now,
                buf: Vec::new(),
                status: 0,
                server_closes: false,
                body_len: 0,
                keeping: false,
                verify_at: 0,
                mismatch: false,
                counted: false,
            });
        }
        self.idle.extend(0..slots);
        let mut events = vec![EpollEvent::default(); EVENTS];
        loop {
            while let Some(i) = self.idle.pop() {
                self.next_request(i);
            }
            if self.outstanding == 0 {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                for i in 0..self.slots.len() {
                    if self.slots[i].phase != Phase::Idle {
                        self.fail(i, "timeout");
                    }
                }
                self.report.errors += self.to_issue;
                *self
                    .report
                    .error_kinds
                    .entry("not started".into())
                    .or_default() += self.to_issue;
                self.to_issue = 0;
                self.outstanding = 0;
                break;
            }
            let n = match self.ctx.epoll_wait(self.ep, &mut events, 100) {
                Ok(n) => n,
                Err(e) => return Err(format!("core {core}: epoll_wait: {e}")),
            };
            for e in &events[..n] {
                let i = (e.data & 0xffff_ffff) as usize;
                let generation = (e.data >> 32) as u32;
                let Some(s) = self.slots.get(i) else { continue };
                if s.generation != generation || s.fd.is_none() {
                    continue;
                }
                if e.events.intersects(Events::ERR) && s.phase == Phase::Connecting {
                    self.fail(i, "connect failed");
                    continue;
                }
                self.drive(i);
            }
        }
        for i in 0..self.slots.len() {
            self.drop_connection(i, false);
        }
        if self.ctx.stats().is_some() {
            // Run-to-completion: let the stack send the last FINs.
            let end = Instant::now() + Duration::from_millis(100);
            while Instant::now() < end {
                if !self.ctx.poll().unwrap_or(false) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Ok(self.report)
    }

    /// Starts the slot's next request, if any is left.
    fn next_request(&mut self, i: usize) {
        if self.to_issue == 0 {
            self.drop_connection(i, false);
            self.slots[i].phase = Phase::Idle;
            return;
        }
        self.to_issue -= 1;
        self.outstanding += 1;
        let keeping = self.keep_body && self.report.first_body.is_none();
        let s = &mut self.slots[i];
        s.start = Instant::now();
        s.buf.clear();
        (s.status, s.server_closes, s.body_len) = (0, false, 0);
        (s.keeping, s.verify_at, s.mismatch) = (keeping, 0, false);
        if s.fd.is_some() {
            s.phase = Phase::Sending(0);
            self.drive(i);
            return;
        }
        s.generation = s.generation.wrapping_add(1);
        let generation = s.generation;
        let fd = match self.ctx.socket() {
            Ok(fd) => fd,
            Err(_) => return self.fail(i, "socket"),
        };
        self.slots[i].fd = Some(fd);
        self.slots[i].phase = Phase::Connecting;
        match self.ctx.connect(fd, self.target) {
            Ok(()) | Err(Error::InProgress) => {}
            Err(_) => return self.fail(i, "connect failed"),
        }
        let interest = Events::IN | Events::OUT | Events::ET;
        if self
            .ctx
            .epoll_ctl(self.ep, EpollOp::Add, fd, interest, token(i, generation))
            .is_err()
        {
            self.fail(i, "epoll_ctl");
        }
    }

    /// Ends the slot's request with an error; the connection is dropped.
    fn fail(&mut self, i: usize, why: &str) {
        self.drop_connection(i, true);
        self.slots[i].phase = Phase::Idle;
        self.outstanding -= 1;
        self.report.errors += 1;
        *self.report.error_kinds.entry(why.into()).or_default() += 1;
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        self.idle.push(i);
    }

    /// Ends the slot's request with a complete response.
    fn complete(&mut self, i: usize) {
        let s = &mut self.slots[i];
        self.outstanding -= 1;
        if s.keeping {
            if let (true, Some(r)) = (self.verify, &self.report.first_body) {
                s.mismatch |= *r != s.buf;
            }
        } else if let (true, 200, Some(r)) = (self.verify, s.status, &self.report.first_body) {
            s.mismatch |= r.len() as u64 != s.verify_at;
        }
        if s.mismatch {
            self.report.errors += 1;
            *self
                .report
                .error_kinds
                .entry("body differs".into())
                .or_default() += 1;
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
        } else {
            let us = s.start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            self.report.latencies_us.push(us);
            self.report.requests += 1;
            *self.report.statuses.entry(s.status).or_default() += 1;
            self.shared.requests.fetch_add(1, Ordering::Relaxed);
        }
        self.report.body_bytes += s.body_len;
        if s.keeping && s.status == 200 && self.report.first_body.is_none() {
            self.report.first_body = Some(std::mem::take(&mut s.buf));
        }
        let close = s.server_closes || !self.keep_alive;
        s.phase = Phase::Idle;
        if close {
            self.drop_connection(i, false);
        }
        self.idle.push(i);
    }

    /// Closes (or with `abort`, resets) the slot's connection, if it has one.
    fn drop_connection(&mut self, i: usize, abort: bool) {
        let s = &mut self.slots[i];
        let Some(fd) = s.fd.take() else { return };
        if std::mem::take(&mut s.counted) {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = if abort {
            self.ctx.abort(fd)
        } else {
            self.ctx.close(fd)
        };
    }

    /// Counts the slot's connection as established (its first write succeeded).
    fn count_connection(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if !std::mem::replace(&mut s.counted, true) {
            let now = self.shared.open.fetch_add(1, Ordering::Relaxed) + 1;
            self.shared.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Moves the slot's request as far as it goes.
    fn drive(&mut self, i: usize) {
        loop {
            let Some(fd) = self.slots[i].fd else { return };
            match self.slots[i].phase {
                Phase::Idle => return,
                Phase::Connecting => match self.ctx.take_error(fd) {
                    Ok(None) => {
                        // No error: try the request; a write before the handshake ends
                        // says NotConnected/WouldBlock and OUT comes when it does.
                        self.slots[i].phase = Phase::Sending(0);
                    }
                    _ => return self.fail(i, "connect failed"),
                },
                Phase::Sending(sent) => match self.ctx.write(fd, &self.request[sent..]) {
                    Ok(n) => {
                        self.count_connection(i);
                        self.slots[i].phase = if sent + n == self.request.len() {
                            Phase::Head
                        } else {
                            Phase::Sending(sent + n)
                        };
                    }
                    Err(Error::WouldBlock | Error::NotConnected) => return,
                    Err(_) => return self.fail(i, "write failed"),
                },
                Phase::Head | Phase::Body(_) => {
                    let n = match self.ctx.read(fd, &mut self.buf) {
                        Ok(n) => n,
                        Err(Error::WouldBlock) => return,
                        Err(_) => return self.fail(i, "read failed"),
                    };
                    self.shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if n == 0 {
                        if self.slots[i].phase == Phase::Body(None) {
                            self.slots[i].server_closes = true;
                            return self.complete(i);
                        }
                        return self.fail(i, "connection ended early");
                    }
                    let data = std::mem::take(&mut self.buf);
                    let r = self.received(i, &data[..n]);
                    self.buf = data;
                    match r {
                        Ok(true) => return self.complete(i),
                        Ok(false) => {}
                        Err(why) => return self.fail(i, why),
                    }
                }
            }
        }
    }

    /// Takes received bytes; `Ok(true)` when the response is complete.
    fn received(&mut self, i: usize, mut data: &[u8]) -> Result<bool, &'static str> {
        if self.slots[i].phase == Phase::Head {
            let s = &mut self.slots[i];
            let before = s.buf.len();
            let take = data.len().min(http::MAX_HEAD - before);
            s.buf.extend_from_slice(&data[..take]);
            match http::parse_response_head(&s.buf) {
                Err(()) => return Err("bad response head"),
                Ok(None) if take < data.len() => return Err("bad response head"),
                Ok(None) => return Ok(false),
                Ok(Some(h)) => {
                    s.status = h.status;
                    s.server_closes = h.close;
                    let body_start = h.head_len - before;
                    data = &data[body_start..];
                    s.buf.clear();
                    let remaining = match h.content_length {
                        Some(n) => Some(n),
                        None if h.close => None,
                        None => return Err("response without Content-Length"),
                    };
                    s.keeping &= h.status == 200;
                    s.phase = Phase::Body(remaining);
                }
            }
        }
        let Phase::Body(remaining) = self.slots[i].phase else {
            return Ok(false);
        };
        if remaining.is_some_and(|r| data.len() as u64 > r) {
            return Err("more bytes than Content-Length");
        }
        let reference = if self.verify && self.slots[i].status == 200 {
            self.report.first_body.as_deref()
        } else {
            None
        };
        let s = &mut self.slots[i];
        if s.keeping {
            if s.buf.len() as u64 + data.len() as u64 > MAX_KEPT_BODY {
                return Err("body too large to keep");
            }
            s.buf.extend_from_slice(data);
        } else if let Some(r) = reference {
            let at = s.verify_at as usize;
            if r.get(at..at + data.len()) != Some(data) {
                s.mismatch = true;
            }
            s.verify_at += data.len() as u64;
        }
        s.body_len += data.len() as u64;
        let left = remaining.map(|r| r - data.len() as u64);
        s.phase = Phase::Body(left);
        Ok(left == Some(0))
    }
}
