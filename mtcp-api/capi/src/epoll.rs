//! `mtcp_epoll.h`: epoll over a context's descriptors, with mTCP's constants and its packed
//! `struct mtcp_epoll_event` (12 bytes, as Linux's `struct epoll_event` on x86-64).
//!
//! cbindgen reads this file alone to write `include/mtcp_epoll.h` (which includes
//! `mtcp_api.h` for `mctx_t`).

use crate::api::mctx_t;
use crate::state::{e, fd, ffi, handle, to_c};
use core::ffi::{c_char, c_int, c_void};
use mtcp_api::{EpollEvent, EpollOp, Events};

/// `mtcp_epoll_ctl`'s operations.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mtcp_epoll_op {
    /// Register a descriptor.
    MTCP_EPOLL_CTL_ADD = 1,
    /// Remove a registration.
    MTCP_EPOLL_CTL_DEL = 2,
    /// Change a registration's events and data.
    MTCP_EPOLL_CTL_MOD = 3,
}

/// Event bits (Linux's values).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mtcp_event_type {
    /// No event.
    MTCP_EPOLLNONE = 0x000,
    /// Readable: data, a pending connection, or end of stream.
    MTCP_EPOLLIN = 0x001,
    /// Urgent data.
    MTCP_EPOLLPRI = 0x002,
    /// Writable, or connected.
    MTCP_EPOLLOUT = 0x004,
    /// Normal data readable.
    MTCP_EPOLLRDNORM = 0x040,
    /// Priority band readable.
    MTCP_EPOLLRDBAND = 0x080,
    /// Normal data writable.
    MTCP_EPOLLWRNORM = 0x100,
    /// Priority band writable.
    MTCP_EPOLLWRBAND = 0x200,
    /// Unused by sockets.
    MTCP_EPOLLMSG = 0x400,
    /// An error is pending (always reported).
    MTCP_EPOLLERR = 0x008,
    /// Hung up (always reported).
    MTCP_EPOLLHUP = 0x010,
    /// The peer closed its side.
    MTCP_EPOLLRDHUP = 0x2000,
    /// Report once, then disable until modified.
    MTCP_EPOLLONESHOT = 1 << 30,
    /// Edge-triggered.
    MTCP_EPOLLET = 1 << 31,
}

/// The user data of a registration (`mtcp_epoll_data_t`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union mtcp_epoll_data {
    /// A pointer.
    pub ptr: *mut c_void,
    /// A descriptor.
    pub sockid: c_int,
    /// 32 bits.
    pub u32: u32,
    /// 64 bits: what is stored and returned (all 8 bytes).
    pub u64: u64,
}

/// `typedef union mtcp_epoll_data mtcp_epoll_data_t`.
pub type mtcp_epoll_data_t = mtcp_epoll_data;

/// One registration's interest, or one reported event: packed, as mTCP declares it.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct mtcp_epoll_event {
    /// `MTCP_EPOLL*` bits.
    pub events: u32,
    /// The registration's data, returned with its events.
    pub data: mtcp_epoll_data_t,
}

/// An epoll instance. `size` must be positive; it is a hint (an instance holds at least
/// the configuration's `max_concurrency` registrations).
///
/// # Safety
/// `mctx` is null or a live context used by no other thread during the call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_epoll_create(mctx: mctx_t, size: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .ok_or(libc::EINVAL)?;
        let ep = h.ctx.epoll_create(size.max(h.max_concurrency)).map_err(e)?;
        to_c(ep)
    })
}

/// An epoll instance; `flags` 0 or `EPOLL_CLOEXEC` (meaningless here), else `EINVAL`.
///
/// # Safety
/// As for `mtcp_epoll_create`.
#[no_mangle]
pub unsafe extern "C" fn mtcp_epoll_create1(mctx: mctx_t, flags: c_int) -> c_int {
    if flags & !libc::EPOLL_CLOEXEC != 0 {
        crate::state::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the same contract.
    unsafe { mtcp_epoll_create(mctx, 1) }
}

/// Adds, modifies or removes `sockid`'s registration in `epid` (`event` may be null for
/// `MTCP_EPOLL_CTL_DEL`; otherwise `EFAULT`). Errors as Linux: `EEXIST`, `ENOENT`,
/// `EBADF`, `EINVAL`.
///
/// # Safety
/// As for `mtcp_epoll_create`; `event` null or valid.
#[no_mangle]
pub unsafe extern "C" fn mtcp_epoll_ctl(
    mctx: mctx_t,
    epid: c_int,
    op: c_int,
    sockid: c_int,
    event: *mut mtcp_epoll_event,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let (ep, s) = (fd(epid)?, fd(sockid)?);
        let op = match op {
            1 => EpollOp::Add,
            2 => EpollOp::Del,
            3 => EpollOp::Mod,
            _ => return Err(libc::EINVAL),
        };
        let (events, data) = if event.is_null() {
            if op != EpollOp::Del {
                return Err(libc::EFAULT);
            }
            (Events::empty(), 0)
        } else {
            // SAFETY: non-null and valid for reads (the caller's contract); packed, so read
            // unaligned; every bit pattern of u32 and of the union's u64 is a value.
            let ev = unsafe { event.read_unaligned() };
            // SAFETY: reading the union's 8 bytes as u64 is always defined (plain bytes).
            (Events::from_bits_truncate(ev.events), unsafe {
                ev.data.u64
            })
        };
        h.ctx.epoll_ctl(ep, op, s, events, data).map_err(e)?;
        Ok(0)
    })
}

