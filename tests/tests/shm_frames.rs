//! Ten million frames over psio's shm backend, between two threads and between two
//! processes, every one verified.
//!
//! Each frame carries its sequence number, its length and the Internet checksum (RFC 1071)
//! of its payload; lengths vary from 60 to 1514 bytes and payload bytes from frame to frame,
//! both derived from the sequence number, so the receiver knows what must come next and
//! rejects any frame lost, duplicated, reordered, cut or corrupted. Frames also flow the other
//! way at the same time, and both ends sleep in `PortSet::select` whenever they cannot make
//! progress.
//!
//! The two-process test re-executes this test binary as a child running only
//! [`shm_frames_child_side`], telling it through [`CHILD_ENV`] which link to open; without
//! that variable the child test returns at once.
//!
//! ```text
//!   wire format (little endian)
//!   0        8      10       12                      len
//!   ┌────────┬──────┬────────┬────────────────────────┐
//!   │  seq   │ len  │ csum   │ payload (xorshift(seq))│   len = 60 + mix(seq) % 1455
//!   └────────┴──────┴────────┴────────────────────────┘
//! ```

use psio::{Interest, Port, PortConfig, PortSet, QueueIo};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Frames in the main direction.
const FRAMES: u64 = 10_000_000;
/// Frames the other way, at the same time.
const BACK_FRAMES: u64 = 200_000;
/// Slots per ring: small enough that the rings wrap and fill all the time.
const SLOTS: u32 = 256;
const MIN_LEN: usize = 60;
const MAX_LEN: usize = 1514;
const HEADER: usize = 12;
/// A run that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(20);
/// A run still going after this long has failed (it takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(120);
/// Timed-out selects tolerated with the queue ready right after (see `Tally`).
const MAX_MISSED_WAKEUPS: u64 = 2;
/// Tells the child which link to open (and that it is the child).
const CHILD_ENV: &str = "MTCP_TESTS_SHM_FRAMES_CHILD_LINK";
/// The child test, run with `--exact`.
const CHILD_TEST: &str = "shm_frames_child_side";

/// splitmix64: spreads sequence numbers into lengths, seeds and batch sizes.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Length of frame `seq` of the flow `flow`, 60..=1514.
fn frame_len(flow: u64, seq: u64) -> usize {
    MIN_LEN + (mix(seq ^ flow.rotate_left(32)) % (MAX_LEN - MIN_LEN + 1) as u64) as usize
}

/// Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit
/// big-endian words, an odd last byte padded with zero.
///
/// Computed the fast way RFC 1071 §2 allows: 32-bit little-endian words summed into a 64-bit
/// accumulator (deferred carries, (C)), folded to 16 bits, and byte-swapped once at the end
/// (byte order independence, (B)).
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut rest = words.remainder();
    if rest.len() >= 2 {
        sum += u64::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [b] = rest {
        sum += u64::from(*b);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16).swap_bytes()
}

/// Builds frame `seq` of `flow` in `buf`; returns its length.
fn build_frame(buf: &mut [u8], flow: u64, seq: u64) -> usize {
    let len = frame_len(flow, seq);
    let frame = &mut buf[..len];
    // A Weyl sequence seeded by the frame: every 8-byte word differs, within a frame and
    // from frame to frame, and the words do not depend on each other (cheap to make).
    let x = mix(seq ^ flow);
    let step = mix(x) | 1;
    let mut chunks = frame[HEADER..].chunks_exact_mut(8);
    let mut w = x;
    for c in &mut chunks {
        w = w.wrapping_add(step);
        c.copy_from_slice(&w.to_le_bytes());
    }
    let tail = chunks.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&w.rotate_left(29).to_le_bytes()[..n]);
    let csum = inet_checksum(&frame[HEADER..]);
    frame[..8].copy_from_slice(&seq.to_le_bytes());
    frame[8..10].copy_from_slice(&(len as u16).to_le_bytes());
    frame[10..12].copy_from_slice(&csum.to_le_bytes());
    len
}

