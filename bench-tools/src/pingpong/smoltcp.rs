//! **smoltcp-shm**: the pingpong application ([`super::Client`], [`super::Server`]) over
//! smoltcp 0.14's sockets and interfaces, with frames carried over the same kind of link as
//! mtcp-shm: psio's shared-memory rings. The baseline "another user-level TCP stack over the
//! same link".
//!
//! ## What runs
//! For each core `i` a link of its own, `shm:pingpong-smoltcp-<pid>-<n>-<i>/q=1` (default
//! ring: 1 024 slots of 2 KiB each way), with two ends: the server thread's [`SmolNet`]
//! (10.0.0.2, a listener on port 8080) and the client thread's (10.0.0.1). Each `SmolNet` is
//! one smoltcp `Interface` (Ethernet, MTU 1500, checksums in software: smoltcp's default
//! capabilities), one `SocketSet` and a [`ShmDevice`] over its end of the link. The stack runs
//! in the application thread (run to completion, like mtcp-shm-rtc): every [`Net::wait`]
//! polls the interface and sleeps on the link when there is nothing to report. Neighbours are
//! learnt by ARP (smoltcp 0.14 cannot pre-fill its cache). Socket buffers are 64 KiB each way,
//! mtcp-rs's default `tcp.send_buffer`/`recv_buffer`; Nagle and delayed ACKs (10 ms) keep
//! smoltcp's defaults, as the other stacks keep theirs.
//!
//! ## Readiness (what [`Net`] promises and how)
//! smoltcp has no event queue, but with its `async` feature each socket wakes a
//! [`std::task::Waker`] when something that may change `recv`/`send` results happens: data
//! enqueued, TX room freed by an ACK, any state change (handshake done, FIN, RST, timeout).
//! Every socket here has a waker that queues its entry's index; after each frame taken in,
//! after the egress pass and at the start of a pass the queue is drained, and each woken
//! connection is reported once with `Ready { token, writable, failed }` (edge-style; the
//! application then reads or writes until `WouldBlock`). Wakers are one-shot: a drained
//! socket's wakers are registered again at once. So a change is never missed and a socket is
//! reported only when it changed (plus a few spurious reports, e.g. a socket taken from the
//! spares wakes its previous owner's waker). Bookkeeping is O(sockets woken) per pass;
//! smoltcp's own passes are O(sockets) per frame taken in (socket lookup is a linear scan) and
//! per egress call.
//!
//! - `writable` is `can_send()`, or the connection failed (as Linux reports `EPOLLOUT` with
//!   `EPOLLERR` on a reset socket); `failed` is "the socket is CLOSED without our doing".
//! - The listener is level-triggered: its token is reported while a connection waits to be
//!   accepted. smoltcp has no backlog, so a listener is a pool of sockets listening on the
//!   port: before each frame is taken in, the pool is topped up to one free listening socket
//!   (a frame takes at most one), as long as the pool (listening + handshaking + waiting for
//!   `accept`) stays within the backlog (capped at [`MAX_BACKLOG`]). A SYN finding no free
//!   socket is answered with a RST by smoltcp (Linux would drop it). `accept` hands out
//!   sockets that reached ESTABLISHED or later (CLOSE-WAIT with data is fine), in order.
//! - `connect` takes the next free port of 1024..=65535 (cycling, skipping ports in use until
//!   their socket is removed) and returns at once; the SYN leaves at the next pass. Failure
//!   reasons: a RST while connecting is `ConnectionRefused`, a RST later `ConnectionReset`, a
//!   smoltcp timeout (handshake unanswered for [`USER_TIMEOUT`]) `TimedOut`. The error is
//!   sticky: `take_error` does not clear it, and `read`/`write` return it.
//! - `read`: bytes, `WouldBlock` when none yet, `Ok(0)` once the peer's FIN is reached.
//!   After a RST smoltcp drops to CLOSED without a FIN (and drops what was unread unless it
//!   is still buffered), which reads as `Err(ConnectionReset)`.
//! - `close` (FIN after the data) and `abort` (RST) leave the socket to the next pass, which
//!   sends the segment; the socket is removed from the set once CLOSED with nothing left to
//!   send, or as soon as it reaches TIME-WAIT: this stack keeps no TIME-WAIT (the final ACK
//!   has left in the same pass, unless the TX ring was full; a retransmitted FIN then meets a
//!   RST). A closing socket whose peer stays silent for [`LINGER`] is aborted (Linux's
//!   `tcp_fin_timeout` plays that role for FIN-WAIT-2). Removed sockets (their 128 KiB of
//!   buffers) are kept as spares, up to [`SPARE_SOCKETS`], for the next `connect` or listener.
//!   Dropping a `SmolNet` runs one last pass, so the RSTs and FINs of its last calls leave.
//!
//! ## The device
//! [`ShmDevice`] is a `phy::Device` over one psio queue: an RX token reads the frame in place
//! in its RX slot and releases the slot; a TX token from `transmit` builds the frame in place
//! in the next TX slot. Syncs are batched: `rxsync` only when the received frames are used up,
//! `txsync` when TX room runs short and once at the end of each pass. `transmit` keeps
//! [`TX_RESERVE`] slots free for answers produced while receiving (ARP replies, RSTs), which
//! smoltcp builds with the token `receive` hands out alongside the RX token, inside the RX
//! token's `consume`; since both would need the queue at once, such an answer is built in a
//! scratch buffer and copied into a TX slot at the next device call (answers are rare; if no
//! slot is free it is dropped and counted, the note under the table says so). When segments
//! wait for TX room (more to send than the ring holds, as with 1 024 connections), `wait`
//! sleeps until the peer's answers arrive, or until room appears when no slot at all is free,
//! for at most [`EXHAUSTED_WAIT`]: polling again at once would spin whole passes (each
//! O(sockets) in smoltcp) while the peer frees a few slots at a time. With a ring that
//! short of room, smoltcp serves sockets in the set's order each pass, which shows in p99.
//!
//! What it does not do: IPv6, more than one queue per link, TCP options smoltcp lacks (SACK
//! is off in 0.14), congestion control (smoltcp's default, none, as built here).

