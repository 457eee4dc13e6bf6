//! `PcapTap`: middleware that writes every frame a queue sends or receives to a pcap file.
//!
//! The tap wraps any [`QueueIo`] and is itself one, so it stacks on any backend and under or
//! over other middleware:
//!
//! ```text
//!   user ──tx_push──▶ PcapTap ──▶ inner queue ──▶ link
//!                       │  records the frame at tx_push
//!   user ◀─rx_frame── PcapTap ◀── inner queue ◀── link
//!                       │  records each frame once, when rxsync first makes it available
//!                       ▼
//!                 BufWriter ─▶ pcap file (LINKTYPE_ETHERNET, µs timestamps)
//! ```
//!
//! Where it sits decides what it sees: `PcapTap` *inside* [`Impaired`](crate::Impaired)
//! (`Impaired::new(Box::new(PcapTap::create(q, path)?), ..)`) records what goes on the wire,
//! after loss and corruption; *outside* it records what the stack meant to send.
//!
//! ## Invariants
//! - A transmitted frame is recorded exactly once, at [`tx_push`](QueueIo::tx_push), with the
//!   wall-clock time of the push.
//! - A received frame is recorded exactly once, by the first [`rxsync`](QueueIo::rxsync) that
//!   makes it available, even if the user calls `rxsync` several times before releasing it.
//!   Frames made available by one `rxsync` share its timestamp.
//! - Records go through a [`BufWriter`]; [`PcapTap::flush`] pushes them to the file, and
//!   dropping the tap flushes too. The snap length is never below the queue's buffer size, so
//!   frames are never truncated.
//!
//! ## What it does not do
//! It does not filter, does not rotate files, and does not merge several queues into one file:
//! give each queue its own file (or its own writer). If writing fails (say, the disk is full),
//! capturing stops — frames keep flowing — and the error is returned once, by the next
//! `flush`, `txsync` or `rxsync`, so it is never silent.

use crate::error::{Error, Result};
use crate::{QueueIo, WaitSpec};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The buffered output, shared between the tap (to flush it) and pcap-file's writer (which
/// owns its writer and offers no `get_mut`). Only the tap's own thread ever locks it, so the
/// lock is never contended.
struct Shared<W: Write>(Arc<Mutex<BufWriter<W>>>);

impl<W: Write> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, BufWriter<W>> {
        // A panic while writing leaves at worst a half-written record; keep going.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<W: Write> Write for Shared<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// The capture side of a tap, present until the first write error or [`PcapTap::into_writer`].
struct Capture<W: Write> {
    pcap: PcapWriter<Shared<W>>,
    out: Shared<W>,
}

/// A queue whose transmitted and received frames are also written to a pcap file.
///
/// See the [module documentation](self) for when frames are recorded. Any `Write + Send`
/// works as the output ([`PcapTap::new`]); [`PcapTap::create`] opens a file.
pub struct PcapTap<W: Write + Send + 'static = File> {
    inner: Box<dyn QueueIo>,
    capture: Option<Capture<W>>,
    /// Received frames (from the inner head) already recorded.
    rx_recorded: usize,
    /// Frames written so far.
    written: u64,
    /// Frames that could not be written because capturing had stopped after an error.
    missed: u64,
    /// A write error not yet reported to the user.
    error: Option<io::Error>,
}

impl<W: Write + Send + 'static> std::fmt::Debug for PcapTap<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapTap")
            .field("capturing", &self.capture.is_some())
            .field("written", &self.written)
            .field("missed", &self.missed)
            .finish_non_exhaustive()
    }
}

impl PcapTap<File> {
    /// Wraps `inner`, writing to a new pcap file at `path` (truncated if it exists).
    pub fn create(inner: Box<dyn QueueIo>, path: impl AsRef<Path>) -> Result<PcapTap<File>> {
        let file = File::create(path).map_err(|e| Error::io("creating pcap file", e))?;
        PcapTap::new(inner, file)
    }
}

