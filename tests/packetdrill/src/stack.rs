//! One tcp-core [`Endpoint`] on a virtual clock, behind descriptors with BSD socket
//! semantics. Safe code only: the FFI layer turns C pointers into slices and addresses first.
//!
//! - Time is `now` (µs); it only moves when [`Stack::advance_to`] is called, which runs every
//!   timer due on the way at its own deadline, as a kernel's timers would have fired.
//! - Every IPv4 packet the endpoint emits is kept with the time it left, in order, for
//!   `netdev_receive` (bounded: [`OUT_CAPACITY`], the oldest is dropped beyond it).
//! - A call that would block returns [`Attempt::Pending`]; the caller (see `shared`) waits
//!   for the stack to change and tries again.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use libc::c_int;
use tcp_core::config::Keepalive;
use tcp_core::{CloseReason, Duration, Endpoint, Handle, Instant, SocketError, State};

use crate::flags::{Settings, DEFAULT_LOCAL_IP};

/// The result of a call: the value, or an errno.
pub type Sys<T> = Result<T, c_int>;

/// The outcome of one try of a call that may block.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt<T> {
    /// The call returns.
    Done(Sys<T>),
    /// The call would block; retry when the stack changes or, if given, once the clock
    /// reaches the deadline (µs).
    Pending(Option<u64>),
}

/// Virtual time when the library is loaded, µs (what `gettimeofday` reports first).
pub const START_US: u64 = 100_000_000;
/// Packets kept for `netdev_receive` at most.
pub const OUT_CAPACITY: usize = 4096;
/// Timer runs per clock advance at most (a bound, never reached by a sane stack).
const MAX_TIMER_STEPS: usize = 100_000;
/// Frames taken from the endpoint per drain at most.
const MAX_DRAIN: usize = 100_000;
/// Our MAC and the script's: the Ethernet header exists only between us and tcp-core.
pub const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The script side's MAC (a static neighbour: no ARP).
pub const REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ETH_LEN: usize = 14;
/// Lowest descriptor handed out (0-2 are stdio).
const FIRST_FD: c_int = 3;
/// Largest single read or write handled at once.
const MAX_IO: usize = 1 << 24;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Fresh,
    Listener(Handle),
    Conn(Handle),
}

/// Per-descriptor options and state.
#[derive(Debug, Clone)]
struct Sock {
    kind: Kind,
    nonblock: bool,
    /// Port given to `bind`.
    port: Option<u16>,
    nodelay: bool,
    reuseaddr: bool,
    keepalive: bool,
    keepalive_cfg: Keepalive,
    /// `SO_LINGER` with a zero timeout: `close` resets.
    linger: Option<c_int>,
    sndbuf: Option<usize>,
    rcvbuf: Option<usize>,
    /// `shutdown(SHUT_RD)`: reads return 0.
    rd_shut: bool,
    /// The connection's error was reported once (`SO_ERROR` semantics).
    error_taken: bool,
}

impl Sock {
    fn new(nonblock: bool) -> Sock {
        Sock {
            kind: Kind::Fresh,
            nonblock,
            port: None,
            nodelay: false,
            reuseaddr: false,
            keepalive: false,
            keepalive_cfg: Keepalive::default(),
            linger: None,
            sndbuf: None,
            rcvbuf: None,
            rd_shut: false,
            error_taken: false,
        }
    }
}

/// The stack, its clock, its descriptors and the packets it sent.
#[derive(Debug)]
pub struct Stack {
    settings: Settings,
    /// Created on first need, so that `bind` or the first packet can name our address.
    ep: Option<Endpoint>,
    local_ip: Option<Ipv4Addr>,
    /// Virtual now, µs.
    pub now: u64,
    out: VecDeque<(u64, Vec<u8>)>,
    /// Packets dropped because `out` was full.
    pub out_dropped: u64,
    fds: BTreeMap<c_int, Sock>,
    /// Bumped whenever the stack may have changed in a way a blocked call cares about.
    pub generation: u64,
    buf: Vec<u8>,
}

