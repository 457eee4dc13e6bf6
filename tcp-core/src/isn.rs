//! Keyed hashing and everything built on it: RFC 6528 initial sequence numbers, RFC 6056
//! ephemeral ports and Linux-compatible SYN cookies.
//!
//! tcp-core draws no randomness: all three derive from the 16-byte `secret` of the
//! [`EndpointConfig`](crate::config::EndpointConfig), so a test with a fixed secret replays bit
//! for bit. Each user derives its own key from that secret with [`derive_key`] and a distinct
//! label, so that, say, an ISN never reveals a SYN-cookie hash.
//!
//! What this module leaves to others: choosing when to answer with a cookie (the listener, when
//! its SYN queue is full), parsing options, checking that a port is in use (the flow table, via
//! the `is_free` predicate) and choosing ports that steer to a core (`mtcp-api`, via `accept`).
//!
//! # SipHash-2-4
//! [`SipHasher24`] is SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
//! 2012) with a 128-bit key (`k0` = bytes 0..8, `k1` = bytes 8..16, both little-endian) and a
//! 64-bit output. The 64 reference vectors of the paper (key `00 01 .. 0f`, messages of length
//! 0..63 with bytes `00 01 02 ..`) are checked by the tests.
//!
//! # Initial sequence numbers (RFC 6528)
//! [`IsnGenerator::isn`] returns `M + F(localip, localport, remoteip, remoteport, secretkey)`:
//! `M` is a 4 µs timer (`now / 4 µs`, modulo 2^32) and `F` is the low 32 bits of SipHash-2-4
//! over the 12 bytes `local ip ‖ local port (BE) ‖ remote ip ‖ remote port (BE)`.
//!
//! # Ephemeral ports (RFC 6056 §3.3.3, Algorithm 3)
//! [`EphemeralPorts::pick`] tries `first + (next + offset) % n` for `n` consecutive values of
//! the counter `next`, where `offset = F(local ip, remote ip, remote port, secret)`, and stops at
//! the first port that the caller accepts and reports free. It tries each port of the range at
//! most once per call: bounded work, `None` when the range is exhausted.
//!
//! # SYN cookies, as Linux encodes them (`net/ipv4/syncookies.c`)
//! Let `count = now / 60 s` (Linux: `tcp_cookie_time()`, `TCP_SYNCOOKIE_PERIOD = 60 * HZ`),
//! `H_c(count)` the low 32 bits of SipHash-2-4 under key `c ∈ {0, 1}` (two keys derived from the
//! secret) over the 16 bytes `remote ip ‖ local ip ‖ remote port (BE) ‖ local port (BE) ‖
//! count (u32 LE)`, `peer_isn` the sequence number of the peer's SYN and `mssind` the index in
//! [`MSS_TABLE`] `= {536, 1300, 1440, 1460}` of the largest entry not above the peer's MSS (0 if
//! the MSS is below 536, as Linux does). Our ISN, all arithmetic modulo 2^32, is
//!
//! ```text
//! ISN = H_0(0) + peer_isn + (count << 24) + ((H_1(count) + mssind) & 0x00ff_ffff)
//!
//!  31        24 23                                   0
//! +------------+--------------------------------------+
//! | count mod  |  (H_1(count) + mssind) mod 2^24      |   ... then + H_0(0) + peer_isn
//! |    2^8     |                                      |
//! +------------+--------------------------------------+
//! ```
//!
//! The ACK completing the handshake carries `SEG.SEQ = peer_isn + 1` and `SEG.ACK = ISN + 1`.
//! Decoding subtracts `H_0(0) + peer_isn` from `ISN`, reads the 8-bit count `c` from the top
//! byte, rejects the cookie unless `diff = (count_now - c) mod 2^8` is below
//! [`MAX_COOKIE_AGE`] (2: a cookie lives 60 to 120 s), then recomputes
//! `mssind = (rest - H_1(count_now - diff)) & 0x00ff_ffff` and rejects anything `>= 4`. A
//! forged ACK passes with probability about `2/256 · 4/2^24 ≈ 2^-29`. As in Linux, the MSS
//! index is added rather than authenticated on its own: an ACK whose SEG.ACK (or SEG.SEQ) is
//! off by less than 4 from the right one can decode to a neighbouring MSS class. Only someone
//! who saw the cookie can do that, and they could complete the handshake anyway.
//!
//! When the peer's SYN carried timestamps, the options that do not fit in the ISN go into the
//! low 6 bits of our SYN-ACK's TSval (Linux's `cookie_init_timestamp`), and come back in the
//! TSecr of the ACK:
//!
//! ```text
//!  31                          6   5     4    3  2  1  0
//! +------------------------------+-----+------+-----------+
//! | TS clock (ms) >> 6           | ECN | SACK |  WScale   |    WScale 0xf = no window scaling
//! +------------------------------+-----+------+-----------+
//! ```
//!
//! `TSval = (ts_now & !0x3f) | options`, minus 64 if that is above `ts_now`, so that the
//! connection's later TSvals never go backwards. Without timestamps in the ACK, decoding
//! reports no window scaling, no SACK and no ECN. Unlike the ISN, these bits are not
//! authenticated (as in Linux): a peer can only lie about its own options.
//!
//! The TS clock of [`SynCookies::encode`] is `now` in milliseconds, truncated to 32 bits. A
//! connection that adds a per-connection offset to its TSvals (RFC 7323 §5.4) must encode with
//! [`cookie_tsval`] on its own clock and subtract the offset from TSecr before decoding.

use crate::seq::SeqNumber;
use crate::time::{Duration, Instant};
use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::ops::RangeInclusive;

// ---------------------------------------------------------------------------------------------
// SipHash-2-4
// ---------------------------------------------------------------------------------------------

/// SipHash-2-4 with a 128-bit key and a 64-bit output, fed incrementally.
///
/// ```
/// use tcp_core::isn::SipHasher24;
/// let key: [u8; 16] = core::array::from_fn(|i| i as u8);
/// let mut h = SipHasher24::new(&key);
/// h.write(&[0x00]);
/// assert_eq!(h.finish(), u64::from_le_bytes([0xfd, 0x67, 0xdc, 0x93, 0xc5, 0x39, 0xf8, 0x74]));
/// ```
#[derive(Clone)]
pub struct SipHasher24 {
    v: [u64; 4],
    /// Bytes not yet compressed (fewer than 8), little-endian in the low bytes.
    tail: u64,
    /// How many bytes `tail` holds.
    ntail: usize,
    /// Total message length in bytes (only its low 8 bits matter).
    length: usize,
}

