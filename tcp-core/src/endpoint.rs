//! The per-core endpoint: one interface, one ARP cache, one flow table, one timer wheel.
//!
//! It answers what an interface must answer without any socket: ARP requests for our
//! address (RFC 826), ICMP echo requests (RFC 792), and TCP segments for no connection as
//! RFC 9293 §3.10.7.1 says for the CLOSED state (a RST, unless the segment carries one). It
//! holds the connection table: listeners (with their SYN and accept queues, and SYN cookies
//! beyond the SYN queue) and connections, each a TCB of the `conn` module found by 4-tuple in
//! the flow table. Sockets are named by [`Handle`]s (slot + generation); the socket
//! operations live in `endpoint/sockets.rs`.
//!
//! ## Connection lifetime
//! A connection's slot is freed when the protocol is done with it (CLOSED, after TIME-WAIT
//! if it passes through it) *and* the application no longer holds it (it called
//! [`Endpoint::close`] or [`Endpoint::abort`], or never accepted it). Until the application
//! calls `close`, a connection that reached CLOSED keeps its handle, its unread data and its
//! [`CloseReason`].
//!
//! A connection in TIME-WAIT that the application no longer holds, once its last segment is
//! out, moves into a compact table (the `timewait` module, [`EndpointConfig::compact_time_wait`]):
//! its slot is freed at once, the flow table names the record, and TIME-WAIT ends from a FIFO
//! in deadline order. A segment for it is processed by the TCB rebuilt for the purpose, so it
//! is answered exactly as before.
//!
//! ## Transmit order
//! `poll_transmit` serves, in this order: the control queue (ARP, stateless RSTs and SYN-ACKs,
//! ICMP replies, ACKs of compact TIME-WAIT connections), then connections with control
//! segments (SYN, SYN-ACK, RST), then
//! connections owing a pure ACK (one ACK per connection per pass: ACKs of a batch coalesce),
//! then connections with data, one segment per turn, round robin.
//!
//! ## Calling order
//! See [`Endpoint`]: feed inputs with `handle_*`, then drain [`Endpoint::poll_transmit`]
//! until `None`, then sleep until [`Endpoint::poll_timeout`].
//!
//! ## Drops and counters
//! Every frame handed in is counted in [`Counters::frames_in`]; every frame it drops is
//! counted once, by reason:
//!
//! | Reason                                                       | Counter          |
//! |--------------------------------------------------------------|------------------|
//! | [`ParseError::Truncated`], [`ParseError::Malformed`]         | `malformed`      |
//! | [`ParseError::BadChecksum`]                                  | `bad_checksum`   |
//! | [`ParseError::NotForUs`], [`ParseError::Fragment`], [`ParseError::UnsupportedEtherType`] | `not_for_us` |
//! | a valid IPv4 packet of another protocol or ICMP type         | `not_for_us`     |
//! | a TCP segment or echo request from/to a non-unicast address  | `not_for_us`     |
//! | an ARP request for us whose sender MAC is not unicast        | `malformed`      |
//!
//! Control frames this endpoint fails to *send* (control queue full, ICMP payload pool full
//! or echo payload larger than the MTU, caller's buffer too small in `poll_transmit`) are
//! counted in [`Counters::control_dropped`].
//!
//! ## Bounds (STYLE rule 9)
//! - The control queue holds at most [`CONTROL_QUEUE_CAPACITY`] frames; it is allocated at
//!   creation. RSTs and ARP frames are stored as compact descriptions (addresses, ports,
//!   numbers, flags) and written into the caller's buffer only by `poll_transmit`, so
//!   answering them allocates nothing.
//! - Echo payloads are copied into a pool of [`ICMP_POOL_SLOTS`] MTU-sized slots, allocated
//!   at creation.
//! - `poll_transmit` and `handle_timeout` do bounded work per call.
//! - At most `max_connections` slots (listeners and connections in every state); beyond it
//!   SYNs are dropped and `connect` fails, counted in [`Counters::table_full`]. Per listener
//!   at most `syn_queue` connections in SYN-RECEIVED (beyond: SYN cookies) and `backlog`
//!   unaccepted ones (beyond: SYNs dropped, [`Counters::accept_queue_full`]).
//! - The transmit and event queues hold each connection at most once per queue.
//!
//! Replies to segments of no connection go to the source MAC of the frame they answer (a
//! damaged source loses that one reply, which the peer's retransmission asks for again).
//! Every connection, active or passive, resolves its next hop through the routes and the
//! ARP cache, queueing its frames meanwhile, and keeps what it resolved: not the source MAC
//! of a frame, which no checksum covers (one bit flipped on the way would send all of a
//! connection's segments to a host that is not there). Only a passive open from an address
//! with no route sends to the MAC its SYN came from.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddrV4;

use crate::arp::{ArpCache, ArpConfig, ArpEvent, Lookup};
use crate::buffer::StoragePool;
use crate::config::{ConfigError, EndpointConfig, Prefetch, TcpConfig};
use crate::conn::{ev, ChallengeLimiter, Env, RstReply, Tcb, TxClass};
use crate::counters::Counters;
use crate::flow::{FlowTable, FourTuple};
use crate::isn::{EphemeralPorts, IsnGenerator, SynCookies};
use crate::route;
use crate::seq::SeqNumber;
use crate::state::{CloseReason, Event, Handle, State};
use crate::time::{Duration, Instant};
use crate::timer::TimerWheel;
use crate::timewait::TimeWaitTable;
use crate::wire::{
    self, ArpInfo, ArpOp, ChecksumMode, EthInfo, EthIpv4Header, EthernetAddress, Inbound,
    Ipv4Address, Ipv4Info, LocalAddrs, ParseError, TcpFlags, TcpFrame, TcpOptions, TcpSegment,
    TcpSegmentOut, ICMP_ECHO_HEADER_LEN, IPV4_HEADER_LEN, TCP_HEADER_LEN,
};

mod sockets;

/// Maximum number of control frames (ARP, RST, ICMP replies) waiting for `poll_transmit`.
/// Beyond it, new control frames are dropped and counted in [`Counters::control_dropped`].
pub const CONTROL_QUEUE_CAPACITY: usize = 256;

/// Number of ICMP echo replies whose payloads can wait for `poll_transmit` at once.
pub const ICMP_POOL_SLOTS: usize = 16;

/// Freed 256-byte buffer storages an endpoint keeps for its next connections, per connection
/// of `max_connections`: one for each of its two rings (see [`crate::buffer::StoragePool`]).
/// The pool so never holds more than a full table of connections would use at once, and with
/// many connections opening and closing in bursts none of their storage goes back to the
/// allocator (at a million connections, a pool capped lower spent a tenth of the time in
/// `malloc` and `free`).
pub const STORAGE_POOL_PER_CONNECTION: usize = 2;

/// Timers expired per `handle_timeout` call at most (STYLE rule 9).
const MAX_TIMERS_PER_CALL: usize = 1024;

/// Timer wheel slot width (see the `timer` module on choosing it).
const TIMER_GRANULARITY: Duration = Duration::from_micros(16);

/// Flow-table values with this bit set name a compact TIME-WAIT record (the `timewait`
/// module) instead of a slot; slots stay below it (`max_connections` < 2^31).
const TW_BIT: u32 = 1 << 31;

/// A control frame waiting for `poll_transmit`, described as compactly as possible.
#[derive(Debug)]
enum Control {
    /// An ARP packet from us: `eth_dst` is the Ethernet destination.
    Arp {
        eth_dst: EthernetAddress,
        arp: ArpInfo,
    },
    /// A RST from our address to `dst_ip`:`dst_port` (via `dst_mac`).
    Rst {
        dst_mac: EthernetAddress,
        dst_ip: Ipv4Address,
        src_port: u16,
        dst_port: u16,
        seq: SeqNumber,
        ack: SeqNumber,
        flags: TcpFlags,
    },
    /// An ICMP echo reply whose payload is `len` bytes in pool slot `slot`.
    EchoReply {
        dst_mac: EthernetAddress,
        dst_ip: Ipv4Address,
        ident: u16,
        seq: u16,
        slot: u16,
        len: u16,
    },
    /// A whole frame released by the ARP cache, destination MAC already set.
    Frame(Vec<u8>),
    /// The ACK of a compact TIME-WAIT connection (counted as a segment when it was built).
    TimeWaitAck {
        dst_mac: EthernetAddress,
        dst_ip: Ipv4Address,
        seg: TcpSegmentOut,
    },
    /// A stateless SYN-ACK carrying a SYN cookie.
    SynAck {
        dst_mac: EthernetAddress,
        dst_ip: Ipv4Address,
        seg: TcpSegmentOut,
    },
}

/// A listening socket.
#[derive(Debug)]
struct Listener {
    port: u16,
    backlog: usize,
    /// Established connections waiting for `accept` (slots).
    accept_q: VecDeque<u32>,
    /// Connections in SYN-RECEIVED from this listener.
    half_open: usize,
    /// Send and receive buffer sizes of its connections, when not the configured ones
    /// ([`Endpoint::set_buffer_sizes`]).
    buffers: Option<(usize, usize)>,
}

