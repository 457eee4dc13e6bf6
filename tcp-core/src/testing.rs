//! Test support, exported with the `testing` feature so that embedders can property-test
//! their own use of tcp-core: a seeded simulated link on a virtual clock.
//!
//! [`SimLink`] carries frames one way with configurable delay, jitter, loss, duplication,
//! reordering and corruption. Everything random comes from one seed, so a failing run replays
//! bit for bit. Time is whatever the caller says it is: nothing here waits.
//!
//! [`Pair`] joins two [`Endpoint`]s with two such links and drives them on virtual time,
//! jumping to the next event (frame arrival or timer), like quinn-proto's test `Pair`.
//!
//! For hostile-input testing, a [`Harness`] puts one endpoint opposite a scripted [`Peer`]
//! and brings a connection into any of the eleven RFC 9293 states ([`Setup`]); [`Op`]s
//! (hostile [`SegmentSpec`]s aimed relative to the connection's numbers, mangled or raw
//! frames, time, socket calls) are then applied one by one, and after each the harness checks
//! that every frame sent parses, that no RST answers a RST, and the invariants of
//! [`check_conn`]. [`run_fuzz_input`] reads a setup and operations from arbitrary bytes (the
//! `fuzz/` target), and [`strategy`] has the proptest strategies for all of it.

use crate::config::{EndpointConfig, InterfaceConfig};
use crate::endpoint::Endpoint;
use crate::seq::SeqNumber;
use crate::state::{ConnInfo, Handle, State};
use crate::time::{Duration, Instant};
use crate::wire::{
    self, ChecksumMode, EthIpv4Header, EthernetAddress, Inbound, TcpFlags, TcpOptions, TcpSegment,
    TcpSegmentOut,
};
use alloc::collections::BinaryHeap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use core::net::SocketAddrV4;

/// SplitMix64: a tiny, well-distributed, seedable generator (not for secrets).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

/// What a [`SimLink`] does to frames. Probabilities are per frame.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// One-way delay.
    pub delay: Duration,
    /// Extra uniform delay in `0..=jitter` (reorders frames when larger than their spacing).
    pub jitter: Duration,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame is held back by an extra `reorder_delay`.
    pub reorder: f64,
    /// The extra delay of a reordered frame.
    pub reorder_delay: Duration,
    /// Probability one random bit past the Ethernet header is flipped: damage the Ethernet
    /// FCS does not catch (in a router's memory, say), which IPv4 and TCP checksums must.
    /// Frames of 14 bytes or less may be hit anywhere.
    pub corrupt: f64,
    /// Frames in flight at most; more are dropped (a router's queue). 0 means unbounded.
    pub queue_limit: usize,
}

impl Default for LinkParams {
    /// A clean link with 1 ms of delay.
    fn default() -> Self {
        LinkParams {
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            corrupt: 0.0,
            queue_limit: 0,
        }
    }
}

/// Bytes of the Ethernet header, which [`SimLink`] never corrupts.
const ETH_HEADER: usize = wire::ETHERNET_HEADER_LEN;

/// What happened on a link so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames handed to `send`.
    pub sent: u64,
    /// Frames handed out by `poll`.
    pub delivered: u64,
    /// Frames lost (at random or to the queue limit).
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames held back.
    pub reordered: u64,
    /// Frames with a flipped bit.
    pub corrupted: u64,
}

/// A one-way link on a virtual clock.
#[derive(Debug, Clone)]
pub struct SimLink {
    params: LinkParams,
    rng: SplitMix64,
    /// (delivery time, arrival order) → frame; the order keeps equal times FIFO.
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    order: u64,
    stats: LinkStats,
}

impl SimLink {
    /// A link with `params`, all randomness from `seed`.
    pub fn new(params: LinkParams, seed: u64) -> SimLink {
        SimLink {
            params,
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            stats: LinkStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Puts a frame on the link at `now`.
    pub fn send(&mut self, now: Instant, frame: &[u8]) {
        self.stats.sent += 1;
        if self.rng.chance(self.params.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.params.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.params.queue_limit != 0 && self.queue.len() >= self.params.queue_limit {
                self.stats.lost += 1;
                continue;
            }
            let mut f = frame.to_vec();
            if !f.is_empty() && self.rng.chance(self.params.corrupt) {
                let from = if f.len() > ETH_HEADER { ETH_HEADER } else { 0 };
                let bit = from as u64 * 8 + self.rng.below((f.len() - from) as u64 * 8);
                f[(bit / 8) as usize] ^= 1 << (bit % 8);
                self.stats.corrupted += 1;
            }
            let mut at = now + self.params.delay;
            if self.params.jitter > Duration::ZERO {
                at += Duration::from_micros(self.rng.below(self.params.jitter.micros() + 1));
            }
            if self.rng.chance(self.params.reorder) {
                at += self.params.reorder_delay;
                self.stats.reordered += 1;
            }
            self.order += 1;
            self.queue.push(Reverse((at, self.order, f)));
        }
    }

    /// When the next frame arrives, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next frame due at or before `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_delivery()? > now {
            return None;
        }
        let Reverse((_, _, f)) = self.queue.pop()?;
        self.stats.delivered += 1;
        Some(f)
    }
}

/// The MAC and address of side `i` (0 or 1) of a [`Pair`].
pub fn pair_addr(i: u8) -> ([u8; 6], core::net::Ipv4Addr) {
    (
        [2, 0, 0, 0, 0, 1 + i],
        core::net::Ipv4Addr::new(10, 0, 0, 1 + i),
    )
}

/// Configurations for the two sides of a [`Pair`]: 10.0.0.1 and 10.0.0.2 on one /24, each
/// with a static ARP entry for the other, different secrets.
pub fn pair_configs() -> (EndpointConfig, EndpointConfig) {
    let side = |i: u8| {
        let (mac, addr) = pair_addr(i);
        let (peer_mac, peer_addr) = pair_addr(1 - i);
        EndpointConfig {
            iface: InterfaceConfig {
                mac,
                addr,
                prefix_len: 24,
                gateway: None,
                routes: Vec::new(),
                static_arp: alloc::vec![(peer_addr, peer_mac)],
            },
            secret: [0x11 * (i + 1); 16],
            ..EndpointConfig::default()
        }
    };
    (side(0), side(1))
}

/// Where [`Pair::tap`] saw a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// `a` sent it.
    SentByA,
    /// `b` sent it.
    SentByB,
    /// The link delivered it to `a`.
    DeliveredToA,
    /// The link delivered it to `b`.
    DeliveredToB,
}

/// Two endpoints joined by two [`SimLink`]s, on a virtual clock.
#[derive(Debug)]
pub struct Pair {
    /// Side 0 (10.0.0.1).
    pub a: Endpoint,
    /// Side 1 (10.0.0.2).
    pub b: Endpoint,
    /// The link from `a` to `b`.
    pub ab: SimLink,
    /// The link from `b` to `a`.
    pub ba: SimLink,
    /// The virtual time.
    pub now: Instant,
    /// Called with every frame an endpoint sends and every frame a link delivers: for
    /// tracing a failing seed.
    pub tap: Option<fn(Instant, Tap, &[u8])>,
    buf: Vec<u8>,
}

impl Pair {
    /// Endpoints from `a`/`b`, links with `params` (each its own seed derived from `seed`);
    /// time starts at 1 s.
    ///
    /// # Panics
    /// If a configuration is invalid (a test's own mistake).
    pub fn new(a: EndpointConfig, b: EndpointConfig, params: LinkParams, seed: u64) -> Pair {
        let mut rng = SplitMix64::new(seed);
        Pair {
            a: Endpoint::new(a).expect("side a config"),
            b: Endpoint::new(b).expect("side b config"),
            ab: SimLink::new(params.clone(), rng.next_u64()),
            ba: SimLink::new(params, rng.next_u64()),
            now: Instant::from_millis(1000),
            tap: None,
            buf: alloc::vec![0; 65536],
        }
    }

