//! psio's af_packet backend over a veth pair between two network namespaces (root only).
//!
//! Each test builds its own namespaces with `bench_tools::netns` (deleted when the test ends,
//! also when it fails) and runs one thread per namespace: a thread enters its namespace and
//! only then opens `afpacket:<its veth end>`. Without root every test prints
//! "skipped: needs root ..." and passes, except the error test, which needs no privilege.
//!
//! What is checked:
//! - frames cross both ways at once, 100 000 each way, lengths 60..=1514, every byte, none
//!   lost, none reordered, none of a side's own frames echoed back to it;
//! - frames stay valid in place until released, across many RX blocks;
//! - a lone frame is delivered without waiting for its RX block to fill (ping-pong);
//! - with `q=4`, every frame lands on the queue `queue_for_frame` predicts, for both
//!   steering modes, including non-TCP frames, fragments and IP options;
//! - a missing interface is reported as `NoSuchInterface` with its name;
//! - the MTU bounds what a queue offers (`buf_size`, `tx_buf`), and mtcp-api refuses an MSS
//!   whose full segments would not fit (`InitError::FrameTooSmall`).

use bench_tools::netns::{self, Namespaces, VethPair};
use psio::sys::af_packet::queue_for_frame;
use psio::{Error, Interest, Port, PortConfig, PortSet, Steering};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A test fails instead of hanging when nothing moves for this long.
const STALL: Duration = Duration::from_secs(10);
/// Local experimental EtherType for test frames (IEEE 802).
const ETHERTYPE_TEST: u16 = 0x88b5;

fn lab(tag: &str, dev_a: &str, dev_b: &str) -> (Namespaces, VethPair) {
    let mut lab = Namespaces::new(tag);
    let pair = lab
        .veth_pair(dev_a, dev_b)
        .expect("creating namespaces and veth");
    (lab, pair)
}