/// What a slot of the connection table holds.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "TCBs live inline in the slot table: no allocation per connection; slots only \
              exist up to the peak number of connections and are reused"
)]
enum Body {
    Free,
    Listener(Listener),
    Conn(Tcb),
}

/// A slot of the connection table: one TCB (or listener), aligned to a cache line so that a
/// connection's state covers as few lines as possible, its most used lines first.
#[derive(Debug)]
#[repr(C, align(64))]
struct Slot {
    body: Body,
    generation: u32,
}

// Nine cache lines per slot: growing the TCB past 568 bytes would add a tenth to every
// connection.
const _: () = assert!(core::mem::size_of::<Slot>() == 9 * 64);

/// Frames per group in [`Endpoint::handle_frames`]: enough lookups in flight to overlap their
/// cache misses, few enough that what they bring in is still cached when the group is
/// processed.
pub const WARM_GROUP: usize = 32;

/// Most connections remembered as closed while SYN cookies are in use (see
/// `Endpoint::closed_recently`).
const MAX_CLOSED_RECENTLY: usize = 64 * 1024;

/// [`Endpoint::handle_frames`] warms the caches only with at least this many flows (below,
/// the flow table and connections of a core fit in its caches).
pub const WARM_MIN_FLOWS: usize = 4 * 1024;

/// The flow (as seen by the receiver) of a frame that looks like a TCP segment; nothing is
/// validated.
#[inline]
fn peek_tuple(frame: &[u8]) -> Option<FourTuple> {
    wire::peek_tcp_addrs(frame).map(|(src, dst, sport, dport)| FourTuple {
        local_addr: dst,
        local_port: dport,
        remote_addr: src,
        remote_port: sport,
    })
}

/// Bytes at the start of a connection's slot passed to a [`Prefetch`] hint: four cache
/// lines. At a million connections the first four lines beat the whole slot (ten lines;
/// the hints then queue behind the CPU's outstanding misses) and the first two (medians of
/// 5 alternating runs: 3.31 against 3.86 and 3.59 µs per transaction).
const PREFETCH_SLOT_BYTES: usize = 256;

/// With a [`Prefetch`] hint, [`Endpoint::poll_transmit`] hints the connection this many
/// entries ahead in its transmit queue.
const TX_PREFETCH_AHEAD: usize = 8;

/// With a [`Prefetch`] hint, the end of compact TIME-WAIT hints the flow cell of the record
/// this many places ahead in expiry order (and the record twice as far ahead).
const TW_PREFETCH_AHEAD: usize = 16;

/// Bit of `Tcb::queued` saying the slot is in the event queue.
const EV_QUEUED: u8 = 1 << 3;

/// Fixed-size slots for echo payloads, allocated once.
#[derive(Debug)]
struct PayloadPool {
    bytes: Vec<u8>,
    slot_len: usize,
    free: Vec<u16>,
}

impl PayloadPool {
    fn new(slots: usize, slot_len: usize) -> PayloadPool {
        PayloadPool {
            bytes: vec![0; slots * slot_len],
            slot_len,
            // Popped from the end: slot 0 first.
            free: (0..slots as u16).rev().collect(),
        }
    }

    /// Copy `payload` into a free slot; `None` if it is too long or no slot is free.
    fn store(&mut self, payload: &[u8]) -> Option<(u16, u16)> {
        if payload.len() > self.slot_len {
            return None;
        }
        let len = u16::try_from(payload.len()).ok()?;
        let slot = self.free.pop()?;
        let start = usize::from(slot) * self.slot_len;
        self.bytes[start..start + payload.len()].copy_from_slice(payload);
        Some((slot, len))
    }

    fn get(&self, slot: u16, len: u16) -> &[u8] {
        let start = usize::from(slot) * self.slot_len;
        self.bytes
            .get(start..start + usize::from(len))
            .unwrap_or(&[])
    }

    fn release(&mut self, slot: u16) {
        self.free.push(slot);
    }
}

/// One TCP/IPv4 endpoint (one per core): an interface with its ARP cache, its flow table and
/// its timers. Performs no I/O, reads no clock, draws no randomness.
///
/// ## Calling order (as quinn-proto's `Connection`)
/// 1. Feed every received frame to [`handle_frame`](Self::handle_frame), and call
///    [`handle_timeout`](Self::handle_timeout) when the instant last returned by
///    [`poll_timeout`](Self::poll_timeout) has come.
/// 2. After any `handle_*` call, call [`poll_transmit`](Self::poll_transmit) until it returns
///    `None`, sending each frame it writes.
/// 3. Then call [`poll_timeout`](Self::poll_timeout) to learn when to call `handle_timeout`
///    next (`None`: no timer is armed; wait for frames).
///
/// Spurious or early `handle_timeout` calls are harmless; late ones only delay work. Frames
/// not drained by `poll_transmit` stay queued up to [`CONTROL_QUEUE_CAPACITY`], and newer
/// control frames are dropped beyond that.
///
/// ```
/// use tcp_core::{Endpoint, EndpointConfig, Instant};
///
/// let mut ep = Endpoint::new(EndpointConfig::default()).unwrap();
/// let now = Instant::from_millis(1);
/// ep.handle_frame(now, &[0u8; 60]); // garbage: dropped and counted
/// let mut buf = [0u8; 1514];
/// while let Some(len) = ep.poll_transmit(now, &mut buf) {
///     let _frame = &buf[..len]; // hand it to the NIC
/// }
/// assert_eq!(ep.poll_timeout(), None);
/// assert_eq!(ep.counters().frames_in, 1);
/// ```
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    local: LocalAddrs,
    checksum: ChecksumMode,
    counters: Counters,
    arp: ArpCache,
    flows: FlowTable,
    timers: TimerWheel,
    isn: IsnGenerator,
    ports: EphemeralPorts,
    cookies: SynCookies,
    /// When a SYN cookie was last sent: cookies are only accepted for a while after that.
    last_cookie: Option<Instant>,
    /// Connections closed while cookies were in use: 4-tuple → when (ms, wrapping), with
    /// the order they came in (the oldest go first when the bound is reached). A late
    /// segment of such a connection must not be taken for a cookie ACK.
    closed_recently: FlowTable,
    closed_order: VecDeque<FourTuple>,
    challenge: ChallengeLimiter,
    queue: VecDeque<Control>,
    pool: PayloadPool,
    /// Freed smallest-size buffer storage, reused by the next connections.
    storage: StoragePool,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots in use (connections in any state and listeners).
    live: usize,
    listeners: BTreeMap<u16, u32>,
    /// Connections with something to send, per [`TxClass`]: (slot, generation).
    tx_q: [VecDeque<(u32, u32)>; 3],
    /// Connections with events to report: (slot, generation).
    ev_q: VecDeque<(u32, u32)>,
    /// Compact TIME-WAIT connections (counted in `live`, named in `flows` with [`TW_BIT`]).
    tw: TimeWaitTable,
    /// Timers of a TIME-WAIT connection rebuilt for a segment (key 0): read once it is
    /// done, then cleared.
    tw_timers: TimerWheel,
    /// The latest time any call passed in (socket calls without a time argument use it).
    now: Instant,
}

impl Endpoint {
    /// An endpoint for `config`, after [`EndpointConfig::validate`]; the static ARP entries of
    /// `config.iface.static_arp` are installed. Allocates every bounded structure now.
    pub fn new(config: EndpointConfig) -> Result<Endpoint, ConfigError> {
        config.validate()?;
        let ports = EphemeralPorts::with_range(config.secret, config.ephemeral_ports.clone())
            .map_err(|_| ConfigError {
                field: "ephemeral_ports",
                reason: "must be a non-empty range of non-zero ports",
            })?;
        let mut arp = ArpCache::new(ArpConfig::default());
        for &(ip, mac) in &config.iface.static_arp {
            // Nothing waits for resolution yet, so nothing is released.
            let _released = arp.add_static(ip, EthernetAddress(mac));
        }
        // The MTU is not configured separately: the largest frame we send is a full segment.
        let mtu = usize::from(config.tcp.mss) + IPV4_HEADER_LEN + TCP_HEADER_LEN;
        let echo_payload_max = mtu - IPV4_HEADER_LEN - ICMP_ECHO_HEADER_LEN;
        Ok(Endpoint {
            local: LocalAddrs {
                mac: EthernetAddress(config.iface.mac),
                ip: config.iface.addr,
            },
            checksum: ChecksumMode {
                verify_rx: config.verify_rx_checksums,
                compute_tx: config.compute_tx_checksums,
                accel: config.checksum_accel,
            },
            counters: Counters::default(),
            arp,
            flows: FlowTable::new(config.max_connections, config.secret),
            timers: TimerWheel::new(TIMER_GRANULARITY, 0),
            isn: IsnGenerator::new(config.secret),
            ports,
            cookies: SynCookies::new(config.secret),
            last_cookie: None,
            closed_recently: FlowTable::new(
                config.max_connections.clamp(1, MAX_CLOSED_RECENTLY),
                config.secret,
            ),
            closed_order: VecDeque::new(),
            challenge: ChallengeLimiter::new(config.tcp.challenge_ack_limit),
            queue: VecDeque::with_capacity(CONTROL_QUEUE_CAPACITY),
            pool: PayloadPool::new(ICMP_POOL_SLOTS, echo_payload_max),
            storage: StoragePool::new(
                config
                    .max_connections
                    .saturating_mul(STORAGE_POOL_PER_CONNECTION),
            ),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            listeners: BTreeMap::new(),
            tx_q: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
            ev_q: VecDeque::new(),
            tw: TimeWaitTable::default(),
            tw_timers: TimerWheel::new(TIMER_GRANULARITY, 0),
            now: Instant::ZERO,
            config,
        })
    }

