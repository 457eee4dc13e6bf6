//! A layer-2 relay between two veth ends, with seeded impairments: the "middle box" of the
//! interoperability tests.
//!
//! ```text
//!  our stack (AF_PACKET)        middle namespace: Relay           Linux kernel peer
//!  ┌──────────┐   veth   ┌───────────────────────────────┐  veth  ┌──────────────┐
//!  │ dev ours ├──────────┤ side A ─▶ Impaired(a_to_b) ─▶ ├────────┤ dev (10.0.0.1)│
//!  │          │          │        ◀─ Impaired(b_to_a) ◀─ │ side B │              │
//!  └──────────┘          └───────────────────────────────┘        └──────────────┘
//! ```
//!
//! The relay opens both ends of the middle namespace with psio's `afpacket` backend, wraps
//! each in [`Impaired`] (egress: the frames the relay *sends* on a side are the ones impaired,
//! so `a_to_b` is applied on side B's transmit queue) and, optionally, a [`PcapTap`] inside
//! it (the capture holds what was really on that wire: frames received from the side and
//! frames sent to it after loss, duplication and corruption). Every frame received on one
//! side is forwarded to the other unchanged: no address, MAC or checksum is touched (except
//! by the corruption the configuration asks for).
//!
//! The kernel of the middle namespace must not process these frames: reserve both ends with
//! [`Namespaces::reserve_for_user_stack`](crate::netns::Namespaces::reserve_for_user_stack)
//! and give them no address. psio's packet sockets ignore outgoing frames, so the relay never
//! sees what it sent itself.
//!
//! ## Cutting the link
//! [`Relay::set_cut`] turns the relay into a cut cable and back: while cut, every frame
//! received on either side is dropped (counted in [`DirectionStats::cut`]) instead of
//! forwarded, so both ends see silence, as when a peer's link goes down.
//!
//! ## What it counts
//! Per direction ([`DirectionStats`]): frames received and forwarded, and what the impairment
//! did to them (dropped, reordered, duplicated, corrupted, delayed). It also reads the TCP
//! header of every IPv4/TCP frame it forwards (before impairment, so the counts describe
//! what the sender sent): segments advertising a zero window, and *window probes*, segments
//! that carry one byte of data while the last window the other side advertised on that
//! connection was zero (RFC 9293 §3.8.6.1). Segments with more data into a zero window are
//! counted apart ([`DirectionStats::data_into_zero_window`]).
//!
//! ## Bounds
//! One thread; at most [`STAGE`] frames copied between the two rings per direction (the
//! staging queue that lets one side's ring be released while the other side's ring is full);
//! at most [`MAX_FLOWS`] connections tracked for window probes (the table is cleared when it
//! fills up).
//!
//! ## What it does not do
//! It does not learn MAC addresses, filter, fragment or rate-limit; it does not model a
//! bottleneck queue. Held (reordered, delayed) frames still held when the relay stops are
//! dropped with it.

use crate::netns;
use psio::{ImpairStats, ImpairStatsHandle, Impaired, ImpairmentConfig, Interest, Port, PortSet};
use psio::{PcapTap, QueueIo};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Frames staged per direction between the receive ring of one side and the transmit ring
/// of the other.
pub const STAGE: usize = 512;
/// Connections tracked for window-probe counting.
pub const MAX_FLOWS: usize = 4096;
/// Longest sleep between checks of the stop flag.
const TICK_US: u64 = 10_000;
/// Bytes per staged frame (psio's default buffer size: the largest frame a port carries).
const FRAME_MAX: usize = 2048;

/// What a relay is to do.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The middle namespace, holding both devices.
    pub ns: String,
    /// Side A's device (toward our stack, by convention).
    pub dev_a: String,
    /// Side B's device (toward the Linux peer, by convention).
    pub dev_b: String,
    /// Impairments of frames going from A to B.
    pub a_to_b: ImpairmentConfig,
    /// Impairments of frames going from B to A.
    pub b_to_a: ImpairmentConfig,
    /// Seed of the impairments (each direction derives its own stream from it).
    pub seed: u64,
    /// Write `relay-a.pcap` and `relay-b.pcap` (what was on each wire) into this directory.
    pub pcap_dir: Option<PathBuf>,
}

