//! `netmap` backend: the rings of the netmap kernel module, mapped from `/dev/netmap`.
//!
//! netmap's rings have exactly the layout [`NmRing`] reads (the shm backend copies it), so
//! this backend is only the glue around them: parse the port name, register the port with
//! the kernel, map its memory, find the rings in the mapping, and turn the two sync ioctls
//! into [`QueueIo::rxsync`]/[`QueueIo::txsync`].
//!
//! ## Port names
//! ```text
//!   netmap:IF          every hardware ring pair of IF   NR_REG_ALL_NIC          one queue per pair
//!   netmap:IF-R        hardware ring pair R only        NR_REG_ONE_NIC, ring R  one queue
//!   valeX:P            port P of VALE switch valeX      NR_REG_ALL_NIC          one queue per pair
//! ```
//! followed by psio's own `/options` (already parsed by [`PortName`](crate::PortName) and
//! stripped here). A final `-R` is read as a ring only when `R` is all digits: `veth-a` is an
//! interface, `veth-a-3` is its ring pair 3, and an interface whose name ends in `-<digits>`
//! cannot be opened whole (nor can it with netmap's own tools). netmap's other
//! suffixes (`^` host rings, `{`/`}` pipes, `@`, `*`) are refused with
//! [`Error::BadPortName`]. The name given to the kernel (`IF`, or the whole `valeX:P`) must fit
//! `IFNAMSIZ` (15 bytes).
//!
//! Options: for a VALE port, `q` and `slots` ask for the ring pairs and slots of a port that
//! does not exist yet (an existing port keeps its shape). A NIC's ring count and size are its
//! driver's (`ethtool -L`/`-G`), so `q` and `slots` are ignored there; `buf` is always
//! ignored, the buffer size being netmap's global `dev.netmap.buf_size`.
//! [`Port::num_queues`] and [`QueueIo::buf_size`] report what the kernel gave.
//!
//! ## Opening, step by step
//! 1. `open("/dev/netmap")` — `ENOENT` (no module) → [`Error::NetmapMissing`],
//!    `EPERM`/`EACCES` → [`Error::PermissionDenied`].
//! 2. `ioctl(NIOCREGIF, struct nmreq)` — the legacy registration call, still accepted by
//!    current netmap, which converts it to `NIOCCTRL`/`NETMAP_REQ_REGISTER`. `nr_version` is
//!    14: current kernels refuse anything older ("Minimum supported API is 14"); kernels of
//!    API 11–13 either overwrite a mismatching version with their own and carry on, or (the
//!    oldest) write theirs back and fail with `EINVAL`, which earns one retry with it.
//!    `ENXIO`/`ENOENT` → [`Error::NoSuchInterface`].
//! 3. `mmap(nr_memsize bytes at offset 0)`, then `locate_rings` reads the `netmap_if` at
//!    `nr_offset` and bounds-checks every ring it uses against the mapping:
//!
//! ```text
//!  mapping (nr_memsize bytes; the same memory the kernel and other ports use)
//!  ┌──────────────┬───────────────────────────────────┬─────────────┬──────────────────
//!  │ ...          │ netmap_if (56 bytes) + ring_ofs[] │ ... rings ..│ ... buffers ...
//!  └──────────────┴───────────────────────────────────┴─────────────┴──────────────────
//!                 ▲ nr_offset       │ ring_ofs[i]: ring address minus netmap_if address
//!                                   ▼
//!  ring_ofs[] = [ TX 0 .. ni_tx_rings | host TX | RX 0 .. ni_rx_rings | host RX ]
//!  (host ring counts: ni_host_tx/rx_rings since API 14, in what netmap_sys still calls
//!   ni_spare1[0..2]; zero there means an older kernel, which always has one of each)
//!  An entry is 0 when the ring is not bound to this descriptor (NR_REG_ONE_NIC binds one).
//! ```
//!
//! ## Queue semantics (netmap's, see netmap(4))
//! - RX frames are slots `head..tail`; [`rx_release`](QueueIo::rx_release) advances `head`
//!   and `cur` together; [`rxsync`](QueueIo::rxsync) is `ioctl(NIOCRXSYNC)` (hands released
//!   slots back, picks up new frames) and returns `tail - head`.
//! - TX free slots are `head..tail`; [`tx_push`](QueueIo::tx_push) sets the slot's `len`
//!   (clearing its flags) and advances `head`/`cur`; [`txsync`](QueueIo::txsync) is
//!   `ioctl(NIOCTXSYNC)`.
//! - [`tx_pending`](QueueIo::tx_pending) is `num_slots - 1 - (tail - head)`: frames pushed
//!   and not yet reported done by the kernel (netmap's `nm_tx_pending`). netmap keeps the
//!   exact split (pushed-not-synced vs. queued on the NIC) to itself; this count includes
//!   both, and reaches 0 once a `txsync` finds everything transmitted.
//! - [`arm`](QueueIo::arm) returns the descriptor itself: netmap's `poll()` reports `POLLIN`
//!   when a bound RX ring has frames, `POLLOUT` when a bound TX ring has room (and txsyncs
//!   pending frames as a side effect). [`disarm`](QueueIo::disarm) has nothing to undo.
//! - psio treats each slot as one frame: `NS_MOREFRAG` chains (frames longer than a buffer)
//!   are not reassembled, so keep the MTU within the buffer size.
//!
//! ## One descriptor, several ring pairs
//! `netmap:IF` binds all ring pairs to one descriptor, shared by the queues through an `Arc`.
//! A sync ioctl on it syncs every bound ring, which is harmless: the kernel touches only the
//! slots outside each ring's `head..tail`, and each queue touches only its own ring. But
//! `poll()` on that descriptor is ready when *any* bound ring is, and level-triggered: a
//! thread sleeping on queue 0 returns at once for as long as queue 1 holds unread frames, so
//! threads that each own one queue of such a port spin. Give each thread its own ring pair
//! (`netmap:IF-0`, `netmap:IF-1`, …: one descriptor each) instead; `netmap:IF` suits one
//! thread driving all queues.
//!
//! ## What is not tested here
//! The machines this project runs on cannot load `netmap.ko`, so the registration ioctl, the
//! real mapping and the sync ioctls have never run against a kernel in this tree. The unit
//! tests cover the name grammar, the error mapping, `locate_rings` on a netmap memory region
//! built by hand (including every out-of-bounds case it must refuse), and the queue logic
//! over that fake region with the kernel's side played by the test. A VALE test
//! (`vale0:psioa` → `vale0:psiob`) runs wherever `/dev/netmap` exists and prints
//! "skipped: /dev/netmap not present" elsewhere. Host rings, pipes, `NIOCCTRL` (the current
//! registration API) and extra buffers are not implemented.

