//! The ARP cache (RFC 826) with a bounded queue of frames waiting for resolution.
//!
//! No I/O: the endpoint asks and the cache answers what to do.
//!
//! ```text
//! outbound frame to next hop `ip`:
//!     match cache.lookup(ip, now) {
//!         Lookup::Found(mac)                  => write mac into the frame, send it
//!         Lookup::Pending { send_request }    => if send_request { emit an ARP request }
//!                                                cache.enqueue(ip, frame, now)  (may drop)
//!     }
//! inbound ARP packet (request or reply):
//!     for frame in cache.on_arp(sender_ip, sender_mac, target_is_us, now) { send frame }
//! timer (cache.poll_timeout()):
//!     cache.handle_timeout(now, |event| ...)   // ArpEvent::SendRequest / ResolutionFailed
//! ```
//!
//! Invariants and bounds (STYLE rule 9):
//! - Static entries never expire and are never replaced by learned ones.
//! - Dynamic entries live `entry_lifetime` after they were last learned; at most
//!   `max_entries` of them exist, the least recently learned is evicted to make room.
//! - At most `max_pending_destinations` addresses await resolution, each with at most
//!   `max_frames_per_destination` frames; all of them together hold at most
//!   `max_pending_frames` frames and `max_pending_bytes` bytes. A frame that does not fit is
//!   refused ([`Dropped`]) and counted; frames are never evicted to make room for others.
//! - A queued frame is dropped `pending_timeout` after it was queued; when the last frames of
//!   an address time out, [`ArpEvent::ResolutionFailed`] is reported once.
//! - An ARP request for one address is asked for at most once per `request_interval`.
//!
//! What it leaves to others: building and sending ARP frames (see [`crate::wire`]), answering
//! requests for our own address, gratuitous ARP on start-up, and routing (which next hop to
//! resolve).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use crate::time::{Duration, Instant};
use crate::wire::{EthernetAddress, Ipv4Address, ETHERNET_HEADER_LEN};

/// Tunables of an [`ArpCache`]. Every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpConfig {
    /// How long a learned entry stays valid (default 60 s).
    pub entry_lifetime: Duration,
    /// Maximum number of dynamic entries (default 1024); static ones do not count.
    pub max_entries: usize,
    /// How long a queued frame waits for resolution before it is dropped (default 1 s).
    pub pending_timeout: Duration,
    /// Minimum time between two ARP requests for one address (default 1 s).
    pub request_interval: Duration,
    /// Maximum frames queued for one address (default 8).
    pub max_frames_per_destination: usize,
    /// Maximum frames queued in all (default 64).
    pub max_pending_frames: usize,
    /// Maximum bytes queued in all (default 64 × 1514).
    pub max_pending_bytes: usize,
    /// Maximum addresses awaiting resolution at once (default 64).
    pub max_pending_destinations: usize,
}

impl Default for ArpConfig {
    fn default() -> ArpConfig {
        ArpConfig {
            entry_lifetime: Duration::from_secs(60),
            max_entries: 1024,
            pending_timeout: Duration::from_secs(1),
            request_interval: Duration::from_secs(1),
            max_frames_per_destination: 8,
            max_pending_frames: 64,
            max_pending_bytes: 64 * 1514,
            max_pending_destinations: 64,
        }
    }
}

/// The answer of [`ArpCache::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Lookup {
    /// The address resolves to this MAC.
    Found(EthernetAddress),
    /// Unresolved: queue the frame with [`ArpCache::enqueue`]; if `send_request`, also send
    /// an ARP request for the address now (the cache recorded that it was sent).
    Pending {
        /// Send an ARP request now.
        send_request: bool,
    },
}

/// Why [`ArpCache::enqueue`] refused a frame (the frame is dropped; count it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dropped {
    /// This address already has `max_frames_per_destination` frames queued.
    DestinationFull,
    /// The queue holds `max_pending_frames` frames or would exceed `max_pending_bytes`.
    QueueFull,
    /// `max_pending_destinations` other addresses are already awaiting resolution.
    TooManyDestinations,
    /// Shorter than an Ethernet header (API misuse: there is no MAC to fix up).
    NotAFrame,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dropped::DestinationFull => "too many frames queued for this address",
            Dropped::QueueFull => "ARP pending queue full",
            Dropped::TooManyDestinations => "too many addresses awaiting resolution",
            Dropped::NotAFrame => "frame shorter than an Ethernet header",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Dropped {}

