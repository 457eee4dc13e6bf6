//! Two endpoints over seeded, impaired links on a virtual clock.
//!
//! Each case opens 1–8 connections between the two sides of a [`Pair`] (either side may
//! connect), moves a deterministic byte stream each way, shuts the connections down in the
//! order the case chose, and checks that:
//! - every byte arrived, in order, exactly once (compared with the stream it was cut from);
//! - every connection ended in CLOSED with [`CloseReason::Normal`] on both sides, TIME-WAIT
//!   included, and the endpoints hold nothing but their listeners;
//! - no timer is left armed at the end (`poll_timeout() == None`: nothing fires forever);
//! - virtual time and the number of driver steps stayed within generous bounds;
//! - the counters agree with what the links saw.
//!
//! Links lose (0–20 %), duplicate, reorder, corrupt (past the Ethernet header) and delay
//! frames with jitter, and may tail-drop at a queue limit; the TCP settings (MSS, buffers,
//! timestamps, SACK, window scaling, delayed ACK, Nagle, SYN-queue size) vary per side, and
//! readers may pause. SYN cookies are exercised on clean links only (a limitation of
//! cookies, explained where it is applied).
//!
//! The proptest seed is fixed so that CI replays the same cases; `PROPTEST_RNG_SEED` and
//! `PROPTEST_CASES` explore others, `SIM_REPORT=1` prints one line per case and
//! `SIM_TRACE=1` every frame sent and delivered.

use core::net::SocketAddrV4;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use std::fmt::Write as _;
use tcp_core::testing::{pair_addr, pair_configs, strategy, LinkParams, Pair, SplitMix64, Tap};
use tcp_core::{
    CloseReason, Duration, Endpoint, EndpointConfig, Event, Handle, Instant, SocketError, State,
};

/// The port both sides listen on.
const PORT: u16 = 5001;

/// How a connection is shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Each side shuts its write side as soon as it has queued everything.
    Both,
    /// This side (0 = a, 1 = b) shuts first; the other one only after reading EOF.
    First(usize),
}

/// One connection of a scenario.
#[derive(Debug, Clone)]
struct ConnPlan {
    /// Which side connects (0 = a, 1 = b).
    opener: usize,
    /// When the opener connects, after the start.
    start: Duration,
    /// Bytes sent by side 0 and by side 1.
    size: [usize; 2],
    close: Close,
    /// Release the handle (`close`) as soon as both directions are done, instead of
    /// waiting for CLOSED first.
    release_early: [bool; 2],
}

/// The TCP settings of one side that a scenario varies.
#[derive(Debug, Clone)]
struct Tweaks {
    mss: u16,
    send_buffer: usize,
    recv_buffer: usize,
    timestamps: bool,
    sack: bool,
    window_scaling: bool,
    delayed_ack: Option<Duration>,
    nodelay: bool,
    /// Half-open connections per listener before SYN cookies take over.
    syn_queue: usize,
}

