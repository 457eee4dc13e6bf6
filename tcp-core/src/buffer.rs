//! Send and receive buffers: bounded byte rings, out-of-order reassembly and SACK blocks.
//!
//! Place in the layers: a connection owns one [`SendBuffer`] and one [`RecvBuffer`]. They are
//! plain data structures: no clock, no I/O, no knowledge of segments, flags or options.
//!
//! ## Memory
//! A buffer's capacity is a logical bound: it is what `capacity()`, [`SendBuffer::free`] and
//! [`RecvBuffer::window`] report and enforce. The ring storage behind it is allocated lazily,
//! so that a million idle connections cost almost nothing:
//! - `new`, `with_max_ranges`, `clear` and `reset` allocate nothing (`clear` and `reset` free
//!   what the buffer held).
//! - The ring grows when a write or an insert needs room beyond its storage: the first
//!   allocation is the size needed rounded up to a power of two, at least 256 bytes; each
//!   later one at least doubles; none exceeds the capacity. Growing copies the held bytes to
//!   the start of the new storage (the ring is laid out linearly again; sizes not to scale):
//!   ```text
//!    storage 4, wrapped:   [ c d | a b ]            head at `a`; writing "ef" needs 6 bytes
//!    storage 8, linear:    [ a b c d e f . . ]      head at 0
//!   ```
//!   A write or an insert checks for room with one compare; once grown, nothing allocates.
//! - The receiver's list of out-of-order ranges starts empty and grows up to `max_ranges`
//!   entries, never beyond.
//! - `shrink` frees the storage of a buffer that holds no bytes (the connection calls it when
//!   it goes idle); `allocated` reports the heap bytes a buffer holds.
//!
//! - An endpoint may keep freed storage of the smallest size (256 bytes) in a bounded
//!   [`StoragePool`] and hand it to the next buffer that grows from nothing (the `*_pooled`
//!   and `*_into` methods): short connections then cost no allocation at all. Pooled storage
//!   keeps its old bytes; a ring never reads an offset it has not written, so they are never
//!   seen.
//!
//! So a buffer holds at most its capacity in ring storage (plus, for the receiver,
//! `max_ranges` × 16 bytes of range list), and nothing before its first byte or after
//! `shrink`. Storage does not shrink by itself while bytes come and go.
//!
//! ## Send side
//! ```text
//!            SND.UNA                     SND.UNA + len()
//!               │◄──────── len() ─────────►│◄──── free() ────►│
//!  ring:  ......[ unacked / unsent bytes   ][   free space     ]......
//!               ▲ head (wraps around the end of the storage)
//! ```
//! Offsets given to [`SendBuffer::peek`]/[`SendBuffer::read_at`] count from SND.UNA, so the
//! same call builds a retransmission (offset 0) or new data (offset `SND.NXT - SND.UNA`).
//! The storage only needs to reach `len()` bytes past the head; the free space beyond it is
//! allocated as writes need it.
//!
//! ## Receive side
//! ```text
//!            (read by app)  RCV.NXT                      RCV.NXT + window()
//!               │◄─ len() ─►│◄────────── window() ──────────►│
//!  ring:  ......[ in order  ][ hole ][ooo][ hole ][ooo][     ]......
//!               ▲ head                                        ▲ head + capacity (right edge)
//! ```
//! Out-of-order bytes are copied straight to their final place in the ring (growing the
//! storage to reach it if needed); a sorted list of at most `max_ranges` disjoint ranges
//! remembers which parts of the window hold data. The window is the free space after the
//! in-order data; out-of-order data lives inside it, so the right edge `RCV.NXT + window()`
//! only moves right as the application reads (RFC 9293 §3.8.6.2.2: the receiver should not
//! shrink the window) and data inside the advertised window is never discarded once stored
//! (no reneging, RFC 2018 §8). The storage only needs to reach the end of the last
//! out-of-order range; the rest of the window is allocated as data arrives in it.
//!
//! ## What this module leaves to others
//! - SYN and FIN occupy sequence space but no buffer space: the connection adds them to
//!   [`RecvBuffer::rcv_nxt`] itself (this buffer tracks data octets only).
//! - The RFC 9293 §3.10.7.4 acceptability test, PAWS and RFC 5961 checks happen before
//!   [`RecvBuffer::insert`]; `insert` trims defensively anyway and never panics.
//! - Window scaling, silly-window avoidance and ACK policy belong to the connection;
//!   [`InsertOutcome`] gives it what it needs (in-order advance, duplicates, drops).
//! - When to call `shrink` (idle policy) belongs to the connection.

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

/// Smallest ring storage allocated (unless the capacity is smaller): a few small writes or
/// segments do not each cost a reallocation.
const MIN_STORAGE: usize = 256;

/// Fewest out-of-order ranges the range list makes room for when it first grows (unless
/// `max_ranges` is smaller).
const MIN_RANGES: usize = 4;

