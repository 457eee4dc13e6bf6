//! Client and server contexts over a shared-memory link (no root): the socket calls and
//! epoll end to end, in threaded and run-to-completion modes.

use core::net::{Ipv4Addr, SocketAddrV4};
use mtcp_api::{Config, Context, EpollEvent, EpollOp, Error, Events, Fd};
use std::time::{Duration, Instant};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config(link: &str, me: Ipv4Addr, peer: Ipv4Addr) -> Config {
    let mut c = Config::shm_host(link, me, peer);
    c.pin_threads = false;
    c.secret = Some([u32::from(me) as u8; 16]);
    c.tcp.max_concurrency = 20_000;
    (c.tcp.send_buffer, c.tcp.recv_buffer) = (16_384, 16_384);
    c.tcp.time_wait_ms = 100;
    c
}

fn unique(tag: &str) -> String {
    format!("mtcp-api-{tag}-{}", std::process::id())
}

/// Waits on `ep` until `fd` reports any of `want`; the flags seen.
fn wait_for(ctx: &mut Context, ep: Fd, fd: Fd, want: Events) -> Events {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = [EpollEvent::default(); 64];
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want:?} on {fd}"
        );
        let n = ctx.epoll_wait(ep, &mut out, 100).unwrap();
        for e in &out[..n] {
            if e.data == u64::from(fd) && e.events.intersects(want) {
                return e.events;
            }
        }
    }
}