impl Default for Tweaks {
    fn default() -> Self {
        let d = EndpointConfig::default().tcp;
        Tweaks {
            mss: d.mss,
            send_buffer: d.send_buffer,
            recv_buffer: d.recv_buffer,
            timestamps: d.timestamps,
            sack: d.sack,
            window_scaling: d.window_scaling,
            delayed_ack: d.delayed_ack,
            nodelay: d.nodelay,
            syn_queue: EndpointConfig::default().syn_queue,
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    link: LinkParams,
    tweaks: [Tweaks; 2],
    conns: Vec<ConnPlan>,
    /// Probability per pass that a reader pauses (up to 50 ms), to close windows.
    pause: f64,
}

impl Scenario {
    fn total_bytes(&self) -> usize {
        self.conns.iter().map(|c| c.size[0] + c.size[1]).sum()
    }
}

/// What a finished run measured.
#[derive(Debug)]
struct Report {
    /// Until every byte was read and every EOF seen.
    transfer: Duration,
    /// Until nothing was left armed (TIME-WAIT included).
    total: Duration,
    steps: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes `offset..offset + out.len()` of the stream `key`.
fn stream(key: u64, offset: usize, out: &mut [u8]) {
    let word = |w: u64| mix(key ^ w.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
    let mut pos = offset;
    let mut i = 0;
    while i < out.len() {
        let w = word((pos / 8) as u64);
        let from = pos % 8;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&w[from..from + n]);
        i += n;
        pos += n;
    }
}

/// The key of the stream that side `from` sends on connection `conn`.
fn stream_key(seed: u64, conn: usize, from: usize) -> u64 {
    mix(seed ^ ((conn as u64) << 1 | from as u64).wrapping_mul(0xd1b5_4a32_d192_ed03))
}

/// One side's view of one connection.
#[derive(Debug, Default)]
struct End {
    handle: Option<Handle>,
    /// The opener's local port (to match the accepted connection).
    port: u16,
    sent: usize,
    received: usize,
    eof: bool,
    shut: bool,
    released: bool,
    closed: Option<CloseReason>,
    state_at_release: Option<State>,
    pause_until: Instant,
}

struct Sim<'a> {
    sc: &'a Scenario,
    p: Pair,
    ends: Vec<[End; 2]>,
    listeners: [Handle; 2],
    rng: SplitMix64,
    start: Instant,
    buf: Vec<u8>,
    expect: Vec<u8>,
}

fn side(p: &mut Pair, s: usize) -> &mut Endpoint {
    if s == 0 {
        &mut p.a
    } else {
        &mut p.b
    }
}

/// Prints a frame (`SIM_TRACE=1`).
fn trace(now: Instant, tap: Tap, frame: &[u8]) {
    let dir = match tap {
        Tap::SentByA => "a>  ",
        Tap::SentByB => "b>  ",
        Tap::DeliveredToA => "  >a",
        Tap::DeliveredToB => "  >b",
    };
    match tcp_core::wire::parse_frame(frame, tcp_core::wire::ChecksumMode::SOFTWARE) {
        Ok(tcp_core::wire::Inbound::Tcp { seg, .. }) => eprintln!(
            "{now} {dir} {}>{} {:?} seq {} ack {} win {} len {} {:?}",
            seg.src_port,
            seg.dst_port,
            seg.flags,
            seg.seq.0,
            seg.ack.0,
            seg.window,
            seg.payload.len(),
            seg.options
        ),
        other => eprintln!("{now} {dir} {other:?}"),
    }
}

fn config(s: usize, t: &Tweaks) -> EndpointConfig {
    let (a, b) = pair_configs();
    let mut c = if s == 0 { a } else { b };
    c.tcp.mss = t.mss;
    c.tcp.send_buffer = t.send_buffer;
    c.tcp.recv_buffer = t.recv_buffer;
    c.tcp.timestamps = t.timestamps;
    c.tcp.sack = t.sack;
    c.tcp.window_scaling = t.window_scaling;
    c.tcp.delayed_ack = t.delayed_ack;
    c.tcp.nodelay = t.nodelay;
    c.syn_queue = t.syn_queue;
    // At 20 % loss each way a handshake fails 7 times in a row with p = 0.36^7 ≈ 8e-4,
    // which several connections per case over many cases would hit: a timed-out connect
    // is then correct behaviour, not a bug. More SYN retries make it negligible.
    c.tcp.syn_retries = 12;
    c
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario) -> Sim<'a> {
        let mut p = Pair::new(
            config(0, &sc.tweaks[0]),
            config(1, &sc.tweaks[1]),
            sc.link.clone(),
            sc.seed,
        );
        if std::env::var_os("SIM_TRACE").is_some() {
            p.tap = Some(trace);
        }
        let la = p.a.listen(PORT, 64).expect("listen a");
        let lb = p.b.listen(PORT, 64).expect("listen b");
        let start = p.now;
        Sim {
            sc,
            p,
            ends: sc.conns.iter().map(|_| Default::default()).collect(),
            listeners: [la, lb],
            rng: SplitMix64::new(sc.seed ^ 0xa5a5),
            start,
            buf: vec![0; 1 << 17],
            expect: vec![0; 1 << 17],
        }
    }

    fn context(&mut self) -> String {
        let mut s = format!("t={:?}\n", self.p.now.saturating_since(self.start));
        for (i, e) in self.ends.iter().enumerate() {
            for (k, end) in e.iter().enumerate() {
                let ep = if k == 0 { &self.p.a } else { &self.p.b };
                let info = end.handle.and_then(|h| ep.conn_info(h).ok());
                let _ = writeln!(
                    s,
                    "conn {i} side {k}: sent {}/{} recv {}/{} eof {} shut {} released {} \
                     closed {:?} {:?}",
                    end.sent,
                    self.sc.conns[i].size[k],
                    end.received,
                    self.sc.conns[i].size[1 - k],
                    end.eof,
                    end.shut,
                    end.released,
                    end.closed,
                    info
                );
            }
        }
        let _ = writeln!(
            s,
            "a {:?}\nb {:?}",
            self.p.a.counters(),
            self.p.b.counters()
        );
        let _ = writeln!(s, "ab {:?}\nba {:?}", self.p.ab.stats(), self.p.ba.stats());
        s
    }

