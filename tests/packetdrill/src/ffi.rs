//! The C ABI: `struct packetdrill_interface`, `packetdrill_interface_init`, and one
//! `extern "C"` function per slot. Every function turns C pointers into Rust values, runs
//! the call under `catch_unwind`, and returns -1 with `errno` set on failure (`EIO` for a
//! panic, which never crosses into C).

use core::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use std::ffi::CStr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{
    epoll_event, iovec, loff_t, msghdr, nfds_t, pollfd, size_t, sockaddr, sockaddr_in, socklen_t,
    ssize_t, timeval, useconds_t,
};

use crate::flags;
use crate::shared::Shared;
use crate::stack::{Attempt, Sys};

/// How far `netdev_receive` moves the clock, at most, waiting for the stack to send.
pub const RECEIVE_HORIZON_US: u64 = 600_000_000;

/// packetdrill's interface for a stack in a shared library. Must match, field for field,
/// `struct packetdrill_interface` in google/packetdrill's
/// `gtests/net/packetdrill/packetdrill.h` (the version with the `epoll_*` and `splice`
/// slots; a packetdrill whose header lacks them would be overrun).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct packetdrill_interface {
    /// Passed as the first argument of every function.
    pub userdata: *mut c_void,
    /// Releases `userdata` (packetdrill calls it last).
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
    /// `socket(2)`.
    pub socket: Option<unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int) -> c_int>,
    /// `bind(2)`.
    pub bind: Option<unsafe extern "C" fn(*mut c_void, c_int, *const sockaddr, socklen_t) -> c_int>,
    /// `listen(2)`.
    pub listen: Option<unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int>,
    /// `accept(2)`.
    pub accept:
        Option<unsafe extern "C" fn(*mut c_void, c_int, *mut sockaddr, *mut socklen_t) -> c_int>,
    /// `connect(2)`.
    pub connect:
        Option<unsafe extern "C" fn(*mut c_void, c_int, *const sockaddr, socklen_t) -> c_int>,
    /// `read(2)`.
    pub read: Option<unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t) -> ssize_t>,
    /// `readv(2)`.
    pub readv: Option<unsafe extern "C" fn(*mut c_void, c_int, *const iovec, c_int) -> ssize_t>,
    /// `recv(2)`.
    pub recv:
        Option<unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t, c_int) -> ssize_t>,
    /// `recvfrom(2)`.
    pub recvfrom: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            *mut c_void,
            size_t,
            c_int,
            *mut sockaddr,
            *mut socklen_t,
        ) -> ssize_t,
    >,
    /// `recvmsg(2)`.
    pub recvmsg: Option<unsafe extern "C" fn(*mut c_void, c_int, *mut msghdr, c_int) -> ssize_t>,
    /// `write(2)`.
    pub write: Option<unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t) -> ssize_t>,
    /// `writev(2)`.
    pub writev: Option<unsafe extern "C" fn(*mut c_void, c_int, *const iovec, c_int) -> ssize_t>,
    /// `send(2)`.
    pub send:
        Option<unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t, c_int) -> ssize_t>,
    /// `sendto(2)`.
    pub sendto: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            *const c_void,
            size_t,
            c_int,
            *const sockaddr,
            socklen_t,
        ) -> ssize_t,
    >,
    /// `sendmsg(2)`.
    pub sendmsg: Option<unsafe extern "C" fn(*mut c_void, c_int, *const msghdr, c_int) -> ssize_t>,
    /// `fcntl(2)` (C-variadic: implemented in `shim.c`).
    pub fcntl: Option<unsafe extern "C" fn(*mut c_void, c_int, c_int, ...) -> c_int>,
    /// `ioctl(2)` (C-variadic: implemented in `shim.c`).
    pub ioctl: Option<unsafe extern "C" fn(*mut c_void, c_int, c_ulong, ...) -> c_int>,
    /// `close(2)`.
    pub close: Option<unsafe extern "C" fn(*mut c_void, c_int) -> c_int>,
    /// `shutdown(2)`.
    pub shutdown: Option<unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int>,
    /// `getsockopt(2)`.
    pub getsockopt: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            c_int,
            c_int,
            *mut c_void,
            *mut socklen_t,
        ) -> c_int,
    >,
    /// `setsockopt(2)`.
    pub setsockopt: Option<
        unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *const c_void, socklen_t) -> c_int,
    >,
    /// `poll(2)`.
    pub poll: Option<unsafe extern "C" fn(*mut c_void, *mut pollfd, nfds_t, c_int) -> c_int>,
    /// Hands an IP packet (no link-layer header) to the stack: 0, or -1.
    pub netdev_send: Option<unsafe extern "C" fn(*mut c_void, *const c_void, size_t) -> c_int>,
    /// The next IP packet the stack sends: bytes into `buf` (room: `*count`, then the length),
    /// and its send time in `*time_usecs`: 0, or -1.
    pub netdev_receive:
        Option<unsafe extern "C" fn(*mut c_void, *mut c_void, *mut size_t, *mut i64) -> c_int>,
    /// `usleep(3)`.
    pub usleep: Option<unsafe extern "C" fn(*mut c_void, useconds_t) -> c_int>,
    /// `gettimeofday(2)`.
    pub gettimeofday: Option<unsafe extern "C" fn(*mut c_void, *mut timeval, *mut c_void) -> c_int>,
    /// `epoll_create(2)`.
    pub epoll_create: Option<unsafe extern "C" fn(*mut c_void, c_int) -> c_int>,
    /// `epoll_ctl(2)`.
    pub epoll_ctl:
        Option<unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *mut epoll_event) -> c_int>,
    /// `epoll_wait(2)`.
    pub epoll_wait:
        Option<unsafe extern "C" fn(*mut c_void, c_int, *mut epoll_event, c_int, c_int) -> c_int>,
    /// `pipe(2)`.
    pub pipe: Option<unsafe extern "C" fn(*mut c_void, *mut c_int) -> c_int>,
    /// `splice(2)`.
    pub splice: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            *mut loff_t,
            c_int,
            *mut loff_t,
            size_t,
            c_uint,
        ) -> c_int,
    >,
}

