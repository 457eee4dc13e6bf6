//! Runs one parsed script against one tcp-core [`Endpoint`] on a virtual clock.
//!
//! - Time: script time 0 is [`ORIGIN`]; before an event at time `t` the runner runs every
//!   timer due up to `t`, each at its own deadline, and keeps what the stack sends with the
//!   time it was sent. No real time passes.
//! - Inbound lines are built as frames from the script's address (192.0.2.1) to the stack's
//!   (192.168.0.1, packetdrill's IPv4 defaults); sequence numbers are the script's, ACKs and
//!   SACK blocks are shifted by the stack's ISN, learned from its first SYN or SYN-ACK.
//! - An outbound line takes the oldest segment the stack sent and not yet matched (waiting,
//!   on the virtual clock, up to the line's time plus the tolerance) and compares flags,
//!   sequence and ACK numbers, payload length, window and options (see [`profile`] for the
//!   translations), and its send time with the line's time window.
//! - System calls go through a small socket shim: descriptors from 3 up, blocking unless
//!   `O_NONBLOCK`; a call that would block is retried as time advances and must return at
//!   its expected time (`a...b`: at `b`; otherwise at once) within the tolerance.
//! - At the end, a segment sent at or before the last event's time and never matched is a
//!   failure (packetdrill would not notice it; a conformance check should).
//!
//! [`profile`]: super::profile

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use tcp_core::{CloseReason, Endpoint, Handle, Instant, SocketError, State};

use super::frame::{self, flags as fl, Link, Outbound, Segment, WireOpt};
use super::parse::{Dir, Event, EventKind, Expr, IcmpSpec, Script, Syscall, TcpOpt, TcpSpec, When};
use super::profile::{canonical_rank, Profile, Setup};

/// Virtual time of script time 0.
pub const ORIGIN: Instant = Instant::from_millis(100_000);
/// The stack's address (packetdrill's `--local_ip` default).
pub const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
/// The script's address (packetdrill's `--remote_ip` default).
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The port `bind` gives (packetdrill's `--bind_port`) and `connect` goes to
/// (`--connect_port`).
pub const SCRIPT_PORT: u16 = 8080;
/// The script's port for connections it opens.
pub const REMOTE_PORT: u16 = 47_000;
const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// How long a `*` line waits at most (virtual time).
const ANY_TIME_LIMIT_US: i64 = 600_000_000;
/// Bound on timer steps while advancing time once.
const MAX_TIMER_STEPS: usize = 1_000_000;

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every line matched.
    Passed,
    /// The first line that did not.
    Failed {
        /// 1-based line number.
        line: usize,
        /// Expected versus actual.
        detail: String,
    },
    /// The script needs something the stack or the runner does not offer.
    NotApplicable(String),
}

type Step<T> = Result<T, Outcome>;

fn fail<T>(line: usize, detail: impl Into<String>) -> Step<T> {
    Err(Outcome::Failed {
        line,
        detail: detail.into(),
    })
}

fn na<T>(why: impl Into<String>) -> Step<T> {
    Err(Outcome::NotApplicable(why.into()))
}

/// Runs `script` with `profile`.
pub fn run(script: &Script, profile: &Profile) -> Outcome {
    match Runner::prepare(script, profile).and_then(|mut r| r.run(script)) {
        Ok(()) => Outcome::Passed,
        Err(o) => o,
    }
}

#[derive(Debug)]
enum SockKind {
    Fresh { bound: bool },
    Listener(Handle),
    Conn(Handle),
}

#[derive(Debug)]
struct Sock {
    kind: SockKind,
    nonblock: bool,
    rcvbuf: usize,
    nodelay: bool,
    /// The connection's error was reported (SO_ERROR or a failed call), as FreeBSD clears
    /// `so_error` then.
    error_taken: bool,
    /// The connection got past SYN-SENT (FreeBSD sizes the buffer to the MSS then).
    synced: bool,
}

/// A system call waiting for the stack (a blocking call that would block).
#[derive(Debug)]
struct Pending {
    line: usize,
    call: Syscall,
    /// The window in which it must return, µs of script time.
    lo: i64,
    hi: i64,
    /// Bytes still to write (blocking `write`/`send`).
    left: usize,
}

/// What the runner knows of the connection under test.
#[derive(Debug, Default)]
struct Conn {
    local_port: u16,
    remote_port: u16,
    /// The stack's ISN, from its first SYN or SYN-ACK.
    live_isn: Option<u32>,
    /// The script's ISN for the stack (the seq of its `> S` line, 0 until one matched).
    script_isn: u32,
    /// Window scale in the script's SYN and in the stack's.
    peer_ws: Option<u8>,
    our_ws: Option<u8>,
    /// Script TS val → actual TS val of outbound segments, and the first such pair.
    ts_map: HashMap<u32, u32>,
    ts_first: Option<(u32, u32)>,
}

impl Conn {
    fn local_offset(&self) -> u32 {
        self.live_isn.map_or(0, |l| l.wrapping_sub(self.script_isn))
    }
}

struct Runner {
    profile: Profile,
    setup: Setup,
    ep: Endpoint,
    link: Link,
    tol: i64,
    /// Virtual now, µs of script time.
    now: i64,
    out_q: VecDeque<(i64, Vec<u8>)>,
    fds: BTreeMap<i64, Sock>,
    conn: Conn,
    pending: Option<Pending>,
    /// A failure found while time advanced (a blocking call returning wrongly).
    failure: Option<Outcome>,
    non_fatal_syscalls: bool,
    buf: Vec<u8>,
}

fn has_flag(spec: &TcpSpec, c: char) -> bool {
    spec.flags.contains(&c)
}

