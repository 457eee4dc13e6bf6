//! `mtcp_api.h`: initialisation, contexts and socket calls, with mTCP's prototypes.
//!
//! cbindgen reads this file alone to write `include/mtcp_api.h`: every type and function
//! here is part of that header.

use crate::state::{e, fd, ffi, global, handle, to_c, Global, Handle};
use core::ffi::{c_char, c_int, c_void};
use core::net::{Ipv4Addr, SocketAddrV4};
use libc::{in_addr_t, iovec, size_t, sockaddr, socklen_t, ssize_t};
use mtcp_api::{Config, Error, Fd, Shutdown, SockOpt, SockOptName};
use std::ffi::CStr;

/// mTCP's socket kinds (`enum socket_type`); `MTCP_SOCK_STREAM` equals `SOCK_STREAM`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum socket_type {
    /// A free descriptor.
    MTCP_SOCK_UNUSED,
    /// A TCP socket.
    MTCP_SOCK_STREAM,
    /// A proxy socket (unused).
    MTCP_SOCK_PROXY,
    /// A listening socket.
    MTCP_SOCK_LISTENER,
    /// An epoll instance.
    MTCP_SOCK_EPOLL,
    /// A pipe end.
    MTCP_SOCK_PIPE,
}

/// The tunables of `mtcp_getconf`/`mtcp_setconf` (mTCP's `struct mtcp_conf`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct mtcp_conf {
    /// Cores (stack threads): `cores`.
    pub num_cores: c_int,
    /// Connections per core: `tcp.max_concurrency`.
    pub max_concurrency: c_int,
    /// Buffers per core: reported as `max_concurrency`, ignored when set.
    pub max_num_buffers: c_int,
    /// Receive buffer per connection, bytes: `tcp.recv_buffer`.
    pub rcvbuf_size: c_int,
    /// Send buffer per connection, bytes: `tcp.send_buffer`.
    pub sndbuf_size: c_int,
    /// TIME-WAIT, milliseconds (mTCP's 1 ms ticks): `tcp.time_wait_ms`.
    pub tcp_timewait: c_int,
    /// Idle timeout, milliseconds (0: none): `tcp.idle_timeout_s`, rounded up to seconds.
    pub tcp_timeout: c_int,
}

/// What C sees of a context: the core it serves.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct mtcp_context {
    /// The core (mTCP's CPU number) given to `mtcp_create_context`.
    pub cpu: c_int,
}

/// A context: one core's application side, used by one thread at a time.
pub type mctx_t = *mut mtcp_context;

/// A signal handler, as `signal(2)` takes one.
pub type mtcp_sighandler_t = Option<unsafe extern "C" fn(c_int)>;

fn clamp_int(v: u64) -> c_int {
    c_int::try_from(v).unwrap_or(c_int::MAX)
}

fn positive(v: c_int) -> Option<u64> {
    u64::try_from(v).ok().filter(|&v| v > 0)
}

/// The mTCP view of a configuration.
fn conf_of(c: &Config) -> mtcp_conf {
    mtcp_conf {
        num_cores: clamp_int(c.cores as u64),
        max_concurrency: clamp_int(c.tcp.max_concurrency as u64),
        max_num_buffers: clamp_int(c.tcp.max_concurrency as u64),
        rcvbuf_size: clamp_int(c.tcp.recv_buffer as u64),
        sndbuf_size: clamp_int(c.tcp.send_buffer as u64),
        tcp_timewait: clamp_int(c.tcp.time_wait_ms),
        tcp_timeout: clamp_int(c.tcp.idle_timeout_s.saturating_mul(1000)),
    }
}

/// Applies the positive fields of `o` to `c`, as mTCP's `mtcp_setconf` does to its own.
fn apply(o: &mtcp_conf, c: &mut Config) {
    if let Some(v) = positive(o.num_cores) {
        c.cores = v as usize;
    }
    if let Some(v) = positive(o.max_concurrency) {
        c.tcp.max_concurrency = v as usize;
    }
    if let Some(v) = positive(o.rcvbuf_size) {
        c.tcp.recv_buffer = v as usize;
    }
    if let Some(v) = positive(o.sndbuf_size) {
        c.tcp.send_buffer = v as usize;
    }
    if let Some(v) = positive(o.tcp_timewait) {
        c.tcp.time_wait_ms = v;
    }
    if let Some(v) = positive(o.tcp_timeout) {
        c.tcp.idle_timeout_s = v.div_ceil(1000);
    }
}

