//! `mtcp-bench vethcost` (root): the kernel CPU a user-level stack pays per frame on a veth
//! pair, through the two kernel paths a process can use without a kernel module:
//!
//! - `af_packet`: psio's `afpacket:` rings (TX ring, one `sendto` kick per batch; RX ring),
//!   the receiving end's own IPv4 path cut after the packet taps, as the veth stacks of
//!   `compare` run ([`Namespaces::reserve_for_user_stack`]);
//! - `af_xdp`: an `AF_XDP` socket in copy mode (veth has no zero-copy mode) on each end, an
//!   XDP program on the receiving veth redirecting every frame to the socket (`XSKMAP`), TX
//!   descriptors kicked by one `sendto` per batch.
//!
//! One-way runs of 64-byte frames from one namespace to the other, batch 1 and 32, veth in
//! its default mode (the receiving side's work runs in the sender's system call, or in
//! `ksoftirqd`, both counted). The figure is `kernel_ns_per_frame`: system CPU of sender and
//! receiver threads plus `ksoftirqd`/NAPI kernel threads, per delivered frame. The receiver
//! spins on its ring (user time, not counted there). Every frame carries its sequence number
//! and is checked ([`fill_frame`]/[`check_frame`]).
//!
//! The point of the measurement: `compare`'s HTTP target over veth (5× nginx + wrk) is bound
//! by this per-frame cost, and AF_XDP is the other way in this kernel; see README.

use crate::cpu::{median, pin};
use crate::netns::{self, Namespaces, VethPair};
use crate::psio_bench::{check_frame, fill_frame};
use psio::{Port, PortConfig, PortSet};
use serde::Serialize;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const FRAME_BYTES: usize = 64;
const TX_CPU: usize = 0;
const RX_CPU: usize = 1;
/// How long the receiver waits for more frames once the sender is done.
const QUIET: Duration = Duration::from_millis(500);

/// One line of the result table, one JSON record.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// `af_packet` or `af_xdp`.
    pub path: String,
    /// Frames per kick (`sendto`).
    pub batch: usize,
    /// Frames delivered and verified.
    pub frames: u64,
    /// Frames sent that never arrived (dropped by the kernel for a full receive ring).
    pub lost: u64,
    /// Million frames per second.
    pub mpps: f64,
    /// System CPU of both threads plus kernel threads, per frame.
    pub kernel_ns_per_frame: f64,
    /// The sender thread's user CPU per frame (building frames, ring bookkeeping).
    pub tx_user_ns_per_frame: f64,
}

/// (user, system) CPU of the calling thread.
fn thread_times() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is valid; getrusage writes into it.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    let d = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (d(r.ru_utime), d(r.ru_stime))
}