// ---------------------------------------------------------------------------------------------
// StoragePool
// ---------------------------------------------------------------------------------------------

/// Freed ring storage of the smallest size (256 bytes), kept for reuse, at most `max` of them.
///
/// Short connections each grow two rings from nothing and free them a few segments later;
/// with a pool, after the first ones, that is a `Vec` push and pop instead of an allocation,
/// a zero fill and a free.
#[derive(Debug, Default)]
pub struct StoragePool {
    free: Vec<Vec<u8>>,
    max: usize,
}

impl StoragePool {
    /// An empty pool that keeps at most `max` storages (`max * 256` bytes).
    pub fn new(max: usize) -> StoragePool {
        StoragePool {
            free: Vec::new(),
            max,
        }
    }

    /// Heap bytes held by pooled storage (not counting the pool's own list).
    pub fn allocated(&self) -> usize {
        self.free.len() * MIN_STORAGE
    }

    /// Storages held.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether the pool holds no storage.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    fn take(&mut self) -> Option<Vec<u8>> {
        self.free.pop()
    }

    /// Keeps `v` if it is a smallest-size storage and there is room; drops it otherwise.
    fn give(&mut self, v: Vec<u8>) {
        if v.len() == MIN_STORAGE && v.capacity() == MIN_STORAGE && self.free.len() < self.max {
            self.free.push(v);
        }
    }
}

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
    // Most writes do not wrap: no call for an empty second part.
    if rest != 0 {
        buf[..rest].copy_from_slice(&data[first..]);
    }
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
    // Most reads do not wrap: no call for an empty second part.
    if !b.is_empty() {
        out[a.len()..a.len() + b.len()].copy_from_slice(b);
    }
    a.len() + b.len()
}

/// Ring storage shared by both buffers: bytes addressed by offset from `head`, modulo the
/// storage size, which starts at 0 and grows on demand up to `capacity` (see the module doc).
///
/// Invariants: `storage.len() <= capacity` unless the capacity was lowered after the storage
/// grew ([`Ring::set_capacity`]); `head < storage.len()`, or `head == 0` when the storage is
/// empty; every byte the owner holds is at an offset below `storage.len()`.
#[derive(Debug, Clone)]
struct Ring {
    storage: Vec<u8>,
    /// Storage index of offset 0.
    head: usize,
    /// The logical bound: the storage never grows beyond it.
    capacity: usize,
}

impl Ring {
    /// An empty ring of `capacity` bytes (clamped to [`MAX_CAPACITY`]); allocates nothing.
    fn new(capacity: usize) -> Ring {
        Ring {
            storage: Vec::new(),
            head: 0,
            capacity: capacity.min(MAX_CAPACITY),
        }
    }

    /// Bytes of storage in use as the ring (0 until the first byte is stored).
    fn size(&self) -> usize {
        self.storage.len()
    }

    /// Heap bytes held.
    fn allocated(&self) -> usize {
        self.storage.capacity()
    }