use super::{backlog, drive_run, Mode, Net, Plan, Ready, Sample, Stack, Wire};
use super::{BULK_BUFFER, LISTENER, MTCP_CLIENT, MTCP_PORT, MTCP_SERVER};
use ::smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult};
use ::smoltcp::iface::{SocketHandle, SocketSet};
use ::smoltcp::phy::{self, DeviceCapabilities, Medium};
use ::smoltcp::socket::tcp::{self, RecvError, State};
use ::smoltcp::socket::Socket;
use ::smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use ::smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use core::net::{Ipv4Addr, SocketAddrV4};
use psio::{Interest, Port, PortSet, QueueIo};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

/// Bytes of each socket buffer, each way (mtcp-rs's default send and receive buffers).
const BUFFER: usize = 64 * 1024;
/// Largest listener pool, whatever backlog is asked for.
const MAX_BACKLOG: usize = 4096;
/// Free listening sockets kept in a pool before each frame is taken in.
const FREE_LISTENERS: usize = 1;
/// Ephemeral ports `connect` cycles through.
const FIRST_PORT: u16 = 1024;
const LAST_PORT: u16 = u16::MAX;
/// TX slots `transmit` leaves for answers built while receiving.
const TX_RESERVE: usize = 64;
/// Frames taken in per pass at most (then egress runs; the rest waits for the next pass).
const INGRESS_BUDGET: usize = 1024;
/// Egress calls per pass at most (each sends at most one segment per socket).
const EGRESS_BUDGET: usize = 1024;
/// smoltcp's timeout (no segment from the peer for this long) on handshakes: a `connect`
/// and a pooled listener's SYN-RECEIVED. Established connections have none, as on Linux.
const USER_TIMEOUT: Duration = Duration::from_secs(60);
/// A closed socket still waiting for its peer this long is aborted.
const LINGER: Duration = Duration::from_secs(60);
/// How often closing sockets are checked against [`LINGER`].
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Removed sockets kept for reuse.
const SPARE_SOCKETS: usize = 4096;
/// Longest sleep while segments wait for TX room (see [`SmolNet::wait`]).
const EXHAUSTED_WAIT: Duration = Duration::from_micros(200);
/// Sleep after passes that keep asking for an immediate poll without moving anything.
const NAP: Duration = Duration::from_micros(50);

// ---------------------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------------------

/// An answer smoltcp built while receiving (see the module doc), waiting for a TX slot.
#[derive(Debug, Default)]
struct Reply {
    buf: Vec<u8>,
    pending: bool,
}

/// What the device tells its owner after a pass.
#[derive(Debug, Default)]
struct LinkState {
    /// Frames dropped: answers without a TX slot, frames larger than a slot.
    dropped: u64,
    /// `transmit` refused a token for lack of room during this pass.
    exhausted: bool,
    /// The first sync error of this pass.
    error: Option<psio::Error>,
}

/// smoltcp's `phy::Device` over one psio queue (see the module doc). Built for each use from
/// [`SmolNet`]'s fields; holds nothing of its own.
struct ShmDevice<'a> {
    q: &'a mut dyn QueueIo,
    reply: &'a mut Reply,
    link: &'a mut LinkState,
}

impl ShmDevice<'_> {
    /// Whether `n` TX slots are free, syncing (publishing what was pushed, reclaiming what
    /// the peer released) when fewer are known to be.
    fn room(&mut self, n: usize) -> bool {
        if self.q.tx_space() < n {
            if let Err(e) = self.q.txsync() {
                self.link.error.get_or_insert(e);
            }
        }
        self.q.tx_space() >= n
    }

    /// Puts a pending answer into a TX slot, or drops it when there is none.
    fn flush_reply(&mut self) {
        if !self.reply.pending {
            return;
        }
        self.reply.pending = false;
        let len = self.reply.buf.len();
        if len <= self.q.buf_size() && self.room(1) {
            self.q.tx_buf(0)[..len].copy_from_slice(&self.reply.buf);
            self.q.tx_push(len);
        } else {
            self.link.dropped += 1;
        }
    }

    /// End of a pass: everything pushed goes to the peer, released RX slots go back.
    fn finish(&mut self) {
        self.flush_reply();
        if let Err(e) = self.q.txsync() {
            self.link.error.get_or_insert(e);
        }
        if let Err(e) = self.q.rxsync() {
            self.link.error.get_or_insert(e);
        }
    }
}

/// RX token of [`ShmDevice`]: the oldest received frame, read in place, released once used.
struct ShmRx<'a> {
    q: &'a mut dyn QueueIo,
}

/// TX token of [`ShmDevice`]: the next TX slot (`transmit`), or the scratch buffer of an
/// answer (`receive`).
enum ShmTx<'a> {
    Ring {
        q: &'a mut dyn QueueIo,
        dropped: &'a mut u64,
    },
    Reply(&'a mut Reply),
}

impl phy::Device for ShmDevice<'_> {
    type RxToken<'b>
        = ShmRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = ShmTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: SmolInstant) -> Option<(ShmRx<'_>, ShmTx<'_>)> {
        self.flush_reply();
        if self.q.rx_available() == 0 {
            if let Err(e) = self.q.rxsync() {
                self.link.error.get_or_insert(e);
            }
            if self.q.rx_available() == 0 {
                return None;
            }
        }
        Some((ShmRx { q: &mut *self.q }, ShmTx::Reply(&mut *self.reply)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<ShmTx<'_>> {
        self.flush_reply();
        if !self.room(TX_RESERVE + 1) {
            self.link.exhausted = true;
            return None;
        }
        Some(ShmTx::Ring {
            q: &mut *self.q,
            dropped: &mut self.link.dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp counts the Ethernet header in the MTU of an Ethernet device.
        caps.max_transmission_unit = 1514;
        caps
    }
}

impl phy::RxToken for ShmRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // `receive` made sure a frame is available.
        let r = f(self.q.rx_frame(0));
        self.q.rx_release(1);
        r
    }
}

impl phy::TxToken for ShmTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            ShmTx::Ring { q, dropped } => {
                // `transmit` made sure of a free slot; smoltcp never exceeds the MTU, which
                // fits a 2 KiB buffer. Otherwise the frame is built and dropped.
                if len <= q.buf_size() && q.tx_space() > 0 {
                    let r = f(&mut q.tx_buf(0)[..len]);
                    q.tx_push(len);
                    r
                } else {
                    *dropped += 1;
                    f(&mut vec![0; len])
                }
            }
            ShmTx::Reply(reply) => {
                reply.buf.clear();
                reply.buf.resize(len, 0);
                let r = f(&mut reply.buf);
                reply.pending = true;
                r
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets and their bookkeeping
// ---------------------------------------------------------------------------------------------

/// The waker of one entry: queues the entry's index (once until drained).
#[derive(Debug)]
struct WakeFlag {
    id: usize,
    queued: AtomicBool,
    woken: Arc<Mutex<Vec<usize>>>,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::Relaxed) {
            self.woken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.id);
        }
    }
}