extern "C" {
    // shim.c: read the optional argument, then call mtcp_pd_fcntl_fixed/mtcp_pd_ioctl_fixed.
    fn mtcp_pd_fcntl(userdata: *mut c_void, fd: c_int, cmd: c_int, ...) -> c_int;
    fn mtcp_pd_ioctl(userdata: *mut c_void, fd: c_int, request: c_ulong, ...) -> c_int;
}

/// Fills `ifc` with this library's functions and a new stack configured by `flags` (see
/// the `flags` module; `NULL` is no flags). Called by packetdrill once, after `dlopen`.
///
/// # Safety
/// `flags` is null or a NUL-terminated string; `ifc` is null or valid for writes of one
/// `struct packetdrill_interface`.
#[no_mangle]
pub unsafe extern "C" fn packetdrill_interface_init(
    flags: *const c_char,
    ifc: *mut packetdrill_interface,
) {
    let filled = catch_unwind(AssertUnwindSafe(|| {
        if ifc.is_null() {
            return;
        }
        let text = if flags.is_null() {
            String::new()
        } else {
            // SAFETY: non-null and NUL-terminated (the caller's contract).
            unsafe { CStr::from_ptr(flags) }
                .to_string_lossy()
                .into_owned()
        };
        let (settings, warnings) = flags::parse(&text);
        for w in warnings {
            eprintln!("mtcp_packetdrill: {w}");
        }
        let shared = Box::into_raw(Box::new(Shared::new(settings)));
        let table = packetdrill_interface {
            userdata: shared.cast(),
            free: Some(pd_free),
            socket: Some(pd_socket),
            bind: Some(pd_bind),
            listen: Some(pd_listen),
            accept: Some(pd_accept),
            connect: Some(pd_connect),
            read: Some(pd_read),
            readv: Some(pd_readv),
            recv: Some(pd_recv),
            recvfrom: Some(pd_recvfrom),
            recvmsg: Some(pd_recvmsg),
            write: Some(pd_write),
            writev: Some(pd_writev),
            send: Some(pd_send),
            sendto: Some(pd_sendto),
            sendmsg: Some(pd_sendmsg),
            fcntl: Some(mtcp_pd_fcntl),
            ioctl: Some(mtcp_pd_ioctl),
            close: Some(pd_close),
            shutdown: Some(pd_shutdown),
            getsockopt: Some(pd_getsockopt),
            setsockopt: Some(pd_setsockopt),
            poll: Some(pd_poll),
            netdev_send: Some(pd_netdev_send),
            netdev_receive: Some(pd_netdev_receive),
            usleep: Some(pd_usleep),
            gettimeofday: Some(pd_gettimeofday),
            epoll_create: Some(pd_epoll_create),
            epoll_ctl: Some(pd_epoll_ctl),
            epoll_wait: Some(pd_epoll_wait),
            pipe: Some(pd_pipe),
            splice: Some(pd_splice),
        };
        // SAFETY: non-null and valid for one write of the struct (the caller's contract).
        unsafe { ifc.write(table) };
    }));
    if filled.is_err() {
        eprintln!("mtcp_packetdrill: packetdrill_interface_init failed");
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Sets the calling thread's `errno`.
fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() = e }
}

