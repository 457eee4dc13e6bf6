//! Smoke test: one connection between two endpoints on a clean simulated link — handshake,
//! 200 KB one way, half-close, close, TIME-WAIT expiry.

use core::net::SocketAddrV4;
use tcp_core::testing::{pair_addr, Pair};
use tcp_core::{Duration, Event, State};

#[test]
fn handshake_transfer_close() {
    let mut p = Pair::default_pair();
    let l = p.b.listen(80, 16).unwrap();
    let c =
        p.a.connect(p.now, SocketAddrV4::new(pair_addr(1).1, 80))
            .unwrap();
    p.advance(Duration::from_millis(10));
    let mut evs = vec![];
    while let Some(e) = p.a.poll_event() {
        evs.push(e);
    }
    println!("a events {evs:?}");
    assert!(evs.contains(&Event::Connected(c)));
    let mut evs = vec![];
    while let Some(e) = p.b.poll_event() {
        evs.push(e);
    }
    println!("b events {evs:?}");
    let s = p.b.accept(l).unwrap();
    assert_eq!(p.b.state(s).unwrap(), State::Established);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 100_000];
    for _ in 0..10_000 {
        if sent < data.len() {
            if let Ok(n) = p.a.send(c, &data[sent..]) {
                sent += n;
            }
        }
        loop {
            match p.b.recv(s, &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        if got.len() == data.len() {
            break;
        }
        p.advance(Duration::from_millis(1));
    }
    println!("{:?}", p.a.conn_info(c).unwrap());
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    p.a.close(p.now, c).unwrap();
    p.advance(Duration::from_millis(10));
    assert_eq!(p.b.state(s).unwrap(), State::CloseWait);
    assert_eq!(p.b.recv(s, &mut buf), Ok(0));
    p.b.close(p.now, s).unwrap();
    p.advance(Duration::from_millis(10));
    println!("{:?} {:?}", p.a.counters(), p.b.counters());
    println!("a conns {:?}", p.a.connections().collect::<Vec<_>>());
    assert_eq!(p.b.connection_count(), 1); // listener
    p.advance(Duration::from_secs(61));
    assert_eq!(p.a.connection_count(), 0);
}

/// `want_writable` asks for a Writable event when an acknowledgment frees room, though no
/// `send` fell short; without it, a send that fit reports nothing.
#[test]
fn want_writable_reports_room_freed_by_an_ack() {
    for want in [false, true] {
        let mut p = Pair::default_pair();
        let l = p.b.listen(80, 16).unwrap();
        let c =
            p.a.connect(p.now, SocketAddrV4::new(pair_addr(1).1, 80))
                .unwrap();
        p.advance(Duration::from_millis(10));
        while p.a.poll_event().is_some() {}
        let _s = p.b.accept(l).unwrap();
        assert_eq!(p.a.send(c, &[7u8; 1000]), Ok(1000));
        if want {
            p.a.want_writable(c).unwrap();
        }
        p.advance(Duration::from_millis(100));
        let mut evs = vec![];
        while let Some(e) = p.a.poll_event() {
            evs.push(e);
        }
        assert_eq!(
            evs.contains(&Event::Writable(c)),
            want,
            "want {want}: {evs:?}"
        );
    }
}