    /// [`pair_configs`] on a clean 1 ms link.
    pub fn default_pair() -> Pair {
        let (a, b) = pair_configs();
        Pair::new(a, b, LinkParams::default(), 1)
    }

    /// Moves every frame both endpoints have to send onto the links, and delivers every
    /// frame due now. Returns how many frames moved.
    pub fn exchange(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let mut progress = false;
            while let Some(n) = self.a.poll_transmit(self.now, &mut self.buf) {
                if let Some(tap) = self.tap {
                    tap(self.now, Tap::SentByA, &self.buf[..n]);
                }
                self.ab.send(self.now, &self.buf[..n]);
                moved += 1;
                progress = true;
            }
            while let Some(n) = self.b.poll_transmit(self.now, &mut self.buf) {
                if let Some(tap) = self.tap {
                    tap(self.now, Tap::SentByB, &self.buf[..n]);
                }
                self.ba.send(self.now, &self.buf[..n]);
                moved += 1;
                progress = true;
            }
            while let Some(f) = self.ab.poll(self.now) {
                if let Some(tap) = self.tap {
                    tap(self.now, Tap::DeliveredToB, &f);
                }
                self.b.handle_frame(self.now, &f);
                moved += 1;
                progress = true;
            }
            while let Some(f) = self.ba.poll(self.now) {
                if let Some(tap) = self.tap {
                    tap(self.now, Tap::DeliveredToA, &f);
                }
                self.a.handle_frame(self.now, &f);
                moved += 1;
                progress = true;
            }
            if !progress {
                return moved;
            }
        }
    }

    /// The next instant anything happens (a frame arrives or a timer is due).
    pub fn next_wakeup(&self) -> Option<Instant> {
        [
            self.ab.next_delivery(),
            self.ba.next_delivery(),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Exchanges frames now, then jumps to the next wakeup (at most to `limit`) and runs the
    /// timers due there. Returns false when nothing is left to happen before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.exchange();
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        if next > limit {
            self.now = self.now.max(limit);
            return false;
        }
        self.now = self.now.max(next);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.exchange();
        true
    }

    /// Advances virtual time by `d`, processing everything on the way.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.exchange();
    }
}

// =============================================================================================
// Invariants
// =============================================================================================

/// A broken invariant or rule, with what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! violation {
    ($($arg:tt)*) => {
        Violation(alloc::format!($($arg)*))
    };
}

/// Checks one connection's snapshot:
/// - `SND.UNA ≤ SND.NXT ≤ SND.MAX` in sequence space, with less than 2³¹ octets outstanding;
/// - outstanding octets at most the send buffer plus SYN and FIN (not in CLOSED, whose
///   buffers may be dropped);
/// - send and receive buffers within their capacity, and the free receive space with them;
/// - `cwnd ≥ SMSS` once the options are negotiated (SYN-RECEIVED and the synchronized
///   states).
pub fn check_conn(info: &ConnInfo) -> Result<(), Violation> {
    let una_nxt = info.snd_nxt - info.snd_una;
    let una_max = info.snd_max - info.snd_una;
    if una_max >= 1 << 31 || una_nxt > una_max {
        return Err(violation!(
            "not SND.UNA <= SND.NXT <= SND.MAX in sequence space: {info:?}"
        ));
    }
    if info.state != State::Closed && una_max as usize > info.send_buffered + 2 {
        return Err(violation!(
            "{una_max} octets outstanding but only {} buffered: {info:?}",
            info.send_buffered
        ));
    }
    if info.send_buffered > info.send_capacity {
        return Err(violation!("send buffer over capacity: {info:?}"));
    }
    if info.recv_buffered > info.recv_capacity
        || info.recv_buffered + info.rcv_wnd as usize > info.recv_capacity
    {
        return Err(violation!("receive buffer over capacity: {info:?}"));
    }
    let negotiated = info.state.is_synchronized() || info.state == State::SynReceived;
    // SMSS as RFC 5681 counts it: the payload of a full segment, options excluded.
    let payload_smss = u32::from(info.smss).saturating_sub(if info.timestamps { 12 } else { 0 });
    if negotiated && info.state != State::Closed && info.cwnd < payload_smss.max(1) {
        return Err(violation!("cwnd below one SMSS: {info:?}"));
    }
    if info.smss == 0 {
        return Err(violation!("SMSS of zero: {info:?}"));
    }
    Ok(())
}

/// [`check_conn`] for every connection of `ep` (embryonic, orphaned and TIME-WAIT ones too).
pub fn check_endpoint(ep: &Endpoint) -> Result<(), Violation> {
    let mut n = 0;
    for info in ep.connections() {
        check_conn(&info)?;
        n += 1;
    }
    if n > ep.connection_count() {
        return Err(violation!(
            "{n} connections listed but connection_count() is {}",
            ep.connection_count()
        ));
    }
    Ok(())
}

/// Checks a frame an endpoint sent: it parses with [`wire::parse_frame`] (checksums verified
/// as `mode` says). Returns the segment's flags if it is TCP.
pub fn check_output(frame: &[u8], mode: ChecksumMode) -> Result<Option<TcpFlags>, Violation> {
    match wire::parse_frame(frame, mode) {
        Ok(Inbound::Tcp { seg, .. }) => Ok(Some(seg.flags)),
        Ok(_) => Ok(None),
        Err(e) => Err(violation!(
            "the endpoint sent a frame that does not parse ({e:?}): {frame:02x?}"
        )),
    }
}

// =============================================================================================
// A scripted peer and the harness that brings a connection into any state
// =============================================================================================

/// The port of the scripted [`Peer`].
pub const PEER_PORT: u16 = 40_000;

/// The port the [`Harness`]'s endpoint listens on.
pub const LISTEN_PORT: u16 = 80;

/// Bytes of payload per segment the scripted peer sends when it fills buffers.
const PEER_CHUNK: usize = 512;

/// Timer runs allowed within one [`Harness::advance`] before it is called a timer storm.
const MAX_TIMER_RUNS: usize = 10_000;

/// Frames allowed from one `poll_transmit` drain before it is called endless.
const MAX_DRAIN: usize = 10_000;

/// Options a scripted peer puts in its SYN (or SYN-ACK), as on the wire: hostile values such
/// as an MSS of 0 or a shift count above 14 are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOptions {
    /// MSS option.
    pub mss: Option<u16>,
    /// Window scale option.
    pub wscale: Option<u8>,
    /// SACK-permitted option.
    pub sack: bool,
    /// Timestamps option.
    pub timestamps: bool,
    /// The window field of every segment the peer writes.
    pub window: u16,
}

impl Default for PeerOptions {
    /// What Linux sends: MSS 1460, shift 7, SACK, timestamps, a full window.
    fn default() -> Self {
        PeerOptions {
            mss: Some(1460),
            wscale: Some(7),
            sack: true,
            timestamps: true,
            window: u16::MAX,
        }
    }
}

/// How a [`Harness`] sets up its endpoint and the connection under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The state the connection is brought into ([`State::Listen`]: only a listener;
    /// [`State::Closed`]: a connection reset by the peer whose handle is still held).
    pub state: State,
    /// The endpoint opens the connection (`connect`) rather than accepting it. SYN-SENT is
    /// always active; SYN-RECEIVED active is a simultaneous open.
    pub active: bool,
    /// What the peer offers.
    pub peer: PeerOptions,
    /// Bytes the endpoint sends that the peer does not acknowledge (before the state's
    /// closing steps, which may acknowledge them).
    pub unacked: usize,
    /// Bytes the peer sends in order that the application leaves unread.
    pub unread: usize,
    /// Bytes the peer sends beyond a hole (at most 1000; kept out of order).
    pub out_of_order: usize,
    /// The endpoint verifies checksums (off: damaged frames reach the TCP code).
    pub verify_checksums: bool,
    /// 4 KiB send and receive buffers instead of 64 KiB.
    pub small_buffers: bool,
    /// [`EndpointConfig::compact_time_wait`] (on by default).
    pub compact_time_wait: bool,
}

