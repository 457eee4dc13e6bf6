//! The scripted peer: one [`Endpoint`] under test, and a script that plays the remote side
//! segment by segment on a virtual clock, in smoltcp's style.
//!
//! - Time is relative milliseconds since the start of the test ([`H::at`]); moving it forward
//!   runs every timer due on the way, each at its own deadline, and keeps what they send.
//! - Sequence numbers are relative: what the script sends is relative to the peer's ISN
//!   ([`PEER_ISN`]), what the stack sends is compared relative to the stack's ISN, captured
//!   from its SYN or SYN-ACK. Acknowledgment numbers and SACK blocks likewise.
//! - [`H::expect`] drains everything the stack has to send and compares it, in order, with
//!   a list of [`Exp`]; fields an expectation leaves unset are not compared. On mismatch it
//!   prints both lists.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddrV4;

use tcp_core::config::Keepalive;
use tcp_core::testing::{pair_addr, pair_configs};
use tcp_core::wire::{
    self, ChecksumMode, EthIpv4Header, EthernetAddress, Inbound, TcpFlags, TcpOptions,
    TcpSegmentOut,
};
use tcp_core::{
    ConnInfo, Counters, Endpoint, EndpointConfig, Event, Handle, Instant, SeqNumber, State,
};

/// The port the stack listens on in passive tests.
pub const PORT: u16 = 80;
/// The script's port.
pub const PEER_PORT: u16 = 40_000;
/// The script's initial sequence number (near the wrap, so that every test crosses it).
pub const PEER_ISN: u32 = 0xffff_fff0;
/// Where the script's timestamp clock starts.
pub const PEER_TS0: u32 = 7_000_000;
/// The virtual clock's origin (relative time 0).
const ORIGIN_MS: u64 = 100_000;

pub const SYN: TcpFlags = TcpFlags::SYN;
pub const ACK: TcpFlags = TcpFlags::ACK;
pub const FIN: TcpFlags = TcpFlags::FIN;
pub const RST: TcpFlags = TcpFlags::RST;
pub const PSH: TcpFlags = TcpFlags::PSH;

/// The stack's configuration with every option (timestamps, SACK, window scaling) on.
pub fn cfg_full() -> EndpointConfig {
    pair_configs().1
}

/// The stack's configuration with no TCP option but the MSS, and ACKs at once: plain
/// segments, as RFC 9293 alone describes them.
pub fn cfg_plain() -> EndpointConfig {
    let mut c = pair_configs().1;
    c.tcp.timestamps = false;
    c.tcp.sack = false;
    c.tcp.window_scaling = false;
    c.tcp.delayed_ack = None;
    c
}

/// `n` bytes of recognisable data.
pub fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// What the script's SYN (or SYN-ACK) offers.
#[derive(Debug, Clone, Copy)]
pub struct PeerOpts {
    pub mss: Option<u16>,
    pub ws: Option<u8>,
    pub sack: bool,
    pub ts: bool,
    pub window: u16,
}

impl PeerOpts {
    /// MSS 1460 and nothing else.
    pub fn plain() -> PeerOpts {
        PeerOpts {
            mss: Some(1460),
            ws: None,
            sack: false,
            ts: false,
            window: 65_535,
        }
    }

    /// MSS 1460, window scale 7, SACK permitted, timestamps.
    pub fn full() -> PeerOpts {
        PeerOpts {
            mss: Some(1460),
            ws: Some(7),
            sack: true,
            ts: true,
            window: 65_535,
        }
    }

    /// No option at all (not even MSS).
    pub fn none() -> PeerOpts {
        PeerOpts {
            mss: None,
            ..PeerOpts::plain()
        }
    }
}

/// A segment the script sends. `seq` is relative to the script's ISN, `ack` and the SACK
/// blocks to the stack's.
#[derive(Debug, Clone)]
pub struct Seg {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub opts: TcpOptions,
    pub sack: Vec<(u32, u32)>,
    pub payload: Vec<u8>,
    /// Leave the timestamp option off even when timestamps are in use.
    pub no_ts: bool,
}

impl Seg {
    pub fn new(flags: TcpFlags, seq: u32, ack: u32) -> Seg {
        Seg {
            flags,
            seq,
            ack,
            window: 65_535,
            opts: TcpOptions::default(),
            sack: Vec::new(),
            payload: Vec::new(),
            no_ts: false,
        }
    }