impl RelayConfig {
    /// A relay forwarding between `dev_a` and `dev_b` in `ns` without impairment or capture.
    pub fn clean(ns: &str, dev_a: &str, dev_b: &str) -> RelayConfig {
        RelayConfig {
            ns: ns.to_string(),
            dev_a: dev_a.to_string(),
            dev_b: dev_b.to_string(),
            a_to_b: ImpairmentConfig::default(),
            b_to_a: ImpairmentConfig::default(),
            seed: 0,
            pcap_dir: None,
        }
    }
}

/// What happened to the frames of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Frames received on the source side and handed to the other side's queue.
    pub forwarded: u64,
    /// Frames the impairment dropped.
    pub dropped: u64,
    /// Frames held back so that later ones overtook them.
    pub reordered: u64,
    /// Frames sent twice.
    pub duplicated: u64,
    /// Frames with one bit flipped.
    pub corrupted: u64,
    /// Frames delayed.
    pub delayed: u64,
    /// Frames that found the impairment's copy pool full and went through unimpaired.
    pub pool_full: u64,
    /// TCP segments advertising a zero window (RSTs excluded).
    pub zero_windows: u64,
    /// TCP segments with one byte of data sent while the other side's last advertised
    /// window on that connection was zero: window probes as RFC 9293 §3.8.6.1 describes them
    /// (Linux probes with empty, already acknowledged segments instead; those are not
    /// counted).
    pub window_probes: u64,
    /// TCP segments with more than one byte of data sent into a zero window.
    pub data_into_zero_window: u64,
    /// Frames dropped because the link was cut ([`Relay::set_cut`]).
    pub cut: u64,
}

impl DirectionStats {
    fn with_impairment(mut self, s: ImpairStats) -> DirectionStats {
        self.dropped = s.dropped;
        self.reordered = s.reordered;
        self.duplicated = s.duplicated;
        self.corrupted = s.corrupted;
        self.delayed = s.delayed;
        self.pool_full = s.pool_full;
        self
    }
}

impl std::fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} forwarded, {} dropped, {} reordered, {} duplicated, {} corrupted, \
             {} zero windows, {} window probes",
            self.forwarded,
            self.dropped,
            self.reordered,
            self.duplicated,
            self.corrupted,
            self.zero_windows,
            self.window_probes
        )?;
        if self.data_into_zero_window > 0 {
            write!(
                f,
                ", {} data segments into a zero window",
                self.data_into_zero_window
            )?;
        }
        if self.pool_full > 0 {
            write!(f, ", {} unimpaired (pool full)", self.pool_full)?;
        }
        if self.cut > 0 {
            write!(f, ", {} dropped by the cut", self.cut)?;
        }
        Ok(())
    }
}

/// Both directions' counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Frames from side A to side B.
    pub a_to_b: DirectionStats,
    /// Frames from side B to side A.
    pub b_to_a: DirectionStats,
}

/// The relay thread's own counters (one writer, many readers).
#[derive(Debug, Default)]
struct Live {
    forwarded: AtomicU64,
    zero_windows: AtomicU64,
    window_probes: AtomicU64,
    data_into_zero_window: AtomicU64,
    cut: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Live {
    fn snapshot(&self) -> DirectionStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            forwarded: r(&self.forwarded),
            zero_windows: r(&self.zero_windows),
            window_probes: r(&self.window_probes),
            data_into_zero_window: r(&self.data_into_zero_window),
            cut: r(&self.cut),
            ..DirectionStats::default()
        }
    }
}

/// Counters shared with the relay thread: index 0 is A→B, 1 is B→A.
#[derive(Debug, Default)]
struct Shared {
    live: [Live; 2],
    /// The link is cut: drop everything received.
    cut: AtomicBool,
    /// Impairment counters of side B's queue (A→B) and side A's queue (B→A), once open.
    impair: std::sync::OnceLock<[ImpairStatsHandle; 2]>,
}

