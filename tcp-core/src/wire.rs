//! Frames on the wire: parsing inbound Ethernet frames into typed values, and emitting
//! outbound Ethernet + ARP / IPv4 + TCP / IPv4 + ICMP frames into a caller's buffer.
//!
//! This is the edge of tcp-core (STYLE rule 4, "parse once, then trust"): every byte a peer
//! sends goes through [`parse_frame`] (or [`parse_frame_for`]) exactly once, is validated
//! there, and comes out as an [`Inbound`] whose fields the rest of the crate trusts. Nothing
//! in this module panics on any input bytes; a frame that cannot be used is reported as a
//! typed [`ParseError`] so the caller can drop it and count it by kind (STYLE rule 6).
//!
//! The byte-level work is done by `smoltcp::wire` packet views (`new_checked`, accessors,
//! setters, `TcpOption::parse`). smoltcp's `TcpRepr` is deliberately *not* used: its single
//! `Control` cannot represent arbitrary flag combinations (SYN+FIN, SYN+RST, …), which a
//! peer may send and which the state machine must see as sent. [`TcpFlags`] holds any of the
//! 256 combinations of the flag byte.
//!
//! What this module does not do: IPv4 reassembly (fragments are reported as
//! [`ParseError::Fragment`] and dropped), IPv4 options (accepted on receive and skipped, never
//! emitted), VLAN tags (reported as [`ParseError::UnsupportedEtherType`]), Ethernet padding to
//! 60 bytes on transmit (left to the NIC / backend), and any policy (which ports are open,
//! which source addresses are acceptable) — that belongs to the endpoint.
//!
//! ## Checksums
//! [`ChecksumMode`] is the hardware-offload switch. `verify_rx = false` skips verification of
//! the IPv4 header and TCP checksums on receive; `compute_tx = false` leaves the IPv4 header
//! and TCP checksum fields zero on transmit, for the NIC to fill in. ICMP checksums are always
//! verified and always computed: no NIC offloads them and ICMP traffic is rare.
//!
//! ## TCP option layout on transmit
//! Options are written the way Linux orders them (`tcp_options_write`), every option group
//! 4-byte aligned, so no trailing padding is ever needed:
//!
//! ```text
//! MSS            02 04 mm mm                               4 bytes   (if mss)
//! SACKOK + TS    04 02 08 0a vv vv vv vv ee ee ee ee      12 bytes   (if timestamp and sack_permitted)
//! TS             01 01 08 0a vv vv vv vv ee ee ee ee      12 bytes   (if timestamp only)
//! SACKOK         01 01 04 02                               4 bytes   (if sack_permitted only)
//! WS             01 03 03 ss                               4 bytes   (if wscale)
//! SACK blocks    01 01 05 ll [left right]×n            4 + 8n bytes  (if sack blocks)
//! ```
//!
//! So a Linux-style SYN (MSS, SACK-permitted, timestamps, window scale) carries exactly
//! 20 bytes of options, and a data segment with timestamps carries `NOP NOP TS` (12 bytes),
//! plus `NOP NOP SACK` when SACK blocks are present. The options never exceed 40 bytes: SACK
//! blocks that do not fit are left off from the last one (RFC 2018 §3: with timestamps at most
//! 3 blocks fit, without them 4). [`tcp_options_len`] and [`tcp_header_len`] report the length
//! after that trimming, so the caller can size the payload to the MSS.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet,
    IpProtocol, Ipv4Packet, TcpOption, TcpPacket,
};

pub use smoltcp::wire::{EthernetAddress, Ipv4Address};

use crate::seq::SeqNumber;

/// Length of an Ethernet II header (no VLAN tag).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options (the only kind this module emits).
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
/// Maximum length of the TCP options (the data offset field allows 60 header bytes).
pub const TCP_MAX_OPTIONS_LEN: usize = 40;
/// Length of an ICMP echo header (type, code, checksum, identifier, sequence number).
pub const ICMP_ECHO_HEADER_LEN: usize = 8;
/// Length of an Ethernet + ARP (Ethernet/IPv4) frame, without padding.
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + 28;

const OPT_NOP: u8 = 1;
const IP_PROTO_ICMP: u8 = 1;
const IP_PROTO_TCP: u8 = 6;
const OPT_MSS: u8 = 2;
const OPT_WS: u8 = 3;
const OPT_SACKPERM: u8 = 4;
const OPT_SACK: u8 = 5;
const OPT_TS: u8 = 8;

// ---------------------------------------------------------------------------------------------
// Configuration and errors
// ---------------------------------------------------------------------------------------------

/// Which checksums software handles; the rest is left to the NIC (checksum offload).
///
/// `verify_rx` and `compute_tx` cover the IPv4 header checksum and the TCP checksum. ICMP
/// checksums are always verified and computed in software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChecksumMode {
    /// Verify checksums of received frames (`false`: the NIC already did).
    pub verify_rx: bool,
    /// Compute checksums of transmitted frames (`false`: leave the fields zero for the NIC).
    pub compute_tx: bool,
    /// A faster sum for TCP segments of at least [`ACCEL_MIN_LEN`] bytes (see
    /// [`ChecksumAccel`]); `None`: tcp-core's portable loop.
    pub accel: Option<ChecksumAccel>,
}

impl ChecksumMode {
    /// Everything in software: verify on receive, compute on transmit. The default.
    pub const SOFTWARE: ChecksumMode = ChecksumMode {
        verify_rx: true,
        compute_tx: true,
        accel: None,
    };
    /// Everything offloaded to the NIC.
    pub const OFFLOAD: ChecksumMode = ChecksumMode {
        verify_rx: false,
        compute_tx: false,
        accel: None,
    };

    /// `acc` plus the one's-complement sum of `data` (which starts at an even offset of what
    /// is summed), unfolded: by `accel` for long data, else by the portable loop.
    #[inline]
    fn sum(&self, data: &[u8], acc: u64) -> u64 {
        match self.accel {
            Some(a) if data.len() >= ACCEL_MIN_LEN => acc + u64::from((a.0)(data)),
            _ => checksum::sum(data, acc),
        }
    }
}

/// Data shorter than this is summed by tcp-core's own loop even with a [`ChecksumAccel`]:
/// for a few dozen bytes a call and a vector setup cost more than they save.
pub const ACCEL_MIN_LEN: usize = 256;

/// A checksum sum supplied by the embedder, for CPUs whose vector units tcp-core cannot use
/// itself (it is built for the baseline target and has no `unsafe` code to select a faster
/// path at run time). The function must return the 16-bit one's-complement sum of RFC 1071
/// over `data`: big-endian 16-bit words, an odd last byte padded with a zero byte, with
/// end-around carry, not complemented (either representation of zero may be returned).
/// `psio::checksum_sum` is one, using AVX2 where the CPU has it.
///
/// A wrong function makes every checksum wrong: peers then drop what the endpoint sends and
/// the endpoint drops (and counts as `bad_checksum`) what they send.
#[derive(Clone, Copy)]
pub struct ChecksumAccel(pub fn(&[u8]) -> u16);

impl core::fmt::Debug for ChecksumAccel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ChecksumAccel(..)")
    }
}

impl PartialEq for ChecksumAccel {
    /// Equal when they are the same function (by address).
    fn eq(&self, other: &ChecksumAccel) -> bool {
        self.0 as usize == other.0 as usize
    }
}

impl Eq for ChecksumAccel {}

impl core::hash::Hash for ChecksumAccel {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        (self.0 as usize).hash(state);
    }
}

impl Default for ChecksumMode {
    fn default() -> ChecksumMode {
        ChecksumMode::SOFTWARE
    }
}

/// Why an inbound frame was dropped. Every variant is a peer's doing (or the link's), never
/// an API misuse; the caller counts them by kind ([`ParseError::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseError {
    /// The frame ends before a header (or the length an IPv4 header announces) does.
    Truncated,
    /// An IPv4 header, TCP or ICMP checksum does not verify.
    BadChecksum,
    /// Not addressed to the local MAC (nor broadcast) or not to the local IPv4 address;
    /// only [`parse_frame_for`] reports it.
    NotForUs,
    /// An IPv4 fragment (MF set or a nonzero offset): fragments are not reassembled.
    Fragment,
    /// Neither IPv4 nor ARP (IPv6, VLAN-tagged, LLDP, …).
    UnsupportedEtherType,
    /// Inconsistent header fields: IP version not 4, header lengths too small or beyond the
    /// packet, bad TCP option lengths, zero ports, ARP for other hardware/protocols, …
    Malformed,
}

impl ParseError {
    /// Number of variants, for an array of counters indexed by [`ParseError::index`].
    pub const COUNT: usize = 6;

    /// A dense index in `0..ParseError::COUNT`, for counting drops by kind.
    pub const fn index(self) -> usize {
        match self {
            ParseError::Truncated => 0,
            ParseError::BadChecksum => 1,
            ParseError::NotForUs => 2,
            ParseError::Fragment => 3,
            ParseError::UnsupportedEtherType => 4,
            ParseError::Malformed => 5,
        }
    }

    /// A short lower-case name, for logs and counter labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParseError::Truncated => "truncated",
            ParseError::BadChecksum => "bad checksum",
            ParseError::NotForUs => "not for us",
            ParseError::Fragment => "ipv4 fragment",
            ParseError::UnsupportedEtherType => "unsupported ethertype",
            ParseError::Malformed => "malformed",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseError {}

/// Why a frame could not be emitted. Both are caller mistakes (API misuse), not peer input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EmitError {
    /// The caller's buffer is shorter than the frame; `needed` is the frame's length.
    BufferTooSmall {
        /// Length of the whole frame in bytes.
        needed: usize,
    },
    /// The IPv4 packet would exceed 65535 bytes.
    TooLong,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: frame needs {needed} bytes")
            }
            EmitError::TooLong => f.write_str("IPv4 packet longer than 65535 bytes"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EmitError {}

// ---------------------------------------------------------------------------------------------
// TCP flags and options
// ---------------------------------------------------------------------------------------------

/// The TCP flag byte (header byte 13): any combination of the eight flags.
///
/// The bit values are the wire's, so `bits()` is the byte as sent. The NS bit (RFC 3540,
/// historic) is ignored on receive and never sent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No flag set.
    pub const EMPTY: TcpFlags = TcpFlags(0);
    /// FIN: no more data from the sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN: synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST: reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH: push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK: the acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// URG: the urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECE: ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// CWR: congestion window reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// The flags whose bits are set in `bits` (every value is valid).
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    /// The flag byte as on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set in `self`.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// The flags of both.
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    /// `self` without the flags of `other`.
    pub const fn difference(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & !other.0)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Set the flags of `other`.
    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    /// Clear the flags of `other`.
    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }

    /// SYN is set.
    pub const fn syn(self) -> bool {
        self.contains(TcpFlags::SYN)
    }

    /// ACK is set.
    pub const fn ack(self) -> bool {
        self.contains(TcpFlags::ACK)
    }

    /// FIN is set.
    pub const fn fin(self) -> bool {
        self.contains(TcpFlags::FIN)
    }

    /// RST is set.
    pub const fn rst(self) -> bool {
        self.contains(TcpFlags::RST)
    }

    /// PSH is set.
    pub const fn psh(self) -> bool {
        self.contains(TcpFlags::PSH)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        self.union(rhs)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.insert(rhs);
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

const FLAG_NAMES: [(TcpFlags, &str); 8] = [
    (TcpFlags::FIN, "FIN"),
    (TcpFlags::SYN, "SYN"),
    (TcpFlags::RST, "RST"),
    (TcpFlags::PSH, "PSH"),
    (TcpFlags::ACK, "ACK"),
    (TcpFlags::URG, "URG"),
    (TcpFlags::ECE, "ECE"),
    (TcpFlags::CWR, "CWR"),
];

impl fmt::Display for TcpFlags {
    /// `SYN|ACK`, or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in FLAG_NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    /// `TcpFlags(0x12 SYN|ACK)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({:#04x} {})", self.0, self)
    }
}