    /// A new logical bound (clamped to [`MAX_CAPACITY`]). Storage already grown beyond it
    /// stays (the bytes in it are still held); it never grows further than the bound.
    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.min(MAX_CAPACITY);
    }

    /// Storage index of offset `off` (`off <= size()`).
    fn index(&self, off: usize) -> usize {
        ring_index(self.head, off, self.storage.len())
    }

    /// Copies `data` to offsets `off..off + data.len()`, which must be below `size()`.
    fn write(&mut self, off: usize, data: &[u8]) {
        let at = self.index(off);
        ring_write(&mut self.storage, at, data);
    }

    /// The bytes at offsets `off..off + n` (below `size()` unless `n == 0`) as two slices.
    fn slices(&self, off: usize, n: usize) -> (&[u8], &[u8]) {
        ring_slices(&self.storage, self.index(off), n)
    }

    /// Moves offset 0 forward by `n <= size()` bytes.
    fn advance(&mut self, n: usize) {
        self.head = self.index(n);
    }

    /// Moves offset 0 to the start of the storage; only when no byte is held.
    fn rewind(&mut self) {
        self.head = 0;
    }

    /// Grows the storage to cover offsets `0..needed` (`size() < needed <= capacity`),
    /// keeping the bytes at offsets `0..live` (`live <= size()`) and moving them to the start
    /// of the new storage. The new size is `needed` rounded up to a power of two, at least
    /// [`MIN_STORAGE`] and twice the old size, at most the capacity. Callers check
    /// `needed > size()` first, so the fast path is that one compare.
    ///
    /// Smallest-size storage comes from `pool` when it has some.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, needed: usize, live: usize, pool: Option<&mut StoragePool>) {
        debug_assert!(self.storage.len() < needed && needed <= self.capacity);
        debug_assert!(live <= self.storage.len());
        let size = needed
            .next_power_of_two()
            .max(MIN_STORAGE)
            .max(2 * self.storage.len())
            .min(self.capacity);
        if size == MIN_STORAGE && self.storage.is_empty() {
            if let Some(v) = pool.and_then(StoragePool::take) {
                self.storage = v;
                self.head = 0;
                return;
            }
        }
        let mut storage = Vec::with_capacity(size);
        let (a, b) = self.slices(0, live);
        storage.extend_from_slice(a);
        storage.extend_from_slice(b);
        storage.resize(size, 0);
        self.storage = storage;
        self.head = 0;
    }

    /// Frees the storage (into `pool` if given and it fits there); only when no byte is held.
    fn release(&mut self, pool: Option<&mut StoragePool>) {
        let v = core::mem::take(&mut self.storage);
        if let Some(pool) = pool {
            pool.give(v);
        }
        self.head = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// SendBuffer
// ---------------------------------------------------------------------------------------------

/// Bytes written by the application and not yet acknowledged by the peer, as a bounded ring.
///
/// The first byte is at SND.UNA. The connection decides what is sent; this buffer only
/// stores bytes, hands out any range of them by offset from SND.UNA, and drops them once
/// acknowledged ([`SendBuffer::ack`]). Storage is allocated as writes need it and freed by
/// [`SendBuffer::shrink`] (see the module doc).
#[derive(Debug, Clone)]
pub struct SendBuffer {
    /// Offset 0 is the byte at SND.UNA.
    ring: Ring,
    /// Bytes held (unacknowledged, sent or not).
    len: usize,
}

impl SendBuffer {
    /// A buffer holding at most `capacity` bytes (clamped to [`MAX_CAPACITY`]); allocates
    /// nothing until the first write.
    pub fn new(capacity: usize) -> SendBuffer {
        SendBuffer {
            ring: Ring::new(capacity),
            len: 0,
        }
    }

    /// Most bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.ring.capacity
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
        self.ring.capacity.saturating_sub(self.len)
    }

    /// A new capacity (clamped to [`MAX_CAPACITY`]; `SO_SNDBUF`). Bytes held beyond a lower
    /// one stay until acknowledged; no write is taken before they have gone.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.ring.set_capacity(capacity);
    }

    /// Heap bytes this buffer holds: its ring storage, at most `capacity()` (0 until the
    /// first write and after [`SendBuffer::shrink`] or [`SendBuffer::clear`]).
    pub fn allocated(&self) -> usize {
        self.ring.allocated()
    }

    /// Frees the ring storage if no byte is held; does nothing otherwise. For a connection
    /// going idle: the next write allocates again.
    pub fn shrink(&mut self) {
        if self.len == 0 {
            self.ring.release(None);
        }
    }

    /// [`shrink`](Self::shrink), keeping the storage in `pool` if it fits there.
    pub fn shrink_into(&mut self, pool: &mut StoragePool) {
        if self.len == 0 {
            self.ring.release(Some(pool));
        }
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken (0 when full).
    /// Grows the storage if the bytes do not fit in it (see the module doc).
    pub fn write(&mut self, data: &[u8]) -> usize {
        self.write_inner(data, None)
    }

    /// [`write`](Self::write), taking new smallest-size storage from `pool` if it has some.
    pub fn write_pooled(&mut self, data: &[u8], pool: &mut StoragePool) -> usize {
        self.write_inner(data, Some(pool))
    }

    fn write_inner(&mut self, data: &[u8], pool: Option<&mut StoragePool>) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        let needed = self.len + n;
        if needed > self.ring.size() {
            self.ring.grow(needed, self.len, pool);
        }
        self.ring.write(self.len, &data[..n]);
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
        self.ring.slices(offset, n)
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
        if self.len == 0 {
            // Restart at the front: the next writes are contiguous.
            self.ring.rewind();
        } else {
            self.ring.advance(n);
        }
        n
    }

    /// Drops every byte (connection reset or aborted) and frees the storage.
    pub fn clear(&mut self) {
        self.len = 0;
        self.ring.release(None);
    }

    /// [`clear`](Self::clear), keeping the storage in `pool` if it fits there.
    pub fn clear_into(&mut self, pool: &mut StoragePool) {
        self.len = 0;
        self.ring.release(Some(pool));
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
    /// RCV.NXT if any, else the first stretch of it that was already held out of order.
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
/// are at most `max_ranges` of them. Storage is allocated as data arrives and freed by
/// [`RecvBuffer::shrink`] (see the module doc).
#[derive(Debug, Clone)]
pub struct RecvBuffer {
    /// Offset 0 is the first unread in-order byte; offset `len` is RCV.NXT.
    ring: Ring,
    /// In-order bytes not yet read by the application.
    len: usize,
    /// Sequence number of the next in-order data byte expected.
    rcv_nxt: SeqNumber,
    /// Out-of-order ranges, sorted by sequence number (capacity grown up to `max_ranges`).
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
    /// out-of-order data). Allocates nothing until data arrives.
    pub fn with_max_ranges(capacity: usize, rcv_nxt: SeqNumber, max_ranges: usize) -> RecvBuffer {
        RecvBuffer {
            ring: Ring::new(capacity),
            len: 0,
            rcv_nxt,
            ranges: Vec::new(),
            max_ranges,
            clock: 0,
        }
    }

    /// Drops all data and expects `rcv_nxt` next (e.g. IRS + 1 once the SYN is received,
    /// RFC 9293 §3.10.7.2). Frees the storage.
    pub fn reset(&mut self, rcv_nxt: SeqNumber) {
        self.len = 0;
        self.rcv_nxt = rcv_nxt;
        self.ranges = Vec::new();
        self.ring.release(None);
    }

    /// Drops all data (the connection is gone) and keeps the storage in `pool` if it fits
    /// there.
    pub fn clear_into(&mut self, pool: &mut StoragePool) {
        self.len = 0;
        self.ranges = Vec::new();
        self.ring.release(Some(pool));
    }

    /// Most bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Heap bytes this buffer holds: its ring storage (at most `capacity()`) and its list of
    /// out-of-order ranges (at most `max_ranges()` entries of 16 bytes). 0 until data arrives
    /// and after [`RecvBuffer::shrink`] or [`RecvBuffer::reset`].
    pub fn allocated(&self) -> usize {
        self.ring.allocated() + self.ranges.capacity() * core::mem::size_of::<OooRange>()
    }

    /// Frees the ring storage and the range list if no byte is held (nothing to read and
    /// nothing out of order); does nothing otherwise. For a connection going idle: the next
    /// insert allocates again.
    pub fn shrink(&mut self) {
        if self.len == 0 && self.ranges.is_empty() {
            self.ring.release(None);
            self.ranges = Vec::new();
        }
    }

    /// [`shrink`](Self::shrink), keeping the storage in `pool` if it fits there.
    pub fn shrink_into(&mut self, pool: &mut StoragePool) {
        if self.len == 0 && self.ranges.is_empty() {
            self.ring.release(Some(pool));
            self.ranges = Vec::new();
        }
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
        self.ring.capacity.saturating_sub(self.len)
    }

    /// A new capacity (clamped to [`MAX_CAPACITY`]; `SO_RCVBUF`): the window follows it.
    /// Bytes already held, in order or not, stay.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.ring.set_capacity(capacity);
    }

    /// RCV.NXT as far as data is concerned: the next in-order data byte expected.
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv_nxt
    }

    /// Bytes held out of order (above a hole).
    pub fn ooo_bytes(&self) -> usize {
        self.ranges.iter().map(|r| (r.end - r.start) as usize).sum()
    }

    /// Number of out-of-order ranges held (what SACK blocks can report).
    pub fn ooo_range_count(&self) -> usize {
        self.ranges.len()
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
        self.ring.slices(0, max.min(self.len))
    }

    /// Marks `n` in-order bytes (clamped to `len()`) as read; returns how many. The window
    /// opens by as much.
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.len);
        // Ring positions of out-of-order data are relative to `head + len`, which stays put.
        self.ring.advance(n);
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
        self.insert_inner(seq, data, None)
    }

    /// [`insert`](Self::insert), taking new smallest-size storage from `pool` if it has some.
    pub fn insert_pooled(
        &mut self,
        seq: SeqNumber,
        data: &[u8],
        pool: &mut StoragePool,
    ) -> InsertOutcome {
        self.insert_inner(seq, data, Some(pool))
    }

    fn insert_inner(
        &mut self,
        seq: SeqNumber,
        data: &[u8],
        pool: Option<&mut StoragePool>,
    ) -> InsertOutcome {
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
        }
        if held > 0 && out.duplicate.is_none() {
            // RFC 2883 §4: a segment duplicating data already held out of order reports the
            // duplicated stretch (the first one, if it spans several ranges) in a D-SACK
            // block; the merged range that contains it follows as the next block (it is the
            // newest). Only duplicates pay for this search.
            out.duplicate = self.ranges[lo..hi].iter().find_map(|r| {
                let (s, e) = (r.start.max(start), r.end.min(end));
                (s < e).then_some((s, e))
            });
        }

        // Data goes straight to its final place in the ring; in-order and out-of-order bytes
        // share the free space after the readable data. `needed <= capacity()`: the window
        // already bounds `off + keep`.
        let needed = self.len + off + keep;
        if needed > self.ring.size() {
            self.ring.grow(needed, self.len + self.ooo_extent(), pool);
        }
        self.ring.write(self.len + off, data);
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
        } else if lo == hi {
            // A new range; the bound was checked above, so `len() < max_ranges`.
            if self.ranges.len() == self.ranges.capacity() {
                self.grow_ranges();
            }
            self.ranges.insert(lo, merged);
        } else {
            self.ranges[lo] = merged;
            self.ranges.drain(lo + 1..hi);
        }
        out
    }

    /// Copies `data`, the text of a SYN, where the next in-order bytes go without receiving
    /// it: RCV.NXT does not move and nothing becomes readable until
    /// [`commit_staged`](Self::commit_staged). RFC 9293 §3.10.7.3 (a SYN in SYN-SENT, the
    /// simultaneous open): "If there are other controls or text in the segment, queue them for
    /// processing after the ESTABLISHED state has been reached". Keeps what fits in the
    /// window and returns its length; stages nothing (0) while bytes are readable or held out
    /// of order, which a connection still in its handshake never has.
    pub fn stage_pooled(&mut self, data: &[u8], pool: &mut StoragePool) -> usize {
        if self.len != 0 || !self.ranges.is_empty() {
            return 0;
        }
        let keep = data.len().min(self.window());
        if keep > self.ring.size() {
            self.ring.grow(keep, 0, Some(pool));
        }
        self.ring.write(0, &data[..keep]);
        keep
    }

    /// Receives the `n` bytes [`stage_pooled`](Self::stage_pooled) copied: RCV.NXT moves past
    /// them and they become readable. Returns how many (0 if anything arrived in between,
    /// which would have overwritten them).
    pub fn commit_staged(&mut self, n: usize) -> usize {
        if self.len != 0 || !self.ranges.is_empty() || n > self.ring.size() {
            return 0;
        }
        self.rcv_nxt += n;
        self.len = n;
        n
    }

    /// Bytes from RCV.NXT to the end of the last out-of-order range (0 without any).
    fn ooo_extent(&self) -> usize {
        self.ranges
            .last()
            .map_or(0, |r| (r.end - self.rcv_nxt) as usize)
    }

    /// Makes room for one more range: doubles the list (at least [`MIN_RANGES`]), never past
    /// `max_ranges`. Called only when `ranges.len() < max_ranges`.
    #[cold]
    #[inline(never)]
    fn grow_ranges(&mut self) {
        let len = self.ranges.len();
        debug_assert!(len < self.max_ranges);
        let target = (2 * len).max(MIN_RANGES).min(self.max_ranges);
        self.ranges.reserve_exact(target - len);
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
    fn staged_syn_text_is_received_only_when_committed() {
        let mut pool = StoragePool::new(0);
        let mut r = RecvBuffer::new(8, SeqNumber(100));
        // Only what fits in the window is kept.
        assert_eq!(r.stage_pooled(b"abcdefghij", &mut pool), 8);
        assert_eq!((r.rcv_nxt(), r.len()), (SeqNumber(100), 0));
        assert_eq!(r.commit_staged(8), 8);
        assert_eq!((r.rcv_nxt(), r.len()), (SeqNumber(108), 8));
        let mut out = [0u8; 8];
        assert_eq!(r.read(&mut out), 8);
        assert_eq!(&out, b"abcdefgh");
        // Nothing is staged over readable bytes, and a commit after data arrived receives
        // nothing.
        let mut r = RecvBuffer::new(8, SeqNumber(0));
        r.insert(SeqNumber(0), b"x");
        assert_eq!(r.stage_pooled(b"yz", &mut pool), 0);
        assert_eq!(r.commit_staged(2), 0);
        assert_eq!(r.len(), 1);
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

    /// RFC 2883 §4: a segment that partly duplicates out-of-order data reports the
    /// duplicated stretch, the first one when it covers several ranges, in order or not.
    #[test]
    fn recv_partial_duplicate_reports_first_overlap() {
        let mut r = RecvBuffer::new(1000, SeqNumber(0));
        r.insert(SeqNumber(0), &[0; 100]);
        r.insert(SeqNumber(200), &[0; 100]);
        r.insert(SeqNumber(400), &[0; 100]);
        let o = r.insert(SeqNumber(250), &[0; 225]);
        assert_eq!(o.status, InsertStatus::OutOfOrder);
        assert_eq!(o.duplicate, Some((SeqNumber(250), SeqNumber(300))));
        let o = r.insert(SeqNumber(100), &[0; 500]);
        assert_eq!(o.status, InsertStatus::InOrder);
        assert_eq!(o.duplicate, Some((SeqNumber(200), SeqNumber(500))));
        // Adjacent, not overlapping: no duplicate.
        let o = r.insert(SeqNumber(700), &[0; 10]);
        let o2 = r.insert(SeqNumber(710), &[0; 10]);
        assert_eq!((o.duplicate, o2.duplicate), (None, None));
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

    // ---- Memory ----------------------------------------------------------------------------

    #[test]
    fn new_buffers_allocate_nothing() {
        let mut s = SendBuffer::new(64 * 1024);
        assert_eq!((s.allocated(), s.free()), (0, 64 * 1024));
        s.clear();
        assert_eq!(s.allocated(), 0);
        assert_eq!(s.write(&[7; 1000]), 1000);
        assert_eq!(s.allocated(), 1024);
        s.clear();
        assert_eq!((s.allocated(), s.free()), (0, 64 * 1024));

        let mut r = RecvBuffer::new(64 * 1024, SeqNumber(1));
        assert_eq!((r.allocated(), r.window()), (0, 64 * 1024));
        r.reset(SeqNumber(9));
        assert_eq!(r.allocated(), 0);
        r.insert(SeqNumber(9), &[1; 100]);
        r.insert(SeqNumber(500), &[1; 100]);
        // 100 + 491 + 100 bytes of ring → 1024; 4 ranges of 16 bytes.
        assert_eq!(r.allocated(), 1024 + 4 * 16);
        r.reset(SeqNumber(0));
        assert_eq!((r.allocated(), r.window()), (0, 64 * 1024));
        assert_eq!(
            RecvBuffer::with_max_ranges(1 << 20, SeqNumber(0), 1000).allocated(),
            0
        );
    }

    #[test]
    fn growth_doubles_and_preserves_bytes() {
        const CAP: usize = 4096;
        let mut b = SendBuffer::new(CAP);
        let mut model = std::collections::VecDeque::new();
        let (mut next, mut sizes, mut wrapped_growths) = (0u32, Vec::new(), 0);
        for round in 1..200 {
            // Write more each round, acknowledge a bit less: the held bytes creep up, and the
            // ring wraps before it has to grow.
            let data = stream(next, round * 7);
            let wrapped = b.ring.head + b.len() > b.ring.size();
            let before = b.allocated();
            let n = b.write(&data);
            model.extend(&data[..n]);
            next += n as u32;
            if b.allocated() != before {
                sizes.push(b.allocated());
                wrapped_growths += usize::from(wrapped);
                assert!(b.allocated().is_power_of_two() && b.allocated() <= CAP);
                assert_eq!(b.ring.head, 0, "laid out linearly again");
            }
            let (x, y) = b.peek(0, usize::MAX);
            assert!([x, y].concat().iter().eq(model.iter()), "round {round}");
            model.drain(..b.ack(round * 6));
        }
        assert_eq!(sizes, [256, 512, 1024, 2048, 4096]);
        assert!(wrapped_growths > 0, "some growth moved wrapped bytes");

        // A capacity that is not a power of two is the last size.
        let mut b = SendBuffer::new(1000);
        assert_eq!(b.write(&[1]), 1);
        assert_eq!(b.allocated(), 256);
        assert_eq!(b.write(&[2; 600]), 600);
        assert_eq!(b.allocated(), 1000);
        assert_eq!(SendBuffer::new(10).write(&[3; 4]), 4);
    }

    #[test]
    fn recv_growth_keeps_wrapped_out_of_order_data() {
        let mut r = RecvBuffer::new(4096, SeqNumber(0));
        r.insert(SeqNumber(0), &stream(0, 200));
        assert_eq!(r.allocated(), 256);
        assert_eq!(r.read(&mut [0; 150]), 150);
        // Out of order, wrapping around the end of the 256-byte storage.
        r.insert(SeqNumber(250), &stream(250, 100));
        assert_eq!(r.allocated(), 256 + 4 * 16);
        // Far out of order: 50 unread + 1000 + 10 bytes → 2048 bytes of storage.
        r.insert(SeqNumber(1200), &stream(1200, 10));
        assert_eq!(r.allocated(), 2048 + 4 * 16);
        r.insert(SeqNumber(200), &stream(200, 1000));
        assert_eq!(r.rcv_nxt(), SeqNumber(1210));
        let mut out = std::vec![0u8; 2000];
        assert_eq!(r.read(&mut out), 1060);
        assert_eq!(&out[..1060], &stream(150, 1060)[..]);
    }

    #[test]
    fn storage_pool_reuses_smallest_storage_within_its_bound() {
        let mut pool = StoragePool::new(1);
        let mut a = SendBuffer::new(4096);
        assert_eq!(a.write_pooled(b"hello", &mut pool), 5);
        assert_eq!(a.allocated(), MIN_STORAGE);
        a.ack(5);
        a.shrink_into(&mut pool);
        assert_eq!((a.allocated(), pool.len()), (0, 1));
        // The next buffer takes it; its bytes are its own.
        let mut r = RecvBuffer::new(4096, SeqNumber(100));
        let out = r.insert_pooled(SeqNumber(100), b"abc", &mut pool);
        assert_eq!(out.status, InsertStatus::InOrder);
        assert_eq!((r.allocated(), pool.len()), (MIN_STORAGE, 0));
        let mut got = [0u8; 8];
        assert_eq!(r.read(&mut got), 3);
        assert_eq!(&got[..3], b"abc");
        // The bound: a second storage is dropped, not kept.
        let mut b = SendBuffer::new(4096);
        b.write(b"x");
        r.clear_into(&mut pool);
        b.clear_into(&mut pool);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.allocated(), MIN_STORAGE);
        // Grown storage is not pooled.
        let mut c = SendBuffer::new(4096);
        c.write(&[7u8; 1000]);
        let mut empty = StoragePool::new(4);
        c.clear_into(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn shrink_frees_only_when_empty() {
        let mut s = SendBuffer::new(8192);
        s.shrink();
        assert_eq!(s.allocated(), 0);
        s.write(b"hello");
        s.shrink();
        assert_eq!(s.allocated(), 256, "bytes held: no-op");
        assert_eq!(s.read_at(0, &mut [0; 8]), 5);
        s.ack(5);
        s.shrink();
        assert_eq!((s.allocated(), s.free()), (0, 8192));
        assert_eq!(s.write(b"again"), 5);
        assert_eq!(s.peek(0, 9).0, b"again");

        let mut r = RecvBuffer::new(8192, SeqNumber(0));
        r.insert(SeqNumber(0), b"ab");
        r.insert(SeqNumber(5), b"f");
        let held = r.allocated();
        r.shrink();
        assert_eq!(r.allocated(), held, "in-order bytes held: no-op");
        r.consume(2);
        r.shrink();
        assert_eq!(r.allocated(), held, "out-of-order bytes held: no-op");
        r.insert(SeqNumber(2), b"cde");
        let mut out = [0u8; 8];
        assert_eq!(r.read(&mut out), 4);
        assert_eq!(&out[..4], b"cdef");
        r.shrink();
        assert_eq!((r.allocated(), r.window()), (0, 8192));
        assert_eq!(r.insert(SeqNumber(6), b"g").in_order, 1);
        assert_eq!(r.peek(9).0, b"g");
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Segment at stream offset `off` (absolute, from the first expected byte), `len` bytes.
        Seg(u32, usize),
        /// Application reads up to n bytes.
        Read(usize),
        /// Segment `off` bytes after the current RCV.NXT, `len` bytes.
        Near(u32, usize),
        /// Fill the ring storage in order (which wraps it once reads moved the head), then a
        /// `Near` segment of `extra` bytes: the storage grows while wrapped.
        Fill(u32, usize),
        /// A segment at an arbitrary sequence number.
        Wild(u32, usize),
        /// The connection goes idle: [`RecvBuffer::shrink`].
        Shrink,
    }

    /// Up to `max` bytes, often few: storage grows in several steps and wraps in between.
    fn amount(max: usize) -> impl Strategy<Value = usize> {
        prop_oneof![7 => 0..max.min(48), 1 => 0..max]
    }

    /// Operations scaled to the capacity: segments up to 3 × `cap` beyond the first byte or
    /// just after RCV.NXT, up to 2/3 × `cap` long; reads up to `cap`.
    fn op(cap: usize) -> impl Strategy<Value = Op> {
        let off = 3 * cap as u32 + 12;
        prop_oneof![
            4 => (0..off, amount(2 * cap / 3 + 2)).prop_map(|(o, l)| Op::Seg(o, l)),
            4 => (prop_oneof![Just(0), 0..64u32], amount(2 * cap / 3 + 2))
                .prop_map(|(o, l)| Op::Near(o, l)),
            2 => (prop_oneof![Just(0), 0..16u32], 1usize..4).prop_map(|(o, x)| Op::Fill(o, x)),
            2 => amount(cap + 2).prop_map(Op::Read),
            1 => (any::<u32>(), 0usize..3000).prop_map(|(s, l)| Op::Wild(s, l)),
            1 => Just(Op::Shrink),
        ]
    }

    /// Small capacities (storage allocated at once: the capacity is below [`MIN_STORAGE`]) and
    /// larger ones (storage grows, often while the ring wraps).
    fn capacity() -> impl Strategy<Value = usize> {
        prop_oneof![1usize..96, 200usize..1100]
    }

    /// The ring storage obeys the growth rule and covers the `live` bytes held.
    fn check_ring(ring: &Ring, live: usize) -> Result<(), TestCaseError> {
        let size = ring.size();
        prop_assert!(size <= ring.capacity);
        prop_assert!(
            size == 0 || size == ring.capacity || (size.is_power_of_two() && size >= MIN_STORAGE),
            "storage size {} for capacity {}",
            size,
            ring.capacity
        );
        prop_assert!(live <= size);
        prop_assert!(size == 0 || ring.head < size);
        prop_assert_eq!(ring.allocated(), size);
        Ok(())
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
            max_ranges in 0usize..6,
            (cap, ops) in capacity()
                .prop_flat_map(|cap| (Just(cap), proptest::collection::vec(op(cap), 1..100))),
        ) {
            let b0 = SeqNumber(base);
            let mut r = RecvBuffer::with_max_ranges(cap, b0, max_ranges);
            prop_assert_eq!(r.allocated(), 0);
            let mut model: BTreeMap<u32, u8> = BTreeMap::new(); // absolute offset -> byte
            let mut read_pos = 0u32; // bytes read by the application
            let mut nxt = 0u32; // model RCV.NXT (absolute)
            let mut ops = ops.into_iter();
            let mut then = None; // the second half of a `Fill`
            while let Some(op) = then.take().or_else(|| ops.next()) {
                let op = match op {
                    Op::Fill(off, extra) => {
                        then = Some(Op::Near(off, extra));
                        Op::Near(0, r.ring.size() - r.len())
                    }
                    op => op,
                };
                match op {
                    Op::Fill(..) => unreachable!(),
                    Op::Seg(off, len) | Op::Near(off, len) | Op::Wild(off, len) => {
                        let seq = match op {
                            Op::Wild(..) => SeqNumber(off),
                            Op::Near(..) => b0 + nxt + off,
                            _ => b0 + off,
                        };
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
                    Op::Shrink => {
                        let before = r.allocated();
                        r.shrink();
                        let idle = nxt == read_pos && model_runs(&model, nxt).is_empty();
                        prop_assert_eq!(r.allocated(), if idle { 0 } else { before });
                    }
                }
                // Invariants after every step.
                prop_assert_eq!(r.rcv_nxt(), b0 + nxt);
                prop_assert_eq!(r.len(), (nxt - read_pos) as usize);
                prop_assert_eq!(r.window(), cap - r.len());
                prop_assert_eq!(r.capacity(), cap);
                check_ring(&r.ring, r.len() + r.ooo_extent())?;
                prop_assert!(r.ranges.capacity() <= max_ranges, "range list beyond its bound");
                prop_assert_eq!(
                    r.allocated(),
                    r.ring.size() + r.ranges.capacity() * core::mem::size_of::<OooRange>()
                );
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
                for &(s, e) in &runs {
                    let (x, y) = r.ring.slices(r.len() + (s - r.rcv_nxt()) as usize, (e - s) as usize);
                    prop_assert_eq!([x, y].concat(), stream(s - b0, (e - s) as usize));
                }
            }
        }

        /// The send buffer against a `VecDeque` model.
        #[test]
        fn send_matches_model(
            (cap, ops) in prop_oneof![0usize..64, 200usize..1100].prop_flat_map(|cap| {
                let n = cap + cap / 4 + 16;
                (Just(cap), proptest::collection::vec((0u8..6, amount(n), 0..n), 1..100))
            }),
        ) {
            let mut b = SendBuffer::new(cap);
            prop_assert_eq!(b.allocated(), 0);
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u32;
            for (kind, a, c) in ops {
                match kind {
                    0 | 5 => {
                        // Kind 5 fills the ring storage (which wraps it once a partial ack
                        // moved the head), then writes 1 to 3 bytes more: the storage grows
                        // while wrapped.
                        let sizes = if kind == 5 {
                            [b.ring.size() - b.len(), 1 + a % 3]
                        } else {
                            [a, 0]
                        };
                        for a in sizes {
                            let data = stream(next, a);
                            let n = b.write(&data);
                            prop_assert_eq!(n, a.min(cap - model.len()));
                            model.extend(&data[..n]);
                            next += n as u32;
                        }
                    }
                    1 | 4 => {
                        // Kind 4 acknowledges part of the bytes: the ring head moves on and
                        // later writes wrap.
                        let a = if kind == 4 { a % (model.len() + 1) } else { a };
                        let n = b.ack(a);
                        prop_assert_eq!(n, a.min(model.len()));
                        model.drain(..n);
                    }
                    2 => {
                        let mut out = std::vec![0u8; c];
                        let n = b.read_at(a, &mut out);
                        let want: Vec<u8> = model.iter().skip(a).take(c).copied().collect();
                        prop_assert_eq!(&out[..n], &want[..]);
                    }
                    _ => {
                        let before = b.allocated();
                        b.shrink();
                        prop_assert_eq!(b.allocated(), if model.is_empty() { 0 } else { before });
                    }
                }
                prop_assert_eq!(b.len(), model.len());
                prop_assert_eq!(b.free(), cap - model.len());
                prop_assert_eq!(b.capacity(), cap);
                check_ring(&b.ring, b.len())?;
                let (x, y) = b.peek(0, usize::MAX);
                prop_assert!([x, y].concat().iter().eq(model.iter()));
            }
        }
    }
}
