//! Test support, exported with the `testing` feature so that embedders can property-test
//! their own use of tcp-core: a seeded simulated link on a virtual clock.
//!
//! [`SimLink`] carries frames one way with configurable delay, jitter, loss, duplication,
//! reordering and corruption. Everything random comes from one seed, so a failing run replays
//! bit for bit. Time is whatever the caller says it is: nothing here waits.
//!
//! [`Pair`] joins two [`Endpoint`]s with two such links and drives them on virtual time,
//! jumping to the next event (frame arrival or timer), like quinn-proto's test `Pair`.

use crate::config::{EndpointConfig, InterfaceConfig};
use crate::endpoint::Endpoint;
use crate::time::{Duration, Instant};
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;

/// SplitMix64: a tiny, well-distributed, seedable generator (not for secrets).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

/// What a [`SimLink`] does to frames. Probabilities are per frame.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// One-way delay.
    pub delay: Duration,
    /// Extra uniform delay in `0..=jitter` (reorders frames when larger than their spacing).
    pub jitter: Duration,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame is held back by an extra `reorder_delay`.
    pub reorder: f64,
    /// The extra delay of a reordered frame.
    pub reorder_delay: Duration,
    /// Probability one random bit of the frame is flipped.
    pub corrupt: f64,
    /// Frames in flight at most; more are dropped (a router's queue). 0 means unbounded.
    pub queue_limit: usize,
}

impl Default for LinkParams {
    /// A clean link with 1 ms of delay.
    fn default() -> Self {
        LinkParams {
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            corrupt: 0.0,
            queue_limit: 0,
        }
    }
}

/// What happened on a link so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames handed to `send`.
    pub sent: u64,
    /// Frames handed out by `poll`.
    pub delivered: u64,
    /// Frames lost (at random or to the queue limit).
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames held back.
    pub reordered: u64,
    /// Frames with a flipped bit.
    pub corrupted: u64,
}

/// A one-way link on a virtual clock.
#[derive(Debug, Clone)]
pub struct SimLink {
    params: LinkParams,
    rng: SplitMix64,
    /// (delivery time, arrival order) → frame; the order keeps equal times FIFO.
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    order: u64,
    stats: LinkStats,
}

impl SimLink {
    /// A link with `params`, all randomness from `seed`.
    pub fn new(params: LinkParams, seed: u64) -> SimLink {
        SimLink {
            params,
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            stats: LinkStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Puts a frame on the link at `now`.
    pub fn send(&mut self, now: Instant, frame: &[u8]) {
        self.stats.sent += 1;
        if self.rng.chance(self.params.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.params.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.params.queue_limit != 0 && self.queue.len() >= self.params.queue_limit {
                self.stats.lost += 1;
                continue;
            }
            let mut f = frame.to_vec();
            if !f.is_empty() && self.rng.chance(self.params.corrupt) {
                let bit = self.rng.below(f.len() as u64 * 8);
                f[(bit / 8) as usize] ^= 1 << (bit % 8);
                self.stats.corrupted += 1;
            }
            let mut at = now + self.params.delay;
            if self.params.jitter > Duration::ZERO {
                at += Duration::from_micros(self.rng.below(self.params.jitter.micros() + 1));
            }
            if self.rng.chance(self.params.reorder) {
                at += self.params.reorder_delay;
                self.stats.reordered += 1;
            }
            self.order += 1;
            self.queue.push(Reverse((at, self.order, f)));
        }
    }

    /// When the next frame arrives, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next frame due at or before `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_delivery()? > now {
            return None;
        }
        let Reverse((_, _, f)) = self.queue.pop()?;
        self.stats.delivered += 1;
        Some(f)
    }
}

/// The MAC and address of side `i` (0 or 1) of a [`Pair`].
pub fn pair_addr(i: u8) -> ([u8; 6], core::net::Ipv4Addr) {
    (
        [2, 0, 0, 0, 0, 1 + i],
        core::net::Ipv4Addr::new(10, 0, 0, 1 + i),
    )
}

/// Configurations for the two sides of a [`Pair`]: 10.0.0.1 and 10.0.0.2 on one /24, each
/// with a static ARP entry for the other, different secrets.
pub fn pair_configs() -> (EndpointConfig, EndpointConfig) {
    let side = |i: u8| {
        let (mac, addr) = pair_addr(i);
        let (peer_mac, peer_addr) = pair_addr(1 - i);
        EndpointConfig {
            iface: InterfaceConfig {
                mac,
                addr,
                prefix_len: 24,
                gateway: None,
                routes: Vec::new(),
                static_arp: alloc::vec![(peer_addr, peer_mac)],
            },
            secret: [0x11 * (i + 1); 16],
            ..EndpointConfig::default()
        }
    };
    (side(0), side(1))
}