/// The TCP options tcp-core understands, as received or to be sent.
///
/// Unknown options are skipped on receive and never sent. Values are kept as on the wire:
/// a window scale above 14 is reported as received (RFC 7323 §2.3 says to use 14; that is the
/// connection's job), an MSS of 0 likewise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2).
    pub mss: Option<u16>,
    /// Window scale shift count (kind 3).
    pub wscale: Option<u8>,
    /// SACK permitted (kind 4).
    pub sack_permitted: bool,
    /// SACK blocks `(left, right)` (kind 5), packed from the front: `None`s only at the end.
    /// On transmit, blocks that do not fit in 40 bytes of options are left off from the end.
    pub sack_blocks: [Option<(SeqNumber, SeqNumber)>; 4],
    /// Timestamps `(TSval, TSecr)` (kind 8).
    pub timestamp: Option<(u32, u32)>,
}

impl TcpOptions {
    /// Number of SACK blocks present (`Some` entries).
    pub fn sack_block_count(&self) -> usize {
        self.sack_blocks.iter().filter(|b| b.is_some()).count()
    }

    /// The options without SACK blocks beyond those that fit (as they will be sent).
    pub fn trimmed(&self) -> TcpOptions {
        let (_, fit) = options_layout(self);
        let mut out = *self;
        out.sack_blocks = [None; 4];
        for (slot, block) in out
            .sack_blocks
            .iter_mut()
            .zip(self.sack_blocks.iter().flatten().take(fit))
        {
            *slot = Some(*block);
        }
        out
    }
}

/// Bytes of options without SACK blocks, and how many SACK blocks fit after them.
fn options_layout(o: &TcpOptions) -> (usize, usize) {
    let mut base = 0;
    if o.mss.is_some() {
        base += 4;
    }
    if o.timestamp.is_some() || o.sack_permitted {
        // SACKOK+TS or NOP NOP TS (12), or NOP NOP SACKOK (4).
        base += if o.timestamp.is_some() { 12 } else { 4 };
    }
    if o.wscale.is_some() {
        base += 4;
    }
    let room = TCP_MAX_OPTIONS_LEN - base; // base <= 20
    let fit = if room >= 12 { (room - 4) / 8 } else { 0 };
    (base, o.sack_block_count().min(fit))
}

/// Length in bytes of the options as [`emit_tcp`] writes them (a multiple of 4, at most 40).
pub fn tcp_options_len(options: &TcpOptions) -> usize {
    let (base, sacks) = options_layout(options);
    if sacks > 0 {
        base + 4 + 8 * sacks
    } else {
        base
    }
}

/// Length of the TCP header carrying `options` (20 to 60 bytes), so the caller can size the
/// payload: `payload <= mss + 20 - tcp_header_len(&options)` keeps a segment within the MSS
/// as RFC 9293 §3.7.1 defines it (MSS counts data only, assuming a 20-byte TCP header).
pub fn tcp_header_len(options: &TcpOptions) -> usize {
    TCP_HEADER_LEN + tcp_options_len(options)
}

/// Length of the whole frame ([`emit_tcp`]'s result) for these options and payload length.
pub fn tcp_frame_len(options: &TcpOptions, payload_len: usize) -> usize {
    ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + tcp_header_len(options) + payload_len
}

/// Write the options into `buf`, which is exactly `tcp_options_len(o)` long; returns the
/// one's-complement sum of what it wrote (unfolded). Every option of the layout fills whole
/// 32-bit words, which are stored as such and summed from their values (see `put_words`).
fn write_options(buf: &mut [u8], o: &TcpOptions) -> u64 {
    let (_, sacks) = options_layout(o);
    let mut at = 0;
    let mut sum = 0u64;
    let mut put = |w: u32| {
        sum += put_words(&mut buf[at..at + 4], [w]);
        at += 4;
    };
    let word = u32::from_be_bytes;
    if let Some(mss) = o.mss {
        let m = mss.to_be_bytes();
        put(word([OPT_MSS, 4, m[0], m[1]]));
    }
    if let Some((tsval, tsecr)) = o.timestamp {
        if o.sack_permitted {
            put(word([OPT_SACKPERM, 2, OPT_TS, 10]));
        } else {
            put(word([OPT_NOP, OPT_NOP, OPT_TS, 10]));
        }
        put(tsval);
        put(tsecr);
    } else if o.sack_permitted {
        put(word([OPT_NOP, OPT_NOP, OPT_SACKPERM, 2]));
    }
    if let Some(ws) = o.wscale {
        put(word([OPT_NOP, OPT_WS, 3, ws]));
    }
    if sacks > 0 {
        put(word([OPT_NOP, OPT_NOP, OPT_SACK, (2 + 8 * sacks) as u8]));
        for (left, right) in o.sack_blocks.iter().flatten().take(sacks) {
            put(left.0);
            put(right.0);
        }
    }
    sum
}

/// Walk the options with smoltcp's `TcpOption::parse`. Any bad length makes the whole
/// segment [`ParseError::Malformed`]; unknown kinds with a sane length are skipped.
///
/// The result is written into `o` (every field: what it held before does not matter).
#[inline(always)]
fn parse_options_into(mut opts: &[u8], o: &mut TcpOptions) -> Result<(), ParseError> {
    *o = TcpOptions::default();
    // Fast path: the layout nearly every segment of a timestamps connection carries
    // (RFC 7323 Appendix A: NOP, NOP, TS).
    if let [OPT_NOP, OPT_NOP, OPT_TS, 10, v0, v1, v2, v3, e0, e1, e2, e3] = *opts {
        o.timestamp = Some((
            u32::from_be_bytes([v0, v1, v2, v3]),
            u32::from_be_bytes([e0, e1, e2, e3]),
        ));
        return Ok(());
    }
    // Fast path: the SYN and SYN-ACK layout of Linux (and ours) with every option on:
    // MSS, SACK-permitted, TS, NOP, window scale.
    if let [OPT_MSS, 4, m0, m1, OPT_SACKPERM, 2, OPT_TS, 10, v0, v1, v2, v3, e0, e1, e2, e3, OPT_NOP, OPT_WS, 3, ws] =
        *opts
    {
        o.mss = Some(u16::from_be_bytes([m0, m1]));
        o.sack_permitted = true;
        o.timestamp = Some((
            u32::from_be_bytes([v0, v1, v2, v3]),
            u32::from_be_bytes([e0, e1, e2, e3]),
        ));
        o.wscale = Some(ws);
        return Ok(());
    }
    while !opts.is_empty() {
        let (rest, option) = TcpOption::parse(opts).map_err(|_| ParseError::Malformed)?;
        // `rest` is a suffix of `opts`; `raw` is this option's bytes.
        let raw = opts.get(..opts.len() - rest.len()).unwrap_or(&[]);
        match option {
            TcpOption::EndOfList => break,
            TcpOption::NoOperation => {}
            TcpOption::MaxSegmentSize(mss) => o.mss = Some(mss),
            TcpOption::WindowScale(ws) => o.wscale = Some(ws),
            TcpOption::SackPermitted => o.sack_permitted = true,
            TcpOption::SackRange(_) => {
                // smoltcp keeps at most 3 blocks; RFC 2018 allows 4, so read them from `raw`
                // (its length was checked: 2 + 8n with n >= 1).
                o.sack_blocks = [None; 4];
                let blocks = raw.get(2..).unwrap_or(&[]);
                for (slot, b) in o.sack_blocks.iter_mut().zip(blocks.chunks_exact(8)) {
                    let left = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    let right = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                    *slot = Some((SeqNumber(left), SeqNumber(right)));
                }
            }
            TcpOption::TimeStamp { tsval, tsecr } => o.timestamp = Some((tsval, tsecr)),
            // smoltcp reports a timestamp option of the wrong length as unknown.
            TcpOption::Unknown { kind: OPT_TS, .. } => return Err(ParseError::Malformed),
            TcpOption::Unknown { .. } => {}
        }
        opts = rest;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inbound
// ---------------------------------------------------------------------------------------------

/// The Ethernet addresses of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthInfo {
    /// Source MAC.
    pub src: EthernetAddress,
    /// Destination MAC (ours, broadcast, or anything when parsed by [`parse_frame`]).
    pub dst: EthernetAddress,
}

/// The IPv4 header fields of a received packet that tcp-core may need.
///
/// Addresses are not screened: rejecting broadcast or multicast sources for TCP
/// (RFC 9293 §3.10.7.2) is the endpoint's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Address,
    /// Destination address.
    pub dst: Ipv4Address,
    /// Time to live.
    pub ttl: u8,
    /// Identification field.
    pub ident: u16,
    /// DSCP (6 bits).
    pub dscp: u8,
    /// ECN codepoint (2 bits).
    pub ecn: u8,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// Protocol number (6 for TCP, 1 for ICMP).
    pub protocol: u8,
}

/// ARP operations tcp-core handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    /// Who has `target_ip`? Tell `sender_ip`.
    Request,
    /// `sender_ip` is at `sender_mac`.
    Reply,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpInfo {
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address (SHA).
    pub sender_mac: EthernetAddress,
    /// Sender protocol address (SPA).
    pub sender_ip: Ipv4Address,
    /// Target hardware address (THA; zero in requests).
    pub target_mac: EthernetAddress,
    /// Target protocol address (TPA).
    pub target_ip: Ipv4Address,
}

/// A validated TCP segment. Every field is as on the wire; the options were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpSegment<'a> {
    /// Source port (never 0).
    pub src_port: u16,
    /// Destination port (never 0).
    pub dst_port: u16,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgment number (meaningful only with ACK).
    pub ack: SeqNumber,
    /// Flags.
    pub flags: TcpFlags,
    /// Window field, unscaled.
    pub window: u16,
    /// Urgent pointer (meaningful only with URG).
    pub urgent: u16,
    /// Options.
    pub options: TcpOptions,
    /// Data.
    pub payload: &'a [u8],
}

impl TcpSegment<'_> {
    /// Length in sequence space: payload plus one for SYN and one for FIN.
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }
}

/// The ICMP errors [`Inbound::IcmpError`] reports (RFC 792, RFC 1122 §4.2.3.9, RFC 1812
/// §5.2.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IcmpError {
    /// Destination Unreachable, codes 2 (protocol) and 3 (port): RFC 1122's hard errors.
    Unreachable,
    /// Destination Unreachable, codes 9, 10 and 13: communication administratively
    /// prohibited.
    Prohibited,
    /// Another Destination Unreachable code (net, host, fragmentation needed, …) or Time
    /// Exceeded: soft errors, which RFC 1122 §4.2.3.9 says MUST NOT abort a connection.
    Soft,
}

/// A received frame, parsed and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inbound<'a> {
    /// An Ethernet/IPv4 ARP request or reply.
    Arp {
        /// Ethernet addresses.
        eth: EthInfo,
        /// The ARP packet.
        arp: ArpInfo,
    },
    /// An ICMP echo request (ping), to be answered with [`emit_icmp_echo_reply`].
    IcmpEcho {
        /// Ethernet addresses.
        eth: EthInfo,
        /// IPv4 header.
        ip: Ipv4Info,
        /// Echo identifier.
        ident: u16,
        /// Echo sequence number.
        seq: u16,
        /// Echo data, to be sent back.
        payload: &'a [u8],
    },
    /// A TCP segment.
    Tcp {
        /// Ethernet addresses.
        eth: EthInfo,
        /// IPv4 header.
        ip: Ipv4Info,
        /// The segment.
        seg: TcpSegment<'a>,
    },
    /// An ICMP Destination Unreachable or Time Exceeded message (RFC 792) quoting a TCP
    /// segment we sent: what RFC 5927 §4.1 needs to validate it against a connection.
    IcmpError {
        /// Ethernet addresses.
        eth: EthInfo,
        /// IPv4 header of the ICMP message.
        ip: Ipv4Info,
        /// The error.
        error: IcmpError,
        /// The quoted segment's source (our) address and port.
        local: (Ipv4Address, u16),
        /// The quoted segment's destination (the peer's) address and port.
        remote: (Ipv4Address, u16),
        /// The quoted segment's sequence number.
        seq: SeqNumber,
    },
    /// A valid IPv4 packet of another protocol (UDP, …) or another ICMP type; no payload
    /// checksum was verified.
    OtherIpv4 {
        /// Ethernet addresses.
        eth: EthInfo,
        /// IPv4 header.
        ip: Ipv4Info,
    },
}

