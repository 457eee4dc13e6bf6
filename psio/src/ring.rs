//! A view of one netmap ring (`struct netmap_ring` from `netmap_sys`) and its buffers.
//!
//! The shared-memory backend lays out its rings exactly like the netmap kernel module does, so
//! this one type serves both: `shm` builds the rings itself, `netmap` finds them in the memory
//! it maps from `/dev/netmap`.
//!
//! ```text
//!  netmap_ring (256 bytes header)         buffer pool (nr_buf_size each)
//!  ┌──────────────────────────────┐      ┌────────┬────────┬────────┬───
//!  │ buf_ofs num_slots nr_buf_size│─────►│ buf 0  │ buf 1  │ buf 2  │ ...
//!  │ head cur tail flags ts ...   │      └────────┴────────┴────────┴───
//!  ├──────────────────────────────┤          ▲ ring + buf_ofs + idx * nr_buf_size
//!  │ slot[0] {buf_idx,len,flags}  │──────────┘
//!  │ slot[1] ...                  │
//!  └──────────────────────────────┘
//! ```
//!
//! Only the ring's owner reads and writes `head`, `cur` and `tail` (for netmap, the kernel
//! writes `tail` inside the sync ioctl). Slot contents are validated on every access, because
//! the memory is shared with another process or the kernel: a bad `buf_idx` or `len` yields an
//! empty frame, never an out-of-bounds access.

use netmap_sys::netmap::{netmap_ring, netmap_slot};
use std::ptr::{addr_of, addr_of_mut, NonNull};

/// Offset of the first slot in a ring: netmap's header is 256 bytes.
pub const RING_HEADER_BYTES: usize = std::mem::size_of::<netmap_ring>();
/// Bytes per slot.
pub const SLOT_BYTES: usize = std::mem::size_of::<netmap_slot>();

const _: () = assert!(RING_HEADER_BYTES == 256);
const _: () = assert!(SLOT_BYTES == 16);

/// A validated view of a netmap ring inside a memory region.
///
/// The region (`mem`, `mem_len`) is the whole mapping that holds the ring and its buffers;
/// every buffer address is checked against it.
#[derive(Debug)]
pub struct NmRing {
    ring: NonNull<netmap_ring>,
    num_slots: u32,
    buf_size: u32,
    bufs: *mut u8,
    /// Number of buffers reachable from `bufs` inside the region.
    nbufs: u32,
}

// SAFETY: an `NmRing` is only a set of pointers into a mapping whose lifetime its owner
// guarantees (it keeps an `Arc` of the mapping next to the ring); the ring is used by one
// thread at a time (`&mut self` for every mutation), and cross-thread handoff of slots goes
// through the backends' atomics.
unsafe impl Send for NmRing {}

impl NmRing {
    /// Builds a view of the ring at `ring`.
    ///
    /// # Safety
    /// `ring` must point to an initialised `netmap_ring` followed by `num_slots` slots, all
    /// inside the region `[mem, mem + mem_len)`, which must stay mapped as long as the view
    /// lives.
    pub unsafe fn new(ring: NonNull<netmap_ring>, mem: *mut u8, mem_len: usize) -> Option<NmRing> {
        let r = ring.as_ptr();
        // SAFETY: the caller guarantees `ring` points to an initialised header.
        let (buf_ofs, num_slots, buf_size) = unsafe {
            (
                std::ptr::read_volatile(addr_of!((*r).buf_ofs)),
                std::ptr::read_volatile(addr_of!((*r).num_slots)),
                std::ptr::read_volatile(addr_of!((*r).nr_buf_size)),
            )
        };
        if num_slots == 0 || buf_size == 0 {
            return None;
        }
        let ring_off = (r as usize).checked_sub(mem as usize)?;
        let slots_end = ring_off
            .checked_add(RING_HEADER_BYTES)?
            .checked_add(num_slots as usize * SLOT_BYTES)?;
        if slots_end > mem_len {
            return None;
        }
        let bufs_off = (ring_off as i64).checked_add(buf_ofs)?;
        if bufs_off < 0 || bufs_off as usize > mem_len {
            return None;
        }
        let nbufs = ((mem_len - bufs_off as usize) / buf_size as usize).min(u32::MAX as usize);
        Some(NmRing {
            ring,
            num_slots,
            buf_size,
            // SAFETY: `bufs_off <= mem_len` was checked just above.
            bufs: unsafe { mem.add(bufs_off as usize) },
            nbufs: nbufs as u32,
        })
    }

