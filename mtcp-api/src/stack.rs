//! The stack side of one core: a tcp-core endpoint on one psio queue, the descriptors of its
//! application, and the translation between commands/messages and endpoint calls/events.
//!
//! [`StackCore::pass`] is one pass of the loop `RX batch → commands → timers → events → TX
//! batch`; the stack thread (or, in run-to-completion mode, the application's own thread)
//! calls it after `select` said something is ready.
//!
//! Flow control between the two sides: the application may hold at most `recv_buffer` bytes
//! it has been sent and not read (it reports reads with `Consumed`), and may write at most
//! `send_buffer` bytes that are not yet acknowledged (it is given `Credit` back as they are).
//! Everything beyond stays in tcp-core's buffers, whose windows then push back on the peer.

use crate::proto::{Cmd, Fd, Msg, SockOpts};
use core::net::SocketAddrV4;
use psio::{Doorbell, Interest, Port, PortSet, QueueIo, SelectOutcome};
use std::collections::{HashMap, VecDeque};
use tcp_core::{CloseReason, Endpoint, Event, Handle, Instant, State};

/// Largest `Data` message.
const DATA_CHUNK: usize = 16 * 1024;

/// Emptied buffers kept for reuse (each side).
pub(crate) const SPARE_BUFFERS: usize = 256;

/// No descriptor (in `by_slot`).
const NO_FD: Fd = Fd::MAX;

/// Per-core statistics, as mTCP's `stat_print` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes of frames received.
    pub bytes_in: u64,
    /// Bytes of frames sent.
    pub bytes_out: u64,
    /// Connections accepted (handed to the application's accept queue).
    pub accepted: u64,
    /// Active opens started.
    pub connects: u64,
    /// Connections closed by the application or ended normally.
    pub closed: u64,
    /// Connections that ended by a reset (received, or sent by an abort) or were refused.
    pub reset: u64,
    /// Connections that timed out.
    pub timed_out: u64,
    /// Commands handled.
    pub commands: u64,
    /// Passes of the loop.
    pub passes: u64,
    /// Connections open now (all states, listeners included).
    pub open: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// RSTs sent.
    pub rst_sent: u64,
    /// Frames and segments dropped, every reason together (bad checksums, malformed,
    /// out of window, tables and queues full, reassembly, ARP; not SYNs answered with a
    /// cookie).
    pub dropped: u64,
    /// Connections accepted on this core whose peer's port steers to another core: a flow
    /// handled on the wrong core (0 when steering works).
    pub misrouted: u64,
    /// The endpoint's own counters, every reason apart (what `dropped` adds up).
    pub endpoint: tcp_core::Counters,
}

impl core::fmt::Display for StackStats {
    /// One line, as mTCP's `stat_print`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "RX {} frames {} B, TX {} frames {} B, open {}, accepted {}, connects {}, \
             closed {}, reset {}, timed out {}, retransmits {}, RST sent {}, dropped {}, \
             misrouted {}",
            self.frames_in,
            self.bytes_in,
            self.frames_out,
            self.bytes_out,
            self.open,
            self.accepted,
            self.connects,
            self.closed,
            self.reset,
            self.timed_out,
            self.retransmits,
            self.rst_sent,
            self.dropped,
            self.misrouted
        )
    }
}

struct Listener {
    backlog: usize,
    /// Accepted by the stack, not yet adopted by the application.
    waiting: usize,
}

struct Sock {
    handle: Handle,
    listener: Option<Listener>,
    tx: VecDeque<Vec<u8>>,
    tx_off: usize,
    tx_pending: usize,
    /// Bytes the application was charged for and not yet given back.
    charged: usize,
    /// Bytes the application may still be sent.
    rx_credit: usize,
    /// The application's `SO_RCVBUF` (what `rx_credit` starts from).
    rx_limit: usize,
    /// The application's `SO_SNDBUF`.
    tx_limit: usize,
    peer_closed: bool,
    peer_closed_sent: bool,
    shutdown_pending: bool,
    close_pending: bool,
}

/// A connection the stack accepted that has no descriptor yet.
struct Waiting {
    listener: Fd,
    peer_closed: bool,
    ended: Option<CloseReason>,
}