/// A received Ethernet/IPv4/TCP frame as [`parse_tcp_frame`] fills it in: the same fields
/// as [`Inbound::Tcp`], written in place (a receive path keeps one and reuses it, instead of
/// moving a hundred-byte value out of the parser for every frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFrame<'a> {
    /// Ethernet addresses.
    pub eth: EthInfo,
    /// IPv4 header.
    pub ip: Ipv4Info,
    /// The segment.
    pub seg: TcpSegment<'a>,
}

impl TcpFrame<'_> {
    /// A frame of zeros (no flags, no options, no payload): the value to parse into.
    pub const EMPTY: TcpFrame<'static> = TcpFrame {
        eth: EthInfo {
            src: EthernetAddress([0; 6]),
            dst: EthernetAddress([0; 6]),
        },
        ip: Ipv4Info {
            src: Ipv4Address::UNSPECIFIED,
            dst: Ipv4Address::UNSPECIFIED,
            ttl: 0,
            ident: 0,
            dscp: 0,
            ecn: 0,
            dont_frag: false,
            protocol: 0,
        },
        seg: TcpSegment {
            src_port: 0,
            dst_port: 0,
            seq: SeqNumber(0),
            ack: SeqNumber(0),
            flags: TcpFlags(0),
            window: 0,
            urgent: 0,
            options: TcpOptions {
                mss: None,
                wscale: None,
                sack_permitted: false,
                sack_blocks: [None; 4],
                timestamp: None,
            },
            payload: &[],
        },
    };
}

/// The local addresses [`parse_frame_for`] filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalAddrs {
    /// Our MAC: frames to other unicast or multicast MACs are [`ParseError::NotForUs`].
    pub mac: EthernetAddress,
    /// Our IPv4 address: IPv4 packets to other addresses are [`ParseError::NotForUs`].
    pub ip: Ipv4Address,
}

/// Parse and validate a whole Ethernet frame, with no address filtering.
///
/// Never panics, whatever `frame` holds. Trailing bytes beyond the IPv4 total length
/// (Ethernet padding) are ignored.
pub fn parse_frame(frame: &[u8], mode: ChecksumMode) -> Result<Inbound<'_>, ParseError> {
    parse_inner(frame, None, mode)
}

/// [`parse_frame`], also dropping frames not addressed to `local` as
/// [`ParseError::NotForUs`]: the Ethernet destination must be `local.mac` or broadcast, and
/// an IPv4 destination must be `local.ip`. ARP packets pass whatever their target IP
/// (RFC 826's merge rule may still update the cache from them).
pub fn parse_frame_for<'a>(
    frame: &'a [u8],
    local: &LocalAddrs,
    mode: ChecksumMode,
) -> Result<Inbound<'a>, ParseError> {
    parse_inner(frame, Some(local), mode)
}

/// [`parse_frame_for`] for the frames a TCP endpoint lives on: a valid TCP segment for
/// `local` is written into `out` and reported as `Ok(true)`. A frame for `local` that is not
/// TCP is `Ok(false)` once its Ethernet header (ARP) or its Ethernet and IPv4 headers (ICMP,
/// another protocol) are valid: its body is not looked at here but by [`parse_frame_for`],
/// which the caller then runs and which reports what is wrong with the body. Every other
/// error is the one [`parse_frame_for`] reports for the same bytes. `out` is only
/// meaningful after `Ok(true)`.
///
/// Never panics, whatever `frame` holds.
#[inline]
pub fn parse_tcp_frame<'a>(
    frame: &'a [u8],
    local: &LocalAddrs,
    mode: ChecksumMode,
    out: &mut TcpFrame<'a>,
) -> Result<bool, ParseError> {
    let Some(payload) = parse_ethernet(frame, Some(local), &mut out.eth)? else {
        return Ok(false);
    };
    let body = parse_ipv4_header(payload, Some(local), mode, &mut out.ip)?;
    if out.ip.protocol != IP_PROTO_TCP {
        return Ok(false);
    }
    parse_tcp_into(&out.ip, body, mode, &mut out.seg)?;
    Ok(true)
}

fn parse_inner<'a>(
    frame: &'a [u8],
    local: Option<&LocalAddrs>,
    mode: ChecksumMode,
) -> Result<Inbound<'a>, ParseError> {
    let mut f = TcpFrame::EMPTY;
    let Some(payload) = parse_ethernet(frame, local, &mut f.eth)? else {
        return parse_arp(f.eth, &frame[ETHERNET_HEADER_LEN..]);
    };
    let body = parse_ipv4_header(payload, local, mode, &mut f.ip)?;
    let (eth, ip) = (f.eth, f.ip);
    match ip.protocol {
        IP_PROTO_TCP => {
            parse_tcp_into(&ip, body, mode, &mut f.seg)?;
            Ok(Inbound::Tcp {
                eth,
                ip,
                seg: f.seg,
            })
        }
        IP_PROTO_ICMP => parse_icmp(eth, ip, body),
        _ => Ok(Inbound::OtherIpv4 { eth, ip }),
    }
}

/// The Ethernet header: addresses into `eth` (the destination filtered by `local`), and
/// the IPv4 payload, or `None` for ARP (the payload starts at [`ETHERNET_HEADER_LEN`]).
#[inline(always)]
fn parse_ethernet<'a>(
    frame: &'a [u8],
    local: Option<&LocalAddrs>,
    eth: &mut EthInfo,
) -> Result<Option<&'a [u8]>, ParseError> {
    // What `EthernetFrame::new_checked` checks; the view is then over a fixed-size array,
    // so its accessors need no bounds checks.
    let Some((header, payload)) = frame.split_first_chunk::<ETHERNET_HEADER_LEN>() else {
        return Err(ParseError::Truncated);
    };
    let view = EthernetFrame::new_unchecked(header);
    // The addresses are copied as 6-byte blocks, the way the receive path then reads them:
    // assembled byte by byte, they were stored in pieces that a later wider load could not
    // take from the store buffer (a stall per frame).
    eth.dst = view.dst_addr();
    eth.src = view.src_addr();
    if let Some(local) = local {
        if eth.dst != local.mac && !eth.dst.is_broadcast() {
            return Err(ParseError::NotForUs);
        }
    }
    match view.ethertype() {
        EthernetProtocol::Ipv4 => Ok(Some(payload)),
        EthernetProtocol::Arp => Ok(None),
        _ => Err(ParseError::UnsupportedEtherType),
    }
}

/// Validates an IPv4 header (checksum per `mode`, no fragment, destination `local` if
/// given), writes its fields into `ip` and returns the packet's payload (the bytes after the
/// header, up to the total length; Ethernet padding beyond it is left out).
#[inline(always)]
fn parse_ipv4_header<'a>(
    payload: &'a [u8],
    local: Option<&LocalAddrs>,
    mode: ChecksumMode,
    ip: &mut Ipv4Info,
) -> Result<&'a [u8], ParseError> {
    // Check what smoltcp's check_len checks, but tell truncation from inconsistency. The
    // view of the fixed part is over an array: its accessors need no bounds checks.
    let Some(fixed) = payload.first_chunk::<IPV4_HEADER_LEN>() else {
        return Err(ParseError::Truncated);
    };
    let view = Ipv4Packet::new_unchecked(fixed);
    if view.version() != 4 {
        return Err(ParseError::Malformed);
    }
    let header_len = usize::from(view.header_len());
    if header_len < IPV4_HEADER_LEN {
        return Err(ParseError::Malformed);
    }
    if payload.len() < header_len {
        return Err(ParseError::Truncated);
    }
    let total_len = usize::from(view.total_len());
    if total_len < header_len {
        return Err(ParseError::Malformed);
    }
    let (Some(header), Some(body)) = (
        payload.get(..header_len),
        payload.get(header_len..total_len),
    ) else {
        return Err(ParseError::Truncated);
    };
    if mode.verify_rx {
        // Without options (nearly always), five words from the array already read.
        let sum = if header_len == IPV4_HEADER_LEN {
            let w = |i: usize| {
                u64::from(u32::from_ne_bytes([
                    fixed[i],
                    fixed[i + 1],
                    fixed[i + 2],
                    fixed[i + 3],
                ]))
            };
            w(0) + w(4) + w(8) + w(12) + w(16)
        } else {
            checksum::sum_small(header)
        };
        // 0xffff reads the same in either byte order, so the native-order sum of the
        // words needs no swap for this test.
        if checksum::fold(sum) != 0xffff {
            return Err(ParseError::BadChecksum);
        }
    }
    if view.more_frags() || view.frag_offset() != 0 {
        return Err(ParseError::Fragment);
    }
    ip.src = view.src_addr();
    ip.dst = view.dst_addr();
    ip.ttl = view.hop_limit();
    ip.ident = view.ident();
    ip.dscp = view.dscp();
    ip.ecn = view.ecn();
    ip.dont_frag = view.dont_frag();
    // The protocol byte as it is (smoltcp's `next_header` maps it through an enum).
    ip.protocol = fixed[9];
    if let Some(local) = local {
        if ip.dst != local.ip {
            return Err(ParseError::NotForUs);
        }
    }
    Ok(body)
}

/// Validates the TCP segment `body` of the IPv4 packet described by `ip` and writes it
/// into `seg`.
#[inline(always)]
fn parse_tcp_into<'a>(
    ip: &Ipv4Info,
    body: &'a [u8],
    mode: ChecksumMode,
    seg: &mut TcpSegment<'a>,
) -> Result<(), ParseError> {
    let Some(fixed) = body.first_chunk::<TCP_HEADER_LEN>() else {
        return Err(ParseError::Truncated);
    };
    let header_len = usize::from(fixed[12] >> 4) * 4;
    if header_len < TCP_HEADER_LEN {
        return Err(ParseError::Malformed);
    }
    let (Some(options), Some(payload)) =
        (body.get(TCP_HEADER_LEN..header_len), body.get(header_len..))
    else {
        return Err(ParseError::Truncated);
    };
    if mode.verify_rx
        && checksum::fold(mode.sum(body, checksum::pseudo(ip.src, ip.dst, body.len()))) != 0xffff
    {
        return Err(ParseError::BadChecksum);
    }
    // The checks above are those of `TcpPacket::new_checked`; the view is over an array.
    let view = TcpPacket::new_unchecked(fixed);
    let (src_port, dst_port) = (view.src_port(), view.dst_port());
    if src_port == 0 || dst_port == 0 {
        return Err(ParseError::Malformed);
    }
    parse_options_into(options, &mut seg.options)?;
    seg.src_port = src_port;
    seg.dst_port = dst_port;
    seg.seq = SeqNumber(view.seq_number().0 as u32);
    seg.ack = SeqNumber(view.ack_number().0 as u32);
    // The flag byte as it is (`TcpFlags` holds any combination).
    seg.flags = TcpFlags(fixed[13]);
    seg.window = view.window_len();
    seg.urgent = view.urgent_at();
    seg.payload = payload;
    Ok(())
}