/// A running relay; dropping it stops the thread (see [`Relay::stop`]).
#[derive(Debug)]
pub struct Relay {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<io::Result<()>>>>,
}

impl Relay {
    /// Opens both devices inside `config.ns` and starts forwarding; returns once both ports
    /// are open (or with the error that prevented it).
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        config
            .a_to_b
            .validate()
            .and_then(|()| config.b_to_a.validate())
            .map_err(io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (flag, counters) = (stop.clone(), shared.clone());
        let ns = config.ns.clone();
        let thread = netns::spawn_in(&ns, move || {
            let set = match open(&config) {
                Ok((set, handles)) => {
                    let _ = counters.impair.set(handles);
                    let _ = ready_tx.send(Ok(()));
                    set
                }
                Err(e) => {
                    let msg = e.to_string();
                    let _ = ready_tx.send(Err(e));
                    return Err(io::Error::other(msg));
                }
            };
            run(set, &flag, &counters)
        });
        let mut relay = Relay {
            stop,
            shared,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(relay),
            Ok(Err(e)) => {
                let _ = relay.join();
                Err(e)
            }
            // The thread ended before reporting: it could not enter the namespace.
            Err(_) => Err(relay
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("relay thread ended early"))),
        }
    }

    /// Cuts the link (`true`: every frame received from now on is dropped, both ways) or
    /// mends it (`false`). Frames already staged for a side still go out.
    pub fn set_cut(&self, cut: bool) {
        self.shared.cut.store(cut, Ordering::Release);
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let dir = |i: usize| {
            let s = self.shared.live[i].snapshot();
            match self.shared.impair.get() {
                Some(h) => s.with_impairment(h[i].egress()),
                None => s,
            }
        };
        RelayStats {
            a_to_b: dir(0),
            b_to_a: dir(1),
        }
    }

    /// Stops forwarding, closes both ports (flushing the captures) and returns the final
    /// counters, or the error that ended the relay early.
    pub fn stop(mut self) -> io::Result<RelayStats> {
        self.join()?;
        Ok(self.stats())
    }

    fn join(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        match t.join() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the relay thread panicked")),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            eprintln!("relay: {e}");
        }
    }
}

/// Opens side A as port 0 and side B as port 1 of a set, each wrapped in its direction's
/// impairment (and capture).
fn open(config: &RelayConfig) -> io::Result<(PortSet, [ImpairStatsHandle; 2])> {
    let mut set = PortSet::new().map_err(io::Error::other)?;
    let mut handles = Vec::new();
    // Side A transmits B→A frames; side B transmits A→B frames.
    for (side, dev, cfg, seed) in [
        (
            "a",
            &config.dev_a,
            &config.b_to_a,
            config.seed.wrapping_add(0x0b0a),
        ),
        (
            "b",
            &config.dev_b,
            &config.a_to_b,
            config.seed.wrapping_add(0x0a0b),
        ),
    ] {
        let name = format!("afpacket:{dev}/ring=v2,slots=4096");
        let port = Port::open(&name).map_err(|e| io::Error::other(format!("{name}: {e}")))?;
        let mut queues = port.into_queues();
        if queues.len() != 1 {
            return Err(io::Error::other(format!("{name}: expected one queue")));
        }
        let mut q: Box<dyn QueueIo> = queues.remove(0);
        if let Some(dir) = &config.pcap_dir {
            let path = dir.join(format!("relay-{side}.pcap"));
            q = Box::new(
                PcapTap::create(q, &path)
                    .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?,
            );
        }
        let imp = Impaired::try_new(q, cfg.clone(), seed).map_err(io::Error::other)?;
        handles.push(imp.stats_handle());
        set.add(Port::from_queues(&name, vec![Box::new(imp)]));
    }
    let b = handles.pop().expect("two handles");
    let a = handles.pop().expect("two handles");
    // Index 0 (A→B) is impaired on side B's queue; index 1 (B→A) on side A's.
    Ok((set, [b, a]))
}