/// Where a pooled listening socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// LISTEN: free for the next SYN.
    Listen,
    /// SYN-RECEIVED.
    Pending,
    /// ESTABLISHED or later: queued for `accept`.
    Ready,
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing (in the free list).
    Free,
    /// A socket of listener `listener`'s pool, not accepted yet.
    Pooled { listener: usize, pool: Pool },
    /// A connection the application holds.
    Conn,
    /// Closed or aborted by the application; removed once done.
    Closing,
}

/// One socket of the set and what this layer knows of it.
#[derive(Debug)]
struct Entry {
    sock: Option<SocketHandle>,
    kind: Kind,
    token: u64,
    /// The ephemeral port this entry holds (0: none).
    port: u16,
    /// Seen past SYN-SENT (a later RST is a reset, not a refusal).
    established: bool,
    /// Why it failed (sticky).
    error: Option<io::ErrorKind>,
    /// The report round it was last queued in.
    round: u64,
    /// The pass it was last queued for a closing check in.
    pass: u64,
    /// When the application closed it.
    since: Instant,
    wake: Arc<WakeFlag>,
    waker: Waker,
}

/// A listener: its port and its pool (see the module doc).
#[derive(Debug)]
struct Listener {
    port: u16,
    token: u64,
    /// Largest pool.
    max: usize,
    /// Sockets in the pool (any [`Pool`] state).
    members: usize,
    /// Of which in LISTEN.
    free: usize,
    /// Entries that reached [`Pool::Ready`], oldest first (stale ones are skipped).
    acceptable: VecDeque<usize>,
}

/// Ports in use and the next one to try.
#[derive(Debug)]
struct Ports {
    in_use: Vec<bool>,
    next: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            in_use: vec![false; 1 << 16],
            next: FIRST_PORT,
        }
    }

    fn acquire(&mut self) -> Option<u16> {
        for _ in FIRST_PORT..=LAST_PORT {
            let p = self.next;
            self.next = if p == LAST_PORT { FIRST_PORT } else { p + 1 };
            if !self.in_use[usize::from(p)] {
                self.in_use[usize::from(p)] = true;
                return Some(p);
            }
        }
        None
    }

    fn release(&mut self, p: u16) {
        self.in_use[usize::from(p)] = false;
    }
}

/// When a woken socket is looked at: what may have closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Before the pass: the application's own calls.
    App,
    /// After a frame was taken in: a RST.
    Ingress,
    /// After egress: a timeout.
    Egress,
}

/// A socket of [`SmolNet`].
#[derive(Debug)]
pub(super) enum SmolSock {
    /// A connection: its entry.
    Conn(usize),
    /// A listener: its index.
    Listener(usize),
}

/// [`Net`] over one smoltcp interface and socket set on one end of a shared-memory link (see
/// the module doc).
pub(super) struct SmolNet {
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The link's port (port 0 of the set, queue 0).
    set: PortSet,
    reply: Reply,
    link: LinkState,
    /// smoltcp's time origin.
    epoch: Instant,
    entries: Vec<Entry>,
    free_entries: Vec<usize>,
    listeners: Vec<Option<Listener>>,
    /// Where wakers queue entries.
    woken_list: Arc<Mutex<Vec<usize>>>,
    /// Scratch for draining `woken_list`.
    woken: Vec<usize>,
    /// Connections to report at the end of this wait, queued in round `round`.
    report: Vec<usize>,
    round: u64,
    /// Closing entries to check after this pass's egress, queued in pass `pass`.
    closing: Vec<usize>,
    pass: u64,
    next_sweep: Instant,
    spares: Vec<tcp::Socket<'static>>,
    ports: Ports,
    /// Where `link.dropped` is added when this drops (the run's note).
    dropped_total: Arc<AtomicU64>,
    /// Send and receive buffer of each socket, bytes.
    buffer: usize,
}

fn psio_error(e: psio::Error) -> io::Error {
    io::Error::other(format!("psio: {e}"))
}

