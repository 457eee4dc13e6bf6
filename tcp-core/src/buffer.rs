//! Send and receive buffers: bounded byte rings, out-of-order reassembly and SACK blocks.
//!
//! Place in the layers: a connection owns one [`SendBuffer`] and one [`RecvBuffer`]. They are
//! plain data structures: no clock, no I/O, no knowledge of segments, flags or options.
//!
//! Both are rings over one `Vec<u8>` allocated at creation and never grown: memory per buffer
//! is its capacity (plus, for the receiver, a list of at most `max_ranges` out-of-order ranges,
//! also allocated once).
//!
//! ## Send side
//! ```text
//!            SND.UNA                     SND.UNA + len()
//!               │◄──────── len() ─────────►│◄──── free() ────►│
//!  ring:  ......[ unacked / unsent bytes   ][   free space     ]......
//!               ▲ head (wraps around the end of the Vec)
//! ```
//! Offsets given to [`SendBuffer::peek`]/[`SendBuffer::read_at`] count from SND.UNA, so the
//! same call builds a retransmission (offset 0) or new data (offset `SND.NXT - SND.UNA`).
//!
//! ## Receive side
//! ```text
//!            (read by app)  RCV.NXT                      RCV.NXT + window()
//!               │◄─ len() ─►│◄────────── window() ──────────►│
//!  ring:  ......[ in order  ][ hole ][ooo][ hole ][ooo][     ]......
//!               ▲ head                                        ▲ head + capacity (right edge)
//! ```
//! Out-of-order bytes are copied straight to their final place in the ring; a sorted list of
//! at most `max_ranges` disjoint ranges remembers which parts of the window hold data. The
//! window is the free space after the in-order data; out-of-order data lives inside it, so the
//! right edge `RCV.NXT + window()` only moves right as the application reads (RFC 9293
//! §3.8.6.2.2: the receiver should not shrink the window) and data inside the advertised
//! window is never discarded once stored (no reneging, RFC 2018 §8).
//!
//! ## What this module leaves to others
//! - SYN and FIN occupy sequence space but no buffer space: the connection adds them to
//!   [`RecvBuffer::rcv_nxt`] itself (this buffer tracks data octets only).
//! - The RFC 9293 §3.10.7.4 acceptability test, PAWS and RFC 5961 checks happen before
//!   [`RecvBuffer::insert`]; `insert` trims defensively anyway and never panics.
//! - Window scaling, silly-window avoidance and ACK policy belong to the connection;
//!   [`InsertOutcome`] gives it what it needs (in-order advance, duplicates, drops).

use alloc::vec;
use alloc::vec::Vec;

use crate::seq::SeqNumber;

/// Largest capacity of a [`SendBuffer`] or [`RecvBuffer`]: 2^30 bytes, the largest window
/// RFC 7323 §2.3 allows (65535 << 14 is just below it). Larger requests are clamped, so
/// sequence arithmetic over a buffer never approaches the 2^31 ambiguity.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Default bound on the out-of-order ranges a [`RecvBuffer`] tracks.
pub const DEFAULT_MAX_RANGES: usize = 32;

/// Most SACK blocks that fit in a TCP option (RFC 2018 §3: 40 option bytes, 2 + 8·n ≤ 40).
pub const MAX_SACK_BLOCKS: usize = 4;

// ---------------------------------------------------------------------------------------------
// Ring helpers
// ---------------------------------------------------------------------------------------------

/// `(head + off) mod cap` for `head < cap` and `off <= cap` (no division; 0 when `cap == 0`).
fn ring_index(head: usize, off: usize, cap: usize) -> usize {
    let i = head + off;
    if i >= cap {
        i - cap
    } else {
        i
    }
}

/// Copies `data` into the ring `buf` starting at ring index `start`, wrapping at the end.
/// Callers ensure `start < buf.len()` and `data.len() <= buf.len()`.
fn ring_write(buf: &mut [u8], start: usize, data: &[u8]) {
    let first = data.len().min(buf.len() - start);
    buf[start..start + first].copy_from_slice(&data[..first]);
    let rest = data.len() - first;
    buf[..rest].copy_from_slice(&data[first..]);
}

