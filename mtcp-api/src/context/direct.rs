//! Run-to-completion contexts ([`Context::run_to_completion`]): the socket calls operate on
//! the core's endpoint directly, in the application's thread. No command or message is
//! made and no byte is copied twice: `write` copies into tcp-core's send buffer, `read` out
//! of its receive buffer, and readiness is read from the endpoint when epoll asks.
//!
//! A pass ([`Context::poll`], and `epoll_wait` when nothing is ready) is `TX (what the
//! application queued since the last pass) → RX batch → timers → events → TX batch`; the
//! events become epoll notifications at once. The second TX keeps pure ACKs back for one
//! pass, so that the application, acting on those events in between, lets its writes carry
//! them (a connection's handshake ACK rides on its first request, an ACK on the response) or
//! makes them moot (an abort); a pass that keeps ACKs back counts as busy, so the next one
//! follows at once. Calls between two passes act with the time of the last pass (as the
//! stack thread's commands do with the time of theirs).

use super::{Context, Link, Obj, Phase, Sock, STATE_CHANGE};
use crate::proto::Fd;
use crate::stack::StackCore;
use crate::Error;
use core::net::SocketAddrV4;
use event::Events;
use tcp_core::{CloseReason, Endpoint, Event, Handle, SocketError};

/// tcp-core handle slot → (generation, descriptor): whose events these are.
#[derive(Debug, Default)]
pub(super) struct Slots(Vec<(u32, Fd)>);

/// No descriptor.
const NO_FD: Fd = Fd::MAX;

impl Slots {
    fn get(&self, h: Handle) -> Option<Fd> {
        match self.0.get(h.slot as usize) {
            Some(&(g, fd)) if g == h.generation && fd != NO_FD => Some(fd),
            _ => None,
        }
    }

    fn set(&mut self, h: Handle, fd: Fd) {
        let i = h.slot as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, (0, NO_FD));
        }
        self.0[i] = (h.generation, fd);
    }

    fn clear(&mut self, h: Handle) {
        if self.get(h).is_some() {
            self.0[h.slot as usize] = (0, NO_FD);
        }
    }
}

/// Linux's `sk_stream_is_writeable` on the endpoint's send buffer, whose size is the
/// socket's `SO_SNDBUF`: free space of at least a third of it.
pub(super) fn writable(ep: &Endpoint, h: Handle, sndbuf: usize) -> bool {
    let space = ep.send_space(h).unwrap_or(0);
    space > 0 && 3 * space >= sndbuf
}

/// Tells every epoll watching `fd` about a change with these flags.
pub(super) fn notify(objs: &mut [Obj], fd: Fd, flags: Events) {
    let n = match objs.get(fd as usize) {
        Some(Obj::Sock(s)) => s.watchers.len(),
        Some(Obj::Pipe(p)) => p.watchers.len(),
        _ => return,
    };
    for i in 0..n {
        let ep = match &objs[fd as usize] {
            Obj::Sock(s) => s.watchers[i],
            Obj::Pipe(p) => p.watchers[i],
            _ => return,
        };
        if let Some(Obj::Epoll(e)) = objs.get_mut(ep as usize) {
            e.notify(fd, flags);
        }
    }
}

fn sock_of(objs: &mut [Obj], fd: Fd) -> Option<&mut Sock> {
    match objs.get_mut(fd as usize) {
        Some(Obj::Sock(s)) => Some(s),
        _ => None,
    }
}

impl Context {
    /// The stack of a run-to-completion context.
    pub(super) fn direct(&mut self) -> Option<&mut StackCore> {
        match &mut self.link {
            Link::Direct { core, .. } => Some(core),
            Link::Thread { .. } => None,
        }
    }

    /// One pass of the stack. Returns whether anything happened.
    pub(super) fn d_pass(&mut self) -> Result<bool, Error> {
        let Context { link, objs, .. } = self;
        let Link::Direct { core, slots, idle } = link else {
            return Ok(false);
        };
        let mut busy = core.begin_pass().map_err(|_| Error::ContextGone)?;
        while let Some(ev) = core.ep_mut().poll_event() {
            busy = true;
            d_event(core, slots, objs, ev);
        }
        busy |= core.tx_holding_acks().map_err(|_| Error::ContextGone)?;
        *idle = !busy;
        Ok(busy)
    }

    /// Sleeps until the stack has work (after an idle pass), at most until `limit_us`.
    pub(super) fn d_block(&mut self, limit_us: Option<u64>) -> Result<(), Error> {
        if let Link::Direct { core, idle, .. } = &mut self.link {
            if *idle {
                core.select(limit_us).map_err(|_| Error::ContextGone)?;
            }
        }
        Ok(())
    }

