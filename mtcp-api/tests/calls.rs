//! Every socket call of `mtcp-api`, one behaviour per test.
//!
//! Most tests run two contexts (a client at 10.0.0.1, a server at 10.0.0.2) joined by a
//! shared-memory link and polled from the test's own thread ([`Pair`]), in both of the
//! crate's modes ([`Mode`]): each such test is a `fn name(mode: Mode)`, run as `rtc::name` and
//! as `threaded::name` (the list at the end). In run-to-completion mode the network moves only
//! while the test polls; with stack threads it moves on its own, but what the test sees of it
//! changes only when a context polls (`poll`, `epoll_wait`, `listen`), so each exchange still
//! happens in the order the test writes it. Two tests are about stack threads themselves
//! ([`mtcp_api::init`], [`mtcp_api::Mtcp::destroy`]) and run only with them.
//!
//! The expected results are Linux's (checked against Linux loopback sockets); where Linux
//! and BSD disagree and the API follows BSD/POSIX, the test says so. No test asserts how long
//! anything takes, except that a timed `epoll_wait` does not return before its timeout.

use core::net::{Ipv4Addr, SocketAddrV4};
use mtcp_api::context::{MIN_SOCKET_BUFFER, PIPE_CAPACITY};
use mtcp_api::net::{SharedContext, TcpListener, TcpStream};
use mtcp_api::{
    Config, Context, EpollEvent, EpollOp, Error, Events, Fd, Mtcp, Shutdown, SockOpt, SockOptName,
};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Where the server listens.
const PORT: u16 = 8080;
/// Where nothing listens.
const CLOSED_PORT: u16 = 9999;
/// Both stacks' `send_buffer` and `recv_buffer`.
const BUFFER: usize = 16 * 1024;
/// The `SO_SNDBUF`/`SO_RCVBUF` the buffer tests set: well inside `[MIN_SOCKET_BUFFER, BUFFER]`.
const SMALL: usize = 4096;
/// The longest wait for anything on the link before a test gives up.
const PATIENCE: Duration = Duration::from_secs(5);
/// A descriptor number no test opens.
const NOT_OPEN: Fd = 999;

/// The configuration of one side of the link; `tcp_extra` adds lines to `[tcp]`.
fn config_with(link: &str, me: Ipv4Addr, peer: Ipv4Addr, tcp_extra: &str) -> Config {
    let mac = |ip: Ipv4Addr| format!("02:00:00:00:00:{:02x}", ip.octets()[3]);
    let text = format!(
        "port = \"shm:{link}\"\npin_threads = false\nsecret = \"{:032x}\"\n\
         [interface]\nmac = \"{}\"\naddress = \"{me}/24\"\n\
         [[arp]]\nip = \"{peer}\"\nmac = \"{}\"\n\
         [tcp]\nmax_concurrency = 20000\nsend_buffer = {BUFFER}\nrecv_buffer = {BUFFER}\n\
         time_wait_ms = 100\n{tcp_extra}",
        u32::from(me),
        mac(me),
        mac(peer)
    );
    Config::from_toml_str(&text, "calls").unwrap()
}

fn config(link: &str, me: Ipv4Addr, peer: Ipv4Addr) -> Config {
    config_with(link, me, peer, "")
}

/// How a test runs its stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// [`Context::run_to_completion`]: each stack runs in the test's thread, inside the
    /// context's `poll` and `epoll_wait`.
    Rtc,
    /// [`mtcp_api::init`]: each stack runs in its own thread; the context's `poll` applies
    /// what it sent.
    Threaded,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Rtc => "rtc",
            Mode::Threaded => "threaded",
        }
    }
}

/// A link name of this test in this mode and process (tests run in parallel, each on its own
/// link).
fn link(test: &str, mode: Mode) -> String {
    format!("mtcp-calls-{test}-{}-{}", mode.name(), std::process::id())
}

/// Opens contexts in one mode, and holds the stack threads behind them (they stop when this
/// is dropped).
struct Stacks {
    mode: Mode,
    threads: Vec<Mtcp>,
}

impl Stacks {
    fn new(mode: Mode) -> Stacks {
        Stacks {
            mode,
            threads: Vec::new(),
        }
    }

    /// The context of core 0 of `config`.
    fn context(&mut self, config: Config) -> Context {
        match self.mode {
            Mode::Rtc => Context::run_to_completion(&config, 0).unwrap(),
            Mode::Threaded => {
                let mut mtcp = mtcp_api::init(config).unwrap();
                let ctx = mtcp.context(0).unwrap();
                self.threads.push(mtcp);
                ctx
            }
        }
    }

    /// Between two polls: with stack threads, leaves them the CPU for a moment (the tests,
    /// run in parallel, and their stacks share few CPUs), instead of spinning.
    fn pause(&self) {
        if self.mode == Mode::Threaded {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

fn server(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(SERVER, port)
}

fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

/// `n` bytes of a pattern that shows reordering.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Calls `step` until it gives a value; panics after [`PATIENCE`].
fn until<T>(what: &str, mut step: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = step() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Writes as much of `data` as the send buffer takes; the bytes taken.
fn fill(ctx: &mut Context, fd: Fd, data: &[u8]) -> usize {
    let mut sent = 0;
    while sent < data.len() {
        match ctx.write(fd, &data[sent..]) {
            Ok(n) => sent += n,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("write: {e:?}"),
        }
    }
    sent
}

/// Reads what is there: the bytes, and whether end of stream was seen.
fn drain(ctx: &mut Context, fd: Fd) -> (Vec<u8>, bool) {
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        match ctx.read(fd, &mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => return (got, false),
            Err(e) => panic!("read: {e:?}"),
        }
    }
}

/// What one non-blocking `epoll_wait` on `ep` reports for `fd` (registered with data `fd`).
fn ready(ctx: &mut Context, ep: Fd, fd: Fd) -> Events {
    let mut out = [EpollEvent::default(); 16];
    let n = ctx.epoll_wait(ep, &mut out, 0).unwrap();
    out[..n]
        .iter()
        .filter(|e| e.data == u64::from(fd))
        .fold(Events::empty(), |all, e| all | e.events)
}

/// An epoll instance of `ctx` watching `fd` for `events`, with `fd` as its data.
fn watch(ctx: &mut Context, fd: Fd, events: Events) -> Fd {
    let ep = ctx.epoll_create(16).unwrap();
    ctx.epoll_ctl(ep, EpollOp::Add, fd, events, u64::from(fd))
        .unwrap();
    ep
}

/// Two contexts on one shared-memory link, polled by the test's thread. In run-to-completion
/// mode the network moves only inside [`Pair::poll`] (and the contexts' own `epoll_wait`);
/// with stack threads it moves on its own, and [`Pair::poll`] applies what the stacks sent.
struct Pair {
    /// The client stack, 10.0.0.1.
    c: Context,
    /// The server stack, 10.0.0.2.
    s: Context,
    /// Dropped after the contexts.
    stacks: Stacks,
}

impl Pair {
    fn new(test: &str, mode: Mode) -> Pair {
        let link = link(test, mode);
        let mut stacks = Stacks::new(mode);
        let s = stacks.context(config(&link, SERVER, CLIENT));
        let c = stacks.context(config(&link, CLIENT, SERVER));
        Pair { c, s, stacks }
    }

    /// A listener on [`PORT`] with one connection: (pair, listener, client fd, server fd).
    fn connected(test: &str, mode: Mode) -> (Pair, Fd, Fd, Fd) {
        let mut p = Pair::new(test, mode);
        let l = p.listen(PORT);
        let (c, s) = p.connect(l, PORT);
        (p, l, c, s)
    }

    /// One pass of each stack (run-to-completion), or what each stack sent (threaded).
    fn poll(&mut self) {
        self.c.poll().unwrap();
        self.s.poll().unwrap();
        self.stacks.pause();
    }

    /// Runs both stacks for `ms` milliseconds.
    fn settle(&mut self, ms: u64) {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            self.poll();
        }
    }

    /// Runs both stacks until `done` says so; panics after [`PATIENCE`].
    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Pair) -> bool) {
        until(what, || {
            self.poll();
            done(self).then_some(())
        });
    }

    /// A server socket bound to 0.0.0.0:`port` and listening.
    fn listen(&mut self, port: u16) -> Fd {
        let l = self.s.socket().unwrap();
        self.s.bind(l, any(port)).unwrap();
        self.s.listen(l, 16).unwrap();
        l
    }

    /// A new client socket connected to listener `l` on `port`: (client fd, server fd).
    fn connect(&mut self, l: Fd, port: u16) -> (Fd, Fd) {
        let c = self.c.socket().unwrap();
        let s = self.connect_socket(c, l, port);
        (c, s)
    }

    /// Connects client socket `c` to listener `l` on `port`; the accepted server fd. Checks
    /// that `accept` names the client's address.
    fn connect_socket(&mut self, c: Fd, l: Fd, port: u16) -> Fd {
        assert_eq!(self.c.connect(c, server(port)), Err(Error::InProgress));
        let mut accepted = None;
        self.until("the connection", |p| {
            if accepted.is_none() {
                accepted = p.s.accept(l).ok();
            }
            accepted.is_some() && p.c.peer_addr(c).is_ok()
        });
        let (s, peer) = accepted.unwrap();
        assert_eq!(Ok(peer), self.c.local_addr(c), "accept's peer address");
        s
    }

    /// Runs both stacks until the server's `s` has `n` bytes to read.
    fn until_server_holds(&mut self, s: Fd, n: usize) {
        self.until("data at the server", |p| p.s.bytes_readable(s) == Ok(n));
    }

    /// Runs both stacks until the client's `c` has `n` bytes to read.
    fn until_client_holds(&mut self, c: Fd, n: usize) {
        self.until("data at the client", |p| p.c.bytes_readable(c) == Ok(n));
    }

