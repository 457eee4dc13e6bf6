//! Creating and destroying contexts leaks nothing: 100 rounds of `init` (two stacks of two
//! cores each, linked over shared memory), a connection, and `destroy` leave the process with
//! the threads, descriptors and shared-memory files it had before, and its resident memory
//! does not keep growing.

use core::net::{Ipv4Addr, SocketAddrV4};
use mtcp_api::{Config, EpollEvent, EpollOp, Error, Events};
use std::time::{Duration, Instant};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config(link: &str, me: Ipv4Addr, peer: Ipv4Addr) -> Config {
    let mut c = Config::shm_host(link, me, peer);
    c.cores = 2;
    c.port = format!("shm:{link}/q=2");
    c.pin_threads = false;
    c.tcp.max_concurrency = 1024;
    (c.tcp.send_buffer, c.tcp.recv_buffer) = (8192, 8192);
    c
}

/// The tests of this file take turns: one counts the process's threads and descriptors,
/// which the other's would disturb.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn shm_files(tag: &str) -> usize {
    std::fs::read_dir("/dev/shm").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(tag))
            .count()
    })
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One round: both stacks up, one connection with an exchange, both down.
fn round(i: usize, tag: &str) {
    let link = format!("{tag}-{i}");
    let mut srv = mtcp_api::init(config(&link, SERVER, CLIENT)).unwrap();
    let mut cli = mtcp_api::init(config(&link, CLIENT, SERVER)).unwrap();
    let mut s = srv.context(0).unwrap();
    let mut c = cli.context(0).unwrap();
    let l = s.socket().unwrap();
    s.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
        .unwrap();
    s.listen(l, 8).unwrap();
    let ep = c.epoll_create(4).unwrap();
    let fd = c.socket().unwrap();
    c.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 0).unwrap();
    assert_eq!(
        c.connect(fd, SocketAddrV4::new(SERVER, 80)),
        Err(Error::InProgress)
    );
    let mut out = [EpollEvent::default(); 4];
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.epoll_wait(ep, &mut out, 10).unwrap() == 0 {
        assert!(Instant::now() < deadline, "round {i}: no connection");
    }
    assert!(
        !out[0].events.contains(Events::ERR),
        "round {i}: {:?}",
        out[0].events
    );
    assert_eq!(c.write(fd, b"ping"), Ok(4));
    drop((s, c));
    for r in cli.destroy().into_iter().chain(srv.destroy()) {
        r.unwrap();
    }
}

#[test]
fn a_hundred_inits_and_destroys_leak_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tag = format!("mtcp-life-{}", std::process::id());
    // Warm up once: the first round allocates what the process keeps anyway.
    round(0, &tag);
    let (threads, fds, rss) = (count("/proc/self/task"), count("/proc/self/fd"), rss_kib());
    for i in 1..=100 {
        round(i, &tag);
    }
    // A joined thread's /proc entry may outlive the join briefly, and the test harness's
    // own threads come and go: a leak is a count that stays above the baseline.
    let settled = |dir: &str, base: usize| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while count(dir) > base && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        count(dir)
    };
    let (t, f) = (
        settled("/proc/self/task", threads),
        settled("/proc/self/fd", fds),
    );
    assert!(
        t <= threads,
        "threads left behind: {t} after, {threads} before"
    );
    assert!(f <= fds, "descriptors left behind: {f} after, {fds} before");
    assert_eq!(shm_files(&tag), 0, "shared-memory files left behind");
    let grown = rss_kib().saturating_sub(rss);
    println!("resident memory grew by {grown} KiB over 100 rounds");
    assert!(
        grown < 64 * 1024,
        "resident memory grew by {grown} KiB over 100 rounds"
    );
}

/// `destroy` closes what is open: the peer of a connection whose stack is destroyed reads
/// the data written just before and then end of stream (a FIN, not silence).
#[test]
fn destroy_closes_open_connections() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let link = format!("mtcp-life-close-{}", std::process::id());
    let mut srv = mtcp_api::init(config(&link, SERVER, CLIENT)).unwrap();
    let mut cli = mtcp_api::init(config(&link, CLIENT, SERVER)).unwrap();
    let mut s = srv.context(0).unwrap();
    let mut c = cli.context(0).unwrap();
    let l = s.socket().unwrap();
    s.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
        .unwrap();
    s.listen(l, 8).unwrap();
    let ep = c.epoll_create(4).unwrap();
    let fd = c.socket().unwrap();
    c.epoll_ctl(ep, EpollOp::Add, fd, Events::IN | Events::RDHUP, 0)
        .unwrap();
    assert_eq!(
        c.connect(fd, SocketAddrV4::new(SERVER, 80)),
        Err(Error::InProgress)
    );
    let sep = s.epoll_create(4).unwrap();
    s.epoll_ctl(sep, EpollOp::Add, l, Events::IN, 0).unwrap();
    let mut out = [EpollEvent::default(); 4];
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.epoll_wait(sep, &mut out, 10).unwrap() == 0 {
        assert!(Instant::now() < deadline, "no connection");
    }
    let (conn, _) = s.accept(l).unwrap();
    assert_eq!(s.write(conn, b"last words"), Ok(10));
    drop(s);
    for r in srv.destroy() {
        r.unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        assert!(Instant::now() < deadline, "no end of stream; got {got:?}");
        c.epoll_wait(ep, &mut out, 10).unwrap();
        match c.read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(got, b"last words");
    drop(c);
    for r in cli.destroy() {
        r.unwrap();
    }
}