    /// A SYN at relative sequence number `seq`.
    pub fn syn(seq: u32) -> Seg {
        Seg::new(SYN, seq, 0)
    }

    pub fn synack(seq: u32, ack: u32) -> Seg {
        Seg::new(SYN | ACK, seq, ack)
    }

    pub fn ack(seq: u32, ack: u32) -> Seg {
        Seg::new(ACK, seq, ack)
    }

    pub fn data(seq: u32, ack: u32, payload: &[u8]) -> Seg {
        Seg {
            payload: payload.to_vec(),
            ..Seg::new(ACK | PSH, seq, ack)
        }
    }

    pub fn fin(seq: u32, ack: u32) -> Seg {
        Seg::new(FIN | ACK, seq, ack)
    }

    pub fn rst(seq: u32) -> Seg {
        Seg::new(RST, seq, 0)
    }

    pub fn rstack(seq: u32, ack: u32) -> Seg {
        Seg::new(RST | ACK, seq, ack)
    }

    pub fn win(mut self, w: u16) -> Seg {
        self.window = w;
        self
    }

    pub fn flags(mut self, f: TcpFlags) -> Seg {
        self.flags = f;
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Seg {
        self.payload = p.to_vec();
        self
    }

    pub fn sack(mut self, blocks: &[(u32, u32)]) -> Seg {
        self.sack = blocks.to_vec();
        self
    }

    /// An explicit `(TSval, TSecr)`.
    pub fn ts(mut self, tsval: u32, tsecr: u32) -> Seg {
        self.opts.timestamp = Some((tsval, tsecr));
        self
    }

    pub fn no_ts(mut self) -> Seg {
        self.no_ts = true;
        self
    }

    pub fn with_opts(mut self, p: PeerOpts) -> Seg {
        self.opts.mss = p.mss;
        self.opts.wscale = p.ws;
        self.opts.sack_permitted = p.sack;
        if p.ts && self.opts.timestamp.is_none() {
            // TSval filled in by the harness; TSecr 0 in a SYN.
            self.opts.timestamp = Some((0, 0));
        }
        self.window = p.window;
        self
    }
}

/// One segment the stack sent, with sequence numbers made relative.
#[derive(Clone)]
pub struct Got {
    pub port: u16,
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub opts: TcpOptions,
    /// SACK blocks relative to the script's ISN.
    pub sack: Vec<(u32, u32)>,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] seq={} ack={} win={} len={}",
            flag_names(self.flags),
            self.seq,
            self.ack,
            self.window,
            self.payload.len()
        )?;
        if let Some(m) = self.opts.mss {
            write!(f, " mss={m}")?;
        }
        if let Some(w) = self.opts.wscale {
            write!(f, " ws={w}")?;
        }
        if self.opts.sack_permitted {
            write!(f, " sackok")?;
        }
        if let Some((v, e)) = self.opts.timestamp {
            write!(f, " ts=({v},{e})")?;
        }
        if !self.sack.is_empty() {
            write!(f, " sack={:?}", self.sack)?;
        }
        if self.port != PEER_PORT {
            write!(f, " to:{}", self.port)?;
        }
        Ok(())
    }
}

fn flag_names(fl: TcpFlags) -> String {
    let mut v = Vec::new();
    for (bit, name) in [
        (SYN, "SYN"),
        (RST, "RST"),
        (FIN, "FIN"),
        (PSH, "PSH"),
        (ACK, "ACK"),
    ] {
        if fl.contains(bit) {
            v.push(name);
        }
    }
    v.join(",")
}

/// An expected segment. `flags`, `seq` and `ack` are always compared (PSH only if `psh`
/// is set); the payload is compared (empty unless set) unless `any_payload`; every other
/// field only if set.
#[derive(Clone, Default)]
pub struct Exp {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub psh: Option<bool>,
    pub window: Option<u16>,
    pub payload: Option<Vec<u8>>,
    pub len: Option<usize>,
    pub mss: Option<Option<u16>>,
    pub ws: Option<Option<u8>>,
    pub sackok: Option<bool>,
    pub sack: Option<Vec<(u32, u32)>>,
    pub ts: Option<bool>,
    pub tsecr: Option<u32>,
    pub port: Option<u16>,
}