/// Checks that `frame` is frame `seq` of `flow`, intact.
fn verify_frame(frame: &[u8], flow: u64, seq: u64) -> Result<(), String> {
    let want_len = frame_len(flow, seq);
    if frame.len() < HEADER {
        return Err(format!("frame {seq}: {} bytes, no header", frame.len()));
    }
    let got_seq = u64::from_le_bytes(frame[..8].try_into().unwrap());
    let got_len = u16::from_le_bytes([frame[8], frame[9]]) as usize;
    let got_csum = u16::from_le_bytes([frame[10], frame[11]]);
    if got_seq != seq {
        return Err(format!(
            "expected frame {seq}, got frame {got_seq}: lost, duplicated or reordered"
        ));
    }
    if frame.len() != want_len || got_len != want_len {
        return Err(format!(
            "frame {seq}: {} bytes on the wire, {got_len} in its header, {want_len} sent",
            frame.len()
        ));
    }
    let csum = inet_checksum(&frame[HEADER..]);
    if csum != got_csum {
        return Err(format!(
            "frame {seq} ({want_len} bytes): payload checksum {csum:#06x}, sent {got_csum:#06x}"
        ));
    }
    Ok(())
}

/// What one end does: send `send` frames of flow `tx_flow`, receive and verify `recv` frames
/// of flow `rx_flow`, both at once, over queue 0 of port 0 of `set`.
struct Plan {
    tx_flow: u64,
    send: u64,
    rx_flow: u64,
    recv: u64,
}

/// What one end saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    received: u64,
    /// `select` calls that found nothing to do at first.
    selects: u64,
    /// `select` calls that slept their whole timeout although the queue was ready at the end:
    /// the peer published without waking us.
    missed_wakeups: u64,
}

/// Runs one end to completion: every frame sent and handed to the link, every frame
/// received and verified. `peer_gone` is asked whenever a select times out; it returns why
/// the run cannot finish (e.g. the peer process exited), or `None`.
fn run_end(
    set: &mut PortSet,
    plan: &Plan,
    peer_gone: &mut dyn FnMut() -> Option<String>,
) -> Result<Tally, String> {
    let mut t = Tally::default();
    let started = Instant::now();
    let mut last_progress = started;
    // Batch sizes vary (1..=64 frames) so syncs land at every ring position.
    let mut batch_seed = plan.tx_flow;
    let mut batch = |what: u64| {
        batch_seed = mix(batch_seed ^ what);
        1 + (batch_seed % 64) as usize
    };
    let io = |e: psio::Error| e.to_string();
    loop {
        let q: &mut dyn QueueIo = set.port(0).queue(0);
        let mut progress = false;

        if t.received < plan.recv {
            if q.rx_available() == 0 {
                q.rxsync().map_err(io)?;
            }
            let k = q
                .rx_available()
                .min(batch(t.received))
                .min((plan.recv - t.received) as usize);
            for i in 0..k {
                verify_frame(q.rx_frame(i), plan.rx_flow, t.received)?;
                t.received += 1;
            }
            if k > 0 {
                q.rx_release(k);
                q.rxsync().map_err(io)?;
                progress = true;
            }
        }

        if t.sent < plan.send {
            if q.tx_space() == 0 {
                q.txsync().map_err(io)?;
            }
            let k = q
                .tx_space()
                .min(batch(t.sent))
                .min((plan.send - t.sent) as usize);
            for _ in 0..k {
                let len = build_frame(q.tx_buf(0), plan.tx_flow, t.sent);
                q.tx_push(len);
                t.sent += 1;
            }
            if k > 0 {
                q.txsync().map_err(io)?;
                progress = true;
            }
        } else if q.tx_pending() > 0 {
            q.txsync().map_err(io)?;
        }

        let q: &mut dyn QueueIo = set.port(0).queue(0);
        let rx_left = t.received < plan.recv;
        let tx_left = t.sent < plan.send;
        if !rx_left && !tx_left && q.tx_pending() == 0 {
            return Ok(t);
        }
        if progress {
            last_progress = Instant::now();
            continue;
        }
        if last_progress.elapsed() > STALL {
            return Err(format!(
                "no progress for {STALL:?}: {t:?}, pending {}",
                q.tx_pending()
            ));
        }
        // Nothing to do: sleep until frames arrive or TX room frees up. Frames pushed but not
        // yet taken by the link (none with today's shm) are retried every millisecond.
        let want_tx = tx_left && q.tx_space() == 0;
        let retry = q.tx_pending() > 0;
        let timeout_us = if retry { 1_000 } else { 1_000_000 };
        t.selects += 1;
        let slept_from = Instant::now();
        let out = set
            .select(
                &[Interest {
                    port: 0,
                    queue: 0,
                    rx: rx_left,
                    tx: want_tx,
                }],
                Some(timeout_us),
            )
            .map_err(io)?;
        if out.timed_out {
            if let Some(why) = peer_gone() {
                return Err(format!("{why} after {t:?}"));
            }
        }
        if !retry && slept_from.elapsed() >= Duration::from_micros(timeout_us) {
            // Slept the whole timeout yet the queue is ready: the peer made it ready without
            // waking us (or within microseconds of the timeout, which a few strays allow for).
            let q = set.port(0).queue(0);
            let ready = out.ready > 0
                || (rx_left && q.rxsync().map_err(io)? > 0)
                || (want_tx && q.txsync().map_err(io)? > 0);
            if ready {
                t.missed_wakeups += 1;
                if t.missed_wakeups > MAX_MISSED_WAKEUPS {
                    return Err(format!("select slept through wake-ups: {t:?}"));
                }
            }
        }
        if started.elapsed() > DEADLINE {
            return Err(format!("still running after {DEADLINE:?}: {t:?}"));
        }
    }
}