/// What [`ArpCache::handle_timeout`] asks the endpoint to do or tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpEvent {
    /// Frames still wait for this address and `request_interval` passed: send another request.
    SendRequest(Ipv4Address),
    /// The frames queued for this address timed out and were dropped: it did not resolve.
    ResolutionFailed(Ipv4Address),
}

/// Counts of what [`ArpCache::handle_timeout`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireCounts {
    /// Dynamic entries that reached the end of their lifetime.
    pub entries_expired: usize,
    /// Queued frames dropped because their resolution timed out.
    pub frames_dropped: usize,
    /// Addresses for which [`ArpEvent::ResolutionFailed`] was reported.
    pub resolutions_failed: usize,
}

/// Lifetime counters of an [`ArpCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArpStats {
    /// Entries learned or refreshed from ARP packets.
    pub learned: u64,
    /// Dynamic entries evicted to make room.
    pub evicted: u64,
    /// Dynamic entries expired.
    pub expired: u64,
    /// ARP requests the cache asked for (lookups and retransmissions).
    pub requests: u64,
    /// Frames queued.
    pub frames_queued: u64,
    /// Frames released on resolution.
    pub frames_released: u64,
    /// Frames refused by [`ArpCache::enqueue`].
    pub frames_refused: u64,
    /// Frames dropped after `pending_timeout`.
    pub frames_timed_out: u64,
    /// Resolutions that failed.
    pub resolutions_failed: u64,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Static(EthernetAddress),
    Dynamic {
        mac: EthernetAddress,
        learned: Instant,
    },
}

#[derive(Debug)]
struct PendingDest {
    /// When a request was last asked for (`None`: never).
    last_request: Option<Instant>,
    /// (deadline, frame), in arrival order (so deadlines are non-decreasing).
    frames: VecDeque<(Instant, Vec<u8>)>,
}

/// An ARP cache with static and learned entries and a bounded queue of frames awaiting
/// resolution. See the module documentation for the calling order and the bounds.
#[derive(Debug)]
pub struct ArpCache {
    config: ArpConfig,
    entries: BTreeMap<Ipv4Address, Entry>,
    /// Dynamic entries by the time they were learned: oldest first.
    by_age: BTreeSet<(Instant, Ipv4Address)>,
    dynamic_count: usize,
    pending: BTreeMap<Ipv4Address, PendingDest>,
    pending_frames: usize,
    pending_bytes: usize,
    stats: ArpStats,
}

impl Default for ArpCache {
    fn default() -> ArpCache {
        ArpCache::new(ArpConfig::default())
    }
}