/// errno of a tcp-core socket error (Linux numbering, as packetdrill expects on Linux).
pub fn errno_of(e: SocketError) -> c_int {
    match e {
        SocketError::BadHandle => libc::EBADF,
        SocketError::WouldBlock => libc::EAGAIN,
        SocketError::NotConnected => libc::ENOTCONN,
        SocketError::AddrInUse => libc::EADDRINUSE,
        SocketError::PortsExhausted => libc::EADDRNOTAVAIL,
        SocketError::TooManyConnections => libc::ENOBUFS,
        SocketError::NoRoute => libc::EHOSTUNREACH,
        SocketError::Shutdown => libc::EPIPE,
        SocketError::ConnectionReset => libc::ECONNRESET,
        SocketError::ConnectionRefused => libc::ECONNREFUSED,
        SocketError::TimedOut => libc::ETIMEDOUT,
        SocketError::InvalidOperation | SocketError::InvalidArgument => libc::EINVAL,
        _ => libc::EIO,
    }
}

fn instant(us: u64) -> Instant {
    Instant::from_micros(us)
}

impl Stack {
    /// A stack with `settings`; no endpoint yet.
    pub fn new(settings: Settings) -> Stack {
        Stack {
            local_ip: settings.local_ip,
            settings,
            ep: None,
            now: START_US,
            out: VecDeque::new(),
            out_dropped: 0,
            fds: BTreeMap::new(),
            generation: 0,
            buf: vec![0u8; 65_536 + ETH_LEN],
        }
    }

    /// The address the stack has or will have.
    pub fn local_ip(&self) -> Ipv4Addr {
        self.local_ip.unwrap_or(DEFAULT_LOCAL_IP)
    }

    /// The endpoint, created now if needed.
    fn ep(&mut self) -> Sys<&mut Endpoint> {
        if self.ep.is_none() {
            let mut cfg = self.settings.config.clone();
            let remote = self.settings.remote_ip;
            cfg.iface.mac = LOCAL_MAC;
            cfg.iface.addr = self.local_ip();
            // Only we are on-link; everything else goes through the script's side, whose MAC
            // is a static entry: any remote address works and nothing is ever ARPed.
            cfg.iface.prefix_len = 32;
            cfg.iface.gateway = Some(remote);
            cfg.iface.static_arp = vec![(remote, REMOTE_MAC)];
            self.local_ip = Some(cfg.iface.addr);
            self.ep = Some(Endpoint::new(cfg).map_err(|_| libc::EINVAL)?);
        }
        self.ep.as_mut().ok_or(libc::EIO)
    }

