//! `shm` backend: two endpoints linked by netmap-format rings in shared memory.
//!
//! No root, no NIC: the default for demos, tests and in-memory benchmarks. A link has two
//! sides; each side has `q` queue pairs; side A's TX ring `i` feeds side B's RX ring `i` and
//! the other way round.
//!
//! ## Layout of one link (private memory for an in-process pair, a file under `/dev/shm` for
//! links opened by name)
//! ```text
//!  0      Header: magic, version, queues, slots, buf size, total size, attached sides, pids
//!  4096   Chan[q][dir]: prod | cons | cons_wait | prod_wait   (one cache line each)
//!  ....   Rings[side][q][tx, rx]: netmap_ring header + slots  (netmap_sys layout)
//!  ....   Buffers[q][dir]: `slots` buffers of `buf` bytes per direction, page aligned
//! ```
//!
//! ## Moving frames (zero copy, and no per-frame work in sync)
//! In each direction, the sender's TX slot `i` and the receiver's RX slot `i` share buffer
//! `i`. A frame is built in place in the TX buffer; `tx_push` writes its length into both
//! slots; `txsync` publishes the sender's `head` as `Chan::prod` (release), which is the
//! receiver's RX `tail`. The receiver reads frames in place and `rxsync` publishes its RX
//! `head` as `Chan::cons`, which frees the sender's TX slots up to `cons - 1` (its TX `tail`):
//! a TX slot is reusable once the receiver is done with the frame, like a NIC completing a
//! transmission. Each index has exactly one writer; a sync is one store and one load.
//!
//! ## Sleeping without spinning
//! A side about to sleep sets `cons_wait` (wants frames) or `prod_wait` (wants room), issues a
//! full fence, re-checks, and polls its doorbell. The other side, after publishing its index,
//! issues a full fence and rings the doorbell only if the flag is set — so a busy link makes
//! no system calls at all. Each queue has a doorbell per side (queues of one side are
//! usually served by different threads, and a doorbell drained by one thread would lose
//! another's wake-up). Doorbells are eventfds for in-process pairs and named FIFOs for
//! links opened by name from several processes.
//!
//! Both sides of a link trust each other like threads of one program; still, every slot read
//! from shared memory is bounds-checked before use, so a misbehaving peer can garble frames
//! but not make this side access memory outside the mapping.

use crate::bell::Bell;
use crate::error::{Error, Result};
use crate::ring::{init_ring, NmRing, RING_HEADER_BYTES, SLOT_BYTES};
use crate::{Port, PortConfig, QueueIo, WaitSpec};
use memmap2::{MmapOptions, MmapRaw};
use netmap_sys::netmap::netmap_ring;
use std::fs::{File, OpenOptions};
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
        // One set of buffers per direction: TX slot i of the sender and RX slot i of the
        // receiver share buffer i.
        let total = bufs + queues * 2 * slots * buf_size;
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

    /// First buffer of the direction that leaves `from_side` on queue `q`.
    fn first_buf(&self, q: usize, from_side: usize) -> u32 {
        ((q * 2 + from_side) * self.slots) as u32
    }

    /// Index of the ring of `side`, queue `q`, TX or RX.
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
    /// FIFO doorbells, per queue: side 0's, then side 1's.
    bells: Vec<[PathBuf; 2]>,
}

/// One side's handle on a link; shared by that side's queues.
struct Link {
    map: Arc<MmapRaw>,
    layout: Layout,
    side: usize,
    /// Doorbells of side 0 and side 1, per queue.
    bells: Vec<[Bell; 2]>,
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
        let p = unsafe {
            self.map
                .as_mut_ptr()
                .add(self.layout.chan_offset(q, from_side))
        };
        NonNull::new(p.cast()).expect("mapping is non-null")
    }

    fn ring(&self, side: usize, q: usize, tx: bool) -> Result<NmRing> {
        // SAFETY: `ring_offset` lies inside the mapping.
        let p = unsafe {
            self.map
                .as_mut_ptr()
                .add(self.layout.ring_offset(side, q, tx))
        };
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
                    let from_side = if tx { side } else { 1 - side };
                    let first = layout.first_buf(q, from_side);
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
        (0..self.layout.queues)
            .map(|q| Ok(Box::new(ShmQueue::new(self.clone(), q)?) as Box<dyn QueueIo>))
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
                for b in f.bells.iter().flatten() {
                    let _ = std::fs::remove_file(b);
                }
            }
        }
    }
}

