//! `mtcp-bench core`: tcp-core against smoltcp, in one thread, over an in-memory link.
//!
//! ## What runs
//! Two stacks of the same kind, a client side A and a server side B, live in one thread and
//! exchange Ethernet frames through a [`link::Link`]: two bounded queues of reusable
//! 1514-byte slots, the same link type for both stacks. One pass of the loop reads the clock
//! once (`std::time::Instant`, ~40 ns here), hands that instant to both stacks and runs
//! mTCP's loop order for both: receive (each side takes the frames queued for it), then both
//! applications, then transmit (each side writes its output), so that replies written by an
//! application ride on the segments that acknowledge (7 frames per transaction for tcp-core:
//! SYN, SYN-ACK, ACK+request, response, FIN, FIN, ACK). smoltcp does the same through
//! `poll_ingress_single` and `poll_egress`. When a pass moves no frame and
//! no application acted, the thread sleeps until the earlier timer of the two stacks (a
//! blocked stack would), so idle time costs no CPU.
//!
//! - **mtcp-rs**: two `tcp_core::Endpoint`s with static ARP entries; frames are written by
//!   `poll_transmit` straight into the link's slots and read by `handle_frame` in place;
//!   applications react to `poll_event`.
//! - **smoltcp** (0.14, bench-only dependency): two `smoltcp::iface::Interface`s with their
//!   `SocketSet`s over [`link::SmolPort`], medium Ethernet, checksums in software, ARP left to
//!   run (smoltcp has no public way to fill its neighbor cache). smoltcp has no events, so its
//!   applications look at every socket once per pass. A listening smoltcp socket serves one
//!   connection at a time, so the server keeps one listening socket per concurrent connection
//!   and listens again on a socket once its connection is closed; a client socket is reused
//!   by `connect` once it is in TIME-WAIT or CLOSED (what smoltcp allows).
//!
//! Both stacks keep their own defaults (MSS 1460 at MTU 1500, Nagle, delayed ACKs: 40 ms
//! tcp-core, 10 ms smoltcp; tcp-core offers timestamps, SACK and window scaling, smoltcp
//! window scaling only) except: buffers ([`Options::buffer`] bytes each way per connection end
//! for short transactions and idle connections, [`BULK_BUFFER`] for bulk), and tcp-core's
//! TIME-WAIT ([`TIME_WAIT_MS`], instead of 60 s, so that closed connections leave the table;
//! smoltcp's client sockets leave TIME-WAIT by being reused), tcp-core's initial and minimum
//! RTO in short and idle runs ([`RTO_FLOOR_MS`]; smoltcp's concurrency stays far below the
//! depth where it matters) and limits sized to the
//! concurrency (connection table of twice the concurrency, as connections still close after
//! their transaction counted as done; SYN queue and backlog of a port's share; ephemeral ports
//! 1024..=65535).
//!
//! ## Workloads
//! - **short**, closed loop: `concurrency` transactions stay in flight. A transaction is a
//!   client's connect, a 64-byte request, the server's 64-byte response, the client's close,
//!   and the server's close on EOF; when both sides are done another starts. A request carries
//!   a unique token, the server checks the request and echoes the token in its response, the
//!   client checks the response: any wrong byte, early EOF, extra byte, reset or timeout ends
//!   the benchmark with an error. One server port allows fewer than 64 K client ports from
//!   one address, so the server listens on `ceil(concurrency / 16384)` ports and clients
//!   spread over them. A warm-up of at least `concurrency` transactions (and 0.2 s) is not
//!   measured; then `runs` windows of at least `seconds` and `concurrency` transactions each.
//! - **bulk**: one connection, the client sends as fast as the window allows for `seconds`,
//!   the server drains and checks every byte (a 251-periodic pattern); Gbit/s of payload.
//! - **idle** memory (`bytes_per_idle_conn`): `N` connections each complete one request and
//!   response and stay open; resident memory (VmRSS of `/proc/self/status`) after, minus
//!   before the two stacks were created (heap trimmed with `malloc_trim` first, link and
//!   application tables allocated before), divided by `2·N`: bytes per connection *end*, as
//!   both ends live in this process. Resident, so untouched buffer pages do not count.
//!
//! ## Figures
//! `cpu_us_per_tx` is the thread CPU time of the whole loop (both stacks, both applications,
//! the link) divided by completed transactions; `tx_per_s` is transactions per wall second.
//! Each figure is the window with the median CPU per transaction (bulk: median Gbit/s).
//! When both stacks run a workload, both are set up and warmed first, then their windows
//! alternate (tcp-core, smoltcp, tcp-core, …; the stack not running has its clock stopped),
//! so that the drift of a shared host's speed over seconds reaches both figures alike
//! instead of their ratio.
//! smoltcp looks through every socket for every frame, so beyond
//! [`Options::smoltcp_max`] concurrent connections it is skipped (a note is printed, its
//! record has null figures).
//!
//! In a closed loop, every transaction waits behind all the others (Little's law: latency =
//! concurrency / rate), so at 65 536 connections and beyond the queueing delay inside the
//! endpoints exceeds tcp-core's 200 ms minimum RTO and spurious retransmissions appear (the
//! copies arrive out of window). The link itself never drops; tcp-core's counters are printed
//! whenever retransmissions, resets or drops occurred, so such figures are marked.
//!
//! What this benchmark does not measure: packet I/O, threads, loss or reordering (the link is
//! lossless and in order), or a peer other than the same stack.