/// One core's stack state. See the module doc.
pub struct StackCore {
    ep: Endpoint,
    /// The one port (with the one queue) of this core, for `select`.
    set: PortSet,
    epoch: std::time::Instant,
    /// The time of the current pass.
    now: Instant,
    socks: Vec<Option<Sock>>,
    /// tcp-core handle slot → (generation, descriptor); `NO_FD` where none.
    by_slot: Vec<(u32, Fd)>,
    /// Emptied buffers (the application's `Write`s), reused for `Data`: buffers circulate
    /// between the two sides instead of being allocated per message.
    spare: Vec<Vec<u8>>,
    waiting: HashMap<Handle, Waiting>,
    out: VecDeque<Msg>,
    send_buffer: usize,
    recv_buffer: usize,
    rx_batch: usize,
    /// (queues, this core's queue): active opens pick local ports `p` with
    /// `p % queues == queue`, so that replies steered by port come back to this core.
    steer: (usize, usize),
    stats: StackStats,
}

impl StackCore {
    /// A stack side over `ep` and `queue` (of the port named `port`), which waits in `select`
    /// at most after `busy_poll` of polling.
    pub fn new(
        ep: Endpoint,
        port: &str,
        queue: Box<dyn QueueIo>,
        rx_batch: usize,
        busy_poll: std::time::Duration,
        steer: (usize, usize),
    ) -> psio::Result<StackCore> {
        let tcp = &ep.config().tcp;
        let (send_buffer, recv_buffer) = (tcp.send_buffer, tcp.recv_buffer);
        let mut set = PortSet::new()?;
        set.add(Port::from_queues(port, vec![queue]));
        set.set_busy_poll(busy_poll);
        Ok(StackCore {
            ep,
            set,
            epoch: std::time::Instant::now(),
            now: Instant::from_micros(0),
            socks: Vec::new(),
            by_slot: Vec::new(),
            spare: Vec::new(),
            waiting: HashMap::new(),
            out: VecDeque::new(),
            send_buffer,
            recv_buffer,
            rx_batch: rx_batch.max(1),
            steer: (steer.0.max(1), steer.1),
            stats: StackStats::default(),
        })
    }

    fn queue_mut(&mut self) -> &mut dyn QueueIo {
        self.set.port(0).queue(0)
    }

    /// The doorbell that wakes this core's `select`.
    pub fn doorbell(&self) -> Doorbell {
        self.set.doorbell()
    }