    /// One pass of the applications on side `s`.
    fn app(&mut self, s: usize) -> Result<(), String> {
        let now = self.p.now;
        // Events.
        while let Some(ev) = side(&mut self.p, s).poll_event() {
            match ev {
                Event::Closed(h, reason) => {
                    if let Some(e) = self.ends.iter_mut().find(|e| e[s].handle == Some(h)) {
                        e[s].closed = Some(reason);
                    }
                }
                Event::Reset(h) | Event::TimedOut(h) => {
                    let i = self.ends.iter().position(|e| e[s].handle == Some(h));
                    return Err(format!(
                        "side {s}: unexpected {ev:?} on conn {i:?}\n{}",
                        self.context()
                    ));
                }
                _ => {}
            }
        }
        // Accept.
        loop {
            let ep = side(&mut self.p, s);
            let h = match ep.accept(self.listeners[s]) {
                Ok(h) => h,
                Err(SocketError::WouldBlock) => break,
                Err(e) => return Err(format!("side {s}: accept: {e:?}")),
            };
            let port = ep.peer_addr(h).map_err(|e| format!("{e:?}"))?.port();
            let Some(i) = (0..self.ends.len()).find(|&i| {
                self.sc.conns[i].opener == 1 - s
                    && self.ends[i][1 - s].port == port
                    && self.ends[i][s].handle.is_none()
            }) else {
                return Err(format!(
                    "side {s}: accepted an unknown connection from {port}"
                ));
            };
            self.ends[i][s].handle = Some(h);
        }
        for i in 0..self.ends.len() {
            self.app_conn(s, i, now)?;
        }
        Ok(())
    }

    fn app_conn(&mut self, s: usize, i: usize, now: Instant) -> Result<(), String> {
        let plan = &self.sc.conns[i];
        let seed = self.sc.seed;
        let end = &mut self.ends[i][s];
        if end.released {
            return Ok(());
        }
        if end.handle.is_none() {
            if plan.opener != s || now < self.start + plan.start || end.port != 0 {
                return Ok(());
            }
            let remote = SocketAddrV4::new(pair_addr(1 - s as u8).1, PORT);
            let ep = side(&mut self.p, s);
            let h = ep
                .connect(now, remote)
                .map_err(|e| format!("conn {i}: connect: {e:?}"))?;
            end.port = ep.local_addr(h).map_err(|e| format!("{e:?}"))?.port();
            end.handle = Some(h);
        }
        let h = end.handle.unwrap();
        let ep = if s == 0 { &mut self.p.a } else { &mut self.p.b };
        // Write as much as the send buffer takes.
        let size = plan.size[s];
        while end.sent < size {
            let space = ep.send_space(h).map_err(|e| format!("conn {i}: {e:?}"))?;
            let n = (size - end.sent).min(self.buf.len()).min(space);
            if n == 0 {
                break;
            }
            stream(stream_key(seed, i, s), end.sent, &mut self.buf[..n]);
            match ep.send(h, &self.buf[..n]) {
                Ok(k) => end.sent += k,
                Err(SocketError::WouldBlock) => break,
                Err(e) => return Err(format!("conn {i} side {s}: send: {e:?}")),
            }
        }
        // Read, in random chunk sizes, unless paused.
        if now >= end.pause_until && !end.eof {
            loop {
                let want = 1 + self.rng.below(self.buf.len() as u64) as usize;
                match ep.recv(h, &mut self.buf[..want]) {
                    Ok(0) => {
                        end.eof = true;
                        let expected = plan.size[1 - s];
                        if end.received != expected {
                            return Err(format!(
                                "conn {i} side {s}: EOF after {} of {expected} bytes",
                                end.received
                            ));
                        }
                        break;
                    }
                    Ok(n) => {
                        let expected = plan.size[1 - s];
                        if end.received + n > expected {
                            return Err(format!(
                                "conn {i} side {s}: {} bytes received, {expected} sent",
                                end.received + n
                            ));
                        }
                        let key = stream_key(seed, i, 1 - s);
                        stream(key, end.received, &mut self.expect[..n]);
                        if self.buf[..n] != self.expect[..n] {
                            let at = (0..n).find(|&k| self.buf[k] != self.expect[k]).unwrap();
                            return Err(format!(
                                "conn {i} side {s}: byte {} differs",
                                end.received + at
                            ));
                        }
                        end.received += n;
                    }
                    Err(SocketError::WouldBlock) => break,
                    Err(e) => return Err(format!("conn {i} side {s}: recv: {e:?}")),
                }
            }
            if self.rng.chance(self.sc.pause) {
                end.pause_until = now + Duration::from_micros(self.rng.below(50_000));
            }
        }
        // Shut down.
        let may_shut = match plan.close {
            Close::Both => true,
            Close::First(first) => first == s || end.eof,
        };
        if !end.shut && end.sent == size && may_shut {
            ep.shutdown(now, h)
                .map_err(|e| format!("conn {i} side {s}: shutdown: {e:?}"))?;
            end.shut = true;
        }
        // Release.
        if end.shut && end.eof {
            let state = ep.state(h).map_err(|e| format!("{e:?}"))?;
            if plan.release_early[s] || state == State::Closed {
                if state == State::Closed {
                    let reason = ep.close_reason(h).map_err(|e| format!("{e:?}"))?;
                    if reason != Some(CloseReason::Normal) {
                        return Err(format!("conn {i} side {s}: closed with {reason:?}"));
                    }
                }
                end.state_at_release = Some(state);
                ep.close(now, h)
                    .map_err(|e| format!("conn {i} side {s}: close: {e:?}"))?;
                end.released = true;
            }
        }
        Ok(())
    }