impl SmolNet {
    /// An interface with address `ip`/24 and MAC `mac` on queue 0 of `port`; `seed` seeds
    /// smoltcp's ISNs. Frames dropped are added to `dropped_total` when it drops.
    pub(super) fn new(
        port: Port,
        mac: [u8; 6],
        ip: Ipv4Addr,
        seed: u64,
        dropped_total: Arc<AtomicU64>,
    ) -> io::Result<SmolNet> {
        if port.num_queues() == 0 {
            return Err(io::Error::other("a port without queues"));
        }
        let mut set = PortSet::new().map_err(psio_error)?;
        set.add(port);
        let (mut reply, mut link) = (Reply::default(), LinkState::default());
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let mut dev = ShmDevice {
            q: set.port(0).queue(0),
            reply: &mut reply,
            link: &mut link,
        };
        let mut iface = Interface::new(config, &mut dev, SmolInstant::from_micros(0));
        let mut added = true;
        iface.update_ip_addrs(|addrs| {
            added = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).is_ok();
        });
        if !added {
            return Err(io::Error::other("smoltcp: no room for an address"));
        }
        let now = Instant::now();
        Ok(SmolNet {
            iface,
            sockets: SocketSet::new(Vec::new()),
            set,
            reply,
            link,
            epoch: now,
            entries: Vec::new(),
            free_entries: Vec::new(),
            listeners: Vec::new(),
            woken_list: Arc::new(Mutex::new(Vec::new())),
            woken: Vec::new(),
            report: Vec::new(),
            round: 1,
            closing: Vec::new(),
            pass: 0,
            next_sweep: now + SWEEP_EVERY,
            spares: Vec::new(),
            ports: Ports::new(),
            dropped_total,
            buffer: BUFFER,
        })
    }

    /// Gives the sockets made from now on `bytes` of send and of receive buffer.
    pub(super) fn with_buffers(mut self, bytes: usize) -> SmolNet {
        if bytes != self.buffer {
            self.spares.clear();
            self.buffer = bytes;
        }
        self
    }

    /// Sockets in the set (every kind): what a leak would grow.
    #[cfg(test)]
    fn live_sockets(&self) -> usize {
        self.entries.iter().filter(|e| e.sock.is_some()).count()
    }

    fn smol_now(&self) -> SmolInstant {
        SmolInstant::from_micros(
            i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX),
        )
    }

    /// A closed socket with empty buffers: a spare, or a new one.
    fn new_socket(&mut self) -> tcp::Socket<'static> {
        self.spares.pop().unwrap_or_else(|| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; self.buffer]),
                tcp::SocketBuffer::new(vec![0; self.buffer]),
            )
        })
    }

    /// Keeps a socket for reuse (or drops it when there are enough).
    fn spare(&mut self, s: tcp::Socket<'static>) {
        if self.spares.len() < SPARE_SOCKETS {
            self.spares.push(s);
        }
    }

    /// Gives socket `h` an entry (its wakers registered) and returns the entry's index.
    fn new_entry(&mut self, h: SocketHandle, kind: Kind, token: u64, port: u16) -> usize {
        let id = self.free_entries.pop().unwrap_or_else(|| {
            let id = self.entries.len();
            let wake = Arc::new(WakeFlag {
                id,
                queued: AtomicBool::new(false),
                woken: self.woken_list.clone(),
            });
            let waker = Waker::from(wake.clone());
            self.entries.push(Entry {
                sock: None,
                kind: Kind::Free,
                token: 0,
                port: 0,
                established: false,
                error: None,
                round: 0,
                pass: 0,
                since: self.epoch,
                wake,
                waker,
            });
            id
        });
        let e = &mut self.entries[id];
        e.sock = Some(h);
        e.kind = kind;
        e.token = token;
        e.port = port;
        e.established = false;
        e.error = None;
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        s.register_recv_waker(&e.waker);
        s.register_send_waker(&e.waker);
        id
    }

    /// Removes entry `id`'s socket from the set (keeping it as a spare) and frees the entry.
    fn remove(&mut self, id: usize) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        let (sock, port) = (e.sock.take(), std::mem::take(&mut e.port));
        e.kind = Kind::Free;
        e.error = None;
        self.free_entries.push(id);
        if port != 0 {
            self.ports.release(port);
        }
        if let Some(h) = sock {
            if let Socket::Tcp(s) = self.sockets.remove(h) {
                self.spare(s);
            }
        }
    }

    /// Whether a closing socket is done: CLOSED with nothing left to send (its RST, if any,
    /// has left: smoltcp forgets the endpoint then), or in TIME-WAIT (not kept here).
    fn done_closing(s: &tcp::Socket) -> bool {
        match s.state() {
            State::Closed => s.local_endpoint().is_none(),
            State::TimeWait => true,
            _ => false,
        }
    }

    /// Entry `id` is the application's no more: closes it (`abort` or FIN), removing it
    /// at once when nothing is left to send.
    fn release(&mut self, id: usize, abort: bool) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        let Some(h) = e.sock else { return };
        e.kind = Kind::Closing;
        e.since = Instant::now();
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if abort {
            s.abort();
        } else {
            s.close();
        }
        if Self::done_closing(s) {
            self.remove(id);
        }
        // Otherwise the state change woke it: the next pass looks at it after egress.
    }

    /// Closes listener `li`: its pool's sockets are aborted (handshakes and connections not
    /// accepted get a RST, as from Linux).
    fn close_listener(&mut self, li: usize) -> io::Result<()> {
        let Some(l) = self.listeners.get_mut(li).and_then(Option::take) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "listener already closed",
            ));
        };
        self.ports.release(l.port);
        let members: Vec<usize> = (0..self.entries.len())
            .filter(|&id| {
                matches!(self.entries[id].kind, Kind::Pooled { listener, .. } if listener == li)
            })
            .collect();
        for id in members {
            self.release(id, true);
        }
        Ok(())
    }

    /// Tops every listener's pool up to [`FREE_LISTENERS`] free sockets (within its maximum).
    fn refill(&mut self) {
        for li in 0..self.listeners.len() {
            while let Some(Some(l)) = self.listeners.get(li) {
                if l.free >= FREE_LISTENERS || l.members >= l.max {
                    break;
                }
                let port = l.port;
                let mut s = self.new_socket();
                if s.listen(port).is_err() {
                    self.spare(s);
                    break;
                }
                s.set_timeout(Some(SmolDuration::from_micros(
                    USER_TIMEOUT.as_micros() as u64
                )));
                let h = self.sockets.add(s);
                let kind = Kind::Pooled {
                    listener: li,
                    pool: Pool::Listen,
                };
                self.new_entry(h, kind, 0, 0);
                if let Some(Some(l)) = self.listeners.get_mut(li) {
                    l.free += 1;
                    l.members += 1;
                }
            }
        }
    }

    /// Looks at the sockets woken since the last drain.
    fn drain(&mut self, seen: Seen) {
        {
            let mut list = self
                .woken_list
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if list.is_empty() {
                return;
            }
            std::mem::swap(&mut *list, &mut self.woken);
        }
        let mut woken = std::mem::take(&mut self.woken);
        for &id in &woken {
            self.on_wake(id, seen);
        }
        woken.clear();
        self.woken = woken;
    }

    /// Entry `id` was woken: re-arms its wakers and files it by kind.
    fn on_wake(&mut self, id: usize, seen: Seen) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        e.wake.queued.store(false, Ordering::Relaxed);
        let Some(h) = e.sock else { return };
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        s.register_recv_waker(&e.waker);
        s.register_send_waker(&e.waker);
        let state = s.state();
        match e.kind {
            Kind::Free => {}
            Kind::Conn => {
                if state == State::Closed {
                    if e.error.is_none() {
                        e.error = Some(match seen {
                            Seen::Egress => io::ErrorKind::TimedOut,
                            _ if e.established => io::ErrorKind::ConnectionReset,
                            _ => io::ErrorKind::ConnectionRefused,
                        });
                    }
                } else if state != State::SynSent && !e.established {
                    e.established = true;
                    // The handshake's timeout ends with it (connections idle at will).
                    s.set_timeout(None);
                }
                if e.round != self.round {
                    e.round = self.round;
                    self.report.push(id);
                }
            }
            Kind::Closing => {
                if e.pass != self.pass {
                    e.pass = self.pass;
                    self.closing.push(id);
                }
            }
            Kind::Pooled { listener, pool } => {
                let Some(Some(l)) = self.listeners.get_mut(listener) else {
                    return;
                };
                let now = match state {
                    State::Listen => Pool::Listen,
                    State::SynReceived => Pool::Pending,
                    // Reset or timed out before `accept`: listen again.
                    State::Closed | State::TimeWait => {
                        if s.listen(l.port).is_ok() {
                            Pool::Listen
                        } else {
                            Pool::Pending
                        }
                    }
                    _ => Pool::Ready,
                };
                e.kind = Kind::Pooled {
                    listener,
                    pool: now,
                };
                if pool == Pool::Listen && now != Pool::Listen {
                    l.free = l.free.saturating_sub(1);
                } else if pool != Pool::Listen && now == Pool::Listen {
                    l.free += 1;
                }
                if now == Pool::Ready && pool != Pool::Ready {
                    l.acceptable.push_back(id);
                }
            }
        }
    }

    /// Aborts closing sockets whose peer kept them past [`LINGER`] (checked every
    /// [`SWEEP_EVERY`]).
    fn sweep(&mut self) {
        let now = Instant::now();
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        for e in &mut self.entries {
            if let (Kind::Closing, Some(h)) = (e.kind, e.sock) {
                if now.saturating_duration_since(e.since) >= LINGER {
                    e.since = now;
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                }
            }
        }
    }

    /// Removes the closing sockets of this pass that are done.
    fn reap(&mut self) {
        let mut list = std::mem::take(&mut self.closing);
        for &id in &list {
            let Some(e) = self.entries.get(id) else {
                continue;
            };
            if let (Kind::Closing, Some(h)) = (e.kind, e.sock) {
                if Self::done_closing(self.sockets.get::<tcp::Socket>(h)) {
                    self.remove(id);
                }
            }
        }
        list.clear();
        self.closing = list;
    }

    /// One pass of the stack: frames in (at most [`INGRESS_BUDGET`]), segments out, syncs,
    /// then the woken sockets filed (connections into `report`) and finished ones removed.
    fn poll_pass(&mut self) -> io::Result<()> {
        self.pass += 1;
        self.link.exhausted = false;
        let now = self.smol_now();
        self.drain(Seen::App);
        self.sweep();
        self.iface.poll_maintenance(now);
        for _ in 0..INGRESS_BUDGET {
            self.refill();
            let mut dev = ShmDevice {
                q: self.set.port(0).queue(0),
                reply: &mut self.reply,
                link: &mut self.link,
            };
            let r = self
                .iface
                .poll_ingress_single(now, &mut dev, &mut self.sockets);
            if r == PollIngressSingleResult::None {
                break;
            }
            self.drain(Seen::Ingress);
        }
        let mut dev = ShmDevice {
            q: self.set.port(0).queue(0),
            reply: &mut self.reply,
            link: &mut self.link,
        };
        for _ in 0..EGRESS_BUDGET {
            if self.iface.poll_egress(now, &mut dev, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        dev.finish();
        self.drain(Seen::Egress);
        self.reap();
        match self.link.error.take() {
            Some(e) => Err(psio_error(e)),
            None => Ok(()),
        }
    }

    /// Moves this round's reports into `out` (connections, then listeners with connections
    /// waiting) and starts the next round.
    fn fill(&mut self, out: &mut Vec<Ready>) {
        for &id in &self.report {
            let e = &self.entries[id];
            if let (Kind::Conn, Some(h)) = (e.kind, e.sock) {
                let s = self.sockets.get::<tcp::Socket>(h);
                let failed = s.state() == State::Closed;
                out.push(Ready {
                    token: e.token,
                    writable: failed || s.can_send(),
                    failed,
                });
            }
        }
        self.report.clear();
        self.round += 1;
        for l in self.listeners.iter().flatten() {
            if !l.acceptable.is_empty() {
                out.push(Ready {
                    token: l.token,
                    writable: false,
                    failed: false,
                });
            }
        }
    }

    /// The entry and socket of a connection.
    fn conn(&mut self, sock: &SmolSock) -> io::Result<(usize, &mut tcp::Socket<'static>)> {
        let id = match *sock {
            SmolSock::Conn(id) => id,
            SmolSock::Listener(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a listener has no stream",
                ))
            }
        };
        match self.entries.get(id) {
            Some(Entry {
                kind: Kind::Conn,
                sock: Some(h),
                ..
            }) => Ok((id, self.sockets.get_mut::<tcp::Socket>(*h))),
            _ => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "not an open connection",
            )),
        }
    }

    /// The error of a connection smoltcp closed without a FIN.
    fn failure(&self, id: usize) -> io::Error {
        let kind = self.entries[id]
            .error
            .unwrap_or(io::ErrorKind::ConnectionReset);
        io::Error::from(kind)
    }
}