    /// Runs both stacks until a read of the server's `s` does not block; its result.
    fn next_server_read(&mut self, s: Fd) -> Result<usize, Error> {
        let mut result = None;
        self.until("a server read that does not block", |p| {
            match p.s.read(s, &mut [0u8; 64]) {
                Err(Error::WouldBlock) => false,
                r => {
                    result = Some(r);
                    true
                }
            }
        });
        result.unwrap()
    }
}

// ----- every call on a working connection ------------------------------------------------

fn getsockname_and_getpeername_name_both_ends(mode: Mode) {
    let (mut p, l, c, s) = Pair::connected("names", mode);
    let client = p.c.local_addr(c).unwrap();
    assert_eq!(*client.ip(), CLIENT);
    assert!(
        (49152..=65535).contains(&client.port()),
        "{client}: not an ephemeral port"
    );
    assert_eq!(p.c.peer_addr(c), Ok(server(PORT)));
    assert_eq!(p.s.local_addr(s), Ok(server(PORT)));
    assert_eq!(p.s.peer_addr(s), Ok(client));
    assert_eq!(p.s.local_addr(l).map(|a| a.port()), Ok(PORT));
    assert_eq!(p.s.peer_addr(l), Err(Error::NotConnected));
    // An unbound socket is 0.0.0.0:0 and has no peer.
    let fresh = p.c.socket().unwrap();
    assert_eq!(p.c.local_addr(fresh), Ok(any(0)));
    assert_eq!(p.c.peer_addr(fresh), Err(Error::NotConnected));
    assert_eq!(p.c.core(), 0);
}

/// Linux: `bind(0.0.0.0:p)` then `getsockname` is `0.0.0.0:p`, listening or not; the
/// address is chosen only for a connection.
fn getsockname_after_a_wildcard_bind_is_the_wildcard(mode: Mode) {
    let mut p = Pair::new("wildcard", mode);
    let l = p.listen(PORT);
    assert_eq!(
        p.s.local_addr(l),
        Ok(any(PORT)),
        "listener bound to 0.0.0.0"
    );
    let b = p.s.socket().unwrap();
    p.s.bind(b, any(PORT + 1)).unwrap();
    assert_eq!(p.s.local_addr(b), Ok(any(PORT + 1)), "bound, not listening");
    let mine = p.s.socket().unwrap();
    p.s.bind(mine, server(PORT + 2)).unwrap();
    assert_eq!(p.s.local_addr(mine), Ok(server(PORT + 2)));
}

fn read_write_readv_and_writev_keep_the_byte_order(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("rw", mode);
    assert_eq!(p.c.write(c, b"hello "), Ok(6));
    assert_eq!(p.c.writev(c, &[b"scatter", b"", b"/gather"]), Ok(14));
    assert_eq!(p.c.writev(c, &[]), Ok(0));
    p.until_server_holds(s, 20);
    let (mut a, mut b, mut d) = ([0u8; 3], [0u8; 10], [0u8; 16]);
    let mut empty = [0u8; 0];
    assert_eq!(
        p.s.readv(s, &mut [&mut a, &mut empty, &mut b, &mut d]),
        Ok(20)
    );
    assert_eq!((&a, &b, &d[..7]), (b"hel", b"lo scatter", &b"/gather"[..]));
    assert_eq!(p.s.read(s, &mut d), Err(Error::WouldBlock));
    assert_eq!(p.s.readv(s, &mut [&mut a]), Err(Error::WouldBlock));
    // And back, with plain read and write.
    assert_eq!(p.s.write(s, b"pong"), Ok(4));
    p.until_client_holds(c, 4);
    let mut buf = [0u8; 8];
    assert_eq!(p.c.read(c, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"pong");
    // More than one read's worth, in order.
    let payload = pattern(3 * BUFFER);
    let (mut sent, mut got) = (0, Vec::new());
    p.until("the payload", |p| {
        sent += fill(&mut p.c, c, &payload[sent..]);
        got.extend(drain(&mut p.s, s).0);
        got.len() == payload.len()
    });
    assert!(got == payload, "bytes differ");
}

fn recv_with_peek_leaves_the_data_and_fionread_counts_it(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("peek", mode);
    let mut buf = [0u8; 16];
    assert_eq!(p.s.bytes_readable(s), Ok(0));
    assert_eq!(p.s.recv(s, &mut buf, true), Err(Error::WouldBlock));
    assert_eq!(p.c.write(c, b"abc"), Ok(3));
    assert_eq!(p.c.write(c, b"def"), Ok(3));
    p.until_server_holds(s, 6);
    assert_eq!(p.s.recv(s, &mut buf[..4], true), Ok(4));
    assert_eq!(&buf[..4], b"abcd");
    assert_eq!(p.s.bytes_readable(s), Ok(6));
    assert_eq!(p.s.recv(s, &mut buf, true), Ok(6));
    assert_eq!(&buf[..6], b"abcdef");
    assert_eq!(p.s.recv(s, &mut buf[..2], false), Ok(2));
    assert_eq!(&buf[..2], b"ab");
    assert_eq!(p.s.bytes_readable(s), Ok(4));
    assert_eq!(p.s.recv(s, &mut buf, true), Ok(4));
    assert_eq!(&buf[..4], b"cdef");
    assert_eq!(p.s.read(s, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"cdef");
    assert_eq!(p.s.bytes_readable(s), Ok(0));
    assert_eq!(p.s.recv(s, &mut buf, true), Err(Error::WouldBlock));
}

fn shutdown_write_sends_eof_and_the_peer_can_still_reply(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("shutwr", mode);
    let ep = watch(&mut p.s, s, Events::IN | Events::RDHUP);
    assert_eq!(p.c.write(c, b"request"), Ok(7));
    p.c.shutdown(c, Shutdown::Write).unwrap();
    // Twice is harmless, as on Linux.
    p.c.shutdown(c, Shutdown::Write).unwrap();
    let mut got = Vec::new();
    p.until("the request and EOF", |p| {
        let (bytes, eof) = drain(&mut p.s, s);
        got.extend(bytes);
        eof
    });
    assert_eq!(got, b"request");
    assert_eq!(p.s.read(s, &mut [0u8; 8]), Ok(0), "EOF stays");
    // Linux's tcp_poll after the peer's FIN: IN|RDHUP, no HUP (our side is still open).
    assert_eq!(ready(&mut p.s, ep, s), Events::IN | Events::RDHUP);
    assert_eq!(p.s.take_error(s), Ok(None));
    // Half-closed: the server still sends, the client still reads.
    assert_eq!(p.s.write(s, b"reply"), Ok(5));
    p.until_client_holds(c, 5);
    let mut buf = [0u8; 8];
    assert_eq!(p.c.read(c, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"reply");
    p.s.close(s).unwrap();
    p.until("EOF at the client", |p| drain(&mut p.c, c).1);
    assert_eq!(p.c.take_error(c), Ok(None));
}

fn shutdown_read_makes_own_reads_return_eof(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("shutrd", mode);
    let ep = watch(&mut p.c, c, Events::IN | Events::RDHUP);
    assert_eq!(ready(&mut p.c, ep, c), Events::empty());
    p.c.shutdown(c, Shutdown::Read).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(p.c.read(c, &mut buf), Ok(0));
    assert_eq!(p.c.read(c, &mut buf), Ok(0));
    // Linux's tcp_poll after SHUT_RD: IN|RDNORM|RDHUP.
    assert!(ready(&mut p.c, ep, c).contains(Events::IN | Events::RDHUP));
    // Writing still works.
    assert_eq!(p.c.write(c, b"still"), Ok(5));
    p.until_server_holds(s, 5);
    assert_eq!(p.s.read(s, &mut buf), Ok(5));
}

// ----- error paths -----------------------------------------------------------------------

fn calls_on_a_descriptor_that_is_not_open_are_ebadf(mode: Mode) {
    let mut p = Pair::new("ebadf", mode);
    let ctx = &mut p.c;
    let bad = Err(Error::BadDescriptor);
    let mut buf = [0u8; 4];
    let mut out = [EpollEvent::default(); 4];
    assert_eq!(ctx.read(NOT_OPEN, &mut buf), bad);
    assert_eq!(ctx.recv(NOT_OPEN, &mut buf, true), bad);
    assert_eq!(ctx.readv(NOT_OPEN, &mut [&mut buf]), bad);
    assert_eq!(ctx.write(NOT_OPEN, b"x"), bad);
    assert_eq!(ctx.writev(NOT_OPEN, &[b"x"]), bad);
    assert_eq!(ctx.bytes_readable(NOT_OPEN), bad);
    assert_eq!(ctx.bind(NOT_OPEN, any(1)), Err(Error::BadDescriptor));
    assert_eq!(ctx.listen(NOT_OPEN, 1), Err(Error::BadDescriptor));
    assert_eq!(ctx.accept(NOT_OPEN), Err(Error::BadDescriptor));
    assert_eq!(
        ctx.connect(NOT_OPEN, server(PORT)),
        Err(Error::BadDescriptor)
    );
    assert_eq!(
        ctx.shutdown(NOT_OPEN, Shutdown::Both),
        Err(Error::BadDescriptor)
    );
    assert_eq!(ctx.local_addr(NOT_OPEN), Err(Error::BadDescriptor));
    assert_eq!(ctx.peer_addr(NOT_OPEN), Err(Error::BadDescriptor));
    assert_eq!(ctx.take_error(NOT_OPEN), Err(Error::BadDescriptor));
    assert_eq!(
        ctx.setsockopt(NOT_OPEN, SockOpt::NoDelay(true)),
        Err(Error::BadDescriptor)
    );
    assert_eq!(
        ctx.getsockopt(NOT_OPEN, SockOptName::NoDelay),
        Err(Error::BadDescriptor)
    );
    assert_eq!(ctx.set_nodelay(NOT_OPEN, true), Err(Error::BadDescriptor));
    assert_eq!(ctx.nodelay(NOT_OPEN), Err(Error::BadDescriptor));
    assert_eq!(ctx.close(NOT_OPEN), Err(Error::BadDescriptor));
    assert_eq!(ctx.abort(NOT_OPEN), Err(Error::BadDescriptor));
    assert_eq!(ctx.epoll_wait(NOT_OPEN, &mut out, 0), bad);
    let fd = ctx.socket().unwrap();
    assert_eq!(
        ctx.epoll_ctl(NOT_OPEN, EpollOp::Add, fd, Events::IN, 0),
        Err(Error::BadDescriptor)
    );
    // A closed descriptor is not open either, and closing it twice is EBADF.
    ctx.close(fd).unwrap();
    assert_eq!(ctx.read(fd, &mut buf), bad);
    assert_eq!(ctx.close(fd), Err(Error::BadDescriptor));
    // Nor is a closed connection's, while its number waits for the stack to release it.
    let (mut p, _l, c, _s) = Pair::connected("ebadf-conn", mode);
    p.c.close(c).unwrap();
    assert_eq!(p.c.write(c, b"x"), bad);
    assert_eq!(p.c.close(c), Err(Error::BadDescriptor));
}

/// `ENOTSOCK` for socket calls on an epoll instance or a pipe end (recv(2), bind(2), … on
/// Linux).
fn socket_calls_on_epoll_and_pipe_descriptors_are_enotsock(mode: Mode) {
    let mut p = Pair::new("enotsock", mode);
    let ctx = &mut p.c;
    let ep = ctx.epoll_create(4).unwrap();
    let (r, w) = ctx.pipe().unwrap();
    for fd in [ep, r, w] {
        let not = Err(Error::NotSocket);
        assert_eq!(ctx.bind(fd, any(PORT)), Err(Error::NotSocket), "bind {fd}");
        assert_eq!(ctx.listen(fd, 1), Err(Error::NotSocket), "listen {fd}");
        assert_eq!(ctx.accept(fd), Err(Error::NotSocket), "accept {fd}");
        assert_eq!(
            ctx.connect(fd, server(PORT)),
            Err(Error::NotSocket),
            "connect {fd}"
        );
        assert_eq!(
            ctx.shutdown(fd, Shutdown::Write),
            Err(Error::NotSocket),
            "shutdown {fd}"
        );
        assert_eq!(
            ctx.local_addr(fd),
            Err(Error::NotSocket),
            "getsockname {fd}"
        );
        assert_eq!(ctx.peer_addr(fd), Err(Error::NotSocket), "getpeername {fd}");
        assert_eq!(ctx.take_error(fd), Err(Error::NotSocket), "SO_ERROR {fd}");
        assert_eq!(
            ctx.setsockopt(fd, SockOpt::NoDelay(true)),
            Err(Error::NotSocket),
            "setsockopt {fd}"
        );
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepAlive),
            Err(Error::NotSocket),
            "getsockopt {fd}"
        );
        if fd == ep {
            assert_eq!(ctx.recv(fd, &mut [0u8; 4], false), not, "recv {fd}");
        }
    }
}

fn bind_twice_or_to_a_foreign_address_fails(mode: Mode) {
    let mut p = Pair::new("bind", mode);
    let ctx = &mut p.s;
    let fd = ctx.socket().unwrap();
    let foreign = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), PORT);
    assert_eq!(ctx.bind(fd, foreign), Err(Error::AddrNotAvailable));
    assert_eq!(ctx.bind(fd, any(PORT)), Ok(()));
    assert_eq!(ctx.bind(fd, any(PORT + 1)), Err(Error::InvalidInput));
    assert_eq!(ctx.bind(fd, any(PORT)), Err(Error::InvalidInput));
    // A connected socket is bound already.
    let (mut p, _l, c, s) = Pair::connected("bind-conn", mode);
    assert_eq!(p.c.bind(c, any(40000)), Err(Error::InvalidInput));
    assert_eq!(p.s.bind(s, any(40000)), Err(Error::InvalidInput));
}

