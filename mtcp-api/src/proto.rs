//! What an application side and its stack side say to each other: commands one way,
//! messages the other, each kind of queue FIFO.
//!
//! Descriptors are the application's: it allocates them and names sockets by them in every
//! command. A descriptor number is reused only after the stack side answered its `Close`
//! with [`Msg::Released`]: every message about the old socket precedes that answer in the
//! FIFO, so none can be taken for the new socket's.
//!
//! A connection the stack accepted has no descriptor until the application's `accept` takes
//! it: it travels as a tcp-core [`Handle`] in [`Msg::Accepted`] and the application gives it
//! a descriptor with [`Cmd::Adopt`].

use core::net::SocketAddrV4;
use tcp_core::config::Keepalive;
use tcp_core::{CloseReason, Handle};

/// A socket descriptor of one context.
pub type Fd = u32;

/// Application → stack.
#[derive(Debug)]
pub enum Cmd {
    /// Listen on `port` (every local address; 0: a free ephemeral port) with at most
    /// `backlog` connections accepted by the stack and not yet taken by the application.
    Listen {
        /// The socket.
        fd: Fd,
        /// Local port.
        port: u16,
        /// Accept backlog.
        backlog: usize,
    },
    /// Start an active open.
    Connect {
        /// The socket.
        fd: Fd,
        /// The peer.
        remote: SocketAddrV4,
        /// A local port chosen with `bind`, else an ephemeral one.
        local_port: Option<u16>,
        /// Options set before connecting.
        opts: SockOpts,
    },
    /// Gives descriptor `fd` to a connection the stack accepted (`Msg::Accepted`).
    Adopt {
        /// The new descriptor.
        fd: Fd,
        /// The accepted connection.
        handle: Handle,
        /// Options inherited from the listening socket.
        opts: SockOpts,
    },
    /// Bytes to send, in order after those of earlier `Write`s.
    Write {
        /// The socket.
        fd: Fd,
        /// The bytes.
        buf: Vec<u8>,
    },
    /// The application read `n` bytes: the stack may deliver that many more.
    Consumed {
        /// The socket.
        fd: Fd,
        /// Bytes read since the last `Consumed`.
        n: usize,
    },
    /// `shutdown(SHUT_WR)`: FIN after the bytes written so far.
    Shutdown {
        /// The socket.
        fd: Fd,
    },
    /// The application closed the descriptor: graceful close after the bytes written, or a
    /// reset when `abort` (an explicit abort, unread data, or a zero linger time).
    Close {
        /// The socket.
        fd: Fd,
        /// Reset instead of the closing handshake.
        abort: bool,
    },
    /// New socket options.
    SetOpts {
        /// The socket.
        fd: Fd,
        /// All of its options.
        opts: SockOpts,
    },
}

/// The options the stack side applies to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockOpts {
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `SO_KEEPALIVE` with its idle/interval/count.
    pub keepalive: Option<Keepalive>,
    /// `SO_RCVBUF`: the most received bytes the application may hold unread.
    pub recv_limit: usize,
    /// `SO_SNDBUF`: the most unacknowledged bytes the application may have written (the
    /// stack gives credit back in quarters of it).
    pub send_limit: usize,
}

/// Stack → application.
pub enum Msg {
    /// A `Listen` succeeded, on this port.
    Listening {
        /// The socket.
        fd: Fd,
        /// The port (chosen by the stack when `Listen` asked for 0).
        port: u16,
    },
    /// A `Listen` or `Connect` failed at once.
    Failed {
        /// The socket.
        fd: Fd,
        /// Why.
        err: crate::Error,
    },
    /// A `Connect` is under way from this local address.
    Connecting {
        /// The socket.
        fd: Fd,
        /// Our address and port.
        local: SocketAddrV4,
    },
    /// The connection is established (active opens).
    Connected {
        /// The socket.
        fd: Fd,
    },
    /// A connection is waiting for `accept` on listener `fd`.
    Accepted {
        /// The listening socket.
        fd: Fd,
        /// The new connection.
        handle: Handle,
        /// Our address.
        local: SocketAddrV4,
        /// The peer's.
        peer: SocketAddrV4,
    },
    /// Bytes received, in order.
    Data {
        /// The socket.
        fd: Fd,
        /// The bytes.
        buf: Vec<u8>,
    },
    /// `n` bytes the application wrote have left the stack's buffers (acknowledged): that
    /// much more may be written.
    Credit {
        /// The socket.
        fd: Fd,
        /// Bytes.
        n: usize,
    },
    /// The peer sent FIN: after the data already delivered, end of stream.
    PeerClosed {
        /// The socket.
        fd: Fd,
    },
    /// The connection reached CLOSED, for this reason.
    Ended {
        /// The socket.
        fd: Fd,
        /// Why.
        reason: CloseReason,
    },
    /// The stack has forgotten `fd` (answer to `Close`): the number may be reused.
    Released {
        /// The socket.
        fd: Fd,
    },
}

impl core::fmt::Debug for Msg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Msg::Listening { fd, port } => write!(f, "Listening({fd}, {port})"),
            Msg::Failed { fd, err } => write!(f, "Failed({fd}, {err:?})"),
            Msg::Connecting { fd, local } => write!(f, "Connecting({fd}, {local})"),
            Msg::Connected { fd } => write!(f, "Connected({fd})"),
            Msg::Accepted {
                fd, local, peer, ..
            } => write!(f, "Accepted({fd}, {local} <- {peer})"),
            Msg::Data { fd, buf } => write!(f, "Data({fd}, {} bytes)", buf.len()),
            Msg::Credit { fd, n } => write!(f, "Credit({fd}, {n})"),
            Msg::PeerClosed { fd } => write!(f, "PeerClosed({fd})"),
            Msg::Ended { fd, reason } => write!(f, "Ended({fd}, {reason:?})"),
            Msg::Released { fd } => write!(f, "Released({fd})"),
        }
    }
}