impl Setup {
    /// A passive connection in `state` with a Linux-like peer and empty buffers.
    pub fn new(state: State) -> Setup {
        Setup {
            state,
            active: state == State::SynSent,
            peer: PeerOptions::default(),
            unacked: 0,
            unread: 0,
            out_of_order: 0,
            verify_checksums: true,
            small_buffers: false,
            compact_time_wait: true,
        }
    }

    /// The endpoint configuration this setup uses: side 0 of [`pair_configs`], at most 16
    /// connections.
    pub fn config(&self) -> EndpointConfig {
        let (mut c, _) = pair_configs();
        c.max_connections = 16;
        c.syn_queue = 8;
        c.verify_rx_checksums = self.verify_checksums;
        c.compact_time_wait = self.compact_time_wait;
        if self.small_buffers {
            c.tcp.send_buffer = 4096;
            c.tcp.recv_buffer = 4096;
        }
        c
    }
}

/// The scripted peer of a [`Harness`]: side 1 of [`pair_addr`] on port [`PEER_PORT`]. It
/// writes segments by hand and follows what the endpoint sends it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Ethernet and IPv4 header of its frames (to the endpoint).
    pub hdr: EthIpv4Header,
    /// Its port.
    pub port: u16,
    /// The endpoint's port of the connection.
    pub ep_port: u16,
    /// Its initial sequence number.
    pub iss: SeqNumber,
    /// Its next sequence number.
    pub snd_nxt: SeqNumber,
    /// The next sequence number it expects from the endpoint (what it acknowledges).
    pub rcv_nxt: SeqNumber,
    /// The endpoint's ISN, once seen.
    pub ep_iss: Option<SeqNumber>,
    /// The sequence number of the endpoint's FIN, once seen.
    pub ep_fin: Option<SeqNumber>,
    /// What it offers.
    pub options: PeerOptions,
    /// Timestamps are in effect.
    pub timestamps: bool,
    /// Its timestamp clock (advances by one per segment).
    pub tsval: u32,
    /// The endpoint's latest TSval, to echo.
    pub ts_recent: u32,
}

impl Peer {
    fn new(options: PeerOptions) -> Peer {
        let (ep_mac, ep_ip) = pair_addr(0);
        let (mac, ip) = pair_addr(1);
        let iss = SeqNumber(0x7000_0000);
        Peer {
            hdr: EthIpv4Header::new(EthernetAddress(mac), EthernetAddress(ep_mac), ip, ep_ip),
            port: PEER_PORT,
            ep_port: LISTEN_PORT,
            iss,
            snd_nxt: iss,
            rcv_nxt: SeqNumber(0),
            ep_iss: None,
            ep_fin: None,
            options,
            timestamps: false,
            tsval: 1_000,
            ts_recent: 0,
        }
    }

    fn tick(&mut self) -> u32 {
        self.tsval = self.tsval.wrapping_add(1);
        self.tsval
    }

    /// A segment with `flags` at the peer's SND.NXT, acknowledging `ack` (its RCV.NXT if
    /// `None`) when `flags` has ACK, with the negotiated options; advances SND.NXT.
    pub fn segment_acking(
        &mut self,
        flags: TcpFlags,
        ack: Option<SeqNumber>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut options = TcpOptions::default();
        if flags.syn() {
            options.mss = self.options.mss;
            options.wscale = self.options.wscale;
            options.sack_permitted = self.options.sack;
            if self.options.timestamps {
                options.timestamp = Some((self.tick(), self.ts_recent));
            }
        } else if self.timestamps {
            options.timestamp = Some((self.tick(), self.ts_recent));
        }
        let seg = TcpSegmentOut {
            src_port: self.port,
            dst_port: self.ep_port,
            seq: self.snd_nxt,
            ack: if flags.ack() {
                ack.unwrap_or(self.rcv_nxt)
            } else {
                SeqNumber(0)
            },
            flags,
            window: self.options.window,
            urgent: 0,
            options,
        };
        self.snd_nxt += payload.len() + usize::from(flags.syn()) + usize::from(flags.fin());
        self.emit(&seg, payload)
    }

    /// [`segment_acking`](Self::segment_acking) everything received.
    pub fn segment(&mut self, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        self.segment_acking(flags, None, payload)
    }

    /// The frame of `seg` with `payload`, from the peer to the endpoint.
    pub fn emit(&self, seg: &TcpSegmentOut, payload: &[u8]) -> Vec<u8> {
        let mut buf = alloc::vec![0u8; wire::tcp_frame_len(&seg.options, payload.len())];
        match wire::emit_tcp(&mut buf, &self.hdr, seg, payload, ChecksumMode::SOFTWARE) {
            Ok(n) => buf.truncate(n),
            Err(_) => buf.clear(),
        }
        buf
    }

    /// Follows a segment the endpoint sent (if it is for this peer).
    pub fn observe(&mut self, seg: &TcpSegment<'_>) {
        if seg.dst_port != self.port || seg.flags.rst() {
            return;
        }
        if seg.flags.syn() && self.ep_iss.is_none() {
            self.ep_iss = Some(seg.seq);
            self.ep_port = seg.src_port;
            self.rcv_nxt = seg.seq;
            self.timestamps = self.options.timestamps && seg.options.timestamp.is_some();
        }
        if let Some((tsval, _)) = seg.options.timestamp {
            self.ts_recent = tsval;
        }
        let end = seg.seq + seg.seq_len();
        if seg.seq <= self.rcv_nxt && end > self.rcv_nxt {
            self.rcv_nxt = end;
        }
        if seg.flags.fin() {
            self.ep_fin = Some(seg.seq + seg.payload.len());
        }
    }
}

/// One endpoint under test (side 0 of [`pair_configs`]) and a scripted [`Peer`], on a
/// virtual clock. [`Harness::new`] brings a connection into any of the eleven states; then
/// [`Harness::apply`] feeds it [`Op`]s, checking after every one that each frame sent
/// parses, that no RST answers a segment carrying RST, and [`check_endpoint`]'s invariants.
/// [`Harness::finish`] releases everything and checks that the endpoint falls quiet.
#[derive(Debug)]
pub struct Harness {
    /// The endpoint under test.
    pub ep: Endpoint,
    /// Its peer.
    pub peer: Peer,
    /// Virtual time.
    pub now: Instant,
    /// The application's handle of the connection.
    pub conn: Option<Handle>,
    /// The application's listener.
    pub listener: Option<Handle>,
    /// Connections the application accepted besides `conn`.
    pub accepted: Vec<Handle>,
    /// How it was set up.
    pub setup: Setup,
    /// Frames the endpoint sent in answer to the last input or operation.
    pub last_output: Vec<Vec<u8>>,
    /// Frames the endpoint has sent in all.
    pub frames_sent: u64,
    rx_mode: ChecksumMode,
    tx_mode: ChecksumMode,
    buf: Vec<u8>,
}

impl Harness {
    /// An endpoint with the connection in `setup.state`. A violation on the way is an error;
    /// whether the state was reached is [`reached`](Self::reached) (a setup with a closed
    /// window, say, may not get there).
    pub fn new(setup: Setup) -> Result<Harness, Violation> {
        let config = setup.config();
        let rx_mode = ChecksumMode {
            verify_rx: config.verify_rx_checksums,
            compute_tx: true,
            accel: None,
        };
        let tx_mode = ChecksumMode {
            verify_rx: config.compute_tx_checksums,
            compute_tx: true,
            accel: None,
        };
        let ep = Endpoint::new(config).map_err(|e| violation!("config: {e}"))?;
        let mut h = Harness {
            ep,
            peer: Peer::new(setup.peer.clone()),
            now: Instant::from_millis(1_000),
            conn: None,
            listener: None,
            accepted: Vec::new(),
            setup,
            last_output: Vec::new(),
            frames_sent: 0,
            rx_mode,
            tx_mode,
            buf: alloc::vec![0; 65_536],
        };
        h.bring()?;
        Ok(h)
    }

