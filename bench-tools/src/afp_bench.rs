//! af_packet cases of `mtcp-bench psio` (root only).
//!
//! Two namespaces joined by a veth pair with offloads off; the sender thread lives in one,
//! the receiver thread in the other, pinned to different cores when there are two. Frames
//! are 64 bytes and carry their sequence number ([`fill_frame`]/[`check_frame`]), so the
//! receiver verifies order and content of every frame.
//!
//! Cases:
//! - `af_packet`, batch 32 and 256: psio's rings ([`send_frames`]/[`recv_frames`] through
//!   `afpacket:` ports), one `sendto` kick per batch;
//! - `af_packet_naive`, batch 1: the baseline everyone writes first — a plain `AF_PACKET`
//!   socket, one `send()` per frame and one `recv()` per frame, no rings.
//!
//! The receiving veth end is set up to receive like a NIC whose queue interrupt is steered to
//! the receiving core, as mTCP sets up its NICs ([`Namespaces::receive_like_a_nic`]: GRO on,
//! threaded NAPI, the NAPI thread pinned to the receiver's core). By default veth delivers
//! every frame into the peer's socket inside the sender's system call (see NOTES.md), so the
//! sender pays for both ends and the receiving core idles. Both cases run on this same link, in the same run. The NAPI kernel thread's
//! CPU time is in neither thread's figure.
//!
//! CPU is thread CPU time ([`thread_cpu`]); `rx_cpu_ns_per_frame` is the receiver's alone,
//! which is what our rings change most. Frames per second are the receiver's verified frames over
//! the wall time from the start signal to its last frame.
//!
//! veth loses a frame only when the receiver's socket buffer or ring overflows: the naive
//! receiver gets a 64 MiB `SO_RCVBUF`, the rings 4096 slots. Losses are counted and printed,
//! not hidden: the naive receiver stops after a quiet period and reports the missing frames;
//! the ring receiver fails on the first gap, and is unblocked by a poison frame if frames at
//! the tail never come.

use crate::cpu::{pin, thread_cpu};
use crate::netns::{self, Namespaces, VethPair};
use crate::psio_bench::{
    check_frame, fill_frame, median_run, recv_frames_with, send_frames, Record, SideResult,
};
use psio::{Port, PortConfig, PortSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const FRAME_BYTES: usize = 64;
/// Core of the sending thread.
const TX_CPU: usize = 0;
/// Core of the receiving thread and of the receiving veth's NAPI thread.
const RX_CPU: usize = 1;
/// How long a receiver waits for a frame once the sender is done before calling the rest lost.
const QUIET: Duration = Duration::from_secs(2);

/// Runs the af_packet cases (root only): our rings and the naive baseline, over a veth pair.
///
/// Each case runs `runs` times and keeps the median; a case that fails is reported on
/// stderr and left out, and the call fails only when setting up fails or every case fails.
pub fn af_packet_cases(frames: u64, runs: usize) -> Result<Vec<Record>, String> {
    if !netns::is_root() {
        return Err(netns::skip_message("af_packet benchmark"));
    }
    let mut lab = Namespaces::new("bench");
    let pair = lab
        .veth_pair("afpb-tx", "afpb-rx")
        .map_err(|e| format!("setting up namespaces: {e}"))?;
    for (ns, dev) in [(&pair.ns_a, &pair.dev_a), (&pair.ns_b, &pair.dev_b)] {
        lab.disable_offloads(ns, dev)
            .map_err(|e| format!("turning offloads off on {dev}: {e}"))?;
    }
    // Receive work on the receiving side's core, as with a NIC, for both our rings and the
    // baseline (see the module doc).
    lab.receive_like_a_nic(&pair.ns_b, &pair.dev_b, RX_CPU)
        .map_err(|e| format!("threaded NAPI on {}: {e}", pair.dev_b))?;
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for batch in [32, 256] {
        match median_run(runs, || ring_run(&pair, frames, batch)) {
            Ok(r) => out.push(r),
            Err(e) => failures.push(format!("af_packet batch {batch}: {e}")),
        }
    }
    match median_run(runs, || naive_run(&pair, frames)) {
        Ok(naive) => {
            for r in &out {
                eprintln!(
                    "note: af_packet batch {}: {:.2}x the naive frames/s, receiver {:.0} vs {:.0} ns CPU per frame",
                    r.batch,
                    r.mpps / naive.mpps,
                    r.rx_cpu_ns_per_frame,
                    naive.rx_cpu_ns_per_frame
                );
            }
            out.push(naive);
        }
        Err(e) => failures.push(format!("af_packet_naive: {e}")),
    }
    for f in &failures {
        eprintln!("af_packet case failed: {f}");
    }
    if out.is_empty() {
        return Err(failures.join("; "));
    }
    Ok(out)
}

fn join<T>(
    h: std::thread::JoinHandle<io::Result<Result<T, String>>>,
    who: &str,
) -> Result<T, String> {
    match h.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("{who}: entering its namespace: {e}")),
        Err(_) => Err(format!("{who} panicked")),
    }
}