use crate::bell::syscall;
use crate::error::{Error, Result};
use crate::ring::{NmRing, RING_HEADER_BYTES};
use crate::{PortConfig, QueueIo, WaitSpec};
use memmap2::{MmapOptions, MmapRaw};
use netmap_sys::netmap::{
    netmap_if, netmap_ring, nmreq, IFNAMSIZ, NETMAP_RING_MASK, NIOCREGIF, NIOCRXSYNC, NIOCTXSYNC,
    NR_REG_ALL_NIC, NR_REG_ONE_NIC,
};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::ptr::{addr_of, NonNull};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

#[cfg(doc)]
use crate::Port;

/// The netmap control device.
pub const DEVICE: &str = "/dev/netmap";

/// `nr_version` for `NIOCREGIF`: current kernels accept the legacy call only from API 14 on
/// (netmap_legacy.c); for older ones see [`register`].
const LEGACY_API_VERSION: u32 = 14;

/// Offset of `ring_ofs[]` in `struct netmap_if`.
const RING_OFS_AT: usize = std::mem::offset_of!(netmap_if, ring_ofs);
const _: () = assert!(RING_OFS_AT == 56);
const _: () = assert!(std::mem::size_of::<nmreq>() == 60);

/// Alignment the `netmap_if` and ring headers need (they hold 64-bit fields).
const HDR_ALIGN: usize = 8;
const _: () = assert!(std::mem::align_of::<netmap_if>() <= HDR_ALIGN);
const _: () = assert!(std::mem::align_of::<netmap_ring>() <= HDR_ALIGN);

/// A port name resolved into what `NIOCREGIF` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `nr_name`: an interface name, or a whole VALE port name (`vale0:p`).
    ifname: String,
    /// Register mode for `nr_flags`: `NR_REG_ALL_NIC` or `NR_REG_ONE_NIC`.
    mode: u32,
    /// `nr_ringid`: the ring pair for `NR_REG_ONE_NIC`, else 0.
    ringid: u16,
    /// A VALE port: created on demand, so `q` and `slots` are passed along.
    vale: bool,
}