    /// The state of the connection under test, if it has one (`Listen` for a lone listener).
    pub fn state(&self) -> Option<State> {
        if let Some(h) = self.conn {
            if let Ok(s) = self.ep.state(h) {
                return Some(s);
            }
        }
        if let Some(info) = self.ep.connections().next() {
            return Some(info.state);
        }
        self.listener
            .and_then(|l| self.ep.state(l).ok())
            .filter(|_| self.setup.state == State::Listen)
    }

    /// Whether the connection is in the state the setup asked for.
    pub fn reached(&self) -> bool {
        self.state() == Some(self.setup.state)
    }

    /// The snapshot the hostile segments aim at: the application's connection, else the
    /// first live connection of the table.
    pub fn target(&self) -> Option<ConnInfo> {
        if let Some(info) = self.conn.and_then(|h| self.ep.conn_info(h).ok()) {
            return Some(info);
        }
        let mut first = None;
        for info in self.ep.connections() {
            if info.state != State::Closed {
                return Some(info);
            }
            first.get_or_insert(info);
        }
        first
    }

    fn peer_send(&mut self, flags: TcpFlags, payload: &[u8]) -> Result<(), Violation> {
        let frame = self.peer.segment(flags, payload);
        self.input(&frame)
    }

    fn app_send(&mut self, n: usize) -> Result<(), Violation> {
        if let Some(h) = self.conn {
            let data: Vec<u8> = (0..n).map(|i| (i * 13 + 5) as u8).collect();
            let _ = self.ep.send(h, &data);
        }
        self.settle()
    }

    fn shutdown(&mut self) -> Result<(), Violation> {
        if let Some(h) = self.conn {
            let _ = self.ep.shutdown(self.now, h);
        }
        self.settle()
    }

