//! `shm` backend: two endpoints linked by netmap-format rings in shared memory.
//!
//! No root, no NIC: the default for demos, tests and in-memory benchmarks. A link has two
//! sides; each side has `q` queue pairs; side A's TX ring `i` feeds side B's RX ring `i` and
//! the other way round.
//!
//! ## Layout of one link (a memfd, or a file under `/dev/shm` for links opened by name)
//! ```text
//!  0      Header: magic, version, queues, slots, buf size, offsets, attached sides, pids
//!  4096   Chan[q][dir]: prod | cons | cons_wait | prod_wait   (one cache line each)
//!  ....   Rings[side][q][tx, rx]: netmap_ring header + slots  (netmap_sys layout)
//!  ....   Buffers: (2 sides × q × 2 rings × slots) buffers of `buf` bytes, page aligned
//! ```
//!
//! ## Moving frames (zero copy: buffers are swapped, never copied)
//! The producer's `txsync` is the "kernel" of both rings of a direction. For every pushed TX
//! slot, while the consumer's RX ring has a free slot, it swaps the two slots' buffer indices:
//! the frame's buffer moves into the consumer's RX ring, and an empty buffer comes back into
//! the TX ring, which is therefore free again at once. `Chan::prod` publishes how far the
//! consumer's RX ring is filled (release); `Chan::cons` publishes how far the consumer has
//! given slots back (release). Each index has exactly one writer.
//!
//! ## Sleeping without spinning
//! A side about to sleep sets `cons_wait` (wants frames) or `prod_wait` (wants room), issues a
//! full fence, re-checks, and polls its doorbell. The other side, after publishing its index,
//! issues a full fence and rings the doorbell only if the flag is set — so a busy link makes
//! no system calls at all. Doorbells are eventfds for in-process pairs and named FIFOs for
//! links opened by name from several processes.
//!
//! Both sides of a link trust each other like threads of one program; still, every slot read
//! from shared memory is bounds-checked before use, so a misbehaving peer can garble frames
//! but not make this side access memory outside the mapping.

use crate::bell::{syscall, Bell};
use crate::error::{Error, Result};
use crate::ring::{init_ring, NmRing, RING_HEADER_BYTES, SLOT_BYTES};
use crate::{Port, PortConfig, QueueIo, WaitSpec};
use memmap2::{MmapOptions, MmapRaw};
use netmap_sys::netmap::{netmap_ring, netmap_slot, NS_BUF_CHANGED};
use std::fs::{File, OpenOptions};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: u64 = u64::from_le_bytes(*b"PSIOSHM1");
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4096;
const PAGE: usize = 4096;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: u32,
    queues: u32,
    slots: u32,
    buf_size: u32,
    total_len: u64,
    /// Bit `s` set while side `s` is attached.
    attached: AtomicU32,
    /// Process id of each side's owner, to take over a side whose process died.
    pids: [AtomicU32; 2],
}

/// One index on its own cache line, so producer and consumer never share a line they write.
#[repr(C, align(64))]
struct Line(AtomicU32);

/// Shared state of one direction of one queue.
#[repr(C)]
struct Chan {
    /// Next slot of the consumer's RX ring the producer will fill (its `tail`). Producer writes.
    prod: Line,
    /// The consumer's RX `head`: slots before it are free for the producer. Consumer writes.
    cons: Line,
    /// Set by a consumer about to sleep until `prod` moves.
    cons_wait: Line,
    /// Set by a producer about to sleep until `cons` moves.
    prod_wait: Line,
}

const CHAN_BYTES: usize = std::mem::size_of::<Chan>();
const _: () = assert!(CHAN_BYTES == 256);

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Offsets of everything in a link of the given shape.
#[derive(Debug, Clone, Copy)]
struct Layout {
    queues: usize,
    slots: usize,
    buf_size: usize,
    chans: usize,
    rings: usize,
    ring_stride: usize,
    bufs: usize,
    total: usize,
}

impl Layout {
    fn new(queues: usize, slots: usize, buf_size: usize) -> Layout {
        let chans = HEADER_BYTES;
        let rings = round_up(chans + queues * 2 * CHAN_BYTES, PAGE);
        let ring_stride = round_up(RING_HEADER_BYTES + slots * SLOT_BYTES, 64);
        let nrings = 2 * queues * 2;
        let bufs = round_up(rings + nrings * ring_stride, PAGE);
        let total = bufs + nrings * slots * buf_size;
        Layout {
            queues,
            slots,
            buf_size,
            chans,
            rings,
            ring_stride,
            bufs,
            total,
        }
    }