impl Drop for SmolNet {
    fn drop(&mut self) {
        // The RSTs and FINs of the last calls leave (best effort).
        let _ = self.poll_pass();
        self.dropped_total
            .fetch_add(self.link.dropped, Ordering::Relaxed);
    }
}

impl Net for SmolNet {
    type Sock = SmolSock;

    fn listen(&mut self, port: u16, backlog: usize, token: u64) -> io::Result<SmolSock> {
        if port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "smoltcp listeners need a port",
            ));
        }
        if self.ports.in_use[usize::from(port)] {
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        self.ports.in_use[usize::from(port)] = true;
        self.listeners.push(Some(Listener {
            port,
            token,
            max: backlog.clamp(1, MAX_BACKLOG),
            members: 0,
            free: 0,
            acceptable: VecDeque::new(),
        }));
        self.refill();
        Ok(SmolSock::Listener(self.listeners.len() - 1))
    }

    fn accept(&mut self, listener: &SmolSock, token: u64) -> io::Result<Option<SmolSock>> {
        let SmolSock::Listener(li) = *listener else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "accept on a connection",
            ));
        };
        loop {
            let Some(Some(l)) = self.listeners.get_mut(li) else {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "listener closed",
                ));
            };
            let Some(id) = l.acceptable.pop_front() else {
                return Ok(None);
            };
            let e = &mut self.entries[id];
            let ready = Kind::Pooled {
                listener: li,
                pool: Pool::Ready,
            };
            let Some(h) = e.sock.filter(|_| e.kind == ready) else {
                continue; // stale: accepted or back to listening since
            };
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if matches!(
                s.state(),
                State::Listen | State::SynReceived | State::Closed | State::TimeWait
            ) {
                continue; // changed since: its wake (queued) files it again
            }
            s.set_timeout(None);
            l.members = l.members.saturating_sub(1);
            e.kind = Kind::Conn;
            e.token = token;
            e.established = true;
            e.error = None;
            // As an edge-triggered registration reports what is already there: the request
            // may have arrived with the handshake's last ACK.
            if e.round != self.round {
                e.round = self.round;
                self.report.push(id);
            }
            return Ok(Some(SmolSock::Conn(id)));
        }
    }

    fn connect(&mut self, to: SocketAddrV4, token: u64) -> io::Result<SmolSock> {
        let port = self
            .ports
            .acquire()
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no free local port"))?;
        let mut s = self.new_socket();
        let remote = (IpAddress::Ipv4(*to.ip()), to.port());
        if let Err(e) = s.connect(self.iface.context(), remote, port) {
            self.ports.release(port);
            self.spare(s);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("smoltcp connect to {to}: {e}"),
            ));
        }
        s.set_timeout(Some(SmolDuration::from_micros(
            USER_TIMEOUT.as_micros() as u64
        )));
        let h = self.sockets.add(s);
        Ok(SmolSock::Conn(self.new_entry(h, Kind::Conn, token, port)))
    }

    fn take_error(&mut self, s: &SmolSock) -> io::Result<Option<io::Error>> {
        Ok(match *s {
            SmolSock::Conn(id) => self
                .entries
                .get(id)
                .and_then(|e| e.error)
                .map(io::Error::from),
            SmolSock::Listener(_) => None,
        })
    }

    fn read(&mut self, sock: &SmolSock, buf: &mut [u8]) -> io::Result<usize> {
        let (id, s) = self.conn(sock)?;
        match s.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(RecvError::Finished) => Ok(0),
            Err(_) => match s.state() {
                State::SynSent | State::SynReceived => Err(io::ErrorKind::WouldBlock.into()),
                State::Closed => Err(self.failure(id)),
                _ => Err(io::ErrorKind::NotConnected.into()),
            },
        }
    }

    fn write(&mut self, sock: &SmolSock, data: &[u8]) -> io::Result<usize> {
        let (id, s) = self.conn(sock)?;
        match s.send_slice(data) {
            Ok(0) if !data.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(_) => match s.state() {
                State::SynSent | State::SynReceived => Err(io::ErrorKind::WouldBlock.into()),
                State::Closed => Err(self.failure(id)),
                _ => Err(io::ErrorKind::BrokenPipe.into()),
            },
        }
    }

    fn close(&mut self, s: SmolSock) -> io::Result<()> {
        match s {
            SmolSock::Conn(id) => {
                self.release(id, false);
                Ok(())
            }
            SmolSock::Listener(li) => self.close_listener(li),
        }
    }

    fn abort(&mut self, s: SmolSock) -> io::Result<()> {
        match s {
            SmolSock::Conn(id) => {
                self.release(id, true);
                Ok(())
            }
            SmolSock::Listener(li) => self.close_listener(li),
        }
    }

    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: u16) -> io::Result<()> {
        out.clear();
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        let mut idle_polls = 0;
        loop {
            self.poll_pass()?;
            self.fill(out);
            if !out.is_empty() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let now = self.smol_now();
            let delay = self
                .iface
                .poll_delay(now, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()));
            let mut sleep = delay.map_or(left, |d| d.min(left));
            let mut tx = false;
            if self.link.exhausted {
                // Segments wait for TX room, which the peer frees as it takes our frames in
                // (all of a batch at once) and answers: sleep until an answer arrives, or
                // until room appears if there is none at all (with a few slots free, waiting
                // for TX readiness would return at once and spin whole passes).
                tx = self.set.port(0).queue(0).tx_space() == 0;
                sleep = left.min(EXHAUSTED_WAIT);
            } else if sleep.is_zero() {
                // A timer came due during the pass: poll again, napping if smoltcp keeps
                // asking without anything to do.
                idle_polls += 1;
                if idle_polls < 3 {
                    continue;
                }
                sleep = NAP.min(left);
            }
            let interest = [Interest {
                port: 0,
                queue: 0,
                rx: true,
                tx,
            }];
            self.set
                .select(&interest, Some(sleep.as_micros() as u64))
                .map_err(psio_error)?;
            if !sleep.is_zero() {
                idle_polls = 0;
            }
        }
    }
}