impl fmt::Debug for Exp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] seq={} ack={}",
            flag_names(self.flags),
            self.seq,
            self.ack
        )?;
        if let Some(w) = self.window {
            write!(f, " win={w}")?;
        }
        match (&self.payload, self.len) {
            (Some(p), _) => write!(f, " len={}", p.len())?,
            (None, Some(n)) => write!(f, " len={n}")?,
            (None, None) => write!(f, " len=*")?,
        }
        if let Some(m) = self.mss {
            write!(f, " mss={m:?}")?;
        }
        if let Some(w) = self.ws {
            write!(f, " ws={w:?}")?;
        }
        if let Some(s) = self.sackok {
            write!(f, " sackok={s}")?;
        }
        if let Some(t) = self.ts {
            write!(f, " ts={t}")?;
        }
        if let Some(e) = self.tsecr {
            write!(f, " tsecr={e}")?;
        }
        if let Some(s) = &self.sack {
            write!(f, " sack={s:?}")?;
        }
        if let Some(p) = self.port {
            write!(f, " to:{p}")?;
        }
        Ok(())
    }
}

impl Exp {
    pub fn new(flags: TcpFlags, seq: u32, ack: u32) -> Exp {
        Exp {
            flags,
            seq,
            ack,
            payload: Some(Vec::new()),
            ..Exp::default()
        }
    }

    pub fn syn(seq: u32) -> Exp {
        Exp::new(SYN, seq, 0)
    }

    pub fn synack(seq: u32, ack: u32) -> Exp {
        Exp::new(SYN | ACK, seq, ack)
    }

    pub fn ack(seq: u32, ack: u32) -> Exp {
        Exp::new(ACK, seq, ack)
    }

    pub fn fin(seq: u32, ack: u32) -> Exp {
        Exp::new(FIN | ACK, seq, ack)
    }

    pub fn rst(seq: u32) -> Exp {
        Exp::new(RST, seq, 0)
    }

    pub fn rstack(seq: u32, ack: u32) -> Exp {
        Exp::new(RST | ACK, seq, ack)
    }

    /// An ACK carrying `payload`.
    pub fn data(seq: u32, ack: u32, payload: &[u8]) -> Exp {
        Exp {
            payload: Some(payload.to_vec()),
            ..Exp::new(ACK, seq, ack)
        }
    }

    /// An ACK carrying `n` bytes of whatever.
    pub fn data_len(seq: u32, ack: u32, n: usize) -> Exp {
        Exp {
            payload: None,
            len: Some(n),
            ..Exp::new(ACK, seq, ack)
        }
    }

    pub fn win(mut self, w: u16) -> Exp {
        self.window = Some(w);
        self
    }

    pub fn psh(mut self, on: bool) -> Exp {
        self.psh = Some(on);
        self
    }

    pub fn mss(mut self, m: Option<u16>) -> Exp {
        self.mss = Some(m);
        self
    }

    pub fn ws(mut self, w: Option<u8>) -> Exp {
        self.ws = Some(w);
        self
    }

    pub fn sackok(mut self, on: bool) -> Exp {
        self.sackok = Some(on);
        self
    }

    pub fn sack(mut self, blocks: &[(u32, u32)]) -> Exp {
        self.sack = Some(blocks.to_vec());
        self
    }

    pub fn ts(mut self, on: bool) -> Exp {
        self.ts = Some(on);
        self
    }

    pub fn tsecr(mut self, e: u32) -> Exp {
        self.ts = Some(true);
        self.tsecr = Some(e);
        self
    }

    /// No option at all (MSS, window scale, SACK, timestamps).
    pub fn no_opts(self) -> Exp {
        self.mss(None).ws(None).sackok(false).ts(false).sack(&[])
    }

    pub fn port(mut self, p: u16) -> Exp {
        self.port = Some(p);
        self
    }

    fn matches(&self, g: &Got) -> bool {
        let mask = |f: TcpFlags| f.difference(PSH);
        mask(g.flags) == mask(self.flags)
            && self.psh.is_none_or(|p| g.flags.contains(PSH) == p)
            && g.seq == self.seq
            && g.ack == self.ack
            && self.window.is_none_or(|w| g.window == w)
            && self.payload.as_ref().is_none_or(|p| &g.payload == p)
            && self.len.is_none_or(|n| g.payload.len() == n)
            && self.mss.is_none_or(|m| g.opts.mss == m)
            && self.ws.is_none_or(|w| g.opts.wscale == w)
            && self.sackok.is_none_or(|s| g.opts.sack_permitted == s)
            && self.sack.as_ref().is_none_or(|s| &g.sack == s)
            && self.ts.is_none_or(|t| g.opts.timestamp.is_some() == t)
            && self
                .tsecr
                .is_none_or(|e| g.opts.timestamp.is_some_and(|(_, ecr)| ecr == e))
            && self.port.is_none_or(|p| g.port == p)
    }
}