/// Runs one entry point: `Ok(v)` returns `v`; `Err(errno)` sets errno and returns `fail`; a
/// panic (a bug) sets `EIO` and returns `fail` instead of unwinding into C.
fn ffi<T>(fail: T, f: impl FnOnce() -> Sys<T>) -> T {
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

/// The stack behind `userdata`.
///
/// # Safety
/// `userdata` is null or came from `packetdrill_interface_init` and was not freed.
unsafe fn shared<'a>(userdata: *mut c_void) -> Sys<&'a Shared> {
    // SAFETY: non-null userdata is a live Box<Shared> (the caller's contract); Shared is Sync.
    unsafe { userdata.cast::<Shared>().as_ref() }.ok_or(libc::EINVAL)
}

/// `len` bytes at `p` (`EFAULT` for a null pointer with a non-zero length).
///
/// # Safety
/// A non-null `p` is valid for reads of `len` bytes for `'a`.
unsafe fn bytes<'a>(p: *const c_void, len: usize) -> Sys<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: non-null and valid for `len` bytes (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// `len` writable bytes at `p` (`EFAULT` for a null pointer with a non-zero length).
///
/// # Safety
/// A non-null `p` is valid for writes of `len` bytes for `'a`, and nothing else uses them.
unsafe fn bytes_mut<'a>(p: *mut c_void, len: usize) -> Sys<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: non-null, valid for writes of `len` bytes and unaliased (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// An IPv4 socket address from C.
///
/// # Safety
/// A non-null `addr` is valid for reads of `len` bytes.
unsafe fn sockaddr_from(addr: *const sockaddr, len: socklen_t) -> Sys<SocketAddrV4> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < size_of::<sockaddr_in>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: valid for reads of a sockaddr_in's bytes (checked above; caller's contract);
    // read_unaligned makes no alignment assumption.
    let sin = unsafe { addr.cast::<sockaddr_in>().read_unaligned() };
    if c_int::from(sin.sin_family) != libc::AF_INET {
        return Err(libc::EAFNOSUPPORT);
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

/// Writes `a` to a C socket address buffer, as `accept` and `recvfrom` do (nothing if `addr`
/// or `len` is null; truncated to `*len`; `*len` set to the full size).
///
/// # Safety
/// Non-null `len` is valid for reads and writes; non-null `addr` for writes of `*len` bytes.
unsafe fn sockaddr_to(addr: *mut sockaddr, len: *mut socklen_t, a: SocketAddrV4) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let sin = sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let full = size_of::<sockaddr_in>();
    // SAFETY: len is valid (the caller's contract).
    let room = unsafe { *len } as usize;
    // SAFETY: sin is a plain struct of `full` bytes; addr is valid for `room` bytes and does
    // not overlap our local; we copy at most `room`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&raw const sin).cast::<u8>(),
            addr.cast::<u8>(),
            room.min(full),
        );
        *len = full as socklen_t;
    }
}