/// Reads what is there; true at end of stream.
fn drain(ctx: &mut Context, fd: Fd, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match ctx.read(fd, &mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => return false,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Writes as much of `data[*sent..]` as fits.
fn push(ctx: &mut Context, fd: Fd, data: &[u8], sent: &mut usize) {
    while *sent < data.len() {
        match ctx.write(fd, &data[*sent..]) {
            Ok(n) => *sent += n,
            Err(Error::WouldBlock) => return,
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// An echo server on port 8080 for one connection; tells `ready` once listening, and keeps
/// its stack running until `done` (a run-to-completion context only moves while called).
fn echo_server(
    mut server: Context,
    ready: std::sync::mpsc::Sender<()>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Context {
    let l = server.socket().unwrap();
    server
        .bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))
        .unwrap();
    server.listen(l, 16).unwrap();
    ready.send(()).unwrap();
    let ep = server.epoll_create(16).unwrap();
    server
        .epoll_ctl(ep, EpollOp::Add, l, Events::IN, u64::from(l))
        .unwrap();
    wait_for(&mut server, ep, l, Events::IN);
    let (c, peer) = server.accept(l).unwrap();
    assert_eq!(*peer.ip(), CLIENT);
    assert_eq!(server.accept(l), Err(Error::WouldBlock));
    assert_eq!(
        server.local_addr(c).unwrap(),
        SocketAddrV4::new(SERVER, 8080)
    );
    server
        .epoll_ctl(ep, EpollOp::Add, c, Events::IN | Events::OUT, u64::from(c))
        .unwrap();
    let (mut data, mut sent, mut eof) = (Vec::new(), 0, false);
    while !(eof && sent == data.len()) {
        wait_for(&mut server, ep, c, Events::IN | Events::OUT);
        eof |= drain(&mut server, c, &mut data);
        push(&mut server, c, &data.clone(), &mut sent);
    }
    server.close(c).unwrap();
    let mut out = [EpollEvent::default(); 8];
    while !done.load(std::sync::atomic::Ordering::Acquire) {
        server.epoll_wait(ep, &mut out, 5).unwrap();
    }
    server
}

/// One echo exchange between a server and a client context, each driven by its own thread:
/// 40 000 bytes each way, then a graceful close from both sides.
fn echo_exchange(server: Context, mut client: Context) -> Context {
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let srv = std::thread::spawn(move || echo_server(server, ready_tx, done2));
    ready_rx.recv().unwrap();
    let ep = client.epoll_create(16).unwrap();
    let s = client.socket().unwrap();
    // A fresh socket polls as OUT|HUP, as on Linux.
    client
        .epoll_ctl(ep, EpollOp::Add, s, Events::OUT | Events::IN, u64::from(s))
        .unwrap();
    assert_eq!(
        client.connect(s, SocketAddrV4::new(SERVER, 8080)),
        Err(Error::InProgress)
    );
    assert_eq!(
        client.connect(s, SocketAddrV4::new(SERVER, 8080)),
        Err(Error::Already)
    );
    let ev = wait_for(&mut client, ep, s, Events::OUT | Events::ERR);
    assert!(!ev.contains(Events::ERR), "connect failed: {ev:?}");
    assert_eq!(*client.peer_addr(s).unwrap().ip(), SERVER);
    let (mut got, mut sent, mut shut) = (Vec::new(), 0, false);
    loop {
        wait_for(&mut client, ep, s, Events::IN | Events::OUT);
        push(&mut client, s, &payload, &mut sent);
        if sent == payload.len() && !shut {
            client.shutdown(s, mtcp_api::Shutdown::Write).unwrap();
            assert_eq!(client.write(s, b"x"), Err(Error::BrokenPipe));
            shut = true;
        }
        if drain(&mut client, s, &mut got) {
            break;
        }
    }
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "echoed bytes differ");
    client.close(s).unwrap();
    assert_eq!(client.read(s, &mut [0u8; 4]), Err(Error::BadDescriptor));
    done.store(true, std::sync::atomic::Ordering::Release);
    srv.join().unwrap();
    client
}

#[test]
fn echo_over_shm_with_stack_threads() {
    let link = unique("threads");
    let mut srv = mtcp_api::init(config(&link, SERVER, CLIENT)).unwrap();
    let mut cli = mtcp_api::init(config(&link, CLIENT, SERVER)).unwrap();
    let (s, c) = (srv.context(0).unwrap(), cli.context(0).unwrap());
    assert!(
        srv.context(0).is_none(),
        "a core's context is handed out once"
    );
    echo_exchange(s, c);
    for r in cli.destroy().into_iter().chain(srv.destroy()) {
        let stats = r.unwrap();
        assert!(stats.frames_in > 0 && stats.frames_out > 0);
    }
}

#[test]
fn echo_over_shm_run_to_completion() {
    let link = unique("rtc");
    let s = Context::run_to_completion(&config(&link, SERVER, CLIENT), 0).unwrap();
    let c = Context::run_to_completion(&config(&link, CLIENT, SERVER), 0).unwrap();
    assert_eq!(c.stats().unwrap().frames_out, 0);
    let c = echo_exchange(s, c);
    let stats = c.stats().unwrap();
    assert!(stats.frames_out > 0 && stats.bytes_in > 40_000, "{stats}");
    assert_eq!(stats.connects, 1);
}

/// Running out of local ports is an error on the socket (ERR, `SO_ERROR` =
/// `AddrNotAvailable`), not a hang.
#[test]
fn port_exhaustion_is_an_error() {
    let link = unique("ports");
    let mut cfg = config(&link, CLIENT, SERVER);
    cfg.tcp.ephemeral_ports = 50000..=50003;
    let mut s = Context::run_to_completion(&config(&link, SERVER, CLIENT), 0).unwrap();
    let mut c = Context::run_to_completion(&cfg, 0).unwrap();
    let l = s.socket().unwrap();
    s.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))
        .unwrap();
    s.listen(l, 16).unwrap();
    let ep = c.epoll_create(8).unwrap();
    let mut fds = Vec::new();
    for _ in 0..5 {
        let fd = c.socket().unwrap();
        c.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, u64::from(fd))
            .unwrap();
        assert_eq!(
            c.connect(fd, SocketAddrV4::new(SERVER, 8080)),
            Err(Error::InProgress)
        );
        fds.push(fd);
    }
    let mut ready = std::collections::BTreeMap::new();
    let mut out = [EpollEvent::default(); 8];
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready.len() < 5 {
        assert!(Instant::now() < deadline, "only {ready:?}");
        s.poll().unwrap();
        let n = c.epoll_wait(ep, &mut out, 1).unwrap();
        for e in &out[..n] {
            ready.insert(e.data as Fd, e.events);
        }
        while s.accept(l).is_ok() {}
    }
    let failed: Vec<Fd> = fds
        .iter()
        .copied()
        .filter(|fd| ready[fd].contains(Events::ERR))
        .collect();
    assert_eq!(
        failed,
        vec![fds[4]],
        "four ports, so the fifth connect fails: {ready:?}"
    );
    assert_eq!(c.take_error(fds[4]).unwrap(), Some(Error::AddrNotAvailable));
}

