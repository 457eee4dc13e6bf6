//! One TCP connection: the transmission control block (TCB) and its RFC 9293 state machine.
//!
//! Place in the layers: the [`Endpoint`](crate::Endpoint) owns every [`Tcb`], finds it by
//! 4-tuple, resolves its next hop and writes its frames; this module decides, for one
//! connection, what an arriving segment does ([`Tcb::on_segment`]), what a timer does
//! ([`Tcb::on_timer`]), what the application's calls do, and which segment goes out next
//! ([`Tcb::next_segment`]). It uses the building blocks: [`SendBuffer`]/[`RecvBuffer`],
//! [`Scoreboard`] (RFC 6675), [`RttEstimator`] (RFC 6298), [`NewReno`] (RFC 5681/6582) and
//! the endpoint's [`TimerWheel`].
//!
//! ## Sequence variables
//! `snd_una ≤ snd_nxt ≤ snd_max`: `snd_max` is RFC 9293's SND.NXT (one past the highest
//! octet ever sent, used by every acceptability check), `snd_nxt` the next octet to send,
//! which an RTO moves back to `snd_una` (go-back-N; octets below `snd_max` are then
//! retransmissions). Our FIN, once sent, is the octet at `fin_seq`.
//!
//! ## Choices where the RFCs leave room (each documented at its line)
//! - RST in TIME-WAIT is ignored (RFC 1337), as FreeBSD does.
//! - Timestamps negotiated: a non-RST segment without a timestamp is dropped (RFC 7323
//!   §3.2 SHOULD).
//! - Closing with unread received data, or receiving data after `close`, sends a RST
//!   (RFC 2525 §2.17, as Linux and FreeBSD do).
//! - Zero-window probes carry one octet of new data (RFC 9293 §3.8.6.1).
//! - SACK loss recovery follows RFC 6675 with cwnd = ssthresh during recovery and
//!   `pipe`; without SACK, NewReno's inflated window (RFC 6582).

use crate::buffer::{RecvBuffer, SendBuffer, StoragePool};
use crate::cc::{AckEvent, CongestionControl, DupAckEvent, NewReno, NewRenoConfig, RtoEvent};
use crate::config::{Keepalive, TcpConfig};
use crate::counters::Counters;
use crate::flow::FourTuple;
use crate::rtt::{RttConfig, RttEstimator};
use crate::scoreboard::{NextSegKind, RecoveryView, Scoreboard};
use crate::seq::SeqNumber;
use crate::state::{CloseReason, State};
use crate::time::{Duration, Instant};
use crate::timer::{TimerKind, TimerWheel};
use crate::wire::{EthernetAddress, IcmpError, TcpFlags, TcpOptions, TcpSegment, TcpSegmentOut};

/// RFC 7323 §5.5: a TS.Recent older than 24 days is invalid for PAWS.
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

/// RFC 7323 §2.3: the largest shift count.
const MAX_WSCALE: u8 = 14;

/// Timestamp samples above this are ignored as bogus (a peer echoing garbage).
const MAX_TS_RTT_MS: u32 = 60_000;

/// Event bits a TCB accumulates until the endpoint reports them (flow-level aggregation).
pub(crate) mod ev {
    pub const CONNECTED: u16 = 1 << 0;
    pub const ACCEPTED: u16 = 1 << 1;
    pub const READABLE: u16 = 1 << 2;
    pub const WRITABLE: u16 = 1 << 3;
    pub const PEER_CLOSED: u16 = 1 << 4;
    pub const RESET: u16 = 1 << 5;
    pub const TIMED_OUT: u16 = 1 << 6;
    pub const CLOSED: u16 = 1 << 7;
}

/// Transmit classes, in the order `poll_transmit` serves them (mTCP's priority lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxClass {
    /// SYN, SYN-ACK, RST.
    Control = 0,
    /// Pure ACKs, window updates, keepalive probes.
    Ack = 1,
    /// Data, FIN, retransmissions, zero-window probes.
    Data = 2,
}

/// A RST to send in answer to a segment, outside any connection's sequence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RstReply {
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: TcpFlags,
}

impl RstReply {
    /// RFC 9293 §3.10.7.1's reset for `seg`: `<SEQ=SEG.ACK><CTL=RST>` if it has ACK, else
    /// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. `None` for a segment carrying RST.
    pub fn for_segment(seg: &TcpSegment<'_>) -> Option<RstReply> {
        if seg.flags.rst() {
            return None;
        }
        Some(if seg.flags.ack() {
            RstReply {
                seq: seg.ack,
                ack: SeqNumber(0),
                flags: TcpFlags::RST,
            }
        } else {
            RstReply {
                seq: SeqNumber(0),
                ack: seg.seq + seg.seq_len(),
                flags: TcpFlags::RST | TcpFlags::ACK,
            }
        })
    }
}

/// Endpoint-wide RFC 5961 §7 challenge-ACK budget: at most `limit` per second.
#[derive(Debug, Clone)]
pub(crate) struct ChallengeLimiter {
    limit: u32,
    window_start: Instant,
    sent: u32,
}

impl ChallengeLimiter {
    pub fn new(limit: u32) -> ChallengeLimiter {
        ChallengeLimiter {
            limit,
            window_start: Instant::ZERO,
            sent: 0,
        }
    }

    /// Whether one more challenge ACK may go out at `now`.
    fn allow(&mut self, now: Instant) -> bool {
        if now.saturating_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.sent = 0;
        }
        if self.sent < self.limit {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

/// What a TCB needs from its endpoint while it processes an input.
pub(crate) struct Env<'a> {
    pub now: Instant,
    /// The connection's slot: its key in the timer wheel.
    pub key: u32,
    pub timers: &'a mut TimerWheel,
    pub counters: &'a mut Counters,
    pub challenge: &'a mut ChallengeLimiter,
    /// Freed buffer storage for reuse.
    pub storage: &'a mut StoragePool,
    /// [`TcpConfig::time_wait`] (the endpoint's, not copied into every connection).
    pub time_wait: Duration,
    /// [`TcpConfig::fin_wait2_timeout`].
    pub fin_wait2_timeout: Duration,
    /// [`TcpConfig::idle_timeout`].
    pub idle_timeout: Option<Duration>,
}

impl Env<'_> {
    fn set_timer(&mut self, kind: TimerKind, after: Duration) {
        // Keys are slots below `max_connections`, which `EndpointConfig::validate` keeps far
        // below `TimerWheel::MAX_KEY`; an error here would only lose a timer.
        let _ = self.timers.set(self.key, kind, self.now + after);
    }

    fn cancel(&mut self, kind: TimerKind) {
        self.timers.cancel(self.key, kind);
    }

    fn is_armed(&self, kind: TimerKind) -> bool {
        self.timers.deadline(self.key, kind).is_some()
    }
}

/// What the peer's SYN (or a SYN cookie) told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerSyn {
    pub isn: SeqNumber,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack: bool,
    /// The peer's TSval, if it sent timestamps.
    pub tsval: Option<u32>,
    pub window: u16,
}

/// Flag bits of a TCB (kept in two bytes, see [`Flags`]): those a segment sets and clears
/// in the first byte, so the tests the transmit path combines read one byte; the options
/// and lasting facts in the second.
mod f {
    pub const ACK_NOW: u16 = 1 << 0;
    pub const SEND_SYN: u16 = 1 << 1;
    pub const SEND_RST: u16 = 1 << 2;
    pub const RTX_UNA: u16 = 1 << 3;
    pub const PROBE: u16 = 1 << 4;
    pub const KEEPALIVE_PROBE: u16 = 1 << 5;
    pub const SWS_OVERRIDE: u16 = 1 << 6;
    pub const FIN_QUEUED: u16 = 1 << 7;
    pub const TS: u16 = 1 << 8;
    pub const SACK: u16 = 1 << 9;
    pub const NODELAY: u16 = 1 << 10;
    pub const FIN_RECEIVED: u16 = 1 << 11;
    pub const SYN_LOST: u16 = 1 << 12;
    pub const WANT_WRITABLE: u16 = 1 << 13;
    pub const PASSIVE: u16 = 1 << 14;
    pub const WSCALE: u16 = 1 << 15;
}

/// The flag bits of a TCB ([`f`]), kept as two separate bytes (bits 0-7 and 8-15).
///
/// Every change is a byte-wide read-modify-write, and every test reads one byte: as a
/// `u16`, the compiler narrowed `flags &= !X` to a store of the one byte that changes, and
/// the next 16-bit load of the field could then not be forwarded from the store buffer (a
/// stall of a dozen cycles, several times per segment).
#[derive(Debug, Clone, Copy, Default)]
struct Flags([u8; 2]);

impl Flags {
    #[inline(always)]
    fn has(self, flag: u16) -> bool {
        (self.0[0] & flag as u8) | (self.0[1] & (flag >> 8) as u8) != 0
    }

    #[inline(always)]
    fn insert(&mut self, flag: u16) {
        if flag as u8 != 0 {
            self.0[0] |= flag as u8;
        }
        if flag >> 8 != 0 {
            self.0[1] |= (flag >> 8) as u8;
        }
    }

    #[inline(always)]
    fn remove(&mut self, flag: u16) {
        if flag as u8 != 0 {
            self.0[0] &= !(flag as u8);
        }
        if flag >> 8 != 0 {
            self.0[1] &= !((flag >> 8) as u8);
        }
    }

    fn bits(self) -> u16 {
        u16::from_le_bytes(self.0)
    }
}

/// The next data segment [`Tcb::plan_data`] chose.
#[derive(Debug, Clone, Copy)]
struct Plan {
    seq: SeqNumber,
    len: u32,
    fin: bool,
    /// It resends octets below `snd_max`.
    rtx: bool,
    /// RFC 6675 NextSeg() rule (4).
    rescue: bool,
}

impl Plan {
    fn new(seq: SeqNumber, len: u32, fin: bool, rtx: bool) -> Plan {
        Plan {
            seq,
            len,
            fin,
            rtx,
            rescue: false,
        }
    }
}

/// One connection's state.
///
/// Laid out in the order written (`repr(C)`), most used first: what nearly every segment
/// reads or writes (sequence space, identity, flags, the two buffers' heads, congestion and
/// RTT state) fills the first lines of the slot, which the endpoint hints ahead of a batch;
/// what only loss, probes, keepalive or the end of the connection touch comes last. Rust's
/// own order had put the sequence space at the end, past the hinted lines.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Tcb {
    // Send sequence space (RFC 9293 §3.3.1).
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    snd_max: SeqNumber,
    snd_wnd: u32,
    max_snd_wnd: u32,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    fin_seq: SeqNumber,
    iss: SeqNumber,

    // Receive sequence space.
    irs: SeqNumber,
    /// Right edge of the window last advertised.
    rcv_adv: SeqNumber,
    last_ack_sent: SeqNumber,

    // Timestamps (RFC 7323).
    ts_recent: u32,
    ts_offset: u32,
    high_rxt: SeqNumber,
    /// Consecutive unanswered retransmissions (of SYN, data or FIN) or probes.
    retries: u32,

    pub tuple: FourTuple,
    /// The listener (slot, generation) of a passively opened connection not yet accepted.
    pub listener: Option<(u32, u32)>,
    flags: Flags,
    /// Events not yet reported (bits of [`ev`]).
    pub events: u16,
    /// Send MSS: payload bytes per segment without options.
    smss: u16,
    /// Next hop's MAC, once known.
    pub dst_mac: Option<EthernetAddress>,
    pub state: State,
    /// Which transmit queues hold this slot (bit per [`TxClass`]), and the event queue (bit 3).
    pub queued: u8,
    /// The application holds a handle to it (false for embryonic and orphaned connections).
    pub app_owned: bool,
    /// A passive open still counted in its listener's SYN queue.
    pub embryonic: bool,
    /// Why the connection ended, once it has.
    pub error: Option<CloseReason>,
    snd_wscale: u8,
    rcv_wscale: u8,
    /// Full-sized segments received since the last ACK we sent.
    delack_segs: u8,
    /// Bytes of text that came with the peer's SYN in a simultaneous open, staged in the
    /// receive buffer until the connection is established (RFC 9293 §3.10.7.3).
    syn_text: u16,

    pub send: SendBuffer,
    pub recv: RecvBuffer,
    cc: NewReno,
    rtt: RttEstimator,
    ts_recent_at: Instant,
    /// The RTO deadline when restarted lazily (see `restart_rto_lazily`); at or before the
    /// wheel's entry otherwise.
    rto_at: Instant,
    /// When the last segment arrived from the peer.
    last_rcv: Instant,
    /// When we last sent data (for RFC 5681 §4.1 restart after idle).
    last_snd: Instant,

    // Rarely used: loss recovery, out-of-order FIN, keepalive, per-connection timeouts.
    sb: Scoreboard,
    rescue_rxt: Option<SeqNumber>,
    /// A FIN received out of order, at this sequence number.
    peer_fin: Option<SeqNumber>,
    /// RFC 2883 D-SACK block to report in the next ACK.
    dsack: Option<(SeqNumber, SeqNumber)>,
    keepalive: Option<Keepalive>,
    /// Delayed-ACK timeout; `None` acknowledges every segment at once.
    delayed_ack: Option<Duration>,
}