    /// Takes every frame and event the endpoint has; IPv4 packets go to the output queue.
    fn drain(&mut self) {
        let Some(ep) = self.ep.as_mut() else {
            return;
        };
        let now = instant(self.now);
        let mut changed = false;
        for _ in 0..MAX_DRAIN {
            let Some(n) = ep.poll_transmit(now, &mut self.buf) else {
                break;
            };
            changed = true;
            let frame = &self.buf[..n.min(self.buf.len())];
            // ARP and anything else not IPv4 stays between us and tcp-core.
            if frame.len() < ETH_LEN + 20 || frame[12..14] != [0x08, 0x00] {
                continue;
            }
            let ip = &frame[ETH_LEN..];
            // Ethernet padding after a short packet is not part of it.
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).clamp(20, ip.len());
            if self.out.len() >= OUT_CAPACITY {
                self.out.pop_front();
                self.out_dropped += 1;
            }
            self.out.push_back((self.now, ip[..total].to_vec()));
        }
        for _ in 0..MAX_DRAIN {
            if ep.poll_event().is_none() {
                break;
            }
            changed = true;
        }
        if changed {
            self.generation += 1;
        }
    }

    /// The next timer deadline, µs.
    pub fn next_timer(&self) -> Option<u64> {
        self.ep
            .as_ref()
            .and_then(Endpoint::poll_timeout)
            .map(Instant::micros)
    }

    /// Moves the clock to `t` (never back), running every timer due on the way at its
    /// deadline.
    pub fn advance_to(&mut self, t: u64) {
        self.drain();
        for _ in 0..MAX_TIMER_STEPS {
            match self.next_timer() {
                Some(d) if d <= t => {
                    self.now = self.now.max(d);
                    let now = instant(self.now);
                    if let Some(ep) = self.ep.as_mut() {
                        ep.handle_timeout(now);
                    }
                    self.drain();
                }
                _ => break,
            }
        }
        if t > self.now {
            self.now = t;
            self.generation += 1;
        }
    }

    /// A packet from the script (an IPv4 packet without Ethernet header) into the stack.
    pub fn inject(&mut self, packet: &[u8]) -> Sys<()> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return Err(if packet.first().is_some_and(|b| b >> 4 == 6) {
                libc::EAFNOSUPPORT
            } else {
                libc::EINVAL
            });
        }
        if packet.len() > self.buf.len() - ETH_LEN {
            return Err(libc::EMSGSIZE);
        }
        if self.ep.is_none() && self.local_ip.is_none() {
            self.local_ip = Some(Ipv4Addr::new(
                packet[16], packet[17], packet[18], packet[19],
            ));
        }
        let mut frame = Vec::with_capacity(ETH_LEN + packet.len());
        frame.extend_from_slice(&LOCAL_MAC);
        frame.extend_from_slice(&REMOTE_MAC);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(packet);
        let now = instant(self.now);
        self.ep()?.handle_frame(now, &frame);
        self.drain();
        self.generation += 1;
        Ok(())
    }

    /// The oldest packet the stack sent and nobody took, with its send time.
    pub fn take_packet(&mut self) -> Option<(u64, Vec<u8>)> {
        self.drain();
        self.out.pop_front()
    }

    // -----------------------------------------------------------------------------------
    // Descriptors
    // -----------------------------------------------------------------------------------

    fn sock(&self, fd: c_int) -> Sys<&Sock> {
        self.fds.get(&fd).ok_or(libc::EBADF)
    }

    fn sock_mut(&mut self, fd: c_int) -> Sys<&mut Sock> {
        self.fds.get_mut(&fd).ok_or(libc::EBADF)
    }

    fn conn(&self, fd: c_int) -> Sys<Handle> {
        match self.sock(fd)?.kind {
            Kind::Conn(h) => Ok(h),
            _ => Err(libc::ENOTCONN),
        }
    }

    fn lowest_free_fd(&self) -> c_int {
        let mut fd = FIRST_FD;
        while self.fds.contains_key(&fd) {
            fd += 1;
        }
        fd
    }

    /// Whether `fd` is one of ours.
    pub fn is_fd(&self, fd: c_int) -> bool {
        self.fds.contains_key(&fd)
    }

    /// The peer's address of `fd`'s connection.
    pub fn peer(&self, fd: c_int) -> Sys<SocketAddrV4> {
        let h = self.conn(fd)?;
        let ep = self.ep.as_ref().ok_or(libc::EIO)?;
        ep.peer_addr(h).map_err(errno_of)
    }

    /// Whether `fd` is non-blocking.
    pub fn nonblocking(&self, fd: c_int) -> Sys<bool> {
        Ok(self.sock(fd)?.nonblock)
    }

    /// The pending error of `fd`'s connection, once.
    fn take_error(&mut self, fd: c_int) -> Option<c_int> {
        let reason = match self.fds.get(&fd)?.kind {
            Kind::Conn(h) => self.ep.as_ref()?.close_reason(h).ok().flatten()?,
            _ => return None,
        };
        let sock = self.fds.get_mut(&fd)?;
        if sock.error_taken {
            return None;
        }
        let e = match reason {
            CloseReason::Reset => libc::ECONNRESET,
            CloseReason::Refused => libc::ECONNREFUSED,
            CloseReason::TimedOut => libc::ETIMEDOUT,
            _ => return None,
        };
        sock.error_taken = true;
        Some(e)
    }

    /// An error of a socket call on `fd`: the connection's own error if it has one.
    fn call_error(&mut self, fd: c_int, e: SocketError) -> c_int {
        self.take_error(fd).unwrap_or_else(|| errno_of(e))
    }

    /// `socket(domain, type, protocol)`: IPv4 TCP only.
    pub fn socket(&mut self, domain: c_int, ty: c_int, protocol: c_int) -> Sys<c_int> {
        if domain != libc::AF_INET {
            return Err(libc::EAFNOSUPPORT);
        }
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        if ty & !flags != libc::SOCK_STREAM {
            return Err(libc::EPROTONOSUPPORT);
        }
        if protocol != 0 && protocol != libc::IPPROTO_TCP {
            return Err(libc::EPROTONOSUPPORT);
        }
        let fd = self.lowest_free_fd();
        self.fds
            .insert(fd, Sock::new(ty & libc::SOCK_NONBLOCK != 0));
        Ok(fd)
    }

    /// `bind(fd, addr)`: records the port; the address must be ours or any (and names ours
    /// if nothing did yet).
    pub fn bind(&mut self, fd: c_int, addr: SocketAddrV4) -> Sys<()> {
        let sock = self.sock(fd)?;
        if !matches!(sock.kind, Kind::Fresh) || sock.port.is_some() {
            return Err(libc::EINVAL);
        }
        let ip = *addr.ip();
        if !ip.is_unspecified() {
            match self.local_ip {
                None => self.local_ip = Some(ip),
                Some(ours) if ours == ip => {}
                Some(_) => return Err(libc::EADDRNOTAVAIL),
            }
        }
        self.sock_mut(fd)?.port = Some(addr.port());
        Ok(())
    }

    /// `listen(fd, backlog)`: needs a `bind` to a port first.
    pub fn listen(&mut self, fd: c_int, backlog: c_int) -> Sys<()> {
        let sock = self.sock(fd)?.clone();
        match sock.kind {
            Kind::Listener(_) => return Ok(()),
            Kind::Conn(_) => return Err(libc::EINVAL),
            Kind::Fresh => {}
        }
        let port = match sock.port {
            Some(p) if p != 0 => p,
            _ => return Err(libc::EDESTADDRREQ),
        };
        let backlog = usize::try_from(backlog).unwrap_or(0).clamp(1, 4096);
        let ep = self.ep()?;
        let h = ep.listen(port, backlog).map_err(errno_of)?;
        let _ = ep.set_buffer_sizes(
            h,
            sock.sndbuf.unwrap_or(usize::MAX),
            sock.rcvbuf.unwrap_or(usize::MAX),
        );
        self.sock_mut(fd)?.kind = Kind::Listener(h);
        Ok(())
    }

    /// Applies a socket's options to its new connection.
    fn apply_options(&mut self, sock: &Sock, h: Handle) {
        let now = instant(self.now);
        if let Some(ep) = self.ep.as_mut() {
            if sock.nodelay {
                let _ = ep.set_nodelay(h, true);
            }
            if sock.sndbuf.is_some() || sock.rcvbuf.is_some() {
                let _ = ep.set_buffer_sizes(
                    h,
                    sock.sndbuf.unwrap_or(usize::MAX),
                    sock.rcvbuf.unwrap_or(usize::MAX),
                );
            }
            if sock.keepalive {
                let _ = ep.set_keepalive(now, h, Some(sock.keepalive_cfg));
            }
        }
    }

    /// One try of `accept(fd)`: the new descriptor and the peer's address.
    pub fn accept(&mut self, fd: c_int) -> Attempt<(c_int, SocketAddrV4)> {
        let sock = match self.sock(fd) {
            Ok(s) => s.clone(),
            Err(e) => return Attempt::Done(Err(e)),
        };
        let Kind::Listener(l) = sock.kind else {
            return Attempt::Done(Err(libc::EINVAL));
        };
        let Some(ep) = self.ep.as_mut() else {
            return Attempt::Done(Err(libc::EIO));
        };
        match ep.accept(l) {
            Ok(h) => {
                let peer = ep
                    .peer_addr(h)
                    .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                let nfd = self.lowest_free_fd();
                // Linux: the new socket does not inherit O_NONBLOCK; options do.
                let mut new = Sock::new(false);
                new.kind = Kind::Conn(h);
                new.nodelay = sock.nodelay;
                new.keepalive = sock.keepalive;
                new.keepalive_cfg = sock.keepalive_cfg;
                new.linger = sock.linger;
                self.apply_options(&new, h);
                self.fds.insert(nfd, new);
                self.drain();
                Attempt::Done(Ok((nfd, peer)))
            }
            Err(SocketError::WouldBlock) if sock.nonblock => Attempt::Done(Err(libc::EAGAIN)),
            Err(SocketError::WouldBlock) => Attempt::Pending(None),
            Err(e) => Attempt::Done(Err(errno_of(e))),
        }
    }

    /// One try of `connect(fd, remote)`; `first` is the call's first try.
    pub fn connect(&mut self, fd: c_int, remote: SocketAddrV4, first: bool) -> Attempt<()> {
        let sock = match self.sock(fd) {
            Ok(s) => s.clone(),
            Err(e) => return Attempt::Done(Err(e)),
        };
        match sock.kind {
            Kind::Listener(_) => Attempt::Done(Err(libc::EISCONN)),
            Kind::Fresh if !first => Attempt::Done(Err(libc::EIO)),
            Kind::Fresh => {
                let now = instant(self.now);
                let bound = sock.port.filter(|&p| p != 0);
                let res = match self.ep() {
                    Ok(ep) => ep.connect_with(now, remote, |p| bound.is_none_or(|b| b == p)),
                    Err(e) => return Attempt::Done(Err(e)),
                };
                match res {
                    Ok(h) => {
                        self.apply_options(&sock, h);
                        if let Ok(s) = self.sock_mut(fd) {
                            s.kind = Kind::Conn(h);
                        }
                        self.drain();
                        if sock.nonblock {
                            Attempt::Done(Err(libc::EINPROGRESS))
                        } else {
                            Attempt::Pending(None)
                        }
                    }
                    Err(e) => Attempt::Done(Err(errno_of(e))),
                }
            }
            Kind::Conn(h) => {
                let state = self
                    .ep
                    .as_ref()
                    .and_then(|ep| ep.state(h).ok())
                    .unwrap_or(State::Closed);
                match state {
                    State::SynSent | State::SynReceived if first => {
                        if sock.nonblock {
                            Attempt::Done(Err(libc::EALREADY))
                        } else {
                            Attempt::Pending(None)
                        }
                    }
                    State::SynSent | State::SynReceived => Attempt::Pending(None),
                    State::Closed => {
                        Attempt::Done(Err(self.take_error(fd).unwrap_or(libc::ECONNABORTED)))
                    }
                    _ if first => Attempt::Done(Err(libc::EISCONN)),
                    _ => Attempt::Done(Ok(())),
                }
            }
        }
    }

    /// One try of a read of `fd` into `buf` (`peek`: `MSG_PEEK`; `dontwait`: `MSG_DONTWAIT`).
    pub fn read(
        &mut self,
        fd: c_int,
        buf: &mut [u8],
        peek: bool,
        dontwait: bool,
    ) -> Attempt<usize> {
        let sock = match self.sock(fd) {
            Ok(s) => s.clone(),
            Err(e) => return Attempt::Done(Err(e)),
        };
        let Kind::Conn(h) = sock.kind else {
            return Attempt::Done(Err(libc::ENOTCONN));
        };
        if sock.rd_shut || buf.is_empty() {
            return Attempt::Done(Ok(0));
        }
        let Some(ep) = self.ep.as_mut() else {
            return Attempt::Done(Err(libc::EIO));
        };
        let len = buf.len().min(MAX_IO);
        let buf = &mut buf[..len];
        let res = if peek && ep.recv_available(h).is_ok_and(|n| n > 0) {
            ep.peek(h, buf)
        } else if peek {
            // Nothing buffered: what a read would say, without consuming.
            ep.recv(h, &mut []).and_then(|_| match ep.state(h)? {
                s if s.can_receive() || s == State::SynSent => Err(SocketError::WouldBlock),
                _ => Ok(0),
            })
        } else {
            ep.recv(h, buf)
        };
        self.drain();
        match res {
            Ok(0) if peek => match self.take_error(fd) {
                Some(e) => Attempt::Done(Err(e)),
                None => Attempt::Done(Ok(0)),
            },
            Ok(n) => Attempt::Done(Ok(n)),
            Err(SocketError::WouldBlock) if sock.nonblock || dontwait => {
                Attempt::Done(Err(libc::EAGAIN))
            }
            Err(SocketError::WouldBlock) => Attempt::Pending(None),
            Err(e) => Attempt::Done(Err(self.call_error(fd, e))),
        }
    }

    /// One try of a write of `data[*done..]` to `fd`; `*done` counts what was queued by
    /// earlier tries. A blocking write returns when everything is queued.
    pub fn write(
        &mut self,
        fd: c_int,
        data: &[u8],
        done: &mut usize,
        dontwait: bool,
    ) -> Attempt<usize> {
        let sock = match self.sock(fd) {
            Ok(s) => s.clone(),
            Err(e) => return Attempt::Done(Err(e)),
        };
        let Kind::Conn(h) = sock.kind else {
            return Attempt::Done(Err(libc::ENOTCONN));
        };
        let nonblock = sock.nonblock || dontwait;
        let data = &data[..data.len().min(MAX_IO)];
        if data.is_empty() {
            return Attempt::Done(Ok(0));
        }
        let Some(ep) = self.ep.as_mut() else {
            return Attempt::Done(Err(libc::EIO));
        };
        let res = ep.send(h, &data[*done..]);
        self.drain();
        match res {
            Ok(n) => {
                *done += n;
                if *done >= data.len() || nonblock {
                    Attempt::Done(Ok(*done))
                } else {
                    Attempt::Pending(None)
                }
            }
            Err(SocketError::WouldBlock) if nonblock && *done == 0 => {
                Attempt::Done(Err(libc::EAGAIN))
            }
            Err(SocketError::WouldBlock) if nonblock => Attempt::Done(Ok(*done)),
            Err(SocketError::WouldBlock) => Attempt::Pending(None),
            Err(e) if *done > 0 => {
                let _ = e;
                Attempt::Done(Ok(*done))
            }
            Err(SocketError::Shutdown) => Attempt::Done(Err(libc::EPIPE)),
            Err(e) => Attempt::Done(Err(self.call_error(fd, e))),
        }
    }

    /// `close(fd)`.
    pub fn close(&mut self, fd: c_int) -> Sys<()> {
        let sock = self.fds.remove(&fd).ok_or(libc::EBADF)?;
        let now = instant(self.now);
        if let (Kind::Listener(h) | Kind::Conn(h), Some(ep)) = (sock.kind, self.ep.as_mut()) {
            let _ = if sock.linger == Some(0) {
                ep.abort(now, h)
            } else {
                ep.close(now, h)
            };
        }
        self.drain();
        self.generation += 1;
        Ok(())
    }

    /// `shutdown(fd, how)`.
    pub fn shutdown(&mut self, fd: c_int, how: c_int) -> Sys<()> {
        let h = self.conn(fd)?;
        let (rd, wr) = match how {
            libc::SHUT_RD => (true, false),
            libc::SHUT_WR => (false, true),
            libc::SHUT_RDWR => (true, true),
            _ => return Err(libc::EINVAL),
        };
        if wr {
            let now = instant(self.now);
            let ep = self.ep.as_mut().ok_or(libc::EIO)?;
            if let Err(e) = ep.shutdown(now, h) {
                return Err(self.call_error(fd, e));
            }
        }
        if rd {
            self.sock_mut(fd)?.rd_shut = true;
        }
        self.drain();
        self.generation += 1;
        Ok(())
    }

    /// `fcntl(fd, cmd[, arg])`: `F_GETFL`/`F_SETFL` (`O_NONBLOCK`), `F_GETFD`/`F_SETFD`.
    pub fn fcntl(&mut self, fd: c_int, cmd: c_int, arg: c_int) -> Sys<c_int> {
        let sock = self.sock_mut(fd)?;
        match cmd {
            libc::F_GETFL => Ok(libc::O_RDWR | if sock.nonblock { libc::O_NONBLOCK } else { 0 }),
            libc::F_SETFL => {
                sock.nonblock = arg & libc::O_NONBLOCK != 0;
                Ok(0)
            }
            libc::F_GETFD | libc::F_SETFD => Ok(0),
            _ => Err(libc::EINVAL),
        }
    }

    /// `ioctl(fd, request, &int)`: `FIONREAD`/`SIOCINQ`, `SIOCOUTQ`, `FIONBIO`. `value` is
    /// the int `arg` points to (in and out).
    pub fn ioctl(&mut self, fd: c_int, request: u64, value: &mut c_int) -> Sys<()> {
        let sock = self.sock(fd)?.clone();
        let to_int = |n: usize| c_int::try_from(n).unwrap_or(c_int::MAX);
        match request {
            libc::FIONBIO => {
                self.sock_mut(fd)?.nonblock = *value != 0;
                Ok(())
            }
            libc::FIONREAD => {
                let h = match sock.kind {
                    Kind::Conn(h) => h,
                    _ => return Err(libc::EINVAL),
                };
                let ep = self.ep.as_ref().ok_or(libc::EIO)?;
                *value = to_int(ep.recv_available(h).map_err(errno_of)?);
                Ok(())
            }
            libc::TIOCOUTQ => {
                let h = match sock.kind {
                    Kind::Conn(h) => h,
                    _ => return Err(libc::EINVAL),
                };
                let ep = self.ep.as_ref().ok_or(libc::EIO)?;
                *value = to_int(ep.conn_info(h).map_err(errno_of)?.send_buffered);
                Ok(())
            }
            _ => Err(libc::ENOTTY),
        }
    }

    /// `setsockopt(fd, level, name, value)` with the option's bytes.
    pub fn setsockopt(&mut self, fd: c_int, level: c_int, name: c_int, value: &[u8]) -> Sys<()> {
        let int = || -> Sys<c_int> {
            let b: [u8; 4] = value
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(libc::EINVAL)?;
            Ok(c_int::from_ne_bytes(b))
        };
        let now = instant(self.now);
        let kind = self.sock(fd)?.kind;
        let conn = match kind {
            Kind::Conn(h) => Some(h),
            _ => None,
        };
        let secs = |v: c_int| -> Sys<Duration> {
            u64::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .map(Duration::from_secs)
                .ok_or(libc::EINVAL)
        };
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR | libc::SO_REUSEPORT) => {
                self.sock_mut(fd)?.reuseaddr = int()? != 0;
            }
            (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
                let v = usize::try_from(int()?).map_err(|_| libc::EINVAL)?.max(1);
                let s = self.sock_mut(fd)?;
                if name == libc::SO_RCVBUF {
                    s.rcvbuf = Some(v);
                } else {
                    s.sndbuf = Some(v);
                }
                let (snd, rcv) = (s.sndbuf, s.rcvbuf);
                if let (Kind::Listener(h) | Kind::Conn(h), Some(ep)) = (kind, self.ep.as_mut()) {
                    let _ = ep.set_buffer_sizes(
                        h,
                        snd.unwrap_or(usize::MAX),
                        rcv.unwrap_or(usize::MAX),
                    );
                }
            }
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let b: [u8; 8] = value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(libc::EINVAL)?;
                let onoff = c_int::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                let secs = c_int::from_ne_bytes([b[4], b[5], b[6], b[7]]);
                self.sock_mut(fd)?.linger = (onoff != 0).then_some(secs);
            }
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
                let on = int()? != 0;
                let s = self.sock_mut(fd)?;
                s.keepalive = on;
                let cfg = s.keepalive_cfg;
                if let (Some(h), Some(ep)) = (conn, self.ep.as_mut()) {
                    ep.set_keepalive(now, h, on.then_some(cfg))
                        .map_err(errno_of)?;
                }
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL | libc::TCP_KEEPCNT) => {
                let v = int()?;
                let s = self.sock_mut(fd)?;
                match name {
                    libc::TCP_KEEPIDLE => s.keepalive_cfg.idle = secs(v)?,
                    libc::TCP_KEEPINTVL => s.keepalive_cfg.interval = secs(v)?,
                    _ => {
                        s.keepalive_cfg.count = u32::try_from(v)
                            .ok()
                            .filter(|&c| c > 0)
                            .ok_or(libc::EINVAL)?
                    }
                }
                let (on, cfg) = (s.keepalive, s.keepalive_cfg);
                if let (Some(h), Some(ep), true) = (conn, self.ep.as_mut(), on) {
                    ep.set_keepalive(now, h, Some(cfg)).map_err(errno_of)?;
                }
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
                let on = int()? != 0;
                self.sock_mut(fd)?.nodelay = on;
                if let (Some(h), Some(ep)) = (conn, self.ep.as_mut()) {
                    ep.set_nodelay(h, on).map_err(errno_of)?;
                }
            }
            _ => return Err(libc::ENOPROTOOPT),
        }
        self.drain();
        Ok(())
    }

    /// `getsockopt(fd, level, name)`: the option's bytes.
    pub fn getsockopt(&mut self, fd: c_int, level: c_int, name: c_int) -> Sys<Vec<u8>> {
        let sock = self.sock(fd)?.clone();
        let info = match (sock.kind, self.ep.as_ref()) {
            (Kind::Conn(h), Some(ep)) => ep.conn_info(h).ok(),
            _ => None,
        };
        let tcp = &self.settings.config.tcp;
        let int = |v: usize| {
            c_int::try_from(v)
                .unwrap_or(c_int::MAX)
                .to_ne_bytes()
                .to_vec()
        };
        let v = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                self.take_error(fd).unwrap_or(0).to_ne_bytes().to_vec()
            }
            (libc::SOL_SOCKET, libc::SO_TYPE) => libc::SOCK_STREAM.to_ne_bytes().to_vec(),
            (libc::SOL_SOCKET, libc::SO_REUSEADDR | libc::SO_REUSEPORT) => {
                int(usize::from(sock.reuseaddr))
            }
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => int(usize::from(sock.keepalive)),
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => int(info.map_or(
                sock.rcvbuf.unwrap_or(tcp.recv_buffer).min(tcp.recv_buffer),
                |i| i.recv_capacity,
            )),
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => int(info.map_or(
                sock.sndbuf.unwrap_or(tcp.send_buffer).min(tcp.send_buffer),
                |i| i.send_capacity,
            )),
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let mut v = c_int::from(sock.linger.is_some()).to_ne_bytes().to_vec();
                v.extend_from_slice(&sock.linger.unwrap_or(0).to_ne_bytes());
                v
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => int(usize::from(sock.nodelay)),
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
                int(usize::from(info.map_or(tcp.mss, |i| i.smss)))
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => {
                int(sock.keepalive_cfg.idle.micros() as usize / 1_000_000)
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => {
                int(sock.keepalive_cfg.interval.micros() as usize / 1_000_000)
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => int(sock.keepalive_cfg.count as usize),
            _ => return Err(libc::ENOPROTOOPT),
        };
        Ok(v)
    }

    /// The `poll` events of `fd` now (among `POLLIN`, `POLLOUT`, `POLLRDHUP`, `POLLERR`,
    /// `POLLHUP`, `POLLNVAL`), before masking with what was asked.
    pub fn poll_events(&self, fd: c_int) -> i16 {
        let Some(sock) = self.fds.get(&fd) else {
            return libc::POLLNVAL;
        };
        let Some(ep) = self.ep.as_ref() else {
            return libc::POLLOUT | libc::POLLHUP;
        };
        match sock.kind {
            Kind::Fresh => libc::POLLOUT | libc::POLLHUP,
            Kind::Listener(h) => {
                if ep.accept_ready(h) {
                    libc::POLLIN
                } else {
                    0
                }
            }
            Kind::Conn(h) => {
                let state = ep.state(h).unwrap_or(State::Closed);
                let avail = ep.recv_available(h).unwrap_or(0);
                let mut ev = 0;
                if avail > 0 || sock.rd_shut {
                    ev |= libc::POLLIN;
                }
                let peer_closed = state.is_synchronized() && !state.can_receive();
                if peer_closed && state != State::Closed {
                    ev |= libc::POLLIN | libc::POLLRDHUP;
                }
                if state.can_send() && ep.send_space(h).unwrap_or(0) > 0 {
                    ev |= libc::POLLOUT;
                }
                if state == State::Closed {
                    ev |= libc::POLLIN | libc::POLLHUP | libc::POLLRDHUP;
                    let failed = ep
                        .close_reason(h)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r != CloseReason::Normal);
                    if failed && !sock.error_taken {
                        ev |= libc::POLLERR;
                    }
                }
                ev
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_start_at_three_and_reuse_the_lowest() {
        let mut s = Stack::new(Settings::default());
        assert_eq!(s.socket(libc::AF_INET, libc::SOCK_STREAM, 0), Ok(3));
        assert_eq!(s.socket(libc::AF_INET, libc::SOCK_STREAM, 0), Ok(4));
        assert_eq!(s.close(3), Ok(()));
        assert_eq!(s.close(3), Err(libc::EBADF));
        assert_eq!(s.socket(libc::AF_INET, libc::SOCK_STREAM, 0), Ok(3));
        assert_eq!(
            s.socket(libc::AF_INET6, libc::SOCK_STREAM, 0),
            Err(libc::EAFNOSUPPORT)
        );
        assert_eq!(
            s.socket(libc::AF_INET, libc::SOCK_DGRAM, 0),
            Err(libc::EPROTONOSUPPORT)
        );
    }

    #[test]
    fn bind_names_the_local_address_until_the_endpoint_exists() {
        let mut s = Stack::new(Settings::default());
        let fd = s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        let ip = Ipv4Addr::new(192, 168, 7, 9);
        assert_eq!(s.bind(fd, SocketAddrV4::new(ip, 8080)), Ok(()));
        assert_eq!(s.listen(fd, 1), Ok(()));
        assert_eq!(s.local_ip(), ip);
        let fd2 = s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        assert_eq!(
            s.bind(fd2, SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1)),
            Err(libc::EADDRNOTAVAIL)
        );
    }

    #[test]
    fn timers_run_at_their_deadlines() {
        let mut s = Stack::new(Settings::default());
        let fd = s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        let remote = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 8080);
        assert_eq!(s.connect(fd, remote, true), Attempt::Pending(None));
        let (t0, syn) = s.take_packet().expect("SYN");
        assert_eq!(t0, START_US);
        assert_eq!(syn[33] & 0x02, 0x02, "SYN flag");
        assert_eq!(s.take_packet(), None);
        // The initial RTO (1 s) retransmits the SYN at its deadline, not at the target time.
        s.advance_to(START_US + 1_500_000);
        let (t1, again) = s.take_packet().expect("retransmitted SYN");
        assert_eq!(t1, START_US + 1_000_000);
        assert_eq!(again[20..28], syn[20..28], "same ports and sequence number");
        assert_eq!(s.now, START_US + 1_500_000);
    }
}