    /// The next instant an application wants to act (a paused reader, a delayed connect).
    fn app_wakeup(&self) -> Option<Instant> {
        let now = self.p.now;
        let mut next: Option<Instant> = None;
        for (i, e) in self.ends.iter().enumerate() {
            let plan = &self.sc.conns[i];
            let mut want = |t: Instant| {
                if t > now {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            };
            if e[plan.opener].handle.is_none() {
                want(self.start + plan.start);
            }
            for end in e {
                if !end.released && !end.eof {
                    want(end.pause_until);
                }
            }
        }
        next
    }

    fn transfers_done(&self) -> bool {
        self.ends.iter().all(|e| e.iter().all(|end| end.eof))
    }

    fn released(&self) -> bool {
        self.ends.iter().all(|e| e.iter().all(|end| end.released))
    }

    fn run(mut self, max_time: Duration, max_steps: u64) -> Result<Report, String> {
        let mut steps = 0u64;
        let mut transfer = None;
        // Phase 1: the applications run until every handle is released.
        loop {
            steps += 1;
            self.app(0)?;
            self.app(1)?;
            if transfer.is_none() && self.transfers_done() {
                transfer = Some(self.p.now.saturating_since(self.start));
            }
            if self.released() {
                break;
            }
            self.p.exchange();
            let next = match (self.p.next_wakeup(), self.app_wakeup()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => {
                    return Err(format!("stalled: nothing scheduled\n{}", self.context()));
                }
            };
            self.p.now = self.p.now.max(next);
            self.p.a.handle_timeout(self.p.now);
            self.p.b.handle_timeout(self.p.now);
            self.p.exchange();
            if steps > max_steps || self.p.now.saturating_since(self.start) > max_time {
                return Err(format!(
                    "not done after {steps} steps (bound {max_steps}), virtual time bound \
                     {max_time:?}\n{}",
                    self.context()
                ));
            }
        }
        let transfer = transfer.unwrap_or_default();
        // Phase 2: nobody holds a handle; the endpoints finish on their own.
        while let Some(next) = self.p.next_wakeup() {
            steps += 1;
            if steps > max_steps || self.p.now.saturating_since(self.start) > max_time {
                return Err(format!(
                    "timers still armed after {steps} steps (bound {max_steps}), virtual \
                     time bound {max_time:?}: a {:?} b {:?}\n{}",
                    self.p.a.poll_timeout(),
                    self.p.b.poll_timeout(),
                    self.context()
                ));
            }
            self.p.now = self.p.now.max(next);
            self.p.a.handle_timeout(self.p.now);
            self.p.b.handle_timeout(self.p.now);
            self.p.exchange();
            for s in 0..2 {
                while let Some(ev) = side(&mut self.p, s).poll_event() {
                    if !matches!(ev, Event::Closed(..)) {
                        return Err(format!("side {s}: {ev:?} after release"));
                    }
                }
            }
        }
        let total = self.p.now.saturating_since(self.start);
        self.final_checks()?;
        Ok(Report {
            transfer,
            total,
            steps,
        })
    }

    fn final_checks(&mut self) -> Result<(), String> {
        let ctx = self.context();
        for (i, e) in self.ends.iter().enumerate() {
            for (s, end) in e.iter().enumerate() {
                let ep = if s == 0 { &self.p.a } else { &self.p.b };
                let h = end
                    .handle
                    .ok_or(format!("conn {i} side {s}: never opened"))?;
                if ep.state(h) != Err(SocketError::BadHandle) {
                    return Err(format!("conn {i} side {s}: handle still valid"));
                }
                if end.state_at_release == Some(State::Closed)
                    && end.closed != Some(CloseReason::Normal)
                {
                    return Err(format!(
                        "conn {i} side {s}: CLOSED without Closed(Normal): {:?}",
                        end.closed
                    ));
                }
            }
        }
        for (s, ep) in [(0, &self.p.a), (1, &self.p.b)] {
            if ep.connection_count() != 1 {
                return Err(format!(
                    "side {s}: {} sockets left (only the listener expected): {:?}\n{ctx}",
                    ep.connection_count(),
                    ep.connections().collect::<Vec<_>>()
                ));
            }
            if ep.poll_timeout().is_some() {
                return Err(format!("side {s}: a timer is still armed\n{ctx}"));
            }
            if ep.state(self.listeners[s]) != Ok(State::Listen) {
                return Err(format!("side {s}: the listener is gone"));
            }
        }
        if self.p.ab.in_flight() + self.p.ba.in_flight() != 0 {
            return Err("frames still in flight".into());
        }
        self.check_counters(&ctx)
    }

    /// The counters agree with each other and with the links.
    fn check_counters(&self, ctx: &str) -> Result<(), String> {
        let opened_by = |s: usize| self.sc.conns.iter().filter(|c| c.opener == s).count() as u64;
        for (s, ep, out, inl) in [
            (0, &self.p.a, &self.p.ab, &self.p.ba),
            (1, &self.p.b, &self.p.ba, &self.p.ab),
        ] {
            let c = ep.counters();
            let (out, inl) = (out.stats(), inl.stats());
            let mut bad = Vec::new();
            if c.frames_out != out.sent {
                bad.push("frames_out != frames put on the link");
            }
            if c.frames_in != inl.delivered {
                bad.push("frames_in != frames delivered by the link");
            }
            // Static ARP, no ICMP: every frame is a TCP segment.
            if c.segments_out != c.frames_out {
                bad.push("segments_out != frames_out");
            }
            if c.frames_in != c.segments_in + c.bad_checksum + c.malformed + c.not_for_us {
                bad.push("frames_in is not segments_in plus the drops");
            }
            // A single flipped bit is always caught by the Internet checksum, or makes the
            // frame someone else's; an untouched frame is never dropped.
            if c.bad_checksum + c.malformed + c.not_for_us > inl.corrupted {
                bad.push("more frames dropped as damaged than were corrupted");
            }
            if c.connections_opened < opened_by(0) + opened_by(1) {
                bad.push("connections_opened below the connections made");
            }
            if c.aborts != 0 || c.accept_queue_full != 0 || c.table_full != 0 {
                bad.push("aborts, accept_queue_full or table_full");
            }
            if c.control_dropped != 0 || c.arp_dropped != 0 || c.icmp_echo_replies != 0 {
                bad.push("control_dropped, arp_dropped or icmp_echo_replies");
            }
            let clean = self.sc.link.loss == 0.0
                && self.sc.link.duplicate == 0.0
                && self.sc.link.corrupt == 0.0
                && self.sc.link.reorder == 0.0
                && self.sc.link.jitter == Duration::ZERO
                && self.sc.link.queue_limit == 0;
            // Otherwise a late copy may reach a connection already gone, and get a RST.
            if clean && (c.timeouts != 0 || c.rst_sent != 0 || c.rst_received != 0) {
                bad.push("timeouts or RSTs on a link that neither loses nor reorders");
            }
            if !bad.is_empty() {
                return Err(format!("side {s} counters: {bad:?}\n{c:?}\n{ctx}"));
            }
        }
        Ok(())
    }
}

/// Virtual-time bound, generous: connections run in parallel, so it grows with the largest
/// one. 900 s cover handshakes that lose several SYNs, closing and TIME-WAIT (60 s); then
/// 1 ms per byte (small buffers with 200 ms delayed ACKs move ~7 KB/s on a clean link) plus
/// a loss term: without timestamps Karn's rule keeps the RTO backed off through go-back-N
/// recovery, and at 15–20 % loss each way measured runs needed up to 3.3 ms per byte.
fn time_bound(sc: &Scenario) -> Duration {
    let largest = sc
        .conns
        .iter()
        .map(|c| c.size[0] + c.size[1])
        .max()
        .unwrap_or(0) as f64;
    let loss = sc.link.loss.max(sc.link.corrupt);
    let per_byte_us = 1_000.0 + 400_000.0 * loss * loss;
    Duration::from_secs(900) + Duration::from_micros((largest * per_byte_us) as u64)
}

/// Step bound: a few steps per segment each way, plus the idle ones.
fn step_bound(sc: &Scenario) -> u64 {
    let mss = sc.tweaks.iter().map(|t| t.mss).min().unwrap_or(536) as u64;
    let segs = sc.total_bytes() as u64 / mss.min(536) + 1;
    200_000 + segs * 40
}

fn run(sc: &Scenario) -> Result<Report, String> {
    let bound = time_bound(sc);
    let wall = std::time::Instant::now();
    let report = Sim::new(sc).run(bound, step_bound(sc))?;
    if std::env::var_os("SIM_REPORT").is_some() {
        eprintln!(
            "largest {} ts {} sack {} bytes {:>9} loss {:.3} conns {} transfer {:?} total {:?} (bound {:?}) steps {} \
             (bound {}) wall {:?}",
            sc.conns.iter().map(|c| c.size[0] + c.size[1]).max().unwrap_or(0),
            sc.tweaks[0].timestamps && sc.tweaks[1].timestamps,
            sc.tweaks[0].sack && sc.tweaks[1].sack,
            sc.total_bytes(),
            sc.link.loss,
            sc.conns.len(),
            report.transfer,
            report.total,
            bound,
            report.steps,
            step_bound(sc),
            wall.elapsed()
        );
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn prob(max: f64) -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..max]
}

fn tweaks() -> impl Strategy<Value = Tweaks> {
    (
        prop_oneof![2 => Just(1460u16), 1 => Just(536u16), 1 => 88..=1460u16],
        prop_oneof![2 => Just(65_536usize), 1 => 1460..=16_384usize, 1 => 16_384..=262_144usize],
        prop_oneof![2 => Just(65_536usize), 1 => 1460..=16_384usize, 1 => 16_384..=262_144usize],
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop_oneof![
            2 => Just(Some(Duration::from_millis(40))),
            1 => Just(None),
            1 => Just(Some(Duration::from_millis(200))),
        ],
        prop_oneof![3 => Just(1024usize), 1 => 1..=2usize],
    )
        .prop_map(
            |(mss, send, recv, (no_ts, no_sack, no_ws, nodelay), delayed_ack, syn_queue)| Tweaks {
                mss,
                send_buffer: send.max(usize::from(mss)),
                recv_buffer: recv.max(usize::from(mss)),
                timestamps: !no_ts,
                sack: !no_sack,
                window_scaling: !no_ws,
                delayed_ack,
                nodelay,
                syn_queue,
            },
        )
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..4096usize,
        3 => 0..300_000usize,
        1 => 0..3_000_000usize,
    ]
}