    /// Steps towards `setup.state`; stops early (without error) if the endpoint goes
    /// elsewhere.
    fn bring(&mut self) -> Result<(), Violation> {
        let target = self.setup.state;
        let peer_addr = SocketAddrV4::new(pair_addr(1).1, PEER_PORT);
        if target == State::Listen {
            self.listener = self.ep.listen(LISTEN_PORT, 4).ok();
            return Ok(());
        }
        let active = self.setup.active || target == State::SynSent;
        if active {
            self.conn = self.ep.connect(self.now, peer_addr).ok();
            if self.setup.unacked > 0 {
                // Queued before the handshake completes.
                self.app_send(self.setup.unacked)?;
            }
            self.settle()?;
            if target == State::SynSent {
                return Ok(());
            }
            if target == State::SynReceived {
                // Simultaneous open: the peer's own SYN crosses ours.
                return self.peer_send(TcpFlags::SYN, &[]);
            }
            self.peer_send(TcpFlags::SYN | TcpFlags::ACK, &[])?;
        } else {
            self.listener = self.ep.listen(LISTEN_PORT, 4).ok();
            self.peer_send(TcpFlags::SYN, &[])?;
            if target == State::SynReceived {
                return Ok(());
            }
            self.peer_send(TcpFlags::ACK, &[])?;
            if let Some(l) = self.listener {
                self.conn = self.ep.accept(l).ok();
            }
        }
        if self.state() != Some(State::Established) {
            return Ok(());
        }
        self.fill()?;
        match target {
            State::Closed => {
                let frame = self.peer.segment(TcpFlags::RST | TcpFlags::ACK, &[]);
                self.input(&frame)?;
            }
            State::CloseWait => self.peer_send(TcpFlags::FIN | TcpFlags::ACK, &[])?,
            State::LastAck => {
                self.peer_send(TcpFlags::FIN | TcpFlags::ACK, &[])?;
                self.shutdown()?;
            }
            State::FinWait1 => self.shutdown()?,
            State::Closing => {
                self.shutdown()?;
                // The peer's FIN does not acknowledge ours.
                let ack = self.peer.ep_fin.unwrap_or(self.peer.rcv_nxt);
                let frame = self
                    .peer
                    .segment_acking(TcpFlags::FIN | TcpFlags::ACK, Some(ack), &[]);
                self.input(&frame)?;
            }
            State::FinWait2 | State::TimeWait => {
                self.shutdown()?;
                self.ack_until(State::FinWait2)?;
                if target == State::TimeWait {
                    self.peer_send(TcpFlags::FIN | TcpFlags::ACK, &[])?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The peer acknowledges everything, repeatedly (the endpoint may send more each time),
    /// until the connection is in `state` (at most 64 rounds).
    fn ack_until(&mut self, state: State) -> Result<(), Violation> {
        for _ in 0..64 {
            if self.state() == Some(state) {
                break;
            }
            self.peer_send(TcpFlags::ACK, &[])?;
        }
        Ok(())
    }

    /// Fills the buffers as the setup says: unread in-order data, out-of-order data, and
    /// unacknowledged data from the endpoint.
    fn fill(&mut self) -> Result<(), Violation> {
        let mut left = self.setup.unread;
        while left > 0 {
            // Within the endpoint's window, leaving room for a FIN (RFC 9293 accepts no
            // FIN in a zero window): the peer's numbers stay in step with the endpoint's.
            let room = self
                .target()
                .map_or(0, |i| (i.rcv_wnd as usize).saturating_sub(1));
            let n = left.min(PEER_CHUNK).min(room);
            if n == 0 {
                break;
            }
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            self.peer_send(TcpFlags::ACK | TcpFlags::PSH, &data)?;
            left -= n;
        }
        if self.setup.out_of_order > 0 {
            let n = self.setup.out_of_order.min(1000);
            let seg = TcpSegmentOut {
                src_port: self.peer.port,
                dst_port: self.peer.ep_port,
                seq: self.peer.snd_nxt + 1000u32,
                ack: self.peer.rcv_nxt,
                flags: TcpFlags::ACK,
                window: self.peer.options.window,
                urgent: 0,
                options: TcpOptions {
                    timestamp: if self.peer.timestamps {
                        Some((self.peer.tick(), self.peer.ts_recent))
                    } else {
                        None
                    },
                    ..TcpOptions::default()
                },
            };
            let frame = self.peer.emit(&seg, &alloc::vec![0xee; n]);
            self.input(&frame)?;
        }
        if self.setup.unacked > 0 && !self.setup.active {
            self.app_send(self.setup.unacked)?;
        }
        Ok(())
    }

    /// Hands `frame` to the endpoint, drains what it sends and checks everything.
    pub fn input(&mut self, frame: &[u8]) -> Result<(), Violation> {
        let rst_in = matches!(
            wire::parse_frame(frame, self.rx_mode),
            Ok(Inbound::Tcp { seg, .. }) if seg.flags.rst()
        );
        self.ep.handle_frame(self.now, frame);
        self.drain(rst_in)?;
        self.check()
    }

    /// Drains `poll_transmit` and `poll_event`, checks each frame, and lets the peer follow.
    fn drain(&mut self, after_rst: bool) -> Result<(), Violation> {
        self.last_output.clear();
        let mut n = 0;
        while let Some(len) = self.ep.poll_transmit(self.now, &mut self.buf) {
            n += 1;
            if n > MAX_DRAIN {
                return Err(violation!(
                    "poll_transmit gave more than {MAX_DRAIN} frames"
                ));
            }
            let frame = &self.buf[..len];
            let flags = check_output(frame, self.tx_mode)?;
            if let Ok(Inbound::Tcp { eth, ip, seg }) = wire::parse_frame(frame, self.tx_mode) {
                let (mac, addr) = pair_addr(0);
                if eth.src.0 != mac || ip.src != addr {
                    return Err(violation!("a segment from a foreign address: {ip:?}"));
                }
                self.peer.observe(&seg);
            }
            if after_rst && flags.is_some_and(|f| f.rst()) {
                return Err(violation!(
                    "a RST was sent in answer to a segment carrying RST (state {:?})",
                    self.state()
                ));
            }
            self.frames_sent += 1;
            self.last_output.push(frame.to_vec());
        }
        for _ in 0..MAX_DRAIN {
            if self.ep.poll_event().is_none() {
                return Ok(());
            }
        }
        Err(violation!("poll_event gave more than {MAX_DRAIN} events"))
    }

    fn settle(&mut self) -> Result<(), Violation> {
        self.drain(false)?;
        self.check()
    }

    /// [`check_endpoint`] on the endpoint.
    pub fn check(&self) -> Result<(), Violation> {
        check_endpoint(&self.ep)
    }

    /// Lets `d` pass, running every timer due on the way (a timer storm is a violation).
    pub fn advance(&mut self, d: Duration) -> Result<(), Violation> {
        let until = self.now + d;
        let mut runs = 0;
        while let Some(t) = self.ep.poll_timeout() {
            if t > until {
                break;
            }
            runs += 1;
            if runs > MAX_TIMER_RUNS {
                return Err(violation!(
                    "more than {MAX_TIMER_RUNS} timer runs within {d:?} (at {:?})",
                    self.now
                ));
            }
            self.now = self.now.max(t);
            self.ep.handle_timeout(self.now);
            self.settle()?;
        }
        self.now = until;
        self.ep.handle_timeout(self.now);
        self.settle()
    }

    /// The frame `spec` describes, aimed at the connection's current numbers.
    pub fn frame(&mut self, spec: &SegmentSpec) -> Vec<u8> {
        let info = self.target();
        let at = |n: &Num, h: &Harness| h.resolve(n, info.as_ref());
        let mut options = TcpOptions {
            mss: spec.mss,
            wscale: spec.wscale,
            sack_permitted: spec.sack_permitted,
            ..TcpOptions::default()
        };
        for (slot, b) in options.sack_blocks.iter_mut().zip(spec.sack.iter()) {
            let left = at(&b.left, self);
            *slot = Some((left, SeqNumber(left.0.wrapping_add(b.len as u32))));
        }
        if let Some(ts) = &spec.timestamp {
            let base = if ts.from_zero { 0 } else { self.peer.tick() };
            options.timestamp = Some((
                base.wrapping_add(ts.val_delta as u32),
                ts.ecr.unwrap_or(self.peer.ts_recent),
            ));
        }
        let (src_port, dst_port) = match spec.port {
            PortSpec::Conn => (self.peer.port, self.peer.ep_port),
            PortSpec::PeerPort(p) => (p, self.peer.ep_port),
            PortSpec::LocalPort(p) => (self.peer.port, p),
        };
        let seg = TcpSegmentOut {
            src_port,
            dst_port,
            seq: at(&spec.seq, self),
            ack: at(&spec.ack, self),
            flags: spec.flags,
            window: spec.window,
            urgent: spec.urgent,
            options,
        };
        let payload: Vec<u8> = (0..usize::from(spec.payload))
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        self.peer.emit(&seg, &payload)
    }

    fn resolve(&self, n: &Num, info: Option<&ConnInfo>) -> SeqNumber {
        let p = &self.peer;
        let base = match n.anchor {
            Anchor::Zero => SeqNumber(0),
            Anchor::RcvNxt => info.map_or(p.snd_nxt, |i| i.rcv_nxt),
            Anchor::RcvWndEnd => info.map_or(p.snd_nxt + 65_535u32, |i| i.rcv_nxt + i.rcv_wnd),
            Anchor::SndUna => info.map_or(p.rcv_nxt, |i| i.snd_una),
            Anchor::SndNxt => info.map_or(p.rcv_nxt, |i| i.snd_nxt),
            Anchor::SndMax => info.map_or(p.rcv_nxt, |i| i.snd_max),
            Anchor::PeerNext => p.snd_nxt,
            Anchor::PeerIss => p.iss,
            Anchor::EpIss => p.ep_iss.unwrap_or(SeqNumber(0)),
        };
        SeqNumber(base.0.wrapping_add(n.delta as u32))
    }

    /// Applies one operation and checks everything.
    pub fn apply(&mut self, op: &Op) -> Result<(), Violation> {
        match op {
            Op::Segment(spec) => {
                let frame = self.frame(spec);
                self.input(&frame)
            }
            Op::Mangled {
                spec,
                edits,
                truncate,
            } => {
                let mut frame = self.frame(spec);
                if !frame.is_empty() {
                    for &(at, byte) in edits {
                        let i = usize::from(at) % frame.len();
                        frame[i] = byte;
                    }
                }
                frame.truncate(frame.len().saturating_sub(usize::from(*truncate)));
                self.input(&frame)
            }
            Op::Raw(bytes) => self.input(bytes),
            Op::Advance(d) => self.advance(*d),
            Op::PeerAck => self.peer_send(TcpFlags::ACK, &[]),
            Op::PeerData(n) => {
                let data: Vec<u8> = (0..usize::from(*n)).map(|i| (i * 3) as u8).collect();
                self.peer_send(TcpFlags::ACK | TcpFlags::PSH, &data)
            }
            Op::PeerFin => self.peer_send(TcpFlags::FIN | TcpFlags::ACK, &[]),
            Op::Send(n) => self.app_send(usize::from(*n)),
            Op::Recv(n) => {
                if let Some(h) = self.conn {
                    let n = usize::from(*n).min(self.buf.len());
                    let _ = self.ep.recv(h, &mut self.buf[..n]);
                }
                self.settle()
            }
            Op::Shutdown => self.shutdown(),
            Op::Close => {
                if let Some(h) = self.conn {
                    let _ = self.ep.close(self.now, h);
                }
                self.settle()
            }
            Op::Abort => {
                if let Some(h) = self.conn {
                    let _ = self.ep.abort(self.now, h);
                }
                self.settle()
            }
            Op::Accept => {
                if let Some(l) = self.listener {
                    if let Ok(h) = self.ep.accept(l) {
                        match self.conn {
                            None => self.conn = Some(h),
                            Some(_) => self.accepted.push(h),
                        }
                    }
                }
                self.settle()
            }
        }
    }

    /// Releases the connections (`close`) and the listener, then lets time run with a silent
    /// peer: the endpoint must end with no connection and no timer armed, within four
    /// hours of virtual time and 10 000 timer runs (nothing fires forever).
    pub fn finish(&mut self) -> Result<(), Violation> {
        for h in self.conn.iter().chain(self.accepted.iter()) {
            let _ = self.ep.close(self.now, *h);
        }
        if let Some(l) = self.listener {
            let _ = self.ep.close(self.now, l);
        }
        self.settle()?;
        let deadline = self.now + Duration::from_secs(4 * 3600);
        for _ in 0..MAX_TIMER_RUNS {
            let Some(t) = self.ep.poll_timeout() else {
                break;
            };
            if t > deadline {
                return Err(violation!(
                    "a timer is still armed after 4 h of silence: {:?}",
                    self.ep.connections().collect::<Vec<_>>()
                ));
            }
            self.now = self.now.max(t);
            self.ep.handle_timeout(self.now);
            self.settle()?;
        }
        if let Some(t) = self.ep.poll_timeout() {
            return Err(violation!(
                "timers keep firing: one is due at {t:?} after {MAX_TIMER_RUNS} runs"
            ));
        }
        if self.ep.connection_count() != 0 {
            return Err(violation!(
                "{} sockets left after everything was released and timers ran out: {:?}",
                self.ep.connection_count(),
                self.ep.connections().collect::<Vec<_>>()
            ));
        }
        Ok(())
    }
}

// =============================================================================================
// Hostile segments and operations
// =============================================================================================

/// What a sequence or acknowledgment number of a hostile segment is relative to; resolved
/// against the connection's numbers when the segment is built ([`Harness::frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Zero: the delta is the absolute number.
    Zero,
    /// The endpoint's RCV.NXT (left edge of its receive window).
    RcvNxt,
    /// RCV.NXT plus the free receive space (right edge of the window).
    RcvWndEnd,
    /// The endpoint's SND.UNA.
    SndUna,
    /// The endpoint's next sequence number to send.
    SndNxt,
    /// The endpoint's highest sequence number sent (RFC 9293's SND.NXT).
    SndMax,
    /// The peer's own next sequence number.
    PeerNext,
    /// The peer's ISN.
    PeerIss,
    /// The endpoint's ISN.
    EpIss,
}

/// A sequence number: `anchor + delta`, wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Num {
    /// What it is relative to.
    pub anchor: Anchor,
    /// The offset.
    pub delta: i32,
}

impl Num {
    /// Exactly at `anchor`.
    pub const fn at(anchor: Anchor) -> Num {
        Num { anchor, delta: 0 }
    }
}

/// A timestamps option: TSval relative to the peer's clock (old when negative, new when
/// positive) or absolute, and TSecr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsSpec {
    /// Added to the peer's clock (or to 0 with `from_zero`).
    pub val_delta: i32,
    /// TSval is `val_delta` itself.
    pub from_zero: bool,
    /// TSecr; `None` echoes the endpoint's latest TSval.
    pub ecr: Option<u32>,
}

/// A SACK block: `left` and `left + len` (a negative `len` gives a reversed block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackSpec {
    /// Left edge.
    pub left: Num,
    /// Length.
    pub len: i32,
}