/// The buffers of an iovec array.
///
/// # Safety
/// A non-null `iov` points to `n` iovecs, each valid for its length.
unsafe fn iovecs<'a>(iov: *const iovec, n: c_int) -> Sys<&'a [iovec]> {
    let n = usize::try_from(n).map_err(|_| libc::EINVAL)?;
    if n > 1024 {
        return Err(libc::EINVAL);
    }
    if n == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: n iovecs at iov (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts(iov, n) })
}

/// Gathers the bytes of `iov`.
///
/// # Safety
/// Each iovec is valid for reads of its length.
unsafe fn gather(iov: &[iovec]) -> Sys<Vec<u8>> {
    let mut v = Vec::new();
    for i in iov {
        // SAFETY: the iovec is valid for its length (the caller's contract).
        v.extend_from_slice(unsafe { bytes(i.iov_base, i.iov_len) }?);
    }
    Ok(v)
}

/// Scatters `data` over `iov`.
///
/// # Safety
/// Each iovec is valid for writes of its length and unaliased.
unsafe fn scatter(iov: &[iovec], mut data: &[u8]) -> Sys<()> {
    for i in iov {
        if data.is_empty() {
            break;
        }
        // SAFETY: the iovec is valid for writes of its length (the caller's contract).
        let dst = unsafe { bytes_mut(i.iov_base, i.iov_len) }?;
        let n = dst.len().min(data.len());
        dst[..n].copy_from_slice(&data[..n]);
        data = &data[n..];
    }
    Ok(())
}

fn total_len(iov: &[iovec]) -> usize {
    iov.iter().fold(0usize, |a, i| a.saturating_add(i.iov_len))
}

const RECV_FLAGS: c_int = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
const SEND_FLAGS: c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

fn do_read(s: &Shared, fd: c_int, buf: &mut [u8], flags: c_int) -> Sys<usize> {
    if flags & !RECV_FLAGS != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    let peek = flags & libc::MSG_PEEK != 0;
    let dontwait = flags & libc::MSG_DONTWAIT != 0;
    s.block_on(|st| st.read(fd, buf, peek, dontwait))
}

fn do_write(s: &Shared, fd: c_int, data: &[u8], flags: c_int) -> Sys<usize> {
    if flags & !SEND_FLAGS != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    let dontwait = flags & libc::MSG_DONTWAIT != 0;
    let mut done = 0;
    s.block_on(|st| st.write(fd, data, &mut done, dontwait))
}

fn to_ssize(n: usize) -> Sys<ssize_t> {
    ssize_t::try_from(n).map_err(|_| libc::EOVERFLOW)
}

// ---------------------------------------------------------------------------------------
// The slots
// ---------------------------------------------------------------------------------------

unsafe extern "C" fn pd_free(userdata: *mut c_void) {
    let _ = catch_unwind(|| {
        if !userdata.is_null() {
            // SAFETY: userdata came from Box::into_raw in packetdrill_interface_init and is
            // freed once, last (packetdrill's contract).
            drop(unsafe { Box::from_raw(userdata.cast::<Shared>()) });
        }
    });
}

unsafe extern "C" fn pd_socket(ud: *mut c_void, domain: c_int, ty: c_int, proto: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init (packetdrill's contract), as in every slot below.
        unsafe { shared(ud) }?.call(|st| st.socket(domain, ty, proto))
    })
}

unsafe extern "C" fn pd_bind(
    ud: *mut c_void,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init; addr valid for len bytes (the caller's contract).
        let (s, a) = unsafe { (shared(ud)?, sockaddr_from(addr, len)?) };
        s.call(|st| st.bind(fd, a)).map(|()| 0)
    })
}