    /// Sleeps until frames arrive, TX room frees up (when frames wait for it), the doorbell
    /// rings, or the next timer (or `limit_us`, if sooner) is due.
    pub fn select(&mut self, limit_us: Option<u64>) -> psio::Result<SelectOutcome> {
        let tx = self.queue_mut().tx_pending() > 0;
        let timeout = match (self.timeout_us(), limit_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.set.select(
            &[Interest {
                port: 0,
                queue: 0,
                rx: true,
                tx,
            }],
            timeout,
        )
    }

    /// Microseconds since this core started: tcp-core's clock, read from the OS.
    pub fn clock(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// The time of the current pass (the clock is read once per pass: a clock read costs
    /// as much as handling a small command).
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// The endpoint (for its counters and connection table).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Statistics so far.
    pub fn stats(&self) -> StackStats {
        let c = self.ep.counters();
        StackStats {
            open: self.ep.connection_count() as u64,
            misrouted: self.stats.misrouted,
            endpoint: *c,
            retransmits: c.retransmits,
            rst_sent: c.rst_sent,
            dropped: c.bad_checksum
                + c.malformed
                + c.out_of_window
                + c.table_full
                + c.accept_queue_full
                + c.reassembly_dropped
                + c.arp_dropped
                + c.control_dropped,
            ..self.stats
        }
    }

    /// Microseconds until the next timer, if any.
    pub fn timeout_us(&self) -> Option<u64> {
        let now = self.clock();
        self.ep
            .poll_timeout()
            .map(|t| t.saturating_since(now).micros())
    }

    /// Messages for the application, oldest first.
    pub fn take_msg(&mut self) -> Option<Msg> {
        self.out.pop_front()
    }

    /// Puts back a message the transport could not take (it goes out first next time).
    pub fn untake_msg(&mut self, m: Msg) {
        self.out.push_front(m);
    }

    /// Messages waiting.
    pub fn pending_msgs(&self) -> usize {
        self.out.len()
    }

    /// One pass: receive a batch, apply `commands`, run timers, turn events into messages,
    /// send what the endpoint has. Returns whether anything happened.
    pub fn pass(&mut self, commands: impl IntoIterator<Item = Cmd>) -> psio::Result<bool> {
        self.stats.passes += 1;
        self.now = self.clock();
        let mut busy = self.rx()?;
        for cmd in commands {
            busy = true;
            self.stats.commands += 1;
            self.command(cmd);
        }
        self.run_timers();
        busy |= self.events();
        busy |= self.tx()?;
        Ok(busy)
    }

    /// The start of a pass for a context that talks to the endpoint itself (no commands,
    /// no messages): reads the clock, sends what the application queued since the last pass
    /// (with the ACKs held back then: see [`tx_holding_acks`](Self::tx_holding_acks)),
    /// receives a batch and runs the timers due. The caller then takes the endpoint's
    /// events and ends the pass with `tx_holding_acks`. Returns whether anything moved.
    pub(crate) fn begin_pass(&mut self) -> psio::Result<bool> {
        self.stats.passes += 1;
        self.now = self.clock();
        let sent = self.tx()?;
        let received = self.rx()?;
        self.run_timers();
        Ok(sent || received)
    }

    /// [`tx`](Self::tx), keeping pure ACKs back for the next pass: the application acts on
    /// the events of this pass first, and what it writes carries them (a connection's
    /// handshake ACK rides on its first request), or an abort makes them moot. Returns
    /// whether frames went out or ACKs wait (then the next pass must come soon).
    pub(crate) fn tx_holding_acks(&mut self) -> psio::Result<bool> {
        let sent = self.tx_with(false)?;
        Ok(sent || self.ep.acks_waiting())
    }

    fn run_timers(&mut self) {
        let now = self.now();
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
    }

    /// The endpoint, to operate on.
    pub(crate) fn ep_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// The counters a context that talks to the endpoint itself keeps up to date.
    pub(crate) fn stats_mut(&mut self) -> &mut StackStats {
        &mut self.stats
    }

    fn rx(&mut self) -> psio::Result<bool> {
        let now = self.now();
        let q = self.set.port(0).queue(0);
        let avail = q.rxsync()?;
        let n = avail.min(self.rx_batch);
        if n == 0 {
            return Ok(false);
        }
        let bytes: u64 = (0..n).map(|i| q.rx_frame(i).len() as u64).sum();
        let frames = &*q;
        self.ep
            .handle_frames(now, (0..n).map(|i| frames.rx_frame(i)));
        q.rx_release(n);
        self.stats.frames_in += n as u64;
        self.stats.bytes_in += bytes;
        Ok(true)
    }

    /// Sends what the endpoint has, as far as the TX ring has room. Returns whether any
    /// frame went out.
    pub(crate) fn tx(&mut self) -> psio::Result<bool> {
        self.tx_with(true)
    }

    fn tx_with(&mut self, acks: bool) -> psio::Result<bool> {
        let now = self.now();
        let q = self.set.port(0).queue(0);
        let mut sent = 0;
        loop {
            if q.tx_space() == 0 && q.txsync()? == 0 {
                break;
            }
            let frame = q.tx_buf(0);
            let next = if acks {
                self.ep.poll_transmit(now, frame)
            } else {
                self.ep.poll_transmit_holding_acks(now, frame)
            };
            let Some(len) = next else {
                break;
            };
            q.tx_push(len);
            self.stats.bytes_out += len as u64;
            sent += 1;
        }
        if sent > 0 || q.tx_pending() > 0 {
            q.txsync()?;
        }
        self.stats.frames_out += sent;
        Ok(sent > 0)
    }

    fn sock(&mut self, fd: Fd) -> Option<&mut Sock> {
        self.socks.get_mut(fd as usize).and_then(Option::as_mut)
    }

    fn fd_of(&self, h: Handle) -> Option<Fd> {
        match self.by_slot.get(h.slot as usize) {
            Some(&(g, fd)) if g == h.generation && fd != NO_FD => Some(fd),
            _ => None,
        }
    }

    fn install(&mut self, fd: Fd, handle: Handle, listener: Option<Listener>) {
        let i = fd as usize;
        if self.socks.len() <= i {
            self.socks.resize_with(i + 1, || None);
        }
        self.socks[i] = Some(Sock {
            handle,
            listener,
            tx: VecDeque::new(),
            tx_off: 0,
            tx_pending: 0,
            charged: 0,
            rx_credit: self.recv_buffer,
            rx_limit: self.recv_buffer,
            tx_limit: self.send_buffer,
            peer_closed: false,
            peer_closed_sent: false,
            shutdown_pending: false,
            close_pending: false,
        });
        let i = handle.slot as usize;
        if self.by_slot.len() <= i {
            self.by_slot.resize(i + 1, (0, NO_FD));
        }
        self.by_slot[i] = (handle.generation, fd);
    }

    /// Applies the receive limit of `opts` to `fd` (the credit moves by the change).
    fn set_send_limit(&mut self, fd: Fd, limit: usize) {
        let limit = limit.clamp(1, self.send_buffer);
        if let Some(s) = self.sock(fd) {
            s.tx_limit = limit;
        }
        self.credit(fd);
    }

    fn set_recv_limit(&mut self, fd: Fd, limit: usize) {
        let limit = limit.clamp(1, self.recv_buffer);
        if let Some(s) = self.sock(fd) {
            let held = s.rx_limit - s.rx_credit.min(s.rx_limit);
            s.rx_limit = limit;
            s.rx_credit = limit.saturating_sub(held);
        }
        self.pump(fd);
    }

    fn apply_opts(&mut self, h: Handle, opts: SockOpts) {
        // Options on a connection that is gone are moot; the errors are not the
        // application's to see.
        let _ = self.ep.set_nodelay(h, opts.nodelay);
        let now = self.now();
        let _ = self.ep.set_keepalive(now, h, opts.keepalive);
    }

    /// Applies the application's last `commands`, closes every socket (listeners, then
    /// connections, gracefully; connections accepted but never taken are reset) and runs
    /// passes until nothing is left to send or `grace` has passed. For `destroy`.
    pub fn shutdown(
        &mut self,
        commands: impl IntoIterator<Item = Cmd>,
        grace: std::time::Duration,
    ) -> psio::Result<()> {
        self.now = self.clock();
        for cmd in commands {
            self.stats.commands += 1;
            self.command(cmd);
        }
        let waiting: Vec<Handle> = self.waiting.keys().copied().collect();
        let now = self.now();
        for h in waiting {
            let _ = self.ep.abort(now, h);
        }
        self.waiting.clear();
        let fds: Vec<Fd> = (0..self.socks.len() as Fd)
            .filter(|&fd| self.socks[fd as usize].is_some())
            .collect();
        for fd in fds {
            self.close(fd, false);
        }
        let end = std::time::Instant::now() + grace;
        while std::time::Instant::now() < end {
            let busy = self.pass(core::iter::empty())?;
            // Connections still closing keep their sockets until their data is out.
            if !busy && self.socks.iter().all(Option::is_none) && !self.tx_waiting() {
                break;
            }
            if !busy {
                self.select(Some(1000))?;
            }
        }
        self.out.clear();
        Ok(())
    }

    fn tx_waiting(&mut self) -> bool {
        self.queue_mut().tx_pending() > 0
    }

    /// Applies one command.
    pub fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Listen { fd, port, backlog } => match self.listen(port, backlog.max(1)) {
                Ok((h, port)) => {
                    self.install(
                        fd,
                        h,
                        Some(Listener {
                            backlog: backlog.max(1),
                            waiting: 0,
                        }),
                    );
                    self.out.push_back(Msg::Listening { fd, port });
                }
                Err(e) => self.out.push_back(Msg::Failed { fd, err: e.into() }),
            },
            Cmd::Connect {
                fd,
                remote,
                local_port,
                opts,
            } => {
                let r = self.open(remote, local_port);
                match r {
                    Ok(h) => {
                        self.stats.connects += 1;
                        self.install(fd, h, None);
                        self.apply_opts(h, opts);
                        self.set_recv_limit(fd, opts.recv_limit);
                        self.set_send_limit(fd, opts.send_limit);
                        let local = self
                            .ep
                            .local_addr(h)
                            .unwrap_or(SocketAddrV4::new(self.ep.config().iface.addr, 0));
                        self.out.push_back(Msg::Connecting { fd, local });
                    }
                    Err(e) => self.out.push_back(Msg::Failed { fd, err: e.into() }),
                }
            }
            Cmd::Adopt { fd, handle, opts } => self.adopt(fd, handle, opts),
            Cmd::Write { fd, buf } => {
                if let Some(s) = self.sock(fd) {
                    s.charged += buf.len();
                    s.tx_pending += buf.len();
                    s.tx.push_back(buf);
                    self.flush(fd);
                }
            }
            Cmd::Consumed { fd, n } => {
                if let Some(s) = self.sock(fd) {
                    s.rx_credit += n;
                    self.pump(fd);
                }
            }
            Cmd::Shutdown { fd } => {
                if let Some(s) = self.sock(fd) {
                    s.shutdown_pending = true;
                    self.flush(fd);
                }
            }
            Cmd::Close { fd, abort } => self.close(fd, abort),
            Cmd::SetOpts { fd, opts } => {
                // A listener's options reach its connections with `Adopt`.
                if let Some(s) = self.sock(fd).filter(|s| s.listener.is_none()) {
                    let h = s.handle;
                    self.apply_opts(h, opts);
                    self.set_recv_limit(fd, opts.recv_limit);
                    self.set_send_limit(fd, opts.send_limit);
                }
            }
        }
    }