/// A connection in TIME-WAIT that the application no longer holds, in compact form: what
/// TIME-WAIT's processing of a segment and the ACK it sends read and write (RFC 9293
/// §3.10.7.4), and what [`ConnInfo`](crate::state::ConnInfo) reports. [`Tcb::to_time_wait`]
/// makes one only when everything else of the TCB is at its neutral value (buffers empty,
/// nothing queued, no recovery, no pending flag), so [`Tcb::from_time_wait`] rebuilds a TCB
/// that behaves as the original would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimeWaitState {
    pub tuple: FourTuple,
    pub dst_mac: EthernetAddress,
    flags: u16,
    snd_wscale: u8,
    rcv_wscale: u8,
    smss: u16,
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    snd_wnd: u32,
    max_snd_wnd: u32,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    fin_seq: SeqNumber,
    irs: SeqNumber,
    /// RCV.NXT of the data (the FIN not counted).
    rcv_data_nxt: SeqNumber,
    rcv_adv: SeqNumber,
    last_ack_sent: SeqNumber,
    ts_recent: u32,
    ts_offset: u32,
    ts_recent_at: Instant,
    // For `ConnInfo` only.
    cwnd: u32,
    ssthresh: u32,
    rto: Duration,
    srtt: Option<Duration>,
}

impl TimeWaitState {
    /// Takes the figures that only [`ConnInfo`](crate::state::ConnInfo) reports (congestion
    /// window, RTO, SRTT) from `earlier`: a TCB rebuilt by [`Tcb::from_time_wait`] has fresh
    /// estimators, and TIME-WAIT changes none of them.
    pub fn keep_figures_of(&mut self, earlier: &TimeWaitState) {
        self.cwnd = earlier.cwnd;
        self.ssthresh = earlier.ssthresh;
        self.rto = earlier.rto;
        self.srtt = earlier.srtt;
    }
}

/// Flags that say a TCB still has something to do (a segment to send, a probe, a
/// retransmission): such a TCB is not put in compact TIME-WAIT form.
const TRANSIENT_FLAGS: u16 = f::ACK_NOW
    | f::SEND_SYN
    | f::SEND_RST
    | f::RTX_UNA
    | f::PROBE
    | f::KEEPALIVE_PROBE
    | f::SWS_OVERRIDE;

/// What we offered in our SYN (or are willing to answer in a SYN-ACK).
#[derive(Debug, Clone, Copy)]
struct Offer {
    timestamps: bool,
    sack: bool,
    window_scaling: bool,
}

/// The options of a SYN we send, from our configuration.
pub(crate) fn our_wscale(cfg: &TcpConfig) -> u8 {
    let mut s = 0u8;
    while (cfg.recv_buffer >> s) > usize::from(u16::MAX) && s < MAX_WSCALE {
        s += 1;
    }
    s
}

fn ts_clock(now: Instant) -> u32 {
    now.millis() as u32
}

impl Tcb {
    /// A TCB in CLOSED with buffers sized from `cfg` (they allocate lazily).
    fn blank(
        cfg: &TcpConfig,
        tuple: FourTuple,
        iss: SeqNumber,
        ts_offset: u32,
        now: Instant,
    ) -> Tcb {
        let rtt = RttEstimator::new(RttConfig {
            min_rto: cfg.min_rto,
            max_rto: cfg.max_rto,
            initial_rto: cfg.initial_rto,
            ..RttConfig::default()
        });
        let mut flags = Flags::default();
        if cfg.nodelay {
            flags.insert(f::NODELAY);
        }
        Tcb {
            state: State::Closed,
            tuple,
            dst_mac: None,
            flags,
            events: 0,
            error: None,
            app_owned: false,
            listener: None,
            queued: 0,
            embryonic: false,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            snd_wscale: 0,
            smss: 536,
            fin_seq: iss,
            irs: SeqNumber(0),
            rcv_wscale: 0,
            rcv_adv: SeqNumber(0),
            last_ack_sent: SeqNumber(0),
            peer_fin: None,
            dsack: None,
            ts_recent: 0,
            ts_recent_at: now,
            ts_offset,
            send: SendBuffer::new(cfg.send_buffer),
            recv: RecvBuffer::with_max_ranges(cfg.recv_buffer, SeqNumber(0), cfg.max_ooo_ranges),
            sb: Scoreboard::new(iss),
            rtt,
            cc: NewReno::new(NewRenoConfig::new(536)),
            high_rxt: iss,
            rescue_rxt: None,
            retries: 0,
            delack_segs: 0,
            syn_text: 0,
            rto_at: Instant::ZERO,
            keepalive: cfg.keepalive,
            last_rcv: now,
            last_snd: now,
            delayed_ack: cfg.delayed_ack,
        }
    }

    /// An active open: SYN-SENT with a SYN to send.
    pub fn connect(
        cfg: &TcpConfig,
        tuple: FourTuple,
        iss: SeqNumber,
        ts_offset: u32,
        now: Instant,
    ) -> Tcb {
        let mut t = Tcb::blank(cfg, tuple, iss, ts_offset, now);
        t.state = State::SynSent;
        t.snd_nxt = iss;
        t.flags.insert(f::SEND_SYN);
        // Options we offer; they are enabled when the SYN-ACK echoes them.
        if cfg.timestamps {
            t.flags.insert(f::TS);
        }
        if cfg.sack {
            t.flags.insert(f::SACK);
        }
        if cfg.window_scaling {
            t.flags.insert(f::WSCALE);
            t.rcv_wscale = our_wscale(cfg);
        }
        t.smss = cfg.mss;
        t
    }

    /// A passive open from `syn` (or from a SYN cookie): SYN-RECEIVED with a SYN-ACK to send
    /// (`send_synack`), or ESTABLISHED at once for a cookie (`established`).
    pub fn accept_syn(
        cfg: &TcpConfig,
        tuple: FourTuple,
        iss: SeqNumber,
        ts_offset: u32,
        syn: &PeerSyn,
        now: Instant,
    ) -> Tcb {
        let mut t = Tcb::blank(cfg, tuple, iss, ts_offset, now);
        t.state = State::SynReceived;
        t.flags.insert(f::PASSIVE | f::SEND_SYN);
        t.irs = syn.isn;
        t.recv.reset(syn.isn + 1u32);
        let offer = Offer {
            timestamps: cfg.timestamps,
            sack: cfg.sack,
            window_scaling: cfg.window_scaling,
        };
        t.negotiate(cfg, offer, syn);
        if let Some(tsval) = syn.tsval {
            t.ts_recent = tsval;
            t.ts_recent_at = now;
        }
        // RFC 9293 §3.10.7.2: "SND.WND <- SEG.WND" is set from the (unscaled) SYN window:
        // RFC 7323 §2.2, the window of a SYN is never scaled.
        t.snd_wnd = u32::from(syn.window);
        t.max_snd_wnd = t.snd_wnd;
        t.snd_wl1 = syn.isn;
        t.snd_wl2 = iss;
        t.rcv_adv = t.recv.rcv_nxt();
        t.last_ack_sent = t.recv.rcv_nxt();
        t
    }

    /// This connection in compact TIME-WAIT form, if it is one the endpoint may keep so:
    /// in TIME-WAIT, not held by the application, in no queue, with every byte sent
    /// acknowledged, nothing buffered either way, no recovery, and no flag asking for work.
    /// (Whether a timer other than TIME-WAIT's is armed is the endpoint's to check.)
    pub fn to_time_wait(&self) -> Option<TimeWaitState> {
        let idle = self.state == State::TimeWait
            && !self.app_owned
            && self.listener.is_none()
            && !self.embryonic
            && self.queued == 0
            && self.events == 0
            && self.error.is_none()
            && self.flags.bits() & TRANSIENT_FLAGS == 0
            && self.snd_una == self.snd_max
            && self.send.is_empty()
            && self.recv.is_empty()
            && self.recv.ooo_ranges().next().is_none()
            && self.sb.is_empty()
            && !self.cc.in_recovery()
            && self.peer_fin.is_none()
            && self.dsack.is_none();
        if !idle {
            return None;
        }
        Some(TimeWaitState {
            tuple: self.tuple,
            dst_mac: self.dst_mac?,
            flags: self.flags.bits(),
            snd_wscale: self.snd_wscale,
            rcv_wscale: self.rcv_wscale,
            smss: self.smss,
            snd_una: self.snd_una,
            snd_nxt: self.snd_nxt,
            snd_wnd: self.snd_wnd,
            max_snd_wnd: self.max_snd_wnd,
            snd_wl1: self.snd_wl1,
            snd_wl2: self.snd_wl2,
            fin_seq: self.fin_seq,
            irs: self.irs,
            rcv_data_nxt: self.recv.rcv_nxt(),
            rcv_adv: self.rcv_adv,
            last_ack_sent: self.last_ack_sent,
            ts_recent: self.ts_recent,
            ts_offset: self.ts_offset,
            ts_recent_at: self.ts_recent_at,
            cwnd: self.cc.window(),
            ssthresh: self.cc.ssthresh(),
            rto: self.rtt.rto(),
            srtt: self.rtt.srtt(),
        })
    }

    /// The TCB a compact TIME-WAIT connection stands for, rebuilt to process a segment (or
    /// to be kept in full again). Its buffers are empty, its estimators fresh: TIME-WAIT
    /// uses neither.
    pub fn from_time_wait(cfg: &TcpConfig, s: &TimeWaitState, now: Instant) -> Tcb {
        let mut t = Tcb::blank(cfg, s.tuple, s.snd_una, s.ts_offset, now);
        t.state = State::TimeWait;
        t.dst_mac = Some(s.dst_mac);
        t.flags = Flags(s.flags.to_le_bytes());
        t.snd_nxt = s.snd_nxt;
        t.snd_wnd = s.snd_wnd;
        t.max_snd_wnd = s.max_snd_wnd;
        t.snd_wl1 = s.snd_wl1;
        t.snd_wl2 = s.snd_wl2;
        t.snd_wscale = s.snd_wscale;
        t.smss = s.smss;
        t.fin_seq = s.fin_seq;
        t.irs = s.irs;
        t.rcv_wscale = s.rcv_wscale;
        t.rcv_adv = s.rcv_adv;
        t.last_ack_sent = s.last_ack_sent;
        t.ts_recent = s.ts_recent;
        t.ts_recent_at = s.ts_recent_at;
        t.recv.reset(s.rcv_data_nxt);
        t
    }