fn set_of(port: Port) -> PortSet {
    let mut set = PortSet::new().expect("PortSet");
    set.add(port);
    set
}

const FORTH: u64 = 0xf0f0;
const BACK: u64 = 0xbaac;

#[test]
fn ten_million_frames_between_two_threads() {
    let (a, b) = psio::sys::shm::pair(&PortConfig {
        slots: SLOTS,
        ..PortConfig::default()
    })
    .expect("shm pair");
    let start = Instant::now();
    let receiver = thread::spawn(move || {
        let plan = Plan {
            tx_flow: BACK,
            send: BACK_FRAMES,
            rx_flow: FORTH,
            recv: FRAMES,
        };
        run_end(&mut set_of(b), &plan, &mut || None)
    });
    let plan = Plan {
        tx_flow: FORTH,
        send: FRAMES,
        rx_flow: BACK,
        recv: BACK_FRAMES,
    };
    let sender = run_end(&mut set_of(a), &plan, &mut || None);
    let receiver = receiver.join().expect("receiver thread panicked");
    let elapsed = start.elapsed();
    let sender = sender.expect("sender side");
    let receiver = receiver.expect("receiver side");
    assert_eq!((sender.sent, sender.received), (FRAMES, BACK_FRAMES));
    assert_eq!((receiver.sent, receiver.received), (BACK_FRAMES, FRAMES));
    eprintln!(
        "threads: {FRAMES} + {BACK_FRAMES} frames in {elapsed:?} ({:.2} Mpps); {sender:?} {receiver:?}",
        (FRAMES + BACK_FRAMES) as f64 / elapsed.as_secs_f64() / 1e6,
    );
}

fn link_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("PSIO_SHM_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let d = std::path::PathBuf::from("/dev/shm");
            if d.is_dir() {
                d
            } else {
                std::env::temp_dir()
            }
        });
    dir.join(format!("psio-{name}.mem"))
}

#[test]
fn ten_million_frames_between_two_processes() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("mtcp-tests-frames-{}-{nanos}", std::process::id());
    // First opener: creates the link (side 0) with our shape.
    let port = Port::open(&format!("shm:{name}/slots={SLOTS}")).expect("create shm link");
    assert!(link_file(&name).exists());
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child test process");

    let start = Instant::now();
    let plan = Plan {
        tx_flow: FORTH,
        send: FRAMES,
        rx_flow: BACK,
        recv: BACK_FRAMES,
    };
    let mut child_status = None;
    let mut peer_gone = || -> Option<String> {
        match child.try_wait() {
            Ok(Some(status)) => {
                child_status = Some(status);
                Some(format!("child exited early ({status})"))
            }
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for child: {e}")),
        }
    };
    let mut set = set_of(port);
    let parent = run_end(&mut set, &plan, &mut peer_gone);
    let elapsed = start.elapsed();
    // The child exits on its own: when done, or when it gives up after STALL.
    let output = child.wait_with_output().expect("wait for child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tally = parent.unwrap_or_else(|e| {
        panic!("parent side: {e}\n--- child ({child_status:?}) stdout:\n{stdout}\n--- stderr:\n{stderr}")
    });
    assert!(
        output.status.success(),
        "child failed ({}):\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        output.status
    );
    // Status 0 alone would also come from a harness that ran no test at all.
    assert!(
        stdout.contains(&format!("child received {FRAMES} sent {BACK_FRAMES}")),
        "child did not report its tally:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    assert_eq!((tally.sent, tally.received), (FRAMES, BACK_FRAMES));
    eprintln!(
        "processes: {FRAMES} + {BACK_FRAMES} frames in {elapsed:?} ({:.2} Mpps); parent {tally:?}",
        (FRAMES + BACK_FRAMES) as f64 / elapsed.as_secs_f64() / 1e6,
    );
    // Both sides detached: the link's files are gone.
    drop(set);
    assert!(!link_file(&name).exists(), "link file left behind");
}