fn record(
    backend: &str,
    batch: usize,
    delivered: u64,
    wall: Duration,
    tx: SideResult,
    rx: SideResult,
) -> Record {
    let n = delivered.max(1) as f64;
    Record {
        backend: backend.into(),
        frame_bytes: FRAME_BYTES,
        batch,
        mpps: delivered as f64 / wall.as_secs_f64() / 1e6,
        cpu_ns_per_frame: (tx.cpu + rx.cpu).as_nanos() as f64 / n,
        rx_cpu_ns_per_frame: rx.cpu.as_nanos() as f64 / n,
    }
}

/// One run through psio's rings.
fn ring_run(pair: &VethPair, frames: u64, batch: usize) -> Result<Record, String> {
    let config = PortConfig {
        slots: 4096,
        ..PortConfig::default()
    };
    let open = |dev: &str, config: &PortConfig| -> Result<PortSet, String> {
        let port =
            Port::open_with(&format!("afpacket:{dev}"), config).map_err(|e| e.to_string())?;
        let mut set = PortSet::new().map_err(|e| e.to_string())?;
        set.add(port);
        Ok(set)
    };
    let start = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let (rx_start, rx_done, rx_config, rx_dev) = (
        start.clone(),
        done.clone(),
        config.clone(),
        pair.dev_b.clone(),
    );
    let receiver = netns::spawn_in(&pair.ns_b, move || {
        pin(RX_CPU);
        // Both sides pass the barrier even when their setup failed, so neither waits forever.
        let set = open(&rx_dev, &rx_config);
        rx_start.wait();
        let t0 = Instant::now();
        let r = set.and_then(|mut set| {
            recv_frames_with(&mut set, frames, batch, true).map_err(|e| e.to_string())
        });
        // The rate counts up to the last frame delivered, not the wait for lost ones.
        let wall = r.as_ref().map_or(t0.elapsed(), |(_, _, last)| *last - t0);
        let r = r.map(|(side, lost, _)| (side, lost));
        rx_done.store(true, Ordering::SeqCst);
        r.map(|r| (r, wall)).map_err(|e| format!("receiver: {e}"))
    });
    let tx_dev = pair.dev_a.clone();
    let sender = netns::spawn_in(&pair.ns_a, move || {
        pin(TX_CPU);
        let set = open(&tx_dev, &config);
        start.wait();
        let mut set = set?;
        let r = send_frames(&mut set, frames, FRAME_BYTES, batch)
            .map_err(|e| format!("sender: {e}"))?;
        // A receiver still waiting for frames that were lost would wait forever: a poison
        // frame (an impossible sequence number) makes it stop and report the gap.
        let t = Instant::now();
        while !done.load(Ordering::SeqCst) {
            if t.elapsed() > QUIET {
                let q = set.port(0).queue(0);
                if q.txsync().map_err(|e| e.to_string())? > 0 {
                    fill_frame(&mut q.tx_buf(0)[..FRAME_BYTES], u64::MAX);
                    q.tx_push(FRAME_BYTES);
                    q.txsync().map_err(|e| e.to_string())?;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(r)
    });
    let tx = join(sender, "sender");
    let ((rx, lost), wall) = join(receiver, "receiver")?;
    let tx = tx?;
    if lost > 0 {
        eprintln!(
            "af_packet batch {batch}: {lost} of {frames} frames lost (counted out of the rate)"
        );
    }
    Ok(record("af_packet", batch, rx.frames, wall, tx, rx))
}

// ---------------------------------------------------------------------------------------
// The naive baseline: one system call per frame

fn last_error(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn setopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the given size for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A plain packet socket bound to `dev`; `protocol` 0 sends only, `ETH_P_ALL` also receives.
fn plain_socket(dev: &str, protocol: u16) -> Result<OwnedFd, String> {
    let c = CString::new(dev).map_err(|_| format!("bad interface name {dev:?}"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        return Err(last_error(&format!("interface {dev}")));
    }
    // SAFETY: plain system call with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(last_error("socket(AF_PACKET)"));
    }
    // SAFETY: `fd` was just returned by socket and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if protocol != 0 {
        let big: libc::c_int = 64 << 20;
        if setopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &big).is_err() {
            setopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &big)
                .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        }
        let one: libc::c_int = 1;
        let _ = setopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        setopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    }
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as libc::c_int,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_ll of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r == -1 {
        return Err(last_error("bind(AF_PACKET)"));
    }
    Ok(fd)
}

/// What the naive receiver saw.
struct NaiveRx {
    side: SideResult,
    wall: Duration,
    lost: u64,
}

/// Receives after the start signal; stops at the last frame or after [`QUIET`] once the
/// sender is done.
fn naive_receive(fd: &OwnedFd, frames: u64, sender_done: &AtomicBool) -> Result<NaiveRx, String> {
    let mut buf = [0u8; 2048];
    let (t0, cpu0) = (Instant::now(), thread_cpu());
    let (mut expect, mut received, mut lost) = (0u64, 0u64, 0u64);
    let mut last = t0;
    let mut quiet_since: Option<Instant> = None;
    while expect < frames {
        // SAFETY: receives at most `buf.len()` bytes into a local buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                return Err(format!("recv: {e}"));
            }
            if sender_done.load(Ordering::SeqCst) {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > QUIET {
                    lost += frames - expect;
                    break;
                }
            }
            continue;
        }
        quiet_since = None;
        match check_frame(&buf[..n as usize]) {
            Some(seq) if seq >= expect && seq < frames => {
                lost += seq - expect;
                expect = seq + 1;
                received += 1;
                // The clock costs about as much as a small receive: read it every 64 frames
                // and at the last one, as the ring receiver reads it once per batch.
                if received % 64 == 0 || expect == frames {
                    last = Instant::now();
                }
            }
            got => {
                return Err(format!(
                    "frame {expect} arrived as {got:?}: reordered, duplicated or corrupted"
                ))
            }
        }
    }
    Ok(NaiveRx {
        side: SideResult {
            cpu: thread_cpu() - cpu0,
            frames: received,
        },
        wall: last - t0,
        lost,
    })
}