impl ArpCache {
    /// An empty cache.
    pub fn new(config: ArpConfig) -> ArpCache {
        ArpCache {
            config,
            entries: BTreeMap::new(),
            by_age: BTreeSet::new(),
            dynamic_count: 0,
            pending: BTreeMap::new(),
            pending_frames: 0,
            pending_bytes: 0,
            stats: ArpStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ArpConfig {
        &self.config
    }

    /// Lifetime counters.
    pub fn stats(&self) -> &ArpStats {
        &self.stats
    }

    /// Number of dynamic entries (expired ones included until [`ArpCache::handle_timeout`]).
    pub fn dynamic_len(&self) -> usize {
        self.dynamic_count
    }

    /// Frames and bytes currently queued.
    pub fn pending_len(&self) -> (usize, usize) {
        (self.pending_frames, self.pending_bytes)
    }

    /// Number of addresses awaiting resolution.
    pub fn pending_destinations(&self) -> usize {
        self.pending.len()
    }

    /// Add or replace a static entry (never expires, never overridden by ARP packets).
    /// Frames waiting for `ip` are released, like [`ArpCache::on_arp`] does.
    #[must_use = "released frames must be sent"]
    pub fn add_static(&mut self, ip: Ipv4Address, mac: EthernetAddress) -> Released {
        self.remove_dynamic(ip);
        self.entries.insert(ip, Entry::Static(mac));
        self.release(ip, mac)
    }

    /// Remove an entry, static or dynamic; whether there was one.
    pub fn remove(&mut self, ip: Ipv4Address) -> bool {
        if self.remove_dynamic(ip) {
            return true;
        }
        self.entries.remove(&ip).is_some()
    }

    fn remove_dynamic(&mut self, ip: Ipv4Address) -> bool {
        if let Some(Entry::Dynamic { learned, .. }) = self.entries.get(&ip).copied() {
            self.entries.remove(&ip);
            self.by_age.remove(&(learned, ip));
            self.dynamic_count -= 1;
            true
        } else {
            false
        }
    }

    fn is_live(&self, learned: Instant, now: Instant) -> bool {
        now.saturating_since(learned) < self.config.entry_lifetime
    }

    /// The MAC of `ip` if known and unexpired, without side effects.
    pub fn peek(&self, ip: Ipv4Address, now: Instant) -> Option<EthernetAddress> {
        match self.entries.get(&ip)? {
            Entry::Static(mac) => Some(*mac),
            Entry::Dynamic { mac, learned } => self.is_live(*learned, now).then_some(*mac),
        }
    }

    /// Resolve `ip` for an outbound frame.
    ///
    /// When unresolved, starts tracking `ip` (if fewer than `max_pending_destinations`
    /// addresses are tracked) and says whether to send an ARP request now: at most once per
    /// `request_interval` per address. When nothing can be tracked, `send_request` is false
    /// and [`ArpCache::enqueue`] will refuse the frame.
    pub fn lookup(&mut self, ip: Ipv4Address, now: Instant) -> Lookup {
        if let Some(mac) = self.peek(ip, now) {
            return Lookup::Found(mac);
        }
        let interval = self.config.request_interval;
        let room = self.pending.len() < self.config.max_pending_destinations;
        let send_request = match self.pending.get_mut(&ip) {
            Some(dest) if request_due(dest.last_request, now, interval) => {
                dest.last_request = Some(now);
                true
            }
            Some(_) => false,
            None if room => {
                let dest = PendingDest {
                    last_request: Some(now),
                    frames: VecDeque::new(),
                };
                self.pending.insert(ip, dest);
                true
            }
            None => false,
        };
        if send_request {
            self.stats.requests += 1;
        }
        Lookup::Pending { send_request }
    }

    /// Queue a whole Ethernet frame for `ip` until it resolves; its destination MAC (bytes
    /// 0..6) is overwritten on release. Call after [`ArpCache::lookup`] returned `Pending`.
    pub fn enqueue(&mut self, ip: Ipv4Address, frame: &[u8], now: Instant) -> Result<(), Dropped> {
        let result = self.try_enqueue(ip, frame, now);
        match result {
            Ok(()) => self.stats.frames_queued += 1,
            Err(_) => self.stats.frames_refused += 1,
        }
        result
    }

    fn try_enqueue(&mut self, ip: Ipv4Address, frame: &[u8], now: Instant) -> Result<(), Dropped> {
        if frame.len() < ETHERNET_HEADER_LEN {
            return Err(Dropped::NotAFrame);
        }
        if self.pending_frames >= self.config.max_pending_frames
            || self.pending_bytes.saturating_add(frame.len()) > self.config.max_pending_bytes
        {
            return Err(Dropped::QueueFull);
        }
        if !self.pending.contains_key(&ip) {
            if self.pending.len() >= self.config.max_pending_destinations {
                return Err(Dropped::TooManyDestinations);
            }
            // Not looked up first: track it, the request is asked for by the next lookup or
            // by handle_timeout.
            self.pending.insert(
                ip,
                PendingDest {
                    last_request: None,
                    frames: VecDeque::new(),
                },
            );
        }
        let max_per_dest = self.config.max_frames_per_destination;
        let deadline = now + self.config.pending_timeout;
        let Some(dest) = self.pending.get_mut(&ip) else {
            return Err(Dropped::TooManyDestinations);
        };
        if dest.frames.len() >= max_per_dest {
            return Err(Dropped::DestinationFull);
        }
        dest.frames.push_back((deadline, frame.to_vec()));
        self.pending_frames += 1;
        self.pending_bytes += frame.len();
        Ok(())
    }

    /// An ARP packet (request or reply) from `sender_ip` at `sender_mac` arrived;
    /// `target_is_us` when its target protocol address is ours.
    ///
    /// RFC 826 merge rule: "If the pair <protocol type, sender protocol address> is already
    /// in my translation table, update the sender hardware address field of the entry with
    /// the new information … If Merge_flag is false, add the triplet … to the translation
    /// table" — the latter only when we are the target. Addresses we are resolving count as
    /// present. Static entries are never changed; broadcast, multicast or zero sender MACs
    /// and the unspecified sender address (ARP probes) are ignored.
    ///
    /// Returns the frames that waited for `sender_ip`, in the order they were queued, with
    /// their destination MAC set: send them now.
    #[must_use = "released frames must be sent"]
    pub fn on_arp(
        &mut self,
        sender_ip: Ipv4Address,
        sender_mac: EthernetAddress,
        target_is_us: bool,
        now: Instant,
    ) -> Released {
        if !sender_mac.is_unicast()
            || sender_mac == EthernetAddress([0; 6])
            || sender_ip.is_unspecified()
            || sender_ip.is_broadcast()
            || sender_ip.is_multicast()
        {
            return Released::empty();
        }
        let present =
            self.entries.contains_key(&sender_ip) || self.pending.contains_key(&sender_ip);
        if !present && !target_is_us {
            return Released::empty();
        }
        match self.entries.get(&sender_ip) {
            Some(Entry::Static(mac)) => {
                // Static wins; still release waiting frames (cannot normally happen).
                let mac = *mac;
                return self.release(sender_ip, mac);
            }
            Some(Entry::Dynamic { .. }) => {
                self.remove_dynamic(sender_ip);
            }
            None => {}
        }
        if self.insert_dynamic(sender_ip, sender_mac, now) {
            self.stats.learned += 1;
        }
        self.release(sender_ip, sender_mac)
    }

    /// [`ArpCache::on_arp`] for a reply addressed to us.
    #[must_use = "released frames must be sent"]
    pub fn on_reply(&mut self, ip: Ipv4Address, mac: EthernetAddress, now: Instant) -> Released {
        self.on_arp(ip, mac, true, now)
    }

    /// Insert a dynamic entry (none exists for `ip`), evicting to stay within `max_entries`.
    fn insert_dynamic(&mut self, ip: Ipv4Address, mac: EthernetAddress, now: Instant) -> bool {
        if self.config.max_entries == 0 {
            return false;
        }
        while self.dynamic_count >= self.config.max_entries {
            let Some(&(learned, oldest)) = self.by_age.iter().next() else {
                break;
            };
            self.by_age.remove(&(learned, oldest));
            self.entries.remove(&oldest);
            self.dynamic_count -= 1;
            if self.is_live(learned, now) {
                self.stats.evicted += 1;
            } else {
                self.stats.expired += 1;
            }
        }
        self.entries
            .insert(ip, Entry::Dynamic { mac, learned: now });
        self.by_age.insert((now, ip));
        self.dynamic_count += 1;
        true
    }

    fn release(&mut self, ip: Ipv4Address, mac: EthernetAddress) -> Released {
        let Some(dest) = self.pending.remove(&ip) else {
            return Released::empty();
        };
        let bytes: usize = dest.frames.iter().map(|(_, f)| f.len()).sum();
        self.pending_frames -= dest.frames.len();
        self.pending_bytes -= bytes;
        self.stats.frames_released += dest.frames.len() as u64;
        Released {
            frames: dest.frames,
            mac,
        }
    }

    /// The next instant [`ArpCache::handle_timeout`] has work: a queued frame's deadline or
    /// a request retransmission. Entry expiry needs no timer (lookups check lifetimes).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .filter_map(|dest| {
                let first = dest.frames.front()?.0;
                let retransmit = match dest.last_request {
                    Some(t) => t + self.config.request_interval,
                    None => Instant::ZERO,
                };
                Some(first.min(retransmit))
            })
            .min()
    }

    /// Drop expired entries and timed-out frames, ask for request retransmissions.
    /// Spurious calls are harmless. Work is proportional to the number of expired entries
    /// plus the number of pending addresses (at most `max_pending_destinations`).
    pub fn handle_timeout<F: FnMut(ArpEvent)>(
        &mut self,
        now: Instant,
        mut on_event: F,
    ) -> ExpireCounts {
        let mut counts = ExpireCounts::default();
        while let Some(&(learned, ip)) = self.by_age.iter().next() {
            if self.is_live(learned, now) {
                break;
            }
            self.by_age.remove(&(learned, ip));
            self.entries.remove(&ip);
            self.dynamic_count -= 1;
            counts.entries_expired += 1;
        }
        self.stats.expired += counts.entries_expired as u64;

        let interval = self.config.request_interval;
        let mut requests = 0;
        self.pending.retain(|&ip, dest| {
            let had_frames = !dest.frames.is_empty();
            while let Some((deadline, frame)) = dest.frames.front() {
                if *deadline > now {
                    break;
                }
                self.pending_frames -= 1;
                self.pending_bytes -= frame.len();
                counts.frames_dropped += 1;
                dest.frames.pop_front();
            }
            if had_frames && dest.frames.is_empty() {
                counts.resolutions_failed += 1;
                on_event(ArpEvent::ResolutionFailed(ip));
                return false;
            }
            let due = request_due(dest.last_request, now, interval);
            if dest.frames.is_empty() {
                // Tracked only for rate limiting: forget it once the interval passed.
                return !due;
            }
            if due {
                dest.last_request = Some(now);
                requests += 1;
                on_event(ArpEvent::SendRequest(ip));
            }
            true
        });
        self.stats.requests += requests;
        self.stats.frames_timed_out += counts.frames_dropped as u64;
        self.stats.resolutions_failed += counts.resolutions_failed as u64;
        counts
    }
}