    /// Index of the ring of `side`, queue `q`, TX or RX; ring `r` owns buffers
    /// `r*slots .. (r+1)*slots` initially.
    fn ring_index(&self, side: usize, q: usize, tx: bool) -> usize {
        (side * self.queues + q) * 2 + usize::from(!tx)
    }

    fn ring_offset(&self, side: usize, q: usize, tx: bool) -> usize {
        self.rings + self.ring_index(side, q, tx) * self.ring_stride
    }

    /// Channel carrying frames from `from_side` on queue `q`.
    fn chan_offset(&self, q: usize, from_side: usize) -> usize {
        self.chans + (q * 2 + from_side) * CHAN_BYTES
    }
}

/// Files of a link opened by name (removed when the last side detaches).
#[derive(Debug)]
struct Files {
    mem: PathBuf,
    bells: [PathBuf; 2],
}

/// One side's handle on a link; shared by that side's queues.
struct Link {
    map: MmapRaw,
    layout: Layout,
    side: usize,
    /// Doorbells of side 0 and side 1.
    bells: [Bell; 2],
    files: Option<Files>,
}

impl Link {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_BYTES long, page aligned, and the header is
        // made of plain integers and atomics, valid for any bit pattern.
        unsafe { &*(self.map.as_mut_ptr() as *const Header) }
    }

    fn chan(&self, q: usize, from_side: usize) -> NonNull<Chan> {
        // SAFETY: `chan_offset` lies inside the mapping (Layout::total covers it).
        let p = unsafe { self.map.as_mut_ptr().add(self.layout.chan_offset(q, from_side)) };
        NonNull::new(p.cast()).expect("mapping is non-null")
    }

    fn ring(&self, side: usize, q: usize, tx: bool) -> Result<NmRing> {
        // SAFETY: `ring_offset` lies inside the mapping.
        let p = unsafe { self.map.as_mut_ptr().add(self.layout.ring_offset(side, q, tx)) };
        let ring = NonNull::new(p.cast::<netmap_ring>()).expect("mapping is non-null");
        // SAFETY: the ring header and slots were initialised by the creator and stay mapped as
        // long as this Link (every queue holds an Arc of it).
        unsafe { NmRing::new(ring, self.map.as_mut_ptr(), self.map.len()) }.ok_or_else(|| {
            Error::ShmIncompatible {
                name: self.name(),
                reason: "ring header points outside the mapping".into(),
            }
        })
    }

    fn name(&self) -> String {
        match &self.files {
            Some(f) => f.mem.display().to_string(),
            None => "(anonymous pair)".into(),
        }
    }

    /// Initialises a freshly created, zeroed mapping (creator only, before publishing).
    fn init(map: &MmapRaw, layout: &Layout) {
        let base = map.as_mut_ptr();
        for side in 0..2 {
            for q in 0..layout.queues {
                for tx in [true, false] {
                    let off = layout.ring_offset(side, q, tx);
                    let first = (layout.ring_index(side, q, tx) * layout.slots) as u32;
                    // SAFETY: `off .. off + ring_stride` is inside the fresh mapping, which no
                    // one else can see yet (magic is not published).
                    unsafe {
                        init_ring(
                            base.add(off).cast(),
                            q as u16,
                            tx,
                            layout.slots as u32,
                            layout.buf_size as u32,
                            layout.bufs as i64 - off as i64,
                            first,
                        )
                    };
                }
            }
        }
        // SAFETY: the header lies at the start of the mapping; nobody else sees it yet.
        let h = unsafe { &mut *(base as *mut Header) };
        h.version = VERSION;
        h.queues = layout.queues as u32;
        h.slots = layout.slots as u32;
        h.buf_size = layout.buf_size as u32;
        h.total_len = layout.total as u64;
    }

    fn queues(self: Arc<Self>) -> Result<Vec<Box<dyn QueueIo>>> {
        let me = self.side;
        let peer = 1 - me;
        (0..self.layout.queues)
            .map(|q| {
                Ok(Box::new(ShmQueue {
                    tx: self.ring(me, q, true)?,
                    rx: self.ring(me, q, false)?,
                    peer_rx: self.ring(peer, q, false)?,
                    out: self.chan(q, me),
                    inc: self.chan(q, peer),
                    link: self.clone(),
                }) as Box<dyn QueueIo>)
            })
            .collect()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let bit = 1u32 << self.side;
        let h = self.header();
        h.pids[self.side].store(0, Ordering::Relaxed);
        let before = h.attached.fetch_and(!bit, Ordering::AcqRel);
        if before & !bit == 0 {
            if let Some(f) = &self.files {
                let _ = std::fs::remove_file(&f.mem);
                for b in &f.bells {
                    let _ = std::fs::remove_file(b);
                }
            }
        }
    }
}

