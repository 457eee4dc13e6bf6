//! `PortSet::select` over shm links: what wakes it, what it reports, and that it sleeps.
//!
//! Each wake-up test has another thread act after about 50 ms while `select` waits with a
//! 5 s timeout, then checks the outcome, the ready list, and that `select` neither returned
//! before the event (it cannot have seen it) nor waited for the timeout. The idle tests
//! measure the CPU time of the thread asleep in `select` (from inside that thread) across a
//! 1 s timeout: a thread that spins instead of sleeping burns about that whole second.

use psio::{Interest, Port, PortConfig, PortSet, QueueIo, Ready, SelectOutcome};
use std::thread;
use std::time::{Duration, Instant};

/// How long the other thread waits before acting.
const DELAY: Duration = Duration::from_millis(50);
/// Timeout of a `select` that another thread will wake: far beyond `DELAY`.
const LONG_US: u64 = 5_000_000;
/// A wake-up must come well before the timeout.
const WOKEN_WITHIN: Duration = Duration::from_secs(2);
/// CPU a thread may use while asleep in `select` for 1 s.
const IDLE_CPU: Duration = Duration::from_millis(50);

fn pair(queues: usize, slots: u32) -> (Port, Port) {
    psio::sys::shm::pair(&PortConfig {
        queues,
        slots,
        ..PortConfig::default()
    })
    .expect("shm pair")
}

fn rx(port: usize, queue: usize) -> Interest {
    Interest {
        port,
        queue,
        rx: true,
        tx: false,
    }
}

fn tx(port: usize, queue: usize) -> Interest {
    Interest {
        port,
        queue,
        rx: false,
        tx: true,
    }
}

const fn outcome(ready: usize, doorbell: bool, timed_out: bool) -> SelectOutcome {
    SelectOutcome {
        ready,
        doorbell,
        timed_out,
    }
}

/// Sends one frame holding `payload` and hands it to the link.
fn send(q: &mut dyn QueueIo, payload: &[u8]) {
    assert!(
        q.tx_space() > 0 || q.txsync().expect("txsync") > 0,
        "no TX room"
    );
    q.tx_buf(0)[..payload.len()].copy_from_slice(payload);
    q.tx_push(payload.len());
    q.txsync().expect("txsync");
}

