//! `mtcp-bench psio`: frames per second and CPU per frame for each psio backend.
//!
//! Cases: shm thread-to-thread with 64 B frames at batch 1, 32 and 256 (no root; sender
//! pinned to core 0, receiver to core 1, so every frame really crosses cores); and, as
//! root, af_packet over a veth pair with our rings next to a naive one-`send()`/`recv()`-per-
//! frame baseline measured in the same run ([`crate::afp_bench`]). Each case runs several
//! times; the record with the median frame rate is kept.

use crate::cpu::{median, pin, thread_cpu};
use psio::{Interest, PortConfig, PortSet};
use serde::Serialize;
use std::time::{Duration, Instant};

/// One line of the result table, one JSON record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// `shm`, `af_packet` or `af_packet_naive`.
    pub backend: String,
    /// Bytes per frame.
    pub frame_bytes: usize,
    /// Frames per sync (per system call for the naive baseline).
    pub batch: usize,
    /// Million frames per second delivered and verified by the receiver.
    pub mpps: f64,
    /// CPU time of sender and receiver together, per frame.
    pub cpu_ns_per_frame: f64,
    /// CPU time of the receiver alone, per frame.
    pub rx_cpu_ns_per_frame: f64,
}

/// Options of the `psio` subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// Frames per run.
    pub frames: u64,
    /// Runs per case (median kept).
    pub runs: usize,
    /// Skip the af_packet cases even as root.
    pub no_af_packet: bool,
    /// Skip the shm cases.
    pub no_shm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frames: 5_000_000,
            runs: 5,
            no_af_packet: false,
            no_shm: false,
        }
    }
}

/// What one side of a run measured.
#[derive(Debug, Clone, Copy)]
pub struct SideResult {
    /// Thread CPU time spent.
    pub cpu: Duration,
    /// Frames handled.
    pub frames: u64,
}

/// Sends `frames` frames of `len` bytes through queue 0 of `set`'s port 0, `batch` per sync;
/// each frame carries its sequence number in its first 8 bytes.
pub fn send_frames(
    set: &mut PortSet,
    frames: u64,
    len: usize,
    batch: usize,
) -> psio::Result<SideResult> {
    let cpu0 = thread_cpu();
    let wait_tx = [Interest {
        port: 0,
        queue: 0,
        rx: false,
        tx: true,
    }];
    let mut seq = 0u64;
    while seq < frames {
        let q = set.port(0).queue(0);
        if q.tx_space() == 0 && q.txsync()? == 0 {
            set.select(&wait_tx, Some(100_000))?;
            continue;
        }
        let k = (q.tx_space() as u64).min(batch as u64).min(frames - seq);
        for _ in 0..k {
            let buf = q.tx_buf(0);
            fill_frame(&mut buf[..len], seq);
            q.tx_push(len);
            seq += 1;
        }
        q.txsync()?;
    }
    // Flush what a full peer still holds.
    loop {
        let q = set.port(0).queue(0);
        q.txsync()?;
        if q.tx_pending() == 0 {
            break;
        }
        set.select(&wait_tx, Some(100_000))?;
    }
    Ok(SideResult {
        cpu: thread_cpu() - cpu0,
        frames,
    })
}

/// A frame's bytes before stamping: the pattern a real stack would write (headers + payload).
const TEMPLATE: [u8; 2048] = {
    let mut t = [0u8; 2048];
    let mut i = 0;
    while i < t.len() {
        t[i] = (i * 7 + 3) as u8;
        i += 1;
    }
    t
};

/// Writes a whole test frame (`buf.len()` ≥ 16 bytes): a fixed pattern, the sequence number
/// in the first 8 bytes and its complement in the last 8, so that the receiver detects loss,
/// reordering, truncation and misplaced buffers by reading both ends of the frame.
#[inline]
pub fn fill_frame(buf: &mut [u8], seq: u64) {
    let len = buf.len();
    buf.copy_from_slice(&TEMPLATE[..len]);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[len - 8..].copy_from_slice(&(!seq).to_le_bytes());
}

/// Checks a frame written by [`fill_frame`]; returns its sequence number if both stamps agree.
#[inline]
pub fn check_frame(frame: &[u8]) -> Option<u64> {
    let len = frame.len();
    if len < 16 {
        return None;
    }
    let seq = u64::from_le_bytes(frame[..8].try_into().ok()?);
    let inv = u64::from_le_bytes(frame[len - 8..].try_into().ok()?);
    (inv == !seq).then_some(seq)
}

/// Receives `frames` frames through queue 0 of `set`'s port 0, at most `batch` per sync,
/// checking that every frame is intact and in order. Any gap is an error.
pub fn recv_frames(set: &mut PortSet, frames: u64, batch: usize) -> psio::Result<SideResult> {
    recv_frames_with(set, frames, batch, false).map(|(side, _, _)| side)
}