/// The MAC address of `ip`'s end of a link (as [`Wire::mac`] gives mtcp-shm's).
fn mac(ip: Ipv4Addr) -> [u8; 6] {
    [2, 0, 0, 0, 0, ip.octets()[3]]
}

/// One run of smoltcp-shm: per core a link of its own, a server [`SmolNet`] with its listener
/// and a client [`SmolNet`], the application on top (see the module doc).
pub(super) fn smoltcp_run(plan: &Plan) -> Result<Sample, String> {
    let Wire::Shm(link) = Wire::shm("smoltcp") else {
        return Err("no shared-memory link name".into());
    };
    let dropped = Arc::new(AtomicU64::new(0));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    // Bulk: the buffers mtcp-rs gets there too.
    let buffer = if plan.mode == Mode::Bulk {
        BULK_BUFFER
    } else {
        BUFFER
    };
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for i in 0..plan.cores {
        // Both ends by the same name: the first open creates the link, the second attaches.
        let name = format!("shm:{link}-{i}/q=1");
        let open = |who: &str| Port::open(&name).map_err(|e| format!("{who} {i}: {name}: {e}"));
        let (srv_port, cli_port) = (open("server")?, open("client")?);
        let side = |who: &'static str| move |e: io::Error| format!("{who} core {i}: {e}");
        let mut srv = SmolNet::new(
            srv_port,
            mac(MTCP_SERVER),
            MTCP_SERVER,
            seed ^ (2 * i as u64),
            dropped.clone(),
        )
        .map_err(side("server"))?
        .with_buffers(buffer);
        let l = srv
            .listen(MTCP_PORT, backlog(plan), LISTENER)
            .map_err(side("server"))?;
        servers.push((srv, l));
        let cli = SmolNet::new(
            cli_port,
            mac(MTCP_CLIENT),
            MTCP_CLIENT,
            seed ^ (2 * i as u64 + 1),
            dropped.clone(),
        )
        .map_err(side("client"))?
        .with_buffers(buffer);
        clients.push(cli);
    }
    let to = SocketAddrV4::new(MTCP_SERVER, MTCP_PORT);
    let sample = drive_run(Stack::SmoltcpShm, plan, servers, clients, to, None)?;
    let n = dropped.load(Ordering::Relaxed);
    Ok(Sample {
        stack_note: (n > 0).then(|| {
            format!("{n} frames dropped (an answer built while receiving found the TX ring full)")
        }),
        ..sample
    })
}