/// CPU time of the kernel threads that run network receive work (`ksoftirqd/*`, `napi/*`).
fn kernel_threads_cpu() -> Duration {
    let ticks = 100.0; // USER_HZ
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for e in dir.flatten() {
        let p = e.path();
        let Ok(comm) = std::fs::read_to_string(p.join("comm")) else {
            continue;
        };
        if !(comm.starts_with("ksoftirqd") || comm.starts_with("napi/")) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: utime and stime are 12th and 13th.
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if f.len() > 12 {
            total +=
                (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / ticks;
        }
    }
    Duration::from_secs_f64(total)
}

/// What a side measured: frames, (user, sys) spent.
struct Side {
    frames: u64,
    user: Duration,
    sys: Duration,
}

/// Runs the cases (root only), `runs` times each, keeping the median by kernel CPU.
pub fn run(frames: u64, runs: usize) -> Result<Vec<Record>, String> {
    if !netns::is_root() {
        return Err(netns::skip_message("vethcost benchmark"));
    }
    let mut lab = Namespaces::new("vcost");
    let pair = lab
        .veth_pair("vcost-tx", "vcost-rx")
        .map_err(|e| format!("setting up namespaces: {e}"))?;
    for (ns, dev) in [(&pair.ns_a, &pair.dev_a), (&pair.ns_b, &pair.dev_b)] {
        lab.disable_offloads(ns, dev)
            .map_err(|e| format!("turning offloads off on {dev}: {e}"))?;
    }
    lab.reserve_for_user_stack(&pair.ns_b, &pair.dev_b)
        .map_err(|e| format!("nft ingress drop on {}: {e}", pair.dev_b))?;
    let mut out = Vec::new();
    for path in ["af_packet", "af_xdp"] {
        for batch in [1, 32] {
            let mut rs = Vec::new();
            for _ in 0..runs.max(1) {
                rs.push(one(&pair, path, frames, batch)?);
            }
            let mid = median(&rs.iter().map(|r| r.kernel_ns_per_frame).collect::<Vec<_>>());
            let r = rs
                .into_iter()
                .find(|r| r.kernel_ns_per_frame == mid)
                .expect("the median is one of the runs");
            print_row(&r);
            out.push(r);
        }
    }
    Ok(out)
}

/// Prints the table's header.
pub fn print_header() {
    println!(
        "{:<10} {:>5} {:>9} {:>7} {:>7} {:>18} {:>16}",
        "path", "batch", "frames", "lost", "Mpps", "kernel ns/frame", "tx user ns/frame"
    );
}

fn print_row(r: &Record) {
    println!(
        "{:<10} {:>5} {:>9} {:>7} {:>7.2} {:>18.0} {:>16.0}",
        r.path, r.batch, r.frames, r.lost, r.mpps, r.kernel_ns_per_frame, r.tx_user_ns_per_frame
    );
}

fn one(pair: &VethPair, path: &'static str, frames: u64, batch: usize) -> Result<Record, String> {
    let start = Arc::new(Barrier::new(2));
    let (rx_start, rx_dev) = (start.clone(), pair.dev_b.clone());
    let k0 = kernel_threads_cpu();
    let sent_all = Arc::new(AtomicBool::new(false));
    let rx_sent_all = sent_all.clone();
    let receiver = netns::spawn_in(&pair.ns_b, move || -> Result<(Side, Instant), String> {
        pin(RX_CPU);
        let io = Endpoint::open(path, &rx_dev, true);
        rx_start.wait();
        let mut io = io?;
        let (u0, s0) = thread_times();
        // A veth (like a NIC) drops what its receiver's rings cannot take: gaps are counted
        // as lost, reordered or damaged frames are errors.
        let (mut expect, mut delivered) = (0u64, 0u64);
        let mut last = Instant::now();
        while expect < frames {
            let before = delivered;
            io.recv(&mut |f| {
                // The kernel's own frames (none expected with IPv6 off) are skipped.
                if let Some(seq) = check_frame(f).filter(|_| f.len() == FRAME_BYTES) {
                    if seq < expect || seq >= frames {
                        return Err(format!("frame {expect} arrived as {seq}"));
                    }
                    expect = seq + 1;
                    delivered += 1;
                }
                Ok(())
            })?;
            if delivered != before {
                last = Instant::now();
            } else if rx_sent_all.load(Ordering::Acquire) && last.elapsed() > QUIET {
                break;
            }
        }
        let (u1, s1) = thread_times();
        Ok((
            Side {
                frames: delivered,
                user: u1 - u0,
                sys: s1 - s0,
            },
            last,
        ))
    });
    let tx_dev = pair.dev_a.clone();
    let sender = netns::spawn_in(&pair.ns_a, move || -> Result<(Side, Instant), String> {
        // However the sender ends, the receiver learns that nothing more is coming.
        struct Done(Arc<AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(sent_all);
        pin(TX_CPU);
        let io = Endpoint::open(path, &tx_dev, false);
        start.wait();
        let mut io = io?;
        let t0 = Instant::now();
        let (u0, s0) = thread_times();
        let mut seq = 0u64;
        while seq < frames {
            let n = batch.min((frames - seq) as usize);
            seq += io.send(n, &mut |k, buf| fill_frame(buf, seq + k as u64))? as u64;
        }
        io.flush()?;
        let (u1, s1) = thread_times();
        Ok((
            Side {
                frames: seq,
                user: u1 - u0,
                sys: s1 - s0,
            },
            t0,
        ))
    });
    let tx = sender.join().map_err(|_| "sender panicked".to_string());
    let rx = receiver.join().map_err(|_| "receiver panicked".to_string());
    let ((tx, t0), (rx, done)) = (
        tx?.map_err(|e| e.to_string())??,
        rx?.map_err(|e| e.to_string())??,
    );
    let kthreads = kernel_threads_cpu().saturating_sub(k0);
    let n = rx.frames.max(1) as f64;
    Ok(Record {
        path: path.into(),
        batch,
        frames: rx.frames,
        lost: tx.frames - rx.frames,
        mpps: rx.frames as f64 / (done - t0).as_secs_f64() / 1e6,
        kernel_ns_per_frame: (tx.sys + rx.sys + kthreads).as_nanos() as f64 / n,
        tx_user_ns_per_frame: tx.user.as_nanos() as f64 / n,
    })
}

/// One end of a run: psio's af_packet rings or an AF_XDP socket.
enum Endpoint {
    Packet(PortSet),
    Xdp(Box<xsk::Socket>),
}

impl Endpoint {
    fn open(path: &str, dev: &str, receive: bool) -> Result<Endpoint, String> {
        match path {
            "af_packet" => {
                let config = PortConfig {
                    slots: 4096,
                    ..PortConfig::default()
                };
                let port = Port::open_with(&format!("afpacket:{dev}"), &config)
                    .map_err(|e| e.to_string())?;
                let mut set = PortSet::new().map_err(|e| e.to_string())?;
                set.add(port);
                Ok(Endpoint::Packet(set))
            }
            _ => xsk::Socket::open(dev, receive)
                .map(|s| Endpoint::Xdp(Box::new(s)))
                .map_err(|e| format!("AF_XDP on {dev}: {e}")),
        }
    }

    /// Sends up to `n` frames written by `fill(k, buf)`, one kick; returns how many went.
    fn send(&mut self, n: usize, fill: &mut dyn FnMut(usize, &mut [u8])) -> Result<usize, String> {
        match self {
            Endpoint::Packet(set) => {
                let q = set.port(0).queue(0);
                if q.tx_space() == 0 {
                    q.txsync().map_err(|e| e.to_string())?;
                }
                let k = q.tx_space().min(n);
                for i in 0..k {
                    fill(i, &mut q.tx_buf(0)[..FRAME_BYTES]);
                    q.tx_push(FRAME_BYTES);
                }
                q.txsync().map_err(|e| e.to_string())?;
                Ok(k)
            }
            Endpoint::Xdp(s) => s.send(n, fill).map_err(|e| e.to_string()),
        }
    }

    /// Waits until everything queued has left.
    fn flush(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pending = match self {
                Endpoint::Packet(set) => {
                    let q = set.port(0).queue(0);
                    q.txsync().map_err(|e| e.to_string())?;
                    q.tx_pending()
                }
                Endpoint::Xdp(s) => s.pending(),
            };
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{pending} frames still queued after 10 s"));
            }
            std::thread::yield_now();
        }
    }

    /// Hands every frame that has arrived to `f`.
    fn recv(&mut self, f: &mut dyn FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
        match self {
            Endpoint::Packet(set) => {
                let q = set.port(0).queue(0);
                if q.rx_available() == 0 {
                    q.rxsync().map_err(|e| e.to_string())?;
                }
                let k = q.rx_available();
                for i in 0..k {
                    f(q.rx_frame(i))?;
                }
                q.rx_release(k);
                Ok(())
            }
            Endpoint::Xdp(s) => s.recv(f),
        }
    }
}