    /// [`info`](Self::info) of a compact TIME-WAIT connection.
    pub fn time_wait_info(cfg: &TcpConfig, s: &TimeWaitState) -> crate::state::ConnInfo {
        let mut info = Tcb::from_time_wait(cfg, s, s.ts_recent_at).info();
        info.cwnd = s.cwnd;
        info.ssthresh = s.ssthresh;
        info.rto = s.rto;
        info.srtt = s.srtt;
        info
    }

    /// Option negotiation from the peer's SYN (RFC 7323 §2.2 and §3.2, RFC 2018 §2,
    /// RFC 9293 §3.7.1).
    fn negotiate(&mut self, cfg: &TcpConfig, offer: Offer, syn: &PeerSyn) {
        // RFC 9293 §3.7.1 / RFC 1122 §4.2.2.6: without an MSS option assume 536.
        let peer_mss = syn.mss.filter(|&m| m > 0).unwrap_or(536);
        self.smss = peer_mss.min(cfg.mss).max(64);
        self.flags.remove(f::TS | f::SACK | f::WSCALE);
        if offer.timestamps && syn.tsval.is_some() {
            self.flags.insert(f::TS);
        }
        if offer.sack && syn.sack {
            self.flags.insert(f::SACK);
        }
        // RFC 7323 §2.2: scaling is in effect only if both sides sent the option.
        if let (true, Some(ws)) = (offer.window_scaling, syn.wscale) {
            self.flags.insert(f::WSCALE);
            // RFC 7323 §2.3: a shift above 14 is used as 14.
            self.snd_wscale = ws.min(MAX_WSCALE);
            self.rcv_wscale = our_wscale(cfg);
        } else {
            self.snd_wscale = 0;
            self.rcv_wscale = 0;
        }
        // RFC 5681 §2: SMSS excludes the TCP options, so windows count the payload of a
        // full segment (1448 bytes with timestamps): after an RTO, one SMSS of window is one
        // whole segment, not a segment and a 12-byte fragment.
        let smss = self.payload_mss();
        self.cc = NewReno::new(NewRenoConfig {
            initial_window: cfg.initial_window_segments.map(|n| n.saturating_mul(smss)),
            ..NewRenoConfig::new(smss)
        });
    }

    fn has(&self, flag: u16) -> bool {
        self.flags.has(flag)
    }

    fn set(&mut self, flag: u16, on: bool) {
        if on {
            self.flags.insert(flag);
        } else {
            self.flags.remove(flag);
        }
    }