/// Merges `new` into `old`: positive fields replace, except where `new` only repeats
/// `shown` (what `mtcp_getconf` reports now).
fn merge(old: &mut mtcp_conf, new: &mtcp_conf, shown: &mtcp_conf) {
    let pick = |o: &mut c_int, n: c_int, s: c_int| {
        if n > 0 && n != s {
            *o = n;
        }
    };
    pick(&mut old.num_cores, new.num_cores, shown.num_cores);
    pick(
        &mut old.max_concurrency,
        new.max_concurrency,
        shown.max_concurrency,
    );
    pick(
        &mut old.max_num_buffers,
        new.max_num_buffers,
        shown.max_num_buffers,
    );
    pick(&mut old.rcvbuf_size, new.rcvbuf_size, shown.rcvbuf_size);
    pick(&mut old.sndbuf_size, new.sndbuf_size, shown.sndbuf_size);
    pick(&mut old.tcp_timewait, new.tcp_timewait, shown.tcp_timewait);
    pick(&mut old.tcp_timeout, new.tcp_timeout, shown.tcp_timeout);
}

/// What `mtcp_getconf` reports: the running configuration (else the defaults) with the
/// fields `mtcp_setconf` changed.
fn shown(g: &Global) -> mtcp_conf {
    let mut c = match &g.running {
        Some((_, config)) => conf_of(config),
        None => conf_of(&Config::default()),
    };
    merge(&mut c, &g.overrides, &mtcp_conf::default());
    c
}

/// Reads the TOML configuration `config_file`, applies what `mtcp_setconf` set, and starts
/// one stack thread per core. 0, or -1 with errno: `EINVAL` (no file name, a bad
/// configuration: the reason is printed on stderr), `EEXIST` (already running), `EIO` (a
/// port or thread could not be started; printed on stderr).
///
/// # Safety
/// `config_file` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mtcp_init(config_file: *const c_char) -> c_int {
    ffi(-1, || {
        if config_file.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: non-null and NUL-terminated (the caller's contract).
        let path = unsafe { CStr::from_ptr(config_file) };
        let path = path.to_str().map_err(|_| libc::EINVAL)?;
        let mut g = global();
        let g = g.get_or_insert_with(Global::default);
        if g.running.is_some() {
            return Err(libc::EEXIST);
        }
        let mut config = Config::from_file(path).map_err(|err| {
            eprintln!("mtcp_init: {err}");
            libc::EINVAL
        })?;
        apply(&g.overrides, &mut config);
        let mtcp = mtcp_api::init(config.clone()).map_err(|err| {
            eprintln!("mtcp_init: {err}");
            match err {
                mtcp_api::InitError::Config(_) | mtcp_api::InitError::Endpoint(_) => libc::EINVAL,
                _ => libc::EIO,
            }
        })?;
        g.running = Some((mtcp, config));
        Ok(0)
    })
}

/// Stops every stack thread (open connections are closed gracefully first) and waits for
/// them. Contexts not destroyed yet fail their calls from then on (`ESHUTDOWN`).
#[no_mangle]
pub extern "C" fn mtcp_destroy() {
    ffi((), || {
        let running = global().as_mut().and_then(|g| g.running.take());
        if let Some((mtcp, _)) = running {
            for (i, r) in mtcp.destroy().into_iter().enumerate() {
                if let Err(err) = r {
                    eprintln!("mtcp_destroy: core {i}: {err}");
                }
            }
        }
        Ok(())
    })
}

/// Fills `conf` with the configuration in force (the running one, else the defaults),
/// with what `mtcp_setconf` set since. -1 with `EINVAL` when `conf` is null.
///
/// # Safety
/// `conf` is null or points to a writable `struct mtcp_conf`.
#[no_mangle]
pub unsafe extern "C" fn mtcp_getconf(conf: *mut mtcp_conf) -> c_int {
    ffi(-1, || {
        let c = shown(global().get_or_insert_with(Global::default));
        // SAFETY: null or valid for writes (the caller's contract).
        let out = unsafe { conf.as_mut() }.ok_or(libc::EINVAL)?;
        *out = c;
        Ok(0)
    })
}

/// Records the fields of `conf` that are positive and differ from what `mtcp_getconf`
/// reports, for the next `mtcp_init` (see the crate docs).
/// -1 with `EINVAL` when `conf` is null.
///
/// # Safety
/// `conf` is null or points to a `struct mtcp_conf`.
#[no_mangle]
pub unsafe extern "C" fn mtcp_setconf(conf: *const mtcp_conf) -> c_int {
    ffi(-1, || {
        // SAFETY: null or valid for reads (the caller's contract).
        let new = unsafe { conf.as_ref() }.ok_or(libc::EINVAL)?;
        let mut g = global();
        let g = g.get_or_insert_with(Global::default);
        let now = shown(g);
        merge(&mut g.overrides, new, &now);
        Ok(0)
    })
}