/// bind + listen on a port another socket listens on fails with `EADDRINUSE` (Linux reports
/// it at bind, this API may at listen: the sequence is what an application sees). Once the
/// first listener is closed the port is free again.
fn a_second_listener_on_the_same_port_is_addr_in_use(mode: Mode) {
    let mut p = Pair::new("addrinuse", mode);
    let first = p.listen(PORT);
    let second = p.s.socket().unwrap();
    let r =
        p.s.bind(second, any(PORT))
            .and_then(|()| p.s.listen(second, 8));
    assert_eq!(r, Err(Error::AddrInUse));
    // listen again on a listener only changes its backlog.
    assert_eq!(p.s.listen(first, 32), Ok(()));
    p.s.close(first).unwrap();
    p.settle(5);
    let third = p.s.socket().unwrap();
    assert_eq!(p.s.bind(third, any(PORT)), Ok(()));
    assert_eq!(p.s.listen(third, 8), Ok(()));
}

/// Linux's `listen` binds an unbound socket (or one bound to port 0) to an ephemeral port
/// (inet_autobind), and the listener is reachable there.
fn listen_without_a_port_binds_an_ephemeral_one(mode: Mode) {
    let mut p = Pair::new("autobind", mode);
    let unbound = p.s.socket().unwrap();
    assert_eq!(p.s.listen(unbound, 8), Ok(()), "listen without bind");
    let port = p.s.local_addr(unbound).unwrap().port();
    assert_ne!(port, 0);
    let zero = p.s.socket().unwrap();
    p.s.bind(zero, any(0)).unwrap();
    assert_eq!(p.s.listen(zero, 8), Ok(()), "listen after bind to port 0");
    let port0 = p.s.local_addr(zero).unwrap().port();
    assert!(port0 != 0 && port0 != port, "ports {port} and {port0}");
    p.connect(unbound, port);
}

fn accept_needs_a_listener_and_a_waiting_connection(mode: Mode) {
    let (mut p, l, c, s) = Pair::connected("accept", mode);
    let fresh = p.s.socket().unwrap();
    assert_eq!(p.s.accept(fresh), Err(Error::InvalidInput));
    assert_eq!(p.s.accept(s), Err(Error::InvalidInput));
    assert_eq!(p.c.accept(c), Err(Error::InvalidInput));
    assert_eq!(p.s.accept(l), Err(Error::WouldBlock));
    // listen on a connected socket is EINVAL as well.
    assert_eq!(p.s.listen(s, 8), Err(Error::InvalidInput));
}

/// `read`, `write` and `shutdown` on a socket that never connected: `ENOTCONN`. (Linux's
/// send(2) says `EPIPE` here; POSIX and BSD say `ENOTCONN`, which this API follows.)
fn data_calls_on_a_fresh_socket_are_not_connected(mode: Mode) {
    let mut p = Pair::new("enotconn", mode);
    let ctx = &mut p.c;
    let fresh = ctx.socket().unwrap();
    let bound = ctx.socket().unwrap();
    ctx.bind(bound, any(50000)).unwrap();
    for fd in [fresh, bound] {
        let mut buf = [0u8; 4];
        assert_eq!(ctx.read(fd, &mut buf), Err(Error::NotConnected));
        assert_eq!(ctx.recv(fd, &mut buf, true), Err(Error::NotConnected));
        assert_eq!(ctx.readv(fd, &mut [&mut buf]), Err(Error::NotConnected));
        assert_eq!(ctx.write(fd, b"x"), Err(Error::NotConnected));
        assert_eq!(ctx.writev(fd, &[b"x"]), Err(Error::NotConnected));
        assert_eq!(ctx.shutdown(fd, Shutdown::Both), Err(Error::NotConnected));
        assert_eq!(ctx.bytes_readable(fd), Ok(0));
        assert_eq!(ctx.take_error(fd), Ok(None));
    }
}

fn connect_is_in_progress_then_already_then_is_connected(mode: Mode) {
    let mut p = Pair::new("connect", mode);
    let l = p.listen(PORT);
    let c = p.c.socket().unwrap();
    assert_eq!(p.c.connect(c, server(PORT)), Err(Error::InProgress));
    assert_eq!(p.c.connect(c, server(PORT)), Err(Error::Already));
    // SYN-SENT: no peer yet, and non-blocking reads and writes would block.
    assert_eq!(p.c.peer_addr(c), Err(Error::NotConnected));
    assert_eq!(p.c.write(c, b"x"), Err(Error::WouldBlock));
    assert_eq!(p.c.read(c, &mut [0u8; 4]), Err(Error::WouldBlock));
    let mut accepted = None;
    p.until("the connection", |p| {
        accepted = accepted.or(p.s.accept(l).ok());
        accepted.is_some() && p.c.peer_addr(c).is_ok()
    });
    let (s, _) = accepted.unwrap();
    assert_eq!(p.c.connect(c, server(PORT)), Err(Error::IsConnected));
    assert_eq!(p.s.connect(s, server(PORT)), Err(Error::IsConnected));
}

fn write_after_shutdown_write_is_broken_pipe(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("epipe", mode);
    p.c.shutdown(c, Shutdown::Write).unwrap();
    assert_eq!(p.c.write(c, b"late"), Err(Error::BrokenPipe));
    assert_eq!(p.c.writev(c, &[b"la", b"te"]), Err(Error::BrokenPipe));
    p.s.shutdown(s, Shutdown::Both).unwrap();
    assert_eq!(p.s.write(s, b"late"), Err(Error::BrokenPipe));
    assert_eq!(p.s.read(s, &mut [0u8; 4]), Ok(0));
}