fn conn_plan() -> impl Strategy<Value = ConnPlan> {
    (
        0..2usize,
        0..500_000u64,
        [size(), size()],
        prop_oneof![
            Just(Close::Both),
            Just(Close::First(0)),
            Just(Close::First(1))
        ],
        [any::<bool>(), any::<bool>()],
    )
        .prop_map(|(opener, start, size, close, release_early)| ConnPlan {
            opener,
            start: Duration::from_micros(start),
            size,
            close,
            release_early,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        strategy::link_params(0.2),
        [tweaks(), tweaks()],
        proptest::collection::vec(conn_plan(), 1..=8),
        prob(0.2),
    )
        .prop_map(|(seed, link, mut tweaks, conns, pause)| {
            let lossy = link.loss > 0.0 || link.corrupt > 0.0 || link.queue_limit > 0;
            let reorders = link.reorder > 0.0 || link.jitter > Duration::ZERO;
            if lossy || reorders {
                // A SYN cookie is checked against the first ACK that arrives; if that one is
                // a later segment (the first was lost or overtaken), validation fails and the
                // listener answers with a RST that resets the opener (RFC 9293 LISTEN rules;
                // Linux does the same). Cookies are exercised on clean links only.
                for t in &mut tweaks {
                    t.syn_queue = t.syn_queue.max(1024);
                }
            }
            Scenario {
                seed,
                link,
                tweaks,
                conns,
                pause,
            }
        })
}

/// Fixed seed unless `PROPTEST_RNG_SEED` says otherwise; `cases` unless `PROPTEST_CASES`.
fn proptest_config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            cases
        },
        rng_seed: match base.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x006d_7463_702d_7273),
            fixed => fixed,
        },
        failure_persistence: None,
        max_shrink_iters: if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_some() {
            base.max_shrink_iters
        } else {
            32
        },
        ..base
    }
}