    /// `listen` in a run-to-completion context.
    pub(super) fn d_listen(&mut self, fd: Fd, port: u16, backlog: usize) -> Result<(), Error> {
        let Context {
            link,
            objs,
            sndbuf,
            rcvbuf,
            ..
        } = self;
        let Link::Direct { core, slots, .. } = link else {
            return Err(Error::ContextGone);
        };
        let s = sock_of(objs, fd).ok_or(Error::BadDescriptor)?;
        let (h, port) = core.listen(port, backlog).map_err(Error::from)?;
        if s.sndbuf != *sndbuf || s.rcvbuf != *rcvbuf {
            let _ = core.ep_mut().set_buffer_sizes(h, s.sndbuf, s.rcvbuf);
        }
        slots.set(h, fd);
        s.handle = Some(h);
        s.phase = Phase::Listening;
        s.bound_port = Some(port);
        let ip = s
            .local
            .map_or(core::net::Ipv4Addr::UNSPECIFIED, |a| *a.ip());
        s.local = Some(SocketAddrV4::new(ip, port));
        Ok(())
    }

    /// `accept` in a run-to-completion context.
    pub(super) fn d_accept(&mut self, fd: Fd) -> Result<(Fd, SocketAddrV4), Error> {
        let (lh, opts) = {
            let s = self.sock(fd)?;
            (s.handle, s.opts)
        };
        let lh = lh.ok_or(Error::InvalidInput)?;
        let core = self.direct().ok_or(Error::ContextGone)?;
        let (conn, local, peer) = loop {
            let conn = core.ep_mut().accept(lh).map_err(Error::from)?;
            let ep = core.ep_mut();
            match (ep.local_addr(conn), ep.peer_addr(conn)) {
                (Ok(local), Ok(peer)) => break (conn, local, peer),
                // Gone already: release it rather than hold a handle nobody will close.
                _ => {
                    let now = core.now();
                    let _ = core.ep_mut().abort(now, conn);
                }
            }
        };
        core.note_accepted(peer);
        d_apply_opts(core, conn, opts.nodelay, opts.keepalive_opt());
        let new = match self.accepted_socket(fd, local, peer) {
            Ok(new) => new,
            Err(e) => {
                if let Some(core) = self.direct() {
                    let now = core.now();
                    let _ = core.ep_mut().abort(now, conn);
                }
                return Err(e);
            }
        };
        if let Ok(c) = self.sock_mut(new) {
            c.handle = Some(conn);
        }
        if let Link::Direct { slots, .. } = &mut self.link {
            slots.set(conn, new);
        }
        Ok((new, peer))
    }

    /// `connect` in a run-to-completion context, once the socket's phase allowed it:
    /// [`Error::InProgress`]; a connection that cannot even start (no port, no route) ends
    /// at once with its error in `SO_ERROR`, as the stack thread reports it.
    pub(super) fn d_connect(&mut self, fd: Fd, remote: SocketAddrV4) -> Result<(), Error> {
        let Context {
            link,
            objs,
            sndbuf,
            rcvbuf,
            ..
        } = self;
        let Link::Direct { core, slots, .. } = link else {
            return Err(Error::ContextGone);
        };
        let s = sock_of(objs, fd).ok_or(Error::BadDescriptor)?;
        match core.open(remote, s.bound_port) {
            Ok(h) => {
                core.stats_mut().connects += 1;
                slots.set(h, fd);
                s.handle = Some(h);
                s.phase = Phase::Connecting;
                s.peer = Some(remote);
                let ep = core.ep_mut();
                if let Ok(local) = ep.local_addr(h) {
                    s.local = Some(local);
                }
                if s.sndbuf != *sndbuf || s.rcvbuf != *rcvbuf {
                    let _ = ep.set_buffer_sizes(h, s.sndbuf, s.rcvbuf);
                }
                let (nodelay, ka) = (s.opts.nodelay, s.opts.keepalive_opt());
                d_apply_opts(core, h, nodelay, ka);
            }
            Err(e) => {
                s.phase = Phase::Connecting;
                s.peer = Some(remote);
                s.error = Some(e.into());
                s.ended = Some(CloseReason::Aborted);
                notify(objs, fd, STATE_CHANGE);
            }
        }
        Err(Error::InProgress)
    }

    /// Forgets the connection of a socket whose connect failed (before a new connect).
    pub(super) fn d_forget(&mut self, fd: Fd) {
        let Context { link, objs, .. } = self;
        let Link::Direct { core, slots, .. } = link else {
            return;
        };
        if let Some(h) = sock_of(objs, fd).and_then(|s| s.handle.take()) {
            slots.clear(h);
            let now = core.now();
            let _ = core.ep_mut().abort(now, h);
        }
    }

