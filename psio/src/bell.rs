//! Doorbells: a descriptor that one side writes to wake another side sleeping in `poll()`.
//!
//! Two kinds, one interface: an `eventfd` (in one process, cheapest) and a named FIFO (across
//! processes that find each other by name: an eventfd cannot be opened by name). Ringing
//! writes one token; draining reads every token; both are non-blocking. A full FIFO is already
//! "rung", so a failed write on `EAGAIN` loses nothing.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Turns a `-1` return into an [`Error`] naming what we were doing.
macro_rules! syscall {
    ($ctx:expr, $call:expr) => {{
        let r = $call;
        if r == -1 {
            Err($crate::error::Error::last_os($ctx))
        } else {
            Ok(r)
        }
    }};
}
pub(crate) use syscall;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EventFd,
    Fifo,
}

/// A doorbell descriptor.
#[derive(Debug)]
pub(crate) struct Bell {
    fd: OwnedFd,
    kind: Kind,
}

impl Bell {
    /// A new non-blocking eventfd.
    pub(crate) fn eventfd() -> Result<Bell> {
        // SAFETY: plain system call with constant flags.
        let fd = syscall!("eventfd", unsafe {
            libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
        })?;
        Ok(Bell {
            // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            kind: Kind::EventFd,
        })
    }

    /// Creates the FIFO at `path` if missing (mode 0600) and opens it read-write,
    /// non-blocking (read-write so that opening never blocks and the FIFO never sees EOF).
    pub(crate) fn fifo(path: &Path) -> Result<Bell> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidConfig(format!("path {path:?} contains NUL")))?;
        // SAFETY: `c` is a valid NUL-terminated path.
        let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        if r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(Error::last_os("mkfifo for shm doorbell"));
        }
        // SAFETY: `c` is a valid path; flags are constants.
        let fd = syscall!("open shm doorbell FIFO", unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        Ok(Bell {
            // SAFETY: `fd` was just returned by open and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            kind: Kind::Fifo,
        })
    }

    /// A second handle on the same doorbell.
    pub(crate) fn try_clone(&self) -> Result<Bell> {
        Ok(Bell {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Error::io("duplicating doorbell", e))?,
            kind: self.kind,
        })
    }

    /// Wakes whoever polls this bell.
    #[inline]
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        let n = match self.kind {
            Kind::EventFd => 8,
            Kind::Fifo => 1,
        };
        // SAFETY: writes at most 8 bytes from a local u64. A failure (EAGAIN: FIFO full or
        // eventfd counter saturated) means the bell is already rung.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), n) };
    }

    /// Consumes every pending token.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a local buffer of the given size.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            // eventfd resets in one read; a FIFO may hold more than one buffer's worth.
            if r <= 0 || self.kind == Kind::EventFd || (r as usize) < buf.len() {
                break;
            }
        }
    }

    /// The descriptor to poll for `POLLIN`.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn eventfd_bell_rings_and_drains() {
        let b = Bell::eventfd().unwrap();
        assert!(!readable(b.fd()));
        b.ring();
        b.ring();
        assert!(readable(b.fd()));
        b.drain();
        assert!(!readable(b.fd()));
    }

    #[test]
    fn fifo_bell_rings_and_drains_many_tokens() {
        let path = std::env::temp_dir().join(format!("psio-bell-test-{}", std::process::id()));
        let b = Bell::fifo(&path).unwrap();
        let other = Bell::fifo(&path).unwrap();
        for _ in 0..1000 {
            other.ring();
        }
        assert!(readable(b.fd()));
        b.drain();
        assert!(!readable(b.fd()));
        std::fs::remove_file(&path).unwrap();
    }
}