    /// Slots in the ring.
    #[inline]
    pub fn num_slots(&self) -> u32 {
        self.num_slots
    }

    /// Bytes per buffer.
    #[inline]
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Raw pointer to the ring header (for the netmap ioctls' benefit).
    pub fn as_ptr(&self) -> *mut netmap_ring {
        self.ring.as_ptr()
    }

    /// The slot after `i`.
    #[inline]
    pub fn next(&self, i: u32) -> u32 {
        if i + 1 == self.num_slots {
            0
        } else {
            i + 1
        }
    }

    /// Slot `i + n` (mod ring size); `i < num_slots`, `n <= num_slots`.
    #[inline]
    pub fn add(&self, i: u32, n: u32) -> u32 {
        let s = i + n;
        if s >= self.num_slots {
            s - self.num_slots
        } else {
            s
        }
    }

    /// Slots from `from` to `to` going forward (mod ring size).
    #[inline]
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            to + self.num_slots - from
        }
    }

    /// Clamps an index read from shared memory into the ring.
    #[inline]
    pub fn clamp(&self, i: u32) -> u32 {
        if i < self.num_slots {
            i
        } else {
            i % self.num_slots
        }
    }

    /// `head`: first slot owned by the user.
    #[inline]
    pub fn head(&self) -> u32 {
        // SAFETY: the header is valid while the view lives (see `new`).
        self.clamp(unsafe { std::ptr::read_volatile(addr_of!((*self.ring.as_ptr()).head)) })
    }

    /// `cur`: the user's wake-up point.
    #[inline]
    pub fn cur(&self) -> u32 {
        // SAFETY: as in `head`.
        self.clamp(unsafe { std::ptr::read_volatile(addr_of!((*self.ring.as_ptr()).cur)) })
    }

    /// `tail`: first slot not owned by the user.
    #[inline]
    pub fn tail(&self) -> u32 {
        // SAFETY: as in `head`.
        self.clamp(unsafe { std::ptr::read_volatile(addr_of!((*self.ring.as_ptr()).tail)) })
    }

    /// Sets `head` and `cur` together (psio never separates them).
    #[inline]
    pub fn set_head_cur(&mut self, i: u32) {
        debug_assert!(i < self.num_slots);
        // SAFETY: the header is valid while the view lives; only the owner writes these.
        unsafe {
            std::ptr::write_volatile(addr_of_mut!((*self.ring.as_ptr()).head), i);
            std::ptr::write_volatile(addr_of_mut!((*self.ring.as_ptr()).cur), i);
        }
    }

    /// Sets `tail` (the "kernel" side of a ring: shm's sync code).
    #[inline]
    pub fn set_tail(&mut self, i: u32) {
        debug_assert!(i < self.num_slots);
        // SAFETY: as in `set_head_cur`.
        unsafe { std::ptr::write_volatile(addr_of_mut!((*self.ring.as_ptr()).tail), i) }
    }

    /// Slots the user owns: `tail - head` (mod ring size).
    #[inline]
    pub fn space(&self) -> u32 {
        self.distance(self.head(), self.tail())
    }

    #[inline]
    fn slot_ptr(&self, i: u32) -> *mut netmap_slot {
        debug_assert!(i < self.num_slots);
        // SAFETY: `i < num_slots` and the slots follow the header inside the region.
        unsafe {
            (self.ring.as_ptr() as *mut u8)
                .add(RING_HEADER_BYTES + i as usize * SLOT_BYTES)
                .cast::<netmap_slot>()
        }
    }

    /// Copy of slot `i`.
    #[inline]
    pub fn slot(&self, i: u32) -> netmap_slot {
        // SAFETY: `slot_ptr` is in bounds; slots are plain data.
        unsafe { std::ptr::read_volatile(self.slot_ptr(i)) }
    }

    /// Overwrites slot `i`.
    #[inline]
    pub fn set_slot(&mut self, i: u32, s: netmap_slot) {
        // SAFETY: `slot_ptr` is in bounds; the caller owns slot `i` by the ring protocol.
        unsafe { std::ptr::write_volatile(self.slot_ptr(i), s) }
    }

    /// Sets the length of slot `i`.
    #[inline]
    pub fn set_len(&mut self, i: u32, len: u16) {
        let p = self.slot_ptr(i);
        // SAFETY: in bounds; the caller owns slot `i`.
        unsafe { std::ptr::write_volatile(addr_of_mut!((*p).len), len) }
    }

    #[inline]
    fn buf_ptr(&self, buf_idx: u32) -> Option<*mut u8> {
        if buf_idx < self.nbufs {
            // SAFETY: `buf_idx < nbufs`, so the whole buffer lies inside the region.
            Some(unsafe { self.bufs.add(buf_idx as usize * self.buf_size as usize) })
        } else {
            None
        }
    }

    /// The frame in slot `i`: its buffer cut to the slot's length. A corrupt slot (buffer
    /// index outside the pool) reads as an empty frame.
    #[inline]
    pub fn frame(&self, i: u32) -> &[u8] {
        let s = self.slot(i);
        match self.buf_ptr(s.buf_idx) {
            // SAFETY: the buffer lies inside the mapping, `len` is clamped to its size, and
            // the ring protocol gives the owner of slot `i` exclusive use of its buffer.
            Some(p) => unsafe {
                std::slice::from_raw_parts(p, (s.len as usize).min(self.buf_size as usize))
            },
            None => &[],
        }
    }

    /// The whole buffer of slot `i`, writable. A corrupt slot yields an empty buffer.
    #[inline]
    pub fn buf_mut(&mut self, i: u32) -> &mut [u8] {
        let s = self.slot(i);
        match self.buf_ptr(s.buf_idx) {
            // SAFETY: as in `frame`, and `&mut self` makes this the only borrow we hand out.
            Some(p) => unsafe { std::slice::from_raw_parts_mut(p, self.buf_size as usize) },
            None => &mut [],
        }
    }
}