    /// Bytes ready to read on `h`.
    pub(super) fn d_available(&self, h: Handle) -> usize {
        match &self.link {
            Link::Direct { core, .. } => core.endpoint().recv_available(h).unwrap_or(0),
            Link::Thread { .. } => 0,
        }
    }

    /// `read`/`recv` in a run-to-completion context: straight from the endpoint's receive
    /// buffer.
    pub(super) fn d_recv(
        &mut self,
        fd: Fd,
        h: Handle,
        buf: &mut [u8],
        peek: bool,
    ) -> Result<usize, Error> {
        let Context { link, objs, .. } = self;
        let Link::Direct { core, .. } = link else {
            return Err(Error::ContextGone);
        };
        let s = sock_of(objs, fd).ok_or(Error::BadDescriptor)?;
        let ep = core.ep_mut();
        if buf.is_empty() {
            // Linux returns 0 at once for a zero-length read (of a connected socket, or
            // of one with bytes to read).
            if s.phase == Phase::Connected || ep.recv_available(h).unwrap_or(0) > 0 {
                return Ok(0);
            }
        } else if !s.rd_shut {
            // The common case first: bytes are there.
            let got = if peek {
                ep.peek(h, buf)
            } else {
                ep.recv(h, buf)
            };
            if let Ok(n @ 1..) = got {
                return Ok(n);
            }
        }
        s.nothing_to_read()
    }

    /// `write` in a run-to-completion context, once the socket's state allowed it.
    pub(super) fn d_write(&mut self, fd: Fd, data: &[u8]) -> Result<usize, Error> {
        let Context { link, objs, .. } = self;
        let Link::Direct { core, .. } = link else {
            return Err(Error::ContextGone);
        };
        let s = sock_of(objs, fd).ok_or(Error::BadDescriptor)?;
        let h = s.handle.ok_or(Error::NotConnected)?;
        let ep = core.ep_mut();
        let r = ep.send(h, data);
        match r {
            Ok(n) => {
                if n < data.len() {
                    // The endpoint reports the next room freed (a short send asks for it).
                    s.nospace.set(true);
                } else if !writable(ep, h, s.sndbuf) {
                    // A poll may find it not writable before any write falls short: hear
                    // of the next room freed, to wake that poller.
                    let _ = ep.want_writable(h);
                }
                Ok(n)
            }
            Err(SocketError::WouldBlock) => {
                s.nospace.set(true);
                Err(Error::WouldBlock)
            }
            Err(SocketError::Shutdown) => Err(Error::BrokenPipe),
            Err(e) => Err(e.into()),
        }
    }

    /// `shutdown` in a run-to-completion context.
    pub(super) fn d_shutdown(&mut self, fd: Fd, read: bool, write: bool) {
        let Context { link, objs, .. } = self;
        let Link::Direct { core, .. } = link else {
            return;
        };
        let Some(s) = sock_of(objs, fd) else { return };
        let Some(h) = s.handle else { return };
        let now = core.now();
        let ep = core.ep_mut();
        if read {
            s.rd_closed = true;
            s.rd_shut = true;
            let _ = ep.recv_with(h, |a, b| a.len() + b.len());
        }
        if write && !s.wr_shut {
            s.wr_shut = true;
            let _ = ep.shutdown(now, h);
        }
    }

    /// Releases a closed socket's connection: a listener stops (its connections nobody
    /// accepted are reset), a connection is reset (`abort`) or closed gracefully.
    pub(super) fn d_close(&mut self, h: Handle, listener: bool, abort: bool) {
        let Link::Direct { core, slots, .. } = &mut self.link else {
            return;
        };
        slots.clear(h);
        let now = core.now();
        if listener {
            let _ = core.ep_mut().close(now, h);
        } else if abort {
            let _ = core.ep_mut().abort(now, h);
            core.stats_mut().reset += 1;
        } else {
            let _ = core.ep_mut().close(now, h);
            core.stats_mut().closed += 1;
        }
    }

    /// Applies a socket's options to its connection (or listener) after `setsockopt`.
    pub(super) fn d_set_opts(&mut self, fd: Fd) {
        let Context { link, objs, .. } = self;
        let Link::Direct { core, .. } = link else {
            return;
        };
        let Some(s) = sock_of(objs, fd) else { return };
        let Some(h) = s.handle else { return };
        if s.ended.is_some() {
            return;
        }
        let (nodelay, ka) = (s.opts.nodelay, s.opts.keepalive_opt());
        let _ = core.ep_mut().set_buffer_sizes(h, s.sndbuf, s.rcvbuf);
        if s.phase != Phase::Listening {
            d_apply_opts(core, h, nodelay, ka);
            if !writable(core.endpoint(), h, s.sndbuf) {
                let _ = core.ep_mut().want_writable(h);
            }
        }
    }