/// Which ports a hostile segment carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    /// The connection's.
    Conn,
    /// Another source port (another connection, or a new one for a listener).
    PeerPort(u16),
    /// Another destination port on the endpoint.
    LocalPort(u16),
}

/// A well-formed TCP segment from the peer with hostile field choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    /// Any combination, ECE/CWR/URG included.
    pub flags: TcpFlags,
    /// SEG.SEQ.
    pub seq: Num,
    /// SEG.ACK (sent whatever the ACK flag says).
    pub ack: Num,
    /// Window field.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// MSS option (0 allowed).
    pub mss: Option<u16>,
    /// Window scale option (above 14 allowed).
    pub wscale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// SACK blocks (the first four are sent, as many as fit).
    pub sack: Vec<SackSpec>,
    /// Timestamps option.
    pub timestamp: Option<TsSpec>,
    /// Payload length.
    pub payload: u16,
    /// Ports.
    pub port: PortSpec,
}

impl SegmentSpec {
    /// A plain segment with `flags` exactly where the connection expects it: SEQ = RCV.NXT,
    /// ACK = SND.MAX, a full window, timestamps echoing the endpoint, no payload.
    pub fn expected(flags: TcpFlags) -> SegmentSpec {
        SegmentSpec {
            flags,
            seq: Num::at(Anchor::RcvNxt),
            ack: Num::at(Anchor::SndMax),
            window: u16::MAX,
            urgent: 0,
            mss: None,
            wscale: None,
            sack_permitted: false,
            sack: Vec::new(),
            timestamp: Some(TsSpec {
                val_delta: 0,
                from_zero: false,
                ecr: None,
            }),
            payload: 0,
            port: PortSpec::Conn,
        }
    }
}

/// One input for a [`Harness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A hostile segment.
    Segment(SegmentSpec),
    /// A hostile segment with bytes overwritten (at positions modulo the frame length)
    /// and the last `truncate` bytes cut, checksums left as they are.
    Mangled {
        /// The segment.
        spec: SegmentSpec,
        /// (position, new byte).
        edits: Vec<(u16, u8)>,
        /// Bytes cut from the end.
        truncate: u16,
    },
    /// Arbitrary bytes as a frame.
    Raw(Vec<u8>),
    /// Time passes; due timers run.
    Advance(Duration),
    /// The peer acknowledges what it has seen.
    PeerAck,
    /// The peer sends this many bytes in order.
    PeerData(u16),
    /// The peer sends its FIN.
    PeerFin,
    /// The application sends this many bytes.
    Send(u16),
    /// The application reads up to this many bytes.
    Recv(u16),
    /// The application shuts its write side.
    Shutdown,
    /// The application closes the connection.
    Close,
    /// The application aborts the connection.
    Abort,
    /// The application accepts from its listener.
    Accept,
}

// =============================================================================================
// Fuzz input
// =============================================================================================

/// Reads fuzz input; zeros once it runs out.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a.to_vec()
    }

    fn setup(&mut self) -> Setup {
        let state = State::ALL[usize::from(self.u8()) % State::ALL.len()];
        let flags = self.u8();
        let bit = |i: u8| flags & (1 << i) != 0;
        let peer = PeerOptions {
            mss: bit(1).then(|| self.u16()),
            wscale: bit(2).then(|| self.u8()),
            sack: bit(3),
            timestamps: bit(4),
            window: if bit(5) {
                u16::MAX
            } else {
                self.u16().max(1024)
            },
        };
        Setup {
            state,
            active: bit(0),
            peer,
            unacked: if bit(6) { usize::from(self.u16()) } else { 0 },
            unread: if bit(7) { usize::from(self.u16()) } else { 0 },
            out_of_order: usize::from(self.u8()) * 4,
            verify_checksums: !self.bool(),
            small_buffers: self.bool(),
            compact_time_wait: true,
        }
    }

    fn num(&mut self) -> Num {
        const ANCHORS: [Anchor; 9] = [
            Anchor::Zero,
            Anchor::RcvNxt,
            Anchor::RcvWndEnd,
            Anchor::SndUna,
            Anchor::SndNxt,
            Anchor::SndMax,
            Anchor::PeerNext,
            Anchor::PeerIss,
            Anchor::EpIss,
        ];
        let a = self.u8();
        let anchor = ANCHORS[usize::from(a & 0x0f) % ANCHORS.len()];
        let delta = match a >> 4 {
            0..=7 => i32::from(self.u8() as i8),
            8..=11 => i32::from(self.u16() as i16),
            _ => self.u32() as i32,
        };
        Num { anchor, delta }
    }

    fn segment(&mut self) -> SegmentSpec {
        let flags = TcpFlags::from_bits(self.u8());
        let seq = self.num();
        let ack = self.num();
        let o = self.u8();
        let bit = |i: u8| o & (1 << i) != 0;
        let window = match self.u8() % 4 {
            0 => 0,
            1 => u16::MAX,
            _ => self.u16(),
        };
        let urgent = if bit(0) { self.u16() } else { 0 };
        let mss = bit(1).then(|| self.u16());
        let wscale = bit(2).then(|| self.u8());
        let nsack = if bit(4) {
            usize::from(self.u8() % 5)
        } else {
            0
        };
        let sack = (0..nsack)
            .map(|_| SackSpec {
                left: self.num(),
                len: i32::from(self.u16() as i16),
            })
            .collect();
        let timestamp = bit(5).then(|| TsSpec {
            val_delta: i32::from(self.u16() as i16),
            from_zero: self.u8() == 0xff,
            ecr: self.bool().then(|| self.u32()),
        });
        let payload = if bit(6) { self.u16() % 3000 } else { 0 };
        let port = if bit(7) {
            match self.u8() % 2 {
                0 => PortSpec::PeerPort(self.u16()),
                _ => PortSpec::LocalPort(self.u16()),
            }
        } else {
            PortSpec::Conn
        };
        SegmentSpec {
            flags,
            seq,
            ack,
            window,
            urgent,
            mss,
            wscale,
            sack_permitted: bit(3),
            sack,
            timestamp,
            payload,
            port,
        }
    }

    fn op(&mut self) -> Op {
        match self.u8() % 16 {
            0..=4 => Op::Segment(self.segment()),
            5 => {
                let spec = self.segment();
                let n = usize::from(self.u8() % 8);
                let edits = (0..n).map(|_| (self.u16(), self.u8())).collect();
                Op::Mangled {
                    spec,
                    edits,
                    truncate: u16::from(self.u8() % 16),
                }
            }
            6 => {
                let n = usize::from(self.u16() % 1600);
                Op::Raw(self.take(n))
            }
            7 => Op::Advance(Duration::from_micros(u64::from(self.u32()) * 16)),
            8 => Op::PeerAck,
            9 => Op::PeerData(self.u16() % 3000),
            10 => Op::PeerFin,
            11 => Op::Send(self.u16()),
            12 => Op::Recv(self.u16()),
            13 => match self.u8() % 3 {
                0 => Op::Shutdown,
                1 => Op::Close,
                _ => Op::Abort,
            },
            14 => Op::Accept,
            _ => Op::Advance(Duration::from_millis(u64::from(self.u16()))),
        }
    }
}