/// Frames copied out of one side's receive ring, waiting for room in the other's.
struct Stage {
    frames: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl Stage {
    fn new() -> Stage {
        Stage {
            frames: VecDeque::with_capacity(STAGE),
            spare: (0..STAGE).map(|_| Vec::with_capacity(FRAME_MAX)).collect(),
        }
    }

    fn room(&self) -> usize {
        STAGE - self.frames.len()
    }
}

/// The relay loop: port 0 is side A, port 1 side B; direction `d` goes from port `d` to port
/// `1 - d`.
fn run(mut set: PortSet, stop: &AtomicBool, shared: &Shared) -> io::Result<()> {
    let mut stages = [Stage::new(), Stage::new()];
    let mut flows = [Flows::default(), Flows::default()];
    let mut interests = Vec::with_capacity(2);
    while !stop.load(Ordering::Acquire) {
        interests.clear();
        for side in 0..2 {
            let out = 1 - side;
            let tx = !stages[out].frames.is_empty() || set.port(side).queue(0).tx_pending() > 0;
            interests.push(Interest {
                port: side,
                queue: 0,
                rx: stages[side].room() > 0,
                tx,
            });
        }
        set.select(&interests, Some(TICK_US))
            .map_err(io::Error::other)?;
        for (d, stage) in stages.iter_mut().enumerate() {
            // Receive from side d into its stage.
            let (live, flows_here) = (&shared.live[d], &mut flows);
            let rx = set.port(d).queue(0);
            rx.rxsync().map_err(io::Error::other)?;
            let n = rx.rx_available().min(stage.room());
            if shared.cut.load(Ordering::Acquire) {
                (0..n).for_each(|_| bump(&live.cut));
            } else {
                for i in 0..n {
                    let frame = rx.rx_frame(i);
                    observe(frame, d, flows_here, live);
                    let mut buf = stage.spare.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(frame);
                    stage.frames.push_back(buf);
                    bump(&live.forwarded);
                }
            }
            rx.rx_release(n);
            // Send the stage out of the other side.
            let tx = set.port(1 - d).queue(0);
            while tx.tx_space() > 0 {
                let Some(buf) = stage.frames.pop_front() else {
                    break;
                };
                let len = buf.len().min(tx.buf_size());
                tx.tx_buf(0)[..len].copy_from_slice(&buf[..len]);
                tx.tx_push(len);
                stage.spare.push(buf);
            }
            tx.txsync().map_err(io::Error::other)?;
        }
    }
    Ok(())
}

/// A connection as seen in one direction: (source, destination, source port, destination
/// port).
type FlowKey = ([u8; 4], [u8; 4], u16, u16);

/// The last window each sender advertised, per connection.
#[derive(Default)]
struct Flows(HashMap<FlowKey, u16>);

/// Counts zero windows and window probes in an IPv4/TCP frame travelling in direction `d`.
/// Anything else (or anything malformed) is ignored.
fn observe(frame: &[u8], d: usize, flows: &mut [Flows; 2], live: &Live) {
    let Some(seg) = TcpView::parse(frame) else {
        return;
    };
    if seg.rst {
        return;
    }
    if seg.window == 0 {
        bump(&live.zero_windows);
    }
    // The window the other side last advertised on this connection (its key is reversed).
    let reverse = (seg.key.1, seg.key.0, seg.key.3, seg.key.2);
    if !seg.syn && flows[1 - d].0.get(&reverse) == Some(&0) {
        match seg.payload {
            0 => {}
            1 => bump(&live.window_probes),
            _ => bump(&live.data_into_zero_window),
        }
    }
    let table = &mut flows[d].0;
    if table.len() >= MAX_FLOWS && !table.contains_key(&seg.key) {
        table.clear();
    }
    table.insert(seg.key, seg.window);
}

/// The few TCP fields the relay looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpView {
    key: FlowKey,
    window: u16,
    syn: bool,
    rst: bool,
    /// Bytes of data.
    payload: usize,
}