fn request_due(last: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last.is_none_or(|t| now.saturating_since(t) >= interval)
}

/// Frames released by a resolution, in the order they were queued, destination MAC set.
#[derive(Debug)]
#[must_use = "released frames must be sent"]
pub struct Released {
    frames: VecDeque<(Instant, Vec<u8>)>,
    mac: EthernetAddress,
}

impl Released {
    fn empty() -> Released {
        Released {
            frames: VecDeque::new(),
            mac: EthernetAddress([0; 6]),
        }
    }

    /// Frames left.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// No frame left.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl Iterator for Released {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let (_, mut frame) = self.frames.pop_front()?;
        if let Some(dst) = frame.get_mut(..6) {
            dst.copy_from_slice(&self.mac.0);
        }
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.frames.len(), Some(self.frames.len()))
    }
}

impl ExactSizeIterator for Released {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    const MAC1: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const MAC2: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
    const IP1: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const IP2: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn ip(n: u32) -> Ipv4Address {
        Ipv4Address::from(0x0a00_0000 + n)
    }

    /// A frame whose destination MAC is unset and whose byte 14 tags it.
    fn frame(tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 20];
        f[14] = tag;
        f
    }

    #[test]
    fn learn_then_expire() {
        let mut c = ArpCache::default();
        assert_eq!(c.lookup(IP1, t(0)), Lookup::Pending { send_request: true });
        assert_eq!(c.on_reply(IP1, MAC1, t(10)).len(), 0);
        assert_eq!(c.lookup(IP1, t(20)), Lookup::Found(MAC1));
        assert_eq!(c.lookup(IP1, t(60_009)), Lookup::Found(MAC1));
        assert_eq!(c.peek(IP1, t(60_010)), None);
        let counts = c.handle_timeout(t(60_010), |_| {});
        assert_eq!(counts.entries_expired, 1);
        assert_eq!(c.dynamic_len(), 0);
    }

    #[test]
    fn rfc826_merge_rule() {
        let mut c = ArpCache::default();
        // Not targeting us and unknown: not added.
        let _ = c.on_arp(IP1, MAC1, false, t(0));
        assert_eq!(c.peek(IP1, t(0)), None);
        // Targeting us: added.
        let _ = c.on_arp(IP1, MAC1, true, t(0));
        assert_eq!(c.peek(IP1, t(0)), Some(MAC1));
        // Present: updated (and refreshed) even when not targeting us.
        let _ = c.on_arp(IP1, MAC2, false, t(30_000));
        assert_eq!(c.peek(IP1, t(80_000)), Some(MAC2));
        // Broadcast / zero sender MACs and unspecified senders are ignored.
        let _ = c.on_arp(IP2, EthernetAddress::BROADCAST, true, t(0));
        let _ = c.on_arp(IP2, EthernetAddress([0; 6]), true, t(0));
        let _ = c.on_arp(Ipv4Address::UNSPECIFIED, MAC2, true, t(0));
        assert_eq!(c.peek(IP2, t(0)), None);
        assert_eq!(c.dynamic_len(), 1);
    }

    #[test]
    fn static_entries_take_precedence_and_never_expire() {
        let mut c = ArpCache::default();
        let _ = c.on_reply(IP1, MAC2, t(0));
        assert_eq!(c.add_static(IP1, MAC1).len(), 0);
        assert_eq!(c.dynamic_len(), 0);
        let _ = c.on_reply(IP1, MAC2, t(1));
        assert_eq!(c.lookup(IP1, t(1)), Lookup::Found(MAC1));
        let _ = c.handle_timeout(t(10_000_000), |_| {});
        assert_eq!(c.lookup(IP1, t(10_000_000)), Lookup::Found(MAC1));
        assert!(c.remove(IP1));
        assert_eq!(c.peek(IP1, t(0)), None);
    }

    #[test]
    fn capacity_evicts_oldest_dynamic() {
        let cfg = ArpConfig {
            max_entries: 3,
            ..ArpConfig::default()
        };
        let mut c = ArpCache::new(cfg);
        let _ = c.add_static(ip(100), MAC1);
        for i in 0..5 {
            let _ = c.on_reply(ip(i), MAC2, t(u64::from(i)));
        }
        assert_eq!(c.dynamic_len(), 3);
        assert_eq!(c.peek(ip(0), t(10)), None);
        assert_eq!(c.peek(ip(1), t(10)), None);
        assert_eq!(c.peek(ip(2), t(10)), Some(MAC2));
        assert_eq!(c.peek(ip(100), t(10)), Some(MAC1));
        assert_eq!(c.stats().evicted, 2);
        // Refreshing an entry makes it the youngest.
        let _ = c.on_reply(ip(2), MAC1, t(20));
        let _ = c.on_reply(ip(9), MAC1, t(21));
        assert_eq!(c.peek(ip(2), t(22)), Some(MAC1));
        assert_eq!(c.peek(ip(3), t(22)), None);
    }

    #[test]
    fn pending_frames_released_in_order_with_mac_fixed() {
        let mut c = ArpCache::default();
        assert_eq!(c.lookup(IP1, t(0)), Lookup::Pending { send_request: true });
        for tag in 0..5 {
            c.enqueue(IP1, &frame(tag), t(0)).unwrap();
            assert_eq!(
                c.lookup(IP1, t(1)),
                Lookup::Pending {
                    send_request: false
                }
            );
        }
        c.enqueue(IP2, &frame(99), t(0)).unwrap();
        assert_eq!(c.pending_len(), (6, 120));
        let released: Vec<Vec<u8>> = c.on_reply(IP1, MAC1, t(5)).collect();
        assert_eq!(released.len(), 5);
        for (i, f) in released.iter().enumerate() {
            assert_eq!(&f[..6], &MAC1.0);
            assert_eq!(f[14], i as u8);
        }
        assert_eq!(c.pending_len(), (1, 20));
        assert_eq!(c.stats().frames_released, 5);
        // A static entry also releases.
        let out: Vec<Vec<u8>> = c.add_static(IP2, MAC2).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][..6], &MAC2.0);
        assert_eq!(c.pending_len(), (0, 0));
    }

    #[test]
    fn request_rate_limited_per_address() {
        let mut c = ArpCache::default();
        assert_eq!(c.lookup(IP1, t(0)), Lookup::Pending { send_request: true });
        assert_eq!(
            c.lookup(IP1, t(999)),
            Lookup::Pending {
                send_request: false
            }
        );
        assert_eq!(
            c.lookup(IP2, t(999)),
            Lookup::Pending { send_request: true }
        );
        assert_eq!(
            c.lookup(IP1, t(1000)),
            Lookup::Pending { send_request: true }
        );
        assert_eq!(
            c.lookup(IP1, t(1500)),
            Lookup::Pending {
                send_request: false
            }
        );
        assert_eq!(c.stats().requests, 3);
    }

    #[test]
    fn timeout_drops_frames_and_reports_failure() {
        let cfg = ArpConfig {
            pending_timeout: Duration::from_secs(3),
            ..ArpConfig::default()
        };
        let mut c = ArpCache::new(cfg);
        let _ = c.lookup(IP1, t(0));
        c.enqueue(IP1, &frame(1), t(0)).unwrap();
        c.enqueue(IP1, &frame(2), t(500)).unwrap();
        assert_eq!(c.poll_timeout(), Some(t(1000)));
        let mut events = Vec::new();
        // Retransmission after request_interval, frames still waiting.
        let counts = c.handle_timeout(t(1000), |e| events.push(e));
        assert_eq!(events, vec![ArpEvent::SendRequest(IP1)]);
        assert_eq!(counts, ExpireCounts::default());
        events.clear();
        let counts = c.handle_timeout(t(3000), |e| events.push(e));
        assert_eq!(counts.frames_dropped, 1);
        assert_eq!(events, vec![ArpEvent::SendRequest(IP1)]);
        events.clear();
        let counts = c.handle_timeout(t(3500), |e| events.push(e));
        assert_eq!(
            counts,
            ExpireCounts {
                entries_expired: 0,
                frames_dropped: 1,
                resolutions_failed: 1
            }
        );
        assert_eq!(events, vec![ArpEvent::ResolutionFailed(IP1)]);
        assert_eq!(c.pending_len(), (0, 0));
        assert_eq!(c.pending_destinations(), 0);
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.stats().frames_timed_out, 2);
        // A late reply releases nothing but is learned (we asked).
        let _ = c.on_arp(IP1, MAC1, true, t(4000));
        assert_eq!(c.peek(IP1, t(4000)), Some(MAC1));
    }

    #[test]
    fn default_timeout_one_second() {
        let mut c = ArpCache::default();
        let _ = c.lookup(IP1, t(0));
        c.enqueue(IP1, &frame(1), t(0)).unwrap();
        let mut events = Vec::new();
        assert_eq!(
            c.handle_timeout(t(999), |e| events.push(e)),
            ExpireCounts::default()
        );
        assert_eq!(
            c.handle_timeout(t(1000), |e| events.push(e)).frames_dropped,
            1
        );
        assert_eq!(events, vec![ArpEvent::ResolutionFailed(IP1)]);
    }

    #[test]
    fn lookups_without_frames_are_forgotten() {
        let mut c = ArpCache::default();
        let _ = c.lookup(IP1, t(0));
        assert_eq!(c.pending_destinations(), 1);
        let mut events = Vec::new();
        let _ = c.handle_timeout(t(1000), |e| events.push(e));
        assert!(events.is_empty());
        assert_eq!(c.pending_destinations(), 0);
    }

    #[test]
    fn queue_bounds() {
        let mut c = ArpCache::default();
        for i in 0..8 {
            c.enqueue(IP1, &frame(i), t(0)).unwrap();
        }
        assert_eq!(
            c.enqueue(IP1, &frame(8), t(0)),
            Err(Dropped::DestinationFull)
        );
        assert_eq!(c.enqueue(IP1, &[0u8; 5], t(0)), Err(Dropped::NotAFrame));
        for i in 0..7u32 {
            for _ in 0..8 {
                c.enqueue(ip(1000 + i), &frame(0), t(0)).unwrap();
            }
        }
        assert_eq!(c.pending_len().0, 64);
        assert_eq!(
            c.enqueue(ip(5000), &frame(0), t(0)),
            Err(Dropped::QueueFull)
        );
        let cfg = ArpConfig {
            max_pending_bytes: 50,
            ..ArpConfig::default()
        };
        let mut c = ArpCache::new(cfg);
        c.enqueue(IP1, &frame(0), t(0)).unwrap();
        c.enqueue(IP2, &frame(0), t(0)).unwrap();
        assert_eq!(c.enqueue(IP1, &frame(0), t(0)), Err(Dropped::QueueFull));
    }

    #[test]
    fn flood_of_unresolved_destinations_stays_bounded() {
        let mut c = ArpCache::default();
        let mut requests = 0;
        for i in 0..10_000u32 {
            if let Lookup::Pending { send_request: true } = c.lookup(ip(i), t(0)) {
                requests += 1;
            }
            let _ = c.enqueue(ip(i), &frame(0), t(0));
            assert!(c.pending_destinations() <= 64);
            assert!(c.pending_len().0 <= 64);
        }
        assert_eq!(requests, 64);
        assert_eq!(
            c.enqueue(ip(20_000), &frame(0), t(0)),
            Err(Dropped::QueueFull)
        );
        let counts = c.handle_timeout(t(1000), |_| {});
        assert_eq!(counts.resolutions_failed, 64);
        assert_eq!(c.pending_destinations(), 0);
        assert_eq!(c.pending_len(), (0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Lookup(u8),
        Enqueue(u8, usize),
        Reply(u8, bool),
        Advance(u16),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..20u8).prop_map(Op::Lookup),
            (0..20u8, 14..200usize).prop_map(|(a, n)| Op::Enqueue(a, n)),
            (0..20u8, any::<bool>()).prop_map(|(a, us)| Op::Reply(a, us)),
            (0..800u16).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Any sequence of operations keeps every bound and the byte/frame accounting exact;
        /// every queued frame is released, timed out or still queued.
        #[test]
        fn bounds_and_accounting_hold(ops in proptest::collection::vec(arb_op(), 0..300)) {
            let cfg = ArpConfig {
                max_entries: 5,
                max_frames_per_destination: 3,
                max_pending_frames: 10,
                max_pending_bytes: 1000,
                max_pending_destinations: 4,
                entry_lifetime: Duration::from_secs(2),
                ..ArpConfig::default()
            };
            let mut c = ArpCache::new(cfg);
            let mut now = Instant::ZERO;
            let mut released = 0u64;
            for op in ops {
                match op {
                    Op::Lookup(a) => { let _ = c.lookup(ip(a.into()), now); }
                    Op::Enqueue(a, n) => { let _ = c.enqueue(ip(a.into()), &vec![0; n], now); }
                    Op::Reply(a, us) => {
                        for f in c.on_arp(ip(a.into()), MAC1, us, now) {
                            prop_assert_eq!(&f[..6], &MAC1.0);
                            released += 1;
                        }
                    }
                    Op::Advance(ms) => {
                        now += Duration::from_millis(ms.into());
                        let _ = c.handle_timeout(now, |_| {});
                    }
                }
                prop_assert!(c.dynamic_len() <= 5);
                prop_assert!(c.pending_destinations() <= 4);
                let (frames, bytes) = c.pending_len();
                let real: usize = c.pending.values().map(|d| d.frames.len()).sum();
                let real_bytes: usize = c.pending.values().flat_map(|d| d.frames.iter()).map(|(_, f)| f.len()).sum();
                prop_assert_eq!((frames, bytes), (real, real_bytes));
                prop_assert!(frames <= 10 && bytes <= 1000);
                prop_assert!(c.pending.values().all(|d| d.frames.len() <= 3));
                prop_assert_eq!(c.by_age.len(), c.dynamic_len());
                let s = c.stats();
                prop_assert_eq!(s.frames_queued, s.frames_released + s.frames_timed_out + frames as u64);
                prop_assert_eq!(s.frames_released, released);
            }
        }
    }
}