/// Pins the calling thread to CPU `cpu`. -1 with `EINVAL` for a CPU that does not exist.
#[no_mangle]
pub extern "C" fn mtcp_core_affinitize(cpu: c_int) -> c_int {
    ffi(-1, || {
        let cpu = usize::try_from(cpu).map_err(|_| libc::EINVAL)?;
        psio::sys::affinity::pin_current_thread(cpu).map_err(|_| libc::EINVAL)?;
        Ok(0)
    })
}

/// The context of core `cpu` (once per core per `mtcp_init`). `NULL` with errno: `EPERM`
/// (`mtcp_init` has not run), `EINVAL` (no such core), `EBUSY` (taken already).
#[no_mangle]
pub extern "C" fn mtcp_create_context(cpu: c_int) -> mctx_t {
    ffi(core::ptr::null_mut(), || {
        let core = usize::try_from(cpu).map_err(|_| libc::EINVAL)?;
        let mut g = global();
        let (mtcp, config) = g
            .as_mut()
            .and_then(|g| g.running.as_mut())
            .ok_or(libc::EPERM)?;
        if core >= mtcp.cores() {
            return Err(libc::EINVAL);
        }
        let ctx = mtcp.context(core).ok_or(libc::EBUSY)?;
        let h = Box::new(Handle {
            c: mtcp_context { cpu },
            ctx,
            events: Vec::new(),
            max_concurrency: config.tcp.max_concurrency,
            rss: None,
        });
        Ok(Box::into_raw(h).cast::<mtcp_context>())
    })
}

/// Destroys a context: its descriptors are released (the stack closes its connections).
/// A null `mctx` is ignored.
///
/// # Safety
/// `mctx` is null or was returned by `mtcp_create_context` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mtcp_destroy_context(mctx: mctx_t) {
    ffi((), || {
        if !mctx.is_null() {
            // SAFETY: it came from Box::into_raw of a Handle in mtcp_create_context (whose
            // first field it points to) and is dropped once (the caller's contract).
            drop(unsafe { Box::from_raw(mctx.cast::<Handle>()) });
        }
        Ok(())
    })
}

/// Installs `handler` for `signum` with `signal(2)`; the previous handler, or `SIG_ERR`
/// (errno set by `signal`).
#[no_mangle]
pub extern "C" fn mtcp_register_signal(
    signum: c_int,
    handler: mtcp_sighandler_t,
) -> mtcp_sighandler_t {
    let raw = handler.map_or(libc::SIG_DFL, |f| f as libc::sighandler_t);
    // SAFETY: installing a handler is what the caller asked for; the handler is either
    // SIG_DFL or a function of the right type given by the caller.
    let prev = unsafe { libc::signal(signum, raw) };
    if prev == libc::SIG_DFL {
        return None;
    }
    // SAFETY: `prev` is SIG_IGN, SIG_ERR or a handler function: all non-null values of the
    // size of a function pointer, which C code compares or calls as `signal` would return.
    Some(unsafe { core::mem::transmute::<libc::sighandler_t, unsafe extern "C" fn(c_int)>(prev) })
}

/// A pipe inside the context: `pipeid[0]` the read end, `pipeid[1]` the write end.
///
/// # Safety
/// `mctx` as for every call; `pipeid` is null or points to two writable `int`s.
#[no_mangle]
pub unsafe extern "C" fn mtcp_pipe(mctx: mctx_t, pipeid: *mut c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        if pipeid.is_null() {
            return Err(libc::EFAULT);
        }
        let (r, w) = h.ctx.pipe().map_err(e)?;
        // SAFETY: pipeid points to two writable ints (the caller's contract).
        unsafe {
            *pipeid = to_c(r)?;
            *pipeid.add(1) = to_c(w)?;
        }
        Ok(0)
    })
}

/// Reads an `int` option value.
///
/// # Safety
/// `optval` is valid for `optlen` bytes.
unsafe fn int_opt(optval: *const c_void, optlen: socklen_t) -> Result<c_int, c_int> {
    if optval.is_null() {
        return Err(libc::EFAULT);
    }
    if (optlen as usize) < core::mem::size_of::<c_int>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: at least an int's bytes are readable (checked above; caller's contract).
    Ok(unsafe { optval.cast::<c_int>().read_unaligned() })
}