fn epoll_ctl_and_epoll_wait_refuse_bad_arguments(mode: Mode) {
    let mut p = Pair::new("epollerr", mode);
    let ctx = &mut p.c;
    assert_eq!(ctx.epoll_create(0), Err(Error::InvalidInput));
    let ep = ctx.epoll_create(8).unwrap();
    let fd = ctx.socket().unwrap();
    let other = ctx.socket().unwrap();
    ctx.epoll_ctl(ep, EpollOp::Add, fd, Events::IN, 1).unwrap();
    assert_eq!(
        ctx.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 2),
        Err(Error::Exists)
    );
    assert_eq!(
        ctx.epoll_ctl(ep, EpollOp::Mod, other, Events::IN, 3),
        Err(Error::NotFound)
    );
    assert_eq!(
        ctx.epoll_ctl(ep, EpollOp::Del, other, Events::empty(), 0),
        Err(Error::NotFound)
    );
    ctx.epoll_ctl(ep, EpollOp::Mod, fd, Events::OUT, 4).unwrap();
    ctx.epoll_ctl(ep, EpollOp::Del, fd, Events::empty(), 0)
        .unwrap();
    assert_eq!(
        ctx.epoll_ctl(ep, EpollOp::Del, fd, Events::empty(), 0),
        Err(Error::NotFound)
    );
    // The watched descriptor must be open; an epoll cannot watch itself.
    assert_eq!(
        ctx.epoll_ctl(ep, EpollOp::Add, NOT_OPEN, Events::IN, 0),
        Err(Error::BadDescriptor)
    );
    assert_eq!(
        ctx.epoll_ctl(ep, EpollOp::Add, ep, Events::IN, 0),
        Err(Error::InvalidInput)
    );
    // The epoll descriptor must be open.
    assert_eq!(
        ctx.epoll_ctl(NOT_OPEN, EpollOp::Add, fd, Events::IN, 0),
        Err(Error::BadDescriptor)
    );
    assert_eq!(ctx.epoll_wait(ep, &mut [], 0), Err(Error::InvalidInput));
    let mut out = [EpollEvent::default(); 4];
    ctx.close(ep).unwrap();
    assert_eq!(ctx.epoll_wait(ep, &mut out, 0), Err(Error::BadDescriptor));
}

/// epoll_ctl(2) and epoll_wait(2): "EINVAL: epfd is not an epoll file descriptor" (for an
/// open descriptor of another kind; EBADF is for one that is not open). The crate's own
/// [`Error::InvalidInput`] doc names "epoll_wait on a socket" as its example.
fn epoll_calls_on_a_socket_or_pipe_as_the_epoll_are_einval(mode: Mode) {
    let mut p = Pair::new("epollinval", mode);
    let ctx = &mut p.c;
    let sock = ctx.socket().unwrap();
    let other = ctx.socket().unwrap();
    let (r, _w) = ctx.pipe().unwrap();
    let mut out = [EpollEvent::default(); 4];
    for not_epoll in [sock, r] {
        assert_eq!(
            ctx.epoll_ctl(not_epoll, EpollOp::Add, other, Events::IN, 0),
            Err(Error::InvalidInput),
            "epoll_ctl on {not_epoll}"
        );
        assert_eq!(
            ctx.epoll_wait(not_epoll, &mut out, 0),
            Err(Error::InvalidInput),
            "epoll_wait on {not_epoll}"
        );
    }
}

fn errors_carry_linux_errno_values_and_io_kinds(mode: Mode) {
    let errnos = [
        (Error::WouldBlock, libc::EAGAIN),
        (Error::InProgress, libc::EINPROGRESS),
        (Error::Already, libc::EALREADY),
        (Error::ConnectionRefused, libc::ECONNREFUSED),
        (Error::ConnectionReset, libc::ECONNRESET),
        (Error::ConnectionAborted, libc::ECONNABORTED),
        (Error::TimedOut, libc::ETIMEDOUT),
        (Error::AddrInUse, libc::EADDRINUSE),
        (Error::AddrNotAvailable, libc::EADDRNOTAVAIL),
        (Error::NetworkUnreachable, libc::ENETUNREACH),
        (Error::NotConnected, libc::ENOTCONN),
        (Error::IsConnected, libc::EISCONN),
        (Error::BrokenPipe, libc::EPIPE),
        (Error::BadDescriptor, libc::EBADF),
        (Error::InvalidInput, libc::EINVAL),
        (Error::NotSocket, libc::ENOTSOCK),
        (Error::NotSupported, libc::EOPNOTSUPP),
        (Error::TooManySockets, libc::EMFILE),
        (Error::NoBufferSpace, libc::ENOBUFS),
        (Error::Exists, libc::EEXIST),
        (Error::NotFound, libc::ENOENT),
        (Error::ContextGone, libc::ESHUTDOWN),
    ];
    for (e, errno) in errnos {
        assert_eq!(e.errno(), errno, "{e:?}");
        assert_eq!(io::Error::from(e).raw_os_error(), Some(errno), "{e:?}");
    }
    let kinds = [
        (Error::WouldBlock, io::ErrorKind::WouldBlock),
        (Error::ConnectionRefused, io::ErrorKind::ConnectionRefused),
        (Error::ConnectionReset, io::ErrorKind::ConnectionReset),
        (Error::ConnectionAborted, io::ErrorKind::ConnectionAborted),
        (Error::TimedOut, io::ErrorKind::TimedOut),
        (Error::AddrInUse, io::ErrorKind::AddrInUse),
        (Error::AddrNotAvailable, io::ErrorKind::AddrNotAvailable),
        (Error::NotConnected, io::ErrorKind::NotConnected),
        (Error::BrokenPipe, io::ErrorKind::BrokenPipe),
        (Error::InvalidInput, io::ErrorKind::InvalidInput),
        (Error::Exists, io::ErrorKind::AlreadyExists),
        (Error::NotFound, io::ErrorKind::NotFound),
    ];
    for (e, kind) in kinds {
        assert_eq!(io::Error::from(e).kind(), kind, "{e:?}");
    }
    // The errors calls return convert the same way.
    let mut p = Pair::new("errno", mode);
    let fresh = p.c.socket().unwrap();
    let e = io::Error::from(p.c.read(fresh, &mut [0u8; 4]).unwrap_err());
    assert_eq!(
        (e.kind(), e.raw_os_error()),
        (io::ErrorKind::NotConnected, Some(libc::ENOTCONN))
    );
    let e = io::Error::from(p.c.close(NOT_OPEN).unwrap_err());
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    assert_eq!(
        Error::ConnectionReset.to_string(),
        "connection reset by peer"
    );
}

// ----- connection failures and ends ------------------------------------------------------

fn connect_to_a_closed_port_reports_err_hup_and_the_refusal_once(mode: Mode) {
    let mut p = Pair::new("refused", mode);
    let c = p.c.socket().unwrap();
    let ep = watch(&mut p.c, c, Events::OUT);
    // ERR and HUP are reported to a registration that asked for nothing.
    let nothing = watch(&mut p.c, c, Events::empty());
    assert_eq!(p.c.connect(c, server(CLOSED_PORT)), Err(Error::InProgress));
    p.until("the refusal", |p| {
        ready(&mut p.c, ep, c).contains(Events::ERR)
    });
    let ev = ready(&mut p.c, ep, c);
    assert!(ev.contains(Events::ERR | Events::HUP), "{ev:?}");
    assert_eq!(ready(&mut p.c, nothing, c), Events::ERR | Events::HUP);
    assert_eq!(p.c.take_error(c), Ok(Some(Error::ConnectionRefused)));
    assert_eq!(p.c.take_error(c), Ok(None));
    let ev = ready(&mut p.c, ep, c);
    assert!(
        ev.contains(Events::HUP) && !ev.contains(Events::ERR),
        "{ev:?}"
    );
    assert_eq!(p.c.read(c, &mut [0u8; 4]), Ok(0));
    assert_eq!(p.c.write(c, b"x"), Err(Error::BrokenPipe));
    assert_eq!(p.c.peer_addr(c), Err(Error::NotConnected));
    // getsockopt(SO_ERROR) takes the error the same way.
    let c2 = p.c.socket().unwrap();
    p.c.epoll_ctl(ep, EpollOp::Add, c2, Events::OUT, u64::from(c2))
        .unwrap();
    assert_eq!(p.c.connect(c2, server(CLOSED_PORT)), Err(Error::InProgress));
    p.until("the second refusal", |p| {
        ready(&mut p.c, ep, c2).contains(Events::ERR)
    });
    assert_eq!(
        p.c.getsockopt(c2, SockOptName::Error),
        Ok(SockOpt::Error(Some(Error::ConnectionRefused)))
    );
    assert_eq!(
        p.c.getsockopt(c2, SockOptName::Error),
        Ok(SockOpt::Error(None))
    );
    // A read that finds the error pending returns it (once).
    let c3 = p.c.socket().unwrap();
    assert_eq!(p.c.connect(c3, server(CLOSED_PORT)), Err(Error::InProgress));
    let mut result = None;
    p.until("the third refusal", |p| match p.c.read(c3, &mut [0u8; 4]) {
        Err(Error::WouldBlock) => false,
        r => {
            result = Some(r);
            true
        }
    });
    assert_eq!(result, Some(Err(Error::ConnectionRefused)));
    assert_eq!(p.c.read(c3, &mut [0u8; 4]), Ok(0));
}

/// Linux's connect(2) on a socket whose non-blocking connect failed: the pending error (or
/// `ECONNABORTED` once it was taken), and the socket is unconnected again, so the next
/// connect starts a new attempt. (Some libraries call connect again to learn the outcome;
/// `EALREADY` would make them wait for an event that already happened.)
fn connect_again_after_a_refusal_reports_it_and_then_retries(mode: Mode) {
    let mut p = Pair::new("reconnect", mode);
    let (a, b) = (p.c.socket().unwrap(), p.c.socket().unwrap());
    let ep = p.c.epoll_create(4).unwrap();
    for fd in [a, b] {
        p.c.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, u64::from(fd))
            .unwrap();
        assert_eq!(p.c.connect(fd, server(CLOSED_PORT)), Err(Error::InProgress));
    }
    p.until("both refusals", |p| {
        let mut out = [EpollEvent::default(); 4];
        let n = p.c.epoll_wait(ep, &mut out, 0).unwrap();
        out[..n]
            .iter()
            .filter(|e| e.events.contains(Events::ERR))
            .count()
            == 2
    });
    // The error pending: connect returns it.
    assert_eq!(
        p.c.connect(a, server(CLOSED_PORT)),
        Err(Error::ConnectionRefused)
    );
    // The error taken: ECONNABORTED.
    assert_eq!(p.c.take_error(b), Ok(Some(Error::ConnectionRefused)));
    assert_eq!(
        p.c.connect(b, server(CLOSED_PORT)),
        Err(Error::ConnectionAborted)
    );
    // Then a new attempt, which succeeds once something listens.
    let l = p.listen(PORT);
    p.connect_socket(a, l, PORT);
    assert_eq!(p.c.write(a, b"again"), Ok(5));
}