/// Initialises a ring header and its slots in place (used by the shm backend, and by tests).
///
/// # Safety
/// `ring` must point to writable memory of `RING_HEADER_BYTES + num_slots * SLOT_BYTES`
/// bytes that nobody else accesses during the call.
pub unsafe fn init_ring(
    ring: *mut netmap_ring,
    ringid: u16,
    tx: bool,
    num_slots: u32,
    buf_size: u32,
    buf_ofs: i64,
    first_buf: u32,
) {
    // SAFETY: the caller guarantees exclusive, writable, large-enough memory.
    unsafe {
        std::ptr::write_bytes(ring as *mut u8, 0, RING_HEADER_BYTES);
        addr_of_mut!((*ring).buf_ofs).write(buf_ofs);
        addr_of_mut!((*ring).num_slots).write(num_slots);
        addr_of_mut!((*ring).nr_buf_size).write(buf_size);
        addr_of_mut!((*ring).ringid).write(ringid);
        // netmap: NR_TX = 0, NR_RX = 1.
        addr_of_mut!((*ring).dir).write(if tx { 0 } else { 1 });
        addr_of_mut!((*ring).head).write(0);
        addr_of_mut!((*ring).cur).write(0);
        // A TX ring starts with every slot but one free; an RX ring starts empty.
        addr_of_mut!((*ring).tail).write(if tx { num_slots - 1 } else { 0 });
        let slots = (ring as *mut u8)
            .add(RING_HEADER_BYTES)
            .cast::<netmap_slot>();
        for i in 0..num_slots {
            slots.add(i as usize).write(netmap_slot {
                buf_idx: first_buf + i,
                len: 0,
                flags: 0,
                ptr: 0,
            });
        }
    }
}