impl<W: Write + Send + 'static> PcapTap<W> {
    /// Wraps `inner`, writing the pcap file header and then every frame to `writer` (through
    /// a [`BufWriter`]).
    pub fn new(inner: Box<dyn QueueIo>, writer: W) -> Result<PcapTap<W>> {
        let header = PcapHeader {
            // Never truncate: the largest frame the queue carries fits the snap length.
            snaplen: u32::try_from(inner.buf_size())
                .unwrap_or(u32::MAX)
                .max(65535),
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        let shared = Arc::new(Mutex::new(BufWriter::new(writer)));
        let pcap = PcapWriter::with_header(Shared(shared.clone()), header)
            .map_err(|e| Error::io("writing pcap header", pcap_to_io(e)))?;
        Ok(PcapTap {
            inner,
            capture: Some(Capture {
                pcap,
                out: Shared(shared),
            }),
            rx_recorded: 0,
            written: 0,
            missed: 0,
            error: None,
        })
    }

    /// Pushes buffered records to the writer. Also returns (once) a write error met since the
    /// last report; capturing has stopped then.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(c) = &mut self.capture {
            if let Err(e) = c.out.flush() {
                self.stop(e);
            }
        }
        self.take_error()
    }

    /// Frames written to the capture so far.
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    /// Frames not written because capturing stopped after a write error.
    pub fn frames_missed(&self) -> u64 {
        self.missed
    }

    /// Flushes and returns the writer, dropping the wrapped queue (useful with an in-memory
    /// writer such as `Vec<u8>`).
    pub fn into_writer(mut self) -> Result<W> {
        self.take_error()?;
        let Some(Capture { pcap, out }) = self.capture.take() else {
            return Err(Error::io(
                "finishing pcap capture",
                io::Error::other("capturing had stopped after a write error"),
            ));
        };
        drop(pcap.into_writer());
        let mutex = Arc::try_unwrap(out.0)
            .unwrap_or_else(|_| unreachable!("the pcap writer held the only other handle"));
        let buffered = mutex.into_inner().unwrap_or_else(|p| p.into_inner());
        buffered
            .into_inner()
            .map_err(|e| Error::io("flushing pcap capture", e.into_error()))
    }

    /// Records one frame (if still capturing).
    fn record(capture: &mut Option<Capture<W>>, ts: Duration, frame: &[u8]) -> io::Result<bool> {
        let Some(c) = capture else {
            return Ok(false);
        };
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        c.pcap
            .write_packet(&PcapPacket::new(ts, len, frame))
            .map(|_| true)
            .map_err(pcap_to_io)
    }

    /// Stops capturing after a write error, keeping the first error for the user.
    fn stop(&mut self, e: io::Error) {
        self.capture = None;
        self.error.get_or_insert(e);
    }

    fn take_error(&mut self) -> Result<()> {
        match self.error.take() {
            Some(e) => Err(Error::io("writing pcap capture", e)),
            None => Ok(()),
        }
    }
}