    /// RCV.NXT including a received FIN.
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.recv.rcv_nxt() + u32::from(self.has(f::FIN_RECEIVED))
    }

    /// Whether the peer's FIN has been received.
    pub fn fin_received(&self) -> bool {
        self.has(f::FIN_RECEIVED)
    }

    /// Whether the application shut the write side (our FIN is queued or sent).
    pub fn fin_queued(&self) -> bool {
        self.has(f::FIN_QUEUED)
    }

    /// A snapshot of the sequence and window variables.
    pub fn info(&self) -> crate::state::ConnInfo {
        crate::state::ConnInfo {
            state: self.state,
            snd_una: self.snd_una,
            snd_nxt: self.snd_nxt,
            snd_max: self.snd_max,
            snd_wnd: self.snd_wnd,
            cwnd: self.cc.window(),
            ssthresh: self.cc.ssthresh(),
            smss: self.smss,
            rcv_nxt: self.rcv_nxt(),
            rcv_wnd: self.recv.window() as u32,
            send_buffered: self.send.len(),
            send_capacity: self.send.capacity(),
            recv_buffered: self.recv.len(),
            recv_capacity: self.recv.capacity(),
            timestamps: self.has(f::TS),
            sack: self.has(f::SACK),
            window_scaling: self.has(f::WSCALE),
            snd_wscale: self.snd_wscale,
            rcv_wscale: self.rcv_wscale,
            rto: self.rtt.rto(),
            srtt: self.rtt.srtt(),
        }
    }

    /// Set or clear Nagle's algorithm (`nodelay` disables it).
    pub fn set_nodelay(&mut self, on: bool) {
        self.set(f::NODELAY, on);
    }

    /// Nagle disabled?
    pub fn nodelay(&self) -> bool {
        self.has(f::NODELAY)
    }

    /// Change keepalive settings; re-arms the timer.
    pub fn set_keepalive(&mut self, ka: Option<Keepalive>, env: &mut Env<'_>) {
        self.keepalive = ka;
        self.arm_keepalive(env);
    }

    /// The keepalive settings.
    pub fn keepalive(&self) -> Option<Keepalive> {
        self.keepalive
    }

    /// Reads fields the segment path reads first (see `Endpoint::handle_frames`): a value
    /// that depends on them, of no meaning.
    #[inline]
    pub fn warm(&self) -> u32 {
        (self.state as u32) ^ self.snd_una.0 ^ self.recv.rcv_nxt().0 ^ u32::from(self.flags.bits())
    }

    fn ts_val(&self, now: Instant) -> u32 {
        ts_clock(now).wrapping_add(self.ts_offset)
    }

    fn ack_now(&mut self) {
        self.flags.insert(f::ACK_NOW);
    }

    // -----------------------------------------------------------------------------------------
    // Segment arrival (RFC 9293 §3.10.7)
    // -----------------------------------------------------------------------------------------

    /// Processes a segment for this connection. Returns a RST to send in answer when the
    /// RFC says so without touching the connection (e.g. an unacceptable ACK in SYN-SENT).
    pub fn on_segment(
        &mut self,
        cfg: &TcpConfig,
        seg: &TcpSegment<'_>,
        env: &mut Env<'_>,
    ) -> Option<RstReply> {
        match self.state {
            State::Closed | State::Listen => RstReply::for_segment(seg),
            State::SynSent => self.on_segment_syn_sent(cfg, seg, env),
            _ => self.on_segment_synchronized(seg, env),
        }
    }

    /// RFC 9293 §3.10.7.3, SYN-SENT.
    fn on_segment_syn_sent(
        &mut self,
        cfg: &TcpConfig,
        seg: &TcpSegment<'_>,
        env: &mut Env<'_>,
    ) -> Option<RstReply> {
        let fl = seg.flags;
        if fl.syn() && fl.fin() && cfg.drop_syn_fin {
            env.counters.syn_fin_dropped += 1;
            return None;
        }
        // "first check the ACK bit ... If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset
        // (unless the RST bit is set, if so drop the segment and return)
        // <SEQ=SEG.ACK><CTL=RST> and discard the segment."
        if fl.ack() && !(self.iss < seg.ack && seg.ack <= self.snd_max) {
            env.counters.out_of_window += 1;
            if fl.rst() {
                return None;
            }
            return Some(RstReply {
                seq: seg.ack,
                ack: SeqNumber(0),
                flags: TcpFlags::RST,
            });
        }
        // "second check the RST bit": RFC 5961 §3.2 keeps RFC 793's rule here: a RST is
        // acceptable in SYN-SENT if the ACK field acknowledges the SYN.
        if fl.rst() {
            if fl.ack() {
                env.counters.rst_received += 1;
                self.close_with(CloseReason::Refused, env);
            }
            return None;
        }
        // "fourth check the SYN bit"
        if !fl.syn() {
            return None;
        }
        let syn = PeerSyn {
            isn: seg.seq,
            mss: seg.options.mss,
            wscale: seg.options.wscale,
            sack: seg.options.sack_permitted,
            tsval: seg.options.timestamp.map(|t| t.0),
            window: seg.window,
        };
        // We offered what the flags say; keep only what the peer echoed.
        let offered = Offer {
            timestamps: self.has(f::TS),
            sack: self.has(f::SACK),
            window_scaling: self.has(f::WSCALE),
        };
        self.negotiate(cfg, offered, &syn);
        // "RCV.NXT is set to SEG.SEQ+1, IRS is set to SEG.SEQ."
        self.irs = seg.seq;
        self.recv.reset(seg.seq + 1u32);
        if let Some((tsval, _)) = seg.options.timestamp {
            self.ts_recent = tsval;
            self.ts_recent_at = env.now;
        }
        self.last_rcv = env.now;
        if fl.ack() {
            // "SND.UNA should be advanced to equal SEG.ACK (if there is an ACK), and any
            // segments on the retransmission queue that are thereby acknowledged should be
            // removed." The SYN is acknowledged; take an RTT sample.
            self.snd_una = seg.ack;
            self.snd_nxt = self.snd_nxt.max(seg.ack);
            self.sb.reset(seg.ack);
            self.high_rxt = seg.ack;
            self.rtt_sample_on_ack(seg, env);
            env.cancel(TimerKind::Rto);
            self.retries = 0;
            // "If SND.UNA > ISS (our SYN has been ACKed), change the connection state to
            // ESTABLISHED, form an ACK segment <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and send it."
            // RFC 7323 §2.2: the window of a SYN-ACK is not scaled.
            self.snd_wnd = u32::from(seg.window);
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            // Our SYN offered this much (unscaled, RFC 7323 §2.2); keep its right edge.
            self.rcv_adv = self.recv.rcv_nxt() + self.recv.window().min(usize::from(u16::MAX));
            self.enter_established(env);
            self.events |= ev::CONNECTED | ev::WRITABLE;
            self.ack_now();
            // "Data or controls that were queued for transmission may be included."
            if !seg.payload.is_empty() {
                self.receive_data(seg, env);
            }
            if fl.fin() {
                // The FIN follows the SYN's sequence number and the data.
                self.receive_fin(seg.seq + 1u32 + seg.payload.len() + 1u32, env);
            }
        } else {
            // "Otherwise, enter SYN-RECEIVED, form a SYN,ACK segment
            // <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> and send it." (simultaneous open). The
            // SYN goes out again, now with ACK; its timer keeps running.
            self.state = State::SynReceived;
            self.snd_wnd = u32::from(seg.window);
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = self.iss;
            self.snd_nxt = self.iss;
            self.rcv_adv = self.recv.rcv_nxt();
            self.flags.insert(f::SEND_SYN);
            // "If there are other controls or text in the segment, queue them for processing
            // after the ESTABLISHED state has been reached": the text waits in the receive
            // buffer, unacknowledged (the SYN-ACK acknowledges the SYN only); a FIN is not
            // kept, the peer sends it again.
            if !seg.payload.is_empty() {
                let n = seg.payload.len().min(usize::from(u16::MAX));
                self.syn_text = self.recv.stage_pooled(&seg.payload[..n], env.storage) as u16;
            }
        }
        None
    }

    /// A SYN-cookie connection: our SYN-ACK (ISN = the cookie) was sent statelessly.
    pub fn synack_sent_by_cookie(&mut self) {
        self.flags.remove(f::SEND_SYN);
        self.snd_nxt = self.iss + 1u32;
        self.snd_max = self.snd_nxt;
    }

    /// RFC 6191 §2 / RFC 1122 §4.2.2.13: may a new SYN reuse this TIME-WAIT 4-tuple?
    pub fn syn_may_reuse_time_wait(&self, syn: &TcpSegment<'_>) -> bool {
        if self.has(f::TS) {
            if let Some((tsval, _)) = syn.options.timestamp {
                // RFC 6191 §2: a SYN whose timestamp "is greater than the last timestamp
                // seen on the previous incarnation" is honoured; one whose timestamp "is
                // equal to the last timestamp seen" only if its Sequence Number "is greater
                // than the last sequence number seen"; an older one is dropped (PAWS).
                // Equal timestamps are common: Linux's clock ticks every millisecond, and a
                // client reconnecting on the same port within it sends the TSval of its last
                // ACK of the previous incarnation.
                return match tsval.wrapping_sub(self.ts_recent) as i32 {
                    d if d > 0 => true,
                    0 => syn.seq > self.rcv_nxt(),
                    _ => false,
                };
            }
        }
        // Without timestamps: "the sequence number of the SYN is greater than the last
        // sequence number seen on the previous incarnation".
        syn.seq > self.rcv_nxt()
    }

    /// The application closed the socket: orphaned connections time out in FIN-WAIT-2.
    pub fn on_app_close(&mut self, env: &mut Env<'_>) {
        if self.state == State::FinWait2 {
            env.set_timer(TimerKind::FinWait2, env.fin_wait2_timeout);
        }
    }

    fn enter_established(&mut self, env: &mut Env<'_>) {
        self.state = State::Established;
        if self.has(f::SYN_LOST) {
            self.cc.on_syn_loss();
        }
        self.rtt.on_handshake_complete();
        self.arm_keepalive(env);
        // A FIN queued by shutdown before the handshake completed goes out now.
        if self.has(f::FIN_QUEUED) {
            self.state = State::FinWait1;
            self.fin_seq = self.snd_una + self.send.len();
        }
    }

    /// RFC 9293 §3.10.7.4: SYN-RECEIVED and the synchronized states.
    fn on_segment_synchronized(
        &mut self,
        seg: &TcpSegment<'_>,
        env: &mut Env<'_>,
    ) -> Option<RstReply> {
        // Simultaneous open (RFC 9293 §3.5 Figure 7, line 6): in SYN-RECEIVED from SYN-SENT, the
        // peer's SYN-ACK acknowledges our SYN and repeats its own SYN, which lies just below
        // RCV.NXT. Trimmed to the window (§3.10.7.4: "trimming off any portions that lie
        // outside the window (including SYN and FIN)") it is an ACK at RCV.NXT; process it so.
        let trimmed;
        let seg = if self.state == State::SynReceived
            && !self.has(f::PASSIVE)
            && seg.flags.syn()
            && seg.flags.ack()
            && !seg.flags.rst()
            && seg.payload.is_empty()
            && seg.seq + 1u32 == self.rcv_nxt()
            && seg.ack == self.snd_max
        {
            let mut s = *seg;
            s.flags.remove(TcpFlags::SYN);
            s.seq = seg.seq + 1u32;
            trimmed = s;
            &trimmed
        } else {
            seg
        };
        let fl = seg.flags;
        // SYN-RECEIVED, passive: a retransmitted SYN means our SYN-ACK was lost (Linux and
        // FreeBSD answer it with the SYN-ACK again).
        if self.state == State::SynReceived
            && fl.syn()
            && !fl.ack()
            && !fl.rst()
            && seg.seq == self.irs
        {
            self.flags.insert(f::SEND_SYN);
            return None;
        }
        // RFC 7323 §3.2: with timestamps in effect, "If a non-RST segment is received without a
        // TSopt, a TCP SHOULD silently drop the segment."
        if self.has(f::TS) && seg.options.timestamp.is_none() && !fl.rst() {
            env.counters.out_of_window += 1;
            return None;
        }
        // RFC 7323 §5.3 R1 (PAWS): "If SEG.TSval < TS.Recent and if TS.Recent is valid, then
        // treat the arriving segment as not acceptable: Send an acknowledgment in reply as
        // specified in RFC 793 page 69 and drop the segment." R1 excludes RST segments.
        if self.has(f::TS) && !fl.rst() {
            if let Some((tsval, _)) = seg.options.timestamp {
                let older = (tsval.wrapping_sub(self.ts_recent) as i32) < 0;
                let valid = env.now.saturating_since(self.ts_recent_at) < PAWS_IDLE;
                if older && valid {
                    env.counters.out_of_window += 1;
                    self.ack_now();
                    return None;
                }
            }
        }
        // RFC 5961 §4.2: "If the SYN bit is set, irrespective of the sequence number, TCP
        // MUST send an ACK (also referred to as challenge ACK) to the remote peer" — so before
        // the sequence check, which would answer with a plain ACK. (SYN-RECEIVED from an
        // active open is treated alike; TIME-WAIT reuse was considered by the endpoint.)
        if fl.syn() && !fl.rst() {
            self.challenge_ack(env);
            return None;
        }
        // "first check sequence number"
        let seg_len = seg.seq_len();
        let rcv_nxt = self.rcv_nxt();
        let wnd = self.recv_window();
        let acceptable = match (seg_len, wnd) {
            (0, 0) => seg.seq == rcv_nxt,
            (0, _) => seg.seq.in_range(rcv_nxt, rcv_nxt + wnd),
            (_, 0) => false,
            (_, _) => {
                seg.seq.in_range(rcv_nxt, rcv_nxt + wnd)
                    || (seg.seq + (seg_len - 1)).in_range(rcv_nxt, rcv_nxt + wnd)
            }
        };
        if !acceptable {
            env.counters.out_of_window += 1;
            // "If an incoming segment is not acceptable, an acknowledgment should be sent in
            // reply (unless the RST bit is set, if so drop the segment and return)".
            // RFC 1337: in TIME-WAIT too. A zero-window probe also lands here.
            if !fl.rst() {
                if self.state == State::TimeWait && fl.fin() {
                    // "TIME-WAIT: The only thing that can arrive in this state is a
                    // retransmission of the remote FIN. Acknowledge it, and restart the 2 MSL
                    // timeout." (It lies below RCV.NXT, so it fails the test above.)
                    self.enter_time_wait(env);
                }
                // RFC 2883 §4: report a duplicate segment in a D-SACK block.
                let end = seg.seq + seg.payload.len();
                if self.has(f::SACK) && !seg.payload.is_empty() && end <= rcv_nxt {
                    self.dsack = Some((seg.seq, end));
                }
                self.ack_now();
            }
            return None;
        }
        // "second check the RST bit" — RFC 5961 §3.2: "1) If the RST bit is set and the
        // sequence number is outside the current receive window, silently drop the segment.
        // 2) If the RST bit is set and the sequence number exactly matches the next expected
        // sequence number (RCV.NXT), then TCP MUST reset the connection. 3) If the RST bit is
        // set and the sequence number does not exactly match the next expected sequence value,
        // yet is within the current receive window, TCP MUST send an acknowledgment
        // (challenge ACK)".
        if fl.rst() {
            if self.state == State::TimeWait {
                // RFC 1337 §3 (TIME-WAIT assassination, fix F1): ignore RST in TIME-WAIT.
                return None;
            }
            if seg.seq != rcv_nxt {
                self.challenge_ack(env);
                return None;
            }
            env.counters.rst_received += 1;
            match self.state {
                // "If this connection was initiated with a passive OPEN (i.e., came from the
                // LISTEN state), then return this connection to LISTEN state": the embryonic
                // connection is deleted; the listener is untouched.
                State::SynReceived if self.has(f::PASSIVE) => {
                    self.close_with(CloseReason::Reset, env)
                }
                // "If this connection was initiated with an active OPEN ... then the connection
                // was refused".
                State::SynReceived => self.close_with(CloseReason::Refused, env),
                // "CLOSING STATE, LAST-ACK STATE ...: If the RST bit is set, then enter the
                // CLOSED state, delete the TCB, and return." Our FIN is still unacknowledged
                // (a SEND outstanding, which "should receive 'reset' responses"): the
                // application learns of the reset, as with Linux and FreeBSD (ECONNRESET).
                _ => self.close_with(CloseReason::Reset, env),
            }
            return None;
        }
        // "fourth, check the SYN bit": RFC 5961 §4.2's challenge ACK, for a SYN with RST.
        if fl.syn() {
            self.challenge_ack(env);
            return None;
        }
        // "fifth check the ACK field: if the ACK bit is off drop the segment and return"
        if !fl.ack() {
            return None;
        }
        self.last_rcv = env.now;
        // RFC 7323 §4.3 (2): "If SEG.TSval >= TS.Recent and SEG.SEQ <= Last.ACK.sent then
        // SEG.TSval is copied to TS.Recent".
        if let (true, Some((tsval, _))) = (self.has(f::TS), seg.options.timestamp) {
            if (tsval.wrapping_sub(self.ts_recent) as i32) >= 0 && seg.seq <= self.last_ack_sent {
                self.ts_recent = tsval;
                self.ts_recent_at = env.now;
            }
        }
        if self.state == State::SynReceived {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state ... If the segment
            // acknowledgment is not acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST>".
            if !(self.snd_una < seg.ack && seg.ack <= self.snd_max) {
                return Some(RstReply {
                    seq: seg.ack,
                    ack: SeqNumber(0),
                    flags: TcpFlags::RST,
                });
            }
            // "SND.WND <- SEG.WND, SND.WL1 <- SEG.SEQ, SND.WL2 <- SEG.ACK" (scaled now:
            // RFC 7323 §2.2, windows after the SYN are scaled).
            self.snd_wnd = u32::from(seg.window) << self.snd_wscale;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.snd_una = seg.ack;
            self.snd_nxt = self.snd_nxt.max(seg.ack);
            self.sb.reset(seg.ack);
            self.high_rxt = seg.ack;
            self.rtt_sample_on_ack(seg, env);
            env.cancel(TimerKind::Rto);
            self.retries = 0;
            self.flags.remove(f::SEND_SYN);
            self.enter_established(env);
            if self.syn_text > 0 {
                self.receive_syn_text(env);
            }
            if self.has(f::PASSIVE) {
                self.events |= ev::ACCEPTED;
            } else {
                self.events |= ev::CONNECTED | ev::WRITABLE;
            }
        } else if !self.process_ack(seg, env) {
            return None;
        }
        // "sixth, check the URG bit": urgent data is delivered inline as ordinary data
        // (RFC 6093 §5 recommends applications not use it).
        // "seventh, process the segment text"
        if !seg.payload.is_empty() {
            match self.state {
                State::Established | State::FinWait1 | State::FinWait2 => {
                    if !self.app_owned && self.listener.is_none() && self.has(f::FIN_QUEUED) {
                        // Data after the application closed: nobody will read it.
                        // RFC 2525 §2.17 / Linux: reset the connection.
                        self.abort_with_rst(CloseReason::Aborted, env);
                        return None;
                    }
                    self.receive_data(seg, env);
                }
                // "CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: This should not occur since a FIN
                // has been received from the remote side. Ignore the segment text."
                _ => self.ack_now(),
            }
        }
        // "eighth, check the FIN bit"
        if fl.fin() {
            self.receive_fin(seg.seq + seg.payload.len() + 1u32, env);
        } else if let Some(fin_end) = self.peer_fin {
            // A FIN that arrived out of order becomes in order once the data before it is in.
            if self.recv.rcv_nxt() + 1u32 == fin_end {
                self.receive_fin(fin_end, env);
            }
        }
        None
    }

    /// An ICMP error quoting a segment of this connection with sequence number `seq`.
    ///
    /// RFC 5927 §4.1: it is acted on only if `seq` is in SND.UNA..SND.NXT (a blind attacker
    /// must guess it). RFC 1122 §4.2.3.9: soft errors (net/host unreachable, time exceeded)
    /// MUST NOT abort a connection, and are ignored here; hard errors (protocol or port
    /// unreachable, and administratively prohibited, RFC 1812 §5.2.7.1) abort a connection
    /// in SYN-SENT as refused — RFC 5461 §4 treats hard errors as soft once synchronized,
    /// so they are ignored in every other state.
    pub fn on_icmp_error(&mut self, error: IcmpError, seq: SeqNumber, env: &mut Env<'_>) {
        let hard = matches!(error, IcmpError::Unreachable | IcmpError::Prohibited);
        if hard && self.state == State::SynSent && self.snd_una <= seq && seq < self.snd_max {
            self.close_with(CloseReason::Refused, env);
        }
    }

    /// RFC 5961 §7: a rate-limited challenge ACK.
    fn challenge_ack(&mut self, env: &mut Env<'_>) {
        if env.challenge.allow(env.now) {
            env.counters.challenge_acks += 1;
            self.ack_now();
        } else {
            env.counters.challenge_acks_limited += 1;
        }
    }

    /// RCV.WND for acceptability: free buffer space, but never more than the window field
    /// can say (65 535 << Rcv.Wind.Shift, RFC 7323 §2.3): a buffer larger than any window we
    /// can advertise must not widen the test (without window scaling, a RST at
    /// RCV.NXT + 65 535 is outside the window and silently dropped, RFC 5961 §3.2).
    ///
    /// The peer's FIN does not shrink it (RFC 9293 keeps RCV.WND): a segment inside it after
    /// the FIN is acceptable and goes on to the RST, SYN and ACK checks (text after a FIN is
    /// ignored in step seven); a retransmitted FIN, ending at RCV.NXT - 1, is outside and
    /// gets its ACK from the first check.
    fn recv_window(&self) -> u32 {
        (self.recv.window() as u32).min(u32::from(u16::MAX) << self.rcv_wscale)
    }

    /// ACK processing for the synchronized states (RFC 9293 §3.10.7.4 "fifth"). Returns
    /// false when the segment must be dropped.
    fn process_ack(&mut self, seg: &TcpSegment<'_>, env: &mut Env<'_>) -> bool {
        let ack = seg.ack;
        // RFC 5961 §5.2: "The ACK value is considered acceptable only if it is in the range
        // of ((SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT). All incoming segments whose
        // ACK value doesn't satisfy the above condition MUST be discarded and an ACK sent
        // back."
        let lowest = SeqNumber(self.snd_una.0.wrapping_sub(self.max_snd_wnd));
        if ack > self.snd_max || ack < lowest {
            env.counters.out_of_window += 1;
            self.challenge_ack(env);
            return false;
        }
        let old_una = self.snd_una;
        let flight_before = self.snd_max - old_una;
        let acked = if ack > old_una { ack - old_una } else { 0 };
        // Bytes of data acknowledged: our FIN occupies the octet at fin_seq.
        let fin_acked = self.fin_sent() && ack == self.fin_seq + 1u32;
        let window = u32::from(seg.window) << self.snd_wscale;

        // SACK scoreboard (RFC 6675 §5): every ACK updates it.
        let mut newly_sacked = 0;
        let mut dsack_only = false;
        let n = seg.options.sack_block_count();
        if self.has(f::SACK) && (n > 0 || acked > 0) {
            let blocks: [(SeqNumber, SeqNumber); 4] = core::array::from_fn(|i| {
                seg.options.sack_blocks[i].unwrap_or((SeqNumber(0), SeqNumber(0)))
            });
            let out = self.sb.on_ack(ack.max(old_una), self.snd_max, &blocks[..n]);
            newly_sacked = out.newly_sacked;
            // RFC 2883 §4.2 / RFC 6675 §2: an ACK whose only news is a D-SACK block reports
            // a duplicate the peer received, not a hole: it is no duplicate ACK.
            dsack_only = out.dsack.is_some() && newly_sacked == 0;
        }

        if acked > 0 {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK. Any segments on
            // the retransmission queue that are thereby entirely acknowledged are removed."
            self.snd_una = ack;
            if self.snd_nxt < ack {
                self.snd_nxt = ack;
            }
            let data_acked = acked - u32::from(fin_acked);
            let freed = self.send.ack(data_acked as usize);
            if freed > 0 && self.has(f::WANT_WRITABLE) && self.state.can_send() {
                self.flags.remove(f::WANT_WRITABLE);
                self.events |= ev::WRITABLE;
            }
            self.retries = 0;
            self.rtt_sample_on_ack(seg, env);
            let action = self.cc.on_ack(&AckEvent {
                ack,
                acked_bytes: acked,
                flight_size: flight_before,
                snd_nxt: self.snd_max,
                now: env.now,
            });
            // RFC 6582's partial-ACK retransmission; with SACK, RFC 6675's NextSeg() chooses
            // instead, and never a hole already retransmitted in this episode.
            let already_resent = self.has(f::SACK) && self.high_rxt > ack;
            if action.retransmit && !already_resent {
                self.flags.insert(f::RTX_UNA);
            }
            if !self.cc.in_recovery() {
                self.high_rxt = ack;
                self.rescue_rxt = None;
            } else if self.high_rxt < ack {
                self.high_rxt = ack;
            }
            // RFC 6298 §5.2: "When all outstanding data has been acknowledged, turn off the
            // retransmission timer." §5.3: "When an ACK is received that acknowledges new
            // data, restart the retransmission timer".
            if self.snd_una == self.snd_max {
                env.cancel(TimerKind::Rto);
            } else if action.restart_rto {
                let rto = self.rtt.rto();
                self.restart_rto_lazily(rto, env);
            }
        } else if ack == old_una && self.snd_max != old_una {
            // RFC 5681 §2 duplicate ACK (or, with SACK, RFC 6675 §2: an ACK carrying new SACK
            // information).
            // A closed window makes ACKs repeat without loss (answers to zero-window probes):
            // they are not duplicate ACKs.
            let classic = seg.payload.is_empty()
                && !seg.flags.syn()
                && !seg.flags.fin()
                && window == self.snd_wnd
                && window != 0;
            if (classic && !dsack_only) || newly_sacked > 0 {
                // RFC 6675 §5 (3) step (2): SACK information alone can say the segment at
                // SND.UNA is lost, before DupThresh duplicate ACKs (a receiver that
                // acknowledges a burst with one ACK sends one duplicate ACK for it).
                let head_lost =
                    self.has(f::SACK) && self.sb.is_lost(self.snd_una, self.payload_mss());
                // RFC 5681 §3.2 step 2: "When [RFC3042] is in use, additional data sent in
                // limited transmit MUST NOT be included in this calculation" (of ssthresh):
                // outside recovery only limited transmit puts more than cwnd in flight.
                let flight_size = if self.cc.in_recovery() {
                    flight_before
                } else {
                    flight_before.min(self.cc.window())
                };
                let action = self.cc.on_dup_ack(&DupAckEvent {
                    ack,
                    flight_size,
                    snd_nxt: self.snd_max,
                    head_lost,
                    now: env.now,
                });
                if action.retransmit {
                    // Fast retransmit: recovery starts at SND.UNA (RFC 6675 §5 (4.1)).
                    self.high_rxt = self.snd_una;
                    self.rescue_rxt = None;
                    self.flags.insert(f::RTX_UNA);
                    env.counters.fast_retransmits += 1;
                }
            }
        }

        // "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be updated. If
        // (SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)), set
        // SND.WND <- SEG.WND, set SND.WL1 <- SEG.SEQ, and set SND.WL2 <- SEG.ACK."
        if ack >= old_una
            && (self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= ack))
        {
            let opened = window > self.snd_wnd;
            let was_closed = self.snd_wnd == 0;
            self.snd_wnd = window;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            if window > 0 {
                env.cancel(TimerKind::Persist);
                if self.has(f::PROBE) {
                    self.flags.remove(f::PROBE);
                }
                if opened {
                    self.retries = 0;
                }
                if was_closed && self.snd_nxt > ack {
                    // What went beyond a closed window (the probe octet) was not accepted
                    // (SEG.ACK did not cover it): send on from SND.UNA, or the octet would be
                    // a hole behind new data until the RTO.
                    self.snd_nxt = ack;
                }
            }
        }

        // State-specific parts of "fifth".
        if fin_acked {
            match self.state {
                // "FIN-WAIT-1: In addition to the processing for the ESTABLISHED state, if the
                // FIN segment is now acknowledged, then enter FIN-WAIT-2 and continue".
                State::FinWait1 => {
                    self.state = State::FinWait2;
                    if !self.app_owned {
                        env.set_timer(TimerKind::FinWait2, env.fin_wait2_timeout);
                    }
                }
                // "CLOSING: ... if the ACK acknowledges our FIN, then enter the TIME-WAIT
                // state; otherwise, ignore the segment."
                State::Closing => self.enter_time_wait(env),
                // "LAST-ACK: The only thing that can arrive in this state is an
                // acknowledgment of our FIN. If our FIN is now acknowledged, delete the TCB,
                // enter the CLOSED state, and return."
                State::LastAck => {
                    self.close_with(CloseReason::Normal, env);
                    return false;
                }
                _ => {}
            }
        }
        if self.state == State::TimeWait {
            // "TIME-WAIT: The only thing that can arrive in this state is a retransmission of
            // the remote FIN. Acknowledge it, and restart the 2 MSL timeout." Anything else
            // inside the window but not at RCV.NXT is acknowledged too, so that the peer
            // learns where we are (FreeBSD alike); a plain duplicate ACK at RCV.NXT is not.
            if seg.flags.fin() {
                self.ack_now();
                self.enter_time_wait(env);
            } else if seg.seq != self.rcv_nxt() {
                self.ack_now();
            }
        }
        true
    }

    /// The RTT sample of an ACK that advanced SND.UNA.
    fn rtt_sample_on_ack(&mut self, seg: &TcpSegment<'_>, env: &mut Env<'_>) {
        if let (true, Some((_, tsecr))) = (self.has(f::TS), seg.options.timestamp) {
            // RFC 7323 §4.1: RTT = now - TSecr, from every ACK advancing SND.UNA.
            let ms = self.ts_val(env.now).wrapping_sub(tsecr);
            if tsecr != 0 && ms <= MAX_TS_RTT_MS {
                self.rtt
                    .on_timestamp_sample(Duration::from_millis(u64::from(ms)), 1);
                return;
            }
        }
        // Without timestamps: the one timed segment (Karn's rule is in the estimator).
        let _ = self.rtt.on_ack(seg.ack, env.now);
    }

    /// RFC 9293 §3.10.7.4 "seventh": data in ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2.
    fn receive_data(&mut self, seg: &TcpSegment<'_>, env: &mut Env<'_>) {
        let data_seq = seg.seq + u32::from(seg.flags.syn());
        let out = self.recv.insert_pooled(data_seq, seg.payload, env.storage);
        use crate::buffer::InsertStatus;
        if out.dropped > 0 {
            env.counters.reassembly_dropped += 1;
        }
        if out.in_order > 0 {
            self.events |= ev::READABLE;
        }
        if self.has(f::SACK) {
            if let Some(d) = out.duplicate {
                self.dsack = Some(d);
            }
        }
        match out.status {
            InsertStatus::InOrder
                if self.recv.ooo_ranges().next().is_none() && out.duplicate.is_none() =>
            {
                // RFC 9293 §3.8.6.3 / RFC 1122 §4.2.3.2: delayed ACK, but "an ACK SHOULD be
                // generated for at least every second full-sized segment" — and at once
                // when the segment filled a hole (RFC 5681 §4.2), handled below. "At least":
                // we acknowledge every second segment of any size, as FreeBSD does (and
                // Linux, whose receive-MSS estimate follows small segments), so that a
                // sender of small segments is not held back by the delay.
                self.delack_segs = self.delack_segs.saturating_add(1);
                let filled_hole = out.in_order > seg.payload.len();
                if filled_hole || self.delack_segs >= 2 || self.delayed_ack.is_none() {
                    self.ack_now();
                } else if !env.is_armed(TimerKind::DelayedAck) {
                    if let Some(d) = self.delayed_ack {
                        env.set_timer(TimerKind::DelayedAck, d);
                    }
                }
            }
            // RFC 5681 §4.2: "A TCP receiver SHOULD send an immediate duplicate ACK when an
            // out-of-order segment arrives ... [and] an immediate ACK when the incoming segment
            // fills in all or part of a gap in the sequence space."
            _ => self.ack_now(),
        }
    }

    /// The text of a simultaneous-open SYN, staged since, is received now that the connection
    /// is established; acknowledged like any in-order segment (delayed).
    #[cold]
    fn receive_syn_text(&mut self, env: &mut Env<'_>) {
        let n = self.recv.commit_staged(usize::from(self.syn_text));
        self.syn_text = 0;
        if n == 0 {
            return;
        }
        self.events |= ev::READABLE;
        self.delack_segs = self.delack_segs.saturating_add(1);
        if self.delack_segs >= 2 || self.delayed_ack.is_none() {
            self.ack_now();
        } else if !env.is_armed(TimerKind::DelayedAck) {
            if let Some(d) = self.delayed_ack {
                env.set_timer(TimerKind::DelayedAck, d);
            }
        }
    }

    /// The peer's FIN, at sequence number `fin_end - 1`.
    fn receive_fin(&mut self, fin_end: SeqNumber, env: &mut Env<'_>) {
        if self.has(f::FIN_RECEIVED) {
            // A retransmitted FIN: answer it (TIME-WAIT handled in process_ack).
            self.ack_now();
            return;
        }
        // Only a FIN in order is processed; an earlier one waits for the data before it.
        if self.recv.rcv_nxt() + 1u32 != fin_end {
            if fin_end > self.recv.rcv_nxt() {
                self.peer_fin = Some(fin_end);
            }
            self.ack_now();
            return;
        }
        self.peer_fin = None;
        self.flags.insert(f::FIN_RECEIVED);
        self.events |= ev::PEER_CLOSED | ev::READABLE;
        self.ack_now();
        match self.state {
            // "SYN-RECEIVED, ESTABLISHED: Enter the CLOSE-WAIT state."
            State::SynReceived | State::Established => self.state = State::CloseWait,
            // "FIN-WAIT-1: If our FIN has been ACKed (perhaps in this segment), then enter
            // TIME-WAIT, start the time-wait timer, turn off the other timers; otherwise,
            // enter the CLOSING state."
            State::FinWait1 => {
                if self.fin_sent() && self.snd_una == self.fin_seq + 1u32 {
                    self.enter_time_wait(env);
                } else {
                    self.state = State::Closing;
                }
            }
            // "FIN-WAIT-2: Enter the TIME-WAIT state. Start the time-wait timer, turn off the
            // other timers."
            State::FinWait2 => self.enter_time_wait(env),
            _ => {}
        }
    }

    fn enter_time_wait(&mut self, env: &mut Env<'_>) {
        self.state = State::TimeWait;
        for kind in [
            TimerKind::Rto,
            TimerKind::Persist,
            TimerKind::Keepalive,
            TimerKind::FinWait2,
        ] {
            env.cancel(kind);
        }
        if env.time_wait == Duration::ZERO {
            self.close_with(CloseReason::Normal, env);
            return;
        }
        env.set_timer(TimerKind::TimeWait, env.time_wait);
        self.send.shrink_into(env.storage);
        self.recv.shrink_into(env.storage);
    }

    /// Ends the connection: CLOSED, timers off, events for the application.
    pub fn close_with(&mut self, reason: CloseReason, env: &mut Env<'_>) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        env.timers.cancel_all(env.key);
        if self.error.is_none() {
            self.error = Some(reason);
        }
        match reason {
            CloseReason::Reset | CloseReason::Refused => self.events |= ev::RESET,
            CloseReason::TimedOut => {
                env.counters.timeouts += 1;
                self.events |= ev::TIMED_OUT;
            }
            _ => {}
        }
        self.events |= ev::CLOSED;
        if reason != CloseReason::Normal {
            self.send.clear_into(env.storage);
        }
        self.flags
            .remove(f::ACK_NOW | f::SEND_SYN | f::RTX_UNA | f::PROBE | f::KEEPALIVE_PROBE);
    }

    /// Sends `<SEQ=SND.NXT><CTL=RST>` (as `abort` does) and closes.
    pub fn abort_with_rst(&mut self, reason: CloseReason, env: &mut Env<'_>) {
        let send_rst = matches!(
            self.state,
            State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
        );
        self.close_with(reason, env);
        if send_rst {
            self.flags.insert(f::SEND_RST);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------------------------------

    /// A timer of this connection fired.
    pub fn on_timer(&mut self, kind: TimerKind, cfg: &TcpConfig, env: &mut Env<'_>) {
        match kind {
            TimerKind::Rto | TimerKind::SynAckRetry => self.on_rto(cfg, env),
            TimerKind::DelayedAck => {
                if self.state != State::Closed {
                    self.ack_now();
                }
            }
            TimerKind::Persist => self.on_persist(cfg, env),
            TimerKind::Keepalive => self.on_keepalive(env),
            // The application closed and the peer never sent its FIN.
            TimerKind::FinWait2 => {
                if self.state == State::FinWait2 {
                    self.close_with(CloseReason::TimedOut, env);
                }
            }
            TimerKind::TimeWait => {
                if self.state == State::TimeWait {
                    self.close_with(CloseReason::Normal, env);
                }
            }
            TimerKind::Arp => {}
        }
    }

    /// Restart the RTO timer to fire `rto` from now. The ACK clock restarts it on nearly
    /// every ACK; instead of moving the wheel entry each time, the true deadline is kept in
    /// `rto_at` and an earlier wheel entry, when it fires, re-arms itself for it.
    fn restart_rto_lazily(&mut self, rto: Duration, env: &mut Env<'_>) {
        let at = env.now + rto;
        self.rto_at = at;
        match env.timers.deadline(env.key, TimerKind::Rto) {
            Some(armed) if armed <= at => {}
            _ => env.set_timer(TimerKind::Rto, rto),
        }
    }

    /// Arm the RTO timer to fire `rto` from now.
    fn set_rto(&mut self, rto: Duration, env: &mut Env<'_>) {
        self.rto_at = env.now + rto;
        env.set_timer(TimerKind::Rto, rto);
    }

    fn on_rto(&mut self, cfg: &TcpConfig, env: &mut Env<'_>) {
        if self.rto_at > env.now {
            // Restarted lazily since this entry was armed: wait for the real deadline.
            let wait = self.rto_at.saturating_since(env.now);
            env.set_timer(TimerKind::Rto, wait);
            return;
        }
        let handshake = matches!(self.state, State::SynSent | State::SynReceived);
        let outstanding = self.snd_max != self.snd_una || handshake;
        if !outstanding || self.state == State::Closed || self.state == State::TimeWait {
            return;
        }
        // RFC 9293 §3.8.3 R2 and RFC 1122 §4.2.3.5: give up after the configured number
        // of retransmissions.
        let limit = if handshake {
            cfg.syn_retries
        } else {
            cfg.data_retries
        };
        if self.retries >= limit {
            self.close_with(CloseReason::TimedOut, env);
            return;
        }
        self.retries += 1;
        let repeated = self.rtt.backoff() > 0;
        // RFC 6298 §5.5: back off the timer; §5.4: retransmit the earliest segment.
        self.rtt.on_timeout();
        if handshake {
            self.flags.insert(f::SEND_SYN | f::SYN_LOST);
            self.cc.on_syn_loss();
        } else {
            self.cc.on_rto(&RtoEvent {
                flight_size: self.snd_max - self.snd_una,
                snd_nxt: self.snd_max,
                repeated,
                now: env.now,
            });
            // RFC 6675 §5.1: after an RTO the scoreboard is not trusted (reneging).
            self.sb.reset(self.snd_una);
            self.high_rxt = self.snd_una;
            self.rescue_rxt = None;
            // Go back: everything from SND.UNA is sent again as the window opens.
            self.snd_nxt = self.snd_una;
            self.flags.insert(f::RTX_UNA);
        }
        // §5.6: restart the timer with the backed-off value when the segment goes out.
        let rto = self.rtt.rto();
        self.set_rto(rto, env);
    }

    fn on_persist(&mut self, cfg: &TcpConfig, env: &mut Env<'_>) {
        // Nothing buffered: nothing to probe with. (A probe octet already out is still
        // buffered: when it was all the data, nothing is "unsent", yet it must be probed
        // again — or, the RTO not owning it, no timer would be left at all.)
        if !self.state.is_synchronized() || self.send.is_empty() && !self.has(f::PROBE) {
            return;
        }
        if self.snd_wnd > 0 {
            // The SWS override timer: send what the window allows.
            if self.snd_nxt == self.snd_una && !self.data_ready() {
                self.flags.insert(f::SWS_OVERRIDE);
            }
            return;
        }
        if self.retries >= cfg.data_retries
            && env.now.saturating_since(self.last_rcv) > self.rtt.rto()
        {
            self.close_with(CloseReason::TimedOut, env);
            return;
        }
        self.retries += 1;
        // RFC 9293 §3.8.6.1: probe with one octet of new data; RFC 1122 §4.2.2.17: the
        // interval grows exponentially.
        self.flags.insert(f::PROBE);
        self.snd_nxt = self.snd_una;
        self.rtt.on_timeout();
        let rto = self.rtt.rto();
        env.set_timer(TimerKind::Persist, rto);
    }

    /// Arms the keepalive timer, which also watches the idle timeout: it fires after the
    /// keepalive idle time or the idle timeout, whichever is sooner, and re-arms itself from
    /// the last segment received (no work per segment).
    fn arm_keepalive(&mut self, env: &mut Env<'_>) {
        let after = match (self.keepalive.map(|ka| ka.idle), env.idle_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match after {
            Some(after) if self.state.is_synchronized() && self.state != State::TimeWait => {
                env.set_timer(TimerKind::Keepalive, after);
            }
            _ => env.cancel(TimerKind::Keepalive),
        }
    }

    fn on_keepalive(&mut self, env: &mut Env<'_>) {
        if !matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait2
        ) {
            return;
        }
        let idle = env.now.saturating_since(self.last_rcv);
        if let Some(limit) = env.idle_timeout {
            if idle >= limit {
                self.abort_with_rst(CloseReason::TimedOut, env);
                return;
            }
        }
        let until_idle_limit = env.idle_timeout.map(|t| t.saturating_sub(idle));
        let Some(ka) = self.keepalive else {
            if let Some(d) = until_idle_limit {
                env.set_timer(TimerKind::Keepalive, d);
            }
            return;
        };
        let sooner = |d: Duration| until_idle_limit.map_or(d, |t| t.min(d));
        if idle < ka.idle {
            env.set_timer(TimerKind::Keepalive, sooner(ka.idle.saturating_sub(idle)));
            return;
        }
        // RFC 1122 §4.2.3.6: probes every `interval`; after `count` unanswered, the
        // connection is dead.
        let probes = (idle.saturating_sub(ka.idle).micros() / ka.interval.micros().max(1)) as u32;
        if probes >= ka.count {
            self.close_with(CloseReason::TimedOut, env);
            return;
        }
        self.flags.insert(f::KEEPALIVE_PROBE);
        env.set_timer(TimerKind::Keepalive, sooner(ka.interval));
    }

    // -----------------------------------------------------------------------------------------
    // Application calls
    // -----------------------------------------------------------------------------------------

    /// The application wants to write; returns bytes taken.
    pub fn write(&mut self, data: &[u8], storage: &mut StoragePool) -> usize {
        let n = self.send.write_pooled(data, storage);
        if n < data.len() {
            self.flags.insert(f::WANT_WRITABLE);
        }
        n
    }

    /// New send and receive buffer sizes ([`Endpoint::set_buffer_sizes`]).
    ///
    /// [`Endpoint::set_buffer_sizes`]: crate::Endpoint::set_buffer_sizes
    pub fn set_buffer_sizes(&mut self, send: usize, recv: usize) {
        self.send.set_capacity(send);
        self.recv.set_capacity(recv);
    }

    /// Report the next room freed by an acknowledgment ([`Endpoint::want_writable`]).
    ///
    /// [`Endpoint::want_writable`]: crate::Endpoint::want_writable
    pub fn want_writable(&mut self) {
        self.flags.insert(f::WANT_WRITABLE);
    }

    /// The application read `n` bytes: open the window and say so if it grew enough.
    /// Returns whether that made an ACK (a window update) due.
    #[must_use = "a due ACK must be queued (Endpoint::after)"]
    pub fn on_app_read(&mut self, n: usize) -> bool {
        if n == 0 || !self.state.can_receive() {
            return false;
        }
        // RFC 9293 §3.8.6.2.2 (receiver SWS avoidance): announce a larger window once it grew
        // by min(half the buffer, one MSS) beyond what was advertised; RFC 1122 §4.2.3.3.
        let right = self.recv.rcv_nxt() + self.recv.window();
        let grown = if right > self.rcv_adv {
            right - self.rcv_adv
        } else {
            0
        };
        let threshold = (self.recv.capacity() / 2).min(2 * usize::from(self.smss)) as u32;
        if grown >= threshold.max(1) && !self.has(f::ACK_NOW) {
            self.ack_now();
            return true;
        }
        false
    }

    /// Shut the write side: queue our FIN after the data (RFC 9293 §3.10.4 CLOSE).
    pub fn shutdown_write(&mut self, env: &mut Env<'_>) {
        if self.has(f::FIN_QUEUED) {
            return;
        }
        self.flags.insert(f::FIN_QUEUED);
        match self.state {
            // "ESTABLISHED: Queue this until all preceding SENDs have been segmentized, then
            // form a FIN segment and send it. In any case, enter FIN-WAIT-1 state."
            State::Established => self.state = State::FinWait1,
            // "CLOSE-WAIT: Queue this request until all preceding SENDs have been
            // segmentized; then send a FIN segment, enter LAST-ACK state."
            State::CloseWait => self.state = State::LastAck,
            // SYN-SENT / SYN-RECEIVED: "queue for processing after entering ESTABLISHED".
            _ => return,
        }
        self.fin_seq = self.snd_una + self.send.len();
        let _ = env;
    }

    /// Our FIN has been sent (it occupies `fin_seq`).
    fn fin_sent(&self) -> bool {
        self.has(f::FIN_QUEUED) && self.state_past_fin() && self.snd_max > self.fin_seq
    }

    fn state_past_fin(&self) -> bool {
        matches!(
            self.state,
            State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck | State::TimeWait
        )
    }

    // -----------------------------------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------------------------------

    /// Unsent data bytes (from `snd_nxt` to the end of the buffer).
    fn unsent(&self) -> usize {
        let sent = self.snd_nxt - self.snd_una;
        self.send.len().saturating_sub(sent as usize)
    }

    /// Which classes have something to send (bit `1 << class`), computed at once.
    ///
    /// `queued` holds the classes already in a transmit queue: a queued data class is taken
    /// as ready without planning the segment (it is planned when its turn comes; if nothing
    /// can go then, the connection is looked at again and a pending ACK goes on its own).
    pub fn wants_mask(&self, queued: u8) -> u8 {
        self.wants_given(self.data_may_go(queued))
    }

    /// Whether a data segment may go (see [`wants_mask`](Self::wants_mask) for `queued`).
    pub fn data_may_go(&self, queued: u8) -> bool {
        queued & (1 << TxClass::Data as u8) != 0
            || self.state.is_synchronized() && self.state != State::TimeWait && self.data_ready()
    }

    /// [`wants_mask`](Self::wants_mask) with the data class's readiness already known.
    pub fn wants_given(&self, data: bool) -> u8 {
        let ctl = self.has(f::SEND_SYN | f::SEND_RST);
        if self.state == State::Closed {
            return u8::from(ctl);
        }
        let ack = self.has(f::KEEPALIVE_PROBE) || self.has(f::ACK_NOW) && !data;
        u8::from(ctl) | u8::from(ack) << 1 | u8::from(data) << 2
    }

    /// A keepalive probe waits to go out (in the ACK class, whatever data is queued).
    pub fn keepalive_probe_due(&self) -> bool {
        self.has(f::KEEPALIVE_PROBE)
    }

    /// Whether this connection has something for class `class` right now.
    pub fn wants(&self, class: TxClass) -> bool {
        match class {
            TxClass::Control => self.has(f::SEND_SYN | f::SEND_RST),
            // A data segment about to go carries the ACK instead.
            TxClass::Ack => {
                self.state != State::Closed
                    && (self.has(f::KEEPALIVE_PROBE) || self.has(f::ACK_NOW) && !self.data_ready())
            }
            TxClass::Data => {
                self.state.is_synchronized() && self.state != State::TimeWait && self.data_ready()
            }
        }
    }

    /// Whether a data/FIN segment may go out now (window, cwnd, Nagle).
    #[inline]
    fn data_ready(&self) -> bool {
        !self.nothing_to_send() && self.plan_data().is_some()
    }

    /// The common case, tested inline before planning: no forced retransmission or probe,
    /// no unsent data, no FIN queued (or it is out), no SACK recovery (which may resend
    /// holes).
    #[inline]
    fn nothing_to_send(&self) -> bool {
        !self.flags.has(f::RTX_UNA | f::PROBE)
            && self.unsent() == 0
            && (!self.has(f::FIN_QUEUED) || self.snd_nxt > self.fin_seq)
            && !(self.has(f::SACK) && self.cc.in_recovery())
    }

    /// RFC 3042 limited transmit (RFC 6675 §5 (3) step (3)): on each of the first two
    /// duplicate ACKs, one previously unsent segment may go beyond cwnd ("the amount of
    /// outstanding data would remain less than or equal to the congestion window plus 2
    /// segments"); cwnd itself does not change. A hole followed by too few segments to bring
    /// three duplicate ACKs is then still found by fast retransmit, not by the timer. Only
    /// outside recovery, and only for new data (not after a timeout rewound SND.NXT).
    #[inline]
    fn limited_transmit(&self, smss: u32) -> u32 {
        let dup = self.cc.dup_acks();
        if dup == 0 || self.snd_nxt != self.snd_max || self.cc.in_recovery() {
            return 0;
        }
        dup.min(2) * smss
    }

    /// The next data segment.
    fn plan_data(&self) -> Option<Plan> {
        if !self.state.is_synchronized() || self.state == State::Closed {
            return None;
        }
        if self.nothing_to_send() {
            return None;
        }
        let fin_pending =
            self.has(f::FIN_QUEUED) && self.state_past_fin() && self.state != State::TimeWait;
        let smss = self.payload_mss();
        // What this segment's payload may be: less when it carries SACK blocks.
        let room = self.payload_room();
        // Forced retransmission of the first unacknowledged segment (fast retransmit, partial
        // ACK, RTO): regardless of cwnd (RFC 5681 §3.2 step 3, RFC 6582 §3.2).
        if self.has(f::RTX_UNA) && self.snd_max != self.snd_una {
            let data_out = (self.snd_max - self.snd_una).min(self.send.len() as u32);
            let len = data_out.min(room);
            let fin = fin_pending && len == data_out && self.snd_max > self.fin_seq;
            if len > 0 || fin {
                return Some(Plan::new(self.snd_una, len, fin, true));
            }
        }
        // Zero-window probe: one octet beyond the window (RFC 9293 §3.8.6.1).
        if self.has(f::PROBE) && self.snd_wnd == 0 {
            if !self.send.is_empty() {
                return Some(Plan::new(
                    self.snd_una,
                    1,
                    false,
                    self.snd_max != self.snd_una,
                ));
            }
            return None;
        }
        let sack_recovery = self.has(f::SACK) && self.cc.in_recovery();
        let in_flight = if sack_recovery {
            self.sb.pipe(self.snd_max, self.high_rxt, smss)
        } else {
            self.snd_nxt - self.snd_una
        };
        let cwnd = if sack_recovery {
            self.cc.ssthresh()
        } else {
            self.cc.window() + self.limited_transmit(smss)
        };
        let cwnd_room = cwnd.saturating_sub(in_flight);
        let wnd_end = self.snd_una + self.snd_wnd;
        let wnd_room = if wnd_end > self.snd_nxt {
            wnd_end - self.snd_nxt
        } else {
            0
        };

        if sack_recovery {
            // RFC 6675 §5 (C): "If cwnd - pipe >= 1 SMSS, the sender SHOULD transmit one or
            // more segments" chosen by NextSeg().
            if cwnd_room < smss {
                return None;
            }
            let new_data = (self.unsent() as u32).min(wnd_room);
            let next = self.sb.next_seg(&RecoveryView {
                snd_nxt: self.snd_max,
                high_rxt: self.high_rxt,
                rescue_rxt: self.rescue_rxt,
                smss,
                new_data,
            })?;
            let rtx = next.seq < self.snd_max;
            // New data continues from snd_nxt (== snd_max outside go-back-N).
            let seq = if rtx { next.seq } else { self.snd_nxt };
            let avail = (self.send.len() as u32).saturating_sub(seq - self.snd_una);
            let len = next.len.min(avail).min(room);
            let fin = fin_pending && !rtx && len == avail && seq + len == self.fin_seq;
            if len == 0 && !fin {
                return None;
            }
            let rescue = next.kind == NextSegKind::Rescue;
            return Some(Plan {
                seq,
                len,
                fin,
                rtx,
                rescue,
            });
        }

        let unsent = self.unsent() as u32;
        let fin_unsent =
            fin_pending && self.snd_nxt + unsent == self.fin_seq && !self.fin_out_at_nxt();
        if unsent == 0 {
            if fin_unsent {
                return Some(Plan::new(
                    self.snd_nxt,
                    0,
                    true,
                    self.snd_nxt < self.snd_max,
                ));
            }
            return None;
        }
        let len = unsent.min(room).min(cwnd_room).min(wnd_room);
        if len == 0 {
            return None;
        }
        let rtx = self.snd_nxt < self.snd_max;
        let all = len == unsent;
        // RFC 9293 §3.8.6.2.1 (sender SWS avoidance) and RFC 1122 §4.2.3.4 (Nagle): send if
        // a full segment fits, or if this is all the data and nothing is unacknowledged (or
        // Nagle is off), or if at least half the peer's largest window can go.
        let nothing_in_flight = self.snd_nxt == self.snd_una;
        let send = rtx
            || len == room
            || (all && (nothing_in_flight || self.has(f::NODELAY) || fin_unsent))
            || (nothing_in_flight && len >= self.max_snd_wnd / 2)
            // RFC 9293 §3.8.6.2.1 (4): the override timeout expired.
            || (nothing_in_flight && self.has(f::SWS_OVERRIDE));
        if !send {
            return None;
        }
        let fin = all && fin_unsent;
        Some(Plan::new(self.snd_nxt, len, fin, rtx))
    }

    /// Our FIN already sent at snd_nxt (snd_nxt is past it).
    fn fin_out_at_nxt(&self) -> bool {
        self.snd_nxt > self.fin_seq
    }

    /// Payload bytes per segment: the MSS less the options every segment carries.
    fn payload_mss(&self) -> u32 {
        let opts = if self.has(f::TS) { 12 } else { 0 };
        u32::from(self.smss).saturating_sub(opts).max(1)
    }

    /// SACK blocks the next segment carries ([`fill_ack`](Self::fill_ack)): a pending
    /// D-SACK block and the out-of-order ranges, as many as fit beside timestamps.
    fn sack_blocks_due(&self) -> usize {
        if !self.has(f::SACK) {
            return 0;
        }
        let max = if self.has(f::TS) { 3 } else { 4 };
        (usize::from(self.dsack.is_some()) + self.recv.ooo_range_count()).min(max)
    }

    /// Payload bytes of the next data segment: [`payload_mss`](Self::payload_mss) less the
    /// SACK option it will carry. Options count against the MSS (RFC 9293 §3.7.1: "if there
    /// are any IP or TCP options to be sent in a packet, then the sender must decrease the
    /// size of the TCP data accordingly"); a full-sized segment with SACK blocks would
    /// otherwise exceed the path MTU.
    fn payload_room(&self) -> u32 {
        match self.sack_blocks_due() {
            0 => self.payload_mss(),
            n => self.payload_mss().saturating_sub(4 + 8 * n as u32).max(1),
        }
    }

    /// Fills `seg` with the next segment of class `class` and returns the payload range
    /// `(offset from SND.UNA, len)`, or `None` if there is nothing to send in that class.
    /// Updates sequence state, timers and counters as if the segment were sent.
    #[inline(always)]
    pub fn next_segment(
        &mut self,
        class: TxClass,
        cfg: &TcpConfig,
        env: &mut Env<'_>,
        seg: &mut TcpSegmentOut,
    ) -> Option<(usize, usize)> {
        seg.src_port = self.tuple.local_port;
        seg.dst_port = self.tuple.remote_port;
        seg.options = TcpOptions::default();
        seg.urgent = 0;
        match class {
            TxClass::Control => self.next_control(cfg, env, seg),
            TxClass::Ack => {
                if !self.wants(TxClass::Ack) {
                    return None;
                }
                if self.has(f::KEEPALIVE_PROBE) {
                    // RFC 1122 §4.2.3.6: "SEG.SEQ = SND.NXT-1" with no data.
                    self.flags.remove(f::KEEPALIVE_PROBE);
                    seg.seq = SeqNumber(self.snd_una.0.wrapping_sub(1));
                } else {
                    // RFC 9293 "<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>": the highest sequence
                    // number sent, even while retransmitting from further back — an older
                    // SEQ could fall below the peer's RCV.NXT and be dropped as unacceptable,
                    // losing the ACK it carries.
                    seg.seq = self.snd_max;
                }
                seg.flags = TcpFlags::ACK;
                self.fill_ack(env, seg);
                env.counters.segments_out += 1;
                Some((0, 0))
            }
            TxClass::Data => {
                let Plan {
                    seq,
                    len,
                    fin,
                    rtx,
                    rescue,
                } = self.plan_data()?;
                if rescue {
                    // RFC 6675 §4 rule (4): one rescue retransmission per recovery episode.
                    self.rescue_rxt = Some(self.snd_max);
                }
                seg.seq = seq;
                seg.flags = TcpFlags::ACK;
                if len > 0 && (seq + len - self.snd_una) as usize >= self.send.len() {
                    seg.flags |= TcpFlags::PSH;
                }
                if fin {
                    seg.flags |= TcpFlags::FIN;
                }
                self.fill_ack(env, seg);
                let end = seq + len + u32::from(fin);
                if self.has(f::RTX_UNA) && seq == self.snd_una {
                    self.flags.remove(f::RTX_UNA);
                }
                self.flags.remove(f::SWS_OVERRIDE);
                if rtx {
                    env.counters.retransmits += 1;
                    self.rtt.on_retransmit();
                    if self.cc.in_recovery() && self.high_rxt < end {
                        self.high_rxt = end;
                    }
                } else if !self.has(f::TS) && !self.has(f::PROBE) {
                    self.rtt.start_timing(end, env.now);
                }
                if self.has(f::PROBE) {
                    // The probe octet is in flight; the persist timer (not the RTO) owns it.
                    self.flags.remove(f::PROBE);
                    if end > self.snd_max {
                        self.snd_max = end;
                    }
                    self.snd_nxt = end;
                    env.counters.segments_out += 1;
                    return Some(((seq - self.snd_una) as usize, len as usize));
                }
                // RFC 5681 §4.1: restart after idle.
                if self.snd_una == self.snd_max
                    && env.now.saturating_since(self.last_snd) > self.rtt.rto()
                {
                    self.cc.on_idle_restart();
                }
                self.last_snd = env.now;
                if end > self.snd_nxt {
                    self.snd_nxt = end;
                }
                if end > self.snd_max {
                    self.snd_max = end;
                }
                // RFC 6298 §5.1: "Every time a packet containing data is sent (including a
                // retransmission), if the timer is not running, start it".
                if !env.is_armed(TimerKind::Rto) || rtx && seq == self.snd_una {
                    let rto = self.rtt.rto();
                    self.set_rto(rto, env);
                }
                // Window closed with data waiting and nothing in flight: persist.
                env.counters.segments_out += 1;
                Some(((seq - self.snd_una) as usize, len as usize))
            }
        }
    }

    /// Whether [`maintain`](Self::maintain) has anything to check (cheap test).
    #[inline]
    pub fn needs_maintenance(&self) -> bool {
        self.snd_wnd == 0 || (self.snd_nxt == self.snd_una && !self.send.is_empty())
    }

    /// After any input or output: arm the persist timer if the peer's window blocks data
    /// and nothing in flight will bring a window update (RFC 9293 §3.8.6.1).
    ///
    /// The same timer serves as the sender SWS override timer (RFC 9293 §3.8.6.2.1 (4)): if
    /// the window is open but too small to send by the SWS rules, with nothing in flight,
    /// the data goes anyway when it expires.
    ///
    /// `data_may_go` is [`data_may_go`](Self::data_may_go) of now.
    pub fn maintain(&mut self, data_may_go: bool, env: &mut Env<'_>) {
        if self.state.is_synchronized()
            && self.state != State::TimeWait
            && (self.snd_wnd == 0 || !data_may_go)
            && self.unsent() > 0
            && self.snd_nxt == self.snd_una
            && !env.is_armed(TimerKind::Persist)
            && !env.is_armed(TimerKind::Rto)
        {
            let rto = self.rtt.rto();
            env.set_timer(TimerKind::Persist, rto);
        }
    }

    fn next_control(
        &mut self,
        cfg: &TcpConfig,
        env: &mut Env<'_>,
        seg: &mut TcpSegmentOut,
    ) -> Option<(usize, usize)> {
        if self.has(f::SEND_RST) {
            self.flags.remove(f::SEND_RST);
            // RFC 9293 §3.10.5 ABORT: "<SEQ=SND.NXT><CTL=RST>".
            seg.seq = self.snd_max;
            seg.ack = SeqNumber(0);
            seg.flags = TcpFlags::RST;
            seg.window = 0;
            env.counters.segments_out += 1;
            env.counters.rst_sent += 1;
            return Some((0, 0));
        }
        if !self.has(f::SEND_SYN) {
            return None;
        }
        self.flags.remove(f::SEND_SYN);
        let synack = matches!(self.state, State::SynReceived);
        if !matches!(self.state, State::SynSent | State::SynReceived) {
            return None;
        }
        seg.seq = self.iss;
        seg.flags = TcpFlags::SYN;
        // RFC 7323 §2.2: the window in a SYN or SYN-ACK is never scaled.
        seg.window = self.recv.window().min(usize::from(u16::MAX)) as u16;
        seg.options.mss = Some(cfg.mss);
        if synack {
            self.rcv_adv = self.rcv_nxt() + u32::from(seg.window);
        }
        let now_ts = self.ts_val(env.now);
        if synack {
            seg.flags |= TcpFlags::ACK;
            seg.ack = self.rcv_nxt();
            self.last_ack_sent = seg.ack;
            if self.has(f::TS) {
                seg.options.timestamp = Some((now_ts, self.ts_recent));
            }
            seg.options.sack_permitted = self.has(f::SACK);
            if self.has(f::WSCALE) {
                seg.options.wscale = Some(self.rcv_wscale);
            }
        } else {
            seg.ack = SeqNumber(0);
            if self.has(f::TS) {
                seg.options.timestamp = Some((now_ts, 0));
            }
            seg.options.sack_permitted = self.has(f::SACK);
            if self.has(f::WSCALE) {
                seg.options.wscale = Some(self.rcv_wscale);
            }
        }
        if self.snd_max == self.iss {
            self.snd_max = self.iss + 1u32;
            self.snd_nxt = self.snd_max;
        } else {
            env.counters.retransmits += 1;
        }
        if !env.is_armed(TimerKind::Rto) {
            let rto = self.rtt.rto();
            self.set_rto(rto, env);
        }
        self.flags.remove(f::ACK_NOW);
        env.counters.segments_out += 1;
        Some((0, 0))
    }

    /// ACK number, window and options (timestamps, SACK blocks) of a synchronized segment.
    fn fill_ack(&mut self, env: &mut Env<'_>, seg: &mut TcpSegmentOut) {
        seg.ack = self.rcv_nxt();
        seg.window = self.window_field();
        if self.has(f::TS) {
            seg.options.timestamp = Some((self.ts_val(env.now), self.ts_recent));
        }
        if self.has(f::SACK) {
            // RFC 2018 §4 / RFC 2883: a D-SACK block first, then the newest ranges. With
            // timestamps 3 blocks fit.
            let max = if self.has(f::TS) { 3 } else { 4 };
            let mut i = 0;
            if let Some(d) = self.dsack.take() {
                seg.options.sack_blocks[0] = Some(d);
                i = 1;
            }
            for b in self.recv.sack_blocks(max - i).iter() {
                seg.options.sack_blocks[i] = Some(*b);
                i += 1;
            }
        }
        self.last_ack_sent = seg.ack;
        self.flags.remove(f::ACK_NOW);
        self.delack_segs = 0;
        env.cancel(TimerKind::DelayedAck);
    }

    /// The window field for a non-SYN segment, with receiver SWS avoidance
    /// (RFC 9293 §3.8.6.2.2); records the right edge advertised.
    fn window_field(&mut self) -> u16 {
        let rcv_nxt = self.rcv_nxt();
        let avail = self.recv.window() as u32;
        let right = rcv_nxt + avail;
        let threshold = (self.recv.capacity() as u32 / 2)
            .min(u32::from(self.smss))
            .max(1);
        let adv = if self.rcv_adv <= rcv_nxt {
            // Everything advertised was filled (or nothing yet): offer what is free, unless it
            // is less than the threshold (then offer zero).
            if avail >= threshold || avail == self.recv.capacity() as u32 {
                right
            } else {
                rcv_nxt
            }
        } else if right > self.rcv_adv && right - self.rcv_adv >= threshold {
            right
        } else {
            self.rcv_adv
        };
        let field = ((adv - rcv_nxt) >> self.rcv_wscale).min(u32::from(u16::MAX));
        let edge = rcv_nxt + (field << self.rcv_wscale);
        if edge > self.rcv_adv || self.rcv_adv <= rcv_nxt {
            self.rcv_adv = edge;
        }
        field as u16
    }
}