fn abort_resets_the_peer_which_reads_the_reset_once_then_eof(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("abort", mode);
    let ep = watch(&mut p.s, s, Events::IN);
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
    p.c.abort(c).unwrap();
    assert_eq!(p.c.read(c, &mut [0u8; 4]), Err(Error::BadDescriptor));
    p.until("the reset", |p| {
        ready(&mut p.s, ep, s).contains(Events::ERR)
    });
    let ev = ready(&mut p.s, ep, s);
    assert!(ev.contains(Events::ERR | Events::HUP), "{ev:?}");
    let mut buf = [0u8; 4];
    assert_eq!(p.s.read(s, &mut buf), Err(Error::ConnectionReset));
    assert_eq!(p.s.read(s, &mut buf), Ok(0));
    assert_eq!(p.s.read(s, &mut buf), Ok(0));
    let ev = ready(&mut p.s, ep, s);
    assert!(
        ev.contains(Events::HUP) && !ev.contains(Events::ERR),
        "error taken: {ev:?}"
    );
    // The error was taken by the read: writes now say EPIPE.
    assert_eq!(p.s.write(s, b"x"), Err(Error::BrokenPipe));
    assert_eq!(p.s.take_error(s), Ok(None));
    p.s.close(s).unwrap();
}

/// Linux's tcp_sendmsg after a reset: the pending error first (`ECONNRESET`), then `EPIPE`.
fn after_a_reset_write_reports_the_pending_error_then_broken_pipe(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("reset-write", mode);
    let ep = watch(&mut p.s, s, Events::IN);
    p.c.abort(c).unwrap();
    p.until("the reset", |p| {
        ready(&mut p.s, ep, s).contains(Events::ERR)
    });
    assert_eq!(p.s.write(s, b"x"), Err(Error::ConnectionReset));
    assert_eq!(p.s.write(s, b"x"), Err(Error::BrokenPipe));
    assert_eq!(p.s.writev(s, &[b"x"]), Err(Error::BrokenPipe));
    assert_eq!(p.s.read(s, &mut [0u8; 4]), Ok(0));
    assert_eq!(p.s.take_error(s), Ok(None));
}

fn close_with_unread_data_resets_the_peer(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("close-unread", mode);
    assert_eq!(p.s.write(s, b"unread"), Ok(6));
    p.until_client_holds(c, 6);
    p.c.close(c).unwrap();
    assert_eq!(p.next_server_read(s), Err(Error::ConnectionReset));
    assert_eq!(p.s.read(s, &mut [0u8; 4]), Ok(0));
}

fn close_without_unread_data_ends_gracefully(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("close-read", mode);
    assert_eq!(p.s.write(s, b"read me"), Ok(7));
    p.until_client_holds(c, 7);
    assert_eq!(drain(&mut p.c, c), (b"read me".to_vec(), false));
    p.c.close(c).unwrap();
    assert_eq!(p.next_server_read(s), Ok(0));
    assert_eq!(p.s.take_error(s), Ok(None));
    p.s.close(s).unwrap();
}

/// Two hundred connections opened and closed gracefully from both sides, one after another:
/// descriptor numbers come back (with stack threads, none before the stack released it), so
/// they stay small.
fn graceful_closes_from_both_sides_give_descriptors_back(mode: Mode) {
    let mut p = Pair::new("reuse", mode);
    let l = p.listen(PORT);
    let mut highest = 0;
    for i in 0..200 {
        let (c, s) = p.connect(l, PORT);
        highest = highest.max(c).max(s);
        assert_eq!(p.c.write(c, b"bye"), Ok(3), "round {i}");
        p.c.close(c).unwrap();
        let probe = p.c.socket().unwrap();
        match mode {
            // Not released yet (this side has not polled since): the number is not handed
            // out, as messages about the old socket may still be on their way.
            Mode::Threaded => {
                assert_ne!(probe, c, "round {i}: reused before the stack released it")
            }
            // Calls reach the endpoint directly: nothing about the old socket can follow, so
            // the number is free at once (as on Linux).
            Mode::Rtc => assert_eq!(probe, c, "round {i}: a closed number not reused at once"),
        }
        p.c.close(probe).unwrap();
        let mut got = Vec::new();
        p.until("the client's FIN", |p| {
            let (bytes, eof) = drain(&mut p.s, s);
            got.extend(bytes);
            eof
        });
        assert_eq!(got, b"bye", "round {i}");
        p.s.close(s).unwrap();
    }
    assert!(highest < 8, "descriptor numbers grew to {highest}");
}

// ----- socket options --------------------------------------------------------------------

fn nodelay_round_trips(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("nodelay", mode);
    for (ctx, fd) in [(&mut p.c, c), (&mut p.s, s)] {
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::NoDelay),
            Ok(SockOpt::NoDelay(false))
        );
        ctx.setsockopt(fd, SockOpt::NoDelay(true)).unwrap();
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::NoDelay),
            Ok(SockOpt::NoDelay(true))
        );
        assert_eq!(ctx.nodelay(fd), Ok(true));
        ctx.set_nodelay(fd, false).unwrap();
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::NoDelay),
            Ok(SockOpt::NoDelay(false))
        );
    }
    // Set before connecting, kept after.
    let fresh = p.c.socket().unwrap();
    p.c.setsockopt(fresh, SockOpt::NoDelay(true)).unwrap();
    let l2 = p.listen(PORT + 1);
    p.connect_socket(fresh, l2, PORT + 1);
    assert_eq!(p.c.nodelay(fresh), Ok(true));
    // The connection works with it.
    assert_eq!(p.c.write(fresh, b"a"), Ok(1));
    assert_eq!(p.c.write(fresh, b"b"), Ok(1));
}

/// The configuration's `tcp.nodelay` and `tcp.keepalive*` are the defaults of new sockets
/// ("Disable Nagle's algorithm on new sockets"), and what getsockopt reports.
fn new_sockets_start_with_the_configured_nodelay_and_keepalive(mode: Mode) {
    let link = link("cfg-opts", mode);
    let extra = "nodelay = true\nkeepalive = true\nkeepalive_idle_s = 10\n\
                 keepalive_interval_s = 2\nkeepalive_count = 3\n";
    let mut stacks = Stacks::new(mode);
    let mut ctx = stacks.context(config_with(&link, CLIENT, SERVER, extra));
    let fd = ctx.socket().unwrap();
    assert_eq!(
        ctx.getsockopt(fd, SockOptName::NoDelay),
        Ok(SockOpt::NoDelay(true))
    );
    assert_eq!(
        ctx.getsockopt(fd, SockOptName::KeepAlive),
        Ok(SockOpt::KeepAlive(true))
    );
    assert_eq!(
        ctx.getsockopt(fd, SockOptName::KeepIdle),
        Ok(SockOpt::KeepIdle(10))
    );
    assert_eq!(
        ctx.getsockopt(fd, SockOptName::KeepInterval),
        Ok(SockOpt::KeepInterval(2))
    );
    assert_eq!(
        ctx.getsockopt(fd, SockOptName::KeepCount),
        Ok(SockOpt::KeepCount(3))
    );
}

fn send_buffer_is_clamped_and_bounds_unacknowledged_writes(mode: Mode) {
    let mut p = Pair::new("sndbuf", mode);
    let l = p.listen(PORT);
    let c = p.c.socket().unwrap();
    let get = |ctx: &mut Context, fd| ctx.getsockopt(fd, SockOptName::SendBuffer);
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::SendBuffer(BUFFER)));
    p.c.setsockopt(c, SockOpt::SendBuffer(1)).unwrap();
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::SendBuffer(MIN_SOCKET_BUFFER)));
    p.c.setsockopt(c, SockOpt::SendBuffer(1 << 30)).unwrap();
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::SendBuffer(BUFFER)));
    p.c.setsockopt(c, SockOpt::SendBuffer(SMALL)).unwrap();
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::SendBuffer(SMALL)));
    let s = p.connect_socket(c, l, PORT);
    // Nothing acknowledged yet: at most SO_SNDBUF bytes go in before WouldBlock.
    let payload = pattern(64 * 1024);
    let first = fill(&mut p.c, c, &payload);
    assert!(
        first > 0 && first <= SMALL,
        "{first} bytes before WouldBlock"
    );
    assert_eq!(p.c.write(c, &payload[first..]), Err(Error::WouldBlock));
    // The server does not read. Acknowledgments free room until its buffers are full and
    // its window closes; no burst exceeds SO_SNDBUF, and the writer ends up blocked.
    let (mut sent, mut idle_rounds) = (first, 0);
    for _ in 0..50 {
        p.settle(20);
        let burst = fill(&mut p.c, c, &payload[sent..]);
        assert!(burst <= SMALL, "a burst of {burst} bytes");
        sent += burst;
        idle_rounds = if burst == 0 { idle_rounds + 1 } else { 0 };
        if idle_rounds == 3 {
            break;
        }
    }
    assert_eq!(idle_rounds, 3, "the writer never blocked");
    assert!(
        sent <= SMALL + 2 * BUFFER,
        "{sent} bytes taken: more than SO_SNDBUF and the server's buffers"
    );
    // Everything written arrives, in order.
    let mut got = Vec::new();
    p.until("the bytes written", |p| {
        got.extend(drain(&mut p.s, s).0);
        got.len() >= sent
    });
    assert!(got[..] == payload[..sent], "bytes differ");
}