/// The (up to) two contiguous slices of `n` bytes at ring index `start`.
/// Callers ensure `start < buf.len()` (or `n == 0`) and `n <= buf.len()`.
fn ring_slices(buf: &[u8], start: usize, n: usize) -> (&[u8], &[u8]) {
    if n == 0 {
        return (&[], &[]);
    }
    let first = n.min(buf.len() - start);
    (&buf[start..start + first], &buf[..n - first])
}

/// Copies two slices into `out` (which holds at least `a.len() + b.len()` bytes).
fn copy_pair(out: &mut [u8], (a, b): (&[u8], &[u8])) -> usize {
    out[..a.len()].copy_from_slice(a);
    out[a.len()..a.len() + b.len()].copy_from_slice(b);
    a.len() + b.len()
}

// ---------------------------------------------------------------------------------------------
// SendBuffer
// ---------------------------------------------------------------------------------------------

/// Bytes written by the application and not yet acknowledged by the peer, as a bounded ring.
///
/// The first byte is at SND.UNA. The connection decides what is sent; this buffer only
/// stores bytes, hands out any range of them by offset from SND.UNA, and drops them once
/// acknowledged ([`SendBuffer::ack`]).
#[derive(Debug, Clone)]
pub struct SendBuffer {
    buf: Vec<u8>,
    /// Ring index of the byte at SND.UNA.
    head: usize,
    /// Bytes held (unacknowledged, sent or not).
    len: usize,
}

impl SendBuffer {
    /// A buffer holding at most `capacity` bytes (clamped to [`MAX_CAPACITY`]); allocates
    /// once, here.
    pub fn new(capacity: usize) -> SendBuffer {
        SendBuffer {
            buf: vec![0; capacity.min(MAX_CAPACITY)],
            head: 0,
            len: 0,
        }
    }

    /// Most bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes held: written and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for more application bytes.
    pub fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken (0 when full).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        let tail = ring_index(self.head, self.len, self.buf.len());
        ring_write(&mut self.buf, tail, &data[..n]);
        self.len += n;
        n
    }

    /// Up to `max` bytes starting `offset` bytes after SND.UNA, as two slices (the second is
    /// non-empty only when the range wraps). Empty when `offset >= len()`.
    pub fn peek(&self, offset: usize, max: usize) -> (&[u8], &[u8]) {
        if offset >= self.len {
            return (&[], &[]);
        }
        let n = max.min(self.len - offset);
        ring_slices(&self.buf, ring_index(self.head, offset, self.buf.len()), n)
    }

    /// Copies bytes starting `offset` bytes after SND.UNA into `out` (as many as are held and
    /// fit); returns how many were copied.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        copy_pair(out, self.peek(offset, out.len()))
    }

    /// Drops the first `n` bytes (acknowledged by the peer: SND.UNA advanced by `n`).
    /// Returns how many were dropped: `n` clamped to `len()`.
    pub fn ack(&mut self, n: usize) -> usize {
        let n = n.min(self.len);
        self.len -= n;
        self.head = if self.len == 0 {
            // Restart at the front: the next writes are contiguous.
            0
        } else {
            ring_index(self.head, n, self.buf.len())
        };
        n
    }

    /// Drops every byte (connection reset or aborted).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// RecvBuffer
// ---------------------------------------------------------------------------------------------

/// What [`RecvBuffer::insert`] did with a segment's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertStatus {
    /// The segment carried no data (or `insert` got an empty slice).
    Empty,
    /// Data started at RCV.NXT (after trimming duplicates): RCV.NXT advanced.
    InOrder,
    /// Data stored above RCV.NXT, leaving a hole; RFC 5681 §4.2 asks for an immediate
    /// (duplicate) ACK.
    OutOfOrder,
    /// Every byte was below RCV.NXT: nothing new (RFC 2883 D-SACK candidate).
    Duplicate,
    /// No byte fell inside the window (including any data sent into a zero window).
    OutOfWindow,
    /// The data would have opened one more out-of-order range than the bound allows; it was
    /// dropped (the peer will retransmit it).
    TooManyRanges,
}