/// A minimal AF_XDP socket (copy mode, queue 0) with its own UMEM, and on a receiving end
/// an XDP program that redirects every frame of the device to it. Everything is released
/// when the socket drops (the program is attached through a BPF link, detached on close).
mod xsk {
    use super::{AtomicU32, CString, Ordering};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const FRAME: u32 = 2048;
    const NFRAMES: u32 = 8192;
    const RING: u32 = 2048;
    const BPF_MAP_CREATE: i32 = 0;
    const BPF_MAP_UPDATE_ELEM: i32 = 2;
    const BPF_PROG_LOAD: i32 = 5;
    const BPF_LINK_CREATE: i32 = 28;
    const BPF_MAP_TYPE_XSKMAP: u32 = 17;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const XDP_PASS: i32 = 2;
    const BPF_FUNC_REDIRECT_MAP: i32 = 51;

    /// `bpf(2)` with a 128-byte attribute block.
    fn bpf(cmd: i32, attr: &mut [u8; 128]) -> io::Result<i64> {
        // SAFETY: `attr` is a valid, writable buffer of the size passed; the kernel reads the
        // fields of `cmd` from it and ignores zeroed ones.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r)
    }

    /// `bpf(2)` for a command that returns a new descriptor.
    fn bpf_fd(cmd: i32, attr: &mut [u8; 128]) -> io::Result<OwnedFd> {
        let r = bpf(cmd, attr)?;
        // SAFETY: MAP_CREATE, PROG_LOAD and LINK_CREATE return a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }

    fn put(a: &mut [u8; 128], off: usize, v: &[u8]) {
        a[off..off + v.len()].copy_from_slice(v);
    }

    /// One eBPF instruction.
    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | (u64::from(dst | (src << 4)) << 8)
            | (u64::from(off as u16) << 16)
            | (u64::from(imm as u32) << 32)
    }