/// The option named by (`level`, `optname`), if `mtcp_api` has it.
fn opt_name(level: c_int, optname: c_int) -> Option<SockOptName> {
    Some(match (level, optname) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => SockOptName::Error,
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => SockOptName::SendBuffer,
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => SockOptName::RecvBuffer,
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => SockOptName::KeepAlive,
        (libc::SOL_SOCKET, libc::SO_LINGER) => SockOptName::Linger,
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => SockOptName::ReuseAddr,
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => SockOptName::NoDelay,
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => SockOptName::KeepIdle,
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => SockOptName::KeepInterval,
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => SockOptName::KeepCount,
        _ => return None,
    })
}

/// `getsockopt`: `SO_ERROR` (reading clears it), `SO_SNDBUF`, `SO_RCVBUF`, `SO_KEEPALIVE`,
/// `SO_LINGER` (`struct linger`), `SO_REUSEADDR`, `TCP_NODELAY`, `TCP_KEEPIDLE`,
/// `TCP_KEEPINTVL`, `TCP_KEEPCNT`; others `ENOPROTOOPT`. A value longer than `*optlen` is
/// cut, as Linux does.
///
/// # Safety
/// `mctx` as for every call; `optval` valid for `*optlen` bytes, `optlen` valid.
#[no_mangle]
pub unsafe extern "C" fn mtcp_getsockopt(
    mctx: mctx_t,
    sockid: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        if optval.is_null() || optlen.is_null() {
            return Err(libc::EFAULT);
        }
        let name = opt_name(level, optname).ok_or(libc::ENOPROTOOPT)?;
        let flag = |b: bool| c_int::from(b);
        let int = |v: u64| c_int::try_from(v).unwrap_or(c_int::MAX);
        let value = match h.ctx.getsockopt(s, name).map_err(e)? {
            SockOpt::Error(err) => int_bytes(err.map_or(0, Error::errno)),
            SockOpt::NoDelay(b) | SockOpt::KeepAlive(b) | SockOpt::ReuseAddr(b) => {
                int_bytes(flag(b))
            }
            SockOpt::SendBuffer(n) | SockOpt::RecvBuffer(n) => int_bytes(int(n as u64)),
            SockOpt::KeepIdle(v) | SockOpt::KeepInterval(v) | SockOpt::KeepCount(v) => {
                int_bytes(int(u64::from(v)))
            }
            SockOpt::Linger(l) => {
                let lg = libc::linger {
                    l_onoff: flag(l.is_some()),
                    l_linger: int(u64::from(l.unwrap_or(0))),
                };
                let mut v = int_bytes(lg.l_onoff);
                v.extend_from_slice(&lg.l_linger.to_ne_bytes());
                v
            }
            _ => return Err(libc::ENOPROTOOPT),
        };
        // SAFETY: optlen is valid (the caller's contract).
        let room = unsafe { *optlen } as usize;
        let n = room.min(value.len());
        // SAFETY: optval is valid for `room` >= n bytes and does not overlap our Vec.
        unsafe {
            core::ptr::copy_nonoverlapping(value.as_ptr(), optval.cast::<u8>(), n);
            *optlen = n as socklen_t;
        }
        Ok(0)
    })
}

fn int_bytes(v: c_int) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// `setsockopt` for the options `mtcp_getsockopt` reads (`SO_ERROR` is read-only:
/// `ENOPROTOOPT`); other options on a socket are ignored and return 0, as mTCP does.
///
/// # Safety
/// `mctx` as for every call; `optval` valid for `optlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn mtcp_setsockopt(
    mctx: mctx_t,
    sockid: c_int,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        let Some(name) = opt_name(level, optname) else {
            // Unknown options are accepted on sockets (mTCP accepts every option).
            h.ctx.getsockopt(s, SockOptName::ReuseAddr).map_err(e)?;
            return Ok(0);
        };
        let opt = if name == SockOptName::Linger {
            if optval.is_null() {
                return Err(libc::EFAULT);
            }
            if (optlen as usize) < core::mem::size_of::<libc::linger>() {
                return Err(libc::EINVAL);
            }
            // SAFETY: a struct linger's bytes are readable (checked; caller's contract).
            let lg = unsafe { optval.cast::<libc::linger>().read_unaligned() };
            SockOpt::Linger((lg.l_onoff != 0).then_some(lg.l_linger.max(0) as u32))
        } else {
            // SAFETY: optval is valid for optlen bytes (the caller's contract).
            let v = unsafe { int_opt(optval, optlen) }?;
            let n = v.max(0) as u32;
            match name {
                SockOptName::Error => return Err(libc::ENOPROTOOPT),
                SockOptName::NoDelay => SockOpt::NoDelay(v != 0),
                SockOptName::KeepAlive => SockOpt::KeepAlive(v != 0),
                SockOptName::ReuseAddr => SockOpt::ReuseAddr(v != 0),
                SockOptName::SendBuffer => SockOpt::SendBuffer(n as usize),
                SockOptName::RecvBuffer => SockOpt::RecvBuffer(n as usize),
                SockOptName::KeepIdle => SockOpt::KeepIdle(n),
                SockOptName::KeepInterval => SockOpt::KeepInterval(n),
                SockOptName::KeepCount => SockOpt::KeepCount(n),
                _ => return Err(libc::ENOPROTOOPT),
            }
        };
        h.ctx.setsockopt(s, opt).map_err(e)?;
        Ok(0)
    })
}

