//! Endpoint configuration. Every field has a default; nothing here is read from a file (that
//! is `mtcp-api`'s job).

use crate::time::Duration;
use crate::wire::ChecksumAccel;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::ops::RangeInclusive;

/// A static route: `dest/prefix_len` via `gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dest: Ipv4Addr,
    /// Prefix length of the destination network (0..=32).
    pub prefix_len: u8,
    /// Next hop (on the interface's subnet).
    pub gateway: Ipv4Addr,
}

/// The endpoint's one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Our MAC address.
    pub mac: [u8; 6],
    /// Our IPv4 address.
    pub addr: Ipv4Addr,
    /// Prefix length of our subnet.
    pub prefix_len: u8,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Static routes, most specific match wins.
    pub routes: Vec<Route>,
    /// Static ARP entries (never expire, never overwritten by ARP traffic).
    pub static_arp: Vec<(Ipv4Addr, [u8; 6])>,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            mac: [0x02, 0, 0, 0, 0, 1],
            addr: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 24,
            gateway: None,
            routes: Vec::new(),
            static_arp: Vec::new(),
        }
    }
}

/// Keepalive settings (RFC 1122 §4.2.3.6), off unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection times out.
    pub count: u32,
}

impl Default for Keepalive {
    /// Linux's defaults: 7200 s idle, 75 s interval, 9 probes.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            count: 9,
        }
    }
}

/// Per-connection TCP settings (defaults for new sockets; some can be changed per socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// MSS we announce and the largest segment we send (bytes of payload). Default 1460.
    pub mss: u16,
    /// Send buffer per connection, bytes. Default 64 KiB.
    pub send_buffer: usize,
    /// Receive buffer per connection, bytes (bounds the advertised window). Default 64 KiB.
    pub recv_buffer: usize,
    /// Offer window scaling (RFC 7323 §2). Default on.
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323 §3). Default on.
    pub timestamps: bool,
    /// Offer SACK (RFC 2018). Default on.
    pub sack: bool,
    /// Initial window in segments; `None` means RFC 6928's
    /// `min(10·MSS, max(2·MSS, 14600))`.
    pub initial_window_segments: Option<u32>,
    /// Disable Nagle's algorithm for new sockets. Default off (Nagle on).
    pub nodelay: bool,
    /// Delayed ACK timeout (RFC 1122 §4.2.3.2: at most 500 ms; every second in-order
    /// segment, full-sized or not, is acknowledged at once anyway). `None` acknowledges
    /// every segment. Default 40 ms.
    pub delayed_ack: Option<Duration>,
    /// TIME-WAIT duration (2·MSL). Default 60 s, as Linux.
    pub time_wait: Duration,
    /// How long FIN-WAIT-2 waits for the peer's FIN after we closed. Default 60 s.
    pub fin_wait2_timeout: Duration,
    /// Keepalive, off by default.
    pub keepalive: Option<Keepalive>,
    /// Idle timeout (mTCP's `tcp_timeout`): a synchronized connection that has received
    /// nothing for this long is reset (RST) and ends with [`CloseReason::TimedOut`],
    /// whatever keepalive says. `None` (the default) never.
    ///
    /// [`CloseReason::TimedOut`]: crate::CloseReason::TimedOut
    pub idle_timeout: Option<Duration>,
    /// SYN (and SYN-ACK) retransmissions before giving up. Default 6.
    pub syn_retries: u32,
    /// Data retransmissions of one segment before giving up. Default 15.
    pub data_retries: u32,
    /// Lower bound of the RTO. RFC 6298 §2.4 says 1 s; Linux uses 200 ms. Default 200 ms.
    pub min_rto: Duration,
    /// Upper bound of the RTO (RFC 6298 §2.5: at least 60 s). Default 120 s.
    pub max_rto: Duration,
    /// RTO before any sample (RFC 6298 §2.1). Default 1 s.
    pub initial_rto: Duration,
    /// Challenge ACKs per second per endpoint (RFC 5961 §7). Default 1000.
    pub challenge_ack_limit: u32,
    /// Out-of-order ranges kept per connection for reassembly. Default 32.
    pub max_ooo_ranges: usize,
    /// Drop segments with both SYN and FIN set unanswered in LISTEN and SYN-SENT (a
    /// hardening against stack fingerprinting, FreeBSD's `net.inet.tcp.drop_synfin`; Linux
    /// drops them in LISTEN). Synchronized states answer any SYN with RFC 5961's challenge
    /// ACK anyway. RFC 9293 gives SYN+FIN no special meaning: off by default, a SYN+FIN is
    /// handled as the SYN it is.
    pub drop_syn_fin: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            mss: 1460,
            send_buffer: 64 * 1024,
            recv_buffer: 64 * 1024,
            window_scaling: true,
            timestamps: true,
            sack: true,
            initial_window_segments: None,
            nodelay: false,
            delayed_ack: Some(Duration::from_millis(40)),
            time_wait: Duration::from_secs(60),
            fin_wait2_timeout: Duration::from_secs(60),
            idle_timeout: None,
            keepalive: None,
            syn_retries: 6,
            data_retries: 15,
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            initial_rto: Duration::from_secs(1),
            challenge_ack_limit: 1000,
            max_ooo_ranges: 32,
            drop_syn_fin: false,
        }
    }
}