fn join<T>(h: std::thread::JoinHandle<std::io::Result<Result<T, String>>>, who: &str) -> T {
    match h.join() {
        Ok(Ok(Ok(v))) => v,
        Ok(Ok(Err(e))) => panic!("{who}: {e}"),
        Ok(Err(e)) => panic!("{who}: could not enter its namespace: {e}"),
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn open_set(name: &str, config: &PortConfig) -> Result<PortSet, String> {
    let port = Port::open_with(name, config).map_err(|e| format!("opening {name}: {e}"))?;
    let mut set = PortSet::new().map_err(|e| e.to_string())?;
    set.add(port);
    Ok(set)
}

// ---------------------------------------------------------------------------------------
// Test frames: Ethernet header, then seq, length and a pattern derived from seq

fn frame_len(seq: u64) -> usize {
    60 + (seq.wrapping_mul(7919) % 1455) as usize // 60..=1514
}

fn mac(side: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, side]
}

fn fill(buf: &mut [u8], from: u8, to: u8, seq: u64) {
    buf[0..6].copy_from_slice(&mac(to));
    buf[6..12].copy_from_slice(&mac(from));
    buf[12..14].copy_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    let len = buf.len() as u16;
    buf[22..24].copy_from_slice(&len.to_le_bytes());
    let b = (seq as u8) ^ (seq >> 8) as u8;
    for (i, x) in buf[24..].iter_mut().enumerate() {
        *x = b.wrapping_add((i as u8).wrapping_mul(31));
    }
}

/// Checks a frame written by `fill` by side `from`; returns its sequence number.
fn check(frame: &[u8], from: u8, me: u8) -> Result<u64, String> {
    if frame.len() < 60 || frame[12..14] != ETHERTYPE_TEST.to_be_bytes() {
        return Err(format!(
            "foreign frame of {} bytes: {:02x?}",
            frame.len(),
            &frame[..frame.len().min(24)]
        ));
    }
    if frame[6..12] == mac(me) {
        return Err("received a frame this side sent (outgoing frames must be ignored)".into());
    }
    let seq = u64::from_le_bytes(frame[14..22].try_into().unwrap());
    let len = u16::from_le_bytes([frame[22], frame[23]]) as usize;
    let mut want = vec![0u8; frame_len(seq)];
    fill(&mut want, from, me, seq);
    if len != want.len() || frame != &want[..] {
        let at = frame.iter().zip(&want).position(|(a, b)| a != b);
        return Err(format!(
            "frame {seq} damaged: {} bytes (want {}), first difference at {at:?}",
            frame.len(),
            want.len()
        ));
    }
    Ok(seq)
}

// ---------------------------------------------------------------------------------------

/// Counters one side publishes for the other: frames it has received and verified.
#[derive(Default)]
struct Progress {
    received: [AtomicU64; 2],
}

/// One side of the both-ways test: sends `frames` frames to the peer while receiving as
/// many, keeping at most `window` frames beyond what the peer has verified in flight (so the
/// peer's RX ring cannot overflow), and releasing received frames in irregular chunks.
fn duplex_side(
    port: &str,
    me: u8,
    frames: u64,
    window: u64,
    progress: &Progress,
    start: &Barrier,
) -> Result<(u64, u64), String> {
    let config = PortConfig {
        slots: 4096,
        ..PortConfig::default()
    };
    let mut set = open_set(port, &config)?;
    let peer = 1 - me;
    start.wait();
    let (mut sent, mut expect, mut sleeps) = (0u64, 0u64, 0u64);
    let mut last_progress = Instant::now();
    while sent < frames || expect < frames || set.port(0).queue(0).tx_pending() > 0 {
        let q = set.port(0).queue(0);
        let acked = progress.received[peer as usize].load(Ordering::Acquire);
        let before = (sent, expect);
        let mut pushed = 0;
        while sent < frames && sent - acked < window && q.tx_space() > 0 && pushed < 64 {
            let len = frame_len(sent);
            fill(&mut q.tx_buf(0)[..len], me, peer, sent);
            q.tx_push(len);
            sent += 1;
            pushed += 1;
        }
        q.txsync().map_err(|e| e.to_string())?;
        q.rxsync().map_err(|e| e.to_string())?;
        loop {
            let avail = q.rx_available();
            if avail == 0 {
                break;
            }
            let chunk = avail.min(1 + (expect % 37) as usize);
            for i in 0..chunk {
                let seq = check(q.rx_frame(i), peer, me)?;
                if seq != expect {
                    return Err(format!(
                        "side {me}: expected frame {expect}, got {seq} (lost or reordered)"
                    ));
                }
                expect += 1;
            }
            q.rx_release(chunk);
            progress.received[me as usize].store(expect, Ordering::Release);
        }
        if (sent, expect) != before {
            last_progress = Instant::now();
            continue;
        }
        if last_progress.elapsed() > STALL {
            return Err(format!(
                "side {me} stalled: sent {sent}, received {expect} of {frames}"
            ));
        }
        let tx = set.port(0).queue(0).tx_pending() > 0;
        let wait = [Interest {
            port: 0,
            queue: 0,
            rx: expect < frames,
            tx,
        }];
        // Short timeout: the peer's progress (which opens our window) rings no bell.
        set.select(&wait, Some(1_000)).map_err(|e| e.to_string())?;
        sleeps += 1;
    }
    Ok((expect, sleeps))
}

#[test]
fn frames_cross_both_ways_intact_and_in_order() {
    if netns::skip_unless_root("af_packet both ways") {
        return;
    }
    const FRAMES: u64 = 100_000;
    let (_lab, pair) = lab("afp-duplex", "afp-dx-a", "afp-dx-b");
    // Both ring formats: blocks (TPACKET_V3, the default) and frames (`ring=v2`).
    for ring in ["v3", "v2"] {
        let progress = Arc::new(Progress::default());
        let start = Arc::new(Barrier::new(2));
        let t0 = Instant::now();
        let sides: Vec<_> = [
            (0u8, &pair.ns_a, &pair.dev_a),
            (1u8, &pair.ns_b, &pair.dev_b),
        ]
        .into_iter()
        .map(|(me, ns, dev)| {
            let (progress, start) = (progress.clone(), start.clone());
            let port = format!("afpacket:{dev}/ring={ring}");
            netns::spawn_in(ns, move || {
                duplex_side(&port, me, FRAMES, 1024, &progress, &start)
            })
        })
        .collect();
        for (i, h) in sides.into_iter().enumerate() {
            let (got, sleeps) = join(h, &format!("ring={ring}, side {i}"));
            assert_eq!(got, FRAMES);
            println!("ring={ring}, side {i}: {got} frames verified, {sleeps} selects");
        }
        println!(
            "ring={ring}, both ways: {} frames in {:?}",
            2 * FRAMES,
            t0.elapsed()
        );
    }
}

#[test]
fn received_frames_stay_valid_until_released() {
    if netns::skip_unless_root("af_packet frames held across blocks") {
        return;
    }
    // 3 000 frames of 200 bytes span about 14 RX blocks of 64 KiB; the receiver holds them
    // all before looking, then releases them at once, twice over.
    const BURST: u64 = 3_000;
    let (_lab, pair) = lab("afp-hold", "afp-hd-a", "afp-hd-b");
    let start = Arc::new(Barrier::new(2));
    let next_burst = Arc::new(Barrier::new(2));
    let (s1, n1) = (start.clone(), next_burst.clone());
    let dev_a = pair.dev_a.clone();
    let sender = netns::spawn_in(&pair.ns_a, move || -> Result<(), String> {
        let mut set = open_set(&format!("afpacket:{dev_a}"), &PortConfig::default())?;
        s1.wait();
        for round in 0..2u64 {
            let mut seq = round * BURST;
            while seq < (round + 1) * BURST {
                let q = set.port(0).queue(0);
                if q.tx_space() == 0 {
                    q.txsync().map_err(|e| e.to_string())?;
                    continue;
                }
                let mut buf = [0u8; 200];
                fill_fixed(&mut buf, seq);
                q.tx_buf(0)[..200].copy_from_slice(&buf);
                q.tx_push(200);
                seq += 1;
            }
            while set.port(0).queue(0).tx_pending() > 0 {
                set.port(0).queue(0).txsync().map_err(|e| e.to_string())?;
            }
            n1.wait();
        }
        Ok(())
    });
    let dev_b = pair.dev_b.clone();
    let receiver = netns::spawn_in(&pair.ns_b, move || -> Result<(), String> {
        let mut set = open_set(&format!("afpacket:{dev_b}"), &PortConfig::default())?;
        start.wait();
        for round in 0..2u64 {
            let q = set.port(0).queue(0);
            let t0 = Instant::now();
            while q.rxsync().map_err(|e| e.to_string())? < BURST as usize {
                if t0.elapsed() > STALL {
                    return Err(format!(
                        "round {round}: only {} of {BURST} frames",
                        q.rx_available()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if q.rx_available() != BURST as usize {
                return Err(format!(
                    "round {round}: {} frames, want {BURST}",
                    q.rx_available()
                ));
            }
            for i in 0..BURST {
                let mut want = [0u8; 200];
                fill_fixed(&mut want, round * BURST + i);
                if q.rx_frame(i as usize) != want {
                    return Err(format!("round {round}: frame {i} changed while held"));
                }
            }
            q.rx_release(BURST as usize);
            next_burst.wait();
        }
        Ok(())
    });
    join(sender, "sender");
    join(receiver, "receiver");
}

fn fill_fixed(buf: &mut [u8; 200], seq: u64) {
    buf[..6].copy_from_slice(&mac(1));
    buf[6..12].copy_from_slice(&mac(0));
    buf[12..14].copy_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    for (i, x) in buf[22..].iter_mut().enumerate() {
        *x = (seq as u8).wrapping_mul(7).wrapping_add(i as u8);
    }
}

#[test]
fn lone_frames_arrive_without_waiting_for_a_full_block() {
    if netns::skip_unless_root("af_packet ping-pong") {
        return;
    }
    // One frame in flight at a time: each sits alone in a TPACKET_V3 block, which only the
    // retire timer (1 ms) hands over. A select timeout of one second per frame means a
    // frame left behind in an open block fails the test.
    const ROUNDS: u64 = 200;
    let (_lab, pair) = lab("afp-pong", "afp-pp-a", "afp-pp-b");
    for ring in ["v3", "v2"] {
        lone_frames_case(&pair, ring, ROUNDS);
    }
}

/// The ping-pong of lone frames on `pair` with ring format `ring`.
fn lone_frames_case(pair: &VethPair, ring: &'static str, rounds: u64) {
    let start = Arc::new(Barrier::new(2));
    let s2 = start.clone();
    let one_frame = |set: &mut PortSet, from: u8, to: u8, seq: u64| -> Result<(), String> {
        let q = set.port(0).queue(0);
        let len = frame_len(seq);
        fill(&mut q.tx_buf(0)[..len], from, to, seq);
        q.tx_push(len);
        q.txsync().map_err(|e| e.to_string())?;
        Ok(())
    };
    let await_frame = |set: &mut PortSet, from: u8, me: u8, seq: u64| -> Result<(), String> {
        let wait = [Interest {
            port: 0,
            queue: 0,
            rx: true,
            tx: false,
        }];
        let out = set
            .select(&wait, Some(1_000_000))
            .map_err(|e| e.to_string())?;
        if out.timed_out {
            return Err(format!("frame {seq} did not arrive within 1 s"));
        }
        let q = set.port(0).queue(0);
        let got = check(q.rx_frame(0), from, me)?;
        if got != seq || q.rx_available() != 1 {
            return Err(format!(
                "wanted frame {seq} alone, got {got} and {} frames",
                q.rx_available()
            ));
        }
        q.rx_release(1);
        Ok(())
    };
    let dev_b = pair.dev_b.clone();
    let echo = netns::spawn_in(&pair.ns_b, move || -> Result<(), String> {
        let mut set = open_set(
            &format!("afpacket:{dev_b}/ring={ring}"),
            &PortConfig::default(),
        )?;
        s2.wait();
        for seq in 0..rounds {
            await_frame(&mut set, 0, 1, seq)?;
            one_frame(&mut set, 1, 0, seq)?;
        }
        Ok(())
    });
    let dev_a = pair.dev_a.clone();
    let ping = netns::spawn_in(&pair.ns_a, move || -> Result<Vec<Duration>, String> {
        let mut set = open_set(
            &format!("afpacket:{dev_a}/ring={ring}"),
            &PortConfig::default(),
        )?;
        start.wait();
        let mut rtts = Vec::with_capacity(rounds as usize);
        for seq in 0..rounds {
            let t = Instant::now();
            one_frame(&mut set, 0, 1, seq)?;
            await_frame(&mut set, 1, 0, seq)?;
            rtts.push(t.elapsed());
        }
        Ok(rtts)
    });
    let mut rtts = join(ping, "ping");
    join(echo, "echo");
    rtts.sort();
    println!(
        "ring={ring}: ping-pong of lone frames: RTT p50 {:?}, p99 {:?}, max {:?}",
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 99 / 100],
        rtts[rtts.len() - 1]
    );
}

// ---------------------------------------------------------------------------------------
// Fanout steering

const STEER_FRAME: usize = 80;

/// Frame `id` of the steering test: mostly IPv4/TCP with varied ports (some with IP
/// options), and among them UDP, ARP, IPv6, fragments and a bad IHL. The id sits in the
/// last 4 bytes.
fn steering_frame(id: u32) -> [u8; STEER_FRAME] {
    let mut f = [0u8; STEER_FRAME];
    f[0..6].copy_from_slice(&mac(0xb));
    f[6..12].copy_from_slice(&mac(0xa));
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ihl: u8 = if id.is_multiple_of(5) { 6 } else { 5 };
    f[14] = 0x40 | ihl;
    f[16..18].copy_from_slice(&((STEER_FRAME - 14) as u16).to_be_bytes());
    f[14 + 8] = 64;
    f[14 + 9] = 6;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    let t = 14 + usize::from(ihl) * 4;
    let sport = (1024 + id.wrapping_mul(7919) % 60_000) as u16;
    let dport = (80 + id.wrapping_mul(104_729) % 20_000) as u16;
    f[t..t + 2].copy_from_slice(&sport.to_be_bytes());
    f[t + 2..t + 4].copy_from_slice(&dport.to_be_bytes());
    match id % 31 {
        3 => f[14 + 9] = 17,                                       // UDP
        7 => f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()),  // ARP
        11 => f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes()), // IPv6
        13 => f[20..22].copy_from_slice(&0x2000u16.to_be_bytes()), // first fragment (MF)
        17 => f[20..22].copy_from_slice(&0x00b9u16.to_be_bytes()), // later fragment
        19 => f[14] = 0x44,                                        // IHL 4
        23 => f[20..22].copy_from_slice(&0x4000u16.to_be_bytes()), // DF only: steered
        _ => {}
    }
    let n = f.len();
    f[n - 4..].copy_from_slice(&id.to_be_bytes());
    f
}

fn steering_case(steering: Steering, tag: &str, opt: &str) {
    const QUEUES: usize = 4;
    const FRAMES: u32 = 4_000;
    let (_lab, pair) = lab(tag, &format!("{tag}-a"), &format!("{tag}-b"));
    let start = Arc::new(Barrier::new(2));
    let s2 = start.clone();
    let dev_b = pair.dev_b.clone();
    let name = format!("afpacket:{dev_b}/q={QUEUES},steer={opt}");
    let receiver = netns::spawn_in(&pair.ns_b, move || -> Result<[u32; QUEUES], String> {
        let mut set = open_set(&name, &PortConfig::default())?;
        if set.port(0).num_queues() != QUEUES {
            return Err(format!(
                "{} queues, want {QUEUES}",
                set.port(0).num_queues()
            ));
        }
        s2.wait();
        let interests: Vec<Interest> = (0..QUEUES)
            .map(|queue| Interest {
                port: 0,
                queue,
                rx: true,
                tx: false,
            })
            .collect();
        let mut seen = vec![false; FRAMES as usize];
        let (mut got, mut per_queue) = (0u32, [0u32; QUEUES]);
        let mut last = Instant::now();
        while got < FRAMES {
            if last.elapsed() > STALL {
                return Err(format!(
                    "only {got} of {FRAMES} frames arrived (per queue {per_queue:?})"
                ));
            }
            let out = set
                .select(&interests, Some(100_000))
                .map_err(|e| e.to_string())?;
            if out.ready == 0 {
                continue;
            }
            last = Instant::now();
            for (queue, count) in per_queue.iter_mut().enumerate() {
                let q = set.port(0).queue(queue);
                let n = q.rx_available();
                for i in 0..n {
                    let f = q.rx_frame(i);
                    if f.len() != STEER_FRAME {
                        return Err(format!(
                            "queue {queue}: unexpected frame of {} bytes",
                            f.len()
                        ));
                    }
                    let id = u32::from_be_bytes(f[STEER_FRAME - 4..].try_into().unwrap());
                    if id >= FRAMES || seen[id as usize] {
                        return Err(format!("frame id {id} unknown or seen twice"));
                    }
                    seen[id as usize] = true;
                    let want = queue_for_frame(f, QUEUES, steering);
                    if want != queue {
                        return Err(format!(
                            "frame {id} ({:02x?}) landed on queue {queue}, queue_for_frame says {want}",
                            &f[12..40]
                        ));
                    }
                    *count += 1;
                    got += 1;
                }
                q.rx_release(n);
            }
        }
        Ok(per_queue)
    });
    let dev_a = pair.dev_a.clone();
    let sender = netns::spawn_in(&pair.ns_a, move || -> Result<(), String> {
        let mut set = open_set(&format!("afpacket:{dev_a}"), &PortConfig::default())?;
        start.wait();
        let mut id = 0;
        while id < FRAMES {
            let q = set.port(0).queue(0);
            // Bursts of 256 with a short pause: 4 000 small frames fit the receivers' rings
            // anyway; the pause keeps this independent of the scheduler.
            let mut k = 0;
            while id < FRAMES && k < 256 && q.tx_space() > 0 {
                q.tx_buf(0)[..STEER_FRAME].copy_from_slice(&steering_frame(id));
                q.tx_push(STEER_FRAME);
                id += 1;
                k += 1;
            }
            q.txsync().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_micros(200));
        }
        while set.port(0).queue(0).tx_pending() > 0 {
            set.port(0).queue(0).txsync().map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    join(sender, "sender");
    let per_queue = join(receiver, "receiver");
    println!("{steering:?}: frames per queue {per_queue:?}");
    assert!(
        per_queue.iter().all(|&n| n > FRAMES / 10),
        "{steering:?}: uneven spread {per_queue:?}"
    );
}

#[test]
fn fanout_steers_by_remote_port() {
    if netns::skip_unless_root("af_packet fanout by remote port") {
        return;
    }
    steering_case(Steering::RemotePort, "afp-sr", "remote");
}

#[test]
fn fanout_steers_by_local_port() {
    if netns::skip_unless_root("af_packet fanout by local port") {
        return;
    }
    steering_case(Steering::LocalPort, "afp-sl", "local");
}

// ---------------------------------------------------------------------------------------

#[test]
fn a_missing_interface_is_reported_by_name() {
    let check_missing = || -> Result<(), String> {
        for name in ["afpacket:mtcp-absent0", "afpacket:mtcp-absent0/q=4"] {
            match Port::open(name) {
                Err(e @ Error::NoSuchInterface(_)) => {
                    let msg = e.to_string();
                    if !msg.contains("mtcp-absent0") {
                        return Err(format!("message does not name the interface: {msg}"));
                    }
                }
                other => return Err(format!("{name}: wanted NoSuchInterface, got {other:?}")),
            }
        }
        Ok(())
    };
    if !netns::is_root() {
        // if_nametoindex needs no privilege: check in the current namespace.
        check_missing().unwrap();
        return;
    }
    // As root, in a fresh namespace where the name surely does not exist.
    let mut lab = Namespaces::new("afp-missing");
    let ns = lab.add().unwrap();
    join(netns::spawn_in(&ns, check_missing), "opener");
}

// ---------------------------------------------------------------------------------------

/// The interface's MTU bounds the frames a queue offers (the kernel would drop a longer TX
/// frame silently), and mtcp-api refuses an MSS whose full segments would not fit.
#[test]
fn the_mtu_bounds_frames_and_the_mss() {
    if netns::skip_unless_root("af_packet MTU") {
        return;
    }
    let (lab, pair) = lab("afp-mtu", "mtu-a", "mtu-b");
    lab.exec(&pair.ns_a, "ip", &["link", "set", "mtu-a", "mtu", "1400"])
        .expect("setting the MTU");
    let check = || -> Result<(), String> {
        let mut port = Port::open("afpacket:mtu-a").map_err(|e| e.to_string())?;
        let q = port.queue(0);
        if q.buf_size() != 1414 {
            return Err(format!(
                "buf_size {} at MTU 1400, wanted 1414",
                q.buf_size()
            ));
        }
        if q.tx_buf(0).len() != 1414 {
            return Err(format!("tx_buf of {} bytes at MTU 1400", q.tx_buf(0).len()));
        }
        drop(port);
        let config = |mss: u16| {
            mtcp_api::Config::from_toml_str(
                &format!(
                    "port = \"afpacket:mtu-a\"\npin_threads = false\n\
                     [interface]\naddress = \"10.9.0.2/24\"\n[tcp]\nmss = {mss}\n"
                ),
                "mtu test",
            )
            .map_err(|e| e.to_string())
        };
        match mtcp_api::Context::run_to_completion(&config(1460)?, 0) {
            Err(e @ mtcp_api::InitError::FrameTooSmall { .. }) => {
                let msg = e.to_string();
                if !(msg.contains("1414") && msg.contains("1360")) {
                    return Err(format!("the error does not say the limit: {msg}"));
                }
            }
            Err(e) => {
                return Err(format!(
                    "mss 1460 at MTU 1400: wanted FrameTooSmall, got {e}"
                ))
            }
            Ok(_) => return Err("mss 1460 at MTU 1400 was accepted".into()),
        }
        mtcp_api::Context::run_to_completion(&config(1360)?, 0)
            .map(drop)
            .map_err(|e| format!("mss 1360 at MTU 1400: {e}"))
    };
    join(netns::spawn_in(&pair.ns_a, check), "opener");
}