/// Pushes frames until the link takes no more: `tx_space()` is 0 even after a `txsync`.
fn fill(q: &mut dyn QueueIo) -> usize {
    let mut n = 0;
    loop {
        while q.tx_space() > 0 {
            q.tx_buf(0)[0] = n as u8;
            q.tx_push(1);
            n += 1;
        }
        if q.txsync().expect("txsync") == 0 {
            return n;
        }
    }
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Selects for 1 s with nothing happening; asserts it timed out and used almost no CPU.
fn assert_idle_select_sleeps(set: &mut PortSet, interests: &[Interest], what: &str) {
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let out = set.select(interests, Some(1_000_000)).expect("select");
    let wall = t0.elapsed();
    let cpu = thread_cpu() - cpu0;
    assert_eq!(out, outcome(0, false, true), "{what}");
    assert!(
        wall >= Duration::from_secs(1),
        "{what}: timed out after {wall:?}"
    );
    assert!(
        cpu < IDLE_CPU,
        "{what}: select used {cpu:?} of CPU in {wall:?} with nothing happening (spinning?)"
    );
}

#[test]
fn select_wakes_on_rx_when_a_frame_arrives() {
    let (a, mut b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    let start = Instant::now();
    let peer = thread::spawn(move || {
        thread::sleep(DELAY);
        send(b.queue(0), b"wake up");
        b
    });
    let out = set.select(&[rx(p, 0)], Some(LONG_US)).unwrap();
    let elapsed = start.elapsed();
    let _b = peer.join().unwrap();
    assert_eq!(out, outcome(1, false, false));
    assert_eq!(
        set.ready(),
        &[Ready {
            port: p,
            queue: 0,
            rx: true,
            tx: false
        }]
    );
    // Ready RX queues are already synced: the frame is readable without another rxsync.
    let q = set.port(p).queue(0);
    assert_eq!(q.rx_available(), 1);
    assert_eq!(q.rx_frame(0), b"wake up");
    assert!(
        elapsed >= DELAY,
        "returned after {elapsed:?}, before the frame was sent"
    );
    assert!(elapsed < WOKEN_WITHIN, "woken after {elapsed:?}");
}

#[test]
fn select_wakes_on_tx_when_the_peer_releases_room() {
    let (a, mut b) = pair(1, 8);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    let filled = fill(set.port(p).queue(0));
    assert!(filled >= 7, "an 8-slot link took only {filled} frames");
    assert_eq!(set.port(p).queue(0).tx_space(), 0);
    // Nothing is ready yet: a zero-timeout select just checks.
    assert_eq!(
        set.select(&[tx(p, 0)], Some(0)).unwrap(),
        outcome(0, false, true)
    );
    let start = Instant::now();
    let peer = thread::spawn(move || {
        thread::sleep(DELAY);
        let q = b.queue(0);
        let got = q.rxsync().expect("rxsync");
        q.rx_release(3.min(got));
        q.rxsync().expect("rxsync");
        (b, got)
    });
    let out = set.select(&[tx(p, 0)], Some(LONG_US)).unwrap();
    let elapsed = start.elapsed();
    let (_b, got) = peer.join().unwrap();
    assert_eq!(got, 7, "the peer's 8-slot RX ring holds 7 frames");
    assert_eq!(out, outcome(1, false, false));
    assert_eq!(
        set.ready(),
        &[Ready {
            port: p,
            queue: 0,
            rx: false,
            tx: true
        }]
    );
    assert_eq!(set.port(p).queue(0).tx_space(), 3, "3 released slots");
    assert!(
        elapsed >= DELAY,
        "returned after {elapsed:?}, before room was made"
    );
    assert!(elapsed < WOKEN_WITHIN, "woken after {elapsed:?}");
}

#[test]
fn select_wakes_on_the_doorbell() {
    let (a, _b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    let bell = set.doorbell();
    let start = Instant::now();
    let ringer = thread::spawn(move || {
        thread::sleep(DELAY);
        bell.ring();
    });
    let out = set.select(&[rx(p, 0)], Some(LONG_US)).unwrap();
    let elapsed = start.elapsed();
    ringer.join().unwrap();
    assert_eq!(out, outcome(0, true, false));
    assert!(set.ready().is_empty());
    assert!(
        elapsed >= DELAY,
        "returned after {elapsed:?}, before the bell rang"
    );
    assert!(elapsed < WOKEN_WITHIN, "woken after {elapsed:?}");
    // One ring, one report.
    assert_eq!(
        set.select(&[rx(p, 0)], Some(0)).unwrap(),
        outcome(0, false, true)
    );
}

#[test]
fn a_doorbell_rung_before_select_is_reported_once() {
    let (a, mut b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    let bell = set.doorbell();
    bell.ring();
    bell.ring();
    let start = Instant::now();
    assert_eq!(
        set.select(&[rx(p, 0)], Some(LONG_US)).unwrap(),
        outcome(0, true, false)
    );
    assert!(start.elapsed() < WOKEN_WITHIN);
    // Two rings before one select are one report; the next select sleeps to its timeout.
    let start = Instant::now();
    assert_eq!(
        set.select(&[rx(p, 0)], Some(100_000)).unwrap(),
        outcome(0, false, true)
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    // A ring and a frame together are both reported.
    send(b.queue(0), b"x");
    set.doorbell().ring();
    assert_eq!(
        set.select(&[rx(p, 0)], Some(LONG_US)).unwrap(),
        outcome(1, true, false)
    );
}

#[test]
fn select_times_out_when_nothing_happens() {
    let (a, _b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    for interests in [&[rx(p, 0)][..], &[]] {
        let start = Instant::now();
        let out = set.select(interests, Some(100_000)).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(out, outcome(0, false, true), "{interests:?}");
        assert!(set.ready().is_empty());
        assert!(
            elapsed >= Duration::from_millis(100),
            "{interests:?}: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(1),
            "{interests:?}: {elapsed:?}"
        );
    }
    // Some(0) only checks.
    let start = Instant::now();
    assert_eq!(
        set.select(&[rx(p, 0)], Some(0)).unwrap(),
        outcome(0, false, true)
    );
    assert!(start.elapsed() < Duration::from_millis(100));
}

#[test]
fn select_reports_only_the_queues_that_received_among_many() {
    let (a0, b0) = pair(2, 64);
    let (a1, b1) = pair(2, 64);
    let mut set = PortSet::new().unwrap();
    let p0 = set.add(a0);
    let p1 = set.add(a1);
    let all = [rx(p0, 0), rx(p0, 1), rx(p1, 0), rx(p1, 1)];
    let start = Instant::now();
    let peer = thread::spawn(move || {
        let (b0, mut b1) = (b0, b1);
        thread::sleep(DELAY);
        send(b1.queue(1), b"port 1 queue 1");
        (b0, b1)
    });
    let out = set.select(&all, Some(LONG_US)).unwrap();
    let elapsed = start.elapsed();
    let (mut b0, mut b1) = peer.join().unwrap();
    assert_eq!(out, outcome(1, false, false));
    assert_eq!(
        set.ready(),
        &[Ready {
            port: p1,
            queue: 1,
            rx: true,
            tx: false
        }]
    );
    assert!(elapsed >= DELAY && elapsed < WOKEN_WITHIN, "{elapsed:?}");
    assert_eq!(set.port(p1).queue(1).rx_frame(0), b"port 1 queue 1");
    for (p, q) in [(p0, 0), (p0, 1), (p1, 0)] {
        assert_eq!(set.port(p).queue(q).rx_available(), 0, "port {p} queue {q}");
    }

    // Readiness is level-triggered: the unreleased frame is reported again, next to new ones,
    // in the order of the interests.
    send(b0.queue(0), b"port 0 queue 0");
    send(b1.queue(0), b"port 1 queue 0");
    assert_eq!(set.select(&all, Some(0)).unwrap(), outcome(3, false, false));
    let ready: Vec<_> = set.ready().iter().map(|r| (r.port, r.queue)).collect();
    assert_eq!(ready, [(p0, 0), (p1, 0), (p1, 1)]);
    set.port(p1).queue(1).rx_release(1);
    assert_eq!(set.select(&all, Some(0)).unwrap(), outcome(2, false, false));
    let ready: Vec<_> = set.ready().iter().map(|r| (r.port, r.queue)).collect();
    assert_eq!(ready, [(p0, 0), (p1, 0)]);
}

#[test]
fn bad_interests_are_errors_not_panics() {
    let (a, mut b) = pair(2, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    send(b.queue(0), b"ready");
    let bad = [
        rx(p + 1, 0),
        rx(usize::MAX, 0),
        tx(p, 2),
        Interest {
            port: p,
            queue: usize::MAX,
            rx: true,
            tx: true,
        },
    ];
    for it in bad {
        let start = Instant::now();
        // A long timeout: a bad interest must be refused at once, not slept on.
        let r = set.select(&[it], Some(LONG_US));
        assert!(r.is_err(), "{it:?} gave {r:?}");
        // Also next to a good interest that is ready.
        let r = set.select(&[rx(p, 0), it], Some(LONG_US));
        assert!(r.is_err(), "{it:?} after a ready queue gave {r:?}");
        assert!(start.elapsed() < WOKEN_WITHIN);
    }
    let mut empty = PortSet::new().unwrap();
    assert!(empty.is_empty());
    assert!(empty.select(&[rx(0, 0)], Some(0)).is_err());
    // The set still works after refusing them.
    assert_eq!(
        set.select(&[rx(p, 0)], Some(0)).unwrap(),
        outcome(1, false, false)
    );
    assert_eq!(set.port(p).queue(0).rx_frame(0), b"ready");
}

#[test]
fn an_idle_select_does_not_spin() {
    let (a, _b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    assert_idle_select_sleeps(&mut set, &[rx(p, 0)], "default settings");
}

#[test]
fn an_idle_select_with_a_zero_busy_poll_budget_does_not_spin() {
    let (a, _b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    set.set_busy_poll(Duration::ZERO);
    assert_idle_select_sleeps(&mut set, &[rx(p, 0)], "busy-poll budget 0");
}

#[test]
fn an_idle_select_spins_no_longer_than_its_busy_poll_budget() {
    let (a, _b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    set.set_busy_poll(Duration::from_millis(5));
    assert_idle_select_sleeps(&mut set, &[rx(p, 0)], "busy-poll budget 5 ms");
}

/// Wake-ups leave tokens in descriptors (the doorbell's, the link's); a select that did not
/// consume them would find them again at once, forever.
#[test]
fn an_idle_select_after_wake_ups_does_not_spin() {
    let (a, mut b) = pair(1, 64);
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    let bell = set.doorbell();
    let peer = thread::spawn(move || {
        thread::sleep(DELAY);
        bell.ring();
        thread::sleep(DELAY);
        send(b.queue(0), b"one");
        b
    });
    assert_eq!(
        set.select(&[rx(p, 0)], Some(LONG_US)).unwrap(),
        outcome(0, true, false)
    );
    assert_eq!(
        set.select(&[rx(p, 0)], Some(LONG_US)).unwrap(),
        outcome(1, false, false)
    );
    let _b = peer.join().unwrap();
    set.port(p).queue(0).rx_release(1);
    set.port(p).queue(0).rxsync().unwrap();
    assert_idle_select_sleeps(&mut set, &[rx(p, 0)], "after a doorbell and a frame");
}

/// Many queues in every state at once: empty RX, full TX (the peer never reads), a frame
/// pushed but not yet handed over — and nothing that becomes ready.
#[test]
fn an_idle_select_on_many_full_and_empty_queues_does_not_spin() {
    let (a0, _b0) = pair(2, 8);
    let (a1, _b1) = pair(2, 8);
    let mut set = PortSet::new().unwrap();
    let p0 = set.add(a0);
    let p1 = set.add(a1);
    fill(set.port(p0).queue(0));
    fill(set.port(p1).queue(1));
    let q = set.port(p0).queue(1);
    q.tx_buf(0)[0] = 1;
    q.tx_push(1);
    assert_eq!(q.tx_pending(), 1);
    let interests = [
        Interest {
            port: p0,
            queue: 0,
            rx: true,
            tx: true,
        },
        rx(p0, 1),
        rx(p1, 0),
        Interest {
            port: p1,
            queue: 1,
            rx: true,
            tx: true,
        },
    ];
    assert_idle_select_sleeps(&mut set, &interests, "full and empty queues");
    // And again, now that the first select has armed and disarmed everything once.
    assert_idle_select_sleeps(&mut set, &interests, "second idle select");
}

/// Links opened by name wake through FIFOs instead of eventfds.
#[test]
fn an_idle_select_on_a_named_link_does_not_spin() {
    let name = format!("select-idle-{}", std::process::id());
    let a = Port::open(&format!("shm:{name}/slots=8")).expect("open side 0");
    let mut b = Port::open(&format!("shm:{name}")).expect("open side 1");
    let mut set = PortSet::new().unwrap();
    let p = set.add(a);
    assert_idle_select_sleeps(&mut set, &[rx(p, 0)], "named link");
    // The same link does wake when a frame comes.
    let start = Instant::now();
    let peer = thread::spawn(move || {
        thread::sleep(DELAY);
        send(b.queue(0), b"by name");
        b
    });
    let out = set.select(&[rx(p, 0)], Some(LONG_US)).unwrap();
    let elapsed = start.elapsed();
    let _b = peer.join().unwrap();
    assert_eq!(out, outcome(1, false, false));
    assert_eq!(set.port(p).queue(0).rx_frame(0), b"by name");
    assert!(elapsed >= DELAY && elapsed < WOKEN_WITHIN, "{elapsed:?}");
}