proptest! {
    #![proptest_config(proptest_config(128))]

    /// Random links, settings and connection plans: every byte arrives, everything closes.
    #[test]
    fn transfers_complete_and_close_cleanly(sc in scenario()) {
        if let Err(e) = run(&sc) {
            return Err(TestCaseError::fail(e));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed cases
// ---------------------------------------------------------------------------------------------

fn one_conn(seed: u64, link: LinkParams, size: [usize; 2], close: Close) -> Scenario {
    Scenario {
        seed,
        link,
        tweaks: [Tweaks::default(), Tweaks::default()],
        conns: vec![ConnPlan {
            opener: 0,
            start: Duration::ZERO,
            size,
            close,
            release_early: [false, false],
        }],
        pause: 0.0,
    }
}

/// The headline case: 10 MB each way at 2 % loss (with some duplication,
/// reordering and corruption), one connection.
#[test]
fn ten_megabytes_each_way_at_two_percent_loss() {
    let link = LinkParams {
        loss: 0.02,
        duplicate: 0.005,
        reorder: 0.01,
        corrupt: 0.001,
        delay: Duration::from_millis(2),
        jitter: Duration::from_micros(300),
        ..LinkParams::default()
    };
    let sc = one_conn(0x10_4d42, link, [10 << 20, 10 << 20], Close::Both);
    let r = run(&sc).unwrap_or_else(|e| panic!("{e}"));
    // A 64 KiB window over a ~5 ms RTT moves ~13 MB/s; loss recovery costs some of it.
    assert!(
        r.transfer < Duration::from_secs(120),
        "transfer took {:?}",
        r.transfer
    );
}

/// A stall the proptest found (reduced to this seed): b's 1461-byte receive buffer leaves
/// a's window at 13 bytes with 14 bytes and the FIN unsent and nothing in flight; the window
/// update from b is lost, and a armed no timer (no persist, no SWS override), so the
/// connection stalled for good. Fixed by the sender SWS override timer (RFC 9293
/// §3.8.6.2.1); `hostile.rs` has the scripted version.
#[test]
fn stall_behind_a_small_window_after_a_lost_window_update() {
    let link = LinkParams {
        delay: Duration::from_micros(50),
        loss: 0.053_498_109_174_837_646,
        ..LinkParams::default()
    };
    let mut sc = one_conn(2_316_788_941_243_382_009, link, [52_142, 0], Close::Both);
    sc.tweaks[1].recv_buffer = 1461;
    sc.tweaks[1].delayed_ack = None;
    run(&sc).unwrap_or_else(|e| panic!("{e}"));
}

/// Eight connections opened from both sides over a clean link, every close order.
#[test]
fn eight_connections_clean_link() {
    let conns = (0..8)
        .map(|i| ConnPlan {
            opener: i % 2,
            start: Duration::from_millis(i as u64),
            size: [100_000 * i, 50_000 * (8 - i)],
            close: [Close::Both, Close::First(0), Close::First(1)][i % 3],
            release_early: [i % 4 == 0, i % 4 == 1],
        })
        .collect();
    let sc = Scenario {
        seed: 8,
        link: LinkParams::default(),
        tweaks: [Tweaks::default(), Tweaks::default()],
        conns,
        pause: 0.05,
    };
    run(&sc).unwrap_or_else(|e| panic!("{e}"));
}