unsafe extern "C" fn pd_listen(ud: *mut c_void, fd: c_int, backlog: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        unsafe { shared(ud) }?
            .call(|st| st.listen(fd, backlog))
            .map(|()| 0)
    })
}

unsafe extern "C" fn pd_accept(
    ud: *mut c_void,
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        let s = unsafe { shared(ud) }?;
        let (nfd, peer) = s.block_on(|st| st.accept(fd))?;
        // SAFETY: addr and len are null or valid (the caller's contract).
        unsafe { sockaddr_to(addr, len, peer) };
        Ok(nfd)
    })
}

unsafe extern "C" fn pd_connect(
    ud: *mut c_void,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init; addr valid for len bytes (the caller's contract).
        let (s, a) = unsafe { (shared(ud)?, sockaddr_from(addr, len)?) };
        let mut first = true;
        s.block_on(|st| {
            let r = st.connect(fd, a, first);
            first = false;
            r
        })
        .map(|()| 0)
    })
}

unsafe extern "C" fn pd_read(ud: *mut c_void, fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; buf valid for n bytes (the caller's contract).
        let (s, b) = unsafe { (shared(ud)?, bytes_mut(buf, n)?) };
        to_ssize(do_read(s, fd, b, 0)?)
    })
}

unsafe extern "C" fn pd_recv(
    ud: *mut c_void,
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; buf valid for n bytes (the caller's contract).
        let (s, b) = unsafe { (shared(ud)?, bytes_mut(buf, n)?) };
        to_ssize(do_read(s, fd, b, flags)?)
    })
}

unsafe extern "C" fn pd_recvfrom(
    ud: *mut c_void,
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; buf valid for n bytes (the caller's contract).
        let (s, b) = unsafe { (shared(ud)?, bytes_mut(buf, n)?) };
        let got = do_read(s, fd, b, flags)?;
        let peer = s.call(|st| st.peer(fd)).ok();
        if let Some(peer) = peer {
            // SAFETY: addr and len are null or valid (the caller's contract).
            unsafe { sockaddr_to(addr, len, peer) };
        }
        to_ssize(got)
    })
}

unsafe extern "C" fn pd_readv(ud: *mut c_void, fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; iov holds n valid iovecs (the caller's contract).
        let (s, iov) = unsafe { (shared(ud)?, iovecs(iov, n)?) };
        let mut tmp = vec![0u8; total_len(iov).min(1 << 24)];
        let got = do_read(s, fd, &mut tmp, 0)?;
        // SAFETY: each iovec is valid for writes (the caller's contract).
        unsafe { scatter(iov, &tmp[..got]) }?;
        to_ssize(got)
    })
}

unsafe extern "C" fn pd_recvmsg(
    ud: *mut c_void,
    fd: c_int,
    msg: *mut msghdr,
    flags: c_int,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; msg is null or valid (the caller's contract).
        let (s, m) = unsafe { (shared(ud)?, msg.as_mut().ok_or(libc::EFAULT)?) };
        let n = c_int::try_from(m.msg_iovlen).map_err(|_| libc::EINVAL)?;
        // SAFETY: msg_iov holds msg_iovlen valid iovecs (the caller's contract).
        let iov = unsafe { iovecs(m.msg_iov, n) }?;
        let mut tmp = vec![0u8; total_len(iov).min(1 << 24)];
        let got = do_read(s, fd, &mut tmp, flags)?;
        // SAFETY: each iovec is valid for writes (the caller's contract).
        unsafe { scatter(iov, &tmp[..got]) }?;
        if let Ok(peer) = s.call(|st| st.peer(fd)) {
            // SAFETY: msg_name is null or valid for msg_namelen bytes (the caller's contract).
            unsafe { sockaddr_to(m.msg_name.cast(), &raw mut m.msg_namelen, peer) };
        }
        m.msg_controllen = 0;
        m.msg_flags = 0;
        to_ssize(got)
    })
}