/// Creates an anonymous link (a memfd) and returns its two ends, for two threads of one
/// process (or a parent and a child that inherits nothing: use [`open`] by name for that).
pub fn pair(config: &PortConfig) -> Result<(Port, Port)> {
    config.validate()?;
    let layout = Layout::new(config.queues, config.slots as usize, config.buf_size as usize);
    // SAFETY: a constant NUL-terminated name and flags.
    let fd = syscall!("memfd_create for shm link", unsafe {
        libc::memfd_create(c"psio-shm".as_ptr(), libc::MFD_CLOEXEC)
    })?;
    // SAFETY: `fd` is fresh from memfd_create and owned by nobody else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(layout.total as u64)
        .map_err(|e| Error::io("sizing shm link", e))?;
    let map = MmapOptions::new()
        .len(layout.total)
        .map_raw(&file)
        .map_err(|e| Error::io("mapping shm link", e))?;
    Link::init(&map, &layout);
    let mk = |side: usize, map: MmapRaw, bells: [Bell; 2]| -> Result<Port> {
        let link = Arc::new(Link {
            map,
            layout,
            side,
            bells,
            files: None,
        });
        let h = link.header();
        h.attached.fetch_or(1 << side, Ordering::AcqRel);
        h.pids[side].store(std::process::id(), Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(Port::from_queues(&format!("shm:(pair side {side})"), link.queues()?))
    };
    let b0 = Bell::eventfd()?;
    let b1 = Bell::eventfd()?;
    // Each side maps the memfd on its own, so that either may be dropped first.
    let map1 = MmapOptions::new()
        .len(layout.total)
        .map_raw(&file)
        .map_err(|e| Error::io("mapping shm link", e))?;
    let bells_for = |b0: &Bell, b1: &Bell| -> Result<[Bell; 2]> { Ok([b0.try_clone()?, b1.try_clone()?]) };
    let second = bells_for(&b0, &b1)?;
    Ok((mk(0, map, [b0, b1])?, mk(1, map1, second)?))
}

fn shm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PSIO_SHM_DIR") {
        return PathBuf::from(d);
    }
    let dev_shm = PathBuf::from("/dev/shm");
    if dev_shm.is_dir() {
        dev_shm
    } else {
        std::env::temp_dir()
    }
}

fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Opens (creating if needed) the link called `name` and attaches to a free side.
///
/// The first opener creates the link with `config`'s shape; later openers adopt the shape the
/// link already has. The files live in `$PSIO_SHM_DIR` (default `/dev/shm`) and are removed
/// when the last side detaches. A side whose process died is taken over.
pub(crate) fn open(name: &str, config: &PortConfig) -> Result<Vec<Box<dyn QueueIo>>> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::BadPortName {
            name: format!("shm:{name}"),
            reason: "shm link names use only letters, digits, '-', '_' and '.'".into(),
        });
    }
    let dir = shm_dir();
    let files = Files {
        mem: dir.join(format!("psio-{name}.mem")),
        bells: [
            dir.join(format!("psio-{name}.bell0")),
            dir.join(format!("psio-{name}.bell1")),
        ],
    };
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&files.mem);
    let (file, creator) = match created {
        Ok(f) => (f, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&files.mem)
                .map_err(|e| Error::io("opening shm link", e))?,
            false,
        ),
        Err(e) => return Err(Error::io("creating shm link", e)),
    };
    let layout = if creator {
        let layout = Layout::new(config.queues, config.slots as usize, config.buf_size as usize);
        file.set_len(layout.total as u64)
            .map_err(|e| Error::io("sizing shm link", e))?;
        layout
    } else {
        wait_for_creator(&file, name)?
    };
    let map = MmapOptions::new()
        .len(layout.total)
        .map_raw(&file)
        .map_err(|e| Error::io("mapping shm link", e))?;
    let bells = [Bell::fifo(&files.bells[0])?, Bell::fifo(&files.bells[1])?];
    if creator {
        Link::init(&map, &layout);
    }
    // SAFETY: the mapping starts with a Header (plain integers and atomics).
    let h = unsafe { &*(map.as_mut_ptr() as *const Header) };
    let side = if creator {
        h.attached.store(1, Ordering::Relaxed);
        h.pids[0].store(std::process::id(), Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        0
    } else {
        claim_side(h).ok_or_else(|| Error::ShmBusy(name.to_string()))?
    };
    let link = Arc::new(Link {
        map,
        layout,
        side,
        bells,
        files: Some(files),
    });
    link.queues()
}