/// Two endpoints joined by two [`SimLink`]s, on a virtual clock.
#[derive(Debug)]
pub struct Pair {
    /// Side 0 (10.0.0.1).
    pub a: Endpoint,
    /// Side 1 (10.0.0.2).
    pub b: Endpoint,
    /// The link from `a` to `b`.
    pub ab: SimLink,
    /// The link from `b` to `a`.
    pub ba: SimLink,
    /// The virtual time.
    pub now: Instant,
    buf: Vec<u8>,
}

impl Pair {
    /// Endpoints from `a`/`b`, links with `params` (each its own seed derived from `seed`);
    /// time starts at 1 s.
    ///
    /// # Panics
    /// If a configuration is invalid (a test's own mistake).
    pub fn new(a: EndpointConfig, b: EndpointConfig, params: LinkParams, seed: u64) -> Pair {
        let mut rng = SplitMix64::new(seed);
        Pair {
            a: Endpoint::new(a).expect("side a config"),
            b: Endpoint::new(b).expect("side b config"),
            ab: SimLink::new(params.clone(), rng.next_u64()),
            ba: SimLink::new(params, rng.next_u64()),
            now: Instant::from_millis(1000),
            buf: alloc::vec![0; 65536],
        }
    }

    /// [`pair_configs`] on a clean 1 ms link.
    pub fn default_pair() -> Pair {
        let (a, b) = pair_configs();
        Pair::new(a, b, LinkParams::default(), 1)
    }

    /// Moves every frame both endpoints have to send onto the links, and delivers every
    /// frame due now. Returns how many frames moved.
    pub fn exchange(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let mut progress = false;
            while let Some(n) = self.a.poll_transmit(self.now, &mut self.buf) {
                self.ab.send(self.now, &self.buf[..n]);
                moved += 1;
                progress = true;
            }
            while let Some(n) = self.b.poll_transmit(self.now, &mut self.buf) {
                self.ba.send(self.now, &self.buf[..n]);
                moved += 1;
                progress = true;
            }
            while let Some(f) = self.ab.poll(self.now) {
                self.b.handle_frame(self.now, &f);
                moved += 1;
                progress = true;
            }
            while let Some(f) = self.ba.poll(self.now) {
                self.a.handle_frame(self.now, &f);
                moved += 1;
                progress = true;
            }
            if !progress {
                return moved;
            }
        }
    }

    /// The next instant anything happens (a frame arrives or a timer is due).
    pub fn next_wakeup(&self) -> Option<Instant> {
        [
            self.ab.next_delivery(),
            self.ba.next_delivery(),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Exchanges frames now, then jumps to the next wakeup (at most to `limit`) and runs the
    /// timers due there. Returns false when nothing is left to happen before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.exchange();
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        if next > limit {
            self.now = self.now.max(limit);
            return false;
        }
        self.now = self.now.max(next);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.exchange();
        true
    }

    /// Advances virtual time by `d`, processing everything on the way.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.exchange();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_link_delivers_in_order_after_its_delay() {
        let mut l = SimLink::new(LinkParams::default(), 1);
        for i in 0..10u8 {
            l.send(Instant::from_micros(u64::from(i)), &[i]);
        }
        assert_eq!(l.poll(Instant::from_micros(999)), None);
        let t = Instant::from_millis(2);
        let got: Vec<u8> = core::iter::from_fn(|| l.poll(t)).map(|f| f[0]).collect();
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        assert_eq!(l.next_delivery(), None);
    }

    #[test]
    fn impairments_follow_their_rates_and_replay_from_the_seed() {
        let params = LinkParams {
            loss: 0.1,
            duplicate: 0.05,
            corrupt: 0.02,
            reorder: 0.03,
            ..LinkParams::default()
        };
        let run = |seed| {
            let mut l = SimLink::new(params.clone(), seed);
            for i in 0..20_000u32 {
                l.send(Instant::from_micros(u64::from(i) * 10), &i.to_le_bytes());
            }
            let out: Vec<Vec<u8>> =
                core::iter::from_fn(|| l.poll(Instant::from_millis(1_000))).collect();
            (l.stats(), out)
        };
        let (stats, out) = run(42);
        // Within 5 standard deviations of a binomial with n = 20 000.
        let near = |count: u64, p: f64| {
            let n = 20_000.0;
            let sd = (n * p * (1.0 - p)).sqrt();
            (count as f64 - n * p).abs() < 5.0 * sd
        };
        assert!(near(stats.lost, 0.1), "{stats:?}");
        assert!(near(stats.duplicated, 0.05 * 0.9), "{stats:?}");
        assert_eq!(out.len() as u64, stats.delivered);
        assert_eq!(stats.delivered, stats.sent - stats.lost + stats.duplicated);
        assert_eq!(run(42).1, out);
        assert_ne!(run(43).1, out);
    }
}