#[cfg(test)]
mod tests {
    use super::super::Mode;
    use super::*;
    use psio::PortConfig;

    /// The client's connection token in the scripted tests.
    const CONN: u64 = 7;
    /// The server's token for the accepted connection.
    const ACCEPTED: u64 = 9;

    /// A server (10.0.0.2) and a client (10.0.0.1) on the two ends of an in-process link.
    fn nets() -> (SmolNet, SmolNet) {
        let (a, b) = psio::sys::shm::pair(&PortConfig::default()).expect("shm pair");
        let dropped = Arc::new(AtomicU64::new(0));
        let srv = SmolNet::new(a, mac(MTCP_SERVER), MTCP_SERVER, 1, dropped.clone()).unwrap();
        let cli = SmolNet::new(b, mac(MTCP_CLIENT), MTCP_CLIENT, 2, dropped).unwrap();
        (srv, cli)
    }

    /// Polls both ends (one pass each, no sleeping) and hands `step` their reports until it
    /// returns true; fails after 5 s.
    fn pump(
        srv: &mut SmolNet,
        cli: &mut SmolNet,
        mut step: impl FnMut(&mut SmolNet, &mut SmolNet, &[Ready], &[Ready]) -> bool,
    ) {
        let (mut rs, mut rc) = (Vec::new(), Vec::new());
        let t0 = Instant::now();
        loop {
            srv.wait(&mut rs, 0).unwrap();
            cli.wait(&mut rc, 0).unwrap();
            if step(srv, cli, &rs, &rc) {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
        }
    }

    fn reported(r: &[Ready], token: u64) -> bool {
        r.iter().any(|r| r.token == token)
    }

    fn kind<T: std::fmt::Debug>(r: io::Result<T>) -> io::ErrorKind {
        r.expect_err("an error").kind()
    }

    fn to() -> SocketAddrV4 {
        SocketAddrV4::new(MTCP_SERVER, MTCP_PORT)
    }

    /// Connects `cli` to `srv`'s listener `l` and returns both ends once the client was
    /// reported writable and the server accepted.
    fn connected(srv: &mut SmolNet, cli: &mut SmolNet, l: &SmolSock) -> (SmolSock, SmolSock) {
        let c = cli.connect(to(), CONN).unwrap();
        assert_eq!(kind(cli.read(&c, &mut [0; 8])), io::ErrorKind::WouldBlock);
        assert_eq!(kind(cli.write(&c, b"x")), io::ErrorKind::WouldBlock);
        let (mut writable, mut accepted) = (false, None);
        pump(srv, cli, |srv, _, rs, rc| {
            writable |= rc
                .iter()
                .any(|r| r.token == CONN && r.writable && !r.failed);
            if reported(rs, LISTENER) && accepted.is_none() {
                accepted = srv.accept(l, ACCEPTED).unwrap();
            }
            writable && accepted.is_some()
        });
        (c, accepted.unwrap())
    }

    #[test]
    fn a_connect_to_a_port_without_listener_is_refused() {
        let (mut srv, mut cli) = nets();
        let c = cli
            .connect(SocketAddrV4::new(MTCP_SERVER, 9), CONN)
            .unwrap();
        pump(&mut srv, &mut cli, |_, _, _, rc| {
            rc.iter().any(|r| r.token == CONN && r.failed)
        });
        let e = cli.take_error(&c).unwrap().expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            kind(cli.read(&c, &mut [0; 8])),
            io::ErrorKind::ConnectionRefused
        );
        cli.abort(c).unwrap();
        assert_eq!(cli.live_sockets(), 0);
    }

