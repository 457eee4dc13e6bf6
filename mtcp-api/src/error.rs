//! Errors of the socket calls, one variant per `errno` an mTCP (or BSD) application checks.
//!
//! Every call returns `Result<T, Error>`; [`Error::errno`] gives the C value (the C ABI sets
//! `errno` from it) and `From<Error> for std::io::Error` the Rust one, so that
//! `TcpStream`-style wrappers and `?` in applications work unchanged.

use core::fmt;
use std::io;
use tcp_core::SocketError;

/// Why a socket call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// Nothing to read, no room to write, no connection to accept yet (`EAGAIN`).
    WouldBlock,
    /// A non-blocking connect started; OUT or ERR on the socket tells how it ended
    /// (`EINPROGRESS`).
    InProgress,
    /// A connect is already in progress on this socket (`EALREADY`).
    Already,
    /// The peer refused the connection (`ECONNREFUSED`).
    ConnectionRefused,
    /// The peer reset the connection (`ECONNRESET`).
    ConnectionReset,
    /// The connection was aborted locally (`ECONNABORTED`).
    ConnectionAborted,
    /// Retransmissions or keepalive probes went unanswered (`ETIMEDOUT`).
    TimedOut,
    /// The local address and port are taken (`EADDRINUSE`).
    AddrInUse,
    /// No local port is free for this destination (`EADDRNOTAVAIL`).
    AddrNotAvailable,
    /// The destination has no route (`ENETUNREACH`).
    NetworkUnreachable,
    /// The call needs a connected socket (`ENOTCONN`).
    NotConnected,
    /// The socket is connected already (`EISCONN`).
    IsConnected,
    /// Writing after `shutdown(write)` or after the connection ended (`EPIPE`).
    BrokenPipe,
    /// No such descriptor in this context (`EBADF`).
    BadDescriptor,
    /// The descriptor is not of the kind the call needs, e.g. `accept` on a connected
    /// socket or `epoll_wait` on a socket (`EINVAL`, or `ENOTSOCK` by [`errno`](Self::errno)
    /// where Linux says so).
    InvalidInput,
    /// The descriptor is not a socket (`ENOTSOCK`).
    NotSocket,
    /// The option or operation is not supported (`EOPNOTSUPP` / `ENOPROTOOPT`).
    NotSupported,
    /// The per-core connection or descriptor limit is reached (`EMFILE`).
    TooManySockets,
    /// A bounded queue is full (`ENOBUFS`).
    NoBufferSpace,
    /// An epoll registration exists already (`EEXIST`).
    Exists,
    /// No such epoll registration (`ENOENT`).
    NotFound,
    /// The context is shutting down or its stack thread is gone (`ESHUTDOWN`).
    ContextGone,
}