fn parse_arp(eth: EthInfo, payload: &[u8]) -> Result<Inbound<'_>, ParseError> {
    let packet = ArpPacket::new_checked(payload).map_err(|_| ParseError::Truncated)?;
    let repr = ArpRepr::parse(&packet).map_err(|_| ParseError::Malformed)?;
    #[allow(unreachable_patterns)] // ArpRepr is non_exhaustive
    let arp = match repr {
        ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
        } => {
            let op = match operation {
                ArpOperation::Request => ArpOp::Request,
                ArpOperation::Reply => ArpOp::Reply,
                _ => return Err(ParseError::Malformed),
            };
            ArpInfo {
                op,
                sender_mac: source_hardware_addr,
                sender_ip: source_protocol_addr,
                target_mac: target_hardware_addr,
                target_ip: target_protocol_addr,
            }
        }
        _ => return Err(ParseError::Malformed),
    };
    Ok(Inbound::Arp { eth, arp })
}

fn parse_icmp<'a>(eth: EthInfo, ip: Ipv4Info, body: &'a [u8]) -> Result<Inbound<'a>, ParseError> {
    let packet = Icmpv4Packet::new_checked(body).map_err(|_| ParseError::Truncated)?;
    if !packet.verify_checksum() {
        return Err(ParseError::BadChecksum);
    }
    match packet.msg_type() {
        Icmpv4Message::EchoRequest => Ok(Inbound::IcmpEcho {
            eth,
            ip,
            ident: packet.echo_ident(),
            seq: packet.echo_seq_no(),
            payload: packet.data(),
        }),
        Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded => {
            let error = match (packet.msg_type(), packet.msg_code()) {
                (Icmpv4Message::DstUnreachable, 2 | 3) => IcmpError::Unreachable,
                (Icmpv4Message::DstUnreachable, 9 | 10 | 13) => IcmpError::Prohibited,
                _ => IcmpError::Soft,
            };
            // The quoted IPv4 header and at least the first 8 octets of its TCP header
            // (ports and sequence number).
            let q = packet.data();
            let ihl = usize::from(q.first().copied().unwrap_or(0) & 0x0f) * 4;
            let tcp = q.get(ihl..ihl + 8);
            match tcp {
                Some(t) if q[0] >> 4 == 4 && ihl >= IPV4_HEADER_LEN && q[9] == IP_PROTO_TCP => {
                    let addr = |b: &[u8]| Ipv4Address::new(b[0], b[1], b[2], b[3]);
                    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
                    Ok(Inbound::IcmpError {
                        eth,
                        ip,
                        error,
                        local: (addr(&q[12..16]), be16(&t[0..2])),
                        remote: (addr(&q[16..20]), be16(&t[2..4])),
                        seq: SeqNumber(u32::from_be_bytes([t[4], t[5], t[6], t[7]])),
                    })
                }
                _ => Ok(Inbound::OtherIpv4 { eth, ip }),
            }
        }
        _ => Ok(Inbound::OtherIpv4 { eth, ip }),
    }
}

/// Source and destination address and port of what looks like an Ethernet/IPv4/TCP frame,
/// read without any validation (no checksum, no length check beyond the bytes read): a hint
/// for cache warming, never to be acted on.
#[inline]
pub(crate) fn peek_tcp_addrs(frame: &[u8]) -> Option<(Ipv4Address, Ipv4Address, u16, u16)> {
    let ip = frame.get(ETHERNET_HEADER_LEN..)?;
    let (&ver_ihl, proto) = (ip.first()?, *ip.get(9)?);
    if frame.get(12..14)? != [0x08, 0x00] || ver_ihl >> 4 != 4 || proto != IP_PROTO_TCP {
        return None;
    }
    let tcp = ip.get(usize::from(ver_ihl & 0x0f) * 4..)?;
    let be32 = |b: &[u8]| -> Option<[u8; 4]> { b.get(..4)?.try_into().ok() };
    let src = Ipv4Address::from(be32(ip.get(12..)?)?);
    let dst = Ipv4Address::from(be32(ip.get(16..)?)?);
    let ports = be32(tcp)?;
    Some((
        src,
        dst,
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    ))
}

// ---------------------------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------------------------

/// The Ethernet and IPv4 header fields of an outbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthIpv4Header {
    /// Source MAC (ours).
    pub src_mac: EthernetAddress,
    /// Destination MAC (the next hop's, from the ARP cache).
    pub dst_mac: EthernetAddress,
    /// Source address (ours).
    pub src_ip: Ipv4Address,
    /// Destination address.
    pub dst_ip: Ipv4Address,
    /// Time to live.
    pub ttl: u8,
    /// Identification field (any value is fine with DF set, RFC 6864).
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// ECN codepoint (low 2 bits used).
    pub ecn: u8,
}

impl EthIpv4Header {
    /// A header with TTL 64, identification 0, DF set and ECN not-ECT.
    pub fn new(
        src_mac: EthernetAddress,
        dst_mac: EthernetAddress,
        src_ip: Ipv4Address,
        dst_ip: Ipv4Address,
    ) -> EthIpv4Header {
        EthIpv4Header {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            ttl: 64,
            ident: 0,
            dont_frag: true,
            ecn: 0,
        }
    }
}

/// The TCP header of an outbound segment (the payload is passed separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpSegmentOut {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgment number.
    pub ack: SeqNumber,
    /// Flags, sent exactly as given.
    pub flags: TcpFlags,
    /// Window field, already scaled down.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Options, laid out as the module documentation shows.
    pub options: TcpOptions,
}

/// RFC 1071 Internet checksum, summing 32-bit words into a 64-bit accumulator (several times
/// faster than summing 16-bit words; the result is the same, RFC 1071 §2 (B) "byte order
/// independence" and (C) "parallel summation").
mod checksum {
    use super::Ipv4Address;

    /// One's-complement sum of `data` (big-endian 16-bit words, an odd last byte padded with
    /// zero) added to `acc`, not yet folded. `data` must be shorter than 4 GiB (frames are).
    ///
    /// The bulk is summed as native-endian 32-bit words into eight 64-bit lanes: a plain sum
    /// with no carry to propagate (each word adds less than 2^32, so a lane cannot overflow
    /// below 2^32 words), which the compiler vectorizes, folded at the end and swapped to
    /// network order once (RFC 1071 §2 (B) byte order independence, (C) parallel summation).
    ///
    /// Below [`LANES_MIN`] bytes (headers, short segments) the lanes' setup and reduction
    /// cost more than they save, and [`sum_small`] adds 64-bit words instead.
    #[inline]
    pub(super) fn sum(data: &[u8], acc: u64) -> u64 {
        if data.len() < LANES_MIN {
            return sum_small(data) + acc;
        }
        let mut lanes = [0u64; 8];
        let mut blocks = data.chunks_exact(32);
        for blk in &mut blocks {
            for (lane, w) in lanes.iter_mut().zip(blk.chunks_exact(4)) {
                *lane += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
            }
        }
        words_then_fold(blocks.remainder(), lanes.iter().sum(), acc)
    }

    /// From this length on, [`sum`] uses its vectorizable lanes.
    pub(super) const LANES_MIN: usize = 160;

    /// [`sum`] from 0 for up to a few hundred bytes: native-endian 64-bit words added with
    /// end-around carry (an add and an add-with-carry per word) into four independent
    /// accumulators, so that four carry chains run side by side instead of one long chain
    /// (a chain adds 8 bytes per two cycles; a 100-byte segment waited ~25 cycles on it).
    /// Each accumulator is folded to 33 bits (2^32 = 1 mod 0xffff), then the tail as in
    /// [`sum`].
    #[inline]
    pub(super) fn sum_small(data: &[u8]) -> u64 {
        #[inline(always)]
        fn add_carry(acc: u64, x: u64) -> u64 {
            let (t, c) = acc.overflowing_add(x);
            t + u64::from(c)
        }
        #[inline(always)]
        fn word(w: &[u8; 8]) -> u64 {
            u64::from_ne_bytes(*w)
        }
        let mut acc = [0u64; 4];
        let (blocks, rest) = data.as_chunks::<32>();
        for b in blocks {
            let (w, _) = b.as_chunks::<8>();
            for (a, w) in acc.iter_mut().zip(w) {
                *a = add_carry(*a, word(w));
            }
        }
        let (words, tail) = rest.as_chunks::<8>();
        for (a, w) in acc.iter_mut().zip(words) {
            *a = add_carry(*a, word(w));
        }
        // 64 -> 33 bits each: the halves are 32-bit words of the same sum.
        let native = acc.iter().map(|&a| (a & 0xffff_ffff) + (a >> 32)).sum();
        words_then_fold(tail, native, 0)
    }

    /// Adds `data`'s native-endian 32-bit words to the plain sum `native`, folds it to 16
    /// bits in network order and adds that and the tail (under 4 bytes, at an even offset,
    /// in network order) to `acc`.
    #[inline]
    fn words_then_fold(data: &[u8], mut native: u64, acc: u64) -> u64 {
        let mut words = data.chunks_exact(4);
        for w in &mut words {
            native += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
        let mut acc = acc + u64::from(u16::from_be(fold(native)));
        let mut rest = words.remainder();
        if rest.len() >= 2 {
            acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
        }
        if let Some(&b) = rest.first() {
            acc += u64::from(b) << 8;
        }
        acc
    }

    /// The TCP pseudo-header's sum (RFC 9293 §3.1): addresses, protocol 6, TCP length.
    #[inline]
    pub(super) fn pseudo(src: Ipv4Address, dst: Ipv4Address, tcp_len: usize) -> u64 {
        u64::from(u32::from(src)) + u64::from(u32::from(dst)) + 6 + tcp_len as u64
    }

    /// Folds the accumulator to 16 bits (end-around carry).
    #[inline]
    pub(super) fn fold(acc: u64) -> u16 {
        // The halves added with end-around carry, twice: 64 -> 32 -> 16 bits. Adding the
        // carry back cannot carry again (a sum that carried is at most 2^n - 2).
        let (x, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
        let x = x + u32::from(c);
        let (y, c) = (x as u16).overflowing_add((x >> 16) as u16);
        y + u16::from(c)
    }
}

/// Check the sizes and slice `buf` to the frame; `l4_len` is the IPv4 payload length.
fn frame_slice(buf: &mut [u8], l4_len: usize) -> Result<(&mut [u8], u16), EmitError> {
    let ip_len = IPV4_HEADER_LEN
        .checked_add(l4_len)
        .ok_or(EmitError::TooLong)?;
    let ip_len16 = u16::try_from(ip_len).map_err(|_| EmitError::TooLong)?;
    let needed = ETHERNET_HEADER_LEN + ip_len;
    match buf.get_mut(..needed) {
        Some(frame) => Ok((frame, ip_len16)),
        None => Err(EmitError::BufferTooSmall { needed }),
    }
}

/// Stores `words` as big-endian 32-bit words at the start of `dst` (at least `4 * N` bytes)
/// and returns their one's-complement sum, unfolded.
///
/// Headers are written this way, word by word, so that their checksum is summed from the
/// values in registers: reading back bytes that were just stored by narrower writes (a port,
/// a flags byte) cannot be forwarded from the store buffer and stalls the checksum loop.
#[inline]
fn put_words<const N: usize>(dst: &mut [u8], words: [u32; N]) -> u64 {
    let mut sum = 0u64;
    for (chunk, w) in dst.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_be_bytes());
        // A 32-bit word adds as its two 16-bit halves do, modulo 0xffff (2^16 ≡ 1).
        sum += u64::from(w);
    }
    sum
}

/// Write the Ethernet and IPv4 headers of `frame` (at least 34 bytes long).
#[inline]
fn write_eth_ipv4(
    frame: &mut [u8],
    hdr: &EthIpv4Header,
    protocol: IpProtocol,
    ip_len: u16,
    mode: ChecksumMode,
) {
    // Each address copied as one 6-byte block (as it was stored: a combined load across
    // the two fields could not be forwarded from the caller's stores).
    frame[0..6].copy_from_slice(&hdr.dst_mac.0);
    frame[6..12].copy_from_slice(&hdr.src_mac.0);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    // Version 4, IHL 5, DSCP 0 and ECN, total length | identification, DF, fragment offset 0 |
    // TTL, protocol, checksum | source | destination (RFC 791 §3.1).
    let words = [
        0x4500_0000 | (u32::from(hdr.ecn & 0x03) << 16) | u32::from(ip_len),
        (u32::from(hdr.ident) << 16) | if hdr.dont_frag { 0x4000 } else { 0 },
        (u32::from(hdr.ttl) << 24) | (u32::from(u8::from(protocol)) << 16),
        u32::from(hdr.src_ip),
        u32::from(hdr.dst_ip),
    ];
    let ip = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN];
    let sum = put_words(ip, words);
    if mode.compute_tx {
        ip[10..12].copy_from_slice(&(!checksum::fold(sum)).to_be_bytes());
    }
}