/// Creates an anonymous link in private memory and returns its two ends, for threads of one
/// process (links between processes are opened by name: `Port::open("shm:NAME")`).
///
/// The memory asks for transparent huge pages: the buffer pool of a queue spans megabytes,
/// and with 4 KiB pages every frame would cost a TLB miss.
pub fn pair(config: &PortConfig) -> Result<(Port, Port)> {
    config.validate()?;
    let layout = Layout::new(
        config.queues,
        config.slots as usize,
        config.buf_size as usize,
    );
    let anon = MmapOptions::new()
        .len(layout.total)
        .map_anon()
        .map_err(|e| Error::io("mapping shm link", e))?;
    // Best effort: without THP the link works, only slower.
    let _ = anon.advise(memmap2::Advice::HugePage);
    let map = Arc::new(MmapRaw::from(anon));
    Link::init(&map, &layout);
    let mut bells0 = Vec::with_capacity(layout.queues);
    let mut bells1 = Vec::with_capacity(layout.queues);
    for _ in 0..layout.queues {
        let (b0, b1) = (Bell::eventfd()?, Bell::eventfd()?);
        bells1.push([b0.try_clone()?, b1.try_clone()?]);
        bells0.push([b0, b1]);
    }
    let mk = |side: usize, bells: Vec<[Bell; 2]>| -> Result<Port> {
        let link = Arc::new(Link {
            map: map.clone(),
            layout,
            side,
            bells,
            files: None,
        });
        let h = link.header();
        h.attached.fetch_or(1 << side, Ordering::AcqRel);
        h.pids[side].store(std::process::id(), Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(Port::from_queues(
            &format!("shm:(pair side {side})"),
            link.queues()?,
        ))
    };
    Ok((mk(0, bells0)?, mk(1, bells1)?))
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
    let mut files = Files {
        mem: dir.join(format!("psio-{name}.mem")),
        bells: Vec::new(),
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
        let layout = Layout::new(
            config.queues,
            config.slots as usize,
            config.buf_size as usize,
        );
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
    files.bells = (0..layout.queues)
        .map(|q| [0, 1].map(|side| dir.join(format!("psio-{name}.q{q}.bell{side}"))))
        .collect();
    let bells = files
        .bells
        .iter()
        .map(|[a, b]| Ok([Bell::fifo(a)?, Bell::fifo(b)?]))
        .collect::<Result<Vec<_>>>()?;
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
        map: Arc::new(map),
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
                    return Err(incompatible(format!(
                        "version {} (expected {VERSION})",
                        h.version
                    )));
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
///
/// The user-side indices are cached here and written to the shared ring headers at every
/// sync, as netmap does: between syncs only this thread uses them.
struct ShmQueue {
    tx: NmRing,
    rx: NmRing,
    /// The peer's RX ring for this queue: slot `i` shares its buffer with our TX slot `i`.
    peer_rx: NmRing,
    /// Frames we send.
    out: NonNull<Chan>,
    /// Frames we receive.
    inc: NonNull<Chan>,
    /// First received frame not yet released (`rx.head`).
    rx_head: u32,
    /// Received frames available from `rx_head`.
    rx_avail: u32,
    /// `cons` as last published: slots before it were given back.
    released: u32,
    /// This queue's index (for its doorbells).
    q: usize,
    /// First free TX slot (`tx.head`).
    tx_head: u32,
    /// Free TX slots from `tx_head`.
    tx_free: u32,
    /// `prod` as last published: frames before it are the peer's.
    published: u32,
    link: Arc<Link>,
}

// SAFETY: the raw pointers point into `link`'s mapping, which the queue keeps alive; all
// shared fields they reach are atomics or slots handed over by the ring protocol.
unsafe impl Send for ShmQueue {}

impl ShmQueue {
    fn new(link: Arc<Link>, q: usize) -> Result<ShmQueue> {
        let me = link.side;
        let peer = 1 - me;
        let tx = link.ring(me, q, true)?;
        let rx = link.ring(me, q, false)?;
        let peer_rx = link.ring(peer, q, false)?;
        let mut queue = ShmQueue {
            tx,
            rx,
            peer_rx,
            out: link.chan(q, me),
            inc: link.chan(q, peer),
            rx_head: 0,
            rx_avail: 0,
            released: 0,
            q,
            tx_head: 0,
            tx_free: 0,
            published: 0,
            link,
        };
        // The channels are the truth; resume from them (fresh link, or a side taken over
        // from a process that died).
        queue.published = queue.tx.clamp(queue.out().prod.0.load(Ordering::Acquire));
        queue.tx_head = queue.published;
        queue.released = queue.rx.clamp(queue.inc().cons.0.load(Ordering::Acquire));
        queue.rx_head = queue.released;
        queue.rxsync()?;
        queue.txsync()?;
        Ok(queue)
    }

    fn out(&self) -> &Chan {
        // SAFETY: points into the mapping kept alive by `self.link`; Chan is all atomics.
        unsafe { self.out.as_ref() }
    }

    fn inc(&self) -> &Chan {
        // SAFETY: as in `out`.
        unsafe { self.inc.as_ref() }
    }

    /// Publishes `value` in `index` and wakes the other side if it announced, in `wait`, that
    /// it sleeps until that index moves.
    fn publish(&self, index: &AtomicU32, value: u32, wait: &AtomicU32) {
        index.store(value, Ordering::Release);
        // Pairs with the fence in the other side's `arm`: either it sees our index, or we
        // see its flag and ring.
        fence(Ordering::SeqCst);
        if wait.load(Ordering::Relaxed) != 0 && wait.swap(0, Ordering::Relaxed) != 0 {
            self.link.bells[self.q][1 - self.link.side].ring();
        }
    }
}

impl QueueIo for ShmQueue {
    fn rxsync(&mut self) -> Result<usize> {
        if self.released != self.rx_head {
            self.released = self.rx_head;
            let inc = self.inc();
            self.publish(&inc.cons.0, self.rx_head, &inc.prod_wait.0);
        }
        let tail = self.rx.clamp(self.inc().prod.0.load(Ordering::Acquire));
        self.rx_avail = self.rx.distance(self.rx_head, tail);
        self.rx.set_head_cur(self.rx_head);
        self.rx.set_tail(tail);
        Ok(self.rx_avail as usize)
    }

    #[inline]
    fn rx_available(&self) -> usize {
        self.rx_avail as usize
    }

    #[inline]
    fn rx_frame(&self, i: usize) -> &[u8] {
        assert!(
            i < self.rx_avail as usize,
            "rx_frame({i}) beyond available frames"
        );
        self.rx.frame(self.rx.add(self.rx_head, i as u32))
    }

    #[inline]
    fn rx_release(&mut self, n: usize) {
        assert!(
            n <= self.rx_avail as usize,
            "rx_release({n}) beyond available frames"
        );
        self.rx_head = self.rx.add(self.rx_head, n as u32);
        self.rx_avail -= n as u32;
    }

    fn txsync(&mut self) -> Result<usize> {
        if self.published != self.tx_head {
            self.published = self.tx_head;
            let out = self.out();
            self.publish(&out.prod.0, self.tx_head, &out.cons_wait.0);
        }
        // Our TX slot i is free once the peer has released its RX slot i.
        let cons = self.tx.clamp(self.out().cons.0.load(Ordering::Acquire));
        let tail = self.tx.add(cons, self.tx.num_slots() - 1);
        self.tx_free = self.tx.distance(self.tx_head, tail);
        self.tx.set_head_cur(self.tx_head);
        self.tx.set_tail(tail);
        Ok(self.tx_free as usize)
    }

    #[inline]
    fn tx_space(&self) -> usize {
        self.tx_free as usize
    }

    #[inline]
    fn tx_buf(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.tx_free as usize, "tx_buf({i}) beyond free slots");
        let s = self.tx.add(self.tx_head, i as u32);
        self.tx.buf_mut(s)
    }

    #[inline]
    fn tx_push(&mut self, len: usize) {
        assert!(self.tx_free > 0, "tx_push with no free slot");
        assert!(
            len <= self.tx.buf_size() as usize,
            "tx_push({len}) beyond buffer size"
        );
        // The peer's RX slot is ours to write until we publish it (it lies beyond its tail).
        self.tx.set_len(self.tx_head, len as u16);
        self.peer_rx.set_len(self.tx_head, len as u16);
        self.tx_head = self.tx.next(self.tx_head);
        self.tx_free -= 1;
    }

    fn tx_pending(&self) -> usize {
        self.tx.distance(self.published, self.tx_head) as usize
    }

    fn buf_size(&self) -> usize {
        self.tx.buf_size() as usize
    }

    fn arm(&mut self, rx: bool, tx: bool) -> Result<Option<WaitSpec>> {
        if rx {
            self.inc().cons_wait.0.store(1, Ordering::Relaxed);
        }
        if tx {
            self.out().prod_wait.0.store(1, Ordering::Relaxed);
        }
        // Pairs with the fence in the other side's `publish`.
        fence(Ordering::SeqCst);
        Ok(Some(WaitSpec {
            fd: self.link.bells[self.q][self.link.side].fd(),
            events: libc::POLLIN,
        }))
    }

    fn disarm(&mut self) {
        self.inc().cons_wait.0.store(0, Ordering::Relaxed);
        self.out().prod_wait.0.store(0, Ordering::Relaxed);
        self.link.bells[self.q][self.link.side].drain();
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
        assert_eq!(l.total, l.bufs + 6 * 256 * 2048);
        assert_eq!(l.first_buf(2, 1), 5 * 256);
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
        // Published, but the slots stay the peer's until it releases them.
        assert_eq!(qa.txsync().unwrap(), 0);
        assert_eq!(qa.tx_pending(), 0);
        assert_eq!(qb.rx_available(), 0, "nothing visible before rxsync");
        assert_eq!(qb.rxsync().unwrap(), 15);
        for i in 0..15u8 {
            assert_eq!(qb.rx_frame(i as usize), &[i, i, i]);
        }
        qb.rx_release(15);
        assert_eq!(
            qa.txsync().unwrap(),
            0,
            "release is published at the next rxsync"
        );
        assert_eq!(qb.rxsync().unwrap(), 0);
        assert_eq!(qa.txsync().unwrap(), 15);
        qb.tx_buf(0)[0] = 9;
        qb.tx_push(1);
        qb.txsync().unwrap();
        assert_eq!(qa.rxsync().unwrap(), 1);
        assert_eq!(qa.rx_frame(0), &[9]);
    }

    #[test]
    fn a_slow_receiver_limits_the_sender_to_its_free_slots() {
        let (mut a, mut b) = pair(&PortConfig {
            slots: 8,
            ..PortConfig::default()
        })
        .unwrap();
        let (qa, qb) = (a.queue(0), b.queue(0));
        for round in 0..3u8 {
            while qa.tx_space() > 0 {
                qa.tx_buf(0)[0] = round;
                qa.tx_push(1);
            }
            qa.txsync().unwrap();
            assert_eq!(qb.rxsync().unwrap(), 7);
            // Releasing part of the batch frees exactly that many TX slots.
            qb.rx_release(3);
            qb.rxsync().unwrap();
            assert_eq!(qa.txsync().unwrap(), 3);
            assert_eq!(qb.rx_frame(3), &[round]);
            qb.rx_release(4);
            qb.rxsync().unwrap();
            assert_eq!(qa.txsync().unwrap(), 7);
        }
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

    /// Two threads, each sleeping in `select` on its own queue of the same side, are both
    /// woken by frames on their queue: a doorbell shared by the side's queues lost wake-ups
    /// (one thread drained the token the other needed).
    #[test]
    fn threads_sleeping_on_queues_of_one_side_are_each_woken() {
        for named in [false, true] {
            let config = PortConfig {
                queues: 2,
                ..PortConfig::default()
            };
            let (a, b) = if named {
                let name = format!("unit-wake-{}", std::process::id());
                (
                    Port::open_with(&format!("shm:{name}"), &config).unwrap(),
                    Port::open_with(&format!("shm:{name}"), &config).unwrap(),
                )
            } else {
                pair(&config).unwrap()
            };
            let mut a_queues = a.into_queues();
            let rounds = 200;
            // Lock step: a frame on each queue, then both receivers' acknowledgments, so a
            // lost wake-up is not rescued by the next frame's doorbell.
            let (ack_tx, ack_rx) = std::sync::mpsc::channel();
            let sleepers: Vec<_> = b
                .into_queues()
                .into_iter()
                .enumerate()
                .map(|(q, queue)| {
                    let ack = ack_tx.clone();
                    std::thread::spawn(move || {
                        let mut set = crate::PortSet::new().unwrap();
                        let p = set.add(Port::from_queues("b", vec![queue]));
                        let only_rx = [crate::Interest {
                            port: p,
                            queue: 0,
                            rx: true,
                            tx: false,
                        }];
                        let mut got = 0;
                        while got < rounds {
                            let out = set.select(&only_rx, Some(2_000_000)).unwrap();
                            assert!(!out.timed_out, "queue {q}: frame {got} never woke us");
                            let rx = set.port(p).queue(0);
                            let n = rx.rx_available();
                            rx.rx_release(n);
                            got += n;
                            for _ in 0..n {
                                ack.send(q).unwrap();
                            }
                        }
                    })
                })
                .collect();
            for i in 0..rounds {
                for q in &mut a_queues {
                    q.txsync().unwrap();
                    q.tx_buf(0)[0] = i as u8;
                    q.tx_push(60);
                    q.txsync().unwrap();
                }
                for _ in 0..2 {
                    ack_rx
                        .recv_timeout(Duration::from_secs(5))
                        .expect("a receiver is stuck");
                }
            }
            for t in sleepers {
                t.join().unwrap();
            }
        }
    }
}
