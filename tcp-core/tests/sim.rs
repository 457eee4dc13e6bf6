//! Two endpoints over seeded impaired links (quick exploration).
use core::net::SocketAddrV4;
use tcp_core::testing::{pair_addr, pair_configs, LinkParams, Pair};
use tcp_core::{Duration, State};

fn run(seed: u64, loss: f64, size: usize) {
    let (a, b) = pair_configs();
    let params = LinkParams {
        loss,
        duplicate: 0.01,
        reorder: 0.02,
        corrupt: 0.005,
        jitter: Duration::from_micros(200),
        ..LinkParams::default()
    };
    let mut p = Pair::new(a, b, params, seed);
    let l = p.b.listen(80, 16).unwrap();
    let c =
        p.a.connect(p.now, SocketAddrV4::new(pair_addr(1).1, 80))
            .unwrap();
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (mut sent_a, mut sent_b) = (0, 0);
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let mut s = None;
    let mut buf = vec![0u8; 65536];
    let start = p.now;
    let mut closed_a = false;
    let mut closed_b = false;
    for _ in 0..2_000_000 {
        if s.is_none() {
            s = p.b.accept(l).ok();
        }
        if sent_a < data.len() {
            if let Ok(n) = p.a.send(c, &data[sent_a..]) {
                sent_a += n;
            }
        }
        if sent_a == data.len() && !closed_a {
            p.a.shutdown(p.now, c).unwrap();
            closed_a = true;
        }
        while let Ok(n) = p.a.recv(c, &mut buf) {
            if n == 0 {
                break;
            }
            got_a.extend_from_slice(&buf[..n]);
        }
        if let Some(s) = s {
            if sent_b < data.len() {
                if let Ok(n) = p.b.send(s, &data[sent_b..]) {
                    sent_b += n;
                }
            }
            if sent_b == data.len() && !closed_b {
                p.b.shutdown(p.now, s).unwrap();
                closed_b = true;
            }
            while let Ok(n) = p.b.recv(s, &mut buf) {
                if n == 0 {
                    break;
                }
                got_b.extend_from_slice(&buf[..n]);
            }
        }
        while p.a.poll_event().is_some() {}
        while p.b.poll_event().is_some() {}
        if got_a.len() == data.len()
            && got_b.len() == data.len()
            && p.a.state(c) == Ok(State::TimeWait)
            || p.a.state(c) == Ok(State::Closed)
        {
            break;
        }
        if std::env::var("SIMDBG").is_ok() && (p.ab.in_flight() + p.ba.in_flight() > 1000) {
            panic!(
                "flood: t={} ab={} ba={} A={:?} B={:?} ca={:?} cb={:?}",
                p.now,
                p.ab.in_flight(),
                p.ba.in_flight(),
                p.a.counters(),
                p.b.counters(),
                p.a.conn_info(c),
                s.map(|s| p.b.conn_info(s))
            );
        }
        let lim = p.now + Duration::from_secs(1);
        if !p.step(lim) {
            p.now = lim;
        }
    }
    let t = p.now.saturating_since(start);
    eprintln!(
        "seed {seed} loss {loss}: {:?} a={:?} b={:?} t={t:?}\n A {:?}\n B {:?}",
        p.a.state(c),
        got_a.len(),
        got_b.len(),
        p.a.counters(),
        p.b.counters()
    );
    assert!(got_b == data, "b got {} of {}", got_b.len(), data.len());
    assert!(got_a == data, "a got {} of {}", got_a.len(), data.len());
    let s = s.unwrap();
    assert!(
        matches!(p.a.state(c), Ok(State::TimeWait) | Ok(State::Closed)),
        "{:?}",
        p.a.conn_info(c)
    );
    p.advance(Duration::from_secs(61));
    assert_eq!(p.b.state(s), Ok(State::Closed), "{:?}", p.b.conn_info(s));
    assert_eq!(p.a.state(c), Ok(State::Closed), "{:?}", p.a.conn_info(c));
}

#[test]
fn explore() {
    let only: Option<u64> = std::env::var("SEED").ok().map(|v| v.parse().unwrap());
    for seed in 0..20 {
        if only.is_some_and(|o| o != seed) {
            continue;
        }
        for loss in [0.0, 0.05, 0.2] {
            run(seed, loss, 300_000);
        }
    }
}