    /// A ring shared with the kernel: producer and consumer indices and descriptors.
    struct Ring {
        prod: *const AtomicU32,
        cons: *const AtomicU32,
        desc: *mut u8,
        mask: u32,
        map: (*mut libc::c_void, usize),
    }

    impl Ring {
        fn map(
            fd: &OwnedFd,
            off: &libc::xdp_ring_offset,
            desc: usize,
            pgoff: i64,
        ) -> io::Result<Ring> {
            let len = off.desc as usize + RING as usize * desc;
            // SAFETY: mapping the ring the kernel created for this socket at its page offset;
            // checked for failure below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    pgoff,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let b = p as *mut u8;
            // SAFETY: the offsets come from XDP_MMAP_OFFSETS and lie inside the mapping; the
            // kernel aligns the indices for atomic access.
            unsafe {
                Ok(Ring {
                    prod: b.add(off.producer as usize) as *const AtomicU32,
                    cons: b.add(off.consumer as usize) as *const AtomicU32,
                    desc: b.add(off.desc as usize),
                    mask: RING - 1,
                    map: (p, len),
                })
            }
        }
        fn prod(&self) -> &AtomicU32 {
            // SAFETY: points into the live mapping (unmapped only in Drop).
            unsafe { &*self.prod }
        }
        fn cons(&self) -> &AtomicU32 {
            // SAFETY: as in `prod`.
            unsafe { &*self.cons }
        }
        /// The 8-byte descriptor (UMEM address) at index `i` of a fill/completion ring.
        fn addr(&self, i: u32) -> *mut u64 {
            // SAFETY: masked index inside the descriptor array of RING entries.
            unsafe { (self.desc as *mut u64).add((i & self.mask) as usize) }
        }
        /// The 16-byte descriptor at index `i` of an RX/TX ring.
        fn xdp_desc(&self, i: u32) -> *mut libc::xdp_desc {
            // SAFETY: as in `addr`.
            unsafe { (self.desc as *mut libc::xdp_desc).add((i & self.mask) as usize) }
        }
    }

    impl Drop for Ring {
        fn drop(&mut self) {
            // SAFETY: unmapping our own mapping once.
            unsafe { libc::munmap(self.map.0, self.map.1) };
        }
    }

    /// The socket, its UMEM and rings, and (receiving end) the XDP program's map and link.
    pub struct Socket {
        rx: Ring,
        tx: Ring,
        fill: Ring,
        comp: Ring,
        umem: (*mut u8, usize),
        free: Vec<u64>,
        in_flight: usize,
        fd: OwnedFd,
        _xdp: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    }

