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

/// `set_buffer_sizes` on a listener gives its connections those sizes from the SYN-ACK on:
/// the peer never has more than the receive size in flight, and the rest waits in its send
/// buffer until the application reads. On a connection, the send size bounds what `send`
/// takes. `accept_ready` says whether `accept` has a connection to give.
#[test]
fn buffer_sizes_bound_the_window_and_the_send_buffer() {
    const RECV: usize = 4096;
    let mut p = Pair::default_pair();
    let l = p.b.listen(80, 16).unwrap();
    p.b.set_buffer_sizes(l, 1 << 30, RECV).unwrap();
    assert!(!p.b.accept_ready(l));
    let c =
        p.a.connect(p.now, SocketAddrV4::new(pair_addr(1).1, 80))
            .unwrap();
    p.advance(Duration::from_millis(10));
    assert!(p.b.accept_ready(l));
    let s = p.b.accept(l).unwrap();
    assert!(!p.b.accept_ready(l));
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 13) as u8).collect();
    let mut sent = p.a.send(c, &data).unwrap();
    for _ in 0..50 {
        p.advance(Duration::from_millis(10));
        let held = p.b.recv_available(s).unwrap();
        assert!(held <= RECV, "the receiver holds {held} bytes");
        let info = p.a.conn_info(c).unwrap();
        assert!(info.snd_wnd as usize <= RECV, "window {}", info.snd_wnd);
    }
    assert!(p.b.recv_available(s).unwrap() > 0, "nothing arrived");
    // Reading lets the rest through, in order.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1500];
    for _ in 0..10_000 {
        if let Ok(n) = p.a.send(c, &data[sent..]) {
            sent += n;
        }
        while let Ok(n) = p.b.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(p.b.recv_available(s).unwrap() <= RECV);
        if got.len() == data.len() {
            break;
        }
        p.advance(Duration::from_millis(1));
    }
    assert!(
        got == data,
        "{} of {} bytes, or different",
        got.len(),
        data.len()
    );
    // A smaller send buffer on the connection: a send takes at most that much.
    p.advance(Duration::from_millis(100));
    p.a.set_buffer_sizes(c, 3000, 1 << 30).unwrap();
    assert_eq!(p.a.send(c, &data), Ok(3000));
    assert_eq!(p.a.send_space(c), Ok(0));
    assert_eq!(p.a.send(c, &data), Err(tcp_core::SocketError::WouldBlock));
}

/// `poll_transmit_holding_acks` keeps pure ACKs back: the handshake ACK of an active open
/// then rides on the first data the application writes (one segment instead of two), and
/// `acks_waiting` says an ACK waits meanwhile.
#[test]
fn held_acks_ride_on_the_next_data() {
    let mut p = Pair::default_pair();
    let l = p.b.listen(80, 16).unwrap();
    let now = p.now;
    let c =
        p.a.connect(now, SocketAddrV4::new(pair_addr(1).1, 80))
            .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = p.a.poll_transmit(now, &mut buf).unwrap();
    p.b.handle_frame(now, &buf[..n]);
    let n = p.b.poll_transmit(now, &mut buf).unwrap();
    p.a.handle_frame(now, &buf[..n]);
    assert!(p.a.poll_event().is_some_and(|e| e == Event::Connected(c)));
    // The ACK of the SYN-ACK is held back.
    assert_eq!(p.a.poll_transmit_holding_acks(now, &mut buf), None);
    assert!(p.a.acks_waiting());
    // The application writes: one segment carries the data and the ACK.
    assert_eq!(p.a.send(c, b"request"), Ok(7));
    let n = p.a.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(
        p.a.poll_transmit(now, &mut buf[n..]),
        None,
        "a second segment"
    );
    p.b.handle_frame(now, &buf[..n]);
    while p.b.poll_event().is_some() {}
    let s = p.b.accept(l).unwrap();
    let mut got = [0u8; 16];
    assert_eq!(p.b.recv(s, &mut got), Ok(7));
    assert_eq!(&got[..7], b"request");
    // Without data, the held ACK goes with the next poll_transmit.
    let mut q = Pair::default_pair();
    q.b.listen(80, 16).unwrap();
    let now = q.now;
    q.a.connect(now, SocketAddrV4::new(pair_addr(1).1, 80))
        .unwrap();
    let n = q.a.poll_transmit(now, &mut buf).unwrap();
    q.b.handle_frame(now, &buf[..n]);
    let n = q.b.poll_transmit(now, &mut buf).unwrap();
    q.a.handle_frame(now, &buf[..n]);
    assert_eq!(q.a.poll_transmit_holding_acks(now, &mut buf), None);
    assert!(q.a.poll_transmit(now, &mut buf).is_some());
    assert_eq!(q.a.poll_transmit(now, &mut buf), None);
}