unsafe extern "C" fn pd_write(
    ud: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; buf valid for n bytes (the caller's contract).
        let (s, b) = unsafe { (shared(ud)?, bytes(buf, n)?) };
        to_ssize(do_write(s, fd, b, 0)?)
    })
}

unsafe extern "C" fn pd_send(
    ud: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; buf valid for n bytes (the caller's contract).
        let (s, b) = unsafe { (shared(ud)?, bytes(buf, n)?) };
        to_ssize(do_write(s, fd, b, flags)?)
    })
}

unsafe extern "C" fn pd_sendto(
    ud: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    _len: socklen_t,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; buf valid for n bytes (the caller's contract).
        let (s, b) = unsafe { (shared(ud)?, bytes(buf, n)?) };
        if !addr.is_null() {
            // A connected stream socket takes no destination (Linux: EISCONN).
            return Err(libc::EISCONN);
        }
        to_ssize(do_write(s, fd, b, flags)?)
    })
}

unsafe extern "C" fn pd_writev(ud: *mut c_void, fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; iov holds n iovecs valid for reads (the caller's contract).
        let (s, data) = unsafe { (shared(ud)?, gather(iovecs(iov, n)?)?) };
        to_ssize(do_write(s, fd, &data, 0)?)
    })
}

unsafe extern "C" fn pd_sendmsg(
    ud: *mut c_void,
    fd: c_int,
    msg: *const msghdr,
    flags: c_int,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: userdata from init; msg is null or valid (the caller's contract).
        let (s, m) = unsafe { (shared(ud)?, msg.as_ref().ok_or(libc::EFAULT)?) };
        if !m.msg_name.is_null() {
            return Err(libc::EISCONN);
        }
        if m.msg_controllen != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        let n = c_int::try_from(m.msg_iovlen).map_err(|_| libc::EINVAL)?;
        // SAFETY: msg_iov holds msg_iovlen iovecs valid for reads (the caller's contract).
        let data = unsafe { gather(iovecs(m.msg_iov, n)?) }?;
        to_ssize(do_write(s, fd, &data, flags)?)
    })
}

/// `fcntl` after `shim.c` read its optional argument (0 when the command takes none).
///
/// # Safety
/// `userdata` came from `packetdrill_interface_init`.
#[no_mangle]
pub unsafe extern "C" fn mtcp_pd_fcntl_fixed(
    ud: *mut c_void,
    fd: c_int,
    cmd: c_int,
    arg: c_int,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init (the caller's contract).
        unsafe { shared(ud) }?.call(|st| st.fcntl(fd, cmd, arg))
    })
}

/// `ioctl` after `shim.c` read its optional argument (null when the request takes none).
///
/// # Safety
/// `userdata` came from `packetdrill_interface_init`; `argp` is null or points to an `int`.
#[no_mangle]
pub unsafe extern "C" fn mtcp_pd_ioctl_fixed(
    ud: *mut c_void,
    fd: c_int,
    request: c_ulong,
    argp: *mut c_void,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init (the caller's contract).
        let s = unsafe { shared(ud) }?;
        if argp.is_null() {
            return s.call(|st| {
                // Known descriptor, request without argument: not one we offer.
                st.nonblocking(fd).and(Err(libc::ENOTTY))
            });
        }
        // SAFETY: argp points to a readable and writable int (the caller's contract);
        // read_unaligned/write_unaligned make no alignment assumption.
        let mut v = unsafe { argp.cast::<c_int>().read_unaligned() };
        s.call(|st| st.ioctl(fd, request, &mut v))?;
        // SAFETY: as above.
        unsafe { argp.cast::<c_int>().write_unaligned(v) };
        Ok(0)
    })
}

unsafe extern "C" fn pd_close(ud: *mut c_void, fd: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        unsafe { shared(ud) }?.call(|st| st.close(fd)).map(|()| 0)
    })
}