impl fmt::Debug for SipHasher24 {
    /// Never prints the state, which is derived from the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipHasher24")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl SipHasher24 {
    /// A hasher keyed with `key` (`k0` = bytes 0..8, `k1` = bytes 8..16, little-endian).
    pub fn new(key: &[u8; 16]) -> SipHasher24 {
        let (k0, k1) = split_key(key);
        SipHasher24 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    /// One-shot: the SipHash-2-4 of `msg` under `key`.
    #[must_use]
    pub fn hash(key: &[u8; 16], msg: &[u8]) -> u64 {
        let mut h = SipHasher24::new(key);
        h.write(msg);
        h.finish()
    }

    /// Appends `bytes` to the message.
    pub fn write(&mut self, bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len());
        let mut rest = bytes;
        // Complete the pending partial word first.
        if self.ntail != 0 {
            while self.ntail < 8 {
                let Some((&byte, more)) = rest.split_first() else {
                    return;
                };
                self.tail |= u64::from(byte) << (8 * self.ntail);
                self.ntail += 1;
                rest = more;
            }
            self.compress(self.tail);
            self.tail = 0;
            self.ntail = 0;
        }
        let mut words = rest.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.compress(u64::from_le_bytes(b));
        }
        for (i, &byte) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(byte) << (8 * i);
        }
        self.ntail = words.remainder().len();
    }

    /// The 64-bit hash of everything written so far (the hasher can keep being fed).
    #[must_use]
    pub fn finish(&self) -> u64 {
        let mut s = self.clone();
        // Last block: the remaining bytes and the message length mod 256 in the top byte.
        let b = ((self.length as u64 & 0xff) << 56) | self.tail;
        s.compress(b);
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            s.round();
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }

    /// One message word through two SipRounds (the "2" of SipHash-2-4).
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.round();
        self.v[0] ^= m;
    }

    fn round(&mut self) {
        let [mut v0, mut v1, mut v2, mut v3] = self.v;
        v0 = v0.wrapping_add(v1);
        v1 = v1.rotate_left(13) ^ v0;
        v0 = v0.rotate_left(32);
        v2 = v2.wrapping_add(v3);
        v3 = v3.rotate_left(16) ^ v2;
        v0 = v0.wrapping_add(v3);
        v3 = v3.rotate_left(21) ^ v0;
        v2 = v2.wrapping_add(v1);
        v1 = v1.rotate_left(17) ^ v2;
        v2 = v2.rotate_left(32);
        self.v = [v0, v1, v2, v3];
    }
}

/// So that keyed hash tables (a flow table facing hash flooding) can use SipHash-2-4.
impl core::hash::Hasher for SipHasher24 {
    fn write(&mut self, bytes: &[u8]) {
        SipHasher24::write(self, bytes);
    }

    fn finish(&self) -> u64 {
        SipHasher24::finish(self)
    }
}

fn split_key(key: &[u8; 16]) -> (u64, u64) {
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    k0.copy_from_slice(&key[..8]);
    k1.copy_from_slice(&key[8..]);
    (u64::from_le_bytes(k0), u64::from_le_bytes(k1))
}

/// A 128-bit key for one purpose, derived from the endpoint's `secret` and a `label` naming the
/// purpose: `SipHash(secret, label ‖ 0) ‖ SipHash(secret, label ‖ 1)` (little-endian halves).
#[must_use]
pub fn derive_key(secret: &[u8; 16], label: &[u8]) -> [u8; 16] {
    let half = |i: u8| {
        let mut h = SipHasher24::new(secret);
        h.write(label);
        h.write(&[i]);
        h.finish().to_le_bytes()
    };
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&half(0));
    key[8..].copy_from_slice(&half(1));
    key
}

// ---------------------------------------------------------------------------------------------
// RFC 6528 initial sequence numbers
// ---------------------------------------------------------------------------------------------

/// Initial sequence numbers for active and passive opens, per RFC 6528.
#[derive(Clone)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl fmt::Debug for IsnGenerator {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsnGenerator").finish_non_exhaustive()
    }
}

impl IsnGenerator {
    /// A generator keyed from the endpoint's `secret`.
    pub fn new(secret: [u8; 16]) -> IsnGenerator {
        IsnGenerator {
            key: derive_key(&secret, b"mtcp-rs isn rfc6528"),
        }
    }

    /// The keyed hash of the connection's 4-tuple. Its low half is F() of RFC 6528; its high
    /// half is the connection's timestamp offset (RFC 7323 §5.4: "a hash of the connection
    /// ID and a secret"), so one hash serves both and neither reveals the other.
    fn tuple_hash(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u64 {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&local.ip().octets());
        id[4..6].copy_from_slice(&local.port().to_be_bytes());
        id[6..10].copy_from_slice(&remote.ip().octets());
        id[10..].copy_from_slice(&remote.port().to_be_bytes());
        let mut h = SipHasher24::new(&self.key);
        h.write(&id);
        h.finish()
    }

    /// The ISN for a connection from `local` to `remote` opened at `now`.
    ///
    /// For one 4-tuple, successive ISNs advance with the 4 µs clock, so they increase (in
    /// sequence space) over any span shorter than 2^31 · 4 µs ≈ 2.4 hours.
    #[must_use]
    pub fn isn(&self, now: Instant, local: SocketAddrV4, remote: SocketAddrV4) -> SeqNumber {
        self.isn_and_ts_offset(now, local, remote).0
    }

    /// The connection's timestamp offset: added to our timestamp clock in every TSval it
    /// sends, so that TSvals do not reveal the clock and do not repeat across 4-tuples.
    #[must_use]
    pub fn ts_offset(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        (self.tuple_hash(local, remote) >> 32) as u32
    }

