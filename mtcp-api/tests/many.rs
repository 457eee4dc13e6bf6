//! 10 000 concurrent connections on 2 cores over shared memory (no root): client and server
//! each run two stack threads; every client core opens 5 000 connections, each sends a
//! request and reads its echo, and all 10 000 stay open at once before being closed. Each
//! flow must be handled by the same core on both sides (the counters show no misrouted
//! flow), and every byte must come back.

use core::net::{Ipv4Addr, SocketAddrV4};
use mtcp_api::{Config, Context, EpollEvent, EpollOp, Error, Events, Fd};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PER_CORE: usize = 5_000;
const PORT: u16 = 7000;

fn config(link: &str, me: Ipv4Addr, peer: Ipv4Addr) -> Config {
    let mut c = Config::shm_host(link, me, peer);
    c.cores = 2;
    c.port = format!("shm:{link}/q=2,slots=1024");
    c.pin_threads = false;
    c.secret = Some([u32::from(me) as u8; 16]);
    c.tcp.max_concurrency = 20_000;
    (c.tcp.send_buffer, c.tcp.recv_buffer) = (4096, 4096);
    c.tcp.time_wait_ms = 1000;
    c.run_loop.command_queue = 16_384;
    c
}

fn request(core: usize, i: usize) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&(core as u64).to_le_bytes());
    r[8..].copy_from_slice(&(i as u64).to_le_bytes());
    r
}

/// Echo server of one core: accepts, echoes what arrives, closes on the client's FIN.
/// Returns the connections it accepted.
fn server(mut ctx: Context, stop: Arc<AtomicBool>, ready: Arc<AtomicUsize>) -> usize {
    let l = ctx.socket().unwrap();
    ctx.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
        .unwrap();
    ctx.listen(l, 4096).unwrap();
    let ep = ctx.epoll_create(20_000).unwrap();
    ctx.epoll_ctl(ep, EpollOp::Add, l, Events::IN, u64::from(l))
        .unwrap();
    ready.fetch_add(1, Ordering::Release);
    let mut events = vec![EpollEvent::default(); 1024];
    let mut accepted = 0;
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Acquire) {
        let n = ctx.epoll_wait(ep, &mut events, 10).unwrap();
        for e in &events[..n] {
            let fd = e.data as Fd;
            if fd == l {
                while let Ok((c, _)) = ctx.accept(l) {
                    accepted += 1;
                    ctx.epoll_ctl(ep, EpollOp::Add, c, Events::IN, u64::from(c))
                        .unwrap();
                }
                continue;
            }
            loop {
                match ctx.read(fd, &mut buf) {
                    Ok(0) => {
                        ctx.close(fd).unwrap();
                        break;
                    }
                    Ok(k) => assert_eq!(ctx.write(fd, &buf[..k]), Ok(k), "echo fits"),
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
        }
    }
    accepted
}

/// One client core: opens `PER_CORE` connections, checks each echo, waits until every
/// client core has all its connections open (`open` counts them), then closes them.
fn client(mut ctx: Context, core: usize, open: Arc<AtomicUsize>) {
    let ep = ctx.epoll_create(20_000).unwrap();
    let mut conns: HashMap<Fd, (usize, usize)> = HashMap::new();
    for i in 0..PER_CORE {
        let s = ctx.socket().unwrap();
        assert_eq!(
            ctx.connect(s, SocketAddrV4::new(SERVER, PORT)),
            Err(Error::InProgress)
        );
        ctx.epoll_ctl(ep, EpollOp::Add, s, Events::OUT | Events::IN, u64::from(s))
            .unwrap();
        conns.insert(s, (i, 0));
    }
    let mut events = vec![EpollEvent::default(); 1024];
    let mut echoed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 64];
    while echoed < PER_CORE {
        assert!(
            Instant::now() < deadline,
            "core {core}: only {echoed} echoes"
        );
        let n = ctx.epoll_wait(ep, &mut events, 50).unwrap();
        for e in &events[..n] {
            let fd = e.data as Fd;
            let (i, state) = conns[&fd];
            assert!(
                !e.events.contains(Events::ERR),
                "core {core} conn {i}: {:?}",
                e.events
            );
            if state == 0 && e.events.contains(Events::OUT) {
                assert_eq!(ctx.write(fd, &request(core, i)), Ok(16));
                ctx.epoll_ctl(ep, EpollOp::Mod, fd, Events::IN, u64::from(fd))
                    .unwrap();
                conns.insert(fd, (i, 1));
            } else if state == 1 && e.events.contains(Events::IN) {
                match ctx.read(fd, &mut buf) {
                    Ok(16) => {
                        assert_eq!(buf[..16], request(core, i));
                        conns.insert(fd, (i, 2));
                        echoed += 1;
                    }
                    Err(Error::WouldBlock) => {}
                    other => panic!("core {core} conn {i}: read {other:?}"),
                }
            }
        }
    }
    open.fetch_add(PER_CORE, Ordering::AcqRel);
    while open.load(Ordering::Acquire) < 2 * PER_CORE {
        assert!(
            Instant::now() < deadline,
            "the other core never got its connections"
        );
        ctx.epoll_wait(ep, &mut events, 5).unwrap();
    }
    for (&fd, _) in conns.iter() {
        ctx.close(fd).unwrap();
    }
    // Let the closes go out.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        ctx.epoll_wait(ep, &mut events, 10).unwrap();
    }
}

#[test]
fn ten_thousand_concurrent_connections_on_two_cores() {
    let link = format!("mtcp-many-{}", std::process::id());
    let mut srv = mtcp_api::init(config(&link, SERVER, CLIENT)).unwrap();
    let mut cli = mtcp_api::init(config(&link, CLIENT, SERVER)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let servers: Vec<_> = (0..2)
        .map(|core| {
            let ctx = srv.context(core).unwrap();
            let (stop, ready) = (stop.clone(), ready.clone());
            std::thread::spawn(move || server(ctx, stop, ready))
        })
        .collect();
    while ready.load(Ordering::Acquire) < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let open = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|core| {
            let ctx = cli.context(core).unwrap();
            let open = open.clone();
            std::thread::spawn(move || client(ctx, core, open))
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    let accepted: Vec<usize> = servers.into_iter().map(|s| s.join().unwrap()).collect();
    // Every stack's statistics first: they explain a failure of the checks below.
    let mut stats = Vec::new();
    for (side, m) in [("server", srv), ("client", cli)] {
        for (core, r) in m.destroy().into_iter().enumerate() {
            let s = r.unwrap();
            println!("{side} core {core}: {s}\n  {:?}", s.endpoint);
            stats.push((side, core, s));
        }
    }
    assert_eq!(
        accepted,
        vec![PER_CORE, PER_CORE],
        "each server core served its client core"
    );
    for (side, core, s) in stats {
        assert_eq!(s.misrouted, 0, "{side} core {core}");
        assert_eq!(s.reset, 0, "{side} core {core}: no connection was reset");
    }
}