/// Checks that `sockid` is open: every descriptor is non-blocking already.
///
/// # Safety
/// `mctx` as for every call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_setsock_nonblock(mctx: mctx_t, sockid: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        open(h, fd(sockid)?)?;
        Ok(0)
    })
}

/// `EBADF` unless `s` is an open descriptor of any kind.
fn open(h: &mut Handle, s: Fd) -> Result<(), c_int> {
    match h.ctx.bytes_readable(s) {
        Ok(_) | Err(Error::NotSocket) => Ok(()),
        Err(err) => Err(e(err)),
    }
}

/// `FIONREAD` (bytes ready to read, into the `int` at `argp`) and `FIONBIO` (a no-op: every
/// socket is non-blocking); other requests `EINVAL`, a null `argp` `EFAULT`.
///
/// # Safety
/// `mctx` as for every call; `argp` null or valid for an `int`.
#[no_mangle]
pub unsafe extern "C" fn mtcp_socket_ioctl(
    mctx: mctx_t,
    sockid: c_int,
    request: c_int,
    argp: *mut c_void,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        if argp.is_null() {
            return Err(libc::EFAULT);
        }
        match request as libc::Ioctl {
            libc::FIONREAD => {
                let n = h.ctx.bytes_readable(s).map_err(e)?;
                let n = c_int::try_from(n).unwrap_or(c_int::MAX);
                // SAFETY: argp points to a writable int (the caller's contract).
                unsafe { argp.cast::<c_int>().write_unaligned(n) };
                Ok(0)
            }
            libc::FIONBIO => open(h, s).map(|()| 0),
            _ => Err(libc::EINVAL),
        }
    })
}

/// A TCP socket: `domain` `AF_INET`, `type` `SOCK_STREAM` (`SOCK_NONBLOCK` and
/// `SOCK_CLOEXEC` may be or-ed in), `protocol` 0 or `IPPROTO_TCP`.
///
/// # Safety
/// `mctx` as for every call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_socket(
    mctx: mctx_t,
    domain: c_int,
    r#type: c_int,
    protocol: c_int,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        if domain != libc::AF_INET {
            return Err(libc::EAFNOSUPPORT);
        }
        if r#type & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != libc::SOCK_STREAM {
            return Err(libc::EINVAL);
        }
        if protocol != 0 && protocol != libc::IPPROTO_TCP {
            return Err(libc::EPROTONOSUPPORT);
        }
        to_c(h.ctx.socket().map_err(e)?)
    })
}

/// An IPv4 socket address from C: `EINVAL` unless `AF_INET` and long enough (as mTCP).
///
/// # Safety
/// `addr` is null or valid for `addrlen` bytes.
unsafe fn addr_in(addr: *const sockaddr, addrlen: socklen_t) -> Result<SocketAddrV4, c_int> {
    if addr.is_null() || (addrlen as usize) < core::mem::size_of::<libc::sockaddr_in>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: a sockaddr_in's bytes are readable (checked; the caller's contract).
    let sin = unsafe { addr.cast::<libc::sockaddr_in>().read_unaligned() };
    if i32::from(sin.sin_family) != libc::AF_INET {
        return Err(libc::EINVAL);
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

/// Writes `a` to a C socket address, cut to `*addrlen` bytes; `*addrlen` becomes the full
/// size (as Linux).
///
/// # Safety
/// `addr` valid for `*addrlen` bytes, `addrlen` valid; both non-null.
unsafe fn put_addr(a: SocketAddrV4, addr: *mut sockaddr, addrlen: *mut socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_in.
    let mut sin: libc::sockaddr_in = unsafe { core::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = a.port().to_be();
    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    let size = core::mem::size_of::<libc::sockaddr_in>();
    // SAFETY: addrlen and addr are valid (the caller's contract); we write at most
    // *addrlen bytes of addr, from a local that does not overlap it.
    unsafe {
        let n = (*addrlen as usize).min(size);
        core::ptr::copy_nonoverlapping((&raw const sin).cast::<u8>(), addr.cast::<u8>(), n);
        *addrlen = size as socklen_t;
    }
}

/// Binds `sockid` to an `AF_INET` address (ours or `INADDR_ANY`; port 0: chosen at connect).
///
/// # Safety
/// `mctx` as for every call; `addr` null or valid for `addrlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn mtcp_bind(
    mctx: mctx_t,
    sockid: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        // SAFETY: the caller's contract.
        let a = unsafe { addr_in(addr, addrlen) }?;
        h.ctx.bind(s, a).map_err(e)?;
        Ok(0)
    })
}