    /// [`isn`](Self::isn) and [`ts_offset`](Self::ts_offset) from one hash.
    #[must_use]
    pub fn isn_and_ts_offset(
        &self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> (SeqNumber, u32) {
        // RFC 6528 §3: "ISN = M + F(localip, localport, remoteip, remoteport, secretkey)
        // where M is the 4 microsecond timer, and F() is a pseudorandom function (PRF) of the
        // connection-id." The timer wraps modulo 2^32 like the sequence space.
        let m = (now.micros() / 4) as u32;
        let h = self.tuple_hash(local, remote);
        (SeqNumber(m.wrapping_add(h as u32)), (h >> 32) as u32)
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6056 ephemeral ports
// ---------------------------------------------------------------------------------------------

/// The default ephemeral port range, the IANA dynamic ports (RFC 6335 §6: 49152–65535).
pub const DEFAULT_EPHEMERAL_PORTS: RangeInclusive<u16> = 49152..=65535;

/// A port range given to [`EphemeralPorts::with_range`] was empty or contained port 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPortRange;

impl fmt::Display for InvalidPortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ephemeral port range must be non-empty and must not contain port 0")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InvalidPortRange {}

/// Chooses local ports for active opens: RFC 6056 §3.3.3, "Algorithm 3: Simple Hash-Based
/// Port Selection Algorithm".
///
/// The starting point in the range depends on (local ip, remote ip, remote port) through a keyed
/// hash, so an off-path attacker cannot guess it; a counter shared by all destinations moves
/// it on, so successive connections to one destination use different ports.
#[derive(Clone)]
pub struct EphemeralPorts {
    key: [u8; 16],
    first: u16,
    last: u16,
    /// RFC 6056's `next_ephemeral`.
    next: u32,
    /// The last destination and its offset: a client connecting again and again to one
    /// server hashes once.
    last_offset: Option<(Ipv4Addr, SocketAddrV4, u32)>,
}

impl fmt::Debug for EphemeralPorts {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralPorts")
            .field("range", &(self.first..=self.last))
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl EphemeralPorts {
    /// Ports from [`DEFAULT_EPHEMERAL_PORTS`], keyed from the endpoint's `secret`.
    pub fn new(secret: [u8; 16]) -> EphemeralPorts {
        // The default range is valid.
        EphemeralPorts::build(secret, DEFAULT_EPHEMERAL_PORTS)
    }

    /// Ports from `range` (for example `EndpointConfig::ephemeral_ports`), keyed from `secret`.
    pub fn with_range(
        secret: [u8; 16],
        range: RangeInclusive<u16>,
    ) -> Result<EphemeralPorts, InvalidPortRange> {
        if range.is_empty() || *range.start() == 0 {
            return Err(InvalidPortRange);
        }
        Ok(EphemeralPorts::build(secret, range))
    }

    fn build(secret: [u8; 16], range: RangeInclusive<u16>) -> EphemeralPorts {
        EphemeralPorts {
            key: derive_key(&secret, b"mtcp-rs ephemeral ports rfc6056"),
            first: *range.start(),
            last: *range.end(),
            // RFC 6056 §3.3.3: "next_ephemeral = 0;" at initialization ("Could be random").
            next: 0,
            last_offset: None,
        }
    }

    /// The range ports are chosen from.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }

    /// A free local port for a connection from `local_ip` to `remote`, or `None` when
    /// `is_free` rejected every port of the range. Calls `is_free` at most once per port.
    #[must_use]
    pub fn pick(
        &mut self,
        local_ip: Ipv4Addr,
        remote: SocketAddrV4,
        is_free: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        self.pick_with(local_ip, remote, is_free, |_| true)
    }

    /// The port that the `k`-th next [`pick_with`](Self::pick_with) for `local_ip` →
    /// `remote` tries first (`k = 0`: the next one) if no port is busy on the way, when the
    /// RFC 6056 offset of that destination is already known (the last pick was for it): a
    /// caller can warm what that port's check will read.
    pub fn next_candidate(&self, local_ip: Ipv4Addr, remote: SocketAddrV4, k: u32) -> Option<u16> {
        let num = u32::from(self.last - self.first) + 1;
        match self.last_offset {
            Some((ip, r, offset)) if ip == local_ip && r == remote => {
                let n = self.next.wrapping_add(k).wrapping_add(offset);
                Some(self.first + (n % num) as u16)
            }
            _ => None,
        }
    }

    /// Like [`pick`](Self::pick), but only ports for which `accept(port)` holds are considered
    /// (`accept` is asked first; `is_free` only for accepted ports). `mtcp-api` uses `accept`
    /// to choose ports whose replies are steered to the calling core. Bounded: at most one
    /// `accept` and one `is_free` call per port of the range.
    #[must_use]
    pub fn pick_with(
        &mut self,
        local_ip: Ipv4Addr,
        remote: SocketAddrV4,
        mut is_free: impl FnMut(u16) -> bool,
        mut accept: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        // RFC 6056 §3.3.3: "num_ephemeral = max_ephemeral - min_ephemeral + 1;"
        let num = u32::from(self.last - self.first) + 1;
        // RFC 6056 §3.3.3: "offset = F(local_IP, remote_IP, remote_port, secret_key);"
        let offset = match self.last_offset {
            Some((ip, r, offset)) if ip == local_ip && r == remote => offset,
            _ => {
                let mut id = [0u8; 10];
                id[..4].copy_from_slice(&local_ip.octets());
                id[4..8].copy_from_slice(&remote.ip().octets());
                id[8..].copy_from_slice(&remote.port().to_be_bytes());
                let mut h = SipHasher24::new(&self.key);
                h.write(&id);
                let offset = h.finish() as u32;
                self.last_offset = Some((local_ip, remote, offset));
                offset
            }
        };
        // RFC 6056 §3.3.3: "count = num_ephemeral;" ... "while (count > 0)"
        for _ in 0..num {
            // RFC 6056 §3.3.3: "port = min_ephemeral + (next_ephemeral + offset)
            // % num_ephemeral; next_ephemeral++;"
            let port = self.first + (self.next.wrapping_add(offset) % num) as u16;
            self.next = self.next.wrapping_add(1);
            // RFC 6056 §3.3.3: "if(check_suitable_port(port)) return port;"
            if accept(port) && is_free(port) {
                return Some(port);
            }
        }
        // RFC 6056 §3.3.3: "return ERROR;"
        None
    }
}

// ---------------------------------------------------------------------------------------------
// SYN cookies
// ---------------------------------------------------------------------------------------------

/// The MSS values a cookie can carry (Linux's `msstab`); the index goes in the ISN.
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];

/// Length of one tick of the cookie counter (Linux's `TCP_SYNCOOKIE_PERIOD`, 60 s).
pub const COOKIE_PERIOD: Duration = Duration::from_secs(60);

/// A cookie is accepted while the counter has advanced by less than this many ticks since it
/// was issued (Linux's `MAX_SYNCOOKIE_AGE`): 60 to 120 s, depending on when in a tick it was
/// issued.
pub const MAX_COOKIE_AGE: u32 = 2;

/// Bits of the ISN below the counter (Linux's `COOKIEBITS`).
const COOKIE_BITS: u32 = 24;
const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;
/// Low bits of the TSval carrying options (Linux's `TSBITS`).
const TS_BITS: u32 = 6;
const TS_MASK: u32 = (1 << TS_BITS) - 1;
/// Linux's `TS_OPT_WSCALE_MASK`; also the "no window scaling" value.
const TS_OPT_WSCALE_MASK: u32 = 0xf;
/// Linux's `TS_OPT_SACK`.
const TS_OPT_SACK: u32 = 1 << 4;
/// Linux's `TS_OPT_ECN`.
const TS_OPT_ECN: u32 = 1 << 5;
/// RFC 7323 §2.3: the largest shift count.
const MAX_WSCALE: u8 = 14;

/// Options of the peer's SYN that a cookie should remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CookieOptions {
    /// The SYN carried a timestamps option (and we will answer with one). Without it the other
    /// fields cannot be carried and are lost.
    pub timestamps: bool,
    /// The shift count of the SYN's window scale option, `None` without the option. Values
    /// above 14 are stored as 14 (RFC 7323 §2.3).
    pub wscale: Option<u8>,
    /// The SYN carried SACK-permitted (and we agree to SACK).
    pub sack: bool,
    /// The SYN asked for ECN (and we agree to it).
    pub ecn: bool,
}

/// What a valid cookie remembered about the peer's SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieResult {
    /// The peer's MSS, rounded down to an entry of [`MSS_TABLE`].
    pub mss: u16,
    /// The peer's window scale shift count; `None` if it sent none or if the ACK carries no
    /// timestamps.
    pub wscale: Option<u8>,
    /// The peer agreed to SACK (false if the ACK carries no timestamps).
    pub sack: bool,
    /// ECN was negotiated (false if the ACK carries no timestamps).
    pub ecn: bool,
}

/// The index in [`MSS_TABLE`] of the largest entry not above `mss`, 0 below 536 (Linux).
fn mss_index(mss: u16) -> u32 {
    // Linux `__cookie_v4_init_sequence`: "for (mssind = ARRAY_SIZE(msstab) - 1; mssind;
    // mssind--) if (mss >= msstab[mssind]) break;"
    let i = MSS_TABLE.iter().rposition(|&m| mss >= m).unwrap_or(0);
    i as u32
}

/// The MSS a cookie will remember for a peer that announced `mss`: the largest entry of
/// [`MSS_TABLE`] not above it, and 536 below 536 (as Linux; a listener that must honour an MSS
/// below 536 should not answer such a SYN with a cookie).
#[must_use]
pub fn quantize_mss(mss: u16) -> u16 {
    MSS_TABLE[mss_index(mss) as usize]
}

/// The TSval of a cookie SYN-ACK on a caller's TS clock reading `ts_now`, with the options in
/// its low 6 bits (Linux's `cookie_init_timestamp`). Never above `ts_now` (modulo 2^32).
#[must_use]
pub fn cookie_tsval(ts_now: u32, opts: CookieOptions) -> u32 {
    let mut options = match opts.wscale {
        Some(ws) => u32::from(ws.min(MAX_WSCALE)),
        None => TS_OPT_WSCALE_MASK,
    };
    if opts.sack {
        options |= TS_OPT_SACK;
    }
    if opts.ecn {
        options |= TS_OPT_ECN;
    }
    // Linux `cookie_init_timestamp`: "ts = (ts_now >> TSBITS) << TSBITS; ts |= options;
    // if (ts > ts_now) ts -= (1UL << TSBITS);"
    let ts = (ts_now & !TS_MASK) | options;
    if ts > ts_now {
        ts.wrapping_sub(1 << TS_BITS)
    } else {
        ts
    }
}

/// Options recovered from the TSecr of a cookie ACK (Linux's `cookie_timestamp_decode`).
fn decode_ts_options(tsecr: Option<u32>) -> (Option<u8>, bool, bool) {
    let Some(options) = tsecr else {
        // Linux: "if (!tcp_opt->saw_tstamp) { tcp_clear_options(tcp_opt); return true; }"
        return (None, false, false);
    };
    let ws = options & TS_OPT_WSCALE_MASK;
    // 0xf is the "no window scaling" marker; 0..=14 are shift counts. 15 cannot be a
    // valid shift (RFC 7323 §2.3), so nothing else needs rejecting.
    let wscale = (ws != TS_OPT_WSCALE_MASK).then_some(ws as u8);
    (
        wscale,
        options & TS_OPT_SACK != 0,
        options & TS_OPT_ECN != 0,
    )
}

/// Stateless SYN-ACKs: the listener's state for a half-open connection travels in our ISN
/// (and TSval), encoded as Linux does (see the module documentation for the layout).
#[derive(Clone)]
pub struct SynCookies {
    /// Linux's `syncookie_secret[0]` and `[1]`.
    keys: [[u8; 16]; 2],
}

impl fmt::Debug for SynCookies {
    /// Never prints the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SynCookies").finish_non_exhaustive()
    }
}