fn recv_buffer_is_clamped_inherited_and_bounds_what_the_application_holds(mode: Mode) {
    let mut p = Pair::new("rcvbuf", mode);
    let l = p.listen(PORT);
    let get = |ctx: &mut Context, fd| ctx.getsockopt(fd, SockOptName::RecvBuffer);
    assert_eq!(get(&mut p.s, l), Ok(SockOpt::RecvBuffer(BUFFER)));
    p.s.setsockopt(l, SockOpt::RecvBuffer(1)).unwrap();
    assert_eq!(get(&mut p.s, l), Ok(SockOpt::RecvBuffer(MIN_SOCKET_BUFFER)));
    p.s.setsockopt(l, SockOpt::RecvBuffer(1 << 30)).unwrap();
    assert_eq!(get(&mut p.s, l), Ok(SockOpt::RecvBuffer(BUFFER)));
    p.s.setsockopt(l, SockOpt::RecvBuffer(SMALL)).unwrap();
    // Accepted sockets inherit the listener's, as on Linux.
    let (c, s) = p.connect(l, PORT);
    assert_eq!(get(&mut p.s, s), Ok(SockOpt::RecvBuffer(SMALL)));
    // The server does not read: it is given at most SO_RCVBUF bytes, the rest waits in the
    // stacks and the client ends up blocked.
    let payload = pattern(64 * 1024);
    let mut sent = 0;
    for _ in 0..10 {
        sent += fill(&mut p.c, c, &payload[sent..]);
        p.settle(20);
        let held = p.s.bytes_readable(s).unwrap();
        assert!(held <= SMALL, "the server holds {held} bytes");
    }
    assert!(p.s.bytes_readable(s).unwrap() > 0, "nothing arrived");
    assert!(sent < payload.len(), "the client never blocked");
    // Reading lets the rest through, in order, never more than SO_RCVBUF at once.
    let mut got = Vec::new();
    p.until("the whole payload", |p| {
        sent += fill(&mut p.c, c, &payload[sent..]);
        let held = p.s.bytes_readable(s).unwrap();
        assert!(held <= SMALL, "the server holds {held} bytes");
        got.extend(drain(&mut p.s, s).0);
        got.len() == payload.len()
    });
    assert!(got == payload, "bytes differ");
}

fn keepalive_options_round_trip_and_refuse_zero(mode: Mode) {
    let (mut p, _l, c, _s) = Pair::connected("keepalive", mode);
    let fresh = p.c.socket().unwrap();
    for fd in [fresh, c] {
        let ctx = &mut p.c;
        // Linux's defaults.
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepAlive),
            Ok(SockOpt::KeepAlive(false))
        );
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepIdle),
            Ok(SockOpt::KeepIdle(7200))
        );
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepInterval),
            Ok(SockOpt::KeepInterval(75))
        );
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepCount),
            Ok(SockOpt::KeepCount(9))
        );
        for opt in [
            SockOpt::KeepAlive(true),
            SockOpt::KeepIdle(30),
            SockOpt::KeepInterval(5),
            SockOpt::KeepCount(4),
        ] {
            ctx.setsockopt(fd, opt).unwrap();
        }
        for opt in [
            SockOpt::KeepIdle(0),
            SockOpt::KeepInterval(0),
            SockOpt::KeepCount(0),
        ] {
            assert_eq!(ctx.setsockopt(fd, opt), Err(Error::InvalidInput), "{opt:?}");
        }
        // A refused value changes nothing.
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepAlive),
            Ok(SockOpt::KeepAlive(true))
        );
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepIdle),
            Ok(SockOpt::KeepIdle(30))
        );
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepInterval),
            Ok(SockOpt::KeepInterval(5))
        );
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepCount),
            Ok(SockOpt::KeepCount(4))
        );
        ctx.setsockopt(fd, SockOpt::KeepAlive(false)).unwrap();
        assert_eq!(
            ctx.getsockopt(fd, SockOptName::KeepAlive),
            Ok(SockOpt::KeepAlive(false))
        );
    }
    // The connection still works.
    p.settle(5);
    assert_eq!(p.c.write(c, b"x"), Ok(1));
}

fn linger_round_trips_and_zero_makes_close_reset_the_peer(mode: Mode) {
    let (mut p, l, c, s) = Pair::connected("linger", mode);
    let get = |ctx: &mut Context, fd| ctx.getsockopt(fd, SockOptName::Linger);
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::Linger(None)));
    p.c.setsockopt(c, SockOpt::Linger(Some(5))).unwrap();
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::Linger(Some(5))));
    // A non-zero linger closes gracefully (without blocking).
    p.c.close(c).unwrap();
    assert_eq!(p.next_server_read(s), Ok(0));
    assert_eq!(p.s.take_error(s), Ok(None));
    // Zero: close resets.
    let (c, s) = p.connect(l, PORT);
    p.c.setsockopt(c, SockOpt::Linger(Some(0))).unwrap();
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::Linger(Some(0))));
    p.c.close(c).unwrap();
    assert_eq!(p.next_server_read(s), Err(Error::ConnectionReset));
    // And None again means the default.
    let (c, _s) = p.connect(l, PORT);
    p.c.setsockopt(c, SockOpt::Linger(Some(0))).unwrap();
    p.c.setsockopt(c, SockOpt::Linger(None)).unwrap();
    assert_eq!(get(&mut p.c, c), Ok(SockOpt::Linger(None)));
}

fn reuse_addr_round_trips(mode: Mode) {
    let mut p = Pair::new("reuseaddr", mode);
    let fd = p.s.socket().unwrap();
    let get = |ctx: &mut Context| ctx.getsockopt(fd, SockOptName::ReuseAddr);
    assert_eq!(get(&mut p.s), Ok(SockOpt::ReuseAddr(false)));
    p.s.setsockopt(fd, SockOpt::ReuseAddr(true)).unwrap();
    assert_eq!(get(&mut p.s), Ok(SockOpt::ReuseAddr(true)));
    p.s.bind(fd, any(PORT)).unwrap();
    p.s.listen(fd, 8).unwrap();
    assert_eq!(get(&mut p.s), Ok(SockOpt::ReuseAddr(true)));
    p.s.setsockopt(fd, SockOpt::ReuseAddr(false)).unwrap();
    assert_eq!(get(&mut p.s), Ok(SockOpt::ReuseAddr(false)));
}

/// getsockopt(SO_ERROR) takes the pending error (see the refused-connect test too).
fn getsockopt_so_error_takes_the_pending_error(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("so-error", mode);
    assert_eq!(
        p.s.getsockopt(s, SockOptName::Error),
        Ok(SockOpt::Error(None))
    );
    p.c.abort(c).unwrap();
    let ep = watch(&mut p.s, s, Events::IN);
    p.until("the reset", |p| {
        ready(&mut p.s, ep, s).contains(Events::ERR)
    });
    assert_eq!(
        p.s.getsockopt(s, SockOptName::Error),
        Ok(SockOpt::Error(Some(Error::ConnectionReset)))
    );
    assert_eq!(
        p.s.getsockopt(s, SockOptName::Error),
        Ok(SockOpt::Error(None))
    );
    assert_eq!(p.s.read(s, &mut [0u8; 4]), Ok(0));
}

/// SO_ERROR is read-only: Linux's (and BSD's) setsockopt answers `ENOPROTOOPT` for it,
/// which this API names [`Error::NotSupported`].
fn setsockopt_so_error_is_not_supported(mode: Mode) {
    let mut p = Pair::new("set-so-error", mode);
    let fd = p.c.socket().unwrap();
    assert_eq!(
        p.c.setsockopt(fd, SockOpt::Error(None)),
        Err(Error::NotSupported)
    );
    assert_eq!(
        p.c.setsockopt(fd, SockOpt::Error(Some(Error::ConnectionReset))),
        Err(Error::NotSupported)
    );
    assert_eq!(p.c.take_error(fd), Ok(None));
}

// ----- pipes -----------------------------------------------------------------------------

fn a_pipe_carries_bytes_and_epoll_sees_both_ends(mode: Mode) {
    let mut p = Pair::new("pipe", mode);
    let ctx = &mut p.c;
    let (r, w) = ctx.pipe().unwrap();
    assert_ne!(r, w);
    let ep = ctx.epoll_create(4).unwrap();
    ctx.epoll_ctl(ep, EpollOp::Add, r, Events::IN, u64::from(r))
        .unwrap();
    ctx.epoll_ctl(ep, EpollOp::Add, w, Events::OUT, u64::from(w))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(ctx.read(r, &mut buf), Err(Error::WouldBlock));
    assert_eq!(ready(ctx, ep, r), Events::empty());
    assert_eq!(ready(ctx, ep, w), Events::OUT);
    assert_eq!(ctx.write(w, b"through"), Ok(7));
    assert_eq!(ctx.writev(w, &[b" the", b" pipe"]), Ok(9));
    assert_eq!(ready(ctx, ep, r), Events::IN);
    assert_eq!(ready(ctx, ep, w), Events::OUT);
    assert_eq!(ctx.recv(r, &mut buf[..7], true), Ok(7));
    assert_eq!(&buf[..7], b"through");
    assert_eq!(ctx.read(r, &mut buf), Ok(16));
    assert_eq!(&buf, b"through the pipe");
    assert_eq!(ctx.read(r, &mut buf), Err(Error::WouldBlock));
    assert_eq!(ready(ctx, ep, r), Events::empty());
}

fn closing_a_pipe_write_end_gives_eof_and_hup(mode: Mode) {
    let mut p = Pair::new("pipe-wclose", mode);
    let ctx = &mut p.c;
    let (r, w) = ctx.pipe().unwrap();
    let ep = watch(ctx, r, Events::IN);
    assert_eq!(ctx.write(w, b"last"), Ok(4));
    ctx.close(w).unwrap();
    assert_eq!(ctx.write(w, b"x"), Err(Error::BadDescriptor));
    // The bytes written before the close come first, then end of stream.
    assert_eq!(ready(ctx, ep, r), Events::IN | Events::HUP);
    let mut buf = [0u8; 8];
    assert_eq!(ctx.read(r, &mut buf), Ok(4));
    assert_eq!(ctx.read(r, &mut buf), Ok(0));
    assert_eq!(ctx.read(r, &mut buf), Ok(0));
    assert_eq!(ready(ctx, ep, r), Events::HUP);
    ctx.close(r).unwrap();
}