impl Runner {
    /// Checks what the script needs and builds the endpoint.
    fn prepare(script: &Script, profile: &Profile) -> Step<Runner> {
        let mut setup = Setup::default();
        let mut tol = 4_000;
        let mut non_fatal_syscalls = false;
        for (name, value) in &script.options {
            let v = value.as_deref().unwrap_or("");
            match name.as_str() {
                "ip_version" if v == "ipv4" => {}
                "ip_version" => return na(format!("--ip_version={v}")),
                "tolerance_usecs" => {
                    tol = v
                        .parse::<i64>()
                        .or_else(|_| na(format!("--tolerance_usecs={v}")))?;
                }
                "mtu" => {
                    let mtu: u32 = v.parse().or_else(|_| na(format!("--mtu={v}")))?;
                    let mss = mtu.saturating_sub(40);
                    if !(88..=9000).contains(&mss) {
                        return na(format!("--mtu={v}: MSS {mss} outside tcp-core's 88..=9000"));
                    }
                    setup.mss = mss as u16;
                }
                "non_fatal" if v == "syscall" => non_fatal_syscalls = true,
                "tcp_md5" | "tcp_md5_key" => return na("TCP MD5 signatures (RFC 2385)"),
                "udp_encapsulation" => return na("TCP over UDP encapsulation"),
                _ => return na(format!("option --{name}")),
            }
        }
        // Features the stack does not offer, wherever they appear in the script. Sysctls
        // after the first `socket` call are checked but not applied: they restore defaults
        // for the next script (the endpoint is configured once, with the values in force
        // when the script creates its socket).
        let mut after_socket = false;
        for ev in &script.events {
            match &ev.kind {
                EventKind::Syscall(c) if c.name == "socket" => after_socket = true,
                EventKind::Tcp(t) => {
                    if has_flag(t, 'E') || has_flag(t, 'W') {
                        return na(format!(
                            "line {}: ECN (RFC 3168) is not implemented",
                            ev.line
                        ));
                    }
                    if !t.ip_extras.is_empty() {
                        return na(format!(
                            "line {}: IP header fields {} are not modelled",
                            ev.line,
                            t.ip_extras.join(" ")
                        ));
                    }
                    if t.dir == Dir::In && t.seq.is_none() {
                        return na(format!(
                            "line {}: inbound segment without a sequence number",
                            ev.line
                        ));
                    }
                    if has_flag(t, 'U') {
                        return na(format!("line {}: urgent data", ev.line));
                    }
                }
                EventKind::Icmp(i) if i.dir == Dir::Out => {
                    return na(format!("line {}: outbound ICMP", ev.line));
                }
                EventKind::Shell(cmd) => {
                    if let Some(rest) = cmd.trim().strip_prefix("sysctl -w ") {
                        let Some((n, v)) = rest.trim().split_once('=') else {
                            return na(format!("line {}: sysctl `{rest}`", ev.line));
                        };
                        let mut cleanup = setup.clone();
                        let target = if after_socket {
                            &mut cleanup
                        } else {
                            &mut setup
                        };
                        profile
                            .sysctl(target, n.trim(), v.trim())
                            .or_else(|why| na(format!("line {}: {why}", ev.line)))?;
                    } else if cmd.contains("setkey") || cmd.contains("kldload") {
                        return na(format!("line {}: IPsec/TCP-MD5 key setup", ev.line));
                    } else if !(cmd.contains("sockstat") || cmd.contains("tcpdrop")) {
                        return na(format!("line {}: shell command `{}`", ev.line, cmd.trim()));
                    }
                }
                _ => {}
            }
        }
        let mut cfg = profile.config(&setup);
        cfg.iface.mac = LOCAL_MAC;
        cfg.iface.addr = LOCAL_IP;
        cfg.iface.prefix_len = 0;
        cfg.iface.static_arp = vec![(REMOTE_IP, REMOTE_MAC)];
        let ep = Endpoint::new(cfg).or_else(|e| na(format!("configuration: {e}")))?;
        Ok(Runner {
            profile: *profile,
            setup,
            ep,
            link: Link {
                local_mac: LOCAL_MAC,
                remote_mac: REMOTE_MAC,
                local_ip: LOCAL_IP,
                remote_ip: REMOTE_IP,
            },
            tol,
            now: 0,
            out_q: VecDeque::new(),
            fds: BTreeMap::new(),
            conn: Conn {
                local_port: SCRIPT_PORT,
                remote_port: REMOTE_PORT,
                ..Conn::default()
            },
            pending: None,
            failure: None,
            non_fatal_syscalls,
            buf: vec![0u8; 65_536],
        })
    }

    fn instant(t: i64) -> Instant {
        Instant::from_micros(ORIGIN.micros().saturating_add_signed(t))
    }

    fn run(&mut self, script: &Script) -> Step<()> {
        let mut last_time = 0i64;
        for ev in &script.events {
            let (start, end, blocking) = match ev.when {
                When::At {
                    start,
                    end,
                    blocking,
                } => (start, end, blocking),
                When::Any => (self.now, None, false),
            };
            // A blocking call must have returned before later events pass its window.
            if let Some(p) = &self.pending {
                if start > p.hi {
                    let hi = p.hi;
                    self.advance_to(hi)?;
                    self.check_failure()?;
                    if let Some(p) = &self.pending {
                        return fail(p.line, format!("`{}` did not return in time", p.call.name));
                    }
                }
            }
            match &ev.kind {
                EventKind::Tcp(t) if t.dir == Dir::In => {
                    self.advance_to(start)?;
                    self.inbound(t)?;
                }
                EventKind::Tcp(t) => {
                    let (lo, hi) = match ev.when {
                        When::Any => (i64::MIN, self.now.saturating_add(ANY_TIME_LIMIT_US)),
                        _ => (start - self.tol, end.unwrap_or(start) + self.tol),
                    };
                    self.outbound(ev, t, lo, hi)?;
                    if !matches!(ev.when, When::Any) {
                        self.advance_to(start)?;
                    }
                }
                EventKind::Icmp(i) => {
                    self.advance_to(start)?;
                    self.inbound_icmp(ev.line, i)?;
                }
                EventKind::Syscall(call) => {
                    self.advance_to(start)?;
                    let (lo, hi) = match end {
                        Some(e) if blocking => (e - self.tol, e + self.tol),
                        _ => (start - self.tol, start + self.tol),
                    };
                    self.syscall(ev.line, call, lo, hi)?;
                }
                EventKind::Shell(_) | EventKind::Python(_) => self.advance_to(start)?,
            }
            self.check_failure()?;
            last_time = last_time.max(self.now);
            if let When::At { start, .. } = ev.when {
                last_time = last_time.max(start);
            }
        }
        if let Some(p) = &self.pending {
            let (line, hi, name) = (p.line, p.hi, p.call.name.clone());
            self.advance_to(hi)?;
            self.check_failure()?;
            if self.pending.is_some() {
                return fail(line, format!("`{name}` did not return in time"));
            }
        }
        if let Some((t, f)) = self.out_q.front() {
            if *t <= last_time {
                let desc = self.describe(f);
                let line = script.events.last().map_or(0, |e| e.line);
                return fail(
                    line,
                    format!(
                        "unexpected segment at {:.6}: {desc} (sent, never matched by a line)",
                        *t as f64 / 1e6
                    ),
                );
            }
        }
        Ok(())
    }