impl SynCookies {
    /// Cookies keyed from the endpoint's `secret`.
    pub fn new(secret: [u8; 16]) -> SynCookies {
        SynCookies {
            keys: [
                derive_key(&secret, b"mtcp-rs syncookie 0"),
                derive_key(&secret, b"mtcp-rs syncookie 1"),
            ],
        }
    }

    /// Linux's `cookie_hash(saddr, daddr, sport, dport, count, c)`, with the addresses of the
    /// received segment: its source is the remote end.
    fn hash(&self, c: usize, local: SocketAddrV4, remote: SocketAddrV4, count: u32) -> u32 {
        let mut h = SipHasher24::new(&self.keys[c]);
        h.write(&remote.ip().octets());
        h.write(&local.ip().octets());
        h.write(&remote.port().to_be_bytes());
        h.write(&local.port().to_be_bytes());
        h.write(&count.to_le_bytes());
        h.finish() as u32
    }

    /// The counter at `now` (Linux's `tcp_cookie_time()`), modulo 2^32.
    fn count(now: Instant) -> u32 {
        (now.micros() / COOKIE_PERIOD.micros()) as u32
    }

    /// Our ISN (and, if the SYN carried timestamps, our TSval) for a cookie SYN-ACK answering a
    /// SYN from `remote` to `local` with sequence number `peer_isn` and MSS option `mss` (use
    /// 536 if it had none, RFC 9293 §3.7.1).
    ///
    /// The connection later uses [`quantize_mss`]`(mss)` as the peer's MSS, the value the
    /// cookie can give back. The TSval is on the millisecond clock `now.millis()` (see
    /// [`cookie_tsval`] for another clock).
    #[must_use]
    pub fn encode(
        &self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNumber,
        mss: u16,
        opts: CookieOptions,
    ) -> (SeqNumber, Option<u32>) {
        let count = SynCookies::count(now);
        let data = mss_index(mss);
        // Linux `secure_tcp_syn_cookie`: "HASH(sec1,saddr,sport,daddr,dport,sec1) + sseq
        // + (count * 2^24) + (HASH(sec2,saddr,sport,daddr,dport,count,sec2) % 2^24)", with
        // the MSS index added into the second hash.
        let isn = self
            .hash(0, local, remote, 0)
            .wrapping_add(peer_isn.0)
            .wrapping_add(count << COOKIE_BITS)
            .wrapping_add(self.hash(1, local, remote, count).wrapping_add(data) & COOKIE_MASK);
        let tsval = opts
            .timestamps
            .then(|| cookie_tsval(now.millis() as u32, opts));
        (SeqNumber(isn), tsval)
    }