/// Write a whole Ethernet + IPv4 + TCP frame carrying `payload` into `buf`; returns its length.
///
/// With `mode.compute_tx == false` the IPv4 and TCP checksum fields are left zero.
pub fn emit_tcp(
    buf: &mut [u8],
    hdr: &EthIpv4Header,
    seg: &TcpSegmentOut,
    payload: &[u8],
    mode: ChecksumMode,
) -> Result<usize, EmitError> {
    emit_tcp_parts(buf, hdr, seg, payload, &[], mode)
}

/// Like [`emit_tcp`] with the payload in two parts, `first` then `second` (the two halves of
/// a ring buffer). The payload checksum is summed from the parts as they are copied from,
/// not read back from `buf`.
pub fn emit_tcp_parts(
    buf: &mut [u8],
    hdr: &EthIpv4Header,
    seg: &TcpSegmentOut,
    first: &[u8],
    second: &[u8],
    mode: ChecksumMode,
) -> Result<usize, EmitError> {
    let payload_len = first
        .len()
        .checked_add(second.len())
        .ok_or(EmitError::TooLong)?;
    let (frame, acc) = write_headers(buf, hdr, seg, payload_len, mode)?;
    let frame_len = frame.len();
    let payload = &mut frame[frame_len - payload_len..];
    // Most segments carry no payload or one part: no calls for empty parts.
    if !first.is_empty() {
        payload[..first.len()].copy_from_slice(first);
    }
    if !second.is_empty() {
        payload[first.len()..].copy_from_slice(second);
    }
    if mode.compute_tx {
        let mut acc = mode.sum(first, acc);
        if !second.is_empty() {
            // The second part starts at an odd offset when the first has odd length: its
            // 16-bit words then straddle, which swaps the bytes of its sum (RFC 1071 §2 (B)).
            let rest = checksum::fold(mode.sum(second, 0));
            acc += u64::from(if first.len() % 2 == 1 {
                rest.swap_bytes()
            } else {
                rest
            });
        }
        finish_tcp_checksum(frame, acc);
    }
    Ok(frame_len)
}

/// Like [`emit_tcp`], but `fill` writes the `payload_len` payload bytes in place, before the
/// checksum is computed (from what `fill` wrote). `fill` gets a slice of exactly
/// `payload_len` bytes, and is not called if the frame does not fit.
pub fn emit_tcp_with<F: FnOnce(&mut [u8])>(
    buf: &mut [u8],
    hdr: &EthIpv4Header,
    seg: &TcpSegmentOut,
    payload_len: usize,
    fill: F,
    mode: ChecksumMode,
) -> Result<usize, EmitError> {
    let (frame, acc) = write_headers(buf, hdr, seg, payload_len, mode)?;
    let frame_len = frame.len();
    let payload = &mut frame[frame_len - payload_len..];
    fill(payload);
    if mode.compute_tx {
        let acc = mode.sum(payload, acc);
        finish_tcp_checksum(frame, acc);
    }
    Ok(frame_len)
}

/// Checks the sizes and writes the Ethernet, IPv4 and TCP headers with options (TCP checksum
/// zero) for a payload of `payload_len`. Returns the frame and the one's-complement sum so
/// far of the pseudo-header, TCP header and options (unfolded).
fn write_headers<'b>(
    buf: &'b mut [u8],
    hdr: &EthIpv4Header,
    seg: &TcpSegmentOut,
    payload_len: usize,
    mode: ChecksumMode,
) -> Result<(&'b mut [u8], u64), EmitError> {
    // Nearly every segment after the handshake carries timestamps and nothing else (or no
    // option at all): those skip the general layout.
    let o = &seg.options;
    let ts_only =
        o.mss.is_none() && o.wscale.is_none() && !o.sack_permitted && o.sack_blocks[0].is_none();
    let options_len = match (ts_only, o.timestamp) {
        (true, Some(_)) => 12,
        (true, None) => 0,
        (false, _) => tcp_options_len(o),
    };
    let header_len = TCP_HEADER_LEN + options_len;
    let l4_len = header_len
        .checked_add(payload_len)
        .ok_or(EmitError::TooLong)?;
    let (frame, ip_len) = frame_slice(buf, l4_len)?;
    write_eth_ipv4(frame, hdr, IpProtocol::Tcp, ip_len, mode);
    let l4 = &mut frame[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..];
    // Ports | sequence number | acknowledgment number | data offset (reserved bits zero),
    // flags (`TcpFlags` holds them as on the wire), window | checksum, urgent pointer
    // (RFC 9293 §3.1).
    let words = [
        (u32::from(seg.src_port) << 16) | u32::from(seg.dst_port),
        seg.seq.0,
        seg.ack.0,
        ((header_len as u32 / 4) << 28) | (u32::from(seg.flags.0) << 16) | u32::from(seg.window),
        u32::from(seg.urgent),
    ];
    let mut acc = put_words(l4, words);
    match (ts_only, o.timestamp) {
        (true, Some((tsval, tsecr))) => {
            let layout = u32::from_be_bytes([OPT_NOP, OPT_NOP, OPT_TS, 10]);
            acc += put_words(&mut l4[TCP_HEADER_LEN..], [layout, tsval, tsecr]);
        }
        (true, None) => {}
        (false, _) => acc += write_options(&mut l4[TCP_HEADER_LEN..header_len], o),
    }
    acc += checksum::pseudo(hdr.src_ip, hdr.dst_ip, l4_len);
    Ok((frame, acc))
}

/// Stores the TCP checksum of a frame whose one's-complement sum (pseudo-header included,
/// checksum field zero) is `acc`.
fn finish_tcp_checksum(frame: &mut [u8], acc: u64) {
    let at = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 16;
    frame[at..at + 2].copy_from_slice(&(!checksum::fold(acc)).to_be_bytes());
}

fn emit_icmp_echo(
    buf: &mut [u8],
    hdr: &EthIpv4Header,
    message: Icmpv4Message,
    ident: u16,
    seq: u16,
    payload: &[u8],
    mode: ChecksumMode,
) -> Result<usize, EmitError> {
    let l4_len = ICMP_ECHO_HEADER_LEN
        .checked_add(payload.len())
        .ok_or(EmitError::TooLong)?;
    let (frame, ip_len) = frame_slice(buf, l4_len)?;
    let frame_len = frame.len();
    write_eth_ipv4(frame, hdr, IpProtocol::Icmp, ip_len, mode);
    let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..]);
    icmp.set_msg_type(message);
    icmp.set_msg_code(0);
    icmp.set_echo_ident(ident);
    icmp.set_echo_seq_no(seq);
    icmp.data_mut().copy_from_slice(payload);
    // Always computed: NICs do not offload ICMP checksums.
    icmp.fill_checksum();
    Ok(frame_len)
}

/// Write an ICMP echo reply (RFC 792) echoing `ident`, `seq` and `payload` of a request.
/// `hdr` addresses the requester. The ICMP checksum is always computed.
pub fn emit_icmp_echo_reply(
    buf: &mut [u8],
    hdr: &EthIpv4Header,
    ident: u16,
    seq: u16,
    payload: &[u8],
    mode: ChecksumMode,
) -> Result<usize, EmitError> {
    emit_icmp_echo(
        buf,
        hdr,
        Icmpv4Message::EchoReply,
        ident,
        seq,
        payload,
        mode,
    )
}

/// Write an ICMP echo request (ping). The ICMP checksum is always computed.
pub fn emit_icmp_echo_request(
    buf: &mut [u8],
    hdr: &EthIpv4Header,
    ident: u16,
    seq: u16,
    payload: &[u8],
    mode: ChecksumMode,
) -> Result<usize, EmitError> {
    emit_icmp_echo(
        buf,
        hdr,
        Icmpv4Message::EchoRequest,
        ident,
        seq,
        payload,
        mode,
    )
}

/// Write an Ethernet/IPv4 ARP packet: `eth_dst` is the frame's destination, the other
/// arguments the ARP fields. Returns [`ARP_FRAME_LEN`] (no padding to 60 bytes).
pub fn emit_arp(
    buf: &mut [u8],
    eth_dst: EthernetAddress,
    arp: &ArpInfo,
) -> Result<usize, EmitError> {
    let frame = buf
        .get_mut(..ARP_FRAME_LEN)
        .ok_or(EmitError::BufferTooSmall {
            needed: ARP_FRAME_LEN,
        })?;
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    eth.set_dst_addr(eth_dst);
    eth.set_src_addr(arp.sender_mac);
    eth.set_ethertype(EthernetProtocol::Arp);
    let repr = ArpRepr::EthernetIpv4 {
        operation: match arp.op {
            ArpOp::Request => ArpOperation::Request,
            ArpOp::Reply => ArpOperation::Reply,
        },
        source_hardware_addr: arp.sender_mac,
        source_protocol_addr: arp.sender_ip,
        target_hardware_addr: arp.target_mac,
        target_protocol_addr: arp.target_ip,
    };
    repr.emit(&mut ArpPacket::new_unchecked(
        &mut frame[ETHERNET_HEADER_LEN..],
    ));
    Ok(ARP_FRAME_LEN)
}

/// Write a broadcast ARP request "who has `target_ip`? tell `src_ip`" (THA zero).
pub fn emit_arp_request(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    src_ip: Ipv4Address,
    target_ip: Ipv4Address,
) -> Result<usize, EmitError> {
    let arp = ArpInfo {
        op: ArpOp::Request,
        sender_mac: src_mac,
        sender_ip: src_ip,
        target_mac: EthernetAddress([0; 6]),
        target_ip,
    };
    emit_arp(buf, EthernetAddress::BROADCAST, &arp)
}