pub mod link;
mod mtcp_side;
mod smoltcp_side;

use crate::cpu::{median, thread_cpu};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The concurrency levels of the short-transaction workload.
pub const CONCURRENCY: [usize; 6] = [1, 64, 1024, 4096, 65_536, 1_000_000];

/// Bytes of a request and of a response.
pub const MSG_LEN: usize = 64;

/// Send and receive buffer of each connection end in the bulk workload, both stacks.
pub const BULK_BUFFER: usize = 256 * 1024;

/// tcp-core's TIME-WAIT in these benchmarks, milliseconds.
pub const TIME_WAIT_MS: u64 = 1;

/// tcp-core's initial and minimum RTO in the short and idle workloads, milliseconds. In a
/// closed loop of `concurrency` transactions on one thread a segment waits behind all the
/// others' for `concurrency / rate` seconds (about 10 s at 1 M), far beyond the default 1 s
/// initial RTO: the figure would then count retransmissions of segments still queued in
/// our own pass, on a link that never loses a frame, instead of the stack's work.
pub const RTO_FLOOR_MS: u64 = 60_000;

/// Most transactions in flight per server port: a quarter of the client's ephemeral ports,
/// leaving room for connections still closing (FIN-WAIT, TIME-WAIT) after their
/// transaction counted as done.
pub const MAX_PER_PORT: usize = 16_384;

/// The first server port; port `j` is `SERVER_PORT_BASE + j`.
pub const SERVER_PORT_BASE: u16 = 10_000;

/// A pass that makes no progress for this long is a stall, reported as an error.
const STALL: Duration = Duration::from_secs(60);

/// One line of the result, one JSON record. Figures that do not apply are `None` (null).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// `mtcp-rs` or `smoltcp`.
    pub stack: String,
    /// `short` or `bulk`.
    pub workload: String,
    /// Transactions in flight (short) or connections (bulk: 1).
    pub concurrency: usize,
    /// Completed transactions per wall second (short).
    pub tx_per_s: Option<f64>,
    /// Thread CPU µs of the whole loop per completed transaction (short).
    pub cpu_us_per_tx: Option<f64>,
    /// Payload Gbit/s delivered and checked (bulk).
    pub gbit_per_s: Option<f64>,
    /// Resident bytes per idle connection end, measured once per stack (see the module doc)
    /// and repeated in each of its measured short records.
    pub bytes_per_idle_conn: Option<f64>,
}

/// Options of the `core` subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measurement windows per case (the median is kept).
    pub runs: usize,
    /// Seconds per measurement window (at least `concurrency` transactions are awaited too).
    pub seconds: f64,
    /// Concurrency levels of the short workload.
    pub concurrency: Vec<usize>,
    /// Levels above this are left out.
    pub max_concurrency: usize,
    /// Measure tcp-core.
    pub mtcp: bool,
    /// Measure smoltcp.
    pub smoltcp: bool,
    /// smoltcp runs at concurrency levels up to this one only.
    pub smoltcp_max: usize,
    /// Send and receive buffer per connection end, short and idle workloads (≥ 1460).
    pub buffer: usize,
    /// Run the short workload.
    pub short: bool,
    /// Run the bulk workload.
    pub bulk: bool,
    /// Measure idle memory.
    pub idle: bool,
    /// Idle connections for tcp-core's memory figure.
    pub idle_conns: usize,
    /// Idle connections for smoltcp's memory figure (capped at `smoltcp_max`).
    pub smoltcp_idle_conns: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runs: 3,
            seconds: 1.0,
            concurrency: CONCURRENCY.to_vec(),
            max_concurrency: usize::MAX,
            mtcp: true,
            smoltcp: true,
            smoltcp_max: 4096,
            buffer: 2048,
            short: true,
            bulk: true,
            idle: true,
            idle_conns: 65_536,
            smoltcp_idle_conns: 4096,
        }
    }
}

/// Stack names as they appear in records.
const MTCP: &str = "mtcp-rs";
const SMOLTCP: &str = "smoltcp";

// ---------------------------------------------------------------------------------------------
// Messages and the bulk pattern
// ---------------------------------------------------------------------------------------------

const fn tail(mul: u8, add: u8) -> [u8; MSG_LEN - 8] {
    let mut t = [0u8; MSG_LEN - 8];
    let mut i = 0;
    while i < t.len() {
        t[i] = (i as u8).wrapping_mul(mul).wrapping_add(add);
        i += 1;
    }
    t
}