fn closing_a_pipe_read_end_gives_broken_pipe_and_err(mode: Mode) {
    let mut p = Pair::new("pipe-rclose", mode);
    let ctx = &mut p.c;
    let (r, w) = ctx.pipe().unwrap();
    let ep = watch(ctx, w, Events::OUT);
    assert_eq!(ready(ctx, ep, w), Events::OUT);
    ctx.close(r).unwrap();
    assert_eq!(ctx.write(w, b"x"), Err(Error::BrokenPipe));
    assert_eq!(ready(ctx, ep, w), Events::OUT | Events::ERR);
    ctx.close(w).unwrap();
}

fn a_full_pipe_would_block_until_read(mode: Mode) {
    let mut p = Pair::new("pipe-full", mode);
    let ctx = &mut p.c;
    let (r, w) = ctx.pipe().unwrap();
    let ep = watch(ctx, w, Events::OUT);
    let chunk = pattern(10_000);
    let mut total = 0;
    loop {
        match ctx.write(w, &chunk) {
            Ok(n) => total += n,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("write: {e:?}"),
        }
    }
    assert_eq!(total, PIPE_CAPACITY);
    assert_eq!(
        ready(ctx, ep, w),
        Events::empty(),
        "a full pipe is not writable"
    );
    let mut buf = vec![0u8; 1000];
    assert_eq!(ctx.read(r, &mut buf), Ok(1000));
    assert_eq!(&buf[..], &chunk[..1000]);
    assert_eq!(ready(ctx, ep, w), Events::OUT);
    assert_eq!(ctx.write(w, &chunk), Ok(1000));
    assert_eq!(ctx.write(w, &chunk), Err(Error::WouldBlock));
}

fn pipe_ends_refuse_the_wrong_direction(mode: Mode) {
    let mut p = Pair::new("pipe-dir", mode);
    let ctx = &mut p.c;
    let (r, w) = ctx.pipe().unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(ctx.write(r, b"x"), Err(Error::BadDescriptor));
    assert_eq!(ctx.writev(r, &[b"x"]), Err(Error::BadDescriptor));
    assert_eq!(ctx.read(w, &mut buf), Err(Error::BadDescriptor));
    assert_eq!(ctx.recv(w, &mut buf, true), Err(Error::BadDescriptor));
    assert_eq!(ctx.readv(w, &mut [&mut buf]), Err(Error::BadDescriptor));
}

// ----- net::TcpListener and net::TcpStream -----------------------------------------------

/// A [`Pair`]'s contexts shared the `net` way: (client, server, their stacks).
fn shared_pair(test: &str, mode: Mode) -> (SharedContext, SharedContext, Stacks) {
    let Pair { c, s, stacks } = Pair::new(test, mode);
    (Rc::new(RefCell::new(c)), Rc::new(RefCell::new(s)), stacks)
}

/// [`Pair::poll`] for shared contexts.
fn poll_both(c: &SharedContext, s: &SharedContext, stacks: &Stacks) {
    c.borrow_mut().poll().unwrap();
    s.borrow_mut().poll().unwrap();
    stacks.pause();
}

/// Returns once `ctx`'s stack has run every call made before. Without stack threads, a poll
/// does; a stack thread runs its commands in order whenever it gets to them, so this waits for
/// the answer to a later one: `listen`'s (to a throwaway listener on a free port).
fn sync(ctx: &mut Context) {
    let fd = ctx.socket().unwrap();
    ctx.listen(fd, 1).unwrap();
    ctx.close(fd).unwrap();
}