/// Listens on `sockid`; `backlog` must be positive (as mTCP).
///
/// # Safety
/// `mctx` as for every call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_listen(mctx: mctx_t, sockid: c_int, backlog: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        let backlog = usize::try_from(backlog)
            .ok()
            .filter(|&b| b > 0)
            .ok_or(libc::EINVAL)?;
        h.ctx.listen(s, backlog).map_err(e)?;
        Ok(0)
    })
}

/// A pending connection of listener `sockid` (`EAGAIN` when none); its peer's address into
/// `addr` when `addr` and `addrlen` are both non-null.
///
/// # Safety
/// `mctx` as for every call; `addr`/`addrlen` null or valid (`*addrlen` bytes at `addr`).
#[no_mangle]
pub unsafe extern "C" fn mtcp_accept(
    mctx: mctx_t,
    sockid: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        let (c, peer) = h.ctx.accept(s).map_err(e)?;
        if !addr.is_null() && !addrlen.is_null() {
            // SAFETY: both valid (the caller's contract).
            unsafe { put_addr(peer, addr, addrlen) };
        }
        to_c(c)
    })
}

/// Checks and records the address pool of a client context (mTCP sizes per-core port pools
/// from it); steering here is automatic, so the values change nothing else. `EINVAL` for a
/// count below 1.
///
/// # Safety
/// `mctx` as for every call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_init_rss(
    mctx: mctx_t,
    saddr_base: in_addr_t,
    num_addr: c_int,
    daddr: in_addr_t,
    dport: in_addr_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let n = u32::try_from(num_addr)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(libc::EINVAL)?;
        h.rss = Some((saddr_base, n, daddr, dport));
        Ok(0)
    })
}

/// Starts connecting `sockid` to `addr`: -1 with `EINPROGRESS`, then `MTCP_EPOLLOUT` (done)
/// or `MTCP_EPOLLERR` (`SO_ERROR` tells why) on the socket.
///
/// # Safety
/// `mctx` as for every call; `addr` null or valid for `addrlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn mtcp_connect(
    mctx: mctx_t,
    sockid: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        // SAFETY: the caller's contract.
        let a = unsafe { addr_in(addr, addrlen) }?;
        h.ctx.connect(s, a).map_err(e)?;
        Ok(0)
    })
}

/// Closes a descriptor (a connection closes gracefully: FIN after the data written).
///
/// # Safety
/// `mctx` as for every call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_close(mctx: mctx_t, sockid: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        h.ctx.close(fd(sockid)?).map_err(e)?;
        Ok(0)
    })
}

/// Resets the connection (RST) and closes the descriptor. Not in mTCP's header (its
/// applications declare it themselves); declared here with the same prototype.
///
/// # Safety
/// `mctx` as for every call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_abort(mctx: mctx_t, sockid: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        h.ctx.abort(fd(sockid)?).map_err(e)?;
        Ok(0)
    })
}

/// `shutdown`: `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
///
/// # Safety
/// `mctx` as for every call.
#[no_mangle]
pub unsafe extern "C" fn mtcp_shutdown(mctx: mctx_t, sockid: c_int, sock_how: c_int) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let how = match sock_how {
            libc::SHUT_RD => Shutdown::Read,
            libc::SHUT_WR => Shutdown::Write,
            libc::SHUT_RDWR => Shutdown::Both,
            _ => return Err(libc::EINVAL),
        };
        h.ctx.shutdown(fd(sockid)?, how).map_err(e)?;
        Ok(0)
    })
}

/// The local address of a socket. `EFAULT` for null pointers, `EINVAL` for `*addrlen` 0.
///
/// # Safety
/// `mctx` as for every call; `addr`/`addrlen` null or valid (`*addrlen` bytes at `addr`).
#[no_mangle]
pub unsafe extern "C" fn mtcp_getsockname(
    mctx: mctx_t,
    sock: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sock)?;
        // SAFETY: the caller's contract.
        unsafe { check_out_addr(addr, addrlen) }?;
        let a = h.ctx.local_addr(s).map_err(e)?;
        // SAFETY: both valid (checked non-null; the caller's contract).
        unsafe { put_addr(a, addr, addrlen) };
        Ok(0)
    })
}