    /// Checks the ACK that completes a cookie handshake and recovers the SYN's options.
    ///
    /// `seg_seq` and `seg_ack` are the ACK's SEG.SEQ (the peer's ISN + 1) and SEG.ACK (our
    /// cookie ISN + 1), `tsecr` its TSecr if it carries a timestamps option (with any
    /// per-connection TS offset already subtracted). Returns `None` when the cookie was not
    /// made for this 4-tuple and SYN by this secret, or is [`MAX_COOKIE_AGE`] ticks old or
    /// older; such an ACK is answered with a RST as any ACK to a listener (RFC 9293 §3.10.7.2).
    #[must_use]
    pub fn decode(
        &self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg_seq: SeqNumber,
        seg_ack: SeqNumber,
        tsecr: Option<u32>,
    ) -> Option<CookieResult> {
        // Linux `__cookie_v4_check`: "cookie = ntohl(th->ack_seq) - 1;
        // seq = ntohl(th->seq) - 1;"
        let cookie = seg_ack.0.wrapping_sub(1);
        let peer_isn = seg_seq.0.wrapping_sub(1);
        let count = SynCookies::count(now);
        // Linux `check_tcp_syn_cookie`: "Strip away the layers from the cookie".
        let rest = cookie.wrapping_sub(self.hash(0, local, remote, 0).wrapping_add(peer_isn));
        // Linux: "diff = (count - (cookie >> COOKIEBITS)) & ((__u32) -1 >> COOKIEBITS);
        // if (diff >= MAX_SYNCOOKIE_AGE) return (__u32)-1;"
        let diff = count.wrapping_sub(rest >> COOKIE_BITS) & (u32::MAX >> COOKIE_BITS);
        if diff >= MAX_COOKIE_AGE {
            return None;
        }
        // Linux: "return (cookie - cookie_hash(..., count - diff, 1)) & COOKIEMASK;"
        let data =
            rest.wrapping_sub(self.hash(1, local, remote, count.wrapping_sub(diff))) & COOKIE_MASK;
        // Linux `__cookie_v4_check`: "return mssind < ARRAY_SIZE(msstab) ? msstab[mssind] : 0;"
        let mss = *MSS_TABLE.get(data as usize)?;
        let (wscale, sack, ecn) = decode_ts_options(tsecr);
        Some(CookieResult {
            mss,
            wscale,
            sack,
            ecn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ];

    /// The SipHash-2-4 reference vectors (`vectors_sip64` of the reference implementation, the
    /// appendix of the paper): key 00..0f, message `00 01 .. (i-1)` for i = 0..64, output as
    /// little-endian bytes.
    const VECTORS: [[u8; 8]; 64] = [
        [0x31, 0x0e, 0x0e, 0xdd, 0x47, 0xdb, 0x6f, 0x72],
        [0xfd, 0x67, 0xdc, 0x93, 0xc5, 0x39, 0xf8, 0x74],
        [0x5a, 0x4f, 0xa9, 0xd9, 0x09, 0x80, 0x6c, 0x0d],
        [0x2d, 0x7e, 0xfb, 0xd7, 0x96, 0x66, 0x67, 0x85],
        [0xb7, 0x87, 0x71, 0x27, 0xe0, 0x94, 0x27, 0xcf],
        [0x8d, 0xa6, 0x99, 0xcd, 0x64, 0x55, 0x76, 0x18],
        [0xce, 0xe3, 0xfe, 0x58, 0x6e, 0x46, 0xc9, 0xcb],
        [0x37, 0xd1, 0x01, 0x8b, 0xf5, 0x00, 0x02, 0xab],
        [0x62, 0x24, 0x93, 0x9a, 0x79, 0xf5, 0xf5, 0x93],
        [0xb0, 0xe4, 0xa9, 0x0b, 0xdf, 0x82, 0x00, 0x9e],
        [0xf3, 0xb9, 0xdd, 0x94, 0xc5, 0xbb, 0x5d, 0x7a],
        [0xa7, 0xad, 0x6b, 0x22, 0x46, 0x2f, 0xb3, 0xf4],
        [0xfb, 0xe5, 0x0e, 0x86, 0xbc, 0x8f, 0x1e, 0x75],
        [0x90, 0x3d, 0x84, 0xc0, 0x27, 0x56, 0xea, 0x14],
        [0xee, 0xf2, 0x7a, 0x8e, 0x90, 0xca, 0x23, 0xf7],
        [0xe5, 0x45, 0xbe, 0x49, 0x61, 0xca, 0x29, 0xa1],
        [0xdb, 0x9b, 0xc2, 0x57, 0x7f, 0xcc, 0x2a, 0x3f],
        [0x94, 0x47, 0xbe, 0x2c, 0xf5, 0xe9, 0x9a, 0x69],
        [0x9c, 0xd3, 0x8d, 0x96, 0xf0, 0xb3, 0xc1, 0x4b],
        [0xbd, 0x61, 0x79, 0xa7, 0x1d, 0xc9, 0x6d, 0xbb],
        [0x98, 0xee, 0xa2, 0x1a, 0xf2, 0x5c, 0xd6, 0xbe],
        [0xc7, 0x67, 0x3b, 0x2e, 0xb0, 0xcb, 0xf2, 0xd0],
        [0x88, 0x3e, 0xa3, 0xe3, 0x95, 0x67, 0x53, 0x93],
        [0xc8, 0xce, 0x5c, 0xcd, 0x8c, 0x03, 0x0c, 0xa8],
        [0x94, 0xaf, 0x49, 0xf6, 0xc6, 0x50, 0xad, 0xb8],
        [0xea, 0xb8, 0x85, 0x8a, 0xde, 0x92, 0xe1, 0xbc],
        [0xf3, 0x15, 0xbb, 0x5b, 0xb8, 0x35, 0xd8, 0x17],
        [0xad, 0xcf, 0x6b, 0x07, 0x63, 0x61, 0x2e, 0x2f],
        [0xa5, 0xc9, 0x1d, 0xa7, 0xac, 0xaa, 0x4d, 0xde],
        [0x71, 0x65, 0x95, 0x87, 0x66, 0x50, 0xa2, 0xa6],
        [0x28, 0xef, 0x49, 0x5c, 0x53, 0xa3, 0x87, 0xad],
        [0x42, 0xc3, 0x41, 0xd8, 0xfa, 0x92, 0xd8, 0x32],
        [0xce, 0x7c, 0xf2, 0x72, 0x2f, 0x51, 0x27, 0x71],
        [0xe3, 0x78, 0x59, 0xf9, 0x46, 0x23, 0xf3, 0xa7],
        [0x38, 0x12, 0x05, 0xbb, 0x1a, 0xb0, 0xe0, 0x12],
        [0xae, 0x97, 0xa1, 0x0f, 0xd4, 0x34, 0xe0, 0x15],
        [0xb4, 0xa3, 0x15, 0x08, 0xbe, 0xff, 0x4d, 0x31],
        [0x81, 0x39, 0x62, 0x29, 0xf0, 0x90, 0x79, 0x02],
        [0x4d, 0x0c, 0xf4, 0x9e, 0xe5, 0xd4, 0xdc, 0xca],
        [0x5c, 0x73, 0x33, 0x6a, 0x76, 0xd8, 0xbf, 0x9a],
        [0xd0, 0xa7, 0x04, 0x53, 0x6b, 0xa9, 0x3e, 0x0e],
        [0x92, 0x59, 0x58, 0xfc, 0xd6, 0x42, 0x0c, 0xad],
        [0xa9, 0x15, 0xc2, 0x9b, 0xc8, 0x06, 0x73, 0x18],
        [0x95, 0x2b, 0x79, 0xf3, 0xbc, 0x0a, 0xa6, 0xd4],
        [0xf2, 0x1d, 0xf2, 0xe4, 0x1d, 0x45, 0x35, 0xf9],
        [0x87, 0x57, 0x75, 0x19, 0x04, 0x8f, 0x53, 0xa9],
        [0x10, 0xa5, 0x6c, 0xf5, 0xdf, 0xcd, 0x9a, 0xdb],
        [0xeb, 0x75, 0x09, 0x5c, 0xcd, 0x98, 0x6c, 0xd0],
        [0x51, 0xa9, 0xcb, 0x9e, 0xcb, 0xa3, 0x12, 0xe6],
        [0x96, 0xaf, 0xad, 0xfc, 0x2c, 0xe6, 0x66, 0xc7],
        [0x72, 0xfe, 0x52, 0x97, 0x5a, 0x43, 0x64, 0xee],
        [0x5a, 0x16, 0x45, 0xb2, 0x76, 0xd5, 0x92, 0xa1],
        [0xb2, 0x74, 0xcb, 0x8e, 0xbf, 0x87, 0x87, 0x0a],
        [0x6f, 0x9b, 0xb4, 0x20, 0x3d, 0xe7, 0xb3, 0x81],
        [0xea, 0xec, 0xb2, 0xa3, 0x0b, 0x22, 0xa8, 0x7f],
        [0x99, 0x24, 0xa4, 0x3c, 0xc1, 0x31, 0x57, 0x24],
        [0xbd, 0x83, 0x8d, 0x3a, 0xaf, 0xbf, 0x8d, 0xb7],
        [0x0b, 0x1a, 0x2a, 0x32, 0x65, 0xd5, 0x1a, 0xea],
        [0x13, 0x50, 0x79, 0xa3, 0x23, 0x1c, 0xe6, 0x60],
        [0x93, 0x2b, 0x28, 0x46, 0xe4, 0xd7, 0x06, 0x66],
        [0xe1, 0x91, 0x5f, 0x5c, 0xb1, 0xec, 0xa4, 0x6c],
        [0xf3, 0x25, 0x96, 0x5c, 0xa1, 0x6d, 0x62, 0x9f],
        [0x57, 0x5f, 0xf2, 0x8e, 0x60, 0x38, 0x1b, 0xe5],
        [0x72, 0x45, 0x06, 0xeb, 0x4c, 0x32, 0x8a, 0x95],
    ];

    /// The reference message bytes `00 01 02 .. 3f`.
    fn msg() -> [u8; 64] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn siphash_matches_all_64_reference_vectors() {
        let m = msg();
        for (len, expected) in VECTORS.iter().enumerate() {
            assert_eq!(
                SipHasher24::hash(&KEY, &m[..len]),
                u64::from_le_bytes(*expected),
                "vector {len}"
            );
        }
    }

    #[test]
    fn siphash_fed_in_pieces_matches_one_shot() {
        let m = msg();
        for len in 0..64 {
            for split1 in 0..=len {
                for split2 in split1..=len {
                    let mut h = SipHasher24::new(&KEY);
                    h.write(&m[..split1]);
                    h.write(&m[split1..split2]);
                    h.write(&m[split2..len]);
                    assert_eq!(
                        h.finish(),
                        u64::from_le_bytes(VECTORS[len]),
                        "{len} {split1}"
                    );
                }
            }
        }
    }

    #[test]
    fn siphash_finish_does_not_consume_the_state() {
        let m = msg();
        let mut h = SipHasher24::new(&KEY);
        h.write(&m[..7]);
        assert_eq!(h.finish(), u64::from_le_bytes(VECTORS[7]));
        h.write(&m[7..20]);
        assert_eq!(h.finish(), u64::from_le_bytes(VECTORS[20]));
    }

    #[test]
    fn siphash_as_core_hasher_matches() {
        use core::hash::Hasher;
        let h: &mut dyn Hasher = &mut SipHasher24::new(&KEY);
        h.write(&msg()[..15]);
        assert_eq!(h.finish(), u64::from_le_bytes(VECTORS[15]));
    }

    #[test]
    fn derived_keys_depend_on_secret_and_label() {
        let a = derive_key(&KEY, b"a");
        assert_eq!(a, derive_key(&KEY, b"a"));
        assert_ne!(a, derive_key(&KEY, b"b"));
        assert_ne!(a, derive_key(&[0x5a; 16], b"a"));
        assert_ne!(a[..8], a[8..]);
    }

    fn sa(a: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port)
    }

    const SECRET: [u8; 16] = [0x5a; 16];

    fn secs(s: u64) -> Instant {
        Instant::from_micros(s * 1_000_000)
    }

    // -- RFC 6528 ---------------------------------------------------------------------------

    #[test]
    fn rfc6528_isn_advances_with_the_4us_timer() {
        let g = IsnGenerator::new(SECRET);
        let (l, r) = (sa(1, 80), sa(2, 40000));
        let t0 = Instant::from_micros(1_000_000);
        let i0 = g.isn(t0, l, r);
        assert_eq!(g.isn(t0, l, r), i0, "deterministic");
        assert_eq!(g.isn(t0 + Duration::from_micros(3), l, r), i0);
        assert_eq!(g.isn(t0 + Duration::from_micros(4), l, r), i0 + 1u32);
        assert_eq!(g.isn(t0 + Duration::from_secs(1), l, r), i0 + 250_000u32);
    }

    #[test]
    fn rfc6528_isn_is_monotone_over_time_for_one_tuple() {
        let g = IsnGenerator::new(SECRET);
        let (l, r) = (sa(1, 5000), sa(2, 443));
        // Steps from 1 µs to 10 minutes, over more than one wrap of the 32-bit timer
        // (2^32 · 4 µs ≈ 4.8 h): each ISN is ahead of the previous one in sequence space.
        let mut now = Instant::from_micros(123);
        let mut prev = g.isn(now, l, r);
        let mut step = 1u64;
        while now < Instant::from_micros(12 * 3600 * 1_000_000) {
            now += Duration::from_micros(step);
            let isn = g.isn(now, l, r);
            if step >= 4 {
                assert!(isn > prev, "{now}: {isn:?} <= {prev:?}");
            } else {
                assert!(isn >= prev, "{now}: {isn:?} < {prev:?}");
            }
            prev = isn;
            step = (step * 3).min(600_000_000);
        }
    }

    #[test]
    fn rfc6528_isn_differs_between_tuples_and_secrets() {
        let g = IsnGenerator::new(SECRET);
        let now = Instant::from_millis(42);
        let base = g.isn(now, sa(1, 5000), sa(2, 80));
        for other in [
            g.isn(now, sa(3, 5000), sa(2, 80)),
            g.isn(now, sa(1, 5001), sa(2, 80)),
            g.isn(now, sa(1, 5000), sa(4, 80)),
            g.isn(now, sa(1, 5000), sa(2, 81)),
            // Swapping the ends is another connection-id.
            g.isn(now, sa(2, 80), sa(1, 5000)),
            IsnGenerator::new([0xa5; 16]).isn(now, sa(1, 5000), sa(2, 80)),
        ] {
            assert_ne!(other, base);
        }
    }

    // -- RFC 6056 ---------------------------------------------------------------------------

    const DST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 80);
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn rfc6056_default_range_and_range_validation() {
        let p = EphemeralPorts::new(SECRET);
        assert_eq!(p.range(), 49152..=65535);
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 10..=9;
        assert_eq!(
            EphemeralPorts::with_range(SECRET, empty).unwrap_err(),
            InvalidPortRange
        );
        assert!(EphemeralPorts::with_range(SECRET, 0..=10).is_err());
        assert_eq!(
            EphemeralPorts::with_range(SECRET, 1..=65535)
                .unwrap()
                .range(),
            1..=65535
        );
    }