    /// Whether `fd`'s connection has room by Linux's rule (run-to-completion contexts).
    pub(super) fn d_writable(&self, h: Handle, sndbuf: usize) -> bool {
        match &self.link {
            Link::Direct { core, .. } => writable(core.endpoint(), h, sndbuf),
            Link::Thread { .. } => false,
        }
    }
}

impl Drop for Context {
    /// A run-to-completion context closes what is open as `close` would (FIN, or RST for
    /// unread data or a zero linger time) and runs its stack until those segments are out,
    /// for at most [`SHUTDOWN_GRACE`](super::SHUTDOWN_GRACE). (A context of stack threads
    /// leaves that to [`Mtcp::destroy`](super::Mtcp::destroy).)
    fn drop(&mut self) {
        if !self.is_direct() || self.gone {
            return;
        }
        let socks: Vec<Fd> = (0..self.objs.len() as Fd)
            .filter(|&fd| matches!(self.objs[fd as usize], Obj::Sock(_)))
            .collect();
        for fd in socks {
            let _ = self.close(fd);
        }
        let end = std::time::Instant::now() + super::SHUTDOWN_GRACE;
        while std::time::Instant::now() < end {
            match self.d_pass() {
                Ok(true) => {}
                _ => break,
            }
        }
    }
}

/// Sets `TCP_NODELAY` and keepalive on a connection where they differ from what it has.
fn d_apply_opts(
    core: &mut StackCore,
    h: Handle,
    nodelay: bool,
    keepalive: Option<tcp_core::config::Keepalive>,
) {
    let now = core.now();
    let ep = core.ep_mut();
    if ep.nodelay(h).is_ok_and(|n| n != nodelay) {
        let _ = ep.set_nodelay(h, nodelay);
    }
    if ep.keepalive(h).is_ok_and(|k| k != keepalive) {
        let _ = ep.set_keepalive(now, h, keepalive);
    }
}

/// Turns one endpoint event into the socket's new state and epoll notifications.
fn d_event(core: &mut StackCore, slots: &Slots, objs: &mut [Obj], ev: Event) {
    match ev {
        Event::Accepted { listener, .. } => {
            if let Some(fd) = slots.get(listener) {
                notify(objs, fd, Events::IN | Events::RDNORM);
            }
        }
        Event::Connected(h) => {
            let Some(fd) = slots.get(h) else { return };
            if let Some(s) = sock_of(objs, fd) {
                if s.phase == Phase::Connecting {
                    s.phase = Phase::Connected;
                }
                notify(objs, fd, STATE_CHANGE);
            }
        }
        Event::Readable(h) => {
            let Some(fd) = slots.get(h) else { return };
            let Some(s) = sock_of(objs, fd) else { return };
            if s.rd_shut {
                // SHUT_RD: what still arrives is discarded.
                let _ = core.ep_mut().recv_with(h, |a, b| a.len() + b.len());
                return;
            }
            notify(objs, fd, Events::IN | Events::RDNORM);
        }
        Event::Writable(h) => {
            let Some(fd) = slots.get(h) else { return };
            let Some(s) = sock_of(objs, fd) else { return };
            if !writable(core.endpoint(), h, s.sndbuf) {
                // Not enough room yet for Linux's rule: hear of the next.
                let _ = core.ep_mut().want_writable(h);
                return;
            }
            // Linux's sk_stream_write_space: a wake-up only for a writer that found no room.
            if s.nospace.replace(false) {
                notify(objs, fd, Events::OUT | Events::WRNORM);
            }
        }
        Event::PeerClosed(h) => {
            let Some(fd) = slots.get(h) else { return };
            if let Some(s) = sock_of(objs, fd) {
                s.rd_closed = true;
                notify(objs, fd, STATE_CHANGE);
            }
        }
        Event::Closed(h, reason) => {
            core.count_end(reason);
            let Some(fd) = slots.get(h) else { return };
            let Some(s) = sock_of(objs, fd) else { return };
            s.ended = Some(reason);
            s.error = match reason {
                CloseReason::Reset => Some(Error::ConnectionReset),
                CloseReason::Refused => Some(Error::ConnectionRefused),
                CloseReason::TimedOut => Some(Error::TimedOut),
                _ => s.error,
            };
            notify(
                objs,
                fd,
                Events::ERR | Events::HUP | Events::IN | Events::OUT | Events::RDHUP,
            );
        }
        _ => {}
    }
}