/// A small `SO_SNDBUF` keeps a stream moving: credit comes back as data is acknowledged, so
/// 200 000 bytes through a 4 KiB send buffer all arrive.
#[test]
fn a_small_send_buffer_still_streams() {
    let link = unique("sndbuf");
    let mut s = Context::run_to_completion(&config(&link, SERVER, CLIENT), 0).unwrap();
    let mut c = Context::run_to_completion(&config(&link, CLIENT, SERVER), 0).unwrap();
    let l = s.socket().unwrap();
    s.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))
        .unwrap();
    s.listen(l, 16).unwrap();
    let fd = c.socket().unwrap();
    c.setsockopt(fd, mtcp_api::SockOpt::SendBuffer(4096))
        .unwrap();
    assert_eq!(
        c.connect(fd, SocketAddrV4::new(SERVER, 8080)),
        Err(Error::InProgress)
    );
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let (mut sent, mut got, mut conn) = (0, Vec::new(), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < data.len() {
        assert!(
            Instant::now() < deadline,
            "stuck at {} of {} bytes",
            got.len(),
            data.len()
        );
        c.poll().unwrap();
        s.poll().unwrap();
        if conn.is_none() {
            conn = s.accept(l).ok().map(|(x, _)| x);
        }
        match c.write(fd, &data[sent..]) {
            Ok(n) => {
                assert!(n <= 4096);
                sent += n;
            }
            Err(Error::WouldBlock) | Err(Error::NotConnected) => {}
            Err(e) => panic!("write: {e}"),
        }
        if let Some(x) = conn {
            drain(&mut s, x, &mut got);
        }
    }
    assert!(got == data);
}

/// Dropping a run-to-completion context closes its connections as `close` would: the peer
/// reads the bytes written last and then the end of the stream (a FIN), not silence.
#[test]
fn dropping_a_run_to_completion_context_closes_its_connections() {
    let link = unique("drop-rtc");
    let mut s = Context::run_to_completion(&config(&link, SERVER, CLIENT), 0).unwrap();
    let mut c = Context::run_to_completion(&config(&link, CLIENT, SERVER), 0).unwrap();
    let l = s.socket().unwrap();
    s.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))
        .unwrap();
    s.listen(l, 16).unwrap();
    let fd = c.socket().unwrap();
    assert_eq!(
        c.connect(fd, SocketAddrV4::new(SERVER, 8080)),
        Err(Error::InProgress)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        assert!(Instant::now() < deadline, "no connection");
        c.poll().unwrap();
        s.poll().unwrap();
        if let Ok((conn, _)) = s.accept(l) {
            break conn;
        }
    };
    while c.peer_addr(fd).is_err() {
        assert!(Instant::now() < deadline, "not connected");
        c.poll().unwrap();
        s.poll().unwrap();
    }
    assert_eq!(c.write(fd, b"last words"), Ok(10));
    drop(c);
    let mut got = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "got {got:?} and no end of stream"
        );
        s.poll().unwrap();
        if drain(&mut s, conn, &mut got) {
            break;
        }
    }
    assert_eq!(got, b"last words");
}

/// A run-to-completion context reports its endpoint's heap: unread bytes are held in the
/// receiving connection's buffer, and once both connections have closed (and TIME-WAIT has
/// passed) the buffers are gone again; what stays is the table's and the storage pool's
/// capacity, kept for the next connections.
#[test]
fn memory_usage_follows_the_buffers_held() {
    let link = unique("memory");
    let mut s = Context::run_to_completion(&config(&link, SERVER, CLIENT), 0).unwrap();
    let mut c = Context::run_to_completion(&config(&link, CLIENT, SERVER), 0).unwrap();
    let l = s.socket().unwrap();
    s.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))
        .unwrap();
    s.listen(l, 16).unwrap();
    let before = s.memory_usage().unwrap();
    let fd = c.socket().unwrap();
    assert_eq!(
        c.connect(fd, SocketAddrV4::new(SERVER, 8080)),
        Err(Error::InProgress)
    );
    let data = vec![7u8; 12_000];
    let (mut sent, mut conn) = (0, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        assert!(Instant::now() < deadline, "sent {sent}");
        c.poll().unwrap();
        s.poll().unwrap();
        if conn.is_none() {
            conn = s.accept(l).ok().map(|(x, _)| x);
        }
        push(&mut c, fd, &data, &mut sent);
        if let Some(x) = conn {
            if sent == data.len() && s.bytes_readable(x).unwrap() == data.len() {
                break x;
            }
        }
    };
    let holding = s.memory_usage().unwrap();
    assert!(
        holding >= before + data.len(),
        "{holding} bytes with {} unread, {before} before",
        data.len()
    );
    let mut got = Vec::new();
    drain(&mut s, conn, &mut got);
    assert_eq!(got.len(), data.len());
    c.close(fd).unwrap();
    s.close(conn).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.stats().unwrap().open > 1 || c.stats().unwrap().open > 0 {
        assert!(Instant::now() < deadline, "connections left open");
        c.poll().unwrap();
        s.poll().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = s.memory_usage().unwrap();
    assert!(
        after < before + 4096,
        "{after} bytes after the close, {before} before, {holding} holding"
    );
}