/// Per peer port: the stack's ISN (once seen), the script's ISN and the last TSval the
/// stack sent there.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    isn: Option<u32>,
    peer_isn: u32,
    last_tsval: u32,
}

/// The harness.
pub struct H {
    pub ep: Endpoint,
    /// Relative time in µs.
    now_us: u64,
    /// The script's port for the next segments (several connections use several ports).
    pub peer_port: u16,
    /// The stack's port (the listener's, or the ephemeral port of an active open).
    pub port: u16,
    flows: HashMap<u16, Flow>,
    /// Fill in timestamps (TSval from the script's clock, TSecr = the stack's last TSval).
    pub auto_ts: bool,
    pending: VecDeque<Got>,
    buf: Vec<u8>,
    pub listener: Option<Handle>,
    pub conn: Option<Handle>,
}

impl H {
    pub fn new(cfg: EndpointConfig) -> H {
        H {
            ep: Endpoint::new(cfg).expect("valid config"),
            now_us: 0,
            peer_port: PEER_PORT,
            port: PORT,
            flows: HashMap::new(),
            auto_ts: false,
            pending: VecDeque::new(),
            buf: vec![0; 65_536],
            listener: None,
            conn: None,
        }
    }

    pub fn plain() -> H {
        H::new(cfg_plain())
    }

    pub fn full() -> H {
        H::new(cfg_full())
    }

    // ---------------------------------------------------------------------------------------
    // Time
    // ---------------------------------------------------------------------------------------

    /// The endpoint's clock for relative time `us`.
    fn instant(us: u64) -> Instant {
        Instant::from_micros(ORIGIN_MS * 1000 + us)
    }

    pub fn now(&self) -> Instant {
        H::instant(self.now_us)
    }

    /// Relative time in ms.
    pub fn t(&self) -> u64 {
        self.now_us / 1000
    }

    /// Moves the clock to relative `ms` (never back), running every timer due on the way at
    /// its deadline and keeping what the stack sends.
    pub fn at(&mut self, ms: u64) {
        self.at_us(ms * 1000);
    }

    pub fn at_us(&mut self, us: u64) {
        let target = H::instant(us);
        let mut last = None;
        while self.next_timer(target, &mut last) {}
        if us > self.now_us {
            self.now_us = us;
            self.ep.handle_timeout(self.now());
            self.drain();
        }
    }

    /// Runs the endpoint's next timer if it is due by `limit` (at its deadline, which
    /// becomes the time); false if there is none. `last` is the previous wake-up of this
    /// walk: the wheel may report a slot start or a cancelled deadline again, which is then
    /// stepped past.
    fn next_timer(&mut self, limit: Instant, last: &mut Option<Instant>) -> bool {
        let Some(mut d) = self.ep.poll_timeout() else {
            return false;
        };
        d = d.max(self.now());
        if let Some(l) = *last {
            if d <= l {
                d = l + tcp_core::Duration::from_micros(1);
            }
        }
        if d > limit {
            return false;
        }
        *last = Some(d);
        self.now_us = d.micros() - ORIGIN_MS * 1000;
        self.ep.handle_timeout(d);
        self.drain();
        true
    }

    /// Advances to the first instant at which the stack sends something (at most `limit_ms`
    /// from now) and returns it (relative ms); `None` if nothing is sent by then (the time is
    /// then that of the last timer run). What is sent stays for [`H::expect`].
    pub fn wake_within(&mut self, limit_ms: u64) -> Option<u64> {
        let limit = H::instant(self.now_us + limit_ms * 1000);
        let before = self.pending.len();
        let mut last = None;
        while self.next_timer(limit, &mut last) {
            if self.pending.len() > before {
                return Some(self.t());
            }
        }
        None
    }

    /// [`H::wake_within`] an hour; panics if nothing comes.
    pub fn wake(&mut self) -> u64 {
        self.wake_within(3_600_000)
            .expect("the stack sends nothing within an hour")
    }