/// Parses `netmap:IF`, `netmap:IF-R` or `valeX:P`, each optionally followed by `/options`.
fn parse_name(full: &str) -> Result<Target> {
    let bad = |reason: String| Error::BadPortName {
        name: full.to_string(),
        reason,
    };
    let base = full.split_once('/').map_or(full, |(n, _)| n);
    let (backend, rest) = base
        .split_once(':')
        .ok_or_else(|| bad("missing ':'".into()))?;
    let target = if backend == "netmap" {
        if let Some(c) = rest.chars().find(|c| "^*{}@".contains(*c)) {
            return Err(bad(format!(
                "netmap suffix {c:?} (host rings, pipes, ...) is not supported by psio; \
                 use netmap:IF or netmap:IF-RING"
            )));
        }
        match rest.rsplit_once('-') {
            Some((ifname, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => {
                let ring = r
                    .parse::<u16>()
                    .ok()
                    .filter(|&n| i32::from(n) <= NETMAP_RING_MASK)
                    .ok_or_else(|| {
                        bad(format!("ring {r} is out of range (0..={NETMAP_RING_MASK})"))
                    })?;
                Target {
                    ifname: ifname.to_string(),
                    mode: NR_REG_ONE_NIC,
                    ringid: ring,
                    vale: false,
                }
            }
            _ => Target {
                ifname: rest.to_string(),
                mode: NR_REG_ALL_NIC,
                ringid: 0,
                vale: false,
            },
        }
    } else if backend.starts_with("vale") {
        if rest.is_empty() {
            return Err(bad("empty VALE port name".into()));
        }
        Target {
            ifname: base.to_string(),
            mode: NR_REG_ALL_NIC,
            ringid: 0,
            vale: true,
        }
    } else {
        return Err(bad(format!(
            "backend {backend:?} is not netmap's (netmap:IF, netmap:IF-RING, valeX:PORT)"
        )));
    };
    if target.ifname.is_empty() {
        return Err(bad("empty interface name".into()));
    }
    if target.ifname.len() >= IFNAMSIZ || target.ifname.contains('\0') {
        return Err(bad(format!(
            "netmap name {:?} must be 1..={} bytes without NUL",
            target.ifname,
            IFNAMSIZ - 1
        )));
    }
    Ok(target)
}

/// What a failed `open` of the netmap device means.
fn device_error(err: io::Error) -> Error {
    match err.raw_os_error() {
        // ENODEV/ENXIO: a stale device node without the module behind it.
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => Error::NetmapMissing,
        Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied {
            what: "/dev/netmap needs root",
            hint: "run as root, or give this user read-write access to /dev/netmap",
        },
        _ => Error::io("opening /dev/netmap", err),
    }
}

/// What a failed `NIOCREGIF` means.
fn register_error(err: io::Error, ifname: &str) -> Error {
    match err.raw_os_error() {
        Some(libc::ENXIO | libc::ENOENT) => Error::NoSuchInterface(ifname.to_string()),
        Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied {
            what: "registering a netmap port needs root",
            hint: "run as root",
        },
        Some(libc::EINVAL) => Error::io(
            "NIOCREGIF refused the request (ring beyond the interface's rings, or a netmap \
             API version this module does not accept)",
            err,
        ),
        Some(libc::EBUSY) => Error::io(
            "NIOCREGIF: the rings are busy (another process holds them exclusively)",
            err,
        ),
        _ => Error::io("NIOCREGIF", err),
    }
}

/// An error about the layout of the mapped region.
fn layout_error(detail: String) -> Error {
    Error::io(
        "netmap shared memory does not hold the rings it should",
        io::Error::new(io::ErrorKind::InvalidData, detail),
    )
}

/// Opens the netmap control device at `path` (a parameter so tests can name a missing one).
fn open_device(path: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(device_error)
}

/// Registers `target` on `fd` with the legacy `NIOCREGIF` and returns the kernel's answer.
///
/// Tries API version 14 first; a kernel old enough to insist on its own exact version
/// answers `EINVAL` with that version written back into the request, and gets one retry.
fn register(fd: &OwnedFd, target: &Target, config: &PortConfig) -> Result<nmreq> {
    // A VALE port is created by its first opener with the shape asked for here; 0 means
    // "the default" and is what a NIC gets (its shape is its driver's).
    let (rings, slots) = if target.vale {
        (
            config.queues.min(usize::from(u16::MAX)) as u16,
            config.slots,
        )
    } else {
        (0, 0)
    };
    let request = |version: u32| {
        let mut req = nmreq {
            nr_name: [0; IFNAMSIZ],
            nr_version: version,
            nr_offset: 0,
            nr_memsize: 0,
            nr_tx_slots: slots,
            nr_rx_slots: slots,
            nr_tx_rings: rings,
            nr_rx_rings: rings,
            nr_ringid: target.ringid,
            nr_cmd: 0,
            nr_arg1: 0,
            nr_arg2: 0,
            nr_arg3: 0,
            nr_flags: target.mode,
            spare2: [0],
        };
        // `parse_name` guarantees the name is shorter than IFNAMSIZ: the last byte stays NUL.
        for (d, s) in req.nr_name.iter_mut().zip(target.ifname.bytes()) {
            *d = s as libc::c_char;
        }
        req
    };
    let mut req = request(LEGACY_API_VERSION);
    let mut result = regif(fd, &mut req);
    if let Err(e) = &result {
        let kernel_version = req.nr_version;
        if e.raw_os_error() == Some(libc::EINVAL)
            && kernel_version != LEGACY_API_VERSION
            && kernel_version != 0
        {
            req = request(kernel_version);
            result = regif(fd, &mut req);
        }
    }
    result.map_err(|e| register_error(e, &target.ifname))?;
    Ok(req)
}

/// One `NIOCREGIF` call.
fn regif(fd: &OwnedFd, req: &mut nmreq) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor; NIOCREGIF reads and writes one `struct nmreq`, and
    // `req` is a live, exclusively borrowed `nmreq` (its 60-byte size checked at compile
    // time, matching the size encoded in the ioctl number).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NIOCREGIF as libc::Ioctl, req as *mut nmreq) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Finds, in a netmap memory region, the (TX, RX) rings of each queue pair a registration
/// bound: `mode` `NR_REG_ALL_NIC` takes every hardware ring pair, `NR_REG_ONE_NIC` ring
/// pair `ringid` only. Returns byte offsets from `mem`, each checked to hold a whole,
/// aligned ring header inside the region ([`NmRing::new`] then checks slots and buffers).
///
/// # Safety
/// `mem` must be valid for reads of `len` bytes and aligned to 8 (a mapping is page
/// aligned), and nobody may write the `netmap_if` while this runs (the kernel writes it only
/// during registration).
unsafe fn locate_rings(
    mem: *const u8,
    len: usize,
    if_offset: usize,
    mode: u32,
    ringid: u16,
) -> std::result::Result<Vec<(usize, usize)>, String> {
    if !if_offset.is_multiple_of(HDR_ALIGN) {
        return Err(format!(
            "netmap_if offset {if_offset} is not 8-byte aligned"
        ));
    }
    if if_offset
        .checked_add(RING_OFS_AT)
        .is_none_or(|end| end > len)
    {
        return Err(format!(
            "netmap_if at {if_offset} lies beyond the {len}-byte region"
        ));
    }
    // SAFETY: the whole fixed part of `netmap_if` is inside the region (checked above) and
    // aligned (`mem` is 8-aligned, `if_offset` a multiple of 8); it is plain integers.
    let nifp = unsafe { mem.add(if_offset) }.cast::<netmap_if>();
    // SAFETY: as above; the fields are read one by one, volatile, as netmap_user.h does.
    let (tx, rx, host_tx, host_rx) = unsafe {
        (
            std::ptr::read_volatile(addr_of!((*nifp).ni_tx_rings)),
            std::ptr::read_volatile(addr_of!((*nifp).ni_rx_rings)),
            std::ptr::read_volatile(addr_of!((*nifp).ni_spare1[0])),
            std::ptr::read_volatile(addr_of!((*nifp).ni_spare1[1])),
        )
    };
    // API >= 14 kernels store the host ring counts here (never 0); older ones leave 0 and
    // always have one host ring per direction.
    let host_tx = if host_tx == 0 { 1 } else { host_tx };
    let host_rx = if host_rx == 0 { 1 } else { host_rx };
    let entries = u64::from(tx) + u64::from(host_tx) + u64::from(rx) + u64::from(host_rx);
    let table = if_offset + RING_OFS_AT;
    let table_end = entries
        .checked_mul(std::mem::size_of::<isize>() as u64)
        .and_then(|b| b.checked_add(table as u64));
    if table_end.is_none_or(|end| end > len as u64) {
        return Err(format!(
            "ring table of {entries} entries at {table} runs past the {len}-byte region"
        ));
    }
    let ring_at = |index: u64, what: &str, i: u32| -> std::result::Result<usize, String> {
        // SAFETY: `index < entries`, so the entry lies inside the table, which lies inside
        // the region (checked above); `table` is 8-aligned (`if_offset` is, and 56 is).
        let ofs =
            unsafe { std::ptr::read_volatile(mem.add(table + index as usize * 8).cast::<isize>()) };
        if ofs == 0 {
            return Err(format!("{what} ring {i} is not bound to this descriptor"));
        }
        let off = (if_offset as isize)
            .checked_add(ofs)
            .filter(|&o| o >= 0)
            .map(|o| o as usize)
            .filter(|&o| {
                o.checked_add(RING_HEADER_BYTES)
                    .is_some_and(|end| end <= len)
            })
            .ok_or_else(|| {
                format!("{what} ring {i} at offset {ofs} from netmap_if is outside the region")
            })?;
        if off % HDR_ALIGN != 0 {
            return Err(format!("{what} ring {i} at {off} is not 8-byte aligned"));
        }
        Ok(off)
    };
    let pair = |i: u32| -> std::result::Result<(usize, usize), String> {
        Ok((
            ring_at(u64::from(i), "TX", i)?,
            ring_at(u64::from(tx) + u64::from(host_tx) + u64::from(i), "RX", i)?,
        ))
    };
    if mode == NR_REG_ONE_NIC {
        let r = u32::from(ringid);
        if r >= tx || r >= rx {
            return Err(format!(
                "ring pair {r} does not exist ({tx} TX and {rx} RX hardware rings)"
            ));
        }
        Ok(vec![pair(r)?])
    } else {
        let n = tx.min(rx);
        if n == 0 {
            return Err("the port has no hardware ring pair".into());
        }
        (0..n).map(pair).collect()
    }
}

/// One registration: the descriptor and the mapping its rings live in, shared by the
/// port's queues. Fields drop in order: unmap, then close.
#[derive(Debug)]
struct Registration {
    map: MmapRaw,
    fd: OwnedFd,
}

impl Registration {
    /// A view of the ring at byte offset `off` of the mapping.
    fn ring(&self, off: usize) -> Result<NmRing> {
        let len = self.map.len();
        if !off.is_multiple_of(HDR_ALIGN)
            || off.checked_add(RING_HEADER_BYTES).is_none_or(|e| e > len)
        {
            return Err(layout_error(format!("ring at {off} is outside the region")));
        }
        // SAFETY: `off + RING_HEADER_BYTES <= len` was checked just above.
        let p = unsafe { self.map.as_mut_ptr().add(off) };
        let ring = NonNull::new(p.cast::<netmap_ring>()).expect("a mapping is never at null");
        // SAFETY: the header lies inside the mapping and is aligned (checked above); the
        // kernel initialised it during registration; the mapping lives as long as `self`,
        // which every queue keeps alive through an `Arc`. `NmRing::new` checks that the slots
        // and buffers lie inside the mapping too.
        unsafe { NmRing::new(ring, self.map.as_mut_ptr(), len) }.ok_or_else(|| {
            layout_error(format!(
                "ring at {off}: empty, or its slots or buffers lie outside the region"
            ))
        })
    }

    /// Issues a sync ioctl (they take no argument and never block).
    fn sync(&self, request: libc::c_uint, what: &'static str) -> Result<()> {
        // SAFETY: `fd` is open; NIOCTXSYNC/NIOCRXSYNC take no argument.
        syscall!(what, unsafe {
            libc::ioctl(self.fd.as_raw_fd(), request as libc::Ioctl)
        })?;
        Ok(())
    }
}

/// Builds one queue per (TX, RX) ring pair.
fn queues(reg: &Arc<Registration>, pairs: &[(usize, usize)]) -> Result<Vec<Box<dyn QueueIo>>> {
    pairs
        .iter()
        .map(|&(t, r)| {
            Ok(Box::new(NetmapQueue {
                tx: reg.ring(t)?,
                rx: reg.ring(r)?,
                reg: Arc::clone(reg),
            }) as Box<dyn QueueIo>)
        })
        .collect()
}

/// Opens a netmap port: `name` is the full port name (`netmap:eth0-1/q=2`, `vale0:a`).
pub(crate) fn open(name: &str, config: &PortConfig) -> Result<Vec<Box<dyn QueueIo>>> {
    let target = parse_name(name)?;
    let fd = open_device(Path::new(DEVICE))?;
    let req = register(&fd, &target, config)?;
    let (memsize, if_offset) = (req.nr_memsize as usize, req.nr_offset as usize);
    if memsize == 0 || if_offset >= memsize {
        return Err(layout_error(format!(
            "NIOCREGIF returned memsize {memsize}, offset {if_offset}"
        )));
    }
    let map = MmapOptions::new()
        .len(memsize)
        .map_raw(&fd)
        .map_err(|e| Error::io("mapping /dev/netmap", e))?;
    // SAFETY: the mapping is readable for `map.len()` bytes and page aligned; the kernel
    // wrote the netmap_if during registration and leaves it alone afterwards.
    let pairs = unsafe {
        locate_rings(
            map.as_ptr(),
            map.len(),
            if_offset,
            target.mode,
            target.ringid,
        )
    }
    .map_err(layout_error)?;
    queues(&Arc::new(Registration { map, fd }), &pairs)
}

/// One ring pair of a netmap port.
#[derive(Debug)]
struct NetmapQueue {
    tx: NmRing,
    rx: NmRing,
    reg: Arc<Registration>,
}

impl QueueIo for NetmapQueue {
    fn rxsync(&mut self) -> Result<usize> {
        self.reg.sync(NIOCRXSYNC, "NIOCRXSYNC")?;
        Ok(self.rx.space() as usize)
    }

    #[inline]
    fn rx_available(&self) -> usize {
        self.rx.space() as usize
    }

    #[inline]
    fn rx_frame(&self, i: usize) -> &[u8] {
        assert!(
            i < self.rx_available(),
            "rx_frame({i}) beyond available frames"
        );
        self.rx.frame(self.rx.add(self.rx.head(), i as u32))
    }

    #[inline]
    fn rx_release(&mut self, n: usize) {
        assert!(
            n <= self.rx_available(),
            "rx_release({n}) beyond available frames"
        );
        let h = self.rx.add(self.rx.head(), n as u32);
        self.rx.set_head_cur(h);
    }

    fn txsync(&mut self) -> Result<usize> {
        self.reg.sync(NIOCTXSYNC, "NIOCTXSYNC")?;
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
        assert!(len <= self.buf_size(), "tx_push({len}) beyond buffer size");
        let h = self.tx.head();
        let mut slot = self.tx.slot(h);
        slot.len = len as u16;
        // No NS_REPORT, no NS_MOREFRAG: one slot, one frame. `buf_idx` and `ptr` (netmap's
        // buffer offset field) stay as the kernel left them.
        slot.flags = 0;
        self.tx.set_slot(h, slot);
        // Another queue's thread may txsync this ring through the shared descriptor at any
        // moment: the slot must be visible before `head` moves past it.
        fence(Ordering::Release);
        let next = self.tx.next(h);
        self.tx.set_head_cur(next);
    }

    /// `num_slots - 1 - tx_space()`: frames pushed and not yet reported done.
    fn tx_pending(&self) -> usize {
        self.tx
            .distance(self.tx.next(self.tx.tail()), self.tx.head()) as usize
    }

    fn buf_size(&self) -> usize {
        // `len` is 16 bits: a 64 KiB buffer carries at most 65535 bytes.
        (self.tx.buf_size() as usize).min(usize::from(u16::MAX))
    }

    fn arm(&mut self, rx: bool, tx: bool) -> Result<Option<WaitSpec>> {
        Ok(Some(WaitSpec::readiness(self.reg.fd.as_raw_fd(), rx, tx)))
    }

    fn disarm(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{init_ring, SLOT_BYTES};
    use crate::Port;

    #[test]
    fn names_parse_into_ifname_mode_and_ring() {
        let t = |n: &str| {
            let t = parse_name(n).unwrap();
            (t.ifname, t.mode, t.ringid, t.vale)
        };
        assert_eq!(t("netmap:eth0"), ("eth0".into(), NR_REG_ALL_NIC, 0, false));
        assert_eq!(
            t("netmap:eth0-1"),
            ("eth0".into(), NR_REG_ONE_NIC, 1, false)
        );
        assert_eq!(
            t("netmap:eth0-12/q=2"),
            ("eth0".into(), NR_REG_ONE_NIC, 12, false)
        );
        assert_eq!(
            t("netmap:ens1f0/slots=64"),
            ("ens1f0".into(), NR_REG_ALL_NIC, 0, false)
        );
        // A '-' not followed by digits only is part of the interface name.
        assert_eq!(
            t("netmap:veth-a"),
            ("veth-a".into(), NR_REG_ALL_NIC, 0, false)
        );
        assert_eq!(
            t("netmap:veth-a-3"),
            ("veth-a".into(), NR_REG_ONE_NIC, 3, false)
        );
        assert_eq!(
            t("vale0:psioa"),
            ("vale0:psioa".into(), NR_REG_ALL_NIC, 0, true)
        );
        assert_eq!(
            t("valeX:p-1/q=2"),
            ("valeX:p-1".into(), NR_REG_ALL_NIC, 0, true)
        );
    }

    #[test]
    fn bad_names_say_why() {
        for (name, why) in [
            ("netmap:eth0^", "not supported"),
            ("netmap:x{1", "not supported"),
            ("netmap:x}1", "not supported"),
            ("netmap:-1", "empty interface"),
            ("netmap:eth0-4096", "out of range"),
            ("netmap:eth0-99999", "out of range"),
            ("netmap:averyverylongifname", "1..=15 bytes"),
            ("vale0:averylongportname", "1..=15 bytes"),
            ("vale0:", "empty VALE"),
            ("shm:x", "not netmap's"),
            ("eth0", "missing ':'"),
        ] {
            let e = parse_name(name).unwrap_err();
            assert!(matches!(e, Error::BadPortName { .. }), "{name}: {e}");
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        // Through the public entry point, before the device is touched.
        let e = Port::open("netmap:eth0^").unwrap_err();
        assert!(matches!(e, Error::BadPortName { .. }), "{e}");
    }

    #[test]
    fn a_missing_device_is_netmap_missing() {
        let e = open_device(Path::new("/nonexistent-psio-dir/netmap")).unwrap_err();
        assert!(matches!(e, Error::NetmapMissing), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("/dev/netmap not found"), "{msg}");
        assert!(msg.contains("netmap kernel module"), "{msg}");
        if !Path::new(DEVICE).exists() {
            for name in ["netmap:eth0", "netmap:eth0-1/q=2", "vale0:psio"] {
                let e = Port::open(name).unwrap_err();
                assert!(matches!(e, Error::NetmapMissing), "{name}: {e}");
            }
        }
    }

    #[test]
    fn errnos_map_to_typed_errors() {
        let os = io::Error::from_raw_os_error;
        assert!(matches!(
            device_error(os(libc::ENOENT)),
            Error::NetmapMissing
        ));
        assert!(matches!(
            device_error(os(libc::ENXIO)),
            Error::NetmapMissing
        ));
        let e = device_error(os(libc::EACCES));
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("/dev/netmap needs root: run as root"),
            "{e}"
        );
        assert!(matches!(
            device_error(os(libc::EPERM)),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(device_error(os(libc::EMFILE)), Error::Io { .. }));

        for errno in [libc::ENXIO, libc::ENOENT] {
            match register_error(os(errno), "eth9") {
                Error::NoSuchInterface(n) => assert_eq!(n, "eth9"),
                e => panic!("{e}"),
            }
        }
        assert!(matches!(
            register_error(os(libc::EPERM), "x"),
            Error::PermissionDenied { .. }
        ));
        let e = register_error(os(libc::EINVAL), "x");
        assert!(e.to_string().contains("ring beyond"), "{e}");
        assert!(matches!(
            register_error(os(libc::EBUSY), "x"),
            Error::Io { .. }
        ));

        // The registration ioctl on something that is not netmap (ENOTTY): no retry, and
        // an error that names the call.
        let null: OwnedFd = OpenOptions::new()
            .read(true)
            .open("/dev/null")
            .unwrap()
            .into();
        let target = parse_name("netmap:eth0-1").unwrap();
        let Err(e) = register(&null, &target, &PortConfig::default()) else {
            panic!("/dev/null accepted NIOCREGIF");
        };
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().starts_with("NIOCREGIF"), "{e}");
    }

    // ---- A netmap memory region built by hand ------------------------------------------

    const IF_OFF: usize = 128;
    const RINGS_AT: usize = 4096;
    const SLOTS: u32 = 8;
    const BUF: u32 = 2048;
    const STRIDE: usize = 512; // >= RING_HEADER_BYTES + SLOTS * SLOT_BYTES, 64-aligned

    /// A fake region: a `netmap_if` at `IF_OFF` describing `n` TX and `n` RX hardware
    /// rings, of which those with `bound(i)` have a ring (the rest have offset 0); `host`
    /// is the new-style host ring count (0: an old kernel's layout, one host ring each).
    struct Fake {
        map: MmapRaw,
        /// Offsets of TX ring i and RX ring i (whether bound or not).
        tx: Vec<usize>,
        rx: Vec<usize>,
    }

    impl Fake {
        fn new(n: u32, host: u32, bound: impl Fn(u32) -> bool) -> Fake {
            let nrings = 2 * n as usize;
            let bufs = RINGS_AT + nrings * STRIDE;
            let bufs = bufs.div_ceil(4096) * 4096;
            let len = bufs + nrings * SLOTS as usize * BUF as usize;
            let map: MmapRaw = MmapOptions::new().len(len).map_anon().unwrap().into();
            let base = map.as_mut_ptr();
            let mut name = [0 as libc::c_char; IFNAMSIZ];
            for (d, s) in name.iter_mut().zip(b"fake0".iter()) {
                *d = *s as libc::c_char;
            }
            let nif = netmap_if {
                ni_name: name,
                ni_version: 0,
                ni_flags: 0,
                ni_tx_rings: n,
                ni_rx_rings: n,
                ni_bufs_head: 0,
                ni_spare1: [host, host, 0, 0, 0],
                ring_ofs: [],
            };
            // SAFETY: IF_OFF is 8-aligned and the netmap_if fits well inside the first page
            // of a fresh private mapping nobody else sees.
            unsafe { base.add(IF_OFF).cast::<netmap_if>().write(nif) };
            let hosts = host.max(1) as usize;
            let table = IF_OFF + RING_OFS_AT;
            let mut entries = vec![0isize; 2 * (n as usize + hosts)];
            let (mut tx, mut rx) = (Vec::new(), Vec::new());
            for i in 0..n as usize {
                for dir_tx in [true, false] {
                    let k = 2 * i + usize::from(!dir_tx);
                    let off = RINGS_AT + k * STRIDE;
                    // SAFETY: ring k's STRIDE bytes lie between RINGS_AT and `bufs`.
                    unsafe {
                        init_ring(
                            base.add(off).cast(),
                            i as u16,
                            dir_tx,
                            SLOTS,
                            BUF,
                            bufs as i64 - off as i64,
                            (k * SLOTS as usize) as u32,
                        )
                    };
                    let entry = if dir_tx { i } else { n as usize + hosts + i };
                    if bound(i as u32) {
                        entries[entry] = off as isize - IF_OFF as isize;
                    }
                    if dir_tx { &mut tx } else { &mut rx }.push(off);
                }
            }
            assert!(table + entries.len() * 8 <= RINGS_AT);
            for (j, e) in entries.iter().enumerate() {
                // SAFETY: the table lies between the netmap_if and RINGS_AT (asserted).
                unsafe { base.add(table + j * 8).cast::<isize>().write(*e) };
            }
            assert!(RING_HEADER_BYTES + SLOTS as usize * SLOT_BYTES <= STRIDE);
            Fake { map, tx, rx }
        }

        fn locate(
            &self,
            if_off: usize,
            mode: u32,
            ring: u16,
        ) -> std::result::Result<Vec<(usize, usize)>, String> {
            // SAFETY: the mapping is readable for its length and page aligned.
            unsafe { locate_rings(self.map.as_ptr(), self.map.len(), if_off, mode, ring) }
        }

        fn set_entry(&self, j: usize, v: isize) {
            // SAFETY: callers pass an index inside the table the constructor wrote.
            unsafe {
                self.map
                    .as_mut_ptr()
                    .add(IF_OFF + RING_OFS_AT + j * 8)
                    .cast::<isize>()
                    .write(v)
            };
        }

        fn set_u32(&self, off: usize, v: u32) {
            assert!(off.is_multiple_of(4) && off + 4 <= self.map.len());
            // SAFETY: in bounds and aligned (asserted).
            unsafe { self.map.as_mut_ptr().add(off).cast::<u32>().write(v) };
        }

        /// A view of the ring at `off`, to play the kernel's side.
        fn kernel_view(&self, off: usize) -> NmRing {
            let p = NonNull::new(self.map.as_mut_ptr().wrapping_add(off).cast()).unwrap();
            // SAFETY: `off` is one of the rings the constructor initialised inside the map,
            // which outlives the view within each test.
            unsafe { NmRing::new(p, self.map.as_mut_ptr(), self.map.len()) }.unwrap()
        }
    }

    #[test]
    fn locate_finds_every_ring_pair_of_an_all_nic_registration() {
        for host in [0, 1, 3] {
            let f = Fake::new(3, host, |_| true);
            let pairs = f.locate(IF_OFF, NR_REG_ALL_NIC, 0).unwrap();
            let want: Vec<_> = f.tx.iter().copied().zip(f.rx.iter().copied()).collect();
            assert_eq!(pairs, want, "host rings {host}");
            // The rings found are the rings built: their ids and directions match.
            for (i, &(t, r)) in pairs.iter().enumerate() {
                // SAFETY: `locate` checked both headers lie inside the mapping.
                let (tid, tdir, rid, rdir) = unsafe {
                    let tp = f.map.as_ptr().add(t).cast::<netmap_ring>();
                    let rp = f.map.as_ptr().add(r).cast::<netmap_ring>();
                    ((*tp).ringid, (*tp).dir, (*rp).ringid, (*rp).dir)
                };
                assert_eq!((tid, tdir, rid, rdir), (i as u16, 0, i as u16, 1));
            }
        }
    }

    #[test]
    fn locate_one_nic_takes_only_its_ring_pair() {
        let f = Fake::new(4, 0, |i| i == 2);
        assert_eq!(
            f.locate(IF_OFF, NR_REG_ONE_NIC, 2).unwrap(),
            vec![(f.tx[2], f.rx[2])]
        );
        let e = f.locate(IF_OFF, NR_REG_ONE_NIC, 1).unwrap_err();
        assert!(e.contains("not bound"), "{e}");
        let e = f.locate(IF_OFF, NR_REG_ONE_NIC, 4).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        // Asking for all rings of a descriptor that bound one is a mismatch, not a crash.
        assert!(f.locate(IF_OFF, NR_REG_ALL_NIC, 0).is_err());
    }

    #[test]
    fn locate_rejects_anything_outside_the_region() {
        let f = Fake::new(2, 0, |_| true);
        let len = f.map.len();
        // The netmap_if itself.
        assert!(f
            .locate(len, NR_REG_ALL_NIC, 0)
            .unwrap_err()
            .contains("beyond"));
        assert!(f
            .locate(len - 16, NR_REG_ALL_NIC, 0)
            .unwrap_err()
            .contains("beyond"));
        assert!(f.locate(usize::MAX - 7, NR_REG_ALL_NIC, 0).is_err());
        assert!(f
            .locate(IF_OFF + 4, NR_REG_ALL_NIC, 0)
            .unwrap_err()
            .contains("aligned"));
        // A ring table longer than the region.
        let tx_rings_at = IF_OFF + std::mem::offset_of!(netmap_if, ni_tx_rings);
        f.set_u32(tx_rings_at, u32::MAX);
        assert!(f
            .locate(IF_OFF, NR_REG_ALL_NIC, 0)
            .unwrap_err()
            .contains("runs past"));
        f.set_u32(tx_rings_at, 2);
        assert!(f.locate(IF_OFF, NR_REG_ALL_NIC, 0).is_ok());
        // Ring offsets: past the end, header straddling the end, before the start,
        // misaligned, overflowing.
        let rel = |abs: usize| abs as isize - IF_OFF as isize;
        for (bad, why) in [
            (rel(len), "outside"),
            (rel(len - RING_HEADER_BYTES + 8), "outside"),
            (-(IF_OFF as isize) - 8, "outside"),
            (rel(f.tx[1] + 4), "aligned"),
            (isize::MAX, "outside"),
            (isize::MIN, "outside"),
        ] {
            f.set_entry(1, bad);
            let e = f.locate(IF_OFF, NR_REG_ALL_NIC, 0).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        f.set_entry(1, rel(f.tx[1]));
        // An RX entry (index 2 TX + 1 host = 3 for RX ring 0) pointing outside.
        f.set_entry(3, rel(len));
        assert!(f
            .locate(IF_OFF, NR_REG_ALL_NIC, 0)
            .unwrap_err()
            .contains("RX ring 0"));
    }

    #[test]
    fn a_ring_whose_slots_leave_the_region_is_refused() {
        let f = Fake::new(1, 0, |_| true);
        let pairs = f.locate(IF_OFF, NR_REG_ALL_NIC, 0).unwrap();
        // Inflate the RX ring's slot count so its slots run past the end.
        let num_slots_at = f.rx[0] + std::mem::offset_of!(netmap_ring, num_slots);
        f.set_u32(num_slots_at, u32::MAX / 16);
        let dev_null = OpenOptions::new().read(true).open("/dev/null").unwrap();
        let reg = Arc::new(Registration {
            map: f.map,
            fd: dev_null.into(),
        });
        let Err(e) = queues(&reg, &pairs) else {
            panic!("a ring reaching past the region was accepted");
        };
        assert!(e.to_string().contains("outside the region"), "{e}");
        assert!(reg.ring(reg.map.len()).is_err());
        assert!(reg.ring(usize::MAX).is_err());
    }

    #[test]
    fn queues_over_a_fake_region_follow_netmap_semantics() {
        let f = Fake::new(2, 0, |_| true);
        let pairs = f.locate(IF_OFF, NR_REG_ALL_NIC, 0).unwrap();
        let mut k_rx = f.kernel_view(f.rx[1]);
        let k_tx = f.kernel_view(f.tx[1]);
        // /dev/null stands in for the netmap descriptor: the sync ioctls fail on it.
        let dev_null = OpenOptions::new().read(true).open("/dev/null").unwrap();
        let fd = dev_null.as_raw_fd();
        let reg = Arc::new(Registration {
            map: f.map,
            fd: dev_null.into(),
        });
        let mut qs = queues(&reg, &pairs).unwrap();
        assert_eq!(qs.len(), 2);
        let q = &mut qs[1];
        assert_eq!(q.buf_size(), BUF as usize);

        // RX: the "kernel" fills 3 slots and moves tail.
        for i in 0..3u32 {
            k_rx.buf_mut(i)[..2].copy_from_slice(&[0xa0 + i as u8, 7]);
            k_rx.set_len(i, 2);
        }
        assert_eq!(q.rx_available(), 0);
        k_rx.set_tail(3);
        assert_eq!(q.rx_available(), 3);
        assert_eq!(q.rx_frame(0), &[0xa0, 7]);
        assert_eq!(q.rx_frame(2), &[0xa2, 7]);
        q.rx_release(2);
        assert_eq!((k_rx.head(), k_rx.cur()), (2, 2));
        assert_eq!(q.rx_available(), 1);
        assert_eq!(q.rx_frame(0), &[0xa2, 7]);

        // TX: every slot but one is free; pushing sets len, clears flags, moves head/cur.
        assert_eq!(q.tx_space(), SLOTS as usize - 1);
        assert_eq!(q.tx_pending(), 0);
        q.tx_buf(0)[..4].copy_from_slice(b"ping");
        q.tx_push(4);
        q.tx_buf(0)[0] = 1;
        q.tx_push(1);
        assert_eq!((k_tx.head(), k_tx.cur()), (2, 2));
        assert_eq!((k_tx.slot(0).len, k_tx.slot(0).flags), (4, 0));
        assert_eq!(k_tx.frame(0), b"ping");
        assert_eq!(k_tx.frame(1), &[1]);
        assert_eq!(q.tx_space(), SLOTS as usize - 3);
        assert_eq!(q.tx_pending(), 2);

        // Sleeping: the descriptor itself, with the events asked for.
        let w = q.arm(true, false).unwrap().unwrap();
        assert_eq!((w.fd, w.events), (fd, libc::POLLIN));
        q.disarm();
        let w = q.arm(true, true).unwrap().unwrap();
        assert_eq!((w.fd, w.events), (fd, libc::POLLIN | libc::POLLOUT));
        q.disarm();
        // The sync ioctls reach the descriptor (and fail on /dev/null, naming themselves).
        let e = q.txsync().unwrap_err().to_string();
        assert!(e.starts_with("NIOCTXSYNC"), "{e}");
        let e = q.rxsync().unwrap_err().to_string();
        assert!(e.starts_with("NIOCRXSYNC"), "{e}");

        // The "kernel" reports both frames sent: tail moves to head - 1.
        let mut k_tx = k_tx;
        k_tx.set_tail(1);
        assert_eq!(q.tx_pending(), 0);
        assert_eq!(q.tx_space(), SLOTS as usize - 1);
        let w = q.arm(false, false).unwrap().unwrap();
        assert_eq!(w.events, 0);
        drop(qs);
        drop(reg);
    }

    #[test]
    #[should_panic(expected = "beyond available frames")]
    fn reading_past_the_received_frames_is_api_misuse() {
        let f = Fake::new(1, 0, |_| true);
        let pairs = f.locate(IF_OFF, NR_REG_ALL_NIC, 0).unwrap();
        let dev_null = OpenOptions::new().read(true).open("/dev/null").unwrap();
        let reg = Arc::new(Registration {
            map: f.map,
            fd: dev_null.into(),
        });
        let qs = queues(&reg, &pairs).unwrap();
        let _ = qs[0].rx_frame(0);
    }

    /// Runs only where the netmap module is loaded: two ports of one VALE switch.
    #[test]
    fn vale_ports_carry_frames_one_way() {
        if !Path::new(DEVICE).exists() {
            println!("skipped: /dev/netmap not present");
            return;
        }
        let mut a = Port::open("vale0:psioa").unwrap();
        let mut b = Port::open("vale0:psiob").unwrap();
        let (qa, qb) = (a.queue(0), b.queue(0));
        let n = 32u8.min(qa.tx_space() as u8);
        assert!(n > 0);
        // Broadcast frames: the switch floods them to every other port, so b gets them
        // whatever it has learnt. EtherType 0x88b5 is for local experiments.
        let frame = |i: u8| -> Vec<u8> {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0a, 0x88, 0xb5]);
            f.extend((0..46).map(|j: u8| i.wrapping_add(j)));
            f
        };
        for i in 0..n {
            let f = frame(i);
            qa.tx_buf(0)[..f.len()].copy_from_slice(&f);
            qa.tx_push(f.len());
        }
        qa.txsync().unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < n as usize && std::time::Instant::now() < deadline {
            let k = qb.rxsync().unwrap();
            for i in 0..k {
                got.push(qb.rx_frame(i).to_vec());
            }
            qb.rx_release(k);
            if k == 0 {
                qa.txsync().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let want: Vec<_> = (0..n).map(frame).collect();
        assert_eq!(got, want);
    }
}