/// Like [`recv_frames`]; with `allow_loss`, gaps in the sequence are counted as lost frames
/// instead of failing (a link that drops under overload, as a NIC does), and a frame with
/// sequence number `u64::MAX` ends the run early. Reordered, duplicated or damaged frames
/// are always errors. Returns the receiver's figures (`frames` = frames delivered), the
/// number lost, and when the last frame was delivered.
pub fn recv_frames_with(
    set: &mut PortSet,
    frames: u64,
    batch: usize,
    allow_loss: bool,
) -> psio::Result<(SideResult, u64, Instant)> {
    let cpu0 = thread_cpu();
    let mut last = Instant::now();
    let wait_rx = [Interest {
        port: 0,
        queue: 0,
        rx: true,
        tx: false,
    }];
    let (mut expect, mut delivered) = (0u64, 0u64);
    'run: while expect < frames {
        let q = set.port(0).queue(0);
        if q.rx_available() == 0 && q.rxsync()? == 0 {
            set.select(&wait_rx, Some(1_000_000))?;
            continue;
        }
        let k = q.rx_available().min(batch);
        for i in 0..k {
            let got = check_frame(q.rx_frame(i));
            match got {
                Some(u64::MAX) if allow_loss => {
                    q.rx_release(i + 1);
                    break 'run;
                }
                Some(seq) if seq == expect || (allow_loss && seq > expect && seq < frames) => {
                    expect = seq + 1;
                    delivered += 1;
                }
                _ => {
                    return Err(psio::Error::InvalidConfig(format!(
                        "frame {expect} arrived as {got:?}: lost, reordered or corrupted"
                    )))
                }
            }
        }
        q.rx_release(k);
        // Once per batch: reading the clock per frame would cost more than receiving it.
        last = Instant::now();
        q.rxsync()?;
    }
    Ok((
        SideResult {
            cpu: thread_cpu() - cpu0,
            frames: delivered,
        },
        frames - delivered,
        last,
    ))
}

/// One shm thread-to-thread run.
fn shm_run(frames: u64, len: usize, batch: usize) -> psio::Result<Record> {
    let (a, b) = psio::sys::shm::pair(&PortConfig::default())?;
    let mut tx_set = PortSet::new()?;
    tx_set.add(a);
    tx_set.set_busy_poll(Duration::from_micros(50));
    let mut rx_set = PortSet::new()?;
    rx_set.add(b);
    rx_set.set_busy_poll(Duration::from_micros(50));
    let start = Instant::now();
    let rx = std::thread::spawn(move || {
        pin(1);
        recv_frames(&mut rx_set, frames, batch)
    });
    let tx = std::thread::spawn(move || {
        pin(0);
        send_frames(&mut tx_set, frames, len, batch)
    });
    let tx = tx.join().expect("sender thread panicked")?;
    let rx = rx.join().expect("receiver thread panicked")?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Record {
        backend: "shm".into(),
        frame_bytes: len,
        batch,
        mpps: rx.frames as f64 / secs / 1e6,
        cpu_ns_per_frame: (tx.cpu + rx.cpu).as_nanos() as f64 / frames as f64,
        rx_cpu_ns_per_frame: rx.cpu.as_nanos() as f64 / frames as f64,
    })
}

/// Runs `f` `runs` times and keeps the run with the median frame rate.
pub fn median_run(
    runs: usize,
    mut f: impl FnMut() -> Result<Record, String>,
) -> Result<Record, String> {
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        all.push(f()?);
    }
    let m = median(&all.iter().map(|r| r.mpps).collect::<Vec<_>>());
    Ok(all
        .into_iter()
        .find(|r| r.mpps == m)
        .expect("median is one of the runs"))
}

/// Runs every case; af_packet cases only as root (a note is printed otherwise).
pub fn run(opts: &Options) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let shm_batches: &[usize] = if opts.no_shm { &[] } else { &[1, 32, 256] };
    for &batch in shm_batches {
        let rec = median_run(opts.runs, || {
            shm_run(opts.frames, 64, batch).map_err(|e| e.to_string())
        })?;
        print_row(&rec);
        out.push(rec);
    }
    if opts.no_af_packet {
        return Ok(out);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("af_packet cases skipped: they need root (network namespaces and CAP_NET_RAW)");
        return Ok(out);
    }
    let frames = (opts.frames / 5).max(10_000);
    match crate::afp_bench::af_packet_cases(frames, opts.runs) {
        Ok(recs) => {
            for r in &recs {
                print_row(r);
            }
            out.extend(recs);
        }
        Err(e) => eprintln!("af_packet cases failed: {e}"),
    }
    Ok(out)
}

/// Prints the table header.
pub fn print_header() {
    println!(
        "{:<16} {:>6} {:>6} {:>9} {:>14} {:>14}",
        "backend", "bytes", "batch", "Mpps", "cpu ns/frame", "rx ns/frame"
    );
}

/// Prints one table row.
pub fn print_row(r: &Record) {
    println!(
        "{:<16} {:>6} {:>6} {:>9.2} {:>14.1} {:>14.1}",
        r.backend, r.frame_bytes, r.batch, r.mpps, r.cpu_ns_per_frame, r.rx_cpu_ns_per_frame
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_check_round_trip_and_detect_damage() {
        let mut buf = [0u8; 64];
        fill_frame(&mut buf, 12345);
        assert_eq!(check_frame(&buf), Some(12345));
        assert_eq!(check_frame(&buf[..63]), None);
        buf[60] ^= 1;
        assert_eq!(check_frame(&buf), None);
    }

    #[test]
    fn a_small_shm_run_delivers_every_frame() {
        let r = shm_run(20_000, 64, 32).unwrap();
        assert_eq!(r.backend, "shm");
        assert!(r.mpps > 0.0);
    }
}