unsafe extern "C" fn pd_shutdown(ud: *mut c_void, fd: c_int, how: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        unsafe { shared(ud) }?
            .call(|st| st.shutdown(fd, how))
            .map(|()| 0)
    })
}

unsafe extern "C" fn pd_getsockopt(
    ud: *mut c_void,
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        let s = unsafe { shared(ud) }?;
        if len.is_null() {
            return Err(libc::EFAULT);
        }
        let v = s.call(|st| st.getsockopt(fd, level, name))?;
        // SAFETY: len is valid for reads and writes (the caller's contract).
        let room = unsafe { *len } as usize;
        let n = room.min(v.len());
        // SAFETY: val is valid for writes of *len bytes (the caller's contract).
        let dst = unsafe { bytes_mut(val, n) }?;
        dst.copy_from_slice(&v[..n]);
        // SAFETY: as above.
        unsafe { *len = n as socklen_t };
        Ok(0)
    })
}

unsafe extern "C" fn pd_setsockopt(
    ud: *mut c_void,
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init; val valid for len bytes (the caller's contract).
        let (s, v) = unsafe { (shared(ud)?, bytes(val, len as usize)?) };
        s.call(|st| st.setsockopt(fd, level, name, v)).map(|()| 0)
    })
}

unsafe extern "C" fn pd_poll(
    ud: *mut c_void,
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        let s = unsafe { shared(ud) }?;
        let n = usize::try_from(n).map_err(|_| libc::EINVAL)?;
        if n > 4096 {
            return Err(libc::EINVAL);
        }
        let fds: &mut [pollfd] = if n == 0 {
            &mut []
        } else if fds.is_null() {
            return Err(libc::EFAULT);
        } else {
            // SAFETY: n pollfds at fds, valid for reads and writes (the caller's contract).
            unsafe { std::slice::from_raw_parts_mut(fds, n) }
        };
        let always = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        let mut deadline = None;
        s.block_on(|st| {
            let mut ready = 0;
            for p in fds.iter_mut() {
                p.revents = if p.fd < 0 {
                    0
                } else {
                    st.poll_events(p.fd) & (p.events | always)
                };
                ready += c_int::from(p.revents != 0);
            }
            let until = *deadline.get_or_insert_with(|| {
                u64::try_from(timeout)
                    .ok()
                    .map(|ms| st.now.saturating_add(ms.saturating_mul(1000)))
            });
            match until {
                _ if ready > 0 => Attempt::Done(Ok(ready)),
                Some(t) if st.now >= t => Attempt::Done(Ok(0)),
                u => Attempt::Pending(u),
            }
        })
    })
}

unsafe extern "C" fn pd_netdev_send(ud: *mut c_void, buf: *const c_void, n: size_t) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init; buf valid for n bytes (the caller's contract).
        let (s, b) = unsafe { (shared(ud)?, bytes(buf, n)?) };
        s.call(|st| st.inject(b)).map(|()| 0)
    })
}

unsafe extern "C" fn pd_netdev_receive(
    ud: *mut c_void,
    buf: *mut c_void,
    count: *mut size_t,
    time_usecs: *mut i64,
) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        let s = unsafe { shared(ud) }?;
        if count.is_null() || time_usecs.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: count is valid for reads and writes (the caller's contract).
        let room = unsafe { *count };
        let (t, packet) = match s.next_packet(RECEIVE_HORIZON_US) {
            Some(p) => p,
            None => {
                eprintln!(
                    "mtcp_packetdrill: the stack sent nothing within {} s (virtual time)",
                    RECEIVE_HORIZON_US / 1_000_000
                );
                let now = s.lock().stack.now;
                // SAFETY: both valid for writes (the caller's contract).
                unsafe {
                    *count = 0;
                    *time_usecs = now as i64;
                }
                return Ok(0);
            }
        };
        if packet.len() > room {
            return Err(libc::EMSGSIZE);
        }
        // SAFETY: buf is valid for writes of `room` bytes (the caller's contract).
        let dst = unsafe { bytes_mut(buf, packet.len()) }?;
        dst.copy_from_slice(&packet);
        // SAFETY: count and time_usecs are valid for writes (the caller's contract).
        unsafe {
            *count = packet.len();
            *time_usecs = t as i64;
        }
        Ok(0)
    })
}