    #[test]
    fn rfc6056_alg3_successive_picks_walk_the_range_from_a_hashed_offset() {
        let mut p = EphemeralPorts::new(SECRET);
        let first = p.pick(SRC, DST, |_| true).unwrap();
        assert!(p.range().contains(&first));
        // The counter moves the next pick to the following port (modulo the range).
        let second = p.pick(SRC, DST, |_| true).unwrap();
        let expected = if first == 65535 { 49152 } else { first + 1 };
        assert_eq!(second, expected);
        // The same secret replays the same ports.
        let mut q = EphemeralPorts::new(SECRET);
        assert_eq!(q.pick(SRC, DST, |_| true), Some(first));
    }

    #[test]
    fn next_candidate_is_the_port_the_next_pick_tries_first() {
        let mut p = EphemeralPorts::new(SECRET);
        // Unknown before the first pick for a destination (its offset is not hashed yet).
        assert_eq!(p.next_candidate(SRC, DST, 0), None);
        for _ in 0..5 {
            p.pick(SRC, DST, |_| true).unwrap();
            let next = p.next_candidate(SRC, DST, 0);
            let third = p.next_candidate(SRC, DST, 2);
            let mut ahead = p.clone();
            ahead.pick(SRC, DST, |_| true).unwrap();
            ahead.pick(SRC, DST, |_| true).unwrap();
            assert_eq!(ahead.next_candidate(SRC, DST, 0), third);
            let mut tried = None;
            let picked = p.clone().pick(SRC, DST, |port| {
                tried.get_or_insert(port);
                true
            });
            assert_eq!(picked, tried);
            assert_eq!(next, tried);
        }
        assert_eq!(
            p.next_candidate(SRC, SocketAddrV4::new(*DST.ip(), 81), 0),
            None
        );
    }