/// Result of [`RecvBuffer::insert`]: what was kept, what was trimmed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// The overall verdict.
    pub status: InsertStatus,
    /// Bytes that became readable by the application because of this segment (its own
    /// in-order bytes plus any out-of-order data it joined to them); RCV.NXT advanced by this.
    pub in_order: usize,
    /// Bytes of the segment that were not held before (in order or out of order).
    pub new_bytes: usize,
    /// Bytes at the front of the segment that were below RCV.NXT (already received).
    pub trimmed_front: usize,
    /// Bytes at the end of the segment that were beyond the right edge of the window.
    pub trimmed_back: usize,
    /// In-window bytes that were not stored because of the range bound
    /// ([`InsertStatus::TooManyRanges`]).
    pub dropped: usize,
    /// A duplicate part of this segment, for an RFC 2883 D-SACK block: the bytes below
    /// RCV.NXT if any, else the whole segment if it was already held out of order.
    pub duplicate: Option<(SeqNumber, SeqNumber)>,
}

impl InsertOutcome {
    fn new(status: InsertStatus) -> InsertOutcome {
        InsertOutcome {
            status,
            in_order: 0,
            new_bytes: 0,
            trimmed_front: 0,
            trimmed_back: 0,
            dropped: 0,
            duplicate: None,
        }
    }
}

/// Up to [`MAX_SACK_BLOCKS`] SACK blocks `(left edge, right edge)` (right edge exclusive, as
/// on the wire), in the order to put them in the option. Derefs to a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlocks {
    blocks: [(SeqNumber, SeqNumber); MAX_SACK_BLOCKS],
    len: usize,
}

impl SackBlocks {
    /// The blocks as a slice.
    pub fn as_slice(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.blocks[..self.len]
    }
}

impl core::ops::Deref for SackBlocks {
    type Target = [(SeqNumber, SeqNumber)];
    fn deref(&self) -> &[(SeqNumber, SeqNumber)] {
        self.as_slice()
    }
}

/// One out-of-order range held in the receive ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OooRange {
    start: SeqNumber,
    /// Exclusive.
    end: SeqNumber,
    /// When data last arrived in this range (the [`RecvBuffer`]'s counter); orders SACK blocks.
    stamp: u64,
}

/// Bytes received from the peer: in-order data waiting for the application, and out-of-order
/// data waiting for the holes before it to fill.
///
/// Invariants (checked by the tests): the out-of-order ranges are sorted, disjoint, not
/// adjacent, each starts above RCV.NXT and ends at or before `RCV.NXT + window()`, and there
/// are at most `max_ranges` of them.
#[derive(Debug, Clone)]
pub struct RecvBuffer {
    buf: Vec<u8>,
    /// Ring index of the first unread in-order byte.
    head: usize,
    /// In-order bytes not yet read by the application.
    len: usize,
    /// Sequence number of the next in-order data byte expected.
    rcv_nxt: SeqNumber,
    /// Out-of-order ranges, sorted by sequence number (capacity `max_ranges`, never grown).
    ranges: Vec<OooRange>,
    max_ranges: usize,
    /// Arrival counter for SACK-block recency.
    clock: u64,
}

impl RecvBuffer {
    /// A buffer of `capacity` bytes (clamped to [`MAX_CAPACITY`]) expecting `rcv_nxt` next,
    /// tracking at most [`DEFAULT_MAX_RANGES`] out-of-order ranges.
    pub fn new(capacity: usize, rcv_nxt: SeqNumber) -> RecvBuffer {
        RecvBuffer::with_max_ranges(capacity, rcv_nxt, DEFAULT_MAX_RANGES)
    }

    /// Like [`RecvBuffer::new`] with a chosen bound on out-of-order ranges (0 refuses all
    /// out-of-order data). Allocates the ring and the range list once, here.
    pub fn with_max_ranges(capacity: usize, rcv_nxt: SeqNumber, max_ranges: usize) -> RecvBuffer {
        RecvBuffer {
            buf: vec![0; capacity.min(MAX_CAPACITY)],
            head: 0,
            len: 0,
            rcv_nxt,
            ranges: Vec::with_capacity(max_ranges),
            max_ranges,
            clock: 0,
        }
    }

    /// Drops all data and expects `rcv_nxt` next (e.g. IRS + 1 once the SYN is received,
    /// RFC 9293 §3.10.7.2).
    pub fn reset(&mut self, rcv_nxt: SeqNumber) {
        self.head = 0;
        self.len = 0;
        self.rcv_nxt = rcv_nxt;
        self.ranges.clear();
    }

    /// Most bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// In-order bytes ready for the application.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no in-order byte is ready.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The receive window: free space after the in-order data (out-of-order data sits inside
    /// it). The connection advertises this (scaled, RFC 7323 §2.3) as RCV.WND.
    pub fn window(&self) -> usize {
        self.buf.len() - self.len
    }