impl Error {
    /// The C `errno` value (Linux numbering).
    pub fn errno(self) -> i32 {
        match self {
            Error::WouldBlock => libc::EAGAIN,
            Error::InProgress => libc::EINPROGRESS,
            Error::Already => libc::EALREADY,
            Error::ConnectionRefused => libc::ECONNREFUSED,
            Error::ConnectionReset => libc::ECONNRESET,
            Error::ConnectionAborted => libc::ECONNABORTED,
            Error::TimedOut => libc::ETIMEDOUT,
            Error::AddrInUse => libc::EADDRINUSE,
            Error::AddrNotAvailable => libc::EADDRNOTAVAIL,
            Error::NetworkUnreachable => libc::ENETUNREACH,
            Error::NotConnected => libc::ENOTCONN,
            Error::IsConnected => libc::EISCONN,
            Error::BrokenPipe => libc::EPIPE,
            Error::BadDescriptor => libc::EBADF,
            Error::InvalidInput => libc::EINVAL,
            Error::NotSocket => libc::ENOTSOCK,
            Error::NotSupported => libc::EOPNOTSUPP,
            Error::TooManySockets => libc::EMFILE,
            Error::NoBufferSpace => libc::ENOBUFS,
            Error::Exists => libc::EEXIST,
            Error::NotFound => libc::ENOENT,
            Error::ContextGone => libc::ESHUTDOWN,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The same words as strerror(3), so logs read alike.
        f.write_str(match self {
            Error::WouldBlock => "resource temporarily unavailable",
            Error::InProgress => "operation now in progress",
            Error::Already => "operation already in progress",
            Error::ConnectionRefused => "connection refused",
            Error::ConnectionReset => "connection reset by peer",
            Error::ConnectionAborted => "software caused connection abort",
            Error::TimedOut => "connection timed out",
            Error::AddrInUse => "address already in use",
            Error::AddrNotAvailable => "cannot assign requested address",
            Error::NetworkUnreachable => "network is unreachable",
            Error::NotConnected => "transport endpoint is not connected",
            Error::IsConnected => "transport endpoint is already connected",
            Error::BrokenPipe => "broken pipe",
            Error::BadDescriptor => "bad file descriptor",
            Error::InvalidInput => "invalid argument",
            Error::NotSocket => "socket operation on non-socket",
            Error::NotSupported => "operation not supported",
            Error::TooManySockets => "too many open sockets in this context",
            Error::NoBufferSpace => "no buffer space available",
            Error::Exists => "file exists",
            Error::NotFound => "no such file or directory",
            Error::ContextGone => "cannot send after transport endpoint shutdown",
        })
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::from_raw_os_error(e.errno())
    }
}

impl From<SocketError> for Error {
    fn from(e: SocketError) -> Error {
        match e {
            SocketError::BadHandle => Error::BadDescriptor,
            SocketError::WouldBlock => Error::WouldBlock,
            SocketError::NotConnected => Error::NotConnected,
            SocketError::AddrInUse => Error::AddrInUse,
            SocketError::PortsExhausted => Error::AddrNotAvailable,
            SocketError::TooManyConnections => Error::TooManySockets,
            SocketError::NoRoute => Error::NetworkUnreachable,
            SocketError::Shutdown => Error::BrokenPipe,
            SocketError::ConnectionReset => Error::ConnectionReset,
            SocketError::ConnectionRefused => Error::ConnectionRefused,
            SocketError::TimedOut => Error::TimedOut,
            SocketError::InvalidOperation | SocketError::InvalidArgument => Error::InvalidInput,
            // SocketError is non-exhaustive: a new kind is at least an invalid operation.
            #[allow(unreachable_patterns)]
            _ => Error::InvalidInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_and_io_kinds_match_linux() {
        let cases = [
            (Error::WouldBlock, io::ErrorKind::WouldBlock),
            (Error::ConnectionRefused, io::ErrorKind::ConnectionRefused),
            (Error::ConnectionReset, io::ErrorKind::ConnectionReset),
            (Error::TimedOut, io::ErrorKind::TimedOut),
            (Error::AddrInUse, io::ErrorKind::AddrInUse),
            (Error::NotConnected, io::ErrorKind::NotConnected),
            (Error::BrokenPipe, io::ErrorKind::BrokenPipe),
            (Error::InvalidInput, io::ErrorKind::InvalidInput),
            (Error::AddrNotAvailable, io::ErrorKind::AddrNotAvailable),
        ];
        for (e, kind) in cases {
            let io: io::Error = e.into();
            assert_eq!(io.kind(), kind, "{e:?}");
            assert_eq!(io.raw_os_error(), Some(e.errno()));
        }
        assert_eq!(Error::InProgress.errno(), 115);
        assert_eq!(Error::BadDescriptor.errno(), 9);
        assert_eq!(
            Error::WouldBlock.to_string(),
            "resource temporarily unavailable"
        );
    }

    #[test]
    fn tcp_core_errors_map_to_their_errno() {
        assert_eq!(
            Error::from(SocketError::PortsExhausted),
            Error::AddrNotAvailable
        );
        assert_eq!(Error::from(SocketError::Shutdown), Error::BrokenPipe);
        assert_eq!(Error::from(SocketError::NoRoute).errno(), libc::ENETUNREACH);
        assert_eq!(
            Error::from(SocketError::TooManyConnections),
            Error::TooManySockets
        );
    }
}