const REQUEST_TAIL: [u8; MSG_LEN - 8] = tail(7, 3);
const RESPONSE_TAIL: [u8; MSG_LEN - 8] = tail(13, 5);

/// The request of transaction `token`: the token (little endian), then a fixed pattern.
pub(crate) fn request(token: u64) -> [u8; MSG_LEN] {
    let mut m = [0u8; MSG_LEN];
    m[..8].copy_from_slice(&token.to_le_bytes());
    m[8..].copy_from_slice(&REQUEST_TAIL);
    m
}

/// Checks a request and builds its response: the same token, another fixed pattern.
pub(crate) fn response_to(req: &[u8; MSG_LEN]) -> Result<[u8; MSG_LEN], String> {
    if req[8..] != REQUEST_TAIL {
        return Err(format!("server received a corrupted request: {req:02x?}"));
    }
    let mut m = [0u8; MSG_LEN];
    m[..8].copy_from_slice(&req[..8]);
    m[8..].copy_from_slice(&RESPONSE_TAIL);
    Ok(m)
}

/// Checks the response the client of transaction `token` received.
pub(crate) fn check_response(token: u64, resp: &[u8; MSG_LEN]) -> Result<(), String> {
    if resp[..8] != token.to_le_bytes() || resp[8..] != RESPONSE_TAIL {
        return Err(format!(
            "client of transaction {token} received a wrong response: {resp:02x?}"
        ));
    }
    Ok(())
}

/// Period of the bulk pattern: prime, so it never lines up with segment or buffer sizes.
const PERIOD: usize = 251;

/// Largest chunk the bulk applications send or receive in one call.
pub(crate) const BULK_CHUNK: usize = 64 * 1024;

static PATTERN: [u8; BULK_CHUNK + PERIOD] = {
    let mut p = [0u8; BULK_CHUNK + PERIOD];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i % PERIOD) as u8;
        i += 1;
    }
    p
};

/// The bytes of the bulk stream from `offset` on ([`BULK_CHUNK`] of them).
pub(crate) fn bulk_bytes(offset: u64) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    &PATTERN[start..start + BULK_CHUNK]
}