/// The peer's address of a connected socket (`ENOTCONN` otherwise).
///
/// # Safety
/// `mctx` as for every call; `addr`/`addrlen` null or valid (`*addrlen` bytes at `addr`).
#[no_mangle]
pub unsafe extern "C" fn mtcp_getpeername(
    mctx: mctx_t,
    sockid: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        // SAFETY: the caller's contract.
        unsafe { check_out_addr(addr, addrlen) }?;
        let a = h.ctx.peer_addr(s).map_err(e)?;
        // SAFETY: both valid (checked non-null; the caller's contract).
        unsafe { put_addr(a, addr, addrlen) };
        Ok(0)
    })
}

/// # Safety
/// `addrlen` null or valid.
unsafe fn check_out_addr(addr: *mut sockaddr, addrlen: *mut socklen_t) -> Result<(), c_int> {
    if addr.is_null() || addrlen.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: non-null and valid (the caller's contract).
    if unsafe { *addrlen } == 0 {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// A byte slice from C (`EFAULT` for a null pointer with a length).
///
/// # Safety
/// `buf` null or valid for `len` bytes, not used elsewhere during `'a`.
unsafe fn bytes_mut<'a>(buf: *mut c_char, len: size_t) -> Result<&'a mut [u8], c_int> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: valid for len bytes and unaliased (the caller's contract).
    Ok(unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// # Safety
/// `buf` null or valid for `len` bytes.
unsafe fn bytes<'a>(buf: *const c_char, len: size_t) -> Result<&'a [u8], c_int> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: valid for len bytes (the caller's contract).
    Ok(unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

fn ssize(n: usize) -> ssize_t {
    ssize_t::try_from(n).unwrap_or(ssize_t::MAX)
}

/// Reads up to `len` bytes: the count, 0 at end of stream, or -1 (`EAGAIN`: nothing yet).
///
/// # Safety
/// `mctx` as for every call; `buf` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mtcp_read(
    mctx: mctx_t,
    sockid: c_int,
    buf: *mut c_char,
    len: size_t,
) -> ssize_t {
    // SAFETY: the same contract.
    unsafe { mtcp_recv(mctx, sockid, buf, len, 0) }
}

/// `mtcp_read` with flags: `MSG_PEEK` leaves the bytes to be read again; `MSG_DONTWAIT`
/// changes nothing; others `EINVAL`.
///
/// # Safety
/// `mctx` as for every call; `buf` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mtcp_recv(
    mctx: mctx_t,
    sockid: c_int,
    buf: *mut c_char,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        if flags & !(libc::MSG_PEEK | libc::MSG_DONTWAIT) != 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller's contract.
        let b = unsafe { bytes_mut(buf, len) }?;
        let n = h.ctx.recv(s, b, flags & libc::MSG_PEEK != 0).map_err(e)?;
        Ok(ssize(n))
    })
}

/// The `numIOV` buffers of `iov` as slices.
///
/// # Safety
/// `iov` null or valid for `num` entries, each valid for its length.
unsafe fn iovecs<'a>(iov: *const iovec, num: c_int) -> Result<&'a [iovec], c_int> {
    let num = usize::try_from(num).map_err(|_| libc::EINVAL)?;
    if num == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    if num > libc::UIO_MAXIOV as usize {
        return Err(libc::EINVAL);
    }
    // SAFETY: valid for num entries (the caller's contract).
    let v = unsafe { core::slice::from_raw_parts(iov, num) };
    if v.iter().any(|i| i.iov_base.is_null() && i.iov_len > 0) {
        return Err(libc::EFAULT);
    }
    Ok(v)
}

fn int_count(n: usize) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// Reads into `numIOV` buffers in order (one call: all of it or as much as is there).
///
/// # Safety
/// `mctx` as for every call; `iov` valid for `numIOV` entries, each for its length, and
/// the buffers do not overlap.
#[no_mangle]
#[allow(non_snake_case)] // mTCP's parameter name, kept for the header
pub unsafe extern "C" fn mtcp_readv(
    mctx: mctx_t,
    sockid: c_int,
    iov: *const iovec,
    numIOV: c_int,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        // SAFETY: the caller's contract.
        let v = unsafe { iovecs(iov, numIOV) }?;
        let mut bufs = Vec::with_capacity(v.len());
        for i in v {
            // SAFETY: each buffer is valid for its length and unaliased (caller's contract).
            bufs.push(unsafe { bytes_mut(i.iov_base.cast(), i.iov_len) }?);
        }
        let n = h.ctx.readv(s, &mut bufs).map_err(e)?;
        Ok(int_count(n))
    })
}

/// Writes up to `len` bytes: the count taken (what fits the send buffer), or -1 (`EAGAIN`:
/// no room yet; `EPIPE` after shutdown or the end of the connection).
///
/// # Safety
/// `mctx` as for every call; `buf` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mtcp_write(
    mctx: mctx_t,
    sockid: c_int,
    buf: *const c_char,
    len: size_t,
) -> ssize_t {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        // SAFETY: the caller's contract.
        let b = unsafe { bytes(buf, len) }?;
        let n = h.ctx.write(s, b).map_err(e)?;
        Ok(ssize(n))
    })
}