    // SAFETY: the raw pointers point into mappings owned by this value; it moves between
    // threads only as a whole (opened and used on one thread in this benchmark).
    unsafe impl Send for Socket {}

    fn check(r: libc::c_int) -> io::Result<()> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    impl Socket {
        /// Opens an AF_XDP socket on queue 0 of `dev`; `receive` also attaches the XDP
        /// program that redirects the device's frames to it.
        pub fn open(dev: &str, receive: bool) -> io::Result<Socket> {
            let name = CString::new(dev).map_err(|e| io::Error::other(e.to_string()))?;
            // SAFETY: `name` is a NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: plain socket creation; the result is checked.
            let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            check(raw)?;
            // SAFETY: `raw` is a new descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let len = (FRAME * NFRAMES) as usize;
            // SAFETY: anonymous private mapping, checked below.
            let umem = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if umem == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let setopt = |opt: libc::c_int, p: *const libc::c_void, l: usize| {
                // SAFETY: `p` points to `l` readable bytes of the option's type.
                check(unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, p, l as u32) })
            };
            let reg = libc::xdp_umem_reg {
                addr: umem as u64,
                len: len as u64,
                chunk_size: FRAME,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            let unmap = |e| {
                // SAFETY: our own mapping, not used after this error.
                unsafe { libc::munmap(umem, len) };
                e
            };
            setopt(
                libc::XDP_UMEM_REG,
                &reg as *const _ as _,
                std::mem::size_of_val(&reg),
            )
            .map_err(unmap)?;
            for opt in [
                libc::XDP_UMEM_FILL_RING,
                libc::XDP_UMEM_COMPLETION_RING,
                libc::XDP_RX_RING,
                libc::XDP_TX_RING,
            ] {
                setopt(opt, &RING as *const u32 as _, 4).map_err(unmap)?;
            }
            // SAFETY: plain data, all-zero valid.
            let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
            let mut ol = std::mem::size_of_val(&off) as u32;
            // SAFETY: `off` is a valid out-buffer of `ol` bytes.
            check(unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_XDP,
                    libc::XDP_MMAP_OFFSETS,
                    &mut off as *mut _ as _,
                    &mut ol,
                )
            })
            .map_err(unmap)?;
            let rings = (|| {
                Ok::<_, io::Error>((
                    Ring::map(&fd, &off.rx, 16, libc::XDP_PGOFF_RX_RING)?,
                    Ring::map(&fd, &off.tx, 16, libc::XDP_PGOFF_TX_RING)?,
                    Ring::map(&fd, &off.fr, 8, libc::XDP_UMEM_PGOFF_FILL_RING as i64)?,
                    Ring::map(&fd, &off.cr, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64)?,
                ))
            })()
            .map_err(unmap)?;
            let mut s = Socket {
                rx: rings.0,
                tx: rings.1,
                fill: rings.2,
                comp: rings.3,
                umem: (umem as *mut u8, len),
                free: (0..NFRAMES / 2).map(|i| u64::from(i * FRAME)).collect(),
                in_flight: 0,
                fd,
                _xdp: None,
            };
            // SAFETY: plain data, all-zero valid.
            let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
            sa.sxdp_family = libc::AF_XDP as u16;
            sa.sxdp_flags = libc::XDP_COPY;
            sa.sxdp_ifindex = ifindex;
            // The kernel frees the previous socket's hold on the queue in deferred work: a
            // socket bound right after another one closed may find it still busy.
            let mut tries = 0;
            loop {
                // SAFETY: `sa` is a valid sockaddr_xdp of the length passed.
                let r = check(unsafe {
                    libc::bind(
                        s.fd.as_raw_fd(),
                        &sa as *const _ as _,
                        std::mem::size_of_val(&sa) as u32,
                    )
                });
                match r {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    r => break r?,
                }
            }
            // The other half of the UMEM waits in the fill ring for received frames.
            let p = s.fill.prod().load(Ordering::Relaxed);
            for (k, i) in (NFRAMES / 2..NFRAMES / 2 + RING).enumerate() {
                // SAFETY: descriptor slot inside the ring, ours until `prod` is published.
                unsafe { *s.fill.addr(p.wrapping_add(k as u32)) = u64::from(i * FRAME) };
            }
            s.fill.prod().store(p.wrapping_add(RING), Ordering::Release);
            if receive {
                s._xdp = Some(redirect_to(&s.fd, ifindex)?);
            }
            Ok(s)
        }

        fn reclaim(&mut self) {
            let c = self.comp.cons().load(Ordering::Relaxed);
            let p = self.comp.prod().load(Ordering::Acquire);
            let mut i = c;
            while i != p {
                // SAFETY: entries between consumer and producer are the kernel's completions.
                self.free.push(unsafe { *self.comp.addr(i) });
                i = i.wrapping_add(1);
            }
            self.in_flight -= p.wrapping_sub(c) as usize;
            self.comp.cons().store(p, Ordering::Release);
        }

        /// Frames sent but not yet completed by the kernel.
        pub fn pending(&mut self) -> usize {
            self.kick();
            self.reclaim();
            self.in_flight
        }

        fn kick(&self) {
            // SAFETY: a zero-length sendto on our socket only makes the kernel drain the TX ring.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
        }

        /// Queues up to `n` frames written by `fill(k, buf)` and kicks the kernel once.
        pub fn send(
            &mut self,
            n: usize,
            fill: &mut dyn FnMut(usize, &mut [u8]),
        ) -> io::Result<usize> {
            self.reclaim();
            let p0 = self.tx.prod().load(Ordering::Relaxed);
            let room = RING - p0.wrapping_sub(self.tx.cons().load(Ordering::Acquire));
            let n = n.min(room as usize).min(self.free.len());
            for k in 0..n {
                let addr = self.free.pop().expect("counted above");
                // SAFETY: `addr` is a free UMEM chunk of FRAME bytes inside our mapping.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.umem.0.add(addr as usize),
                        super::FRAME_BYTES,
                    )
                };
                fill(k, buf);
                // SAFETY: TX slot between the kernel's consumer and our unpublished producer.
                unsafe {
                    *self.tx.xdp_desc(p0.wrapping_add(k as u32)) = libc::xdp_desc {
                        addr,
                        len: super::FRAME_BYTES as u32,
                        options: 0,
                    }
                };
            }
            self.tx
                .prod()
                .store(p0.wrapping_add(n as u32), Ordering::Release);
            self.in_flight += n;
            if n > 0 {
                self.kick();
            }
            Ok(n)
        }

        /// Hands every received frame to `f`, returning its chunk to the fill ring.
        pub fn recv(
            &mut self,
            f: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        ) -> Result<(), String> {
            let c = self.rx.cons().load(Ordering::Relaxed);
            let p = self.rx.prod().load(Ordering::Acquire);
            let fp = self.fill.prod().load(Ordering::Relaxed);
            let mut i = c;
            let mut r = Ok(());
            while i != p {
                // SAFETY: RX entries between consumer and producer were written by the kernel.
                let d = unsafe { *self.rx.xdp_desc(i) };
                if r.is_ok() && (d.addr as usize + d.len as usize) <= self.umem.1 {
                    // SAFETY: the descriptor lies inside our UMEM (checked above).
                    r = f(unsafe {
                        std::slice::from_raw_parts(self.umem.0.add(d.addr as usize), d.len as usize)
                    });
                }
                // SAFETY: the fill ring has room for every chunk the RX ring hands back.
                unsafe {
                    *self.fill.addr(fp.wrapping_add(i.wrapping_sub(c))) =
                        d.addr & !u64::from(FRAME - 1)
                };
                i = i.wrapping_add(1);
            }
            self.rx.cons().store(p, Ordering::Release);
            self.fill
                .prod()
                .store(fp.wrapping_add(p.wrapping_sub(c)), Ordering::Release);
            r
        }
    }

    impl Drop for Socket {
        fn drop(&mut self) {
            // SAFETY: our own UMEM mapping; the socket (closed after this) stops using it.
            unsafe { libc::munmap(self.umem.0 as *mut libc::c_void, self.umem.1) };
        }
    }

    /// Loads `r2 = ctx->rx_queue_index; return bpf_redirect_map(&xsks, r2, XDP_PASS)`,
    /// puts `xsk` at index 0 of its map and attaches it to `ifindex` through a BPF link.
    /// Returns (map, program, link); dropping the link detaches the program.
    fn redirect_to(xsk: &OwnedFd, ifindex: u32) -> io::Result<(OwnedFd, OwnedFd, OwnedFd)> {
        let mut a = [0u8; 128];
        put(&mut a, 0, &BPF_MAP_TYPE_XSKMAP.to_ne_bytes());
        put(&mut a, 4, &4u32.to_ne_bytes());
        put(&mut a, 8, &4u32.to_ne_bytes());
        put(&mut a, 12, &1u32.to_ne_bytes());
        let map = bpf_fd(BPF_MAP_CREATE, &mut a)?;
        let prog = [
            insn(0x61, 2, 1, 16, 0),                    // r2 = *(u32 *)(r1 + 16)
            insn(0x18, 1, 1, 0, map.as_raw_fd()),       // r1 = map (pseudo map fd)
            0,                                          //      (second half)
            insn(0xb7, 3, 0, 0, XDP_PASS),              // r3 = XDP_PASS
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP), // call bpf_redirect_map
            insn(0x95, 0, 0, 0, 0),                     // exit
        ];
        let license = b"GPL\0";
        let mut a = [0u8; 128];
        put(&mut a, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
        put(&mut a, 4, &(prog.len() as u32).to_ne_bytes());
        put(&mut a, 8, &(prog.as_ptr() as u64).to_ne_bytes());
        put(&mut a, 16, &(license.as_ptr() as u64).to_ne_bytes());
        put(&mut a, 68, &BPF_XDP.to_ne_bytes());
        let prog = bpf_fd(BPF_PROG_LOAD, &mut a)?;
        let key = 0u32;
        let val = xsk.as_raw_fd() as u32;
        let mut a = [0u8; 128];
        put(&mut a, 0, &(map.as_raw_fd() as u32).to_ne_bytes());
        put(&mut a, 8, &(&key as *const u32 as u64).to_ne_bytes());
        put(&mut a, 16, &(&val as *const u32 as u64).to_ne_bytes());
        bpf(BPF_MAP_UPDATE_ELEM, &mut a)?;
        let mut a = [0u8; 128];
        put(&mut a, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
        put(&mut a, 4, &ifindex.to_ne_bytes());
        put(&mut a, 8, &BPF_XDP.to_ne_bytes());
        let link = bpf_fd(BPF_LINK_CREATE, &mut a)?;
        Ok((map, prog, link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_cpu_reads_proc() {
        // Monotone: a second reading is never below the first.
        let a = kernel_threads_cpu();
        let b = kernel_threads_cpu();
        assert!(b >= a);
    }

    #[test]
    fn af_packet_and_af_xdp_carry_every_frame() {
        if netns::skip_unless_root("vethcost") {
            return;
        }
        let r = match run(20_000, 1) {
            // A kernel built without AF_XDP or BPF: nothing to measure (this project's
            // machines have both).
            Err(e)
                if e.contains("Address family not supported")
                    || e.contains("Function not implemented") =>
            {
                println!("skipped: this kernel has no AF_XDP/BPF: {e}");
                return;
            }
            r => r.expect("vethcost runs"),
        };
        assert_eq!(r.len(), 4);
        for rec in &r {
            assert_eq!(rec.frames + rec.lost, 20_000, "{rec:?}");
            assert!(rec.frames > 10_000, "most frames arrive: {rec:?}");
            assert!(rec.kernel_ns_per_frame > 0.0, "{rec:?}");
        }
    }
}