    /// A request, a response, the server's FIN (end of stream), the client's RST, and every
    /// socket but the free listener gone on both sides.
    #[test]
    fn an_exchange_ends_with_fin_then_reset_and_leaves_no_socket() {
        let (mut srv, mut cli) = nets();
        let l = srv.listen(MTCP_PORT, 16, LISTENER).unwrap();
        assert_eq!(
            kind(srv.listen(MTCP_PORT, 16, LISTENER)),
            io::ErrorKind::AddrInUse
        );
        for round in 0..3 {
            let (c, s) = connected(&mut srv, &mut cli, &l);
            assert_eq!(cli.write(&c, b"hello").unwrap(), 5);
            let mut req = Vec::new();
            pump(&mut srv, &mut cli, |srv, _, rs, _| {
                if reported(rs, ACCEPTED) {
                    let mut buf = [0; 64];
                    loop {
                        match srv.read(&s, &mut buf) {
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("server read: {e}"),
                        }
                    }
                }
                req.len() == 5
            });
            assert_eq!(req, b"hello");
            assert_eq!(srv.write(&s, b"world").unwrap(), 5);
            srv.close(s).unwrap();
            let (mut resp, mut eof) = (Vec::new(), false);
            pump(&mut srv, &mut cli, |_, cli, _, rc| {
                if reported(rc, CONN) {
                    let mut buf = [0; 64];
                    loop {
                        match cli.read(&c, &mut buf) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(n) => resp.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("client read: {e}"),
                        }
                    }
                }
                eof
            });
            assert_eq!(resp, b"world", "round {round}");
            cli.abort(c).unwrap();
            pump(&mut srv, &mut cli, |srv, cli, _, _| {
                srv.live_sockets() == FREE_LISTENERS && cli.live_sockets() == 0
            });
        }
        srv.close(l).unwrap();
        assert_eq!(srv.live_sockets(), 0);
    }

    /// The "setup" workload: the server aborts what it accepts; the client reads a reset.
    #[test]
    fn an_accepted_connection_aborted_at_once_reads_as_a_reset() {
        let (mut srv, mut cli) = nets();
        let l = srv.listen(MTCP_PORT, 16, LISTENER).unwrap();
        let (c, s) = connected(&mut srv, &mut cli, &l);
        srv.abort(s).unwrap();
        let mut failed = false;
        pump(&mut srv, &mut cli, |_, _, _, rc| {
            failed |= rc.iter().any(|r| r.token == CONN && r.failed);
            failed
        });
        assert_eq!(
            kind(cli.read(&c, &mut [0; 8])),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(kind(cli.write(&c, b"x")), io::ErrorKind::ConnectionReset);
        let e = cli.take_error(&c).unwrap().expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        cli.abort(c).unwrap();
        assert_eq!(cli.live_sockets(), 0);
        assert_eq!(srv.live_sockets(), FREE_LISTENERS);
    }

    /// The "bulk" workload: the client writes 64 KiB chunks until `WouldBlock` and resumes
    /// when reported writable; the server reads what it is told about. Every byte arrives.
    #[test]
    fn bulk_writes_resume_on_writable_reports() {
        const TOTAL: usize = 8 << 20;
        let (mut srv, mut cli) = nets();
        let l = srv.listen(MTCP_PORT, 16, LISTENER).unwrap();
        let (c, s) = connected(&mut srv, &mut cli, &l);
        let pattern = |at: usize| (at % 251) as u8;
        let (mut sent, mut received, mut blocked) = (0usize, 0usize, 0u32);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut buf = vec![0u8; 64 * 1024];
        let mut write = |cli: &mut SmolNet, sent: &mut usize, blocked: &mut u32| {
            while *sent < TOTAL {
                let n = chunk.len().min(TOTAL - *sent);
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(*sent + i);
                }
                match cli.write(&c, &chunk[..n]) {
                    Ok(k) => *sent += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        *blocked += 1;
                        return;
                    }
                    Err(e) => panic!("client write: {e}"),
                }
            }
        };
        write(&mut cli, &mut sent, &mut blocked);
        pump(&mut srv, &mut cli, |srv, cli, rs, rc| {
            if rc.iter().any(|r| r.token == CONN && r.writable) {
                write(cli, &mut sent, &mut blocked);
            }
            if reported(rs, ACCEPTED) {
                loop {
                    match srv.read(&s, &mut buf) {
                        Ok(n) => {
                            assert!(n > 0, "end of stream in the middle");
                            for (i, &b) in buf[..n].iter().enumerate() {
                                assert_eq!(b, pattern(received + i), "byte {}", received + i);
                            }
                            received += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("server read: {e}"),
                    }
                }
            }
            received == TOTAL
        });
        assert_eq!(sent, TOTAL);
        assert!(blocked > 1, "the client never had to wait for room");
    }

    #[test]
    fn ephemeral_ports_cycle_and_skip_ports_in_use() {
        let mut p = Ports::new();
        assert_eq!(p.acquire(), Some(FIRST_PORT));
        p.in_use[usize::from(FIRST_PORT + 1)] = true;
        assert_eq!(p.acquire(), Some(FIRST_PORT + 2));
        p.release(FIRST_PORT);
        p.next = LAST_PORT;
        assert_eq!(p.acquire(), Some(LAST_PORT));
        assert_eq!(
            p.acquire(),
            Some(FIRST_PORT),
            "wraps around to a released port"
        );
        for _ in FIRST_PORT..=LAST_PORT {
            p.acquire();
        }
        assert_eq!(p.acquire(), None, "all in use");
    }

    /// The whole application (`Client`/`Server` of the parent module) over smoltcp-shm, every
    /// workload, 64 connections, one and two cores.
    #[test]
    fn smoltcp_shm_runs_every_mode_without_errors() {
        for cores in [1, 2] {
            for mode in Mode::ALL {
                let plan = Plan {
                    mode,
                    // Bulk is a one-connection workload: 64 streams of 4 MiB windows
                    // overflow the 1 024-slot ring, and smoltcp's 1 s minimum RTO then
                    // leaves a short window without a whole megabyte.
                    concurrency: if mode == Mode::Bulk { cores } else { 64 },
                    cores,
                    seconds: 0.2,
                    pin: false,
                    busy_poll_us: 0,
                };
                let s = smoltcp_run(&plan).unwrap_or_else(|e| panic!("{mode}, {cores} cores: {e}"));
                let (tx, bytes) = (s.tx, s.bytes);
                assert!(tx > 0, "{mode}, {cores} cores: no transaction");
                assert_eq!(bytes > 0, mode != Mode::Setup, "{mode}: {bytes} bytes");
                // Every workload but bulk times its transactions.
                assert_eq!(
                    s.latency.is_empty(),
                    mode == Mode::Bulk,
                    "{mode}: latencies"
                );
            }
        }
    }
}
