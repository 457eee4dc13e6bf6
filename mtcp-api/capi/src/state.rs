//! The process-global stack, the contexts behind `mctx_t`, and the helpers every entry point
//! uses: errno, panics, argument checks.

use crate::api::{mctx_t, mtcp_conf, mtcp_context};
use core::ffi::c_int;
use mtcp_api::{Config, Context, EpollEvent, Error, Fd, Mtcp};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// What `mtcp_init` started, and what `mtcp_setconf` asked for.
#[derive(Default)]
pub(crate) struct Global {
    /// The running stacks and the configuration they run with.
    pub running: Option<(Mtcp, Config)>,
    /// Fields given to `mtcp_setconf` (0: not given), applied at the next `mtcp_init`.
    pub overrides: mtcp_conf,
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

/// The global state, created on first use; a poisoned lock is taken as it is (every
/// update of it is a single assignment).
pub(crate) fn global() -> MutexGuard<'static, Option<Global>> {
    GLOBAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The context behind an `mctx_t`: C sees only its first field.
#[repr(C)]
pub(crate) struct Handle {
    /// `struct mtcp_context { int cpu; }`, readable from C.
    pub c: mtcp_context,
    /// The core's application side.
    pub ctx: Context,
    /// Room for `mtcp_epoll_wait`'s events before they are copied out (reused).
    pub events: Vec<EpollEvent>,
    /// Registrations an epoll instance may hold at least (the configuration's
    /// `max_concurrency`): `epoll_create`'s size is only a hint in mTCP and Linux.
    pub max_concurrency: usize,
    /// What `mtcp_init_rss` was given: (source base, count, destination, port).
    pub rss: Option<(u32, u32, u32, u32)>,
}

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() = e }
}

/// The `errno` value of an `mtcp_api` error (Linux numbering), as the C functions set it.
pub fn errno_of(e: Error) -> c_int {
    e.errno()
}

/// Runs one entry point: `Ok(v)` returns `v`; `Err(errno)` sets errno and returns `fail`; a
/// panic (a bug) sets `EIO` and returns `fail` instead of unwinding into C.
pub(crate) fn ffi<T>(fail: T, f: impl FnOnce() -> Result<T, c_int>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e);
            fail
        }
        Err(_) => {
            set_errno(libc::EIO);
            fail
        }
    }
}

/// The handle behind `mctx`, or `EINVAL` (as mTCP's `GetMTCPManager`).
///
/// # Safety
/// `mctx` is null or was returned by `mtcp_create_context` and not destroyed, and no other
/// thread uses it during the call.
pub(crate) unsafe fn handle<'a>(mctx: mctx_t) -> Result<&'a mut Handle, c_int> {
    // SAFETY: a non-null mctx points to the `c` field of a live Handle (the caller's
    // contract), which is its first field in a repr(C) struct, so the cast gives the Handle;
    // the caller guarantees exclusive use for the call.
    unsafe { mctx.cast::<Handle>().as_mut() }.ok_or(libc::EINVAL)
}

/// A descriptor from C: negative ones are `EBADF`.
pub(crate) fn fd(sockid: c_int) -> Result<Fd, c_int> {
    Fd::try_from(sockid).map_err(|_| libc::EBADF)
}

/// A descriptor to C (`EMFILE` if it does not fit an `int`, which the limits prevent).
pub(crate) fn to_c(fd: Fd) -> Result<c_int, c_int> {
    c_int::try_from(fd).map_err(|_| libc::EMFILE)
}

/// `mtcp_api` errors as errno.
pub(crate) fn e(err: Error) -> c_int {
    errno_of(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_minus_one_and_errno() {
        let r = ffi(-1, || Err::<c_int, _>(e(Error::WouldBlock)));
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN)
        );
        let r = ffi(-1, || Err::<c_int, _>(e(Error::BadDescriptor)));
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(ffi(-1, || Ok(7)), 7);
    }

    #[test]
    fn a_panic_is_eio_not_an_unwind() {
        let r = ffi(-1, || -> Result<c_int, c_int> { panic!("bug") });
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EIO)
        );
    }

    #[test]
    fn descriptors_and_errno_values() {
        assert_eq!(fd(-1), Err(libc::EBADF));
        assert_eq!(fd(3), Ok(3));
        assert_eq!(errno_of(Error::InProgress), libc::EINPROGRESS);
        assert_eq!(errno_of(Error::ConnectionRefused), libc::ECONNREFUSED);
        assert_eq!(errno_of(Error::NotSocket), libc::ENOTSOCK);
    }
}