/// Writes as much of `data` as goes in; the bytes taken.
fn write_some(w: &mut impl Write, data: &[u8]) -> usize {
    let mut sent = 0;
    while sent < data.len() {
        match w.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    sent
}

/// Reads what is there into `into`; true at end of stream.
fn read_some(r: &mut impl Read, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn net_streams_echo_through_std_io(mode: Mode) {
    let (cctx, sctx, stacks) = shared_pair("net-echo", mode);
    let listener = TcpListener::bind(&sctx, any(PORT)).unwrap();
    assert_eq!(listener.local_addr().unwrap().port(), PORT);
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    let client = TcpStream::connect(&cctx, server(PORT)).unwrap();
    assert_eq!(
        client.peer_addr().unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
    let (mut accepted, peer) = until("accept", || {
        poll_both(&cctx, &sctx, &stacks);
        listener.accept().ok()
    });
    until("the client connected", || {
        poll_both(&cctx, &sctx, &stacks);
        client.peer_addr().ok()
    });
    assert_eq!(client.peer_addr().unwrap(), server(PORT));
    assert_eq!(client.local_addr().unwrap(), peer);
    assert_eq!(accepted.local_addr().unwrap(), server(PORT));
    assert_eq!(accepted.peer_addr().unwrap(), peer);
    assert!(client.take_error().unwrap().is_none());
    client.set_nodelay(true).unwrap();
    assert_eq!(cctx.borrow().nodelay(client.fd()), Ok(true));
    // Echo 20 000 bytes: the client writes through `&TcpStream`, the server echoes through
    // its owned `TcpStream`.
    let payload = pattern(20_000);
    let (mut sent, mut pending, mut echoed) = (0, Vec::new(), Vec::new());
    until("the echo", || {
        poll_both(&cctx, &sctx, &stacks);
        sent += write_some(&mut &client, &payload[sent..]);
        read_some(&mut accepted, &mut pending);
        let k = write_some(&mut accepted, &pending);
        pending.drain(..k);
        read_some(&mut &client, &mut echoed);
        (echoed.len() == payload.len()).then_some(())
    });
    assert!(echoed == payload, "echoed bytes differ");
    assert!((&client).flush().is_ok());
    // peek leaves the bytes for the read.
    assert_eq!((&client).write(b"peek me").unwrap(), 7);
    let mut buf = [0u8; 16];
    let n = until("bytes to peek", || {
        poll_both(&cctx, &sctx, &stacks);
        accepted.peek(&mut buf).ok().filter(|&n| n == 7)
    });
    assert_eq!(&buf[..n], b"peek me");
    let mut again = [0u8; 16];
    assert_eq!(accepted.read(&mut again).unwrap(), 7);
    assert_eq!(&again[..7], b"peek me");
    // Dropping a stream closes it: the peer reads end of stream.
    drop(client);
    let mut rest = Vec::new();
    until("EOF", || {
        poll_both(&cctx, &sctx, &stacks);
        read_some(&mut accepted, &mut rest).then_some(())
    });
    assert!(rest.is_empty());
    accepted.shutdown(std::net::Shutdown::Write).unwrap();
    drop(accepted);
    // Dropping the listener closes it: connecting is refused. (The server's stack must run the
    // close first, which `sync` waits for: a SYN that reached the listener before would be
    // answered, and the connection reset with the listener instead.)
    drop(listener);
    sync(&mut sctx.borrow_mut());
    let late = TcpStream::connect(&cctx, server(PORT)).unwrap();
    let err = until("the refusal", || {
        poll_both(&cctx, &sctx, &stacks);
        late.take_error().unwrap()
    });
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

// ----- epoll semantics -------------------------------------------------------------------

fn level_triggered_reports_until_the_data_is_read(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("lt", mode);
    let ep = watch(&mut p.s, s, Events::IN);
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
    assert_eq!(p.c.write(c, b"data"), Ok(4));
    p.until_server_holds(s, 4);
    assert_eq!(ready(&mut p.s, ep, s), Events::IN);
    assert_eq!(ready(&mut p.s, ep, s), Events::IN, "still unread");
    assert_eq!(p.s.read(s, &mut [0u8; 2]), Ok(2));
    assert_eq!(ready(&mut p.s, ep, s), Events::IN, "half read");
    assert_eq!(p.s.read(s, &mut [0u8; 8]), Ok(2));
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
}

fn edge_triggered_reports_once_per_arrival(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("et", mode);
    let ep = watch(&mut p.s, s, Events::IN | Events::ET);
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
    assert_eq!(p.c.write(c, b"one"), Ok(3));
    p.until_server_holds(s, 3);
    assert_eq!(ready(&mut p.s, ep, s), Events::IN);
    assert_eq!(
        ready(&mut p.s, ep, s),
        Events::empty(),
        "no new arrival, though unread"
    );
    assert_eq!(p.c.write(c, b"two"), Ok(3));
    p.until_server_holds(s, 6);
    assert_eq!(ready(&mut p.s, ep, s), Events::IN, "a new arrival");
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
    assert_eq!(drain(&mut p.s, s), (b"onetwo".to_vec(), false));
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
}

fn oneshot_reports_once_until_rearmed_with_mod(mode: Mode) {
    let (mut p, _l, c, s) = Pair::connected("oneshot", mode);
    let ep = watch(&mut p.s, s, Events::IN | Events::ONESHOT);
    assert_eq!(p.c.write(c, b"one"), Ok(3));
    p.until_server_holds(s, 3);
    assert_eq!(ready(&mut p.s, ep, s), Events::IN);
    assert_eq!(ready(&mut p.s, ep, s), Events::empty(), "disarmed");
    assert_eq!(drain(&mut p.s, s).0, b"one");
    assert_eq!(p.c.write(c, b"two"), Ok(3));
    p.until_server_holds(s, 3);
    assert_eq!(
        ready(&mut p.s, ep, s),
        Events::empty(),
        "disarmed: new data is not reported"
    );
    p.s.epoll_ctl(
        ep,
        EpollOp::Mod,
        s,
        Events::IN | Events::ONESHOT,
        u64::from(s),
    )
    .unwrap();
    assert_eq!(ready(&mut p.s, ep, s), Events::IN, "re-armed, data waiting");
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
}

fn epoll_wait_returns_at_once_or_after_its_timeout(mode: Mode) {
    let (mut p, _l, _c, s) = Pair::connected("timeout", mode);
    let ep = watch(&mut p.s, s, Events::IN);
    let mut out = [EpollEvent::default(); 4];
    assert_eq!(p.s.epoll_wait(ep, &mut out, 0), Ok(0));
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert_eq!(p.s.epoll_wait(ep, &mut out, 50), Ok(0));
    assert!(
        start.elapsed() >= timeout,
        "returned after {:?}",
        start.elapsed()
    );
    // Something ready is reported without waiting for the timeout.
    let other = p.s.epoll_create(1).unwrap();
    let (r, w) = p.s.pipe().unwrap();
    p.s.epoll_ctl(other, EpollOp::Add, r, Events::IN, 7)
        .unwrap();
    p.s.write(w, b"x").unwrap();
    assert_eq!(p.s.epoll_wait(other, &mut out, -1), Ok(1));
    assert_eq!(
        out[0],
        EpollEvent {
            events: Events::IN,
            data: 7
        }
    );
}

fn closing_a_registered_socket_removes_it_from_the_epoll(mode: Mode) {
    let (mut p, l, c, s) = Pair::connected("epoll-close", mode);
    let ep = watch(&mut p.s, s, Events::IN | Events::OUT);
    assert_eq!(ready(&mut p.s, ep, s), Events::OUT);
    p.s.close(s).unwrap();
    assert_eq!(ready(&mut p.s, ep, s), Events::empty());
    assert_eq!(
        p.s.epoll_ctl(ep, EpollOp::Del, s, Events::empty(), 0),
        Err(Error::BadDescriptor)
    );
    // The peer's answer (FIN, data, reset) reaches nobody.
    let _ = p.c.write(c, b"late");
    p.settle(30);
    let mut out = [EpollEvent::default(); 4];
    assert_eq!(p.s.epoll_wait(ep, &mut out, 0), Ok(0));
    // A new socket, maybe with the same number, is not registered.
    let (_c2, s2) = p.connect(l, PORT);
    assert_eq!(p.s.epoll_wait(ep, &mut out, 0), Ok(0));
    p.s.epoll_ctl(ep, EpollOp::Add, s2, Events::OUT, u64::from(s2))
        .unwrap();
    assert_eq!(ready(&mut p.s, ep, s2), Events::OUT);
}

// ----- stack threads ---------------------------------------------------------------------

/// Waits on `ep` (with timeouts) until `fd` reports any of `want`; the flags seen.
fn wait_for(ctx: &mut Context, ep: Fd, fd: Fd, want: Events) -> Events {
    until("an epoll event", || {
        let mut out = [EpollEvent::default(); 16];
        let n = ctx.epoll_wait(ep, &mut out, 20).unwrap();
        out[..n]
            .iter()
            .find(|e| e.data == u64::from(fd) && e.events.intersects(want))
            .map(|e| e.events)
    })
}

#[test]
fn stack_threads_carry_an_exchange_and_destroy_reports_their_frames() {
    let link = link("threads", Mode::Threaded);
    let mut srv = mtcp_api::init(config(&link, SERVER, CLIENT)).unwrap();
    let mut cli = mtcp_api::init(config(&link, CLIENT, SERVER)).unwrap();
    let (mut s, mut c) = (srv.context(0).unwrap(), cli.context(0).unwrap());
    let l = s.socket().unwrap();
    s.bind(l, any(PORT)).unwrap();
    s.listen(l, 8).unwrap();
    let sep = watch(&mut s, l, Events::IN);
    let fd = c.socket().unwrap();
    let cep = watch(&mut c, fd, Events::OUT);
    assert_eq!(c.connect(fd, server(PORT)), Err(Error::InProgress));
    let ev = wait_for(&mut c, cep, fd, Events::OUT | Events::ERR);
    assert!(!ev.contains(Events::ERR), "connect failed: {ev:?}");
    wait_for(&mut s, sep, l, Events::IN);
    let (a, peer) = s.accept(l).unwrap();
    assert_eq!(Ok(peer), c.local_addr(fd));
    s.epoll_ctl(sep, EpollOp::Add, a, Events::IN, u64::from(a))
        .unwrap();
    c.epoll_ctl(cep, EpollOp::Mod, fd, Events::IN, u64::from(fd))
        .unwrap();
    assert_eq!(c.write(fd, b"ping"), Ok(4));
    wait_for(&mut s, sep, a, Events::IN);
    assert_eq!(drain(&mut s, a), (b"ping".to_vec(), false));
    assert_eq!(s.write(a, b"pong"), Ok(4));
    wait_for(&mut c, cep, fd, Events::IN);
    assert_eq!(drain(&mut c, fd), (b"pong".to_vec(), false));
    c.close(fd).unwrap();
    wait_for(&mut s, sep, a, Events::IN);
    assert_eq!(drain(&mut s, a), (Vec::new(), true));
    s.close(a).unwrap();
    for stats in cli.destroy().into_iter().chain(srv.destroy()) {
        let stats = stats.unwrap();
        assert!(stats.frames_in > 0 && stats.frames_out > 0, "{stats:?}");
    }
}

/// `Mtcp::destroy`: "Contexts still held by applications become unusable
/// (`Error::ContextGone`)": every call that needs the stack says so, and so does `socket`
/// once the context knows.
#[test]
fn contexts_held_after_destroy_are_gone() {
    let link = link("gone", Mode::Threaded);
    let mut srv = mtcp_api::init(config(&link, SERVER, CLIENT)).unwrap();
    let mut cli = mtcp_api::init(config(&link, CLIENT, SERVER)).unwrap();
    let (mut s, mut c) = (srv.context(0).unwrap(), cli.context(0).unwrap());
    let l = s.socket().unwrap();
    s.bind(l, any(PORT)).unwrap();
    let fd = c.socket().unwrap();
    let ep = c.epoll_create(4).unwrap();
    let sep = s.epoll_create(4).unwrap();
    // While the stacks run, a timed wait with nothing to report returns 0 after its timeout.
    let mut out = [EpollEvent::default(); 4];
    let start = Instant::now();
    assert_eq!(c.epoll_wait(ep, &mut out, 30), Ok(0));
    assert!(start.elapsed() >= Duration::from_millis(30));
    for stats in cli.destroy().into_iter().chain(srv.destroy()) {
        stats.unwrap();
    }
    assert_eq!(c.connect(fd, server(PORT)), Err(Error::ContextGone));
    assert_eq!(s.listen(l, 8), Err(Error::ContextGone));
    assert_eq!(c.epoll_wait(ep, &mut out, 10), Err(Error::ContextGone));
    assert_eq!(s.epoll_wait(sep, &mut out, 0), Err(Error::ContextGone));
    assert_eq!(c.poll(), Err(Error::ContextGone));
    assert_eq!(c.socket(), Err(Error::ContextGone));
    assert_eq!(s.socket(), Err(Error::ContextGone));
    assert_eq!(c.pipe(), Err(Error::ContextGone));
    assert_eq!(c.epoll_create(4), Err(Error::ContextGone));
}

// ----- both modes ------------------------------------------------------------------------

/// `#[test]`s `rtc::NAME` and `threaded::NAME` for each test body `fn NAME(mode: Mode)`.
macro_rules! in_both_modes {
    ($($name:ident,)*) => {
        mod rtc {
            $(#[test]
            fn $name() {
                super::$name(super::Mode::Rtc);
            })*
        }
        mod threaded {
            $(#[test]
            fn $name() {
                super::$name(super::Mode::Threaded);
            })*
        }
    };
}

in_both_modes! {
    getsockname_and_getpeername_name_both_ends,
    getsockname_after_a_wildcard_bind_is_the_wildcard,
    read_write_readv_and_writev_keep_the_byte_order,
    recv_with_peek_leaves_the_data_and_fionread_counts_it,
    shutdown_write_sends_eof_and_the_peer_can_still_reply,
    shutdown_read_makes_own_reads_return_eof,
    calls_on_a_descriptor_that_is_not_open_are_ebadf,
    socket_calls_on_epoll_and_pipe_descriptors_are_enotsock,
    bind_twice_or_to_a_foreign_address_fails,
    a_second_listener_on_the_same_port_is_addr_in_use,
    listen_without_a_port_binds_an_ephemeral_one,
    accept_needs_a_listener_and_a_waiting_connection,
    data_calls_on_a_fresh_socket_are_not_connected,
    connect_is_in_progress_then_already_then_is_connected,
    write_after_shutdown_write_is_broken_pipe,
    epoll_ctl_and_epoll_wait_refuse_bad_arguments,
    epoll_calls_on_a_socket_or_pipe_as_the_epoll_are_einval,
    errors_carry_linux_errno_values_and_io_kinds,
    connect_to_a_closed_port_reports_err_hup_and_the_refusal_once,
    connect_again_after_a_refusal_reports_it_and_then_retries,
    abort_resets_the_peer_which_reads_the_reset_once_then_eof,
    after_a_reset_write_reports_the_pending_error_then_broken_pipe,
    close_with_unread_data_resets_the_peer,
    close_without_unread_data_ends_gracefully,
    graceful_closes_from_both_sides_give_descriptors_back,
    nodelay_round_trips,
    new_sockets_start_with_the_configured_nodelay_and_keepalive,
    send_buffer_is_clamped_and_bounds_unacknowledged_writes,
    recv_buffer_is_clamped_inherited_and_bounds_what_the_application_holds,
    keepalive_options_round_trip_and_refuse_zero,
    linger_round_trips_and_zero_makes_close_reset_the_peer,
    reuse_addr_round_trips,
    getsockopt_so_error_takes_the_pending_error,
    setsockopt_so_error_is_not_supported,
    a_pipe_carries_bytes_and_epoll_sees_both_ends,
    closing_a_pipe_write_end_gives_eof_and_hup,
    closing_a_pipe_read_end_gives_broken_pipe_and_err,
    a_full_pipe_would_block_until_read,
    pipe_ends_refuse_the_wrong_direction,
    net_streams_echo_through_std_io,
    level_triggered_reports_until_the_data_is_read,
    edge_triggered_reports_once_per_arrival,
    oneshot_reports_once_until_rearmed_with_mod,
    epoll_wait_returns_at_once_or_after_its_timeout,
    closing_a_registered_socket_removes_it_from_the_epoll,
}