    /// The configuration this endpoint was created with.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// What this endpoint has seen and done.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Process one received Ethernet frame (without FCS). Never panics: whatever `frame`
    /// holds is either acted on or dropped and counted. Call
    /// [`poll_transmit`](Self::poll_transmit) afterwards.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        self.now = self.now.max(now);
        self.counters.frames_in += 1;
        // TCP segments are parsed in place; anything else is parsed again by the general
        // parser (ARP, ICMP and foreign protocols are rare).
        let mut tcp = TcpFrame::EMPTY;
        match wire::parse_tcp_frame(frame, &self.local, self.checksum, &mut tcp) {
            Ok(true) => self.on_segment(now, &tcp),
            Ok(false) => self.handle_other_frame(now, frame),
            Err(e) => self.count_parse_error(e),
        }
    }

    /// [`handle_frame`](Self::handle_frame) for a valid frame that is not a TCP segment.
    #[cold]
    fn handle_other_frame(&mut self, now: Instant, frame: &[u8]) {
        match wire::parse_frame_for(frame, &self.local, self.checksum) {
            Ok(Inbound::Arp { eth, arp }) => self.on_arp(now, eth, arp),
            Ok(Inbound::IcmpEcho {
                eth,
                ip,
                ident,
                seq,
                payload,
            }) => self.on_echo_request(eth, ip, ident, seq, payload),
            Ok(Inbound::Tcp { eth, ip, seg }) => self.on_segment(now, &TcpFrame { eth, ip, seg }),
            Ok(Inbound::IcmpError {
                ip,
                error,
                local,
                remote,
                seq,
                ..
            }) => self.on_icmp_error(now, ip, error, local, remote, seq),
            Ok(Inbound::OtherIpv4 { .. }) => self.counters.not_for_us += 1,
            Err(e) => self.count_parse_error(e),
        }
    }

    /// An ICMP error quoting one of our segments: the connection it names decides
    /// ([`Tcb::on_icmp_error`]); for no connection it is dropped.
    fn on_icmp_error(
        &mut self,
        now: Instant,
        ip: wire::Ipv4Info,
        error: wire::IcmpError,
        local: (core::net::Ipv4Addr, u16),
        remote: (core::net::Ipv4Addr, u16),
        seq: SeqNumber,
    ) {
        let tuple = FourTuple {
            local_addr: local.0,
            local_port: local.1,
            remote_addr: remote.0,
            remote_port: remote.1,
        };
        self.counters.icmp_errors += 1;
        if ip.dst != self.local.ip || local.0 != self.local.ip {
            return;
        }
        let Some(slot) = self.flows.get(&tuple) else {
            return;
        };
        if slot & TW_BIT != 0 {
            return;
        }
        if let Some((tcb, mut env, _)) = self.conn_env(slot, now) {
            tcb.on_icmp_error(error, seq, &mut env);
        }
        self.after(slot);
    }

    /// Process a batch of received frames, in order: the same as calling
    /// [`handle_frame`](Self::handle_frame) for each, but faster when the connection table is
    /// larger than the CPU caches.
    ///
    /// The frames are taken in groups of [`WARM_GROUP`]; before a group is processed, the
    /// flow-table entry and the connection of each of its TCP segments are looked up once
    /// without acting on them. Those lookups are independent of each other, so their cache
    /// misses overlap instead of coming one at a time, frame after frame. Below
    /// [`WARM_MIN_FLOWS`] flows the tables stay in cache and the lookups are skipped.
    pub fn handle_frames<'a, I>(&mut self, now: Instant, frames: I)
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: Clone,
    {
        let frames = frames.into_iter();
        if self.flows.len() < WARM_MIN_FLOWS {
            for frame in frames {
                self.handle_frame(now, frame);
            }
            return;
        }
        self.handle_frames_warm(now, frames);
    }

    /// [`handle_frames`](Self::handle_frames) with the lookups done ahead, group by group.
    fn handle_frames_warm<'a, I>(&mut self, now: Instant, mut frames: I)
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        if let Some(hint) = self.config.prefetch {
            return self.handle_frames_prefetched(now, frames, hint);
        }
        loop {
            core::hint::black_box(self.warm(frames.clone().take(WARM_GROUP)));
            if !self.handle_group(now, &mut frames) {
                return;
            }
        }
    }

    /// [`handle_frames`](Self::handle_frames) with a prefetch hint, as a three-stage pipeline
    /// over groups of [`WARM_GROUP`] frames: while group `k` is processed, the connections of
    /// group `k + 1` (whose flow cells were hinted one group earlier, so their lookups hit)
    /// and the flow cells of group `k + 2` are hinted. Hints do not hold up the instructions
    /// after them as loads do, so all of a group's misses are in flight at once.
    fn handle_frames_prefetched<'a, I>(&mut self, now: Instant, frames: I, hint: Prefetch)
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        let mut cells = frames.clone();
        let mut conns = frames.clone();
        let mut frames = frames;
        self.prefetch_cells(&mut cells, hint);
        loop {
            self.prefetch_cells(&mut cells, hint);
            for frame in conns.by_ref().take(WARM_GROUP) {
                if let Some(slot) = peek_tuple(frame).and_then(|t| self.flows.get(&t)) {
                    self.prefetch_slot(slot, hint);
                }
            }
            if !self.handle_group(now, &mut frames) {
                return;
            }
        }
    }

    /// Handles the next (up to) [`WARM_GROUP`] frames of `frames`; false when there were none.
    fn handle_group<'a>(
        &mut self,
        now: Instant,
        frames: &mut impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        let mut any = false;
        for frame in frames.take(WARM_GROUP) {
            any = true;
            self.handle_frame(now, frame);
        }
        any
    }

    /// Passes the flow cells of the next (up to) [`WARM_GROUP`] frames of `frames` to `hint`.
    fn prefetch_cells<'a>(&self, frames: &mut impl Iterator<Item = &'a [u8]>, hint: Prefetch) {
        for frame in frames.take(WARM_GROUP) {
            if let Some(t) = peek_tuple(frame) {
                self.flows.prefetch(&t, hint);
            }
        }
    }

    /// Passes the first [`PREFETCH_SLOT_BYTES`] of `slot`'s entry (a connection's state) to
    /// `hint`.
    #[inline]
    fn prefetch_slot(&self, slot: u32, hint: Prefetch) {
        if let Some(s) = self.slots.get(slot as usize) {
            (hint.0)((s as *const Slot).cast::<u8>(), PREFETCH_SLOT_BYTES);
        }
    }

    /// Looks up (and so brings into cache) the flow entry and connection of each frame that
    /// looks like a TCP segment for us; returns a value depending on what was read, so that
    /// the reads are not optimized away. Nothing is validated or changed.
    fn warm<'a>(&self, frames: impl Iterator<Item = &'a [u8]>) -> u32 {
        // Two passes, each of independent short iterations, so that many misses are in
        // flight at once: the flow cells first, then the connections they name.
        let mut slots = [u32::MAX; WARM_GROUP];
        for (frame, slot) in frames.zip(slots.iter_mut()) {
            if let Some(tuple) = peek_tuple(frame) {
                *slot = self.flows.get(&tuple).unwrap_or(u32::MAX);
            }
        }
        let mut acc = 0u32;
        for &slot in &slots {
            if let Some(Slot {
                body: Body::Conn(tcb),
                ..
            }) = self.slots.get(slot as usize)
            {
                acc = acc.wrapping_add(tcb.warm());
            }
        }
        acc
    }

    /// Write the next frame to send into `buf` and return its length, or `None` when there is
    /// nothing to send. Call it until `None` after every `handle_*` call.
    ///
    /// A frame longer than `buf` is dropped (counted in
    /// [`Counters::control_dropped`]) and the next one is tried, so a short
    /// buffer never blocks the queue; this never panics. Checksums follow
    /// `config.compute_tx_checksums` (ICMP checksums are always computed).
    #[must_use = "a returned length is a frame in `buf` to send"]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.transmit(now, buf, true)
    }

    /// [`poll_transmit`](Self::poll_transmit), but pure ACKs stay queued: for a layer that
    /// lets its application act on what was received before sending again (run-to-completion
    /// mTCP). An ACK kept back rides on the data the application writes meanwhile, or is not
    /// needed at all when it aborts the connection; the next `poll_transmit` sends the rest,
    /// so call it soon ([`acks_waiting`](Self::acks_waiting) says whether any wait).
    #[must_use = "a returned length is a frame in `buf` to send"]
    pub fn poll_transmit_holding_acks(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.transmit(now, buf, false)
    }

    /// Whether connections wait to send a pure ACK (see
    /// [`poll_transmit_holding_acks`](Self::poll_transmit_holding_acks)).
    pub fn acks_waiting(&self) -> bool {
        !self.tx_q[TxClass::Ack as usize].is_empty()
    }

    fn transmit(&mut self, now: Instant, buf: &mut [u8], acks: bool) -> Option<usize> {
        self.now = self.now.max(now);
        // Bounded: each iteration removes one queued frame or one queue entry, and a
        // connection that had nothing to send is re-queued at most once per entry present
        // at the start (`idle_budget`), so a call always ends.
        let mut idle_budget = self.tx_q.iter().map(VecDeque::len).sum::<usize>() + 1;
        loop {
            if let Some(control) = self.queue.pop_front() {
                let written = self.emit(&control, buf);
                if let Control::EchoReply { slot, .. } = control {
                    self.pool.release(slot);
                }
                match written {
                    Some(len) => {
                        self.counters.frames_out += 1;
                        match control {
                            Control::Rst { .. } => {
                                self.counters.segments_out += 1;
                                self.counters.rst_sent += 1;
                            }
                            Control::SynAck { .. } => self.counters.segments_out += 1,
                            Control::EchoReply { .. } => self.counters.icmp_echo_replies += 1,
                            Control::Arp { .. }
                            | Control::Frame(_)
                            | Control::TimeWaitAck { .. } => {}
                        }
                        return Some(len);
                    }
                    None => self.counters.control_dropped += 1,
                }
                continue;
            }
            // Control segments, then pure ACKs, then data (mTCP's priority lists).
            let (class, (slot, generation)) = if let Some(e) = self.tx_q[0].pop_front() {
                (TxClass::Control, e)
            } else if let Some(e) = acks.then(|| self.tx_q[1].pop_front()).flatten() {
                (TxClass::Ack, e)
            } else if let Some(e) = self.tx_q[2].pop_front() {
                (TxClass::Data, e)
            } else {
                return None;
            };
            if let Some(hint) = self.config.prefetch {
                if self.flows.len() >= WARM_MIN_FLOWS {
                    if let Some(&(ahead, _)) = self.tx_q[class as usize].get(TX_PREFETCH_AHEAD) {
                        self.prefetch_slot(ahead, hint);
                    }
                }
            }
            if self.slot_generation(slot) != Some(generation) {
                continue;
            }
            if let Some(Body::Conn(tcb)) = self.slots.get_mut(slot as usize).map(|s| &mut s.body) {
                tcb.queued &= !(1 << class as u8);
                // A pure ACK whose connection also waits in the data queue: the data segment
                // will carry the ACK (or, if none can go then, the ACK is queued again), as
                // `next_segment` would decide here after planning that segment.
                if class == TxClass::Ack
                    && tcb.queued & (1 << TxClass::Data as u8) != 0
                    && !tcb.keepalive_probe_due()
                {
                    continue;
                }
            }
            let sent = self.transmit_conn(now, slot, class, buf);
            self.after(slot);
            if let Some(len) = sent {
                self.counters.frames_out += 1;
                return Some(len);
            }
            idle_budget -= 1;
            if idle_budget == 0 {
                return None;
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work next, or `None` if no timer is
    /// armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.arp.poll_timeout(),
            self.timers.next_deadline(),
            self.tw.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run the timers due at `now`: ARP request retransmissions and resolution timeouts (the
    /// connection timers come with connections). Spurious calls are harmless. Call
    /// [`poll_transmit`](Self::poll_transmit) afterwards.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let Endpoint {
            arp,
            queue,
            local,
            counters,
            ..
        } = self;
        let expired = arp.handle_timeout(now, |event| match event {
            ArpEvent::SendRequest(target_ip) => {
                let request = arp_request(local, target_ip);
                push_bounded(queue, &mut counters.control_dropped, request);
            }
            // Counted below by frame, not by address: `arp_dropped` counts frames.
            ArpEvent::ResolutionFailed(_) => {}
        });
        counters.arp_dropped += expired.frames_dropped as u64;
        // TIME-WAIT ends for compact connections, then connection timers, each bounded per
        // call (STYLE rule 9); the rest fire next call.
        let hint = self
            .config
            .prefetch
            .filter(|_| self.flows.len() >= WARM_MIN_FLOWS);
        for _ in 0..MAX_TIMERS_PER_CALL {
            if self.tw.next_deadline().is_none_or(|t| t > now) {
                break;
            }
            if let Some(hint) = hint {
                // Records expire in FIFO order: hint the records a few ahead, and the flow
                // cells of those a little closer (their lookups are random misses).
                if let Some((record, _)) = self.tw.ahead(TW_PREFETCH_AHEAD * 2) {
                    (hint.0)(record, 64);
                }
                if let Some((_, Some(t))) = self.tw.ahead(TW_PREFETCH_AHEAD) {
                    self.flows.prefetch(&t, hint);
                }
            }
            let Some((idx, tuple)) = self.tw.pop_expired(now) else {
                break;
            };
            self.flows.remove_if(&tuple, TW_BIT | idx);
            self.live -= 1;
        }
        for _ in 0..MAX_TIMERS_PER_CALL {
            let Some((slot, kind)) = self.timers.poll_expired(now) else {
                break;
            };
            if let Some((tcb, mut env, cfg)) = self.conn_env(slot, now) {
                tcb.on_timer(kind, cfg, &mut env);
                self.after(slot);
            }
        }
    }

    fn count_parse_error(&mut self, e: ParseError) {
        let c = &mut self.counters;
        match e {
            ParseError::Truncated | ParseError::Malformed => c.malformed += 1,
            ParseError::BadChecksum => c.bad_checksum += 1,
            ParseError::NotForUs | ParseError::Fragment | ParseError::UnsupportedEtherType => {
                c.not_for_us += 1;
            }
        }
    }

    fn push(&mut self, control: Control) {
        push_bounded(&mut self.queue, &mut self.counters.control_dropped, control);
    }

    /// RFC 826, "Packet Reception".
    fn on_arp(&mut self, now: Instant, _eth: EthInfo, arp: ArpInfo) {
        let target_is_us = arp.target_ip == self.local.ip;
        // RFC 826: "?Merge_flag … If Merge_flag is false, add the triplet" — the merge rule
        // lives in the cache; it also refuses non-unicast senders.
        let released = self
            .arp
            .on_arp(arp.sender_ip, arp.sender_mac, target_is_us, now);
        for frame in released {
            self.push(Control::Frame(frame));
        }
        // RFC 826: "?Am I the target protocol address? Yes: … ?Is the opcode
        // ares_op$REQUEST? Yes: Swap hardware and protocol fields, putting the local
        // hardware and protocol addresses in the sender fields. Set the ar$op field to
        // ares_op$REPLY. Send the packet to the (new) target hardware address".
        if !target_is_us || arp.op != ArpOp::Request {
            return;
        }
        if !arp.sender_mac.is_unicast() || arp.sender_mac == EthernetAddress([0; 6]) {
            self.counters.malformed += 1;
            return;
        }
        self.push(Control::Arp {
            eth_dst: arp.sender_mac,
            arp: ArpInfo {
                op: ArpOp::Reply,
                sender_mac: self.local.mac,
                sender_ip: self.local.ip,
                target_mac: arp.sender_mac,
                target_ip: arp.sender_ip,
            },
        });
    }

    /// RFC 792, Echo: "To form an echo reply message, the source and destination addresses
    /// are simply reversed, the type code changed to 0, and the checksum recomputed."
    fn on_echo_request(&mut self, eth: EthInfo, ip: Ipv4Info, ident: u16, seq: u16, data: &[u8]) {
        if !self.is_unicast_peer(&eth, &ip) {
            self.counters.not_for_us += 1;
            return;
        }
        if self.queue.len() >= CONTROL_QUEUE_CAPACITY {
            self.counters.control_dropped += 1;
            return;
        }
        let Some((slot, len)) = self.pool.store(data) else {
            self.counters.control_dropped += 1;
            return;
        };
        self.push(Control::EchoReply {
            dst_mac: eth.src,
            dst_ip: ip.src,
            ident,
            seq,
            slot,
            len,
        });
    }

    fn on_segment(&mut self, now: Instant, f: &TcpFrame<'_>) {
        let (eth, ip, seg) = (&f.eth, &f.ip, &f.seg);
        // RFC 1122 §4.2.3.10: "A TCP implementation MUST silently discard an incoming SYN
        // segment that is addressed to a broadcast or multicast address." We never answer
        // any segment to or from such an address: a RST there would be an amplifier.
        if !self.is_unicast_peer(eth, ip) {
            self.counters.not_for_us += 1;
            return;
        }
        self.counters.segments_in += 1;
        let tuple = FourTuple {
            local_addr: ip.dst,
            local_port: seg.dst_port,
            remote_addr: ip.src,
            remote_port: seg.src_port,
        };
        if let Some(slot) = self.flows.get(&tuple) {
            if slot & TW_BIT != 0 {
                // A compact TIME-WAIT connection: it answers, or gives way to a new SYN.
                if !self.time_wait_segment(now, slot & !TW_BIT, f) {
                    return;
                }
            } else if self.time_wait_reusable(slot, seg) {
                // RFC 6191: the TIME-WAIT connection gives way to the new incarnation.
                if let Some((tcb, mut env, _)) = self.conn_env(slot, now) {
                    tcb.close_with(CloseReason::Normal, &mut env);
                }
                self.after(slot);
            } else {
                self.conn_segment(now, slot, f);
                return;
            }
        }
        if let Some(&listener) = self.listeners.get(&seg.dst_port) {
            self.listener_segment(now, listener, tuple, f);
            return;
        }
        self.reply_closed(f);
    }

    /// RFC 6191 §2: a SYN for a 4-tuple in TIME-WAIT may start a new connection if its
    /// timestamp is newer than the old connection's (with timestamps), or (without them,
    /// RFC 1122 §4.2.2.13) if its sequence number is above the old RCV.NXT.
    fn time_wait_reusable(&self, slot: u32, seg: &TcpSegment<'_>) -> bool {
        let fl = seg.flags;
        if !fl.syn() || fl.ack() || fl.rst() {
            return false;
        }
        match self.slots.get(slot as usize).map(|s| &s.body) {
            Some(Body::Conn(tcb)) if tcb.state == State::TimeWait => {
                tcb.syn_may_reuse_time_wait(seg)
            }
            _ => false,
        }
    }

    /// A segment for an existing connection.
    fn conn_segment(&mut self, now: Instant, slot: u32, f: &TcpFrame<'_>) {
        let Some((tcb, mut env, cfg)) = self.conn_env(slot, now) else {
            return;
        };
        let reply = tcb.on_segment(cfg, &f.seg, &mut env);
        if let Some(r) = reply {
            self.push_rst(f, r);
        }
        self.after(slot);
    }

    fn push_rst(&mut self, f: &TcpFrame<'_>, r: RstReply) {
        self.push(Control::Rst {
            dst_mac: f.eth.src,
            dst_ip: f.ip.src,
            src_port: f.seg.dst_port,
            dst_port: f.seg.src_port,
            seq: r.seq,
            ack: r.ack,
            flags: r.flags,
        });
    }

    /// RFC 9293 §3.10.7.1, CLOSED: "If the state is CLOSED (i.e., TCB does not exist), then
    /// all data in the incoming segment is discarded."
    fn reply_closed(&mut self, f: &TcpFrame<'_>) {
        // "An incoming segment containing a RST is discarded. An incoming segment not
        // containing a RST causes a RST to be sent in response. The acknowledgment and
        // sequence field values are selected to make the reset sequence acceptable to the TCP
        // endpoint that sent the offending segment." (`RstReply::for_segment` quotes the rest.)
        if let Some(r) = RstReply::for_segment(&f.seg) {
            self.push_rst(f, r);
        }
    }

    /// The frame comes from a unicast MAC and address and is addressed to our MAC (not
    /// broadcast) and to our address (not a broadcast of our subnet).
    fn is_unicast_peer(&self, eth: &EthInfo, ip: &Ipv4Info) -> bool {
        let iface = &self.config.iface;
        let subnet_broadcast = |a: Ipv4Address| {
            iface.prefix_len < 31
                && u32::from(a) == u32::from(iface.addr) | (u32::MAX >> iface.prefix_len)
        };
        let bad_ip = |a: Ipv4Address| {
            a.is_unspecified() || a.is_broadcast() || a.is_multicast() || subnet_broadcast(a)
        };
        // The destination was checked against our (unicast) address by the parser already
        // when it is ours; compare it again, which is cheaper than classifying it.
        eth.src.is_unicast()
            && eth.dst == self.local.mac
            && (ip.dst == self.local.ip || !bad_ip(ip.dst))
            && !bad_ip(ip.src)
    }

    /// Write `control` into `buf`; `None` if it does not fit.
    fn emit(&self, control: &Control, buf: &mut [u8]) -> Option<usize> {
        let written = match control {
            Control::Arp { eth_dst, arp } => wire::emit_arp(buf, *eth_dst, arp),
            Control::Rst {
                dst_mac,
                dst_ip,
                src_port,
                dst_port,
                seq,
                ack,
                flags,
            } => {
                let hdr = EthIpv4Header::new(self.local.mac, *dst_mac, self.local.ip, *dst_ip);
                let seg = TcpSegmentOut {
                    src_port: *src_port,
                    dst_port: *dst_port,
                    seq: *seq,
                    ack: *ack,
                    flags: *flags,
                    ..TcpSegmentOut::default()
                };
                wire::emit_tcp(buf, &hdr, &seg, &[], self.checksum)
            }
            Control::EchoReply {
                dst_mac,
                dst_ip,
                ident,
                seq,
                slot,
                len,
            } => {
                let hdr = EthIpv4Header::new(self.local.mac, *dst_mac, self.local.ip, *dst_ip);
                let payload = self.pool.get(*slot, *len);
                wire::emit_icmp_echo_reply(buf, &hdr, *ident, *seq, payload, self.checksum)
            }
            Control::Frame(frame) => {
                let dst = buf.get_mut(..frame.len())?;
                dst.copy_from_slice(frame);
                Ok(frame.len())
            }
            Control::SynAck {
                dst_mac,
                dst_ip,
                seg,
            }
            | Control::TimeWaitAck {
                dst_mac,
                dst_ip,
                seg,
            } => {
                let hdr = EthIpv4Header::new(self.local.mac, *dst_mac, self.local.ip, *dst_ip);
                wire::emit_tcp(buf, &hdr, seg, &[], self.checksum)
            }
        };
        written.ok()
    }
}

/// A broadcast ARP request from `local` for `target_ip` (RFC 826).
fn arp_request(local: &LocalAddrs, target_ip: Ipv4Address) -> Control {
    Control::Arp {
        eth_dst: EthernetAddress::BROADCAST,
        arp: ArpInfo {
            op: ArpOp::Request,
            sender_mac: local.mac,
            sender_ip: local.ip,
            target_mac: EthernetAddress([0; 6]),
            target_ip,
        },
    }
}

/// Queue `control` unless the queue is full (then count it as dropped).
fn push_bounded(queue: &mut VecDeque<Control>, dropped: &mut u64, control: Control) {
    if queue.len() < CONTROL_QUEUE_CAPACITY {
        queue.push_back(control);
    } else {
        *dropped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InterfaceConfig;
    use crate::wire::{
        emit_arp_request, emit_icmp_echo_request, emit_tcp, parse_frame, ETHERNET_HEADER_LEN,
    };
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use smoltcp::wire::{Icmpv4Message, Icmpv4Packet};

    const OUR_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const OUR_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
    const PEER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
    const PEER_PORT: u16 = 40_000;
    const OUR_PORT: u16 = 80;
    const ISN: u32 = 0x1234_5678;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn config() -> EndpointConfig {
        EndpointConfig {
            iface: InterfaceConfig {
                mac: OUR_MAC.0,
                addr: OUR_IP,
                ..InterfaceConfig::default()
            },
            max_connections: 64,
            ..EndpointConfig::default()
        }
    }

    fn endpoint() -> Endpoint {
        Endpoint::new(config()).unwrap()
    }

    fn peer_hdr() -> EthIpv4Header {
        EthIpv4Header::new(PEER_MAC, OUR_MAC, PEER_IP, OUR_IP)
    }

    /// A segment from the peer to our port 80.
    fn segment(
        hdr: &EthIpv4Header,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let seg = TcpSegmentOut {
            src_port: PEER_PORT,
            dst_port: OUR_PORT,
            seq: SeqNumber(seq),
            ack: SeqNumber(ack),
            flags,
            window: 64_240,
            ..TcpSegmentOut::default()
        };
        let len = emit_tcp(&mut buf, hdr, &seg, payload, ChecksumMode::SOFTWARE).unwrap();
        buf.truncate(len);
        buf
    }

    fn syn() -> Vec<u8> {
        segment(&peer_hdr(), ISN, 0, TcpFlags::SYN, &[])
    }

    /// Every frame `poll_transmit` has, with a full-size buffer.
    fn drain(ep: &mut Endpoint) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(len) = ep.poll_transmit(t(0), &mut buf) {
            out.push(buf[..len].to_vec());
        }
        out
    }

    /// The one frame sent, parsed as a TCP segment: (eth, ip, seq, ack, flags, ports).
    fn only_rst(ep: &mut Endpoint) -> (EthInfo, Ipv4Info, u32, u32, TcpFlags, (u16, u16)) {
        let out = drain(ep);
        assert_eq!(out.len(), 1, "exactly one frame expected");
        match parse_frame(&out[0], ChecksumMode::SOFTWARE).unwrap() {
            Inbound::Tcp { eth, ip, seg } => {
                assert!(seg.payload.is_empty());
                assert_eq!(seg.window, 0);
                (
                    eth,
                    ip,
                    seg.seq.0,
                    seg.ack.0,
                    seg.flags,
                    (seg.src_port, seg.dst_port),
                )
            }
            other => panic!("not a TCP segment: {other:?}"),
        }
    }

    fn arp_request(
        sender_mac: EthernetAddress,
        sender_ip: Ipv4Address,
        target: Ipv4Address,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        let len = emit_arp_request(&mut buf, sender_mac, sender_ip, target).unwrap();
        buf.truncate(len);
        buf
    }

    /// Compact TIME-WAIT: once the application closed a connection in TIME-WAIT and its
    /// last ACK went out, the connection lives in the compact table, its slot is free and
    /// its timers are gone from the wheel; the flow names the record.
    #[test]
    fn closed_time_wait_connection_moves_to_the_compact_table() {
        use crate::testing::{Harness, Op, Setup};
        let mut h = Harness::new(Setup::new(State::TimeWait)).unwrap();
        assert_eq!(h.ep.tw.iter().count(), 0);
        let live = h.ep.live;
        h.apply(&Op::Close).unwrap();
        assert_eq!(h.ep.tw.iter().count(), 1);
        assert_eq!(h.ep.live, live, "the record counts as the connection did");
        let conns =
            h.ep.slots
                .iter()
                .filter(|s| matches!(s.body, Body::Conn(_)));
        assert_eq!(conns.count(), 0, "the slot is free");
        let tuple = h.ep.tw.iter().next().unwrap().tuple;
        assert_eq!(h.ep.flows.get(&tuple).map(|v| v & TW_BIT), Some(TW_BIT));
        assert_eq!(h.ep.timers.next_deadline(), None);
        assert!(h.ep.poll_timeout().is_some());
        // Without it, the TCB stays in its slot until TIME-WAIT ends.
        let mut full = Harness::new(Setup {
            compact_time_wait: false,
            ..Setup::new(State::TimeWait)
        })
        .unwrap();
        full.apply(&Op::Close).unwrap();
        assert_eq!(full.ep.tw.iter().count(), 0);
    }

    #[test]
    fn arp_request_for_us_gets_a_reply() {
        let mut ep = endpoint();
        ep.handle_frame(t(1), &arp_request(PEER_MAC, PEER_IP, OUR_IP));
        let out = drain(&mut ep);
        assert_eq!(out.len(), 1);
        let Inbound::Arp { eth, arp } = parse_frame(&out[0], ChecksumMode::SOFTWARE).unwrap()
        else {
            panic!("not ARP");
        };
        assert_eq!((eth.src, eth.dst), (OUR_MAC, PEER_MAC));
        assert_eq!(arp.op, ArpOp::Reply);
        assert_eq!((arp.sender_mac, arp.sender_ip), (OUR_MAC, OUR_IP));
        assert_eq!((arp.target_mac, arp.target_ip), (PEER_MAC, PEER_IP));
        // RFC 826: the requester is added, since we are the target.
        assert_eq!(ep.arp.peek(PEER_IP, t(1)), Some(PEER_MAC));
        assert_eq!(ep.counters().frames_in, 1);
        assert_eq!(ep.counters().frames_out, 1);
    }

    #[test]
    fn arp_request_for_someone_else_is_only_learned() {
        let mut ep = endpoint();
        ep.handle_frame(t(1), &arp_request(PEER_MAC, PEER_IP, OUR_IP));
        assert_eq!(drain(&mut ep).len(), 1);
        // The peer, now known, moved to a new MAC and asks for a third host: the entry is
        // merged (updated), nothing is answered.
        let moved = EthernetAddress([2, 0, 0, 0, 0, 0x22]);
        ep.handle_frame(
            t(2),
            &arp_request(moved, PEER_IP, Ipv4Address::new(10, 0, 0, 3)),
        );
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.arp.peek(PEER_IP, t(2)), Some(moved));
        // A stranger asking for someone else is not added (RFC 826 merge rule).
        let stranger = Ipv4Address::new(10, 0, 0, 9);
        ep.handle_frame(
            t(3),
            &arp_request(EthernetAddress([2, 0, 0, 0, 0, 9]), stranger, PEER_IP),
        );
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.arp.peek(stranger, t(3)), None);
        assert_eq!(ep.counters().frames_out, 1);
    }

    #[test]
    fn static_arp_entries_are_installed() {
        let mut c = config();
        c.iface.static_arp = vec![(PEER_IP, PEER_MAC.0)];
        let ep = Endpoint::new(c).unwrap();
        assert_eq!(ep.arp.peek(PEER_IP, t(1_000_000_000)), Some(PEER_MAC));
    }

    #[test]
    fn invalid_config_is_refused() {
        let mut c = config();
        c.tcp.mss = 1;
        assert_eq!(Endpoint::new(c).unwrap_err().field, "tcp.mss");
    }

    #[test]
    fn arp_reply_releases_waiting_frames() {
        let mut ep = endpoint();
        let frame = syn();
        assert_eq!(
            ep.arp.lookup(PEER_IP, t(0)),
            crate::arp::Lookup::Pending { send_request: true }
        );
        ep.arp.enqueue(PEER_IP, &frame, t(0)).unwrap();
        let mut reply = vec![0u8; 64];
        let len = wire::emit_arp_reply(&mut reply, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP).unwrap();
        ep.handle_frame(t(1), &reply[..len]);
        // Released with the resolved MAC as its destination.
        let mut expected = frame;
        expected[..6].copy_from_slice(&PEER_MAC.0);
        assert_eq!(drain(&mut ep), vec![expected]);
    }

    #[test]
    fn arp_timeout_sends_requests_then_counts_dropped_frames() {
        let mut ep = endpoint();
        assert_eq!(ep.poll_timeout(), None);
        let _ = ep.arp.lookup(PEER_IP, t(0));
        ep.arp.enqueue(PEER_IP, &syn(), t(0)).unwrap();
        let mut retries = 0;
        // Virtual time: jump to each wake-up until nothing is armed (bounded).
        for _ in 0..100 {
            let Some(at) = ep.poll_timeout() else { break };
            ep.handle_timeout(at);
            for frame in drain(&mut ep) {
                let Inbound::Arp { eth, arp } =
                    parse_frame(&frame, ChecksumMode::SOFTWARE).unwrap()
                else {
                    panic!("not ARP");
                };
                assert_eq!(eth.dst, EthernetAddress::BROADCAST);
                assert_eq!((arp.op, arp.target_ip), (ArpOp::Request, PEER_IP));
                retries += 1;
            }
        }
        assert_eq!(ep.poll_timeout(), None);
        assert_eq!(ep.counters().arp_dropped, 1);
        assert!(
            retries <= 1,
            "at most one retransmission within the 1 s pending timeout"
        );
        // Spurious calls are harmless.
        ep.handle_timeout(t(5_000));
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.counters().arp_dropped, 1);
    }

    #[test]
    fn icmp_echo_gets_a_reply_with_the_same_payload() {
        let mut ep = endpoint();
        let mut buf = vec![0u8; 2048];
        let payload = b"mtcp-rs ping payload 0123456789";
        let len =
            emit_icmp_echo_request(&mut buf, &peer_hdr(), 7, 9, payload, ChecksumMode::SOFTWARE)
                .unwrap();
        ep.handle_frame(t(1), &buf[..len]);
        let out = drain(&mut ep);
        assert_eq!(out.len(), 1);
        let Inbound::OtherIpv4 { eth, ip } = parse_frame(&out[0], ChecksumMode::SOFTWARE).unwrap()
        else {
            panic!("not an IPv4 packet");
        };
        assert_eq!((eth.src, eth.dst), (OUR_MAC, PEER_MAC));
        assert_eq!((ip.src, ip.dst), (OUR_IP, PEER_IP));
        let icmp =
            Icmpv4Packet::new_checked(&out[0][ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..]).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (7, 9));
        assert_eq!(icmp.data(), payload);
        assert_eq!(ep.counters().icmp_echo_replies, 1);
        // The pool slot was returned.
        assert_eq!(ep.pool.free.len(), ICMP_POOL_SLOTS);
    }

    #[test]
    fn icmp_echo_larger_than_the_mtu_is_dropped_and_counted() {
        let mut c = config();
        c.tcp.mss = 536; // MTU 576: at most 548 bytes of echo data
        let mut ep = Endpoint::new(c).unwrap();
        let mut buf = vec![0u8; 2048];
        let ok = vec![0xab; 548];
        let len = emit_icmp_echo_request(&mut buf, &peer_hdr(), 1, 1, &ok, ChecksumMode::SOFTWARE)
            .unwrap();
        ep.handle_frame(t(1), &buf[..len]);
        assert_eq!(drain(&mut ep).len(), 1);
        let big = vec![0xab; 549];
        let len = emit_icmp_echo_request(&mut buf, &peer_hdr(), 1, 2, &big, ChecksumMode::SOFTWARE)
            .unwrap();
        ep.handle_frame(t(2), &buf[..len]);
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.counters().control_dropped, 1);
        assert_eq!(ep.counters().icmp_echo_replies, 1);
    }

    #[test]
    fn icmp_pool_bound_holds() {
        let mut ep = endpoint();
        let mut buf = vec![0u8; 2048];
        for i in 0..(ICMP_POOL_SLOTS as u16 + 5) {
            let len =
                emit_icmp_echo_request(&mut buf, &peer_hdr(), 1, i, b"x", ChecksumMode::SOFTWARE)
                    .unwrap();
            ep.handle_frame(t(1), &buf[..len]);
        }
        assert_eq!(ep.counters().control_dropped, 5);
        assert_eq!(drain(&mut ep).len(), ICMP_POOL_SLOTS);
        assert_eq!(ep.pool.free.len(), ICMP_POOL_SLOTS);
    }

    #[test]
    fn syn_to_closed_port_gets_rst_ack() {
        let mut ep = endpoint();
        ep.handle_frame(t(1), &syn());
        let (eth, ip, seq, ack, flags, ports) = only_rst(&mut ep);
        assert_eq!((eth.src, eth.dst), (OUR_MAC, PEER_MAC));
        assert_eq!((ip.src, ip.dst), (OUR_IP, PEER_IP));
        assert_eq!(seq, 0);
        assert_eq!(ack, ISN.wrapping_add(1));
        assert_eq!(flags, TcpFlags::RST | TcpFlags::ACK);
        assert_eq!(ports, (OUR_PORT, PEER_PORT));
        let c = ep.counters();
        assert_eq!(
            (c.segments_in, c.segments_out, c.rst_sent, c.frames_out),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn ack_to_closed_port_gets_rst_with_seq_of_ack() {
        let mut ep = endpoint();
        ep.handle_frame(
            t(1),
            &segment(&peer_hdr(), 5, 0xdead_beef, TcpFlags::ACK, b"data"),
        );
        let (_, _, seq, _, flags, ports) = only_rst(&mut ep);
        assert_eq!(seq, 0xdead_beef);
        assert_eq!(flags, TcpFlags::RST);
        assert_eq!(ports, (OUR_PORT, PEER_PORT));
        assert_eq!(ep.counters().rst_sent, 1);
    }

    #[test]
    fn data_with_fin_counts_fin_in_ack() {
        let mut ep = endpoint();
        // Near the wrap, to check the modular addition too.
        let seq = 0xffff_ffc0;
        let data = [0x5a; 100];
        ep.handle_frame(
            t(1),
            &segment(&peer_hdr(), seq, 0, TcpFlags::FIN | TcpFlags::PSH, &data),
        );
        let (_, _, rst_seq, ack, flags, _) = only_rst(&mut ep);
        assert_eq!(rst_seq, 0);
        assert_eq!(ack, seq.wrapping_add(100 + 1));
        assert_eq!(flags, TcpFlags::RST | TcpFlags::ACK);
    }

    #[test]
    fn rst_is_never_answered() {
        let mut ep = endpoint();
        for flags in [
            TcpFlags::RST,
            TcpFlags::RST | TcpFlags::ACK,
            TcpFlags::RST | TcpFlags::SYN,
            TcpFlags::RST | TcpFlags::FIN | TcpFlags::PSH,
        ] {
            ep.handle_frame(t(1), &segment(&peer_hdr(), 1, 2, flags, b"x"));
        }
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.counters().segments_in, 4);
        assert_eq!(ep.counters().rst_sent, 0);
    }

    #[test]
    fn segments_from_or_to_broadcast_or_multicast_get_no_rst() {
        let mut ep = endpoint();
        let bcast_mac = EthIpv4Header::new(PEER_MAC, EthernetAddress::BROADCAST, PEER_IP, OUR_IP);
        let mcast_src = EthIpv4Header::new(
            EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]),
            OUR_MAC,
            PEER_IP,
            OUR_IP,
        );
        let bcast_src_ip =
            EthIpv4Header::new(PEER_MAC, OUR_MAC, Ipv4Address::new(10, 0, 0, 255), OUR_IP);
        let mcast_src_ip =
            EthIpv4Header::new(PEER_MAC, OUR_MAC, Ipv4Address::new(224, 0, 0, 1), OUR_IP);
        for hdr in [bcast_mac, mcast_src, bcast_src_ip, mcast_src_ip] {
            ep.handle_frame(t(1), &segment(&hdr, ISN, 0, TcpFlags::SYN, &[]));
        }
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.counters().not_for_us, 4);
        assert_eq!(ep.counters().segments_in, 0);
    }

    #[test]
    fn bad_checksum_is_counted_and_dropped() {
        let mut ep = endpoint();
        let mut frame = syn();
        frame[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 16] ^= 0xff; // TCP checksum
        ep.handle_frame(t(1), &frame);
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.counters().bad_checksum, 1);
        assert_eq!(ep.counters().segments_in, 0);

        // With checksum offload the same frame is trusted (the NIC checked it), and the RST
        // leaves with zero IPv4 and TCP checksums for the NIC to fill in.
        let mut c = config();
        c.verify_rx_checksums = false;
        c.compute_tx_checksums = false;
        let mut ep = Endpoint::new(c).unwrap();
        ep.handle_frame(t(1), &frame);
        let out = drain(&mut ep);
        assert_eq!(out.len(), 1);
        assert!(parse_frame(&out[0], ChecksumMode::OFFLOAD).is_ok());
        assert_eq!(
            parse_frame(&out[0], ChecksumMode::SOFTWARE),
            Err(ParseError::BadChecksum)
        );
    }

    #[test]
    fn frame_for_another_mac_or_ip_is_ignored() {
        let mut ep = endpoint();
        let other_mac = EthIpv4Header::new(
            PEER_MAC,
            EthernetAddress([2, 0, 0, 0, 0, 0x77]),
            PEER_IP,
            OUR_IP,
        );
        let other_ip =
            EthIpv4Header::new(PEER_MAC, OUR_MAC, PEER_IP, Ipv4Address::new(10, 0, 0, 77));
        ep.handle_frame(t(1), &segment(&other_mac, ISN, 0, TcpFlags::SYN, &[]));
        ep.handle_frame(t(1), &segment(&other_ip, ISN, 0, TcpFlags::SYN, &[]));
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.counters().not_for_us, 2);
        assert_eq!(ep.counters().frames_in, 2);
        assert_eq!(ep.counters().segments_in, 0);
    }

    #[test]
    fn parse_errors_map_to_counters() {
        let mut ep = endpoint();
        ep.handle_frame(t(1), &[]); // truncated
        let mut frame = syn();
        frame[ETHERNET_HEADER_LEN] = 0x65; // IP version 6: malformed
        ep.handle_frame(t(1), &frame);
        let mut frame = syn();
        frame[12..14].copy_from_slice(&[0x86, 0xdd]); // IPv6 ethertype
        ep.handle_frame(t(1), &frame);
        let c = ep.counters();
        assert_eq!((c.malformed, c.not_for_us, c.frames_in), (2, 1, 3));
    }

    #[test]
    fn control_queue_bound_holds_under_flood() {
        let mut ep = endpoint();
        let mut buf = vec![0u8; 128];
        for i in 0..10_000u32 {
            let seg = TcpSegmentOut {
                src_port: 1024 + (i % 60_000) as u16,
                dst_port: OUR_PORT,
                seq: SeqNumber(i),
                flags: TcpFlags::SYN,
                ..TcpSegmentOut::default()
            };
            let len = emit_tcp(&mut buf, &peer_hdr(), &seg, &[], ChecksumMode::SOFTWARE).unwrap();
            ep.handle_frame(t(1), &buf[..len]);
            assert!(ep.queue.len() <= CONTROL_QUEUE_CAPACITY);
        }
        assert_eq!(ep.queue.capacity(), CONTROL_QUEUE_CAPACITY);
        assert_eq!(
            ep.counters().control_dropped,
            10_000 - CONTROL_QUEUE_CAPACITY as u64
        );
        assert_eq!(ep.counters().segments_in, 10_000);
        let out = drain(&mut ep);
        assert_eq!(out.len(), CONTROL_QUEUE_CAPACITY);
        assert_eq!(ep.counters().rst_sent, CONTROL_QUEUE_CAPACITY as u64);
        // The oldest were kept: the first RST answers the first SYN.
        let Inbound::Tcp { seg, .. } = parse_frame(&out[0], ChecksumMode::SOFTWARE).unwrap() else {
            panic!("not TCP");
        };
        assert_eq!((seg.dst_port, seg.ack.0), (1024, 1));
    }

    #[test]
    fn poll_transmit_with_a_tiny_buffer_does_not_panic() {
        let mut ep = endpoint();
        ep.handle_frame(t(1), &syn());
        ep.handle_frame(t(1), &arp_request(PEER_MAC, PEER_IP, OUR_IP));
        let mut tiny = [0u8; 10];
        assert_eq!(ep.poll_transmit(t(1), &mut tiny), None);
        assert_eq!(ep.counters().control_dropped, 2);
        assert_eq!(ep.counters().frames_out, 0);
        assert_eq!(ep.counters().rst_sent, 0);
        assert!(drain(&mut ep).is_empty());
        // An empty buffer too.
        ep.handle_frame(t(2), &syn());
        assert_eq!(ep.poll_transmit(t(2), &mut []), None);
        assert_eq!(ep.counters().control_dropped, 3);
    }

    fn feed_and_drain(verify: bool, frame: &[u8]) {
        let mut c = config();
        c.verify_rx_checksums = verify;
        let mut ep = Endpoint::new(c).unwrap();
        let mut big = [0u8; 2048];
        let mut tiny = [0u8; 10];
        for buf in [&mut big[..], &mut tiny[..]] {
            ep.handle_frame(t(1), frame);
            let mut n = 0;
            while ep.poll_transmit(t(1), buf).is_some() {
                n += 1;
                assert!(n <= CONTROL_QUEUE_CAPACITY);
            }
            ep.handle_timeout(t(2));
            let _ = ep.poll_timeout();
        }
        let c = ep.counters();
        assert_eq!(c.frames_in, 2);
        assert!(c.frames_out <= 2);
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
            verify in any::<bool>(),
        ) {
            feed_and_drain(verify, &bytes);
            let mut frame = syn();
            for (at, byte) in mutations {
                let i = at % frame.len();
                frame[i] = byte;
            }
            let keep = frame.len() - cut % 8;
            frame.truncate(keep);
            feed_and_drain(verify, &frame);
        }
    }

    /// Hints passed to [`counting_hint`].
    static HINTS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    /// A prefetch hint that only counts its calls.
    fn counting_hint(_: *const u8, _: usize) {
        HINTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    /// Servers fed the same batches (one frame by frame, one with warm lookups, one with a
    /// prefetch hint) by a client of `n` connections that each send requests for `rounds`
    /// rounds: every output frame and every counter must be the same. Returns the number of
    /// connections accepted and segments received by each.
    fn batched_servers_act_alike(n: usize, rounds: u64) -> (usize, u64) {
        let client_cfg = EndpointConfig {
            iface: InterfaceConfig {
                mac: PEER_MAC.0,
                addr: PEER_IP,
                static_arp: vec![(OUR_IP, OUR_MAC.0)],
                ..InterfaceConfig::default()
            },
            max_connections: 2 * n,
            ..EndpointConfig::default()
        };
        let server_cfg = EndpointConfig {
            iface: InterfaceConfig {
                static_arp: vec![(PEER_IP, PEER_MAC.0)],
                ..config().iface
            },
            max_connections: 2 * n,
            syn_queue: 2 * n,
            ..EndpointConfig::default()
        };
        let hinted_cfg = EndpointConfig {
            prefetch: Some(Prefetch(counting_hint)),
            ..server_cfg.clone()
        };
        let mut client = Endpoint::new(client_cfg).unwrap();
        let mut one = Endpoint::new(server_cfg.clone()).unwrap();
        let mut warm = Endpoint::new(server_cfg).unwrap();
        let mut hinted = Endpoint::new(hinted_cfg).unwrap();
        let backlog = 2 * n;
        let l1 = one.listen(OUR_PORT, backlog).unwrap();
        let l2 = warm.listen(OUR_PORT, backlog).unwrap();
        let l3 = hinted.listen(OUR_PORT, backlog).unwrap();
        let remote = SocketAddrV4::new(OUR_IP, OUR_PORT);
        let conns: Vec<Handle> = (0..n)
            .map(|_| client.connect(t(0), remote).unwrap())
            .collect();
        let mut accepted = Vec::new();
        let mut to_server = drain(&mut client);
        // The SYNs span several groups of `WARM_GROUP`; a garbage frame is dropped alike.
        to_server.push(vec![0xee; 60]);
        for round in 0..rounds {
            let batch: Vec<&[u8]> = to_server.iter().map(Vec::as_slice).collect();
            for frame in &batch {
                one.handle_frame(t(round), frame);
            }
            warm.handle_frames_warm(t(round), batch.iter().copied());
            hinted.handle_frames(t(round), batch.iter().copied());
            while let (Ok(a), Ok(b), Ok(c)) = (one.accept(l1), warm.accept(l2), hinted.accept(l3)) {
                assert_eq!((a, a), (b, c));
                accepted.push(a);
            }
            for &h in &accepted {
                let _ = one.send(h, b"reply");
                let _ = warm.send(h, b"reply");
                let _ = hinted.send(h, b"reply");
            }
            let out_one = drain(&mut one);
            assert_eq!(out_one, drain(&mut warm), "round {round}");
            assert_eq!(out_one, drain(&mut hinted), "round {round}");
            assert_eq!(one.counters(), warm.counters());
            assert_eq!(one.counters(), hinted.counters());
            for frame in &out_one {
                client.handle_frame(t(round), frame);
            }
            for &h in &conns {
                let _ = client.send(h, b"request");
            }
            to_server = drain(&mut client);
        }
        (accepted.len(), one.counters().segments_in)
    }

    /// Moves frames both ways until neither endpoint has anything to send.
    fn exchange(a: &mut Endpoint, b: &mut Endpoint, now: Instant) {
        loop {
            let (ab, ba) = (drain(a), drain(b));
            if ab.is_empty() && ba.is_empty() {
                return;
            }
            for f in &ab {
                b.handle_frame(now, f);
            }
            for f in &ba {
                a.handle_frame(now, f);
            }
        }
    }

    #[test]
    fn recv_with_reads_in_place_what_it_consumes_and_wraps_in_two_slices() {
        let client_cfg = EndpointConfig {
            iface: InterfaceConfig {
                mac: PEER_MAC.0,
                addr: PEER_IP,
                static_arp: vec![(OUR_IP, OUR_MAC.0)],
                ..InterfaceConfig::default()
            },
            ..EndpointConfig::default()
        };
        let server_cfg = EndpointConfig {
            iface: InterfaceConfig {
                static_arp: vec![(PEER_IP, PEER_MAC.0)],
                ..config().iface
            },
            ..EndpointConfig::default()
        };
        let mut client = Endpoint::new(client_cfg).unwrap();
        let mut server = Endpoint::new(server_cfg).unwrap();
        let l = server.listen(OUR_PORT, 8).unwrap();
        let c = client
            .connect(t(0), SocketAddrV4::new(OUR_IP, OUR_PORT))
            .unwrap();
        exchange(&mut client, &mut server, t(0));
        let s = server.accept(l).unwrap();
        // Nothing yet: `f` is not called and the answer is `recv`'s.
        assert_eq!(
            server.recv_with(s, |_, _| panic!("called with nothing to read")),
            Err(crate::state::SocketError::WouldBlock)
        );
        let stream: Vec<u8> = (0..20_000u32).map(|i| (i * 31 + 7) as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        let mut wrapped = false;
        for round in 0..400u64 {
            // Odd sizes on both sides, so that the ring wraps at varying places.
            let chunk = (round as usize * 37) % 700 + 1;
            let end = (sent + chunk).min(stream.len());
            sent += client.send(c, &stream[sent..end]).unwrap_or(0);
            exchange(&mut client, &mut server, t(round));
            let want = (round as usize * 53) % 600;
            let before = server.recv_available(s).unwrap();
            let n = server
                .recv_with(s, |a, b| {
                    wrapped |= !b.is_empty();
                    assert_eq!(a.len() + b.len(), before);
                    let take = want.min(a.len() + b.len());
                    let from_a = take.min(a.len());
                    got.extend_from_slice(&a[..from_a]);
                    got.extend_from_slice(&b[..take - from_a]);
                    take
                })
                .unwrap_or(0);
            assert_eq!(server.recv_available(s).unwrap(), before - n);
            exchange(&mut client, &mut server, t(round));
        }
        assert!(wrapped, "the receive ring never wrapped");
        assert!(sent > 10_000, "only {sent} bytes went");
        // Claiming more than was given consumes everything.
        let rest = server.recv_available(s).unwrap();
        let mut tail = Vec::new();
        if rest > 0 {
            let n = server
                .recv_with(s, |a, b| {
                    tail.extend_from_slice(a);
                    tail.extend_from_slice(b);
                    usize::MAX
                })
                .unwrap();
            assert_eq!(n, rest);
        }
        got.extend_from_slice(&tail);
        assert_eq!(got, stream[..got.len()]);
        assert_eq!(got.len(), sent);
        // End of stream after the peer's FIN: `Ok(0)`, `f` not called.
        client.close(t(500), c).unwrap();
        exchange(&mut client, &mut server, t(500));
        assert_eq!(server.recv_with(s, |_, _| panic!("called at end")), Ok(0));
    }

    /// `handle_frames_warm` (the path taken with many flows) and the prefetch pipeline act
    /// exactly as `handle_frame` frame by frame.
    #[test]
    fn batched_frames_with_warm_lookups_act_as_one_by_one() {
        let (accepted, segments) = batched_servers_act_alike(100, 6);
        assert_eq!(accepted, 100);
        assert!(segments > 300);
    }

    /// With more than `WARM_MIN_FLOWS` flows, where the receive pipeline and the transmit
    /// queue pass addresses to the hint, output and counters are those without a hint, and
    /// the hint was called.
    #[test]
    fn many_flows_with_a_prefetch_hint_act_as_without() {
        let before = HINTS.load(core::sync::atomic::Ordering::Relaxed);
        let n = WARM_MIN_FLOWS + 100;
        let (accepted, segments) = batched_servers_act_alike(n, 3);
        assert_eq!(accepted, n);
        assert!(segments >= 2 * n as u64);
        // Every frame of the second and third rounds hinted a flow cell and a connection.
        assert!(HINTS.load(core::sync::atomic::Ordering::Relaxed) - before > 4 * n);
    }
}