    fn check_failure(&mut self) -> Step<()> {
        match self.failure.take() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Runs every timer due up to `t` at its deadline, then sets the clock to `t`.
    fn advance_to(&mut self, t: i64) -> Step<()> {
        self.run_timers_until(t, false)?;
        self.now = self.now.max(t);
        Ok(())
    }

    /// Runs timers due up to `t`; with `until_output`, stops once something was sent.
    fn run_timers_until(&mut self, t: i64, until_output: bool) -> Step<()> {
        self.drain();
        self.poll_pending();
        let limit = Self::instant(t);
        for _ in 0..MAX_TIMER_STEPS {
            if until_output && !self.out_q.is_empty() {
                return Ok(());
            }
            match self.ep.poll_timeout() {
                Some(d) if d <= limit => {
                    let dt = d.micros() as i64 - ORIGIN.micros() as i64;
                    self.now = self.now.max(dt);
                    self.ep.handle_timeout(Self::instant(self.now));
                    self.drain();
                    self.poll_pending();
                }
                _ => return Ok(()),
            }
        }
        na("timers never settle (runner limit)")
    }

    /// Takes every frame and event the stack has.
    fn drain(&mut self) {
        let now = Self::instant(self.now);
        while let Some(n) = self.ep.poll_transmit(now, &mut self.buf) {
            let f = self.buf[..n.min(self.buf.len())].to_vec();
            if let Outbound::Tcp(seg) = frame::parse_outbound(&self.link, &f) {
                if seg.flags & fl::SYN != 0 {
                    if seg.flags & fl::ACK == 0 {
                        self.conn.local_port = seg.src_port;
                        self.conn.remote_port = seg.dst_port;
                    }
                    if self.conn.live_isn.is_none() {
                        self.conn.live_isn = Some(seg.seq);
                    }
                    if let Ok(opts) = frame::parse_options(&seg.options) {
                        for o in opts {
                            if let WireOpt::Wscale(w) = o {
                                self.conn.our_ws = Some(w);
                            }
                        }
                    }
                }
            }
            self.out_q.push_back((self.now, f));
        }
        while self.ep.poll_event().is_some() {}
        for sock in self.fds.values_mut() {
            if let SockKind::Conn(h) = sock.kind {
                if !matches!(
                    self.ep.state(h),
                    Ok(State::SynSent | State::Closed) | Err(_)
                ) {
                    sock.synced = true;
                }
            }
        }
    }

    fn describe(&self, f: &[u8]) -> String {
        match frame::parse_outbound(&self.link, f) {
            Outbound::Tcp(s) => self.describe_seg(&s),
            Outbound::Other(o) => o,
        }
    }

    /// A segment the stack sent, in script terms.
    fn describe_seg(&self, s: &Segment) -> String {
        let mut flags = String::new();
        for (bit, c) in [
            (fl::SYN, 'S'),
            (fl::FIN, 'F'),
            (fl::RST, 'R'),
            (fl::PSH, 'P'),
            (fl::URG, 'U'),
            (fl::ECE, 'E'),
            (fl::CWR, 'W'),
            (fl::ACK, '.'),
        ] {
            if s.flags & bit != 0 {
                flags.push(c);
            }
        }
        let seq = s.seq.wrapping_sub(self.conn.local_offset());
        let mut d = format!(
            "{flags} {seq}:{}({})",
            seq.wrapping_add(s.payload_len as u32),
            s.payload_len
        );
        if s.flags & fl::ACK != 0 {
            d += &format!(" ack {}", s.ack);
        }
        d += &format!(" win {}", s.window);
        match frame::parse_options(&s.options) {
            Ok(o) if o.is_empty() => {}
            Ok(o) => {
                let items: Vec<String> = o
                    .iter()
                    .map(|o| match o {
                        WireOpt::Eol => "eol".to_string(),
                        WireOpt::Nop => "nop".to_string(),
                        WireOpt::Mss(m) => format!("mss {m}"),
                        WireOpt::Wscale(w) => format!("wscale {w}"),
                        WireOpt::SackOk => "sackOK".to_string(),
                        WireOpt::Sack(b) => {
                            let b: Vec<String> =
                                b.iter().map(|(l, r)| format!("{l}:{r}")).collect();
                            format!("sack {}", b.join(" "))
                        }
                        WireOpt::Ts(v, e) => format!("TS val {v} ecr {e}"),
                        WireOpt::Other(k, _) => format!("opt{k}"),
                    })
                    .collect();
                d += &format!(" <{}>", items.join(","));
            }
            Err(e) => d += &format!(" <{e}>"),
        }
        if s.ttl != 64 {
            d += &format!(" (ttl {})", s.ttl);
        }
        d
    }

    // -----------------------------------------------------------------------------------------
    // Packets
    // -----------------------------------------------------------------------------------------

    fn inbound(&mut self, t: &TcpSpec) -> Step<()> {
        let mut f = 0u8;
        for (c, bit) in [
            ('S', fl::SYN),
            ('F', fl::FIN),
            ('R', fl::RST),
            ('P', fl::PSH),
            ('.', fl::ACK),
            ('U', fl::URG),
            ('E', fl::ECE),
            ('W', fl::CWR),
        ] {
            if t.flags.contains(&c) {
                f |= bit;
            }
        }
        let off = self.conn.local_offset();
        let ack = match t.ack {
            Some(a) if f & fl::ACK != 0 => a.wrapping_add(off),
            Some(a) => a,
            None => 0,
        };
        let mut opts = Vec::new();
        for o in t.options.as_deref().unwrap_or(&[]) {
            match o {
                TcpOpt::Eol => opts.push(0),
                TcpOpt::Nop => opts.push(1),
                TcpOpt::Mss(m) => {
                    opts.extend_from_slice(&[2, 4]);
                    opts.extend_from_slice(&m.to_be_bytes());
                }
                TcpOpt::Wscale(w) => {
                    opts.extend_from_slice(&[3, 3, *w]);
                    if f & fl::SYN != 0 {
                        self.conn.peer_ws = Some(*w);
                    }
                }
                TcpOpt::SackOk => opts.extend_from_slice(&[4, 2]),
                TcpOpt::Sack(blocks) => {
                    opts.extend_from_slice(&[5, (2 + 8 * blocks.len()).min(255) as u8]);
                    for (l, r) in blocks {
                        opts.extend_from_slice(&l.wrapping_add(off).to_be_bytes());
                        opts.extend_from_slice(&r.wrapping_add(off).to_be_bytes());
                    }
                }
                TcpOpt::Ts { val, ecr } => {
                    let live_ecr = if f & fl::ACK == 0 {
                        *ecr
                    } else if let Some(v) = self.conn.ts_map.get(ecr) {
                        *v
                    } else if let Some((script0, live0)) = self.conn.ts_first {
                        ecr.wrapping_sub(script0).wrapping_add(live0)
                    } else {
                        *ecr
                    };
                    opts.extend_from_slice(&[8, 10]);
                    opts.extend_from_slice(&val.to_be_bytes());
                    opts.extend_from_slice(&live_ecr.to_be_bytes());
                }
            }
        }
        if opts.len() > 40 {
            return na("inbound TCP options longer than 40 bytes");
        }
        let seg = Segment {
            src_port: self.conn.remote_port,
            dst_port: self.conn.local_port,
            seq: t.seq.unwrap_or(0),
            ack,
            flags: f,
            window: t.win.unwrap_or(0).min(u32::from(u16::MAX)) as u16,
            options: opts,
            payload_len: t.len as usize,
            ttl: 64,
            tos: 0,
        };
        if seg.payload_len > 60_000 {
            return na("inbound payload too long for one frame");
        }
        let frame = frame::build_tcp(&self.link, &seg);
        self.ep.handle_frame(Self::instant(self.now), &frame);
        self.drain();
        self.poll_pending();
        Ok(())
    }

    fn inbound_icmp(&mut self, line: usize, i: &IcmpSpec) -> Step<()> {
        let (ty, code) = match (i.kind.as_str(), i.code.as_deref()) {
            ("unreachable", Some(c)) => {
                let code = match c {
                    "net_unreachable" => 0,
                    "host_unreachable" => 1,
                    "protocol_unreachable" => 2,
                    "port_unreachable" => 3,
                    "frag_needed" => 4,
                    "source_route_failed" => 5,
                    "net_unknown" => 6,
                    "host_unknown" => 7,
                    "source_host_isolated" => 8,
                    "net_prohibited" => 9,
                    "host_prohibited" => 10,
                    "net_unreachable_for_tos" => 11,
                    "host_unreachable_for_tos" => 12,
                    "packet_filtered" => 13,
                    "precedence_violation" => 14,
                    "precedence_cutoff" => 15,
                    _ => return na(format!("line {line}: ICMP code {c}")),
                };
                (3, code)
            }
            ("source_quench", None) => (4, 0),
            ("redirect", None) => (5, 0),
            ("time_exceeded", Some("ttl_exceeded_in_transit")) => (11, 0),
            ("time_exceeded", Some("frag_reass_exceeded")) => (11, 1),
            ("parameter_problem", Some(c)) => match c.strip_prefix("code_").map(str::parse::<u8>) {
                Some(Ok(n)) => (12, n),
                _ => return na(format!("line {line}: ICMP code {c}")),
            },
            (k, c) => return na(format!("line {line}: ICMP {k} {}", c.unwrap_or(""))),
        };
        let mut rest = [0u8; 4];
        if let Some(mtu) = i.mtu {
            rest[2..4].copy_from_slice(&(mtu.min(65_535) as u16).to_be_bytes());
        }
        let quoted = Segment {
            src_port: self.conn.local_port,
            dst_port: self.conn.remote_port,
            seq: i.seq.unwrap_or(0).wrapping_add(self.conn.local_offset()),
            ..Segment::default()
        };
        let f = frame::build_icmp_error(&self.link, ty, code, rest, &quoted);
        self.ep.handle_frame(Self::instant(self.now), &f);
        self.drain();
        self.poll_pending();
        Ok(())
    }

    fn outbound(&mut self, ev: &Event, t: &TcpSpec, lo: i64, hi: i64) -> Step<()> {
        if self.out_q.is_empty() {
            self.run_timers_until(hi, true)?;
        }
        let Some((sent, f)) = self.out_q.pop_front() else {
            self.now = self.now.max(hi);
            return fail(
                ev.line,
                format!(
                    "expected {} {}, nothing sent by {:.6}",
                    t.flags_string(),
                    spec_seq(t),
                    hi as f64 / 1e6
                ),
            );
        };
        let seg = match frame::parse_outbound(&self.link, &f) {
            Outbound::Tcp(s) => s,
            Outbound::Other(o) => {
                return fail(ev.line, format!("expected a TCP segment, stack sent {o}"))
            }
        };
        if let Err(why) = self.compare(t, &seg) {
            return fail(
                ev.line,
                format!(
                    "{why}; expected {}; actual {} (sent at {:.6})",
                    spec_desc(t),
                    self.describe_seg(&seg),
                    sent as f64 / 1e6
                ),
            );
        }
        if sent < lo || sent > hi {
            return fail(
                ev.line,
                format!(
                    "segment sent at {:.6}, expected in [{:.6}, {:.6}]: {}",
                    sent as f64 / 1e6,
                    lo.max(0) as f64 / 1e6,
                    hi as f64 / 1e6,
                    self.describe_seg(&seg)
                ),
            );
        }
        Ok(())
    }

    /// Compares what the stack sent with the line; `Err` names the first field that differs.
    fn compare(&mut self, t: &TcpSpec, s: &Segment) -> Result<(), String> {
        if s.src_port != self.conn.local_port || s.dst_port != self.conn.remote_port {
            return Err(format!(
                "ports {}->{} are not the connection's {}->{}",
                s.src_port, s.dst_port, self.conn.local_port, self.conn.remote_port
            ));
        }
        for (c, bit, name) in [
            ('S', fl::SYN, "SYN"),
            ('F', fl::FIN, "FIN"),
            ('R', fl::RST, "RST"),
            ('P', fl::PSH, "PSH"),
            ('.', fl::ACK, "ACK"),
            ('U', fl::URG, "URG"),
            ('E', fl::ECE, "ECE"),
            ('W', fl::CWR, "CWR"),
        ] {
            if t.flags.contains(&c) != (s.flags & bit != 0) {
                return Err(format!("flag {name} differs"));
            }
        }
        if s.flags & fl::SYN != 0 {
            if let Some(seq) = t.seq {
                // This line names the stack's ISN in script space.
                if self.conn.live_isn == Some(s.seq) {
                    self.conn.script_isn = seq;
                }
            }
        }
        let off = self.conn.local_offset();
        if let Some(seq) = t.seq {
            if s.seq.wrapping_sub(off) != seq {
                return Err("sequence number differs".into());
            }
        }
        if s.payload_len != t.len as usize {
            return Err("payload length differs".into());
        }
        if t.flags.contains(&'.') {
            if let Some(a) = t.ack {
                if s.ack != a {
                    return Err("ack differs".into());
                }
            }
        }
        let scaling = match (self.conn.peer_ws, self.conn.our_ws) {
            (Some(_), Some(ours)) if s.flags & fl::SYN == 0 => Some(ours),
            _ => None,
        };
        if let Some(w) = t.win {
            if !self
                .profile
                .window_matches(w, s.window, scaling, self.setup.mss)
            {
                return Err("window differs".into());
            }
        }
        if let Some(expected) = &t.options {
            let actual = frame::parse_options(&s.options)?;
            let mut e: Vec<&TcpOpt> = expected
                .iter()
                .filter(|o| canonical_rank(o).is_some())
                .collect();
            e.sort_by_key(|o| canonical_rank(o));
            let mut a: Vec<&WireOpt> = actual
                .iter()
                .filter(|o| !matches!(o, WireOpt::Nop | WireOpt::Eol))
                .collect();
            a.sort_by_key(|o| match o {
                WireOpt::Mss(_) => 0,
                WireOpt::Wscale(_) => 1,
                WireOpt::SackOk => 2,
                WireOpt::Ts(..) => 3,
                WireOpt::Sack(_) => 4,
                _ => 5,
            });
            if e.len() != a.len() {
                return Err("options differ".into());
            }
            let our_shift = Profile::our_wscale(self.ep.config().tcp.recv_buffer);
            for (x, y) in e.iter().zip(a.iter()) {
                let ok = match (x, y) {
                    (TcpOpt::Mss(m), WireOpt::Mss(n)) => m == n,
                    (TcpOpt::Wscale(w), WireOpt::Wscale(v)) => {
                        self.profile.wscale_matches(*w, *v, our_shift)
                    }
                    (TcpOpt::SackOk, WireOpt::SackOk) => true,
                    (TcpOpt::Ts { val, .. }, WireOpt::Ts(v, _)) => {
                        self.conn.ts_map.insert(*val, *v);
                        if self.conn.ts_first.is_none() {
                            self.conn.ts_first = Some((*val, *v));
                        }
                        true
                    }
                    (TcpOpt::Sack(eb), WireOpt::Sack(ab)) => eb == ab,
                    _ => false,
                };
                if !ok {
                    return Err(format!("option {x} differs"));
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // System calls
    // -----------------------------------------------------------------------------------------

    fn syscall(&mut self, line: usize, call: &Syscall, lo: i64, hi: i64) -> Step<()> {
        if self.pending.is_some() {
            return na(format!(
                "line {line}: a system call while another one blocks (threads are not modelled)"
            ));
        }
        let mut p = Pending {
            line,
            call: call.clone(),
            lo,
            hi,
            left: 0,
        };
        match self.attempt(&mut p, true)? {
            Some(r) => self.check_result(&p, r),
            None => {
                self.pending = Some(p);
                Ok(())
            }
        }
    }

    /// Retries a blocked call after the stack did something.
    fn poll_pending(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        match self.attempt(&mut p, false) {
            Ok(None) => self.pending = Some(p),
            Ok(Some(r)) => {
                if let Err(f) = self.check_result(&p, r) {
                    self.failure.get_or_insert(f);
                }
            }
            Err(f) => {
                self.failure.get_or_insert(f);
            }
        }
    }

    fn check_result(&mut self, p: &Pending, (ret, errno): (i64, Option<&'static str>)) -> Step<()> {
        let c = &p.call;
        let same_errno = match (c.errno.as_deref(), errno) {
            (None, None) => true,
            (Some(a), Some(b)) => errno_eq(a, b),
            _ => false,
        };
        let ok_value = ret == c.ret && (c.ret != -1 || same_errno);
        if !ok_value {
            let exp = match &c.errno {
                Some(e) => format!("{} {e}", c.ret),
                None => c.ret.to_string(),
            };
            let act = match errno {
                Some(e) => format!("{ret} {e}"),
                None => ret.to_string(),
            };
            if self.non_fatal_syscalls {
                return Ok(());
            }
            return fail(
                p.line,
                format!("{}() returned {act}, expected {exp}", c.name),
            );
        }
        if self.now < p.lo || self.now > p.hi {
            return fail(
                p.line,
                format!(
                    "{}() returned at {:.6}, expected in [{:.6}, {:.6}]",
                    c.name,
                    self.now as f64 / 1e6,
                    p.lo.max(0) as f64 / 1e6,
                    p.hi as f64 / 1e6
                ),
            );
        }
        Ok(())
    }

    fn fd_arg(&self, call: &Syscall) -> Step<i64> {
        match call.args.first() {
            Some(Expr::Int(fd)) => Ok(*fd),
            _ => na(format!("{}() without a descriptor", call.name)),
        }
    }

    fn int_arg(call: &Syscall, i: usize) -> Step<i64> {
        match call.args.get(i) {
            Some(Expr::Int(v)) => Ok(*v),
            other => na(format!("{}() argument {i}: {other:?}", call.name)),
        }
    }

    fn ident_arg(call: &Syscall, i: usize) -> Step<&str> {
        match call.args.get(i) {
            Some(Expr::Ident(v)) => Ok(v),
            other => na(format!("{}() argument {i}: {other:?}", call.name)),
        }
    }

    /// Tries a call: `Some(result)` when it returns, `None` when it blocks (only when
    /// `first` or already pending).
    fn attempt(
        &mut self,
        p: &mut Pending,
        first: bool,
    ) -> Step<Option<(i64, Option<&'static str>)>> {
        let call = p.call.clone();
        let now = Self::instant(self.now);
        let r = |v: i64| Ok(Some((v, None)));
        let e = |name: &'static str| Ok(Some((-1, Some(name))));
        match call.name.as_str() {
            "socket" => {
                let fd = self.lowest_fd();
                self.fds.insert(
                    fd,
                    Sock {
                        kind: SockKind::Fresh { bound: false },
                        nonblock: false,
                        rcvbuf: self.setup.recvspace,
                        nodelay: false,
                        error_taken: false,
                        synced: false,
                    },
                );
                r(fd)
            }
            "bind" => {
                let fd = self.fd_arg(&call)?;
                match self.fds.get_mut(&fd) {
                    Some(Sock {
                        kind: SockKind::Fresh { bound },
                        ..
                    }) => {
                        *bound = true;
                        r(0)
                    }
                    Some(_) => e("EINVAL"),
                    None => e("EBADF"),
                }
            }
            "listen" => {
                let fd = self.fd_arg(&call)?;
                let backlog = Self::int_arg(&call, 1)?;
                let Some(sock) = self.fds.get(&fd) else {
                    return e("EBADF");
                };
                match sock.kind {
                    SockKind::Fresh { bound: true } => {}
                    SockKind::Fresh { bound: false } => {
                        return na("listen() without bind() (an ephemeral listening port)")
                    }
                    SockKind::Listener(_) => return r(0),
                    SockKind::Conn(_) => return e("EINVAL"),
                }
                let backlog = usize::try_from(backlog.max(1)).unwrap_or(1);
                match self.ep.listen(SCRIPT_PORT, backlog) {
                    Ok(h) => {
                        let rcvbuf = sock.rcvbuf;
                        let _ = self.ep.set_buffer_sizes(h, usize::MAX, rcvbuf.max(1));
                        // The configured (MSS-rounded) size applies; `set_buffer_sizes`
                        // clamps to it.
                        let cfg = self.ep.config().tcp.recv_buffer;
                        let _ = self.ep.set_buffer_sizes(h, usize::MAX, cfg);
                        if let Some(s) = self.fds.get_mut(&fd) {
                            s.kind = SockKind::Listener(h);
                        }
                        r(0)
                    }
                    Err(SocketError::AddrInUse) => e("EADDRINUSE"),
                    Err(x) => na(format!("listen(): {x}")),
                }
            }
            "accept" => {
                let fd = self.fd_arg(&call)?;
                let Some(sock) = self.fds.get(&fd) else {
                    return e("EBADF");
                };
                let SockKind::Listener(l) = sock.kind else {
                    return e("EINVAL");
                };
                let (nonblock, nodelay) = (sock.nonblock, sock.nodelay);
                match self.ep.accept(l) {
                    Ok(h) => {
                        let nfd = self.lowest_fd();
                        if nodelay {
                            let _ = self.ep.set_nodelay(h, true);
                        }
                        self.fds.insert(
                            nfd,
                            Sock {
                                kind: SockKind::Conn(h),
                                nonblock,
                                rcvbuf: self.setup.recvspace,
                                nodelay,
                                error_taken: false,
                                synced: true,
                            },
                        );
                        r(nfd)
                    }
                    Err(SocketError::WouldBlock) if nonblock => e("EWOULDBLOCK"),
                    Err(SocketError::WouldBlock) => Ok(None),
                    Err(x) => na(format!("accept(): {x}")),
                }
            }
            "connect" => {
                let fd = self.fd_arg(&call)?;
                let Some(sock) = self.fds.get(&fd) else {
                    return e("EBADF");
                };
                let nonblock = sock.nonblock;
                match sock.kind {
                    SockKind::Fresh { .. } if first => {
                        let remote = SocketAddrV4::new(REMOTE_IP, SCRIPT_PORT);
                        match self.ep.connect(now, remote) {
                            Ok(h) => {
                                if sock.nodelay {
                                    let _ = self.ep.set_nodelay(h, true);
                                }
                                if let Some(s) = self.fds.get_mut(&fd) {
                                    s.kind = SockKind::Conn(h);
                                }
                                self.drain();
                                if nonblock {
                                    return e("EINPROGRESS");
                                }
                                Ok(None)
                            }
                            Err(x) => na(format!("connect(): {x}")),
                        }
                    }
                    SockKind::Conn(h) => {
                        let state = self.ep.state(h).unwrap_or(State::Closed);
                        match state {
                            State::SynSent | State::SynReceived if first && nonblock => {
                                e("EALREADY")
                            }
                            State::SynSent | State::SynReceived => Ok(None),
                            State::Closed => {
                                let err = self.take_error(fd);
                                match err {
                                    Some(x) => e(x),
                                    None => e("ECONNABORTED"),
                                }
                            }
                            _ if first => e("EISCONN"),
                            _ => r(0),
                        }
                    }
                    _ => e("EINVAL"),
                }
            }
            "read" | "recv" => {
                let fd = self.fd_arg(&call)?;
                let len = Self::int_arg(&call, 2)?;
                let peek = if call.name == "recv" {
                    match call.args.get(3) {
                        Some(Expr::Int(0)) => false,
                        Some(Expr::Ident(f)) if f == "MSG_PEEK" => true,
                        other => return na(format!("recv() flags {other:?}")),
                    }
                } else {
                    false
                };
                let Some(sock) = self.fds.get(&fd) else {
                    return e("EBADF");
                };
                let SockKind::Conn(h) = sock.kind else {
                    return e("ENOTCONN");
                };
                let nonblock = sock.nonblock;
                let len = usize::try_from(len).unwrap_or(0).min(1 << 20);
                let mut buf = vec![0u8; len];
                let res = if peek {
                    match self.ep.peek(h, &mut buf) {
                        Ok(0) if len > 0 => self.ep.recv(h, &mut []).and_then(|_| {
                            // Nothing to peek: what would a read say?
                            if self.ep.recv_available(h)? == 0 {
                                let st = self.ep.state(h)?;
                                if st.can_receive() || st == State::SynSent {
                                    return Err(SocketError::WouldBlock);
                                }
                                if let Some(reason) = self.ep.close_reason(h)? {
                                    if reason != CloseReason::Normal {
                                        return Err(SocketError::ConnectionReset);
                                    }
                                }
                            }
                            Ok(0)
                        }),
                        other => other,
                    }
                } else {
                    self.ep.recv(h, &mut buf)
                };
                self.drain();
                match res {
                    Ok(n) => r(n as i64),
                    Err(SocketError::WouldBlock) if nonblock => e("EWOULDBLOCK"),
                    Err(SocketError::WouldBlock) => Ok(None),
                    Err(x) => match self.take_error(fd) {
                        Some(name) => e(name),
                        None => e(errno_of(x)),
                    },
                }
            }
            "write" | "send" => {
                let fd = self.fd_arg(&call)?;
                let len = Self::int_arg(&call, 2)?;
                if call.name == "send" && !matches!(call.args.get(3), Some(Expr::Int(0))) {
                    return na(format!("send() flags {:?}", call.args.get(3)));
                }
                let Some(sock) = self.fds.get(&fd) else {
                    return e("EBADF");
                };
                let SockKind::Conn(h) = sock.kind else {
                    return e("ENOTCONN");
                };
                let nonblock = sock.nonblock;
                let total = usize::try_from(len).unwrap_or(0).min(1 << 24);
                if first {
                    p.left = total;
                }
                let data = vec![0u8; p.left];
                let res = self.ep.send(h, &data);
                self.drain();
                match res {
                    Ok(n) if n >= p.left || nonblock => {
                        let done = total - p.left + n;
                        r(done as i64)
                    }
                    Ok(n) => {
                        p.left -= n;
                        Ok(None)
                    }
                    Err(SocketError::WouldBlock) if nonblock && p.left == total => e("EWOULDBLOCK"),
                    Err(SocketError::WouldBlock) if nonblock => r((total - p.left) as i64),
                    Err(SocketError::WouldBlock) => Ok(None),
                    Err(SocketError::Shutdown) => e("EPIPE"),
                    Err(x) => match self.take_error(fd) {
                        Some(name) => e(name),
                        None => e(errno_of(x)),
                    },
                }
            }
            "close" => {
                let fd = self.fd_arg(&call)?;
                let Some(sock) = self.fds.remove(&fd) else {
                    return e("EBADF");
                };
                match sock.kind {
                    SockKind::Fresh { .. } => {}
                    SockKind::Listener(h) | SockKind::Conn(h) => {
                        let _ = self.ep.close(now, h);
                    }
                }
                self.drain();
                r(0)
            }
            "shutdown" => {
                let fd = self.fd_arg(&call)?;
                let how = Self::ident_arg(&call, 1)?.to_string();
                let Some(sock) = self.fds.get(&fd) else {
                    return e("EBADF");
                };
                let SockKind::Conn(h) = sock.kind else {
                    return e("ENOTCONN");
                };
                if how != "SHUT_WR" {
                    return na(format!("shutdown({how})"));
                }
                let res = self.ep.shutdown(now, h);
                self.drain();
                match res {
                    Ok(()) => r(0),
                    Err(x) => e(errno_of(x)),
                }
            }
            "fcntl" => {
                let fd = self.fd_arg(&call)?;
                let cmd = Self::ident_arg(&call, 1)?.to_string();
                let Some(sock) = self.fds.get_mut(&fd) else {
                    return e("EBADF");
                };
                match cmd.as_str() {
                    // FreeBSD: O_RDWR 0x2, O_NONBLOCK 0x4.
                    "F_GETFL" => r(if sock.nonblock { 0x6 } else { 0x2 }),
                    "F_SETFL" => {
                        let names: Vec<&str> = match call.args.get(2) {
                            Some(Expr::Ident(a)) => vec![a.as_str()],
                            Some(Expr::Or(v)) => v
                                .iter()
                                .filter_map(|x| match x {
                                    Expr::Ident(a) => Some(a.as_str()),
                                    _ => None,
                                })
                                .collect(),
                            other => return na(format!("fcntl(F_SETFL, {other:?})")),
                        };
                        if names.iter().any(|n| !matches!(*n, "O_RDWR" | "O_NONBLOCK")) {
                            return na(format!("fcntl(F_SETFL, {})", names.join("|")));
                        }
                        sock.nonblock = names.contains(&"O_NONBLOCK");
                        r(0)
                    }
                    _ => na(format!("fcntl({cmd})")),
                }
            }
            "setsockopt" => self.setsockopt(&call),
            "getsockopt" => self.getsockopt(&call, p.line),
            other => na(format!("system call {other}()")),
        }
    }

    fn setsockopt(&mut self, call: &Syscall) -> Step<Option<(i64, Option<&'static str>)>> {
        let fd = self.fd_arg(call)?;
        let level = Self::ident_arg(call, 1)?.to_string();
        let opt = Self::ident_arg(call, 2)?.to_string();
        let value = match call.args.get(3) {
            Some(Expr::List(v)) => match v.first() {
                Some(Expr::Int(n)) => Some(*n),
                _ => None,
            },
            Some(Expr::Int(n)) => Some(*n),
            _ => None,
        };
        let Some(sock) = self.fds.get_mut(&fd) else {
            return Ok(Some((-1, Some("EBADF"))));
        };
        match (level.as_str(), opt.as_str(), value) {
            ("SOL_SOCKET", "SO_REUSEADDR", Some(_)) => Ok(Some((0, None))),
            ("IPPROTO_TCP", "TCP_NODELAY", Some(v)) => {
                sock.nodelay = v != 0;
                if let SockKind::Conn(h) = sock.kind {
                    let _ = self.ep.set_nodelay(h, v != 0);
                }
                Ok(Some((0, None)))
            }
            _ => na(format!("setsockopt({level}, {opt})")),
        }
    }

    fn getsockopt(
        &mut self,
        call: &Syscall,
        line: usize,
    ) -> Step<Option<(i64, Option<&'static str>)>> {
        let fd = self.fd_arg(call)?;
        let level = Self::ident_arg(call, 1)?.to_string();
        let opt = Self::ident_arg(call, 2)?.to_string();
        let expected = match call.args.get(3) {
            Some(Expr::List(v)) if v.len() == 1 => v[0].clone(),
            other => return na(format!("getsockopt({opt}) value {other:?}")),
        };
        let Some(sock) = self.fds.get(&fd) else {
            return Ok(Some((-1, Some("EBADF"))));
        };
        let actual: Expr = match (level.as_str(), opt.as_str()) {
            ("SOL_SOCKET", "SO_RCVBUF") => {
                let v = match sock.kind {
                    SockKind::Conn(h) if sock.synced => self
                        .ep
                        .conn_info(h)
                        .map_or(sock.rcvbuf, |i| i.recv_capacity),
                    _ => sock.rcvbuf,
                };
                Expr::Int(v as i64)
            }
            ("SOL_SOCKET", "SO_ERROR") => match self.take_error(fd) {
                Some(name) => Expr::Ident(name.to_string()),
                None => Expr::Int(0),
            },
            _ => return na(format!("getsockopt({level}, {opt})")),
        };
        let same = match (&expected, &actual) {
            (Expr::Ident(a), Expr::Ident(b)) => errno_eq(a, b),
            (a, b) => a == b,
        };
        if !same {
            return fail(
                line,
                format!(
                    "getsockopt({opt}) gave [{}], expected [{}]",
                    show(&actual),
                    show(&expected)
                ),
            );
        }
        Ok(Some((0, None)))
    }

    /// The pending error of `fd`'s connection, once (`SO_ERROR` semantics).
    fn take_error(&mut self, fd: i64) -> Option<&'static str> {
        let sock = self.fds.get_mut(&fd)?;
        let SockKind::Conn(h) = sock.kind else {
            return None;
        };
        if sock.error_taken {
            return None;
        }
        let name = match self.ep.close_reason(h).ok().flatten()? {
            CloseReason::Reset => "ECONNRESET",
            CloseReason::Refused => "ECONNREFUSED",
            CloseReason::TimedOut => "ETIMEDOUT",
            _ => return None,
        };
        sock.error_taken = true;
        Some(name)
    }

    fn lowest_fd(&self) -> i64 {
        let mut fd = 3;
        while self.fds.contains_key(&fd) {
            fd += 1;
        }
        fd
    }
}

fn show(e: &Expr) -> String {
    match e {
        Expr::Int(n) => n.to_string(),
        Expr::Ident(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn errno_eq(a: &str, b: &str) -> bool {
    fn canon(s: &str) -> &str {
        match s {
            "EAGAIN" => "EWOULDBLOCK",
            x => x,
        }
    }
    canon(a) == canon(b)
}

fn errno_of(e: SocketError) -> &'static str {
    match e {
        SocketError::BadHandle => "EBADF",
        SocketError::WouldBlock => "EWOULDBLOCK",
        SocketError::NotConnected => "ENOTCONN",
        SocketError::AddrInUse => "EADDRINUSE",
        SocketError::PortsExhausted => "EADDRNOTAVAIL",
        SocketError::TooManyConnections => "ENOBUFS",
        SocketError::NoRoute => "EHOSTUNREACH",
        SocketError::Shutdown => "EPIPE",
        SocketError::ConnectionReset => "ECONNRESET",
        SocketError::ConnectionRefused => "ECONNREFUSED",
        SocketError::TimedOut => "ETIMEDOUT",
        SocketError::InvalidOperation | SocketError::InvalidArgument => "EINVAL",
        _ => "EIO",
    }
}

fn spec_seq(t: &TcpSpec) -> String {
    match t.seq {
        Some(s) => format!("{s}:{}({})", s.wrapping_add(t.len), t.len),
        None => format!("...({})", t.len),
    }
}

fn spec_desc(t: &TcpSpec) -> String {
    let mut d = format!("{} {}", t.flags_string(), spec_seq(t));
    if let Some(a) = t.ack {
        d += &format!(" ack {a}");
    }
    if let Some(w) = t.win {
        d += &format!(" win {w}");
    }
    match &t.options {
        None => d += " <...>",
        Some(o) if o.is_empty() => {}
        Some(o) => {
            let items: Vec<String> = o.iter().map(ToString::to_string).collect();
            d += &format!(" <{}>", items.join(","));
        }
    }
    d
}