/// Sends `frames` frames, one `send()` each.
fn naive_send(fd: &OwnedFd, frames: u64) -> Result<SideResult, String> {
    let mut buf = [0u8; FRAME_BYTES];
    let cpu0 = thread_cpu();
    for seq in 0..frames {
        fill_frame(&mut buf, seq);
        loop {
            // SAFETY: sends `buf.len()` bytes from a local buffer on a bound socket.
            let r = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
            if r >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) && e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("send: {e}"));
            }
        }
    }
    Ok(SideResult {
        cpu: thread_cpu() - cpu0,
        frames,
    })
}

/// One run of the naive baseline.
fn naive_run(pair: &VethPair, frames: u64) -> Result<Record, String> {
    let start = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let (rx_start, rx_done, rx_dev) = (start.clone(), done.clone(), pair.dev_b.clone());
    let receiver = netns::spawn_in(&pair.ns_b, move || {
        pin(RX_CPU);
        let fd = plain_socket(&rx_dev, libc::ETH_P_ALL as u16);
        rx_start.wait();
        naive_receive(&fd?, frames, &rx_done)
    });
    let tx_dev = pair.dev_a.clone();
    let sender = netns::spawn_in(&pair.ns_a, move || {
        pin(TX_CPU);
        let fd = plain_socket(&tx_dev, 0);
        start.wait();
        let r = fd.and_then(|fd| naive_send(&fd, frames));
        done.store(true, Ordering::SeqCst);
        r
    });
    let tx = join(sender, "naive sender");
    let rx = join(receiver, "naive receiver")?;
    let tx = tx?;
    if rx.lost > 0 {
        eprintln!(
            "af_packet_naive: {} of {frames} frames lost (counted out of the rate)",
            rx.lost
        );
    }
    Ok(record(
        "af_packet_naive",
        1,
        rx.side.frames,
        rx.wall,
        tx,
        rx.side,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_af_packet_runs_deliver_every_frame() {
        if netns::skip_unless_root("af_packet benchmark cases") {
            return;
        }
        let recs = af_packet_cases(20_000, 1).unwrap();
        let names: Vec<_> = recs.iter().map(|r| (r.backend.as_str(), r.batch)).collect();
        assert_eq!(
            names,
            [
                ("af_packet", 32),
                ("af_packet", 256),
                ("af_packet_naive", 1)
            ]
        );
        assert!(
            recs.iter()
                .all(|r| r.mpps > 0.0 && r.rx_cpu_ns_per_frame > 0.0),
            "{recs:?}"
        );
    }
}