/// Wall-clock time for a record (pcap timestamps are since the Unix epoch).
fn timestamp() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn pcap_to_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl<W: Write + Send + 'static> QueueIo for PcapTap<W> {
    fn rxsync(&mut self) -> Result<usize> {
        let n = self.inner.rxsync()?;
        if n > self.rx_recorded {
            let ts = timestamp();
            for i in self.rx_recorded..n {
                match Self::record(&mut self.capture, ts, self.inner.rx_frame(i)) {
                    Ok(true) => self.written += 1,
                    Ok(false) => self.missed += 1,
                    Err(e) => {
                        self.missed += 1;
                        self.stop(e);
                    }
                }
            }
        }
        self.rx_recorded = n;
        self.take_error()?;
        Ok(n)
    }

    fn rx_available(&self) -> usize {
        self.inner.rx_available()
    }

    fn rx_frame(&self, i: usize) -> &[u8] {
        self.inner.rx_frame(i)
    }

    fn rx_release(&mut self, n: usize) {
        self.inner.rx_release(n);
        self.rx_recorded = self.rx_recorded.saturating_sub(n);
    }

    fn txsync(&mut self) -> Result<usize> {
        let n = self.inner.txsync()?;
        self.take_error()?;
        Ok(n)
    }

    fn tx_space(&self) -> usize {
        self.inner.tx_space()
    }

    fn tx_buf(&mut self, i: usize) -> &mut [u8] {
        self.inner.tx_buf(i)
    }

    fn tx_push(&mut self, len: usize) {
        // Misuse (no space, or too long) is left to the inner queue's own assertions.
        if self.inner.tx_space() > 0 && len <= self.inner.buf_size() {
            let frame = &self.inner.tx_buf(0)[..len];
            match Self::record(&mut self.capture, timestamp(), frame) {
                Ok(true) => self.written += 1,
                Ok(false) => self.missed += 1,
                Err(e) => {
                    self.missed += 1;
                    self.stop(e);
                }
            }
        }
        self.inner.tx_push(len);
    }

    fn tx_pending(&self) -> usize {
        self.inner.tx_pending()
    }

    fn buf_size(&self) -> usize {
        self.inner.buf_size()
    }

    fn arm(&mut self, rx: bool, tx: bool) -> Result<Option<WaitSpec>> {
        self.inner.arm(rx, tx)
    }

    fn disarm(&mut self) {
        self.inner.disarm();
    }
}