    /// Runs every timer for `ms` from now.
    pub fn idle(&mut self, ms: u64) {
        let t = self.now_us / 1000 + ms;
        self.at(t);
    }

    // ---------------------------------------------------------------------------------------
    // Input
    // ---------------------------------------------------------------------------------------

    fn flow(&mut self) -> &mut Flow {
        self.flows.entry(self.peer_port).or_insert(Flow {
            isn: None,
            peer_isn: PEER_ISN,
            last_tsval: 0,
        })
    }

    /// The script's ISN for the current peer port (default [`PEER_ISN`]).
    pub fn set_peer_isn(&mut self, isn: u32) {
        self.flow().peer_isn = isn;
    }

    /// Forget the stack's ISN on the current peer port (a new connection on the same ports).
    pub fn reset_flow(&mut self) {
        self.flow().isn = None;
    }

    /// The stack's ISN on the current peer port.
    pub fn isn(&self) -> u32 {
        self.flows
            .get(&self.peer_port)
            .and_then(|f| f.isn)
            .expect("the stack's ISN is not known yet")
    }

    /// The last TSval the stack sent on the current peer port.
    pub fn last_tsval(&self) -> u32 {
        self.flows.get(&self.peer_port).map_or(0, |f| f.last_tsval)
    }

    /// The script's timestamp clock now.
    pub fn peer_tsval(&self) -> u32 {
        PEER_TS0.wrapping_add(self.t() as u32)
    }

    /// The frame `seg` makes (from the script to the stack), as sent at the current time.
    pub fn frame(&mut self, seg: &Seg) -> Vec<u8> {
        let flow = *self.flow();
        let seq = flow.peer_isn.wrapping_add(seg.seq);
        let ack = flow.isn.unwrap_or(0).wrapping_add(seg.ack);
        let mut opts = seg.opts;
        match opts.timestamp {
            Some((0, 0)) if seg.flags.contains(SYN) && !seg.flags.contains(ACK) => {
                opts.timestamp = Some((self.peer_tsval(), 0));
            }
            Some((0, 0)) => opts.timestamp = Some((self.peer_tsval(), flow.last_tsval)),
            None if self.auto_ts && !seg.no_ts => {
                opts.timestamp = Some((self.peer_tsval(), flow.last_tsval));
            }
            _ => {}
        }
        let base = flow.isn.unwrap_or(0);
        for (slot, (l, r)) in opts.sack_blocks.iter_mut().zip(seg.sack.iter()) {
            *slot = Some((
                SeqNumber(base.wrapping_add(*l)),
                SeqNumber(base.wrapping_add(*r)),
            ));
        }
        let out = TcpSegmentOut {
            src_port: self.peer_port,
            dst_port: self.port,
            seq: SeqNumber(seq),
            ack: SeqNumber(ack),
            flags: seg.flags,
            window: seg.window,
            urgent: 0,
            options: opts,
        };
        let (peer_mac, peer_ip) = pair_addr(0);
        let (our_mac, our_ip) = pair_addr(1);
        let hdr = EthIpv4Header::new(
            EthernetAddress(peer_mac),
            EthernetAddress(our_mac),
            peer_ip,
            our_ip,
        );
        let mut buf = vec![0u8; 65_536];
        let n = wire::emit_tcp(&mut buf, &hdr, &out, &seg.payload, ChecksumMode::SOFTWARE)
            .expect("emit");
        buf.truncate(n);
        buf
    }