/// Waits up to `timeout` ms (negative: forever; 0: do not wait) for events on `epid`; fills
/// at most `maxevents` entries of `events` and returns their count (0 on timeout).
/// `EINVAL` for `maxevents` < 1, `EFAULT` for a null `events`.
///
/// # Safety
/// As for `mtcp_epoll_create`; `events` valid for `maxevents` writes.
#[no_mangle]
pub unsafe extern "C" fn mtcp_epoll_wait(
    mctx: mctx_t,
    epid: c_int,
    events: *mut mtcp_epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let ep = fd(epid)?;
        let max = usize::try_from(maxevents)
            .ok()
            .filter(|&m| m > 0)
            .ok_or(libc::EINVAL)?;
        if events.is_null() {
            return Err(libc::EFAULT);
        }
        if h.events.len() < max {
            h.events.resize(max, EpollEvent::default());
        }
        let n = h
            .ctx
            .epoll_wait(ep, &mut h.events[..max], timeout)
            .map_err(e)?;
        for (i, ev) in h.events[..n].iter().enumerate() {
            let out = mtcp_epoll_event {
                events: ev.events.bits(),
                data: mtcp_epoll_data { u64: ev.data },
            };
            // SAFETY: i < n <= maxevents entries are writable (the caller's contract);
            // packed, so written unaligned.
            unsafe { events.add(i).write_unaligned(out) };
        }
        Ok(c_int::try_from(n).unwrap_or(c_int::MAX))
    })
}

/// Names of the bits of `event`, `"MTCP_EPOLLIN | MTCP_EPOLLOUT"` style (for logs). The
/// string is the calling thread's and stays valid until its next call.
#[no_mangle]
#[allow(non_snake_case)] // mTCP's name
pub extern "C" fn EventToString(event: u32) -> *mut c_char {
    use mtcp_event_type::*;
    const NAMES: [(mtcp_event_type, &str); 13] = [
        (MTCP_EPOLLIN, "MTCP_EPOLLIN"),
        (MTCP_EPOLLPRI, "MTCP_EPOLLPRI"),
        (MTCP_EPOLLOUT, "MTCP_EPOLLOUT"),
        (MTCP_EPOLLRDNORM, "MTCP_EPOLLRDNORM"),
        (MTCP_EPOLLRDBAND, "MTCP_EPOLLRDBAND"),
        (MTCP_EPOLLWRNORM, "MTCP_EPOLLWRNORM"),
        (MTCP_EPOLLWRBAND, "MTCP_EPOLLWRBAND"),
        (MTCP_EPOLLMSG, "MTCP_EPOLLMSG"),
        (MTCP_EPOLLERR, "MTCP_EPOLLERR"),
        (MTCP_EPOLLHUP, "MTCP_EPOLLHUP"),
        (MTCP_EPOLLRDHUP, "MTCP_EPOLLRDHUP"),
        (MTCP_EPOLLONESHOT, "MTCP_EPOLLONESHOT"),
        (MTCP_EPOLLET, "MTCP_EPOLLET"),
    ];
    thread_local! {
        static BUF: core::cell::RefCell<Vec<u8>> = const { core::cell::RefCell::new(Vec::new()) };
    }
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| event & *bit as u32 != 0)
        .map(|(_, name)| *name)
        .collect();
    let text = if names.is_empty() {
        "MTCP_EPOLLNONE".to_string()
    } else {
        names.join(" | ")
    };
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.extend_from_slice(text.as_bytes());
        b.push(0);
        b.as_mut_ptr().cast::<c_char>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_mtcp_epoll_h() {
        assert_eq!(core::mem::size_of::<mtcp_epoll_event>(), 12);
        assert_eq!(core::mem::align_of::<mtcp_epoll_event>(), 1);
        assert_eq!(core::mem::size_of::<mtcp_epoll_data_t>(), 8);
        assert_eq!(core::mem::offset_of!(mtcp_epoll_event, data), 4);
        assert_eq!(
            mtcp_event_type::MTCP_EPOLLET as u32,
            Events::ET.bits(),
            "same values as mtcp-api"
        );
        assert_eq!(
            mtcp_event_type::MTCP_EPOLLRDHUP as u32,
            Events::RDHUP.bits()
        );
        assert_eq!(mtcp_epoll_op::MTCP_EPOLL_CTL_MOD as i32, 3);
    }

    #[test]
    fn bad_arguments_fail_without_a_context() {
        // SAFETY: a null context is rejected before anything is dereferenced.
        let r = unsafe { mtcp_epoll_wait(core::ptr::null_mut(), 0, core::ptr::null_mut(), 1, 0) };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINVAL)
        );
        // SAFETY: as above.
        let r = unsafe { mtcp_epoll_create1(core::ptr::null_mut(), 0x7) };
        assert_eq!(r, -1);
    }

    #[test]
    fn event_names() {
        let s = |e| {
            // SAFETY: EventToString returns a NUL-terminated string valid until the next call.
            unsafe { std::ffi::CStr::from_ptr(EventToString(e)) }
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(s(0x5), "MTCP_EPOLLIN | MTCP_EPOLLOUT");
        assert_eq!(s(0), "MTCP_EPOLLNONE");
        assert_eq!(s(1 << 31), "MTCP_EPOLLET");
    }
}