impl TcpView {
    /// Parses an untagged Ethernet frame holding an unfragmented IPv4/TCP segment.
    fn parse(f: &[u8]) -> Option<TcpView> {
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] {
            return None;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
        if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 || fragment || total > ip.len() {
            return None;
        }
        let tcp = ip.get(ihl..total)?;
        if tcp.len() < 20 {
            return None;
        }
        let doff = usize::from(tcp[12] >> 4) * 4;
        if doff < 20 || doff > tcp.len() {
            return None;
        }
        let flags = tcp[13];
        Some(TcpView {
            key: (
                ip[12..16].try_into().ok()?,
                ip[16..20].try_into().ok()?,
                u16::from_be_bytes([tcp[0], tcp[1]]),
                u16::from_be_bytes([tcp[2], tcp[3]]),
            ),
            window: u16::from_be_bytes([tcp[14], tcp[15]]),
            syn: flags & 0x02 != 0,
            rst: flags & 0x04 != 0,
            payload: tcp.len() - doff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/TCP frame from 10.0.0.2:1000 to 10.0.0.1:2000.
    fn segment(flags: u8, window: u16, payload: usize, reverse: bool) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12] = 0x08;
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[9] = 6;
        let (a, b) = ([10, 0, 0, 2], [10, 0, 0, 1]);
        let (src, dst, sp, dp) = if reverse {
            (b, a, 2000u16, 1000u16)
        } else {
            (a, b, 1000, 2000)
        };
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let tcp = &mut ip[20..];
        tcp[0..2].copy_from_slice(&sp.to_be_bytes());
        tcp[2..4].copy_from_slice(&dp.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&window.to_be_bytes());
        f
    }

    #[test]
    fn tcp_view_reads_ports_window_and_payload() {
        let v = TcpView::parse(&segment(0x10, 512, 7, false)).unwrap();
        assert_eq!(v.key, ([10, 0, 0, 2], [10, 0, 0, 1], 1000, 2000));
        assert_eq!((v.window, v.payload, v.syn, v.rst), (512, 7, false, false));
        // Not IPv4, truncated, fragment: ignored.
        let mut arp = segment(0x10, 1, 0, false);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(TcpView::parse(&arp).is_none());
        assert!(TcpView::parse(&segment(0x10, 1, 0, false)[..40]).is_none());
        let mut frag = segment(0x10, 1, 0, false);
        frag[14 + 6] = 0x20;
        assert!(TcpView::parse(&frag).is_none());
    }

    #[test]
    fn probes_are_segments_into_a_zero_window() {
        let live = [Live::default(), Live::default()];
        let mut flows = [Flows::default(), Flows::default()];
        // Direction 1 (the receiver) closes its window; direction 0 probes with one byte,
        // then (wrongly) sends more; the receiver reopens; data flows again.
        observe(&segment(0x10, 0, 0, true), 1, &mut flows, &live[1]);
        observe(&segment(0x10, 100, 1, false), 0, &mut flows, &live[0]);
        observe(&segment(0x10, 100, 0, false), 0, &mut flows, &live[0]);
        observe(&segment(0x10, 100, 500, false), 0, &mut flows, &live[0]);
        observe(&segment(0x10, 8, 0, true), 1, &mut flows, &live[1]);
        observe(&segment(0x10, 100, 500, false), 0, &mut flows, &live[0]);
        let (a, b) = (live[0].snapshot(), live[1].snapshot());
        assert_eq!(b.zero_windows, 1);
        assert_eq!(a.window_probes, 1);
        assert_eq!(a.data_into_zero_window, 1);
        assert_eq!(a.zero_windows, 0);
    }

    #[test]
    fn a_relay_that_cannot_start_says_why() {
        let e = Relay::start(RelayConfig::clean("mtcp-no-such-namespace", "x", "y")).unwrap_err();
        assert!(e.to_string().contains("mtcp-no-such-namespace"), "{e}");
    }
}