/// Write a unicast ARP reply "`src_ip` is at `src_mac`" to the requester `dst_mac`/`dst_ip`.
pub fn emit_arp_reply(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    src_ip: Ipv4Address,
    dst_mac: EthernetAddress,
    dst_ip: Ipv4Address,
) -> Result<usize, EmitError> {
    let arp = ArpInfo {
        op: ArpOp::Reply,
        sender_mac: src_mac,
        sender_ip: src_ip,
        target_mac: dst_mac,
        target_ip: dst_ip,
    };
    emit_arp(buf, dst_mac, &arp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_options(opts: &[u8]) -> Result<TcpOptions, ParseError> {
        // Start from garbage: the parser must overwrite every field.
        let mut o = TcpOptions {
            mss: Some(7),
            wscale: Some(3),
            sack_permitted: true,
            sack_blocks: [Some((SeqNumber(1), SeqNumber(2))); 4],
            timestamp: Some((5, 6)),
        };
        parse_options_into(opts, &mut o).map(|()| o)
    }
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const MAC_A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const MAC_B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
    const IP_A: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const IP_B: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

    fn hdr() -> EthIpv4Header {
        EthIpv4Header::new(MAC_A, MAC_B, IP_A, IP_B)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A SYN laid out as Linux sends it, checksums computed independently (Python, RFC 1071):
    /// 10.0.0.1:43210 -> 10.0.0.2:80, seq 0x12345678, win 64240,
    /// MSS 1460, SACKOK, TS 0x01020304/0, NOP, WS 7.
    const LINUX_SYN: &str = "02000000000202000000000108004500003c1c46400040060a740a0000010a000002\
                             a8ca00501234567800000000a002faf023400000020405b40402080a0102030400000000\
                             01030307";

    fn linux_syn_options() -> TcpOptions {
        TcpOptions {
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            sack_blocks: [None; 4],
            timestamp: Some((0x0102_0304, 0)),
        }
    }

    fn linux_syn_out() -> TcpSegmentOut {
        TcpSegmentOut {
            src_port: 43210,
            dst_port: 80,
            seq: SeqNumber(0x1234_5678),
            ack: SeqNumber(0),
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            options: linux_syn_options(),
        }
    }

    fn tcp_of(inbound: Inbound<'_>) -> (Ipv4Info, TcpSegment<'_>) {
        match inbound {
            Inbound::Tcp { ip, seg, .. } => (ip, seg),
            other => panic!("expected TCP, got {other:?}"),
        }
    }

    fn out_of(seg: &TcpSegment<'_>) -> TcpSegmentOut {
        TcpSegmentOut {
            src_port: seg.src_port,
            dst_port: seg.dst_port,
            seq: seg.seq,
            ack: seg.ack,
            flags: seg.flags,
            window: seg.window,
            urgent: seg.urgent,
            options: seg.options,
        }
    }

    fn emit_vec(seg: &TcpSegmentOut, payload: &[u8], mode: ChecksumMode) -> Vec<u8> {
        let mut buf = vec![0u8; 1600];
        let n = emit_tcp(&mut buf, &hdr(), seg, payload, mode).unwrap();
        assert_eq!(n, tcp_frame_len(&seg.options, payload.len()));
        buf.truncate(n);
        buf
    }

    #[test]
    fn known_good_linux_syn_parses() {
        let frame = hex(LINUX_SYN);
        let inbound = parse_frame(&frame, ChecksumMode::SOFTWARE).unwrap();
        let Inbound::Tcp { eth, ip, seg } = inbound else {
            panic!("{inbound:?}")
        };
        assert_eq!(
            eth,
            EthInfo {
                src: MAC_A,
                dst: MAC_B
            }
        );
        assert_eq!(
            (ip.src, ip.dst, ip.ttl, ip.ident, ip.dont_frag),
            (IP_A, IP_B, 64, 0x1c46, true)
        );
        assert_eq!(ip.protocol, 6);
        assert_eq!(out_of(&seg), linux_syn_out());
        assert!(seg.payload.is_empty());
        assert_eq!(seg.seq_len(), 1);
    }

    #[test]
    fn emit_reproduces_linux_syn_byte_for_byte() {
        let mut h = hdr();
        h.src_mac = MAC_A;
        h.dst_mac = MAC_B;
        h.ident = 0x1c46;
        let mut buf = [0u8; 128];
        let n = emit_tcp(&mut buf, &h, &linux_syn_out(), &[], ChecksumMode::SOFTWARE).unwrap();
        assert_eq!(&buf[..n], &hex(LINUX_SYN)[..]);
        assert_eq!(tcp_header_len(&linux_syn_options()), 40);
    }

    /// The two fast paths of `parse_options` (data TS layout, Linux SYN layout) agree with
    /// the general walk, which the same options padded with NOPs take.
    #[test]
    fn option_fast_paths_agree_with_the_walk() {
        let syn: [u8; 20] = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 14,
        ];
        let ts: [u8; 12] = [1, 1, 8, 10, 9, 9, 9, 9, 0, 0, 0, 1];
        for fast in [&syn[..], &ts[..]] {
            let mut padded = fast.to_vec();
            padded.extend_from_slice(&[1, 1, 1, 1]);
            assert_eq!(parse_options(fast), parse_options(&padded));
        }
        let o = parse_options(&syn).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(14));
        assert!(o.sack_permitted);
        assert_eq!(o.timestamp, Some((0x0102_0304, 0x0506_0708)));
    }

    #[test]
    fn data_segment_option_layout() {
        let mut o = TcpOptions {
            timestamp: Some((7, 9)),
            ..TcpOptions::default()
        };
        o.sack_blocks[0] = Some((SeqNumber(100), SeqNumber(200)));
        let seg = TcpSegmentOut {
            src_port: 1,
            dst_port: 2,
            flags: TcpFlags::ACK,
            options: o,
            ..Default::default()
        };
        let frame = emit_vec(&seg, b"hi", ChecksumMode::SOFTWARE);
        let opts = &frame[54..54 + 24];
        assert_eq!(
            opts,
            &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9, 1, 1, 5, 10, 0, 0, 0, 100, 0, 0, 0, 200][..]
        );
        assert_eq!(&frame[78..], b"hi");
        // Without timestamps, SACK-permitted alone and window scale.
        let o = TcpOptions {
            sack_permitted: true,
            wscale: Some(3),
            ..TcpOptions::default()
        };
        let seg = TcpSegmentOut {
            src_port: 1,
            dst_port: 2,
            options: o,
            ..Default::default()
        };
        let frame = emit_vec(&seg, &[], ChecksumMode::SOFTWARE);
        assert_eq!(&frame[54..], &[1, 1, 4, 2, 1, 3, 3, 3][..]);
    }

    /// RFC 1071's reference loop, as a [`ChecksumAccel`] would compute it.
    fn rfc1071_sum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            sum += u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// A wrong sum, to show where the accelerator is used.
    fn wrong_sum(_: &[u8]) -> u16 {
        0x1234
    }

    #[test]
    fn checksum_accel_gives_the_same_frames_and_is_used_from_its_minimum_length() {
        let good = ChecksumMode {
            accel: Some(ChecksumAccel(rfc1071_sum)),
            ..ChecksumMode::SOFTWARE
        };
        let wrong = ChecksumMode {
            accel: Some(ChecksumAccel(wrong_sum)),
            ..ChecksumMode::SOFTWARE
        };
        let seg = TcpSegmentOut {
            flags: TcpFlags::ACK,
            ..linux_syn_out()
        };
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [
            0,
            1,
            7,
            ACCEL_MIN_LEN - 1,
            ACCEL_MIN_LEN,
            ACCEL_MIN_LEN + 1,
            999,
        ] {
            let payload = &long[..len];
            let plain = emit_vec(&seg, payload, ChecksumMode::SOFTWARE);
            assert_eq!(emit_vec(&seg, payload, good), plain, "length {len}");
            assert!(parse_frame(&plain, good).is_ok(), "length {len}");
            // The whole TCP segment (header included) is what is summed on receive.
            let summed = plain.len() - ETHERNET_HEADER_LEN - IPV4_HEADER_LEN;
            let got = parse_frame(&plain, wrong);
            if summed >= ACCEL_MIN_LEN {
                assert_eq!(got.err(), Some(ParseError::BadChecksum), "length {len}");
            } else {
                assert!(got.is_ok(), "length {len}");
            }
        }
        // A payload in two parts (a wrapped send ring), the first of odd length.
        let mut buf = vec![0u8; 1600];
        let n =
            emit_tcp_parts(&mut buf, &hdr(), &seg, &long[..301], &long[301..900], good).unwrap();
        assert_eq!(
            buf[..n],
            emit_vec(&seg, &long[..900], ChecksumMode::SOFTWARE)[..]
        );
    }

    #[test]
    fn sack_blocks_trimmed_to_fit_40_bytes() {
        let blocks = [
            Some((SeqNumber(1), SeqNumber(2))),
            Some((SeqNumber(3), SeqNumber(4))),
            Some((SeqNumber(5), SeqNumber(6))),
            Some((SeqNumber(7), SeqNumber(8))),
        ];
        let no_ts = TcpOptions {
            sack_blocks: blocks,
            ..TcpOptions::default()
        };
        assert_eq!(tcp_options_len(&no_ts), 36);
        let ts = TcpOptions {
            timestamp: Some((1, 2)),
            ..no_ts
        };
        assert_eq!(tcp_options_len(&ts), 40);
        assert_eq!(ts.trimmed().sack_block_count(), 3);
        let all = TcpOptions {
            mss: Some(1),
            wscale: Some(1),
            sack_permitted: true,
            ..ts
        };
        assert_eq!(tcp_options_len(&all), 40);
        assert_eq!(all.trimmed().sack_block_count(), 2);
        for o in [no_ts, ts, all] {
            let seg = TcpSegmentOut {
                src_port: 1,
                dst_port: 2,
                options: o,
                ..Default::default()
            };
            let frame = emit_vec(&seg, &[], ChecksumMode::SOFTWARE);
            let (_, got) = tcp_of(parse_frame(&frame, ChecksumMode::SOFTWARE).unwrap());
            assert_eq!(got.options, o.trimmed());
        }
    }

    #[test]
    fn every_flag_combination_round_trips() {
        for bits in 0..=255u8 {
            let seg = TcpSegmentOut {
                src_port: 5000,
                dst_port: 80,
                seq: SeqNumber(u32::MAX - 3),
                ack: SeqNumber(77),
                flags: TcpFlags::from_bits(bits),
                window: 1234,
                urgent: 9,
                options: TcpOptions {
                    timestamp: Some((1, 2)),
                    ..TcpOptions::default()
                },
            };
            let frame = emit_vec(&seg, b"payload", ChecksumMode::SOFTWARE);
            let (_, got) = tcp_of(parse_frame(&frame, ChecksumMode::SOFTWARE).unwrap());
            assert_eq!(out_of(&got), seg);
            assert_eq!(got.payload, b"payload");
            assert_eq!(got.flags.bits(), bits);
        }
    }

    #[test]
    fn every_option_set_round_trips() {
        for mask in 0..32u32 {
            for nsack in 0..=4usize {
                let mut o = TcpOptions::default();
                if mask & 1 != 0 {
                    o.mss = Some(1460);
                }
                if mask & 2 != 0 {
                    o.wscale = Some(14);
                }
                if mask & 4 != 0 {
                    o.sack_permitted = true;
                }
                if mask & 8 != 0 {
                    o.timestamp = Some((u32::MAX, 0x8000_0000));
                }
                if mask & 16 == 0 && nsack > 0 {
                    continue;
                }
                for i in 0..nsack {
                    o.sack_blocks[i] =
                        Some((SeqNumber(i as u32 * 10), SeqNumber(i as u32 * 10 + 5)));
                }
                let len = tcp_options_len(&o);
                assert!(
                    len <= TCP_MAX_OPTIONS_LEN && len.is_multiple_of(4),
                    "{o:?} -> {len}"
                );
                let seg = TcpSegmentOut {
                    src_port: 9,
                    dst_port: 10,
                    options: o,
                    ..Default::default()
                };
                let frame = emit_vec(&seg, &[0xab; 3], ChecksumMode::SOFTWARE);
                let (_, got) = tcp_of(parse_frame(&frame, ChecksumMode::SOFTWARE).unwrap());
                assert_eq!(got.options, o.trimmed());
            }
        }
    }

    #[test]
    fn fill_closure_writes_payload_in_place() {
        let seg = TcpSegmentOut {
            src_port: 1,
            dst_port: 2,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            ..Default::default()
        };
        let mut buf = [0u8; 200];
        let n = emit_tcp_with(
            &mut buf,
            &hdr(),
            &seg,
            10,
            |p| {
                p[..4].copy_from_slice(b"abcd");
                p[4..].copy_from_slice(b"efghij");
            },
            ChecksumMode::SOFTWARE,
        )
        .unwrap();
        let (_, got) = tcp_of(parse_frame(&buf[..n], ChecksumMode::SOFTWARE).unwrap());
        assert_eq!(got.payload, b"abcdefghij");
    }

    #[test]
    fn emit_errors() {
        let seg = linux_syn_out();
        let mut small = [0u8; 73];
        assert_eq!(
            emit_tcp(&mut small, &hdr(), &seg, &[], ChecksumMode::SOFTWARE),
            Err(EmitError::BufferTooSmall { needed: 74 })
        );
        let mut buf = vec![0u8; 70_000];
        let big = vec![0u8; 65_536];
        assert_eq!(
            emit_tcp(&mut buf, &hdr(), &seg, &big, ChecksumMode::SOFTWARE),
            Err(EmitError::TooLong)
        );
        let mut tiny = [0u8; 41];
        assert!(emit_arp_request(&mut tiny, MAC_A, IP_A, IP_B).is_err());
        assert!(
            emit_icmp_echo_reply(&mut tiny, &hdr(), 1, 2, &[], ChecksumMode::SOFTWARE).is_err()
        );
    }

    #[test]
    fn truncated_at_every_length() {
        let frames = [
            hex(LINUX_SYN),
            emit_vec(&linux_syn_out(), b"some data", ChecksumMode::SOFTWARE),
        ];
        for frame in frames {
            for len in 0..frame.len() {
                let err = parse_frame(&frame[..len], ChecksumMode::SOFTWARE).unwrap_err();
                assert_eq!(err, ParseError::Truncated, "len {len}");
            }
        }
        let mut buf = [0u8; 64];
        let n = emit_arp_request(&mut buf, MAC_A, IP_A, IP_B).unwrap();
        for len in 0..n {
            assert_eq!(
                parse_frame(&buf[..len], ChecksumMode::SOFTWARE),
                Err(ParseError::Truncated)
            );
        }
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut frame = emit_vec(
            &TcpSegmentOut {
                src_port: 1,
                dst_port: 2,
                ..Default::default()
            },
            &[],
            ChecksumMode::SOFTWARE,
        );
        assert_eq!(frame.len(), 54);
        frame.resize(60, 0);
        let (_, seg) = tcp_of(parse_frame(&frame, ChecksumMode::SOFTWARE).unwrap());
        assert!(seg.payload.is_empty());
    }

    #[test]
    fn corrupted_checksums_are_reported_unless_offloaded() {
        let good = emit_vec(&linux_syn_out(), b"data", ChecksumMode::SOFTWARE);
        // Every single-bit flip of the IPv4 header or TCP segment changes a checksum (or a
        // field the parser rejects first); none may panic or be accepted as is.
        for i in ETHERNET_HEADER_LEN..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                match parse_frame(&bad, ChecksumMode::SOFTWARE) {
                    Err(_) => {}
                    Ok(x) => panic!("byte {i} bit {bit} accepted: {x:?}"),
                }
                let _ = parse_frame(&bad, ChecksumMode::OFFLOAD);
            }
        }
        // A corrupted payload byte: BadChecksum, and accepted with verify_rx off.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(
            parse_frame(&bad, ChecksumMode::SOFTWARE),
            Err(ParseError::BadChecksum)
        );
        let rx_off = ChecksumMode {
            verify_rx: false,
            ..ChecksumMode::SOFTWARE
        };
        let (_, seg) = tcp_of(parse_frame(&bad, rx_off).unwrap());
        assert_eq!(seg.payload[3], b'a' ^ 0xff);
        // A corrupted IPv4 header checksum.
        let mut bad = good;
        bad[24] ^= 1;
        assert_eq!(
            parse_frame(&bad, ChecksumMode::SOFTWARE),
            Err(ParseError::BadChecksum)
        );
        assert!(parse_frame(&bad, rx_off).is_ok());
    }

    #[test]
    fn compute_tx_off_leaves_checksums_zero() {
        let tx_off = ChecksumMode {
            compute_tx: false,
            ..ChecksumMode::SOFTWARE
        };
        let frame = emit_vec(&linux_syn_out(), b"x", tx_off);
        assert_eq!(&frame[24..26], &[0, 0]); // IPv4 header checksum
        assert_eq!(&frame[50..52], &[0, 0]); // TCP checksum
        assert_eq!(
            parse_frame(&frame, ChecksumMode::SOFTWARE),
            Err(ParseError::BadChecksum)
        );
        let (_, seg) = tcp_of(parse_frame(&frame, ChecksumMode::OFFLOAD).unwrap());
        assert_eq!(out_of(&seg), linux_syn_out());
    }

    #[test]
    fn fragments_ethertypes_and_filtering() {
        let frame = emit_vec(&linux_syn_out(), &[], ChecksumMode::SOFTWARE);
        let local = LocalAddrs {
            mac: MAC_B,
            ip: IP_B,
        };
        assert!(parse_frame_for(&frame, &local, ChecksumMode::SOFTWARE).is_ok());
        let other = LocalAddrs {
            mac: MAC_A,
            ip: IP_B,
        };
        assert_eq!(
            parse_frame_for(&frame, &other, ChecksumMode::SOFTWARE),
            Err(ParseError::NotForUs)
        );
        let other = LocalAddrs {
            mac: MAC_B,
            ip: IP_A,
        };
        assert_eq!(
            parse_frame_for(&frame, &other, ChecksumMode::SOFTWARE),
            Err(ParseError::NotForUs)
        );

        // More-fragments set / nonzero offset, with a fixed-up header checksum.
        for flg_off in [0x2000u16, 0x0001, 0x4001] {
            let mut f = frame.clone();
            f[20..22].copy_from_slice(&flg_off.to_be_bytes());
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.fill_checksum();
            assert_eq!(
                parse_frame(&f, ChecksumMode::SOFTWARE),
                Err(ParseError::Fragment)
            );
        }
        let mut f = frame.clone();
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(
            parse_frame(&f, ChecksumMode::SOFTWARE),
            Err(ParseError::UnsupportedEtherType)
        );
        let mut f = frame.clone();
        f[14] = 0x65; // version 6
        assert_eq!(
            parse_frame(&f, ChecksumMode::OFFLOAD),
            Err(ParseError::Malformed)
        );
        let mut f = frame.clone();
        f[14] = 0x44; // IHL 4
        assert_eq!(
            parse_frame(&f, ChecksumMode::OFFLOAD),
            Err(ParseError::Malformed)
        );
        let mut f = frame;
        f[46] = 0x40; // TCP data offset 16
        assert_eq!(
            parse_frame(&f, ChecksumMode::OFFLOAD),
            Err(ParseError::Malformed)
        );
    }

    #[test]
    fn malformed_options_reject_the_segment() {
        let base = TcpSegmentOut {
            src_port: 1,
            dst_port: 2,
            options: linux_syn_options(),
            ..Default::default()
        };
        let frame = emit_vec(&base, &[], ChecksumMode::OFFLOAD);
        // Options start at 54: MSS(4) SACKOK(2) TS(10) NOP WS(3).
        for (at, value) in [
            (55, 5u8),
            (55, 0),
            (59, 3),
            (61, 9),
            (61, 0),
            (72, 2),
            (72, 40),
            (58, 5),
        ] {
            let mut f = frame.clone();
            f[at] = value;
            assert_eq!(
                parse_frame(&f, ChecksumMode::OFFLOAD),
                Err(ParseError::Malformed),
                "{at}={value}"
            );
        }
        // Unknown option kinds with sane lengths are skipped; EOL ends the list.
        let mut f = frame.clone();
        f[58..60].copy_from_slice(&[30, 2]);
        let (_, seg) = tcp_of(parse_frame(&f, ChecksumMode::OFFLOAD).unwrap());
        assert!(!seg.options.sack_permitted && seg.options.mss == Some(1460));
        let mut f = frame;
        f[58] = 0; // EOL: the rest (TS, WS) is ignored
        let (_, seg) = tcp_of(parse_frame(&f, ChecksumMode::OFFLOAD).unwrap());
        assert_eq!(
            seg.options,
            TcpOptions {
                mss: Some(1460),
                ..TcpOptions::default()
            }
        );
    }

    #[test]
    fn four_sack_blocks_parse() {
        let mut o = TcpOptions::default();
        for i in 0..4 {
            o.sack_blocks[i] = Some((SeqNumber(u32::MAX - i as u32), SeqNumber(i as u32)));
        }
        let seg = TcpSegmentOut {
            src_port: 1,
            dst_port: 2,
            options: o,
            ..Default::default()
        };
        let frame = emit_vec(&seg, &[], ChecksumMode::SOFTWARE);
        let (_, got) = tcp_of(parse_frame(&frame, ChecksumMode::SOFTWARE).unwrap());
        assert_eq!(got.options.sack_blocks, o.sack_blocks);
    }

    #[test]
    fn zero_ports_are_malformed() {
        let seg = TcpSegmentOut {
            src_port: 0,
            dst_port: 2,
            ..Default::default()
        };
        let frame = emit_vec(&seg, &[], ChecksumMode::SOFTWARE);
        assert_eq!(
            parse_frame(&frame, ChecksumMode::SOFTWARE),
            Err(ParseError::Malformed)
        );
    }

    #[test]
    fn arp_round_trips() {
        let mut buf = [0u8; 64];
        let n = emit_arp_request(&mut buf, MAC_A, IP_A, IP_B).unwrap();
        assert_eq!(n, ARP_FRAME_LEN);
        let Ok(Inbound::Arp { eth, arp }) = parse_frame(&buf[..n], ChecksumMode::SOFTWARE) else {
            panic!()
        };
        assert_eq!(eth.dst, EthernetAddress::BROADCAST);
        assert_eq!(
            arp,
            ArpInfo {
                op: ArpOp::Request,
                sender_mac: MAC_A,
                sender_ip: IP_A,
                target_mac: EthernetAddress([0; 6]),
                target_ip: IP_B
            }
        );
        // Broadcast passes the local filter.
        let local = LocalAddrs {
            mac: MAC_B,
            ip: IP_B,
        };
        assert!(parse_frame_for(&buf[..n], &local, ChecksumMode::SOFTWARE).is_ok());

        let n = emit_arp_reply(&mut buf, MAC_B, IP_B, MAC_A, IP_A).unwrap();
        let Ok(Inbound::Arp { eth, arp }) = parse_frame(&buf[..n], ChecksumMode::SOFTWARE) else {
            panic!()
        };
        assert_eq!(
            eth,
            EthInfo {
                src: MAC_B,
                dst: MAC_A
            }
        );
        assert_eq!(
            arp,
            ArpInfo {
                op: ArpOp::Reply,
                sender_mac: MAC_B,
                sender_ip: IP_B,
                target_mac: MAC_A,
                target_ip: IP_A
            }
        );
        // Unknown operation, wrong hardware length.
        let mut f = buf;
        f[21] = 9;
        assert_eq!(
            parse_frame(&f[..n], ChecksumMode::SOFTWARE),
            Err(ParseError::Malformed)
        );
        let mut f = buf;
        f[18] = 8;
        assert!(parse_frame(&f[..n], ChecksumMode::SOFTWARE).is_err());
    }

    #[test]
    fn icmp_echo_round_trips() {
        let mut buf = [0u8; 128];
        let n = emit_icmp_echo_request(
            &mut buf,
            &hdr(),
            0x1234,
            7,
            b"ping!",
            ChecksumMode::SOFTWARE,
        )
        .unwrap();
        let Ok(Inbound::IcmpEcho {
            ip,
            ident,
            seq,
            payload,
            ..
        }) = parse_frame(&buf[..n], ChecksumMode::SOFTWARE)
        else {
            panic!()
        };
        assert_eq!(
            (ip.src, ip.dst, ident, seq, payload),
            (IP_A, IP_B, 0x1234, 7, &b"ping!"[..])
        );
        // The reply parses as "other" (we only answer requests).
        let n = emit_icmp_echo_reply(&mut buf, &hdr(), 0x1234, 7, b"ping!", ChecksumMode::OFFLOAD)
            .unwrap();
        assert!(matches!(
            parse_frame(&buf[..n], ChecksumMode::OFFLOAD),
            Ok(Inbound::OtherIpv4 { .. })
        ));
        // ICMP checksums are verified even with verify_rx off.
        let mut f = buf;
        f[n - 1] ^= 1;
        assert_eq!(
            parse_frame(&f[..n], ChecksumMode::OFFLOAD),
            Err(ParseError::BadChecksum)
        );
    }

    #[test]
    fn flags_display_and_debug() {
        let f = TcpFlags::SYN | TcpFlags::ACK;
        assert_eq!(alloc::format!("{f}"), "SYN|ACK");
        assert_eq!(alloc::format!("{f:?}"), "TcpFlags(0x12 SYN|ACK)");
        assert_eq!(alloc::format!("{}", TcpFlags::EMPTY), "-");
        assert!(f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert_eq!(f.difference(TcpFlags::ACK), TcpFlags::SYN);
    }

    fn arb_options() -> impl Strategy<Value = TcpOptions> {
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u8>()),
            any::<bool>(),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4),
            proptest::option::of((any::<u32>(), any::<u32>())),
        )
            .prop_map(|(mss, wscale, sack_permitted, blocks, timestamp)| {
                let mut sack_blocks = [None; 4];
                for (slot, (l, r)) in sack_blocks.iter_mut().zip(blocks) {
                    *slot = Some((SeqNumber(l), SeqNumber(r)));
                }
                TcpOptions {
                    mss,
                    wscale,
                    sack_permitted,
                    sack_blocks,
                    timestamp,
                }
            })
    }

    fn arb_segment() -> impl Strategy<Value = TcpSegmentOut> {
        (
            1..=u16::MAX,
            1..=u16::MAX,
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            arb_options(),
        )
            .prop_map(
                |(src_port, dst_port, seq, ack, flags, window, urgent, options)| TcpSegmentOut {
                    src_port,
                    dst_port,
                    seq: SeqNumber(seq),
                    ack: SeqNumber(ack),
                    flags: TcpFlags::from_bits(flags),
                    window,
                    urgent,
                    options,
                },
            )
    }

    proptest! {
        /// A payload in two parts (any split, odd lengths included) gives the very bytes of
        /// the same payload in one part, and `emit_tcp_with` the same again; the checksums
        /// verify (and so does the reference 16-bit checksum of smoltcp).
        #[test]
        fn payload_parts_emit_the_same_frame(
            seg in arb_segment(),
            payload in proptest::collection::vec(any::<u8>(), 0..1400),
            split in any::<proptest::sample::Index>(),
            ecn in 0u8..4,
            ident in any::<u16>(),
        ) {
            let mut h = hdr();
            h.ecn = ecn;
            h.ident = ident;
            let at = split.index(payload.len() + 1);
            let (a, b) = payload.split_at(at);
            let mut one = vec![0u8; 1600];
            let mut two = vec![0u8; 1600];
            let mut with = vec![0u8; 1600];
            let n = emit_tcp(&mut one, &h, &seg, &payload, ChecksumMode::SOFTWARE).unwrap();
            let m = emit_tcp_parts(&mut two, &h, &seg, a, b, ChecksumMode::SOFTWARE).unwrap();
            let k = emit_tcp_with(&mut with, &h, &seg, payload.len(), |d| d.copy_from_slice(&payload), ChecksumMode::SOFTWARE).unwrap();
            prop_assert_eq!(n, m);
            prop_assert_eq!(n, k);
            prop_assert_eq!(&one[..n], &two[..m]);
            prop_assert_eq!(&one[..n], &with[..k]);
            let ip = Ipv4Packet::new_checked(&one[ETHERNET_HEADER_LEN..n]).unwrap();
            prop_assert!(ip.verify_checksum());
            prop_assert_eq!(ip.ecn(), ecn);
            prop_assert_eq!(ip.ident(), ident);
            prop_assert!(ip.dont_frag());
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            prop_assert!(tcp.verify_checksum(&smoltcp::wire::IpAddress::Ipv4(h.src_ip), &smoltcp::wire::IpAddress::Ipv4(h.dst_ip)));
            let (_, got) = tcp_of(parse_frame(&one[..n], ChecksumMode::SOFTWARE).unwrap());
            prop_assert_eq!(got.payload, &payload[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_frame(&bytes, ChecksumMode::SOFTWARE);
            let _ = parse_frame(&bytes, ChecksumMode::OFFLOAD);
        }

        /// Random bytes behind valid Ethernet and IPv4 headers reach the TCP, ICMP and ARP
        /// parsers (checksums off so they are not the first thing to fail).
        #[test]
        fn random_transport_bytes_never_panic(
            proto in prop_oneof![Just(6u8), Just(1u8), Just(17u8)],
            arp in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut frame = vec![0u8; 34];
            frame[..6].copy_from_slice(&MAC_B.0);
            frame[6..12].copy_from_slice(&MAC_A.0);
            if arp {
                frame.truncate(14);
                frame[12..14].copy_from_slice(&[8, 6]);
            } else {
                frame[12..14].copy_from_slice(&[8, 0]);
                frame[14] = 0x45;
                frame[16..18].copy_from_slice(&((20 + body.len()) as u16).to_be_bytes());
                frame[22] = 64;
                frame[23] = proto;
            }
            frame.extend_from_slice(&body);
            let _ = parse_frame(&frame, ChecksumMode::OFFLOAD);
            let _ = parse_frame(&frame, ChecksumMode::SOFTWARE);
        }

        /// Random options bytes behind a valid TCP header.
        #[test]
        fn random_options_never_panic(opts in proptest::collection::vec(any::<u8>(), 0..=40usize)) {
            let mut o = opts.clone();
            o.resize(opts.len().div_ceil(4) * 4, 0);
            let seg = TcpSegmentOut { src_port: 1, dst_port: 2, ..Default::default() };
            let mut frame = emit_vec(&seg, &o, ChecksumMode::OFFLOAD);
            frame[46] = (((20 + o.len()) / 4) << 4) as u8;
            let _ = parse_frame(&frame, ChecksumMode::OFFLOAD);
        }

        #[test]
        fn random_segments_round_trip(
            seg in arb_segment(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            ttl in any::<u8>(),
            ident in any::<u16>(),
        ) {
            let mut h = hdr();
            h.ttl = ttl;
            h.ident = ident;
            let mut buf = vec![0u8; 300];
            let n = emit_tcp(&mut buf, &h, &seg, &payload, ChecksumMode::SOFTWARE).unwrap();
            prop_assert_eq!(n, tcp_frame_len(&seg.options, payload.len()));
            let (ip, got) = tcp_of(parse_frame(&buf[..n], ChecksumMode::SOFTWARE).unwrap());
            prop_assert_eq!((ip.ttl, ip.ident, ip.src, ip.dst), (ttl, ident, IP_A, IP_B));
            let mut expected = seg;
            expected.options = seg.options.trimmed();
            prop_assert_eq!(out_of(&got), expected);
            prop_assert_eq!(got.payload, &payload[..]);
        }
    }

    /// What `parse_tcp_frame` must answer for `frame`: the general parser's verdict.
    fn check_in_place_parse(frame: &[u8], local: &LocalAddrs, mode: ChecksumMode) {
        // Start from a frame full of other values: the parser must write every field.
        let mut out = TcpFrame::EMPTY;
        out.seg.flags = TcpFlags(0xff);
        out.seg.options.sack_blocks = [Some((SeqNumber(9), SeqNumber(9))); 4];
        out.ip.ttl = 1;
        let got = parse_tcp_frame(frame, local, mode, &mut out);
        match parse_frame_for(frame, local, mode) {
            Ok(Inbound::Tcp { eth, ip, seg }) => {
                assert_eq!(got, Ok(true));
                assert_eq!(out, TcpFrame { eth, ip, seg });
                // The IPv4 fields read by hand agree with smoltcp's accessors.
                let p = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
                assert_eq!(
                    (ip.dscp, ip.ecn, ip.dont_frag, ip.ttl, ip.ident),
                    (p.dscp(), p.ecn(), p.dont_frag(), p.hop_limit(), p.ident())
                );
            }
            Ok(_) => assert_eq!(got, Ok(false)),
            // A broken body of a non-TCP frame is left to the general parser.
            Err(_) if non_tcp_headers_valid(frame, local, mode) => assert_eq!(got, Ok(false)),
            Err(e) => assert_eq!(got, Err(e)),
        }
    }

    /// The frame is for `local` and not TCP, and what `parse_tcp_frame` reads of it is valid
    /// (judged with smoltcp's checks): the Ethernet header of an ARP frame, or the Ethernet
    /// and IPv4 headers of a non-TCP IPv4 packet.
    fn non_tcp_headers_valid(frame: &[u8], local: &LocalAddrs, mode: ChecksumMode) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        if eth.dst_addr() != local.mac && !eth.dst_addr().is_broadcast() {
            return false;
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => true,
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return false;
                };
                ip.version() == 4
                    && ip.next_header() != IpProtocol::Tcp
                    && (!mode.verify_rx || ip.verify_checksum())
                    && !ip.more_frags()
                    && ip.frag_offset() == 0
                    && ip.dst_addr() == local.ip
            }
            _ => false,
        }
    }

    proptest! {
        /// The in-place TCP parser of the receive path answers exactly as the general
        /// parser, for valid segments and for every kind of damage to them.
        #[test]
        fn in_place_parse_agrees_with_the_general_parser(
            seg in arb_segment(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            tos in any::<u8>(),
            flips in proptest::collection::vec((0usize..140, any::<u8>()), 0..4),
            cut in 0usize..150,
            offload in any::<bool>(),
        ) {
            let mut buf = vec![0u8; 300];
            let n = emit_tcp(&mut buf, &hdr(), &seg, &payload, ChecksumMode::SOFTWARE).unwrap();
            buf[15] = tos;
            buf.truncate(n);
            let mode = if offload { ChecksumMode::OFFLOAD } else { ChecksumMode::SOFTWARE };
            let local = LocalAddrs { mac: MAC_B, ip: IP_B };
            check_in_place_parse(&buf, &local, mode);
            for (at, x) in flips {
                if let Some(b) = buf.get_mut(at) {
                    *b ^= x;
                }
            }
            check_in_place_parse(&buf, &local, mode);
            buf.truncate(cut.min(buf.len()));
            check_in_place_parse(&buf, &local, mode);
        }
    }

    /// Extremes of the lane sum: all-ones words (the largest partial sums), empty input.
    #[test]
    fn checksum_extremes() {
        for len in [0usize, 1, 2, 3, 4, 31, 32, 33, 1500, 9000] {
            let data = vec![0xffu8; len];
            let mut reference = 0u64;
            for pair in data.chunks(2) {
                reference += (u64::from(pair[0]) << 8) | pair.get(1).map_or(0, |&b| u64::from(b));
            }
            assert_eq!(
                checksum::fold(checksum::sum(&data, u64::from(u32::MAX))),
                checksum::fold(reference + u64::from(u32::MAX)),
                "{len} bytes"
            );
        }
    }

    /// RFC 1071's fold: add the carries back until the sum fits 16 bits.
    fn fold_by_loop(mut x: u64) -> u16 {
        while x > 0xffff {
            x = (x >> 16) + (x & 0xffff);
        }
        x as u16
    }

    #[test]
    fn fold_edges() {
        for x in [
            0,
            1,
            0xffff,
            0x1_0000,
            0x1_fffe,
            u64::from(u32::MAX),
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 32) | 0xffff,
        ] {
            assert_eq!(checksum::fold(x), fold_by_loop(x), "{x:#x}");
        }
    }

    proptest! {
        #[test]
        fn fold_matches_the_loop(x in any::<u64>()) {
            prop_assert_eq!(checksum::fold(x), fold_by_loop(x));
        }

        /// The 64-bit checksum equals RFC 1071's reference 16-bit sum, for any length and
        /// alignment.
        #[test]
        fn checksum_matches_the_rfc1071_reference(data in proptest::collection::vec(any::<u8>(), 0..3000), skip in 0usize..8, init in any::<u32>()) {
            let data = &data[skip.min(data.len())..];
            let mut reference = u64::from(init);
            for pair in data.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                let lo = pair.get(1).map_or(0, |&b| u64::from(b));
                reference += hi | lo;
            }
            prop_assert_eq!(
                checksum::fold(checksum::sum_small(data) + u64::from(init)),
                checksum::fold(reference)
            );
            prop_assert_eq!(
                checksum::fold(checksum::sum(data, u64::from(init))),
                checksum::fold(reference)
            );
        }
    }
}