    /// RCV.NXT as far as data is concerned: the next in-order data byte expected.
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv_nxt
    }

    /// Bytes held out of order (above a hole).
    pub fn ooo_bytes(&self) -> usize {
        self.ranges.iter().map(|r| (r.end - r.start) as usize).sum()
    }

    /// The out-of-order ranges `(start, end)` (end exclusive), lowest first.
    pub fn ooo_ranges(&self) -> impl Iterator<Item = (SeqNumber, SeqNumber)> + '_ {
        self.ranges.iter().map(|r| (r.start, r.end))
    }

    /// The bound on out-of-order ranges.
    pub fn max_ranges(&self) -> usize {
        self.max_ranges
    }

    /// Up to `max` in-order bytes, without consuming them, as two slices.
    pub fn peek(&self, max: usize) -> (&[u8], &[u8]) {
        ring_slices(&self.buf, self.head, max.min(self.len))
    }

    /// Marks `n` in-order bytes (clamped to `len()`) as read; returns how many. The window
    /// opens by as much.
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.len);
        // Ring positions of out-of-order data are relative to `head + len`, which stays put.
        self.head = ring_index(self.head, n, self.buf.len());
        self.len -= n;
        n
    }

    /// Copies in-order bytes into `out` and consumes them; returns how many.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = copy_pair(out, self.peek(out.len()));
        self.consume(n)
    }

    /// Stores the data of a segment whose first data byte has sequence number `seq`.
    ///
    /// Bytes below RCV.NXT and beyond `RCV.NXT + window()` are trimmed (RFC 9293 §3.10.7.4:
    /// "segments with higher beginning sequence numbers may be held for later processing";
    /// the parts outside the window are not kept). What remains is copied into the ring at
    /// its place. If it starts at RCV.NXT, RCV.NXT advances past it and past any
    /// out-of-order data it joins. Otherwise it is merged into the out-of-order ranges, or
    /// dropped if it would need more than `max_ranges` of them. Never panics, whatever `seq`
    /// and `data.len()` are.
    pub fn insert(&mut self, seq: SeqNumber, data: &[u8]) -> InsertOutcome {
        if data.is_empty() {
            return InsertOutcome::new(InsertStatus::Empty);
        }
        // Trim the front: bytes below RCV.NXT were already received.
        let mut out = InsertOutcome::new(InsertStatus::OutOfOrder);
        let (data, off) = if seq < self.rcv_nxt {
            let dup = (self.rcv_nxt - seq) as usize;
            if dup >= data.len() {
                out.status = InsertStatus::Duplicate;
                out.trimmed_front = data.len();
                out.duplicate = Some((seq, seq + data.len()));
                return out;
            }
            out.trimmed_front = dup;
            out.duplicate = Some((seq, self.rcv_nxt));
            (&data[dup..], 0usize)
        } else {
            (data, (seq - self.rcv_nxt) as usize)
        };
        // Trim the back: nothing beyond the right edge of the window.
        let window = self.window();
        if off >= window {
            out.status = InsertStatus::OutOfWindow;
            out.trimmed_back = data.len();
            return out;
        }
        let keep = data.len().min(window - off);
        out.trimmed_back = data.len() - keep;
        let data = &data[..keep];
        let start = self.rcv_nxt + off;
        let end = start + keep;

        // Ranges touching [start, end] (overlapping or adjacent): indices lo..hi.
        let lo = self.ranges.partition_point(|r| r.end < start);
        let hi = self.ranges.partition_point(|r| r.start <= end);
        let held: usize = self.ranges[lo..hi]
            .iter()
            .map(|r| (r.end.min(end) - r.start.max(start)) as usize)
            .sum();

        if off == 0 {
            out.status = InsertStatus::InOrder;
        } else if lo == hi && self.ranges.len() >= self.max_ranges {
            // Bounded reassembly: no room to remember one more range.
            out.status = InsertStatus::TooManyRanges;
            out.dropped = keep;
            return out;
        } else if hi == lo + 1
            && self.ranges[lo].start <= start
            && end <= self.ranges[lo].end
            && out.duplicate.is_none()
        {
            // Entirely held already: only its recency changes (RFC 2018 §4: the first block
            // covers the segment that triggered the ACK), and it is a D-SACK candidate.
            out.duplicate = Some((start, end));
        }

        // Data goes straight to its final place in the ring; in-order and out-of-order bytes
        // share the free space after the readable data.
        let at = ring_index(self.head, self.len + off, self.buf.len());
        ring_write(&mut self.buf, at, data);
        out.new_bytes = keep - held;

        self.clock += 1;
        let merged = OooRange {
            start: if lo < hi {
                self.ranges[lo].start.min(start)
            } else {
                start
            },
            end: if lo < hi {
                self.ranges[hi - 1].end.max(end)
            } else {
                end
            },
            stamp: self.clock,
        };
        if off == 0 {
            // In order: RCV.NXT moves past this data and any out-of-order range it reaches
            // (only ranges with lo..hi can touch it, and they merge into one).
            self.ranges.drain(lo..hi);
            let advance = (merged.end - self.rcv_nxt) as usize;
            self.rcv_nxt = merged.end;
            self.len += advance;
            out.in_order = advance;
        } else {
            self.ranges.splice(lo..hi, core::iter::once(merged));
        }
        out
    }

    /// SACK blocks for the next ACK, per RFC 2018 §4, at most `max` (clamped to
    /// [`MAX_SACK_BLOCKS`]; 3 leaves room for timestamps).
    ///
    /// RFC 2018 §4: "The first SACK block ... MUST specify the contiguous block of data
    /// containing the segment which triggered this ACK, unless that segment advanced the
    /// Acknowledgment Number field in the header." and "The SACK option SHOULD be filled out
    /// by repeating the most recently reported SACK blocks". Each range remembers when data
    /// last arrived in it; blocks come newest first, which puts the block of the triggering
    /// segment first and repeats the blocks reported most recently after it. To send an RFC
    /// 2883 D-SACK, put [`InsertOutcome::duplicate`] first and ask for one block fewer.
    pub fn sack_blocks(&self, max: usize) -> SackBlocks {
        let mut out = SackBlocks::default();
        let max = max.min(MAX_SACK_BLOCKS);
        // Selection of the `max` newest stamps (at most 4 passes over at most max_ranges).
        let mut below = u64::MAX;
        while out.len < max {
            let Some(r) = self
                .ranges
                .iter()
                .filter(|r| r.stamp < below)
                .max_by_key(|r| r.stamp)
            else {
                break;
            };
            out.blocks[out.len] = (r.start, r.end);
            out.len += 1;
            below = r.stamp;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn byte(i: u32) -> u8 {
        (i.wrapping_mul(7).wrapping_add(3) % 251) as u8
    }

    fn stream(from: u32, len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| byte(from + i)).collect()
    }

    // ---- SendBuffer ------------------------------------------------------------------------

    #[test]
    fn send_write_peek_ack_wraps() {
        let mut b = SendBuffer::new(8);
        assert_eq!(b.write(b"abcdef"), 6);
        assert_eq!(b.free(), 2);
        assert_eq!(b.ack(4), 4);
        assert_eq!(b.write(b"ghijkl"), 6);
        assert_eq!(b.write(b"z"), 0, "full");
        assert_eq!(b.len(), 8);
        let (x, y) = b.peek(0, 100);
        assert_eq!([x, y].concat(), b"efghijkl");
        assert!(!y.is_empty(), "the range wraps");
        let mut out = [0u8; 5];
        assert_eq!(b.read_at(3, &mut out), 5);
        assert_eq!(&out, b"hijkl");
        assert_eq!(b.read_at(8, &mut out), 0);
        assert_eq!(b.ack(100), 8);
        assert!(b.is_empty());
    }

    #[test]
    fn send_zero_capacity_is_harmless() {
        let mut b = SendBuffer::new(0);
        assert_eq!(b.write(b"abc"), 0);
        assert_eq!(b.peek(0, 10), (&[][..], &[][..]));
        assert_eq!(b.ack(3), 0);
        let mut r = RecvBuffer::new(0, SeqNumber(5));
        assert_eq!(
            r.insert(SeqNumber(5), b"x").status,
            InsertStatus::OutOfWindow
        );
        assert_eq!(r.read(&mut [0u8; 4]), 0);
    }

    // ---- RecvBuffer ------------------------------------------------------------------------

    #[test]
    fn recv_in_order_then_read() {
        let mut r = RecvBuffer::new(10, SeqNumber(100));
        let o = r.insert(SeqNumber(100), b"hello");
        assert_eq!(o.status, InsertStatus::InOrder);
        assert_eq!((o.in_order, o.new_bytes), (5, 5));
        assert_eq!(r.rcv_nxt(), SeqNumber(105));
        assert_eq!(r.window(), 5);
        let mut out = [0u8; 3];
        assert_eq!(r.read(&mut out), 3);
        assert_eq!(&out, b"hel");
        assert_eq!(r.window(), 8);
    }

    #[test]
    fn recv_hole_fills_and_advances() {
        let mut r = RecvBuffer::new(100, SeqNumber(u32::MAX - 2)); // wraps mid-stream
        let base = SeqNumber(u32::MAX - 2);
        let o = r.insert(base + 10u32, b"klmno");
        assert_eq!(o.status, InsertStatus::OutOfOrder);
        assert_eq!(o.in_order, 0);
        let o = r.insert(base + 5u32, b"fghij");
        assert_eq!(o.status, InsertStatus::OutOfOrder);
        assert_eq!(
            r.ooo_ranges().collect::<Vec<_>>(),
            [(base + 5u32, base + 15u32)]
        );
        let o = r.insert(base, b"abcde");
        assert_eq!(o.status, InsertStatus::InOrder);
        assert_eq!(o.in_order, 15);
        assert_eq!(r.rcv_nxt(), base + 15u32);
        assert_eq!(r.ooo_ranges().count(), 0);
        let mut out = [0u8; 20];
        assert_eq!(r.read(&mut out), 15);
        assert_eq!(&out[..15], b"abcdefghijklmno");
    }

    #[test]
    fn recv_trims_duplicates_and_beyond_window() {
        let mut r = RecvBuffer::new(10, SeqNumber(0));
        r.insert(SeqNumber(0), b"abcd");
        let o = r.insert(SeqNumber(2), b"cdefghijklmnop");
        assert_eq!(o.status, InsertStatus::InOrder);
        assert_eq!((o.trimmed_front, o.trimmed_back, o.in_order), (2, 6, 6));
        assert_eq!(o.duplicate, Some((SeqNumber(2), SeqNumber(4))));
        assert_eq!(r.window(), 0);
        let o = r.insert(SeqNumber(10), b"q");
        assert_eq!(o.status, InsertStatus::OutOfWindow, "zero window");
        let o = r.insert(SeqNumber(3), b"de");
        assert_eq!(o.status, InsertStatus::Duplicate);
        assert_eq!(o.duplicate, Some((SeqNumber(3), SeqNumber(5))));
        // Absurd sequence numbers: refused, never indexed.
        for s in [u32::MAX, 1 << 31, (1 << 31) + 1, 12345678] {
            let o = r.insert(SeqNumber(s), &[0u8; 1500]);
            assert!(matches!(
                o.status,
                InsertStatus::OutOfWindow | InsertStatus::Duplicate
            ));
        }
        let mut out = [0u8; 16];
        assert_eq!(r.read(&mut out), 10);
        assert_eq!(&out[..10], b"abcdefghij");
    }

    #[test]
    fn recv_range_bound_drops_new_ranges_only() {
        let mut r = RecvBuffer::with_max_ranges(100, SeqNumber(0), 2);
        assert_eq!(
            r.insert(SeqNumber(10), b"a").status,
            InsertStatus::OutOfOrder
        );
        assert_eq!(
            r.insert(SeqNumber(20), b"b").status,
            InsertStatus::OutOfOrder
        );
        let o = r.insert(SeqNumber(30), b"cc");
        assert_eq!(o.status, InsertStatus::TooManyRanges);
        assert_eq!(o.dropped, 2);
        // Extending an existing range and in-order data are still accepted.
        assert_eq!(
            r.insert(SeqNumber(21), b"b").status,
            InsertStatus::OutOfOrder
        );
        assert_eq!(r.insert(SeqNumber(0), b"0123456789").in_order, 11);
        assert_eq!(
            r.insert(SeqNumber(30), b"cc").status,
            InsertStatus::OutOfOrder
        );
    }

    #[test]
    fn recv_duplicate_out_of_order_is_dsack_candidate() {
        let mut r = RecvBuffer::new(100, SeqNumber(0));
        r.insert(SeqNumber(10), b"abcdef");
        let o = r.insert(SeqNumber(12), b"cd");
        assert_eq!(o.status, InsertStatus::OutOfOrder);
        assert_eq!(o.new_bytes, 0);
        assert_eq!(o.duplicate, Some((SeqNumber(12), SeqNumber(14))));
    }

    /// RFC 2018 §4: first block = block of the latest segment, then the most recent others.
    #[test]
    fn rfc2018_sack_block_order() {
        let mut r = RecvBuffer::new(1000, SeqNumber(0));
        r.insert(SeqNumber(100), &[1; 10]); // A
        r.insert(SeqNumber(200), &[1; 10]); // B
        r.insert(SeqNumber(300), &[1; 10]); // C
        r.insert(SeqNumber(400), &[1; 10]); // D
        let b = r.sack_blocks(3);
        assert_eq!(
            b.as_slice(),
            [
                (SeqNumber(400), SeqNumber(410)),
                (SeqNumber(300), SeqNumber(310)),
                (SeqNumber(200), SeqNumber(210))
            ]
        );
        r.insert(SeqNumber(110), &[1; 5]); // extends A: A first now
        let b = r.sack_blocks(4);
        assert_eq!(b[0], (SeqNumber(100), SeqNumber(115)));
        assert_eq!(b[1], (SeqNumber(400), SeqNumber(410)));
        assert_eq!(b.len(), 4);
        // A segment that advances RCV.NXT: its block is gone, the rest keep their order.
        r.insert(SeqNumber(0), &[1; 115]);
        let b = r.sack_blocks(4);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0], (SeqNumber(400), SeqNumber(410)));
        assert_eq!(r.sack_blocks(9).len(), 3);
        assert_eq!(r.sack_blocks(0).len(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Segment at stream offset `off` (absolute, from the first expected byte), `len` bytes.
        Seg(u32, usize),
        /// Application reads up to n bytes.
        Read(usize),
        /// A segment at an arbitrary sequence number.
        Wild(u32, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u32..300, 0usize..60).prop_map(|(o, l)| Op::Seg(o, l)),
            2 => (0usize..80).prop_map(Op::Read),
            1 => (any::<u32>(), 0usize..3000).prop_map(|(s, l)| Op::Wild(s, l)),
        ]
    }

    /// The model's maximal runs of received bytes above `nxt`, as absolute offsets.
    fn model_runs(model: &BTreeMap<u32, u8>, nxt: u32) -> Vec<(u32, u32)> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for (&i, _) in model.range(nxt..) {
            match runs.last_mut() {
                Some(last) if last.1 == i => last.1 = i + 1,
                _ => runs.push((i, i + 1)),
            }
        }
        runs
    }

    proptest! {
        /// The receive buffer against a model (`BTreeMap` of received bytes): readable stream,
        /// RCV.NXT, window, out-of-order ranges, range bound, memory, SACK blocks.
        #[test]
        fn recv_matches_model(
            base in any::<u32>(),
            cap in 1usize..96,
            max_ranges in 0usize..6,
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let b0 = SeqNumber(base);
            let mut r = RecvBuffer::with_max_ranges(cap, b0, max_ranges);
            let ranges_cap = r.ranges.capacity();
            let mut model: BTreeMap<u32, u8> = BTreeMap::new(); // absolute offset -> byte
            let mut read_pos = 0u32; // bytes read by the application
            let mut nxt = 0u32; // model RCV.NXT (absolute)
            for op in ops {
                match op {
                    Op::Seg(off, len) | Op::Wild(off, len) => {
                        let wild = matches!(op, Op::Wild(..));
                        let seq = if wild { SeqNumber(off) } else { b0 + off };
                        let data: Vec<u8> = (0..len as u32)
                            .map(|i| byte((seq + i) - b0)).collect();
                        let runs_before = model_runs(&model, nxt).len();
                        let o = r.insert(seq, &data);
                        // Model: bytes in [nxt, read_pos + cap) are kept, the rest trimmed.
                        let right = read_pos + cap as u32;
                        let kept: Vec<u32> = (0..len as u32)
                            .map(|i| (seq + i) - b0)
                            .filter(|&a| {
                                let s = b0 + a;
                                s >= b0 + nxt && s < b0 + right
                            })
                            .collect();
                        prop_assert_eq!(o.trimmed_front + o.trimmed_back + kept.len(), len);
                        if o.status == InsertStatus::TooManyRanges {
                            prop_assert_eq!(o.dropped, kept.len());
                            prop_assert_eq!(runs_before, max_ranges);
                            // It would have opened a new range: touches no run and not nxt.
                            let (s, e) = (kept[0], kept[kept.len() - 1] + 1);
                            prop_assert!(s > nxt);
                            for (a, b) in model_runs(&model, nxt) {
                                prop_assert!(e < a || s > b);
                            }
                        } else {
                            prop_assert_eq!(o.dropped, 0);
                            let mut new = 0;
                            for a in kept {
                                if model.insert(a, byte(a)).is_none() {
                                    new += 1;
                                }
                            }
                            prop_assert_eq!(o.new_bytes, new);
                            let old = nxt;
                            while model.contains_key(&nxt) { nxt += 1; }
                            prop_assert_eq!(o.in_order, (nxt - old) as usize);
                            if o.status == InsertStatus::OutOfOrder {
                                // RFC 2018 §4: the first block contains the triggering segment.
                                let first = r.sack_blocks(1)[0];
                                let s = seq.max(b0 + nxt);
                                prop_assert!(first.0 <= s && s < first.1);
                            }
                        }
                    }
                    Op::Read(n) => {
                        let mut out = std::vec![0u8; n];
                        let got = r.read(&mut out);
                        prop_assert_eq!(got, n.min((nxt - read_pos) as usize));
                        for (i, &x) in out[..got].iter().enumerate() {
                            prop_assert_eq!(x, byte(read_pos + i as u32));
                        }
                        read_pos += got as u32;
                    }
                }
                // Invariants after every step.
                prop_assert_eq!(r.rcv_nxt(), b0 + nxt);
                prop_assert_eq!(r.len(), (nxt - read_pos) as usize);
                prop_assert_eq!(r.window(), cap - r.len());
                prop_assert_eq!(r.buf.len(), cap);
                prop_assert_eq!(r.ranges.capacity(), ranges_cap, "never grown");
                let runs: Vec<(SeqNumber, SeqNumber)> = model_runs(&model, nxt)
                    .into_iter().map(|(a, b)| (b0 + a, b0 + b)).collect();
                prop_assert_eq!(r.ooo_ranges().collect::<Vec<_>>(), runs.clone());
                prop_assert!(runs.len() <= max_ranges);
                for &(s, e) in &runs {
                    prop_assert!(s > r.rcv_nxt() && e <= r.rcv_nxt() + r.window());
                }
                let sacks = r.sack_blocks(4);
                prop_assert_eq!(sacks.len(), runs.len().min(4));
                for (i, blk) in sacks.iter().enumerate() {
                    prop_assert!(runs.contains(blk));
                    prop_assert!(!sacks[..i].contains(blk));
                }
                // Out-of-order bytes already in the ring are the right ones.
                let (x, y) = r.peek(usize::MAX);
                let got: Vec<u8> = [x, y].concat();
                prop_assert_eq!(got, stream(read_pos, (nxt - read_pos) as usize));
            }
        }

        /// The send buffer against a `VecDeque` model.
        #[test]
        fn send_matches_model(
            cap in 0usize..64,
            ops in proptest::collection::vec((0u8..3, 0usize..80, 0usize..80), 1..60),
        ) {
            let mut b = SendBuffer::new(cap);
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u32;
            for (kind, a, c) in ops {
                match kind {
                    0 => {
                        let data = stream(next, a);
                        let n = b.write(&data);
                        prop_assert_eq!(n, a.min(cap - model.len()));
                        model.extend(&data[..n]);
                        next += n as u32;
                    }
                    1 => {
                        let n = b.ack(a);
                        prop_assert_eq!(n, a.min(model.len()));
                        model.drain(..n);
                    }
                    _ => {
                        let mut out = std::vec![0u8; c];
                        let n = b.read_at(a, &mut out);
                        let want: Vec<u8> = model.iter().skip(a).take(c).copied().collect();
                        prop_assert_eq!(&out[..n], &want[..]);
                    }
                }
                prop_assert_eq!(b.len(), model.len());
                prop_assert_eq!(b.free(), cap - model.len());
                prop_assert_eq!(b.buf.len(), cap);
            }
        }
    }
}