/// The child half of [`ten_million_frames_between_two_processes`]; does nothing unless
/// [`CHILD_ENV`] names a link.
#[test]
fn shm_frames_child_side() {
    let Some(name) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let name = name.into_string().expect("link name is UTF-8");
    // Second opener: attaches to side 1 of the parent's link, whatever shape it has.
    let port = Port::open(&format!("shm:{name}")).expect("attach to the parent's shm link");
    let plan = Plan {
        tx_flow: BACK,
        send: BACK_FRAMES,
        rx_flow: FORTH,
        recv: FRAMES,
    };
    let tally = run_end(&mut set_of(port), &plan, &mut || None).expect("child side");
    assert_eq!((tally.received, tally.sent), (FRAMES, BACK_FRAMES));
    println!(
        "child received {} sent {} ({tally:?})",
        tally.received, tally.sent
    );
}

#[test]
fn frames_verify_and_every_kind_of_damage_is_caught() {
    let mut buf = vec![0u8; 2048];
    let mut lens = std::collections::HashSet::new();
    for seq in 0..2000 {
        let len = build_frame(&mut buf, FORTH, seq);
        assert!((MIN_LEN..=MAX_LEN).contains(&len));
        lens.insert(len);
        verify_frame(&buf[..len], FORTH, seq).unwrap();
        // Wrong position in the flow, or the other flow.
        assert!(verify_frame(&buf[..len], FORTH, seq + 1).is_err());
        assert!(verify_frame(&buf[..len], BACK, seq).is_err() || frame_len(BACK, seq) == len);
        // Cut short.
        assert!(verify_frame(&buf[..len - 1], FORTH, seq).is_err());
        // One flipped payload bit, anywhere.
        let at = HEADER + (mix(seq) as usize) % (len - HEADER);
        buf[at] ^= 1 << (seq % 8);
        assert!(
            verify_frame(&buf[..len], FORTH, seq).is_err(),
            "bit flip at {at}"
        );
        buf[at] ^= 1 << (seq % 8);
    }
    assert!(lens.len() > 500, "lengths barely vary: {}", lens.len());
    let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
    assert!(
        *lo < MIN_LEN + 10 && *hi > MAX_LEN - 10,
        "lengths {lo}..={hi}"
    );
    // The checksum itself: RFC 1071's example sums to 0xddf2, so its checksum is !0xddf2.
    assert_eq!(
        inet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        !0xddf2
    );
    assert_eq!(inet_checksum(&[0x01]), !0x0100);
    assert_eq!(inet_checksum(&[0x01, 0x02, 0x03]), !0x0402);
    // And the fast sum agrees with the textbook one (16-bit big-endian words, end-around
    // carry at every step) at every length and alignment of the tail.
    let textbook = |data: &[u8]| -> u16 {
        let mut sum = 0u32;
        for w in data.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    };
    let mut data = vec![0u8; 300];
    for (i, b) in data.iter_mut().enumerate() {
        *b = mix(i as u64) as u8 | if i % 3 == 0 { 0xf0 } else { 0 };
    }
    for len in 0..data.len() {
        assert_eq!(
            inet_checksum(&data[..len]),
            textbook(&data[..len]),
            "{len} bytes"
        );
    }
    assert_eq!(inet_checksum(&[0xff; 1500]), textbook(&[0xff; 1500]));
}