    #[test]
    fn rfc6056_alg3_offset_depends_on_destination_and_secret() {
        let start = |secret, dst| EphemeralPorts::new(secret).pick(SRC, dst, |_| true);
        let base = start(SECRET, DST);
        let others = [
            start(SECRET, SocketAddrV4::new(*DST.ip(), 81)),
            start(SECRET, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 8), 80)),
            start([1; 16], DST),
            EphemeralPorts::new(SECRET).pick(Ipv4Addr::new(10, 0, 0, 2), DST, |_| true),
        ];
        for o in others {
            assert_ne!(o, base);
        }
    }

    #[test]
    fn rfc6056_alg3_skips_busy_ports() {
        let mut p = EphemeralPorts::new(SECRET);
        let first = EphemeralPorts::new(SECRET)
            .pick(SRC, DST, |_| true)
            .unwrap();
        let mut asked = alloc::vec::Vec::new();
        let port = p
            .pick(SRC, DST, |port| {
                asked.push(port);
                asked.len() > 3
            })
            .unwrap();
        assert_eq!(asked.len(), 4);
        assert_eq!(asked[0], first);
        assert_eq!(port, asked[3]);
    }

    #[test]
    fn rfc6056_alg3_exhaustion_tries_each_port_once_and_returns_none() {
        let mut p = EphemeralPorts::with_range(SECRET, 40000..=40999).unwrap();
        let mut seen = [false; 1000];
        let mut calls = 0;
        let r = p.pick(SRC, DST, |port| {
            calls += 1;
            let i = usize::from(port - 40000);
            assert!(!seen[i], "port {port} tried twice");
            seen[i] = true;
            false
        });
        assert_eq!(r, None);
        assert_eq!(calls, 1000);
        assert!(seen.iter().all(|&s| s));
        // Full 16-bit range: bounded too.
        let mut all = EphemeralPorts::with_range(SECRET, 1..=65535).unwrap();
        let mut calls = 0u32;
        assert_eq!(
            all.pick(SRC, DST, |_| {
                calls += 1;
                false
            }),
            None
        );
        assert_eq!(calls, 65535);
    }

    #[test]
    fn rfc6056_alg3_single_port_range() {
        let mut p = EphemeralPorts::with_range(SECRET, 5000..=5000).unwrap();
        assert_eq!(p.pick(SRC, DST, |_| true), Some(5000));
        assert_eq!(p.pick(SRC, DST, |_| false), None);
    }

    #[test]
    fn rfc6056_accept_predicate_steers_and_is_asked_before_is_free() {
        // Four "cores": this one accepts ports with port % 4 == 3.
        let mut p = EphemeralPorts::new(SECRET);
        for _ in 0..100 {
            let port = p
                .pick_with(
                    SRC,
                    DST,
                    |port| {
                        assert_eq!(port % 4, 3, "is_free asked for a port accept refused");
                        true
                    },
                    |port| port % 4 == 3,
                )
                .unwrap();
            assert_eq!(port % 4, 3);
        }
        // Nothing acceptable: None after one pass, is_free never asked.
        let mut accepts = 0;
        let r = p.pick_with(
            SRC,
            DST,
            |_| panic!("is_free asked"),
            |_| {
                accepts += 1;
                false
            },
        );
        assert_eq!(r, None);
        assert_eq!(accepts, 16384);
    }

    // -- SYN cookies ------------------------------------------------------------------------

    const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80);
    const REMOTE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 51000);

    fn all_options() -> impl Iterator<Item = CookieOptions> {
        let wscales = [None, Some(0), Some(1), Some(7), Some(14)];
        wscales.into_iter().flat_map(|wscale| {
            (0..4).map(move |bits| CookieOptions {
                timestamps: true,
                wscale,
                sack: bits & 1 != 0,
                ecn: bits & 2 != 0,
            })
        })
    }

    /// The ACK completing the handshake: SEG.SEQ = peer ISN + 1, SEG.ACK = our ISN + 1.
    fn ack_for(isn: SeqNumber, peer_isn: SeqNumber) -> (SeqNumber, SeqNumber) {
        (peer_isn + 1u32, isn + 1u32)
    }

    #[test]
    fn syncookie_round_trip_every_mss_class_without_timestamps() {
        let c = SynCookies::new(SECRET);
        let now = Instant::from_millis(987_654);
        for (k, &mss) in MSS_TABLE.iter().enumerate() {
            let peer_isn = SeqNumber(0xffff_fff0u32.wrapping_add(k as u32 * 0x1234_5678));
            let opts = CookieOptions {
                timestamps: false,
                wscale: Some(7),
                sack: true,
                ecn: true,
            };
            let (isn, tsval) = c.encode(now, LOCAL, REMOTE, peer_isn, mss, opts);
            assert_eq!(tsval, None);
            let (seq, ack) = ack_for(isn, peer_isn);
            let r = c.decode(now, LOCAL, REMOTE, seq, ack, None).unwrap();
            // Without timestamps the options are lost, as in Linux.
            assert_eq!(
                r,
                CookieResult {
                    mss,
                    wscale: None,
                    sack: false,
                    ecn: false
                }
            );
        }
    }

    #[test]
    fn syncookie_round_trip_every_mss_class_with_timestamps() {
        let c = SynCookies::new(SECRET);
        let now = Instant::from_micros(3_600_000_123_456);
        let ts_now = now.millis() as u32;
        for &mss in &MSS_TABLE {
            for opts in all_options() {
                let peer_isn = SeqNumber(0x0102_0304);
                let (isn, tsval) = c.encode(now, LOCAL, REMOTE, peer_isn, mss, opts);
                let tsval = tsval.unwrap();
                // Never ahead of the TS clock, at most 64 ms behind it.
                assert!(tsval <= ts_now && ts_now - tsval < 64, "{tsval} {ts_now}");
                let (seq, ack) = ack_for(isn, peer_isn);
                // The peer echoes our TSval; the ACK may come a little later.
                let later = now + Duration::from_millis(250);
                let r = c
                    .decode(later, LOCAL, REMOTE, seq, ack, Some(tsval))
                    .unwrap();
                assert_eq!(
                    r,
                    CookieResult {
                        mss,
                        wscale: opts.wscale,
                        sack: opts.sack,
                        ecn: opts.ecn
                    },
                    "{opts:?}"
                );
            }
        }
    }

    #[test]
    fn syncookie_tsval_layout_is_linux_cookie_init_timestamp() {
        let opts = CookieOptions {
            timestamps: true,
            wscale: Some(7),
            sack: true,
            ecn: false,
        };
        // Options 0b01_0111 = 0x17; ts_now's low bits 0x3f >= 0x17: same 64 ms block.
        assert_eq!(cookie_tsval(0x1234_567f, opts), 0x1234_5657);
        // ts_now's low bits below the options: the previous block.
        assert_eq!(cookie_tsval(0x1234_5641, opts), 0x1234_5617);
        // No window scaling is 0xf; wscale above 14 is stored as 14.
        let none = CookieOptions {
            wscale: None,
            ..CookieOptions::default()
        };
        assert_eq!(cookie_tsval(0x1000_003f, none), 0x1000_000f);
        let big = CookieOptions {
            wscale: Some(20),
            ecn: true,
            ..CookieOptions::default()
        };
        assert_eq!(cookie_tsval(0x1000_003f, big), 0x1000_002e);
        // Near zero the subtraction wraps, as Linux's does modulo 2^32.
        assert_eq!(cookie_tsval(0, big), 0u32.wrapping_sub(64) | 0x2e);
    }

    #[test]
    fn syncookie_mss_between_entries_rounds_down() {
        let c = SynCookies::new(SECRET);
        let now = secs(100);
        let cases = [
            (88, 536),
            (535, 536),
            (536, 536),
            (1299, 536),
            (1300, 1300),
            (1400, 1300),
            (1439, 1300),
            (1440, 1440),
            (1452, 1440),
            (1459, 1440),
            (1460, 1460),
            (8960, 1460),
            (u16::MAX, 1460),
        ];
        for (mss, expected) in cases {
            assert_eq!(quantize_mss(mss), expected, "{mss}");
            let peer_isn = SeqNumber(u32::from(mss) * 77);
            let (isn, _) = c.encode(now, LOCAL, REMOTE, peer_isn, mss, CookieOptions::default());
            let (seq, ack) = ack_for(isn, peer_isn);
            let r = c.decode(now, LOCAL, REMOTE, seq, ack, None).unwrap();
            assert_eq!(r.mss, expected, "{mss}");
        }
    }

    #[test]
    fn syncookie_wrong_ack_or_seq_is_rejected() {
        let c = SynCookies::new(SECRET);
        let now = secs(1000);
        let peer_isn = SeqNumber(7);
        let (isn, _) = c.encode(now, LOCAL, REMOTE, peer_isn, 1460, CookieOptions::default());
        let (seq, ack) = ack_for(isn, peer_isn);
        assert!(c.decode(now, LOCAL, REMOTE, seq, ack, None).is_some());
        // One above (MSS index 4), a counter tick off, half the space off, and 2000 spread
        // values; none lands within 3 below the right ACK.
        let mut bad = alloc::vec![ack + 1u32, ack + (1u32 << 24), ack + (1u32 << 31)];
        bad.extend((1..2000u32).map(|k| ack + k.wrapping_mul(0x9e37_79b9)));
        for wrong in bad {
            assert_eq!(
                c.decode(now, LOCAL, REMOTE, seq, wrong, None),
                None,
                "ack {wrong:?}"
            );
        }
        // A different SEG.SEQ means a different peer ISN.
        let mut bad_seq = alloc::vec![seq + u32::MAX, seq + (1u32 << 24), seq + (1u32 << 31)];
        bad_seq.extend((1..2000u32).map(|k| seq + k.wrapping_mul(0x9e37_79b9)));
        for wrong in bad_seq {
            assert_eq!(
                c.decode(now, LOCAL, REMOTE, wrong, ack, None),
                None,
                "seq {wrong:?}"
            );
        }
    }

    #[test]
    fn syncookie_ack_or_seq_off_by_less_than_4_shifts_the_mss_class_as_linux() {
        // The MSS index is added to the hash, not authenticated on its own (Linux's
        // encoding): SEG.ACK + d decodes index + d, SEG.SEQ + d decodes index - d, and only
        // indices 0..=3 are accepted.
        let c = SynCookies::new(SECRET);
        let now = secs(5000);
        let peer_isn = SeqNumber(0x8000_0000);
        for (index, &mss) in MSS_TABLE.iter().enumerate() {
            let (isn, _) = c.encode(now, LOCAL, REMOTE, peer_isn, mss, CookieOptions::default());
            let (seq, ack) = ack_for(isn, peer_isn);
            for d in -4i32..=4 {
                let expect = |i: i32| {
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| MSS_TABLE.get(i).copied())
                };
                let dd = d as u32;
                let by_ack = c.decode(now, LOCAL, REMOTE, seq, ack + dd, None);
                assert_eq!(
                    by_ack.map(|r| r.mss),
                    expect(index as i32 + d),
                    "{mss} ack {d}"
                );
                let by_seq = c.decode(now, LOCAL, REMOTE, seq + dd, ack, None);
                assert_eq!(
                    by_seq.map(|r| r.mss),
                    expect(index as i32 - d),
                    "{mss} seq {d}"
                );
            }
        }
    }

    #[test]
    fn syncookie_other_tuple_or_secret_is_rejected() {
        let c = SynCookies::new(SECRET);
        let now = secs(1000);
        let peer_isn = SeqNumber(0xdead_beef);
        let (isn, _) = c.encode(now, LOCAL, REMOTE, peer_isn, 1300, CookieOptions::default());
        let (seq, ack) = ack_for(isn, peer_isn);
        let other = |ip: [u8; 4], port| SocketAddrV4::new(Ipv4Addr::from(ip), port);
        for (l, r) in [
            (other([10, 0, 0, 3], 80), REMOTE),
            (other([10, 0, 0, 1], 81), REMOTE),
            (LOCAL, other([10, 0, 0, 4], 51000)),
            (LOCAL, other([10, 0, 0, 2], 51001)),
            (REMOTE, LOCAL),
        ] {
            assert_eq!(c.decode(now, l, r, seq, ack, None), None, "{l} {r}");
        }
        let d = SynCookies::new([0xa5; 16]);
        assert_eq!(d.decode(now, LOCAL, REMOTE, seq, ack, None), None);
    }

    #[test]
    fn syncookie_expires_after_two_counter_ticks() {
        let c = SynCookies::new(SECRET);
        let peer_isn = SeqNumber(42);
        // Issued at the very start of a tick: valid through the end of the next tick.
        let t0 = secs(60 * 1000);
        let (isn, _) = c.encode(t0, LOCAL, REMOTE, peer_isn, 1440, CookieOptions::default());
        let (seq, ack) = ack_for(isn, peer_isn);
        let at = |d: Duration| c.decode(t0 + d, LOCAL, REMOTE, seq, ack, None);
        assert_eq!(at(Duration::ZERO).unwrap().mss, 1440);
        assert_eq!(at(Duration::from_secs(59)).unwrap().mss, 1440);
        assert_eq!(at(Duration::from_secs(60)).unwrap().mss, 1440);
        assert_eq!(
            at(Duration::from_secs(120).saturating_sub(Duration::from_micros(1)))
                .unwrap()
                .mss,
            1440
        );
        assert_eq!(at(Duration::from_secs(120)), None);
        assert_eq!(at(Duration::from_secs(3600)), None);
        // 256 ticks later the 8-bit counter matches again, but the hash of the full counter
        // does not.
        assert_eq!(at(Duration::from_secs(60 * 256)), None);
        // Issued at the end of a tick: the counter advances at once, 60 s later it is stale.
        let t1 = Instant::from_micros(60 * 1_000_000 * 1001 - 1);
        let (isn, _) = c.encode(t1, LOCAL, REMOTE, peer_isn, 1440, CookieOptions::default());
        let (seq, ack) = ack_for(isn, peer_isn);
        assert!(c
            .decode(t1 + Duration::from_micros(1), LOCAL, REMOTE, seq, ack, None)
            .is_some());
        assert_eq!(
            c.decode(t1 + Duration::from_secs(61), LOCAL, REMOTE, seq, ack, None),
            None
        );
        // An ACK "from before" the cookie (a clock going backwards) is rejected too.
        assert_eq!(
            c.decode(secs(60 * 1000 - 61), LOCAL, REMOTE, seq, ack, None),
            None
        );
    }

    #[test]
    fn syncookie_isn_layout_carries_the_counter_in_the_top_byte() {
        // After removing H_0 + peer_isn, the top byte is the counter modulo 256.
        let c = SynCookies::new(SECRET);
        let peer_isn = SeqNumber(1234);
        for tick in [0u64, 1, 255, 256, 70_000] {
            let now = Instant::from_micros(tick * 60_000_000 + 17);
            let (isn, _) = c.encode(now, LOCAL, REMOTE, peer_isn, 536, CookieOptions::default());
            let rest = isn
                .0
                .wrapping_sub(c.hash(0, LOCAL, REMOTE, 0).wrapping_add(peer_isn.0));
            assert_eq!(rest >> 24, (tick % 256) as u32);
            let h1 = c.hash(1, LOCAL, REMOTE, tick as u32);
            assert_eq!(rest & COOKIE_MASK, h1 & COOKIE_MASK);
        }
    }

    proptest::proptest! {
        /// Any SYN's cookie decodes, within its lifetime, to the quantized MSS and its options;
        /// the same ACK on another local port does not decode.
        #[test]
        fn syncookie_round_trip_property(
            secret in proptest::array::uniform16(proptest::num::u8::ANY),
            ips in proptest::array::uniform8(proptest::num::u8::ANY),
            ports in (1u16.., 1u16..),
            tick in 0u64..(1 << 36),
            phase in 0u64..60_000_000,
            delay in 0u64..60_000_000,
            peer_isn in proptest::num::u32::ANY,
            mss in proptest::num::u16::ANY,
            wscale in proptest::option::of(0u8..=14),
            bits in 0u8..4,
            ts in proptest::bool::ANY,
        ) {
            let local = SocketAddrV4::new(Ipv4Addr::new(ips[0], ips[1], ips[2], ips[3]), ports.0);
            let remote = SocketAddrV4::new(Ipv4Addr::new(ips[4], ips[5], ips[6], ips[7]), ports.1);
            let c = SynCookies::new(secret);
            let now = Instant::from_micros(tick * 60_000_000 + phase);
            let opts = CookieOptions { timestamps: ts, wscale, sack: bits & 1 != 0, ecn: bits & 2 != 0 };
            let (isn, tsval) = c.encode(now, local, remote, SeqNumber(peer_isn), mss, opts);
            proptest::prop_assert_eq!(tsval.is_some(), ts);
            let (seq, ack) = ack_for(isn, SeqNumber(peer_isn));
            let later = now + Duration::from_micros(delay);
            let r = c.decode(later, local, remote, seq, ack, tsval);
            let expected = CookieResult {
                mss: quantize_mss(mss),
                wscale: if ts { wscale } else { None },
                sack: ts && opts.sack,
                ecn: ts && opts.ecn,
            };
            proptest::prop_assert_eq!(r, Some(expected));
            let moved = SocketAddrV4::new(*local.ip(), local.port().wrapping_add(1).max(1));
            proptest::prop_assert_eq!(c.decode(later, moved, remote, seq, ack, tsval), None);
        }
    }

    #[test]
    fn debug_output_hides_keys() {
        let s = alloc::format!(
            "{:?} {:?} {:?} {:?}",
            SipHasher24::new(&KEY),
            IsnGenerator::new(SECRET),
            EphemeralPorts::new(SECRET),
            SynCookies::new(SECRET)
        );
        assert!(!s.contains("key"), "{s}");
    }
}
