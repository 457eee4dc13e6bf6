//! Typed errors that say what to do.

use std::fmt;
use std::io;

/// Everything that can go wrong when opening or driving a port.
///
/// Each variant's message names the cause and, where there is one, the remedy. Errors that
/// come from the OS keep the underlying [`io::Error`] as their source.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The port name does not follow `backend:name[/option=value,...]`.
    BadPortName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    InvalidConfig(String),
    /// The named network interface does not exist (in this network namespace).
    NoSuchInterface(String),
    /// The operation needs a privilege the process lacks.
    PermissionDenied {
        /// What was attempted.
        what: &'static str,
        /// What to do about it.
        hint: &'static str,
    },
    /// `/dev/netmap` is absent: the netmap kernel module is not loaded.
    NetmapMissing,
    /// Both ends of a shared-memory link are already attached.
    ShmBusy(String),
    /// A shared-memory link exists but its layout does not match what we expect.
    ShmIncompatible {
        /// The link's name.
        name: String,
        /// What differs.
        reason: String,
    },
    /// A system call failed.
    Io {
        /// What we were doing.
        context: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// `Result` with psio's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an OS error with what we were doing when it happened.
    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        Error::Io { context, source }
    }

    /// Wraps the calling thread's last OS error.
    pub(crate) fn last_os(context: &'static str) -> Self {
        Error::io(context, io::Error::last_os_error())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadPortName { name, reason } => write!(
                f,
                "bad port name {name:?}: {reason} (expected backend:name[/option=value,...], \
                 e.g. \"shm:demo\", \"afpacket:veth0/q=2\", \"netmap:eth0-1\")"
            ),
            Error::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            Error::NoSuchInterface(name) => write!(
                f,
                "no such interface {name} (check `ip link` in this network namespace)"
            ),
            Error::PermissionDenied { what, hint } => write!(f, "{what}: {hint}"),
            Error::NetmapMissing => write!(
                f,
                "/dev/netmap not found: the netmap kernel module is not loaded \
                 (load netmap.ko, or use the shm or afpacket backend)"
            ),
            Error::ShmBusy(name) => write!(
                f,
                "shared-memory link {name:?} already has both ends attached \
                 (close one, or remove a stale link left by a crashed process)"
            ),
            Error::ShmIncompatible { name, reason } => {
                write!(f, "shared-memory link {name:?} is incompatible: {reason}")
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::BadPortName { .. } | Error::InvalidConfig(_) => io::ErrorKind::InvalidInput,
            Error::NoSuchInterface(_) | Error::NetmapMissing => io::ErrorKind::NotFound,
            Error::PermissionDenied { .. } => io::ErrorKind::PermissionDenied,
            Error::ShmBusy(_) => io::ErrorKind::AddrInUse,
            Error::ShmIncompatible { .. } => io::ErrorKind::InvalidData,
            Error::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}