/// Writes `numIOV` buffers in order, as one `mtcp_write` of their concatenation.
///
/// # Safety
/// `mctx` as for every call; `iov` valid for `numIOV` entries, each for its length.
#[no_mangle]
#[allow(non_snake_case)] // mTCP's parameter name, kept for the header
pub unsafe extern "C" fn mtcp_writev(
    mctx: mctx_t,
    sockid: c_int,
    iov: *const iovec,
    numIOV: c_int,
) -> c_int {
    ffi(-1, || {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(mctx) }?;
        let s = fd(sockid)?;
        // SAFETY: the caller's contract.
        let v = unsafe { iovecs(iov, numIOV) }?;
        let mut bufs = Vec::with_capacity(v.len());
        for i in v {
            // SAFETY: each buffer is valid for its length (the caller's contract).
            bufs.push(unsafe { bytes(i.iov_base.cast(), i.iov_len) }?);
        }
        let n = h.ctx.writev(s, &bufs).map_err(e)?;
        Ok(int_count(n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno() -> Option<i32> {
        std::io::Error::last_os_error().raw_os_error()
    }

    #[test]
    fn null_context_is_einval_everywhere() {
        let null = core::ptr::null_mut();
        // SAFETY: null contexts and pointers are what is being tested; nothing is dereferenced.
        unsafe {
            assert_eq!(mtcp_socket(null, libc::AF_INET, libc::SOCK_STREAM, 0), -1);
            assert_eq!(errno(), Some(libc::EINVAL));
            assert_eq!(mtcp_close(null, 3), -1);
            assert_eq!(errno(), Some(libc::EINVAL));
            assert_eq!(mtcp_read(null, 3, core::ptr::null_mut(), 10), -1);
            assert_eq!(errno(), Some(libc::EINVAL));
            assert_eq!(mtcp_getconf(core::ptr::null_mut()), -1);
            assert_eq!(mtcp_setconf(core::ptr::null()), -1);
            assert_eq!(mtcp_init(core::ptr::null()), -1);
            assert_eq!(errno(), Some(libc::EINVAL));
            mtcp_destroy_context(null);
        }
        // No mtcp_init in this process: no context to create.
        assert!(mtcp_create_context(0).is_null());
        assert_eq!(errno(), Some(libc::EPERM));
    }

    #[test]
    fn addresses_are_checked_like_mtcp() {
        // SAFETY: null and short addresses are rejected before any read.
        unsafe {
            assert_eq!(addr_in(core::ptr::null(), 16), Err(libc::EINVAL));
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 8080u16.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(Ipv4Addr::new(10, 0, 0, 2)).to_be(),
                },
                sin_zero: [0; 8],
            };
            let p = (&raw const sin).cast::<sockaddr>();
            assert_eq!(addr_in(p, 8), Err(libc::EINVAL));
            assert_eq!(
                addr_in(p, 16),
                Ok("10.0.0.2:8080".parse::<SocketAddrV4>().unwrap())
            );
        }
    }

    #[test]
    fn setconf_sets_positive_fields_only() {
        let mut c = Config::default();
        let o = mtcp_conf {
            num_cores: 2,
            rcvbuf_size: 8192,
            tcp_timeout: 1500,
            ..mtcp_conf::default()
        };
        apply(&o, &mut c);
        assert_eq!(c.cores, 2);
        assert_eq!(c.tcp.recv_buffer, 8192);
        assert_eq!(c.tcp.send_buffer, Config::default().tcp.send_buffer);
        assert_eq!(c.tcp.idle_timeout_s, 2);
        // getconf → change one field → setconf: only that field overrides the file.
        let defaults = conf_of(&Config::default());
        let mut asked = defaults;
        asked.num_cores = 3;
        let mut overrides = mtcp_conf::default();
        merge(&mut overrides, &asked, &defaults);
        assert_eq!(
            overrides,
            mtcp_conf {
                num_cores: 3,
                ..mtcp_conf::default()
            }
        );
    }
}