/// Waits (up to 2 s) for the creator to publish the header, then checks and returns its
/// layout.
fn wait_for_creator(file: &File, name: &str) -> Result<Layout> {
    let incompatible = |reason: String| Error::ShmIncompatible {
        name: name.to_string(),
        reason,
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading shm link size", e))?
            .len() as usize;
        if len >= HEADER_BYTES {
            let map = MmapOptions::new()
                .len(HEADER_BYTES)
                .map_raw(file)
                .map_err(|e| Error::io("mapping shm link header", e))?;
            // SAFETY: the mapping is HEADER_BYTES long and the header is plain data.
            let h = unsafe { &*(map.as_mut_ptr() as *const Header) };
            if h.magic.load(Ordering::Acquire) == MAGIC {
                if h.version != VERSION {
                    return Err(incompatible(format!("version {} (expected {VERSION})", h.version)));
                }
                let cfg = PortConfig {
                    queues: h.queues as usize,
                    slots: h.slots,
                    buf_size: h.buf_size,
                    ..PortConfig::default()
                };
                cfg.validate().map_err(|e| incompatible(e.to_string()))?;
                let layout = Layout::new(cfg.queues, cfg.slots as usize, cfg.buf_size as usize);
                if layout.total as u64 != h.total_len || len < layout.total {
                    return Err(incompatible("size does not match its header".into()));
                }
                return Ok(layout);
            }
        }
        if Instant::now() > deadline {
            return Err(incompatible(
                "its creator never finished initialising it (remove the stale file)".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Takes a free side, or one whose owner process has died.
fn claim_side(h: &Header) -> Option<usize> {
    for side in 0..2 {
        let bit = 1u32 << side;
        let prev = h.attached.fetch_or(bit, Ordering::AcqRel);
        if prev & bit == 0 {
            h.pids[side].store(std::process::id(), Ordering::Relaxed);
            return Some(side);
        }
    }
    for side in 0..2 {
        let pid = h.pids[side].load(Ordering::Relaxed);
        if !process_alive(pid)
            && h.pids[side]
                .compare_exchange(pid, std::process::id(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(side);
        }
    }
    None
}

/// One queue pair of one side of a link.
struct ShmQueue {
    tx: NmRing,
    rx: NmRing,
    /// The peer's RX ring for this queue: our txsync fills it.
    peer_rx: NmRing,
    /// Frames we send.
    out: NonNull<Chan>,
    /// Frames we receive.
    inc: NonNull<Chan>,
    link: Arc<Link>,
}

// SAFETY: the raw pointers point into `link`'s mapping, which the queue keeps alive; all
// shared fields they reach are atomics or slots handed over by the ring protocol.
unsafe impl Send for ShmQueue {}

impl ShmQueue {
    fn out(&self) -> &Chan {
        // SAFETY: points into the mapping kept alive by `self.link`; Chan is all atomics.
        unsafe { self.out.as_ref() }
    }

    fn inc(&self) -> &Chan {
        // SAFETY: as in `out`.
        unsafe { self.inc.as_ref() }
    }

    fn peer_bell(&self) -> &Bell {
        &self.link.bells[1 - self.link.side]
    }

    /// Moves pushed frames into the peer's RX ring as far as it has room.
    fn push_to_peer(&mut self) {
        let hwcur = self.tx.next(self.tx.tail());
        let pending = self.tx.distance(hwcur, self.tx.head());
        if pending == 0 {
            return;
        }
        let out = self.out();
        let prod = self.peer_rx.clamp(out.prod.0.load(Ordering::Relaxed));
        let cons = self.peer_rx.clamp(out.cons.0.load(Ordering::Acquire));
        let gap = self.peer_rx.distance(prod, cons);
        let free = if gap == 0 { self.peer_rx.num_slots() - 1 } else { gap - 1 };
        let n = pending.min(free);
        if n == 0 {
            return;
        }
        let (mut t, mut r) = (hwcur, prod);
        for _ in 0..n {
            let a = self.tx.slot(t);
            let b = self.peer_rx.slot(r);
            self.peer_rx.set_slot(
                r,
                netmap_slot {
                    buf_idx: a.buf_idx,
                    len: a.len,
                    flags: NS_BUF_CHANGED,
                    ptr: 0,
                },
            );
            self.tx.set_slot(
                t,
                netmap_slot {
                    buf_idx: b.buf_idx,
                    len: 0,
                    flags: NS_BUF_CHANGED,
                    ptr: 0,
                },
            );
            t = self.tx.next(t);
            r = self.peer_rx.next(r);
        }
        self.out().prod.0.store(r, Ordering::Release);
        // The moved TX slots are free again: tail trails the new hwcur by one.
        let new_tail = self.tx.add(hwcur, n - 1);
        self.tx.set_tail(new_tail);
        // Pairs with the fence in `arm`: either the consumer sees our `prod`, or we see its
        // `cons_wait` and ring.
        fence(Ordering::SeqCst);
        let out = self.out();
        if out.cons_wait.0.load(Ordering::Relaxed) != 0 && out.cons_wait.0.swap(0, Ordering::Relaxed) != 0 {
            self.peer_bell().ring();
        }
    }
}

impl QueueIo for ShmQueue {
    fn rxsync(&mut self) -> Result<usize> {
        let head = self.rx.head();
        let inc = self.inc();
        if inc.cons.0.load(Ordering::Relaxed) != head {
            inc.cons.0.store(head, Ordering::Release);
            fence(Ordering::SeqCst);
            if inc.prod_wait.0.load(Ordering::Relaxed) != 0
                && inc.prod_wait.0.swap(0, Ordering::Relaxed) != 0
            {
                self.peer_bell().ring();
            }
        }
        let prod = self.rx.clamp(self.inc().prod.0.load(Ordering::Acquire));
        self.rx.set_tail(prod);
        Ok(self.rx.space() as usize)
    }

    #[inline]
    fn rx_available(&self) -> usize {
        self.rx.space() as usize
    }

    #[inline]
    fn rx_frame(&self, i: usize) -> &[u8] {
        assert!(i < self.rx_available(), "rx_frame({i}) beyond available frames");
        self.rx.frame(self.rx.add(self.rx.head(), i as u32))
    }

    #[inline]
    fn rx_release(&mut self, n: usize) {
        assert!(n <= self.rx_available(), "rx_release({n}) beyond available frames");
        let h = self.rx.add(self.rx.head(), n as u32);
        self.rx.set_head_cur(h);
    }

    fn txsync(&mut self) -> Result<usize> {
        self.push_to_peer();
        Ok(self.tx.space() as usize)
    }

    #[inline]
    fn tx_space(&self) -> usize {
        self.tx.space() as usize
    }

    #[inline]
    fn tx_buf(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.tx_space(), "tx_buf({i}) beyond free slots");
        let s = self.tx.add(self.tx.head(), i as u32);
        self.tx.buf_mut(s)
    }

    #[inline]
    fn tx_push(&mut self, len: usize) {
        assert!(self.tx_space() > 0, "tx_push with no free slot");
        assert!(len <= self.tx.buf_size() as usize, "tx_push({len}) beyond buffer size");
        let h = self.tx.head();
        self.tx.set_len(h, len as u16);
        let next = self.tx.next(h);
        self.tx.set_head_cur(next);
    }

    fn tx_pending(&self) -> usize {
        self.tx.distance(self.tx.next(self.tx.tail()), self.tx.head()) as usize
    }

    fn buf_size(&self) -> usize {
        self.tx.buf_size() as usize
    }

    fn arm(&mut self, rx: bool, tx: bool) -> Result<Option<WaitSpec>> {
        if rx {
            self.inc().cons_wait.0.store(1, Ordering::Relaxed);
        }
        if tx || self.tx_pending() > 0 {
            self.out().prod_wait.0.store(1, Ordering::Relaxed);
        }
        // Pairs with the fences after publishing `prod` / `cons` on the other side.
        fence(Ordering::SeqCst);
        Ok(Some(WaitSpec {
            fd: self.link.bells[self.link.side].fd(),
            events: libc::POLLIN,
        }))
    }

    fn disarm(&mut self) {
        self.inc().cons_wait.0.store(0, Ordering::Relaxed);
        self.out().prod_wait.0.store(0, Ordering::Relaxed);
        self.link.bells[self.link.side].drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_page_aligned_and_disjoint() {
        let l = Layout::new(3, 256, 2048);
        assert_eq!(l.rings % PAGE, 0);
        assert_eq!(l.bufs % PAGE, 0);
        assert!(l.chan_offset(2, 1) + CHAN_BYTES <= l.rings);
        assert!(l.ring_offset(1, 2, false) + l.ring_stride <= l.bufs);
        assert_eq!(l.total, l.bufs + 12 * 256 * 2048);
    }

    #[test]
    fn frames_cross_a_pair_in_both_directions() {
        let (mut a, mut b) = pair(&PortConfig {
            slots: 16,
            ..PortConfig::default()
        })
        .unwrap();
        let (qa, qb) = (a.queue(0), b.queue(0));
        assert_eq!(qa.tx_space(), 15);
        for i in 0..15u8 {
            qa.tx_buf(0)[..3].copy_from_slice(&[i, i, i]);
            qa.tx_push(3);
        }
        assert_eq!(qa.tx_space(), 0);
        assert_eq!(qa.tx_pending(), 15);
        assert_eq!(qa.txsync().unwrap(), 15);
        assert_eq!(qb.rxsync().unwrap(), 15);
        for i in 0..15u8 {
            assert_eq!(qb.rx_frame(i as usize), &[i, i, i]);
        }
        qb.rx_release(15);
        qb.tx_buf(0)[0] = 9;
        qb.tx_push(1);
        qb.txsync().unwrap();
        assert_eq!(qa.rxsync().unwrap(), 1);
        assert_eq!(qa.rx_frame(0), &[9]);
    }

    #[test]
    fn a_full_peer_holds_frames_pending_until_it_releases() {
        let (mut a, mut b) = pair(&PortConfig {
            slots: 8,
            ..PortConfig::default()
        })
        .unwrap();
        let (qa, qb) = (a.queue(0), b.queue(0));
        for round in 0..2u8 {
            while qa.tx_space() > 0 {
                qa.tx_buf(0)[0] = round;
                qa.tx_push(1);
            }
            qa.txsync().unwrap();
        }
        // 7 frames reached the peer, 7 wait in our ring.
        assert_eq!(qb.rxsync().unwrap(), 7);
        assert_eq!(qa.tx_pending(), 7);
        assert_eq!(qa.tx_space(), 0);
        qb.rx_release(7);
        qb.rxsync().unwrap();
        assert_eq!(qa.txsync().unwrap(), 7);
        assert_eq!(qb.rxsync().unwrap(), 7);
        assert_eq!(qb.rx_frame(6), &[1]);
    }

    #[test]
    fn named_links_attach_two_sides_and_clean_up() {
        let name = format!("unit-{}", std::process::id());
        let mut a = Port::open(&format!("shm:{name}/slots=32")).unwrap();
        // The second opener adopts the link's shape whatever it asks for.
        let mut b = Port::open(&format!("shm:{name}/slots=64")).unwrap();
        let err = Port::open(&format!("shm:{name}")).unwrap_err();
        assert!(matches!(err, Error::ShmBusy(_)), "{err}");
        a.queue(0).tx_buf(0)[..2].copy_from_slice(b"hi");
        a.queue(0).tx_push(2);
        a.queue(0).txsync().unwrap();
        assert_eq!(b.queue(0).rxsync().unwrap(), 1);
        assert_eq!(b.queue(0).rx_frame(0), b"hi");
        assert_eq!(b.queue(0).tx_space(), 31);
        let path = shm_dir().join(format!("psio-{name}.mem"));
        assert!(path.exists());
        drop(a);
        assert!(path.exists());
        drop(b);
        assert!(!path.exists());
    }
}