    /// Starts an active open to `remote` from `local_port` (chosen with `bind`), else from an
    /// ephemeral port whose replies are steered to this core.
    pub(crate) fn open(
        &mut self,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> Result<Handle, tcp_core::SocketError> {
        // A port chosen with `bind` must be one of the ephemeral ports (the endpoint keeps
        // their bookkeeping); any other fails with AddrNotAvailable.
        let now = self.now();
        let (n, i) = self.steer;
        match local_port {
            Some(p) => self.ep.connect_with(now, remote, |q| q == p),
            None => self.ep.connect_with(now, remote, |q| {
                psio::sys::af_packet::queue_for_port(q, n) == i
            }),
        }
    }

    /// Counts a connection handed to the application, and whether its peer's port steers
    /// it to another core.
    pub(crate) fn note_accepted(&mut self, peer: SocketAddrV4) {
        let (n, i) = self.steer;
        if n > 1 && psio::sys::af_packet::queue_for_port(peer.port(), n) != i {
            self.stats.misrouted += 1;
        }
        self.stats.accepted += 1;
    }

    /// Listens on `port`, or on a free ephemeral port for 0 (tried from a point that moves
    /// with every call, as Linux picks one).
    pub(crate) fn listen(
        &mut self,
        port: u16,
        backlog: usize,
    ) -> Result<(Handle, u16), tcp_core::SocketError> {
        if port != 0 {
            return self.ep.listen(port, backlog).map(|h| (h, port));
        }
        let range = self.ep.config().ephemeral_ports.clone();
        let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
        let span = hi - lo + 1;
        let start = (self.stats.commands as u32).wrapping_mul(2_654_435_761) % span;
        for k in 0..span {
            let p = (lo + (start + k) % span) as u16;
            match self.ep.listen(p, backlog) {
                Ok(h) => return Ok((h, p)),
                Err(tcp_core::SocketError::AddrInUse) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(tcp_core::SocketError::PortsExhausted)
    }

    fn adopt(&mut self, fd: Fd, handle: Handle, opts: SockOpts) {
        let Some(w) = self.waiting.remove(&handle) else {
            // Reset before the application took it: it sees a reset connection.
            self.out.push_back(Msg::Ended {
                fd,
                reason: CloseReason::Reset,
            });
            return;
        };
        if let Some(l) = self.sock(w.listener).and_then(|s| s.listener.as_mut()) {
            l.waiting = l.waiting.saturating_sub(1);
        }
        self.install(fd, handle, None);
        self.apply_opts(handle, opts);
        self.set_recv_limit(fd, opts.recv_limit);
        self.set_send_limit(fd, opts.send_limit);
        if let Some(s) = self.sock(fd) {
            s.peer_closed = w.peer_closed;
        }
        self.pump(fd);
        if let Some(reason) = w.ended {
            self.out.push_back(Msg::Ended { fd, reason });
        }
        self.flush(fd);
        // The listener may take more from tcp-core's accept queue now.
        self.accept_more(w.listener);
    }

    fn close(&mut self, fd: Fd, abort: bool) {
        let now = self.now();
        let Some(s) = self.sock(fd) else {
            self.out.push_back(Msg::Released { fd });
            return;
        };
        let h = s.handle;
        if s.listener.is_some() {
            // Connections accepted but never adopted are reset with the listener.
            let orphans: Vec<Handle> = self
                .waiting
                .iter()
                .filter(|(_, w)| w.listener == fd)
                .map(|(h, _)| *h)
                .collect();
            for o in orphans {
                self.waiting.remove(&o);
                let _ = self.ep.abort(now, o);
            }
            let _ = self.ep.close(now, h);
            self.release(fd, h);
            return;
        }
        if abort {
            let _ = self.ep.abort(now, h);
            self.stats.reset += 1;
            self.release(fd, h);
            return;
        }
        if let Some(s) = self.sock(fd) {
            s.close_pending = true;
        }
        self.flush(fd);
    }

    fn release(&mut self, fd: Fd, h: Handle) {
        if let Some(slot) = self.socks.get_mut(fd as usize) {
            *slot = None;
        }
        if self.fd_of(h) == Some(fd) {
            self.by_slot[h.slot as usize] = (0, NO_FD);
        }
        self.out.push_back(Msg::Released { fd });
    }

    /// Moves queued bytes into tcp-core's send buffer; then a pending shutdown or close.
    fn flush(&mut self, fd: Fd) {
        let now = self.now();
        let Some(s) = self.socks.get_mut(fd as usize).and_then(Option::as_mut) else {
            return;
        };
        while let Some(front) = s.tx.front() {
            match self.ep.send(s.handle, &front[s.tx_off..]) {
                Ok(n) => {
                    s.tx_off += n;
                    s.tx_pending -= n;
                    if s.tx_off == front.len() {
                        if let Some(mut b) = s.tx.pop_front() {
                            if self.spare.len() < SPARE_BUFFERS {
                                b.clear();
                                self.spare.push(b);
                            }
                        }
                        s.tx_off = 0;
                    } else {
                        break;
                    }
                }
                Err(tcp_core::SocketError::WouldBlock) => break,
                Err(_) => {
                    // The connection cannot send any more (reset, closed): drop the bytes;
                    // the application learns why from `Ended`.
                    s.tx.clear();
                    s.tx_off = 0;
                    s.tx_pending = 0;
                    break;
                }
            }
        }
        if s.tx_pending == 0 {
            let h = s.handle;
            if s.close_pending {
                let _ = self.ep.close(now, h);
                self.stats.closed += 1;
                self.release(fd, h);
                return;
            }
            if s.shutdown_pending {
                s.shutdown_pending = false;
                let _ = self.ep.shutdown(now, h);
            }
        }
        self.credit(fd);
    }

    /// Gives the application back the bytes that left the stack.
    fn credit(&mut self, fd: Fd) {
        let Some(s) = self.socks.get_mut(fd as usize).and_then(Option::as_mut) else {
            return;
        };
        let in_core = self
            .ep
            .send_space(s.handle)
            .map_or(0, |space| self.send_buffer.saturating_sub(space));
        let held = s.tx_pending + in_core;
        // Credit goes back in quarters of the send buffer, or when the application has used
        // half of it (it may then be waiting): a stream of small writes costs a message per
        // quarter buffer, not per acknowledgment.
        let quarter = s.tx_limit / 4;
        if s.charged > held && (s.charged - held >= quarter || s.charged >= 2 * quarter) {
            let n = s.charged - held;
            s.charged = held;
            self.out.push_back(Msg::Credit { fd, n });
        }
        if s.charged > 0 {
            // Hear of the next acknowledgment that frees room, to give credit back then.
            let _ = self.ep.want_writable(s.handle);
        }
    }

    /// Delivers received bytes up to the application's credit; then end of stream.
    fn pump(&mut self, fd: Fd) {
        let Some(s) = self.socks.get_mut(fd as usize).and_then(Option::as_mut) else {
            return;
        };
        if s.listener.is_some() {
            return;
        }
        let h = s.handle;
        loop {
            let avail = self.ep.recv_available(h).unwrap_or(0);
            let n = avail.min(s.rx_credit).min(DATA_CHUNK);
            if n == 0 {
                break;
            }
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.resize(n, 0);
            let got = self.ep.recv(h, &mut buf).unwrap_or(0);
            if got == 0 {
                break;
            }
            buf.truncate(got);
            s.rx_credit -= got;
            self.out.push_back(Msg::Data { fd, buf });
        }
        if s.peer_closed && !s.peer_closed_sent && self.ep.recv_available(h).unwrap_or(0) == 0 {
            s.peer_closed_sent = true;
            self.out.push_back(Msg::PeerClosed { fd });
        }
    }

    /// Takes connections from tcp-core's accept queue while the listener's backlog allows.
    fn accept_more(&mut self, fd: Fd) {
        loop {
            let Some(s) = self.socks.get(fd as usize).and_then(Option::as_ref) else {
                return;
            };
            let Some(l) = s.listener.as_ref() else { return };
            if l.waiting >= l.backlog {
                return;
            }
            let lh = s.handle;
            let Ok(conn) = self.ep.accept(lh) else { return };
            let (Ok(local), Ok(peer)) = (self.ep.local_addr(conn), self.ep.peer_addr(conn)) else {
                // Gone already: release it rather than hold a handle nobody will close.
                let now = self.now();
                let _ = self.ep.abort(now, conn);
                continue;
            };
            self.note_accepted(peer);
            if let Some(l) = self.sock(fd).and_then(|s| s.listener.as_mut()) {
                l.waiting += 1;
            }
            self.waiting.insert(
                conn,
                Waiting {
                    listener: fd,
                    peer_closed: false,
                    ended: None,
                },
            );
            self.out.push_back(Msg::Accepted {
                fd,
                handle: conn,
                local,
                peer,
            });
        }
    }

    /// Counts a connection that ended on its own (a normal end is counted when the
    /// application closes it).
    pub(crate) fn count_end(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::Normal | CloseReason::Aborted => {}
            CloseReason::TimedOut => self.stats.timed_out += 1,
            _ => self.stats.reset += 1,
        }
    }

    /// Turns endpoint events into messages. Returns whether there were any.
    fn events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.ep.poll_event() {
            any = true;
            match ev {
                Event::Accepted { listener, .. } => {
                    if let Some(fd) = self.fd_of(listener) {
                        self.accept_more(fd);
                    }
                }
                Event::Connected(h) => {
                    if let Some(fd) = self.fd_of(h) {
                        self.out.push_back(Msg::Connected { fd });
                        self.flush(fd);
                    }
                }
                Event::Readable(h) => {
                    if let Some(fd) = self.fd_of(h) {
                        self.pump(fd);
                    }
                }
                Event::Writable(h) => {
                    if let Some(fd) = self.fd_of(h) {
                        self.flush(fd);
                    }
                }
                Event::PeerClosed(h) => {
                    if let Some(fd) = self.fd_of(h) {
                        if let Some(s) = self.sock(fd) {
                            s.peer_closed = true;
                        }
                        self.pump(fd);
                    } else if let Some(w) = self.waiting.get_mut(&h) {
                        w.peer_closed = true;
                    }
                }
                Event::Reset(_) | Event::TimedOut(_) => {}
                Event::Closed(h, reason) => {
                    self.count_end(reason);
                    if let Some(fd) = self.fd_of(h) {
                        self.pump(fd);
                        self.credit(fd);
                        let gone =
                            self.ep.state(h).is_err() || self.ep.state(h) == Ok(State::Closed);
                        if let Some(s) = self.sock(fd) {
                            if s.close_pending && gone {
                                // The application closed it already: nothing to tell.
                                let _ = self.ep.close(self.now(), h);
                                self.stats.closed += 1;
                                self.release(fd, h);
                                continue;
                            }
                        }
                        self.out.push_back(Msg::Ended { fd, reason });
                    } else if let Some(w) = self.waiting.get_mut(&h) {
                        w.ended = Some(reason);
                    }
                }
                _ => {}
            }
        }
        any
    }
}