    /// An ICMP error (type, code, RFC 792) from the peer's address quoting the first 8 octets
    /// of a segment the stack sent with relative sequence number `seq`.
    pub fn icmp_error(&mut self, icmp_type: u8, code: u8, seq: u32) -> Vec<u8> {
        use smoltcp::wire::{Icmpv4Packet, Ipv4Packet};
        let flow = *self.flow();
        let (peer_mac, peer_ip) = pair_addr(0);
        let (our_mac, our_ip) = pair_addr(1);
        // The quoted segment, as the stack would have sent it.
        let quoted_hdr = EthIpv4Header::new(
            EthernetAddress(our_mac),
            EthernetAddress(peer_mac),
            our_ip,
            peer_ip,
        );
        let quoted = TcpSegmentOut {
            src_port: self.port,
            dst_port: self.peer_port,
            seq: SeqNumber(flow.isn.unwrap_or(0).wrapping_add(seq)),
            flags: SYN,
            window: 65_535,
            ..TcpSegmentOut::default()
        };
        let mut q = vec![0u8; 1500];
        let n = wire::emit_tcp(&mut q, &quoted_hdr, &quoted, &[], ChecksumMode::SOFTWARE)
            .expect("emit");
        let quote = &q[14..n.min(14 + 28)];
        let icmp_len = 8 + quote.len();
        let mut f = vec![0u8; 14 + 20 + icmp_len];
        f[0..6].copy_from_slice(&our_mac);
        f[6..12].copy_from_slice(&peer_mac);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len((20 + icmp_len) as u16);
            ip.set_hop_limit(64);
            ip.set_next_header(smoltcp::wire::IpProtocol::Icmp);
            ip.set_src_addr(peer_ip);
            ip.set_dst_addr(our_ip);
            ip.fill_checksum();
        }
        f[34] = icmp_type;
        f[35] = code;
        f[42..].copy_from_slice(quote);
        Icmpv4Packet::new_unchecked(&mut f[34..]).fill_checksum();
        f
    }

    /// At relative time `t_ms`, the script sends `seg`.
    pub fn send(&mut self, t_ms: u64, seg: Seg) {
        self.at(t_ms);
        let frame = self.frame(&seg);
        self.raw(&frame);
    }

    /// Hands `frame` to the stack now.
    pub fn raw(&mut self, frame: &[u8]) {
        let now = self.now();
        self.ep.handle_frame(now, frame);
        self.drain();
    }

    // ---------------------------------------------------------------------------------------
    // Output
    // ---------------------------------------------------------------------------------------

    /// Moves whatever the stack has to send into `pending`.
    fn drain(&mut self) {
        let now = self.now();
        let mut frames = Vec::new();
        while let Some(n) = self.ep.poll_transmit(now, &mut self.buf) {
            frames.push(self.buf[..n].to_vec());
            assert!(frames.len() < 10_000, "poll_transmit never ends");
        }
        for f in frames {
            let Ok(Inbound::Tcp { eth, ip, seg }) = wire::parse_frame(&f, ChecksumMode::SOFTWARE)
            else {
                panic!("the stack sent a frame that is not a valid TCP segment: {f:?}");
            };
            assert_eq!(eth.dst.0, pair_addr(0).0, "frame to the wrong MAC");
            assert_eq!(ip.dst, pair_addr(0).1, "frame to the wrong address");
            let flow = self.flows.entry(seg.dst_port).or_insert(Flow {
                isn: None,
                peer_isn: PEER_ISN,
                last_tsval: 0,
            });
            if seg.flags.syn() && flow.isn.is_none() {
                flow.isn = Some(seg.seq.0);
            }
            if let Some((v, _)) = seg.options.timestamp {
                flow.last_tsval = v;
            }
            let base = flow.isn.unwrap_or(0);
            let peer = flow.peer_isn;
            if seg.flags.syn() && !seg.flags.ack() {
                self.port = seg.src_port;
            }
            self.pending.push_back(Got {
                port: seg.dst_port,
                flags: seg.flags,
                seq: seg.seq.0.wrapping_sub(base),
                ack: if seg.flags.ack() {
                    seg.ack.0.wrapping_sub(peer)
                } else {
                    seg.ack.0
                },
                window: seg.window,
                opts: seg.options,
                sack: seg
                    .options
                    .sack_blocks
                    .iter()
                    .flatten()
                    .map(|(l, r)| (l.0.wrapping_sub(peer), r.0.wrapping_sub(peer)))
                    .collect(),
                payload: seg.payload.to_vec(),
            });
        }
    }

    /// Everything the stack sent since the last call.
    pub fn take(&mut self) -> Vec<Got> {
        self.drain();
        self.pending.drain(..).collect()
    }

    /// The stack sent exactly `exp` (in order) since the last check.
    #[track_caller]
    pub fn expect(&mut self, exp: &[Exp]) -> Vec<Got> {
        let got = self.take();
        let ok = got.len() == exp.len() && got.iter().zip(exp).all(|(g, e)| e.matches(g));
        if !ok {
            let mut msg = format!("at t={} ms the stack sent:\n", self.t());
            for g in &got {
                msg += &format!("    {g:?}\n");
            }
            msg += "expected:\n";
            for e in exp {
                msg += &format!("    {e:?}\n");
            }
            panic!("{msg}");
        }
        got
    }

    /// The stack sent nothing since the last check.
    #[track_caller]
    pub fn expect_nothing(&mut self) {
        self.expect(&[]);
    }

    // ---------------------------------------------------------------------------------------
    // Connections
    // ---------------------------------------------------------------------------------------

    pub fn listen(&mut self, backlog: usize) -> Handle {
        let l = self.ep.listen(PORT, backlog).expect("listen");
        self.listener = Some(l);
        self.port = PORT;
        l
    }

    /// Passive open at time `t`: the script's SYN (with `p`), the stack's SYN-ACK, the
    /// script's ACK; the connection is accepted. Returns the SYN-ACK.
    pub fn passive_open(&mut self, t: u64, p: PeerOpts) -> Got {
        if self.listener.is_none() {
            self.listen(16);
        }
        self.send(t, Seg::syn(0).with_opts(p));
        let synack = self.take();
        assert!(
            synack.len() == 1 && synack[0].flags == SYN | ACK && synack[0].ack == 1,
            "expected a SYN-ACK, got {synack:?}"
        );
        self.auto_ts = p.ts && synack[0].opts.timestamp.is_some();
        self.send(t, Seg::ack(1, 1).win(p.window));
        self.expect_nothing();
        let c = self
            .ep
            .accept(self.listener.expect("listener"))
            .expect("accept");
        self.conn = Some(c);
        self.events();
        assert_eq!(self.state(), State::Established);
        synack[0].clone()
    }

    /// Active open at time `t` to the script's port: the stack's SYN, the script's SYN-ACK
    /// (with `p`), the stack's ACK. Returns the SYN.
    pub fn active_open(&mut self, t: u64, p: PeerOpts) -> Got {
        let syn = self.connect(t);
        self.auto_ts = p.ts && syn.opts.timestamp.is_some();
        self.send(t, Seg::synack(0, 1).with_opts(p));
        self.expect(&[Exp::ack(1, 1)]);
        assert_eq!(self.state(), State::Established);
        self.events();
        syn
    }

    /// The stack connects to the script at time `t`; returns its SYN.
    pub fn connect(&mut self, t: u64) -> Got {
        self.at(t);
        let now = self.now();
        let c = self
            .ep
            .connect(now, SocketAddrV4::new(pair_addr(0).1, self.peer_port))
            .expect("connect");
        self.conn = Some(c);
        let syn = self.take();
        assert!(
            syn.len() == 1 && syn[0].flags == SYN && syn[0].seq == 0,
            "expected a SYN, got {syn:?}"
        );
        syn[0].clone()
    }

    pub fn c(&self) -> Handle {
        self.conn.expect("no connection")
    }

    pub fn state(&self) -> State {
        self.ep.state(self.c()).expect("state")
    }

    pub fn info(&self) -> ConnInfo {
        self.ep.conn_info(self.c()).expect("conn_info")
    }

    pub fn counters(&self) -> Counters {
        *self.ep.counters()
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }

    /// The application writes `data` (all of it must fit).
    pub fn write(&mut self, data: &[u8]) {
        let n = self.ep.send(self.c(), data).expect("send");
        assert_eq!(n, data.len(), "send buffer full");
        self.drain();
    }

    /// The application reads everything available.
    pub fn read(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = self.ep.recv(self.c(), &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        self.drain();
        out
    }

    pub fn shutdown(&mut self) {
        let now = self.now();
        self.ep.shutdown(now, self.c()).expect("shutdown");
        self.drain();
    }

    pub fn close(&mut self) {
        let now = self.now();
        self.ep.close(now, self.c()).expect("close");
        self.drain();
    }

    pub fn abort(&mut self) {
        let now = self.now();
        self.ep.abort(now, self.c()).expect("abort");
        self.drain();
    }

    pub fn set_nodelay(&mut self, on: bool) {
        self.ep.set_nodelay(self.c(), on).expect("set_nodelay");
        self.drain();
    }

    pub fn set_keepalive(&mut self, ka: Option<Keepalive>) {
        let now = self.now();
        self.ep
            .set_keepalive(now, self.c(), ka)
            .expect("set_keepalive");
        self.drain();
    }
}