/// Ops read from one fuzz input at most.
pub const MAX_FUZZ_OPS: usize = 256;

/// Interprets `data` as a [`Setup`] and then up to [`MAX_FUZZ_OPS`] [`Op`]s, runs them in a
/// [`Harness`] and finishes it: the fuzz target's body, also usable from property tests.
pub fn run_fuzz_input(data: &[u8]) -> Result<(), Violation> {
    let mut r = Bytes { data };
    let setup = r.setup();
    let mut h = Harness::new(setup)?;
    for _ in 0..MAX_FUZZ_OPS {
        if r.data.is_empty() {
            break;
        }
        let op = r.op();
        h.apply(&op)?;
    }
    h.finish()
}

// =============================================================================================
// Proptest strategies
// =============================================================================================

/// Proptest strategies for [`Setup`]s, hostile segments, [`Op`]s, raw frames and
/// [`LinkParams`].
pub mod strategy {
    use super::*;
    use alloc::vec;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Any of the eleven states.
    pub fn state() -> impl Strategy<Value = State> {
        proptest::sample::select(State::ALL.to_vec())
    }

    /// Peer options, hostile values included (MSS 0, shifts above 14), windows of at least
    /// 1 KiB so that every state can be reached.
    pub fn peer_options() -> impl Strategy<Value = PeerOptions> {
        (
            prop_oneof![
                4 => Just(Some(1460u16)),
                1 => Just(None),
                1 => Just(Some(0u16)),
                1 => any::<u16>().prop_map(Some),
            ],
            prop_oneof![
                3 => Just(Some(7u8)),
                1 => Just(None),
                1 => (0u8..=14).prop_map(Some),
                1 => (15u8..=255).prop_map(Some),
            ],
            any::<bool>(),
            any::<bool>(),
            prop_oneof![3 => Just(u16::MAX), 1 => 1024..=u16::MAX],
        )
            .prop_map(|(mss, wscale, sack, timestamps, window)| PeerOptions {
                mss,
                wscale,
                sack,
                timestamps,
                window,
            })
    }

    /// A setup for `state`.
    pub fn setup_in(state: State) -> impl Strategy<Value = Setup> {
        (
            any::<bool>(),
            peer_options(),
            prop_oneof![2 => Just(0usize), 1 => 1..20_000usize],
            prop_oneof![2 => Just(0usize), 1 => 1..5_000usize],
            prop_oneof![2 => Just(0usize), 1 => 1..=1000usize],
            prop_oneof![3 => Just(true), 1 => Just(false)],
            any::<bool>(),
            prop_oneof![3 => Just(true), 1 => Just(false)],
        )
            .prop_map(
                move |(active, peer, unacked, unread, out_of_order, verify, small, compact)| {
                    Setup {
                        state,
                        active,
                        peer,
                        unacked,
                        unread,
                        out_of_order,
                        verify_checksums: verify,
                        small_buffers: small,
                        compact_time_wait: compact,
                    }
                },
            )
    }

    /// A setup for any state.
    pub fn setup() -> impl Strategy<Value = Setup> {
        state().prop_flat_map(setup_in)
    }

    /// Any flag combination (half of them carry RST, half SYN).
    pub fn flags() -> impl Strategy<Value = TcpFlags> {
        any::<u8>().prop_map(TcpFlags::from_bits)
    }

    /// Flags of a plausible segment: mostly ACK with PSH or FIN, sometimes SYN or RST.
    pub fn plausible_flags() -> impl Strategy<Value = TcpFlags> {
        let a = TcpFlags::ACK;
        proptest::sample::select(alloc::vec![
            a,
            a,
            a,
            a | TcpFlags::PSH,
            a | TcpFlags::FIN,
            a | TcpFlags::FIN | TcpFlags::PSH,
            a | TcpFlags::SYN,
            TcpFlags::SYN,
            TcpFlags::RST,
            a | TcpFlags::RST,
            a | TcpFlags::URG,
            TcpFlags::FIN,
            TcpFlags::EMPTY,
        ])
    }

    /// A segment close to what the connection expects: SEQ at or just past RCV.NXT, ACK
    /// between SND.UNA and SND.MAX (or just outside), the peer's usual window, current
    /// timestamps, SACK blocks in the range in flight. Sequences of these move a connection
    /// through its states, duplicate ACKs and loss recovery included.
    pub fn plausible_segment() -> impl Strategy<Value = SegmentSpec> {
        let near = |anchors: Vec<Anchor>| {
            (
                proptest::sample::select(anchors),
                prop_oneof![6 => Just(0i32), 3 => 1..3000i32, 1 => -2..=2i32],
            )
                .prop_map(|(anchor, delta)| Num { anchor, delta })
        };
        (
            plausible_flags(),
            near(alloc::vec![
                Anchor::RcvNxt,
                Anchor::RcvNxt,
                Anchor::PeerNext
            ]),
            near(alloc::vec![
                Anchor::SndUna,
                Anchor::SndUna,
                Anchor::SndMax,
                Anchor::SndNxt
            ]),
            prop_oneof![6 => Just(u16::MAX), 1 => Just(0u16), 1 => any::<u16>()],
            vec(
                (near(alloc::vec![Anchor::SndUna]), 1..3000i32)
                    .prop_map(|(left, len)| SackSpec { left, len }),
                0..=3,
            ),
            prop_oneof![9 => Just(0i32), 1 => -2..=2i32],
            prop_oneof![3 => Just(0u16), 1 => 1..=1460u16],
        )
            .prop_map(|(flags, seq, ack, window, sack, ts, payload)| SegmentSpec {
                flags,
                seq,
                ack,
                window,
                sack,
                timestamp: Some(TsSpec {
                    val_delta: ts,
                    from_zero: false,
                    ecr: None,
                }),
                payload,
                ..SegmentSpec::expected(flags)
            })
    }

    /// Any anchor.
    pub fn anchor() -> impl Strategy<Value = Anchor> {
        proptest::sample::select(alloc::vec![
            Anchor::Zero,
            Anchor::RcvNxt,
            Anchor::RcvWndEnd,
            Anchor::SndUna,
            Anchor::SndNxt,
            Anchor::SndMax,
            Anchor::PeerNext,
            Anchor::PeerIss,
            Anchor::EpIss,
        ])
    }

    /// Offsets: at the edges (±3), within a window or two, at ±2³¹, or anywhere.
    pub fn delta() -> impl Strategy<Value = i32> {
        prop_oneof![
            4 => -3..=3i32,
            2 => -140_000..=140_000i32,
            1 => prop_oneof![
                Just(i32::MIN),
                Just(i32::MAX),
                Just(i32::MIN + 1),
                (1 << 30)..=i32::MAX,
            ],
            1 => any::<i32>(),
        ]
    }