impl<W: Write + Send + 'static> Drop for PcapTap<W> {
    fn drop(&mut self) {
        if let Some(c) = &mut self.capture {
            // Nobody is left to report to; a failed final flush loses the buffered tail.
            let _ = c.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impair::tests::take_queue;
    use crate::sys::shm;
    use crate::PortConfig;
    use pcap_file::pcap::PcapReader;
    use std::path::PathBuf;

    /// An Ethernet frame of `len` bytes: broadcast, a local MAC, the local experimental
    /// EtherType 0x88B5, and a payload derived from `tag`.
    fn frame(tag: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, tag]);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend((0..len - 14).map(|j| tag.wrapping_mul(31).wrapping_add(j as u8)));
        f
    }

    fn send(q: &mut dyn QueueIo, f: &[u8]) {
        q.tx_buf(0)[..f.len()].copy_from_slice(f);
        q.tx_push(f.len());
    }

    fn read_records(path: &Path) -> (PcapHeader, Vec<Vec<u8>>) {
        let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
        let header = r.header();
        let mut frames = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(p.orig_len as usize, p.data.len(), "no truncation");
            frames.push(p.data.into_owned());
        }
        (header, frames)
    }

    struct TempFiles(Vec<PathBuf>);

    impl Drop for TempFiles {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    #[test]
    fn taps_on_both_sides_record_each_frame_once_in_order() {
        let dir = std::env::temp_dir();
        let id = std::process::id();
        let paths = [
            dir.join(format!("psio-tap-a-{id}.pcap")),
            dir.join(format!("psio-tap-b-{id}.pcap")),
        ];
        let _cleanup = TempFiles(paths.to_vec());
        let cfg = PortConfig {
            slots: 16,
            ..PortConfig::default()
        };
        let (a, b) = shm::pair(&cfg).unwrap();
        let tap = |p: PathBuf| {
            move |q: Box<dyn QueueIo>, _| -> Box<dyn QueueIo> {
                Box::new(PcapTap::create(q, &p).unwrap())
            }
        };
        let mut a = a.wrap(tap(paths[0].clone()));
        let mut b = b.wrap(tap(paths[1].clone()));
        let a_to_b: Vec<Vec<u8>> = (0..5).map(|i| frame(i, 60 + 100 * i as usize)).collect();
        let b_to_a: Vec<Vec<u8>> = (10..13).map(|i| frame(i, 1514)).collect();

        for f in &a_to_b[..3] {
            send(a.queue(0), f);
        }
        a.queue(0).txsync().unwrap();
        // Several rxsyncs without release, more frames arriving in between: each frame is
        // recorded once.
        assert_eq!(b.queue(0).rxsync().unwrap(), 3);
        assert_eq!(b.queue(0).rxsync().unwrap(), 3);
        for f in &a_to_b[3..] {
            send(a.queue(0), f);
        }
        a.queue(0).txsync().unwrap();
        assert_eq!(b.queue(0).rxsync().unwrap(), 5);
        b.queue(0).rx_release(2);
        assert_eq!(b.queue(0).rxsync().unwrap(), 3);
        assert_eq!(b.queue(0).rx_frame(0), &a_to_b[2][..]);
        b.queue(0).rx_release(3);
        assert_eq!(b.queue(0).rxsync().unwrap(), 0);
        for f in &b_to_a {
            send(b.queue(0), f);
        }
        b.queue(0).txsync().unwrap();
        assert_eq!(a.queue(0).rxsync().unwrap(), 3);
        a.queue(0).rx_release(3);
        // Dropping the ports flushes both captures.
        drop((a, b));

        let (ha, fa) = read_records(&paths[0]);
        let (hb, fb) = read_records(&paths[1]);
        for h in [ha, hb] {
            assert_eq!(h.datalink, DataLink::ETHERNET);
            assert_eq!(h.ts_resolution, TsResolution::MicroSecond);
            assert!(h.snaplen >= 2048);
        }
        let expect_a: Vec<Vec<u8>> = a_to_b.iter().chain(&b_to_a).cloned().collect();
        assert_eq!(fa, expect_a, "side A: 5 sent, then 3 received");
        assert_eq!(fb, expect_a, "side B: 5 received, then 3 sent");

        match std::process::Command::new("tcpdump")
            .arg("-r")
            .arg(&paths[0])
            .arg("-n")
            .output()
        {
            Ok(out) => {
                assert!(out.status.success(), "tcpdump failed: {out:?}");
                // One line per packet; unknown EtherTypes add indented hex-dump lines.
                let text = String::from_utf8_lossy(&out.stdout);
                let packets = text.lines().filter(|l| !l.starts_with(char::is_whitespace));
                assert_eq!(packets.count(), expect_a.len(), "tcpdump output:\n{text}");
            }
            Err(e) => eprintln!("tcpdump not runnable ({e}); skipping the tcpdump check"),
        }
    }

    #[test]
    fn a_tap_writes_to_any_writer_and_counts() {
        let cfg = PortConfig {
            slots: 8,
            ..PortConfig::default()
        };
        let (a, mut b) = shm::pair(&cfg).unwrap();
        let mut tap = PcapTap::new(take_queue(a), Vec::new()).unwrap();
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(i, 64)).collect();
        for f in &frames {
            send(&mut tap, f);
        }
        tap.txsync().unwrap();
        assert_eq!(b.queue(0).rxsync().unwrap(), 4);
        tap.flush().unwrap();
        assert_eq!(tap.frames_written(), 4);
        assert_eq!(tap.frames_missed(), 0);
        let bytes = tap.into_writer().unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        for f in &frames {
            assert_eq!(&*r.next_packet().unwrap().unwrap().data, &f[..]);
        }
        assert!(r.next_packet().is_none());
    }

    /// A writer that fails once it has taken `room` bytes, like a full disk.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_stops_capture_is_reported_once_and_frames_keep_flowing() {
        let cfg = PortConfig {
            slots: 64,
            ..PortConfig::default()
        };
        let (a, mut b) = shm::pair(&cfg).unwrap();
        let mut tap = PcapTap::new(take_queue(a), Full { room: 100 }).unwrap();
        // The BufWriter (8 KiB) hides the failure until it spills or is flushed.
        for i in 0..10 {
            send(&mut tap, &frame(i, 1000));
        }
        let err = tap.txsync().unwrap_err();
        assert!(err.to_string().contains("pcap"), "{err}");
        assert!(tap.txsync().is_ok(), "reported once");
        assert!(tap.frames_missed() > 0);
        send(&mut tap, &frame(99, 60));
        tap.txsync().unwrap();
        assert_eq!(b.queue(0).rxsync().unwrap(), 11);
    }
}