unsafe extern "C" fn pd_usleep(ud: *mut c_void, us: useconds_t) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        unsafe { shared(ud) }?.sleep(u64::from(us));
        Ok(0)
    })
}

unsafe extern "C" fn pd_gettimeofday(ud: *mut c_void, tv: *mut timeval, _tz: *mut c_void) -> c_int {
    ffi(-1, || {
        // SAFETY: userdata from init.
        let t = unsafe { shared(ud) }?.clock();
        // SAFETY: tv is null or valid for writes (the caller's contract).
        if let Some(tv) = unsafe { tv.as_mut() } {
            tv.tv_sec = (t / 1_000_000) as libc::time_t;
            tv.tv_usec = (t % 1_000_000) as libc::suseconds_t;
        }
        Ok(0)
    })
}

unsafe extern "C" fn pd_epoll_create(_ud: *mut c_void, _size: c_int) -> c_int {
    ffi(-1, || Err::<c_int, _>(libc::ENOSYS))
}

unsafe extern "C" fn pd_epoll_ctl(
    _ud: *mut c_void,
    _epfd: c_int,
    _op: c_int,
    _fd: c_int,
    _ev: *mut epoll_event,
) -> c_int {
    ffi(-1, || Err::<c_int, _>(libc::ENOSYS))
}

unsafe extern "C" fn pd_epoll_wait(
    _ud: *mut c_void,
    _epfd: c_int,
    _ev: *mut epoll_event,
    _max: c_int,
    _timeout: c_int,
) -> c_int {
    ffi(-1, || Err::<c_int, _>(libc::ENOSYS))
}

unsafe extern "C" fn pd_pipe(_ud: *mut c_void, _fds: *mut c_int) -> c_int {
    ffi(-1, || Err::<c_int, _>(libc::ENOSYS))
}

unsafe extern "C" fn pd_splice(
    _ud: *mut c_void,
    _fd_in: c_int,
    _off_in: *mut loff_t,
    _fd_out: c_int,
    _off_out: *mut loff_t,
    _len: size_t,
    _flags: c_uint,
) -> c_int {
    ffi(-1, || Err::<c_int, _>(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn the_struct_has_packetdrills_layout() {
        let p = size_of::<*mut c_void>();
        assert_eq!(size_of::<packetdrill_interface>(), 33 * p);
        assert_eq!(offset_of!(packetdrill_interface, free), p);
        assert_eq!(offset_of!(packetdrill_interface, fcntl), 17 * p);
        assert_eq!(offset_of!(packetdrill_interface, netdev_send), 24 * p);
        assert_eq!(offset_of!(packetdrill_interface, gettimeofday), 27 * p);
        assert_eq!(offset_of!(packetdrill_interface, splice), 32 * p);
    }

    #[test]
    fn init_fills_every_slot_and_unsupported_calls_are_enosys() {
        // SAFETY: all-zero bytes are a valid packetdrill_interface (null and None fields).
        let mut ifc: packetdrill_interface = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated string and a valid struct.
        unsafe { packetdrill_interface_init(c"mss=1000".as_ptr(), &mut ifc) };
        let words: [usize; 33] =
            // SAFETY: the struct is 33 pointer-sized words (checked above).
            unsafe { std::mem::transmute(ifc) };
        assert!(words.iter().all(|&w| w != 0), "{words:x?}");
        let pipe = ifc.pipe.unwrap();
        let mut fds = [0 as c_int; 2];
        // SAFETY: userdata from init, a valid array.
        assert_eq!(unsafe { pipe(ifc.userdata, fds.as_mut_ptr()) }, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS)
        );
        // SAFETY: userdata from init, freed once.
        unsafe { ifc.free.unwrap()(ifc.userdata) };
    }
}