    /// A sequence number near an anchor.
    pub fn num() -> impl Strategy<Value = Num> {
        (anchor(), delta()).prop_map(|(anchor, delta)| Num { anchor, delta })
    }

    /// A window field: 0, 1, small, full or anything.
    pub fn window() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(0u16),
            Just(1u16),
            2..=2048u16,
            Just(u16::MAX),
            any::<u16>()
        ]
    }

    /// A timestamps option: absent, current, old or new, or absolute; TSecr echoed or not.
    pub fn timestamp() -> impl Strategy<Value = Option<TsSpec>> {
        prop_oneof![
            1 => Just(None),
            4 => (
                prop_oneof![3 => -2..=2i32, 1 => any::<i32>()],
                prop_oneof![9 => Just(false), 1 => Just(true)],
                prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some)],
            )
                .prop_map(|(val_delta, from_zero, ecr)| Some(TsSpec {
                    val_delta,
                    from_zero,
                    ecr
                })),
        ]
    }

    /// SACK blocks, usually around SND.UNA..SND.MAX, often out of range or reversed.
    pub fn sack_blocks() -> impl Strategy<Value = Vec<SackSpec>> {
        vec(
            (
                num(),
                prop_oneof![3 => 1..3000i32, 1 => -3000..=0i32, 1 => any::<i32>()],
            )
                .prop_map(|(left, len)| SackSpec { left, len }),
            0..=4,
        )
    }

    /// A well-formed segment from the peer with hostile field choices.
    pub fn segment() -> impl Strategy<Value = SegmentSpec> {
        (
            (
                flags(),
                num(),
                num(),
                window(),
                prop_oneof![9 => Just(0u16), 1 => any::<u16>()],
            ),
            (
                prop_oneof![
                    5 => Just(None),
                    1 => Just(Some(0u16)),
                    1 => any::<u16>().prop_map(Some)
                ],
                prop_oneof![5 => Just(None), 1 => any::<u8>().prop_map(Some)],
                any::<bool>(),
                prop_oneof![2 => Just(Vec::new()), 1 => sack_blocks()],
                timestamp(),
            ),
            prop_oneof![4 => Just(0u16), 2 => 1..=64u16, 2 => 1..=1460u16, 1 => 1400..=3000u16],
            prop_oneof![
                9 => Just(PortSpec::Conn),
                1 => any::<u16>().prop_map(PortSpec::PeerPort),
                1 => any::<u16>().prop_map(PortSpec::LocalPort),
            ],
        )
            .prop_map(
                |(
                    (flags, seq, ack, window, urgent),
                    (mss, wscale, sack_permitted, sack, timestamp),
                    payload,
                    port,
                )| SegmentSpec {
                    flags,
                    seq,
                    ack,
                    window,
                    urgent,
                    mss,
                    wscale,
                    sack_permitted,
                    sack,
                    timestamp,
                    payload,
                    port,
                },
            )
    }

    /// A hostile segment carrying RST.
    pub fn rst_segment() -> impl Strategy<Value = SegmentSpec> {
        segment().prop_map(|mut s| {
            s.flags |= TcpFlags::RST;
            s
        })
    }

    /// Arbitrary bytes (up to 1600) as a frame.
    pub fn raw_frame() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..1600)
    }

    /// A hostile segment with a few bytes overwritten (mostly in the IPv4 and TCP headers)
    /// and possibly cut short.
    pub fn mangled() -> impl Strategy<Value = Op> {
        (
            segment(),
            vec(
                (prop_oneof![3 => 14..74u16, 1 => any::<u16>()], any::<u8>()),
                1..6,
            ),
            prop_oneof![3 => Just(0u16), 1 => 1..40u16],
        )
            .prop_map(|(spec, edits, truncate)| Op::Mangled {
                spec,
                edits,
                truncate,
            })
    }

    /// Any operation, mostly hostile segments.
    pub fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => segment().prop_map(Op::Segment),
            8 => plausible_segment().prop_map(Op::Segment),
            3 => mangled(),
            1 => raw_frame().prop_map(Op::Raw),
            3 => prop_oneof![
                1..2_000u64,
                1_000..2_000_000u64,
                1_000_000..200_000_000u64
            ]
            .prop_map(|us| Op::Advance(Duration::from_micros(us))),
            1 => Just(Op::PeerAck),
            1 => (1..3000u16).prop_map(Op::PeerData),
            1 => Just(Op::PeerFin),
            1 => any::<u16>().prop_map(Op::Send),
            1 => any::<u16>().prop_map(Op::Recv),
            1 => prop_oneof![Just(Op::Shutdown), Just(Op::Close), Just(Op::Abort)],
            1 => Just(Op::Accept),
        ]
    }

    /// Impaired-link parameters with loss up to `max_loss`.
    pub fn link_params(max_loss: f64) -> impl Strategy<Value = LinkParams> {
        (
            prop_oneof![Just(0.0), 0.0..max_loss],
            prop_oneof![Just(0.0), 0.0..0.05],
            prop_oneof![Just(0.0), 0.0..0.1],
            prop_oneof![Just(0.0), 0.0..0.02],
            (
                50..20_000u64,
                prop_oneof![Just(0u64), 0..=100u64],
                0..20_000u64,
            ),
            prop_oneof![3 => Just(0usize), 1 => 32..512usize],
        )
            .prop_map(
                |(loss, duplicate, reorder, corrupt, (delay, jitter_pct, reorder_us), queue)| {
                    LinkParams {
                        delay: Duration::from_micros(delay),
                        jitter: Duration::from_micros(delay * jitter_pct / 100),
                        loss,
                        duplicate,
                        reorder,
                        reorder_delay: Duration::from_micros(reorder_us),
                        corrupt,
                        queue_limit: queue,
                    }
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_link_delivers_in_order_after_its_delay() {
        let mut l = SimLink::new(LinkParams::default(), 1);
        for i in 0..10u8 {
            l.send(Instant::from_micros(u64::from(i)), &[i]);
        }
        assert_eq!(l.poll(Instant::from_micros(999)), None);
        let t = Instant::from_millis(2);
        let got: Vec<u8> = core::iter::from_fn(|| l.poll(t)).map(|f| f[0]).collect();
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        assert_eq!(l.next_delivery(), None);
    }

    #[test]
    fn impairments_follow_their_rates_and_replay_from_the_seed() {
        let params = LinkParams {
            loss: 0.1,
            duplicate: 0.05,
            corrupt: 0.02,
            reorder: 0.03,
            ..LinkParams::default()
        };
        let run = |seed| {
            let mut l = SimLink::new(params.clone(), seed);
            for i in 0..20_000u32 {
                l.send(Instant::from_micros(u64::from(i) * 10), &i.to_le_bytes());
            }
            let out: Vec<Vec<u8>> =
                core::iter::from_fn(|| l.poll(Instant::from_millis(1_000))).collect();
            (l.stats(), out)
        };
        let (stats, out) = run(42);
        // Within 5 standard deviations of a binomial with n = 20 000.
        let near = |count: u64, p: f64| {
            let n = 20_000.0;
            let sd = (n * p * (1.0 - p)).sqrt();
            (count as f64 - n * p).abs() < 5.0 * sd
        };
        assert!(near(stats.lost, 0.1), "{stats:?}");
        assert!(near(stats.duplicated, 0.05 * 0.9), "{stats:?}");
        assert_eq!(out.len() as u64, stats.delivered);
        assert_eq!(stats.delivered, stats.sent - stats.lost + stats.duplicated);
        assert_eq!(run(42).1, out);
        assert_ne!(run(43).1, out);
    }
}