/// Checks `data` (at most [`BULK_CHUNK`] bytes) received at stream `offset`.
pub(crate) fn check_bulk(offset: u64, data: &[u8]) -> Result<(), String> {
    if data != &bulk_bytes(offset)[..data.len()] {
        return Err(format!(
            "bulk receiver got wrong bytes in {} bytes at stream offset {offset}",
            data.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The closed loop
// ---------------------------------------------------------------------------------------------

/// Server ports needed for `concurrency` connections from one client address.
pub fn ports_for(concurrency: usize) -> usize {
    concurrency.div_ceil(MAX_PER_PORT).max(1)
}

/// The closed loop's bookkeeping, per server port: a transaction may start on port `j` while
/// fewer than `cap[j]` transactions of that port are unfinished, so that a smoltcp server
/// always has a listening socket free for the SYN; a transaction is finished when both its
/// client and its server are done (counted per port, as client and server cannot name each
/// other's connection).
#[derive(Debug)]
pub(crate) struct Gate {
    cap: Vec<u64>,
    started: Vec<u64>,
    client_done: Vec<u64>,
    server_done: Vec<u64>,
    completed: u64,
    total_started: u64,
    limit: u64,
}

impl Gate {
    /// `concurrency` in flight over [`ports_for`] ports; at most `limit` starts in all.
    pub(crate) fn new(concurrency: usize, limit: u64) -> Gate {
        let k = ports_for(concurrency);
        let cap = (0..k)
            .map(|j| (concurrency / k + usize::from(j < concurrency % k)) as u64)
            .collect();
        Gate {
            cap,
            started: vec![0; k],
            client_done: vec![0; k],
            server_done: vec![0; k],
            completed: 0,
            total_started: 0,
            limit,
        }
    }

    /// Server ports.
    pub(crate) fn ports(&self) -> usize {
        self.cap.len()
    }

    /// Concurrent connections on port `j`.
    pub(crate) fn cap(&self, j: usize) -> usize {
        self.cap[j] as usize
    }

    /// Whether a transaction may start on port `j` now.
    pub(crate) fn may_start(&self, j: usize) -> bool {
        let finished = self.client_done[j].min(self.server_done[j]);
        self.total_started < self.limit && self.started[j] - finished < self.cap[j]
    }

    /// Records a start on port `j` and returns the transaction's token.
    pub(crate) fn start(&mut self, j: usize) -> u64 {
        self.started[j] += 1;
        self.total_started += 1;
        self.total_started
    }

    /// A client of port `j` is done.
    pub(crate) fn client_done(&mut self, j: usize) {
        self.client_done[j] += 1;
        if self.client_done[j] <= self.server_done[j] {
            self.completed += 1;
        }
    }

    /// A server connection of port `j` is done.
    pub(crate) fn server_done(&mut self, j: usize) {
        self.server_done[j] += 1;
        if self.server_done[j] <= self.client_done[j] {
            self.completed += 1;
        }
    }

    /// Finished transactions.
    pub(crate) fn completed(&self) -> u64 {
        self.completed
    }
}

/// A pair of stacks with their applications, driven one pass at a time.
pub(crate) trait Driver {
    /// One pass at `now_us` µs after the driver's origin: timers, A's output to B, B's
    /// output to A, both applications. Returns whether a frame moved or an application acted.
    fn step(&mut self, now_us: u64) -> Result<bool, String>;
    /// Units completed so far: transactions, or bulk payload bytes checked.
    fn done(&self) -> u64;
    /// The earlier timer deadline of the two stacks, µs after the origin.
    fn next_wakeup(&mut self, now_us: u64) -> Option<u64>;
    /// Counters and states for an error message.
    fn diagnostics(&self) -> String;
}

/// Runs passes, sleeping when nothing moves, and detects stalls.
struct Runner {
    origin: Instant,
    last_done: u64,
    last_progress: Instant,
    dead_passes: u32,
    /// Set while another stack's window runs: the time until `resume` does not pass for
    /// this driver (its clock and stall detection skip it).
    paused_at: Option<Instant>,
}

impl Runner {
    fn new() -> Runner {
        let now = Instant::now();
        Runner {
            origin: now,
            last_done: 0,
            last_progress: now,
            dead_passes: 0,
            paused_at: None,
        }
    }

    /// Stops this driver's clock (see `paused_at`).
    fn pause(&mut self) {
        self.paused_at.get_or_insert_with(Instant::now);
    }

    /// Restarts this driver's clock where `pause` stopped it.
    fn resume(&mut self) {
        if let Some(at) = self.paused_at.take() {
            let gap = at.elapsed();
            self.origin += gap;
            self.last_progress += gap;
        }
    }

    /// One pass; returns the instant it read.
    fn pass(&mut self, d: &mut impl Driver) -> Result<Instant, String> {
        let now = Instant::now();
        let us = now.duration_since(self.origin).as_micros() as u64;
        let busy = d.step(us)?;
        let done = d.done();
        if done != self.last_done {
            self.last_done = done;
            self.last_progress = now;
        } else if now.duration_since(self.last_progress) > STALL {
            return Err(format!(
                "no progress for {STALL:?} at {done} units done; {}",
                d.diagnostics()
            ));
        }
        if busy {
            self.dead_passes = 0;
            return Ok(now);
        }
        match d.next_wakeup(us) {
            Some(t) if t > us => {
                std::thread::sleep(Duration::from_micros((t - us).min(10_000)));
            }
            Some(_) => {}
            None => {
                self.dead_passes += 1;
                if self.dead_passes > 2 {
                    return Err(format!(
                        "stalled: no frame, no application action and no timer at {done} \
                         units done; {}",
                        d.diagnostics()
                    ));
                }
            }
        }
        Ok(now)
    }

    /// Passes until `d` has done `units`.
    fn run_until(&mut self, d: &mut impl Driver, units: u64) -> Result<(), String> {
        while d.done() < units {
            self.pass(d)?;
        }
        Ok(())
    }
}

/// One measurement window.
#[derive(Debug, Clone, Copy)]
struct Window {
    units: u64,
    wall: Duration,
    cpu: Duration,
}

/// Warm-up: passes until `warmup_units` are done and at least `seconds / 5` (at most 0.2 s)
/// has passed.
fn warm_up(
    r: &mut Runner,
    d: &mut impl Driver,
    warmup_units: u64,
    seconds: f64,
) -> Result<(), String> {
    let start = Instant::now();
    let warm = Duration::from_secs_f64((seconds / 5.0).min(0.2));
    loop {
        let now = r.pass(d)?;
        if d.done() >= warmup_units && now.duration_since(start) >= warm {
            return Ok(());
        }
    }
}

/// One window of at least `seconds` and `min_units`.
fn window(
    r: &mut Runner,
    d: &mut impl Driver,
    min_units: u64,
    seconds: f64,
) -> Result<Window, String> {
    let span = Duration::from_secs_f64(seconds);
    let (u0, c0, t0) = (d.done(), thread_cpu(), Instant::now());
    loop {
        let now = r.pass(d)?;
        if d.done() - u0 >= min_units && now.duration_since(t0) >= span {
            break;
        }
    }
    Ok(Window {
        units: d.done() - u0,
        wall: t0.elapsed(),
        cpu: thread_cpu() - c0,
    })
}

/// Warm-up (`warmup_units` and 0.2 s), then `runs` windows of at least `seconds` and
/// `min_units` each.
fn measure(
    d: &mut impl Driver,
    warmup_units: u64,
    min_units: u64,
    seconds: f64,
    runs: usize,
) -> Result<Vec<Window>, String> {
    let mut r = Runner::new();
    warm_up(&mut r, d, warmup_units, seconds)?;
    (0..runs.max(1))
        .map(|_| window(&mut r, d, min_units, seconds))
        .collect()
}

/// [`measure`] for two stacks at once, their windows alternating (a, b, a, b, …) so that
/// both see the same machine: on a shared host the speed of a core drifts over seconds,
/// and measuring one stack after the other would put that drift into their ratio. The
/// stack not running is paused (its clock stops). `units` is `warmup_units` and
/// `min_units` of [`measure`] for both; errors name the stack.
fn measure_interleaved(
    a: (&mut impl Driver, &str),
    b: (&mut impl Driver, &str),
    units: u64,
    seconds: f64,
    runs: usize,
) -> Result<(Vec<Window>, Vec<Window>), String> {
    measure_alternating(a, b, (units, units), seconds, runs)
}

/// [`measure_interleaved`] with each driver's own `units` (two loads of different sizes:
/// the same stack at two concurrency levels).
fn measure_alternating(
    (a, a_name): (&mut impl Driver, &str),
    (b, b_name): (&mut impl Driver, &str),
    (units_a, units_b): (u64, u64),
    seconds: f64,
    runs: usize,
) -> Result<(Vec<Window>, Vec<Window>), String> {
    let (mut ra, mut rb) = (Runner::new(), Runner::new());
    fn tag(name: &str) -> impl Fn(String) -> String + '_ {
        move |e| format!("{name}: {e}")
    }
    rb.pause();
    warm_up(&mut ra, a, units_a, seconds).map_err(tag(a_name))?;
    ra.pause();
    rb.resume();
    warm_up(&mut rb, b, units_b, seconds).map_err(tag(b_name))?;
    rb.pause();
    let (mut wa, mut wb) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        ra.resume();
        wa.push(window(&mut ra, a, units_a, seconds).map_err(tag(a_name))?);
        ra.pause();
        rb.resume();
        wb.push(window(&mut rb, b, units_b, seconds).map_err(tag(b_name))?);
        rb.pause();
    }
    Ok((wa, wb))
}

/// The short-workload record of the window with the median CPU per transaction.
fn short_record(stack: &str, concurrency: usize, windows: &[Window]) -> Record {
    let cpu_us = |w: &Window| w.cpu.as_secs_f64() * 1e6 / w.units as f64;
    let m = median(&windows.iter().map(cpu_us).collect::<Vec<_>>());
    let w = windows
        .iter()
        .find(|w| cpu_us(w) == m)
        .expect("median is one of the windows");
    Record {
        stack: stack.into(),
        workload: "short".into(),
        concurrency,
        tx_per_s: Some(w.units as f64 / w.wall.as_secs_f64()),
        cpu_us_per_tx: Some(m),
        gbit_per_s: None,
        bytes_per_idle_conn: None,
    }
}

/// The bulk record with the median rate, and that window's CPU time per wall time (below 1
/// when other work shared the CPU, which lowers Gbit/s).
fn bulk_record(stack: &str, windows: &[Window]) -> (Record, f64) {
    let gbit = |w: &Window| w.units as f64 * 8.0 / w.wall.as_secs_f64() / 1e9;
    let m = median(&windows.iter().map(gbit).collect::<Vec<_>>());
    let w = windows
        .iter()
        .find(|w| gbit(w) == m)
        .expect("median is one of the windows");
    let record = Record {
        stack: stack.into(),
        workload: "bulk".into(),
        concurrency: 1,
        tx_per_s: None,
        cpu_us_per_tx: None,
        gbit_per_s: Some(m),
        bytes_per_idle_conn: None,
    };
    (record, w.cpu.as_secs_f64() / w.wall.as_secs_f64())
}

fn skipped(stack: &str, workload: &str, concurrency: usize) -> Record {
    Record {
        stack: stack.into(),
        workload: workload.into(),
        concurrency,
        tx_per_s: None,
        cpu_us_per_tx: None,
        gbit_per_s: None,
        bytes_per_idle_conn: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// A `kB` field of a `/proc` file, in bytes.
pub(crate) fn proc_kb(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resident memory of this process, bytes.
pub fn vm_rss() -> Option<u64> {
    proc_kb("/proc/self/status", "VmRSS:")
}

/// Memory available to new allocations on this machine, bytes.
pub fn mem_available() -> Option<u64> {
    proc_kb("/proc/meminfo", "MemAvailable:")
}

/// Returns freed heap memory to the kernel, so that a later RSS reading grows only with new
/// allocations.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What an idle-memory measurement needs from a stack's side: a driver built after the
/// baseline reading.
pub(crate) struct IdleProbe {
    rss_before: u64,
}

impl IdleProbe {
    /// Trims the heap and reads the baseline. Call after allocating the link and application
    /// tables, before creating the stacks.
    pub(crate) fn start() -> Result<IdleProbe, String> {
        trim_heap();
        Ok(IdleProbe {
            rss_before: vm_rss().ok_or("cannot read VmRSS from /proc/self/status")?,
        })
    }

    /// Opens the `n` connections of `d` (each done once) and returns resident bytes per
    /// connection end.
    pub(crate) fn finish(self, d: &mut impl Driver, n: usize) -> Result<f64, String> {
        let mut r = Runner::new();
        r.run_until(d, n as u64)?;
        // Let the last ACKs cross; delayed ACKs may stay pending, which changes no memory.
        for _ in 0..4 {
            let now = Instant::now().duration_since(r.origin).as_micros() as u64;
            d.step(now)?;
        }
        let after = vm_rss().ok_or("cannot read VmRSS from /proc/self/status")?;
        Ok(after.saturating_sub(self.rss_before) as f64 / (2 * n) as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

/// Runs every selected case, printing the table as it goes; returns the records.
pub fn run(opts: &Options) -> Result<Vec<Record>, String> {
    if opts.buffer < 1460 {
        return Err("--buffer must be at least 1460 (one MSS)".into());
    }
    let levels: Vec<usize> = opts
        .concurrency
        .iter()
        .copied()
        .filter(|&c| c >= 1 && c <= opts.max_concurrency)
        .collect();
    let mut out = Vec::new();

    let (mut idle_mtcp, mut idle_smol) = (None, None);
    if opts.idle {
        if opts.mtcp {
            let n = opts.idle_conns;
            let b = mtcp_side::idle_bytes(n, opts.buffer)?;
            println!("idle memory  {MTCP:<8} {n:>8} connections: {b:>8.0} bytes per end");
            idle_mtcp = Some(b);
        }
        if opts.smoltcp {
            let n = opts.smoltcp_idle_conns.min(opts.smoltcp_max);
            let b = smoltcp_side::idle_bytes(n, opts.buffer)?;
            println!("idle memory  {SMOLTCP:<8} {n:>8} connections: {b:>8.0} bytes per end");
            idle_smol = Some(b);
        }
    }

    if opts.short && !levels.is_empty() {
        print_short_header();
        for &c in &levels {
            let mtcp_fits = opts.mtcp && memory_check(c, idle_mtcp).is_ok();
            let smol_runs = opts.smoltcp && c <= opts.smoltcp_max;
            // Levels above the base without smoltcp alternate with the base instead.
            let paired = mtcp_fits && !smol_runs && c > PAIR_BASE && levels.contains(&PAIR_BASE);
            let mut paired_base = None;
            let (mtcp, smol) = if mtcp_fits && smol_runs {
                let mut m = mtcp_side::ShortPair::new(c, opts.buffer)?;
                let mut sm = smoltcp_side::ShortPair::new(c, opts.buffer)?;
                let (wm, ws) = measure_interleaved(
                    (&mut m, MTCP),
                    (&mut sm, SMOLTCP),
                    c as u64,
                    opts.seconds,
                    opts.runs,
                )
                .map_err(|e| format!("short at {c}: {e}"))?;
                m.warn_on_anomalies();
                (
                    Some(short_record(MTCP, c, &wm)),
                    Some(short_record(SMOLTCP, c, &ws)),
                )
            } else if paired {
                let (big, base) = short_paired(c, opts)?;
                // Only smoltcp's note (it does not run at this level).
                let smol_only = Options {
                    mtcp: false,
                    ..opts.clone()
                };
                let (_, smol) = short_alone(c, &smol_only, None)?;
                paired_base = Some(base);
                (Some(big), smol)
            } else {
                short_alone(c, opts, idle_mtcp)?
            };
            print_short_row(c, mtcp.as_ref(), smol.as_ref());
            if let (Some(big), Some(base)) = (&mtcp, paired_base.take()) {
                print_paired(c, big, &base);
            }
            if opts.mtcp {
                out.push(match mtcp {
                    Some(r) => Record {
                        bytes_per_idle_conn: idle_mtcp,
                        ..r
                    },
                    None => skipped(MTCP, "short", c),
                });
            }
            if opts.smoltcp {
                out.push(match smol {
                    Some(r) => Record {
                        bytes_per_idle_conn: idle_smol,
                        ..r
                    },
                    None => skipped(SMOLTCP, "short", c),
                });
            }
        }
    }

    if opts.bulk {
        let (mtcp, smol) = if opts.mtcp && opts.smoltcp {
            let mut m = mtcp_side::BulkPair::new()?;
            let mut sm = smoltcp_side::BulkPair::new()?;
            let (wm, ws) = measure_interleaved(
                (&mut m, MTCP),
                (&mut sm, SMOLTCP),
                1,
                opts.seconds,
                opts.runs,
            )
            .map_err(|e| format!("bulk: {e}"))?;
            m.warn_on_anomalies();
            (
                Some(bulk_record(MTCP, &wm)),
                Some(bulk_record(SMOLTCP, &ws)),
            )
        } else {
            bulk_alone(opts)?
        };
        print_bulk_row(mtcp.as_ref(), smol.as_ref());
        out.extend(mtcp.map(|(r, _)| r));
        out.extend(smol.map(|(r, _)| r));
    }
    Ok(out)
}

/// The short workload at `c` for the stacks selected, one after the other (when only one is
/// measured, or tcp-core alone at concurrencies smoltcp skips).
/// The level that high concurrency levels are compared with, in alternating windows.
const PAIR_BASE: usize = 64;

/// tcp-core at `c` connections, its windows alternating with those of a second pair of
/// endpoints at [`PAIR_BASE`] connections: the ratio of their rates is then measured on the
/// same machine state (this host's speed drifts by up to 2x over minutes, more than the
/// effect measured). Returns the records at `c` and at the base.
fn short_paired(c: usize, opts: &Options) -> Result<(Record, Record), String> {
    let mut big = mtcp_side::ShortPair::new(c, opts.buffer)?;
    let mut base = mtcp_side::ShortPair::new(PAIR_BASE, opts.buffer)?;
    let (wb, w0) = measure_alternating(
        (&mut big, MTCP),
        (&mut base, MTCP),
        (c as u64, PAIR_BASE as u64),
        opts.seconds,
        opts.runs,
    )
    .map_err(|e| format!("short at {c} paired with {PAIR_BASE}: {e}"))?;
    big.warn_on_anomalies();
    Ok((
        short_record(MTCP, c, &wb),
        short_record(MTCP, PAIR_BASE, &w0),
    ))
}

/// One line: the rate at `c` as a share of the rate at the base, from CPU per transaction
/// (medians of the alternating windows).
fn print_paired(c: usize, big: &Record, base: &Record) {
    if let (Some(b), Some(s)) = (big.cpu_us_per_tx, base.cpu_us_per_tx) {
        println!(
            "{:>9}   {MTCP} at {c}: {:.0}% of its rate at {PAIR_BASE} in alternating windows \
             ({b:.2} against {s:.2} µs CPU/tx)",
            "",
            100.0 * s / b
        );
    }
}

fn short_alone(
    c: usize,
    opts: &Options,
    idle_mtcp: Option<f64>,
) -> Result<(Option<Record>, Option<Record>), String> {
    let mtcp = if opts.mtcp {
        match memory_check(c, idle_mtcp) {
            Ok(()) => {
                let mut d = mtcp_side::ShortPair::new(c, opts.buffer)?;
                let w = measure(&mut d, c as u64, c as u64, opts.seconds, opts.runs)
                    .map_err(|e| format!("{MTCP} short at {c}: {e}"))?;
                d.warn_on_anomalies();
                drop(d);
                Some(short_record(MTCP, c, &w))
            }
            Err(note) => {
                println!("note: {MTCP} at {c} skipped: {note}");
                None
            }
        }
    } else {
        None
    };
    let smol = if opts.smoltcp && c <= opts.smoltcp_max {
        let mut d = smoltcp_side::ShortPair::new(c, opts.buffer)?;
        let w = measure(&mut d, c as u64, c as u64, opts.seconds, opts.runs)
            .map_err(|e| format!("{SMOLTCP} short at {c}: {e}"))?;
        drop(d);
        Some(short_record(SMOLTCP, c, &w))
    } else {
        if opts.smoltcp {
            println!(
                "note: {SMOLTCP} at {c} skipped: it scans every socket per frame \
                 (raise --smoltcp-max to run it)"
            );
        }
        None
    };
    Ok((mtcp, smol))
}

/// The bulk workload for the one stack selected.
#[allow(clippy::type_complexity)]
fn bulk_alone(opts: &Options) -> Result<(Option<(Record, f64)>, Option<(Record, f64)>), String> {
    let mtcp = if opts.mtcp {
        let mut d = mtcp_side::BulkPair::new()?;
        let w = measure(&mut d, 1, 1, opts.seconds, opts.runs)
            .map_err(|e| format!("{MTCP} bulk: {e}"))?;
        d.warn_on_anomalies();
        Some(bulk_record(MTCP, &w))
    } else {
        None
    };
    let smol = if opts.smoltcp {
        let mut d = smoltcp_side::BulkPair::new()?;
        let w = measure(&mut d, 1, 1, opts.seconds, opts.runs)
            .map_err(|e| format!("{SMOLTCP} bulk: {e}"))?;
        Some(bulk_record(SMOLTCP, &w))
    } else {
        None
    };
    Ok((mtcp, smol))
}

/// Whether both tcp-core endpoints at `concurrency` likely fit in memory, judged from the
/// idle figure (twice it, as busy connections hold more).
fn memory_check(concurrency: usize, idle_bytes_per_end: Option<f64>) -> Result<(), String> {
    let (Some(per_end), Some(avail)) = (idle_bytes_per_end, mem_available()) else {
        return Ok(());
    };
    let need = 2.0 * 2.0 * concurrency as f64 * per_end;
    if need > avail as f64 {
        return Err(format!(
            "needs about {:.1} GB, {:.1} GB available",
            need / 1e9,
            avail as f64 / 1e9
        ));
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, width: usize, prec: usize) -> String {
    match v {
        Some(x) => format!("{x:>width$.prec$}"),
        None => format!("{:>width$}", "-"),
    }
}

/// Prints the header of the short-transaction table.
pub fn print_short_header() {
    println!(
        "{:>9} | {:>11} {:>10} | {:>11} {:>10} | {:>8}",
        "conc", "mtcp tx/s", "mtcp µs/tx", "smol tx/s", "smol µs/tx", "cpu m/s"
    );
}

fn print_short_row(c: usize, mtcp: Option<&Record>, smol: Option<&Record>) {
    let ratio = match (
        mtcp.and_then(|r| r.cpu_us_per_tx),
        smol.and_then(|r| r.cpu_us_per_tx),
    ) {
        (Some(m), Some(s)) => Some(m / s),
        _ => None,
    };
    println!(
        "{c:>9} | {} {} | {} {} | {}",
        fmt_opt(mtcp.and_then(|r| r.tx_per_s), 11, 0),
        fmt_opt(mtcp.and_then(|r| r.cpu_us_per_tx), 10, 2),
        fmt_opt(smol.and_then(|r| r.tx_per_s), 11, 0),
        fmt_opt(smol.and_then(|r| r.cpu_us_per_tx), 10, 2),
        fmt_opt(ratio, 8, 2),
    );
}

fn print_bulk_row(mtcp: Option<&(Record, f64)>, smol: Option<&(Record, f64)>) {
    let rate = |r: Option<&(Record, f64)>| r.and_then(|(r, _)| r.gbit_per_s);
    let share = |r: Option<&(Record, f64)>| match r {
        Some((_, s)) => format!(" ({:.0}% of a CPU)", s * 100.0),
        None => String::new(),
    };
    let ratio = rate(mtcp).zip(rate(smol)).map(|(m, s)| m / s);
    println!(
        "bulk, 1 connection, MTU 1500: {MTCP} {} Gbit/s{}, {SMOLTCP} {} Gbit/s{}, ratio {}",
        fmt_opt(rate(mtcp), 6, 2),
        share(mtcp),
        fmt_opt(rate(smol), 6, 2),
        share(smol),
        fmt_opt(ratio, 5, 2)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_damage_is_caught() {
        let req = request(42);
        let resp = response_to(&req).unwrap();
        assert!(check_response(42, &resp).is_ok());
        assert!(check_response(43, &resp).is_err());
        let mut bad = req;
        bad[63] ^= 1;
        assert!(response_to(&bad).is_err());
    }

    #[test]
    fn bulk_pattern_continues_across_chunks() {
        let a = bulk_bytes(1000);
        assert!(check_bulk(1000, &a[..300]).is_ok());
        assert!(check_bulk(1300, &a[300..]).is_ok());
        assert!(check_bulk(1301, &a[300..400]).is_err());
    }

    #[test]
    fn smoltcp_short_transactions_complete() {
        let mut d = smoltcp_side::ShortPair::new(8, 2048).unwrap();
        Runner::new().run_until(&mut d, 500).unwrap();
    }

    #[test]
    fn smoltcp_bulk_delivers_checked_bytes() {
        let mut d = smoltcp_side::BulkPair::new().unwrap();
        Runner::new().run_until(&mut d, 8 << 20).unwrap();
    }

    #[test]
    fn mtcp_short_transactions_complete() {
        let mut d = mtcp_side::ShortPair::new(8, 2048).unwrap();
        Runner::new().run_until(&mut d, 500).unwrap();
    }

    #[test]
    fn mtcp_bulk_delivers_checked_bytes() {
        let mut d = mtcp_side::BulkPair::new().unwrap();
        Runner::new().run_until(&mut d, 8 << 20).unwrap();
    }

    #[test]
    fn the_gate_keeps_concurrency_per_port() {
        let mut g = Gate::new(32_769, u64::MAX);
        assert_eq!(g.ports(), 3);
        assert_eq!((0..3).map(|j| g.cap(j)).sum::<usize>(), 32_769);
        let mut g1 = Gate::new(2, u64::MAX);
        assert!(g1.may_start(0));
        g1.start(0);
        g1.start(0);
        assert!(!g1.may_start(0));
        g1.client_done(0);
        assert!(!g1.may_start(0) && g1.completed() == 0);
        g1.server_done(0);
        assert!(g1.may_start(0) && g1.completed() == 1);
        g.start(0);
        assert_eq!(g.completed(), 0);
    }
}