/// A cache prefetch hint supplied by the embedder: called with the address and length of
/// memory the endpoint is about to read (a flow-table cell, a connection's state), it asks
/// the CPU to start loading those cache lines and returns at once. tcp-core has no `unsafe` code and so
/// cannot issue the instruction itself; `psio::prefetch` is one such function.
///
/// The function receives a raw pointer it must not rely on: the address may be stale by the
/// time the hint takes effect. A safe `fn` cannot dereference it anyway; an implementation
/// must only hint (x86-64 `PREFETCHT0` never faults, whatever the address). With a hint, a
/// large endpoint overlaps the cache misses of a whole receive batch and of its transmit
/// queue; without one it falls back to plain loads ahead of use, which overlap less.
#[derive(Clone, Copy)]
pub struct Prefetch(pub fn(*const u8, usize));

impl core::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Prefetch(..)")
    }
}

impl PartialEq for Prefetch {
    /// Hints are equal when they are the same function (by address).
    fn eq(&self, other: &Prefetch) -> bool {
        self.0 as usize == other.0 as usize
    }
}

impl Eq for Prefetch {}

/// Everything an endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The interface.
    pub iface: InterfaceConfig,
    /// Defaults for connections.
    pub tcp: TcpConfig,
    /// Secret for ISNs (RFC 6528), ephemeral ports and SYN cookies. Use a random value per
    /// process in production; tests fix it so that runs replay.
    pub secret: [u8; 16],
    /// Connections (all states, listeners included) per endpoint. Default 65 536.
    pub max_connections: usize,
    /// Half-open connections per listener before SYN cookies are used. Default 1024.
    pub syn_queue: usize,
    /// Verify checksums of received frames (off only when the NIC did). Default on.
    pub verify_rx_checksums: bool,
    /// Compute checksums of sent frames (off only when the NIC will). Default on.
    pub compute_tx_checksums: bool,
    /// A faster checksum sum for long segments (see [`ChecksumAccel`]). Default none.
    pub checksum_accel: Option<ChecksumAccel>,
    /// Local ports for active opens. Default 49152..=65535 (RFC 6335).
    pub ephemeral_ports: RangeInclusive<u16>,
    /// A cache prefetch hint (see [`Prefetch`]). Default none. Only a hint: the endpoint
    /// behaves the same with or without it.
    pub prefetch: Option<Prefetch>,
    /// Keep connections in TIME-WAIT that the application has closed in compact form
    /// (about 130 bytes instead of a connection slot and its timers; see the `timewait`
    /// module), freeing their slot at once. Default on. Segments are answered the same
    /// either way (the tests check it); off keeps the full state until TIME-WAIT ends.
    pub compact_time_wait: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            iface: InterfaceConfig::default(),
            tcp: TcpConfig::default(),
            secret: [0x5a; 16],
            max_connections: 65_536,
            syn_queue: 1024,
            verify_rx_checksums: true,
            compute_tx_checksums: true,
            checksum_accel: None,
            ephemeral_ports: 49152..=65535,
            prefetch: None,
            compact_time_wait: true,
        }
    }
}

/// Problems found by [`EndpointConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault, as `tcp.mss`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

impl EndpointConfig {
    /// Checks ranges the endpoint relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason| Err(ConfigError { field, reason });
        if self.iface.prefix_len > 32 {
            return err("iface.prefix_len", "must be 0..=32");
        }
        if self.iface.routes.iter().any(|r| r.prefix_len > 32) {
            return err("iface.routes", "prefix_len must be 0..=32");
        }
        if !(88..=9000).contains(&self.tcp.mss) {
            return err("tcp.mss", "must be 88..=9000");
        }
        if self.tcp.send_buffer < usize::from(self.tcp.mss) || self.tcp.send_buffer > 1 << 30 {
            return err(
                "tcp.send_buffer",
                "must be at least one MSS and at most 1 GiB",
            );
        }
        if self.tcp.recv_buffer < usize::from(self.tcp.mss) || self.tcp.recv_buffer > 1 << 30 {
            return err(
                "tcp.recv_buffer",
                "must be at least one MSS and at most 1 GiB",
            );
        }
        if self
            .tcp
            .delayed_ack
            .is_some_and(|d| d > Duration::from_millis(500))
        {
            return err("tcp.delayed_ack", "RFC 1122 allows at most 500 ms");
        }
        if self.tcp.min_rto > self.tcp.max_rto || self.tcp.max_rto < Duration::from_secs(60) {
            return err("tcp.max_rto", "must be at least 60 s and at least min_rto");
        }
        if self.tcp.idle_timeout.is_some_and(|d| d.micros() == 0) {
            return err(
                "tcp.idle_timeout",
                "must be more than 0 (None turns it off)",
            );
        }
        if self.tcp.max_ooo_ranges == 0 {
            return err("tcp.max_ooo_ranges", "must be at least 1");
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize / 2 {
            return err("max_connections", "must be 1..=2^31");
        }
        if self.syn_queue == 0 {
            return err("syn_queue", "must be at least 1");
        }
        if self.ephemeral_ports.is_empty() || *self.ephemeral_ports.start() == 0 {
            return err(
                "ephemeral_ports",
                "must be a non-empty range of non-zero ports",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        assert_eq!(EndpointConfig::default().validate(), Ok(()));
        let mut c = EndpointConfig::default();
        c.tcp.mss = 20;
        assert_eq!(c.validate().unwrap_err().field, "tcp.mss");
        let mut c = EndpointConfig::default();
        c.tcp.delayed_ack = Some(Duration::from_secs(1));
        assert_eq!(c.validate().unwrap_err().field, "tcp.delayed_ack");
        let c = EndpointConfig {
            ephemeral_ports: 0..=10,
            ..EndpointConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "ephemeral_ports");
    }
}
