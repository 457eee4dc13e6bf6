//! Configuration: one TOML file (or a value built in code) replaces mTCP's `mtcp.conf`,
//! `arp.conf` and `route.conf`.
//!
//! Every field has a default, so an empty file is a valid configuration (one core on the
//! shared-memory port `shm:mtcp`). Unknown fields are errors, and every error names the field
//! and, when the field is in the file, its line:
//!
//! ```text
//! mtcp.toml line 14: tcp.send_buffer: invalid type: string "big", expected usize
//! ```
//!
//! The commented example `mtcp-api/mtcp.example.toml` lists every field with its default.
//!
//! ```
//! let config = mtcp_api::Config::from_toml_str(
//!     r#"
//!     cores = 2
//!     port = "shm:demo/q=2"
//!     [interface]
//!     address = "10.0.0.1/24"
//!     [tcp]
//!     max_concurrency = 10000
//!     "#,
//!     "example.toml",
//! )?;
//! assert_eq!(config.cores, 2);
//! assert_eq!(config.endpoint_config(1).max_connections, 10_000);
//! # Ok::<(), mtcp_api::ConfigError>(())
//! ```

use core::fmt;
use core::net::Ipv4Addr;
use core::ops::RangeInclusive;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::path::Path;
use tcp_core::config::{Keepalive, Route};
use tcp_core::{Duration, EndpointConfig, InterfaceConfig, TcpConfig};

/// The whole configuration of one process: its cores, its port, its interface and the TCP
/// settings every core's endpoint starts from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Per-core contexts (one stack thread each). Default 1.
    pub cores: usize,
    /// psio port name shared by the cores: core `i` uses queue `i` (see [`CoreConfig`] to
    /// give a core its own port or queue). Default `shm:mtcp`.
    pub port: String,
    /// Pin each core's stack thread to a CPU. Default on.
    pub pin_threads: bool,
    /// The CPU of each core's stack thread (by core index); missing entries default to the
    /// core index modulo the CPUs present. Default empty.
    pub cpus: Vec<usize>,
    /// Per-core overrides, by core index (at most `cores` entries).
    pub core: Vec<CoreConfig>,
    /// The interface: addresses of this host on the link.
    pub interface: InterfaceSection,
    /// Static ARP entries (mTCP's `arp.conf`).
    pub arp: Vec<ArpEntry>,
    /// Static routes (mTCP's `route.conf`); the most specific match wins.
    pub route: Vec<RouteEntry>,
    /// TCP settings of every core's endpoint.
    pub tcp: TcpSection,
    /// The stack thread's loop.
    #[serde(rename = "loop")]
    pub run_loop: LoopSection,
    /// Secret for initial sequence numbers, ephemeral ports and SYN cookies, as 32 hex digits.
    /// Default none: whoever starts the endpoints then draws one at random (set it here to
    /// replay a run).
    #[serde(deserialize_with = "de_secret")]
    pub secret: Option<[u8; 16]>,
    /// Print per-core statistics once a second (mTCP's `stat_print`). Default off.
    pub stat_print: bool,
}

/// Per-core overrides of the port, queue and CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// This core's port name, instead of [`Config::port`].
    pub port: Option<String>,
    /// This core's queue of its port, instead of its core index.
    pub queue: Option<usize>,
    /// This core's CPU, instead of [`Config::cpus`].
    pub cpu: Option<usize>,
}

/// `[interface]`: this host's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterfaceSection {
    /// MAC address, `02:00:00:00:00:01` style. Default `02:00:00:00:00:01`.
    #[serde(deserialize_with = "de_mac")]
    pub mac: [u8; 6],
    /// IPv4 address and prefix, `10.0.0.1/24` style. Default `10.0.0.1/24`.
    #[serde(deserialize_with = "de_cidr")]
    pub address: (Ipv4Addr, u8),
    /// Default gateway. Default none.
    #[serde(deserialize_with = "de_opt_ipv4")]
    pub gateway: Option<Ipv4Addr>,
}

/// One `[[arp]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArpEntry {
    /// The neighbour's IPv4 address.
    #[serde(deserialize_with = "de_ipv4")]
    pub ip: Ipv4Addr,
    /// Its MAC address.
    #[serde(deserialize_with = "de_mac")]
    pub mac: [u8; 6],
}

/// One `[[route]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// Destination network, `192.168.0.0/16` style.
    #[serde(deserialize_with = "de_cidr")]
    pub destination: (Ipv4Addr, u8),
    /// Next hop, on the interface's subnet.
    #[serde(deserialize_with = "de_ipv4")]
    pub gateway: Ipv4Addr,
}

/// `[tcp]`: the settings every connection starts with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    /// Connections per core (all states, listeners included). Default 65 536.
    pub max_concurrency: usize,
    /// Half-open connections per listener before SYN cookies. Default 1024.
    pub syn_backlog: usize,
    /// Send buffer per connection, bytes. Default 64 KiB.
    pub send_buffer: usize,
    /// Receive buffer per connection, bytes. Default 64 KiB.
    pub recv_buffer: usize,
    /// MSS announced and sent. Default 1460.
    pub mss: u16,
    /// TIME-WAIT (2·MSL), ms. Default 60 000, as Linux.
    pub time_wait_ms: u64,
    /// How long FIN-WAIT-2 waits for the peer's FIN, ms. Default 60 000.
    pub fin_wait2_timeout_ms: u64,
    /// Reset connections that received nothing for this long (mTCP's `tcp_timeout`), s;
    /// 0 never. Default 0.
    pub idle_timeout_s: u64,
    /// SYN (and SYN-ACK) retransmissions before a handshake gives up (`TimedOut`), as
    /// Linux's `tcp_syn_retries`. Default 6.
    pub syn_retries: u32,
    /// Retransmissions of one segment (or unanswered zero-window probes) before the
    /// connection gives up (`TimedOut`), as Linux's `tcp_retries2`. Default 15.
    pub data_retries: u32,
    /// Keepalive on new sockets. Default off.
    pub keepalive: bool,
    /// Keepalive idle time before the first probe, s. Default 7200.
    pub keepalive_idle_s: u64,
    /// Keepalive time between probes, s. Default 75.
    pub keepalive_interval_s: u64,
    /// Keepalive unanswered probes before the connection times out. Default 9.
    pub keepalive_count: u32,
    /// Delayed ACK timeout, ms; 0 acknowledges every segment at once. Default 40.
    pub delayed_ack_ms: u64,
    /// Disable Nagle's algorithm on new sockets. Default off.
    pub nodelay: bool,
    /// Initial congestion window in segments; 0 means RFC 6928's. Default 0.
    pub initial_window: u32,
    /// Offer window scaling. Default on.
    pub window_scaling: bool,
    /// Offer timestamps. Default on.
    pub timestamps: bool,
    /// Offer SACK. Default on.
    pub sack: bool,
    /// Local ports for active opens, `"first-last"`. Default `"49152-65535"`.
    #[serde(deserialize_with = "de_port_range")]
    pub ephemeral_ports: RangeInclusive<u16>,
    /// Verify checksums of received frames. Default on.
    pub verify_rx_checksums: bool,
    /// Compute checksums of sent frames. Default on.
    pub compute_tx_checksums: bool,
}

/// `[loop]`: the stack thread's pass (`select → RX → commands → timers → events → TX`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopSection {
    /// Polling time before the stack thread sleeps in `select`, µs. Default 0 (sleep at
    /// once when idle).
    pub busy_poll_us: u64,
    /// Most frames received per pass. Default 64.
    pub rx_batch: usize,
    /// Most application commands handled per pass. Default 256.
    pub command_batch: usize,
    /// Capacity of each application's command queue. Default 4096.
    pub command_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cores: 1,
            port: "shm:mtcp".into(),
            pin_threads: true,
            cpus: Vec::new(),
            core: Vec::new(),
            interface: InterfaceSection::default(),
            arp: Vec::new(),
            route: Vec::new(),
            tcp: TcpSection::default(),
            run_loop: LoopSection::default(),
            secret: None,
            stat_print: false,
        }
    }
}

impl Default for InterfaceSection {
    fn default() -> Self {
        let iface = InterfaceConfig::default();
        InterfaceSection {
            mac: iface.mac,
            address: (iface.addr, iface.prefix_len),
            gateway: iface.gateway,
        }
    }
}

impl Default for TcpSection {
    fn default() -> Self {
        let t = TcpConfig::default();
        let e = EndpointConfig::default();
        let k = Keepalive::default();
        TcpSection {
            max_concurrency: e.max_connections,
            syn_backlog: e.syn_queue,
            send_buffer: t.send_buffer,
            recv_buffer: t.recv_buffer,
            mss: t.mss,
            time_wait_ms: t.time_wait.millis(),
            fin_wait2_timeout_ms: t.fin_wait2_timeout.millis(),
            idle_timeout_s: 0,
            syn_retries: t.syn_retries,
            data_retries: t.data_retries,
            keepalive: t.keepalive.is_some(),
            keepalive_idle_s: k.idle.micros() / 1_000_000,
            keepalive_interval_s: k.interval.micros() / 1_000_000,
            keepalive_count: k.count,
            delayed_ack_ms: t.delayed_ack.map_or(0, Duration::millis),
            nodelay: t.nodelay,
            initial_window: t.initial_window_segments.unwrap_or(0),
            window_scaling: t.window_scaling,
            timestamps: t.timestamps,
            sack: t.sack,
            ephemeral_ports: e.ephemeral_ports,
            verify_rx_checksums: e.verify_rx_checksums,
            compute_tx_checksums: e.compute_tx_checksums,
        }
    }
}

impl Default for LoopSection {
    fn default() -> Self {
        LoopSection {
            busy_poll_us: 0,
            rx_batch: 64,
            command_batch: 256,
            command_queue: 4096,
        }
    }
}

/// A configuration that cannot be used: which field, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or the name given to [`Config::from_toml_str`]).
    pub source: String,
    /// 1-based line of the field in the file; `None` when the field is not in the file (its
    /// default, or a value set in code, is at fault) or the file could not be read.
    pub line: Option<usize>,
    /// The field, as `tcp.send_buffer` or `route[1].gateway`; empty when the error is not
    /// about one field (a file that cannot be read, TOML syntax).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// One host of a two-host shared-memory link `shm:{link}` (demos and tests): address
    /// `me`/24, MAC `02:00:00:00:00:XX` with XX the last octet of `me`, and a static ARP
    /// entry for `peer` (whose MAC follows the same rule). Everything else keeps its default;
    /// change fields before [`init`](crate::init) (a multi-queue link: `port` with `/q=N`
    /// and `cores`).
    pub fn shm_host(link: &str, me: Ipv4Addr, peer: Ipv4Addr) -> Config {
        let mac = |ip: Ipv4Addr| [0x02, 0, 0, 0, 0, ip.octets()[3]];
        Config {
            port: format!("shm:{link}"),
            interface: InterfaceSection {
                mac: mac(me),
                address: (me, 24),
                gateway: None,
            },
            arp: vec![ArpEntry {
                ip: peer,
                mac: mac(peer),
            }],
            ..Config::default()
        }
    }

    /// Reads and checks a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: name.clone(),
            line: None,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_toml_str(&text, &name)
    }

    /// Parses and checks TOML text; `source` names it in errors.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start));
            let field = e
                .span()
                .map(|s| field_at(text, s.start))
                .unwrap_or_default();
            ConfigError {
                source: source.into(),
                line,
                field,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate_in(Some(text), source)?;
        Ok(config)
    }

    /// Checks a configuration built in code (errors carry no line).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(None, "configuration")
    }

    fn validate_in(&self, text: Option<&str>, source: &str) -> Result<(), ConfigError> {
        let fail = |field: &str, message: String| ConfigError {
            source: source.into(),
            line: text.and_then(|t| line_of_field(t, field)),
            field: field.into(),
            message,
        };
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if self.cores == 0 || self.cores > MAX_CORES {
            return Err(fail("cores", format!("must be 1..={MAX_CORES}")));
        }
        if self.core.len() > self.cores {
            return Err(fail(
                "core",
                format!(
                    "{} [[core]] entries for {} cores",
                    self.core.len(),
                    self.cores
                ),
            ));
        }
        if self.port.is_empty() {
            return Err(fail("port", "must name a psio port, e.g. shm:mtcp".into()));
        }
        if self.cpus.len() > self.cores {
            return Err(fail(
                "cpus",
                format!("{} CPUs listed for {} cores", self.cpus.len(), self.cores),
            ));
        }
        if let Some(&cpu) = self.cpus.iter().find(|&&c| c >= cpus) {
            return Err(fail(
                "cpus",
                format!("CPU {cpu} does not exist (this machine has {cpus})"),
            ));
        }
        for (i, c) in self.core.iter().enumerate() {
            if c.cpu.is_some_and(|cpu| cpu >= cpus) {
                return Err(fail(
                    &format!("core[{i}].cpu"),
                    format!("CPU does not exist (this machine has {cpus})"),
                ));
            }
            if c.port.as_deref() == Some("") {
                return Err(fail(&format!("core[{i}].port"), "must not be empty".into()));
            }
        }
        let (addr, prefix) = self.interface.address;
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(fail(
                "interface.address",
                format!("{addr} is not a unicast address"),
            ));
        }
        if self.interface.mac[0] & 1 != 0 {
            return Err(fail(
                "interface.mac",
                "a multicast MAC cannot be an interface's".into(),
            ));
        }
        if let Some(gw) = self.interface.gateway {
            if !same_subnet(gw, addr, prefix) {
                return Err(fail(
                    "interface.gateway",
                    format!("{gw} is not on the interface's subnet {addr}/{prefix}"),
                ));
            }
        }
        for (i, r) in self.route.iter().enumerate() {
            if !same_subnet(r.gateway, addr, prefix) {
                return Err(fail(
                    &format!("route[{i}].gateway"),
                    format!(
                        "{} is not on the interface's subnet {addr}/{prefix}",
                        r.gateway
                    ),
                ));
            }
        }
        let t = &self.tcp;
        if t.keepalive && (t.keepalive_idle_s == 0 || t.keepalive_interval_s == 0) {
            return Err(fail(
                "tcp.keepalive_idle_s",
                "keepalive idle and interval must be at least 1 s".into(),
            ));
        }
        if t.keepalive && t.keepalive_count == 0 {
            return Err(fail("tcp.keepalive_count", "must be at least 1".into()));
        }
        if self.run_loop.rx_batch == 0 || self.run_loop.rx_batch > 4096 {
            return Err(fail("loop.rx_batch", "must be 1..=4096".into()));
        }
        if self.run_loop.command_batch == 0 {
            return Err(fail("loop.command_batch", "must be at least 1".into()));
        }
        if self.run_loop.command_queue == 0 {
            return Err(fail("loop.command_queue", "must be at least 1".into()));
        }
        // The endpoint's own checks, reported under this file's field names.
        if let Err(e) = self.endpoint_config(0).validate() {
            return Err(fail(endpoint_field(e.field), e.reason.into()));
        }
        Ok(())
    }

    /// The port name and queue of core `i`.
    pub fn port_of(&self, i: usize) -> (String, usize) {
        let c = self.core.get(i);
        let port = c
            .and_then(|c| c.port.clone())
            .unwrap_or_else(|| self.port.clone());
        let queue = c.and_then(|c| c.queue).unwrap_or(i);
        (port, queue)
    }

    /// The CPU that core `i`'s stack thread is pinned to, or `None` when threads are not
    /// pinned.
    pub fn cpu_of(&self, i: usize) -> Option<usize> {
        if !self.pin_threads {
            return None;
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        self.core
            .get(i)
            .and_then(|c| c.cpu)
            .or_else(|| self.cpus.get(i).copied())
            .or(Some(i % cpus))
    }

    /// The tcp-core endpoint configuration of core `i` (all cores share the interface and
    /// TCP settings; the secret, if unset here, is the caller's to fill).
    pub fn endpoint_config(&self, _core: usize) -> EndpointConfig {
        let t = &self.tcp;
        let (addr, prefix_len) = self.interface.address;
        let ms = |v: u64| Duration::from_millis(v);
        let s = |v: u64| Duration::from_secs(v);
        let mut e = EndpointConfig {
            iface: InterfaceConfig {
                mac: self.interface.mac,
                addr,
                prefix_len,
                gateway: self.interface.gateway,
                routes: self
                    .route
                    .iter()
                    .map(|r| Route {
                        dest: r.destination.0,
                        prefix_len: r.destination.1,
                        gateway: r.gateway,
                    })
                    .collect(),
                static_arp: self.arp.iter().map(|a| (a.ip, a.mac)).collect(),
            },
            tcp: TcpConfig {
                mss: t.mss,
                send_buffer: t.send_buffer,
                recv_buffer: t.recv_buffer,
                window_scaling: t.window_scaling,
                timestamps: t.timestamps,
                sack: t.sack,
                initial_window_segments: (t.initial_window > 0).then_some(t.initial_window),
                nodelay: t.nodelay,
                delayed_ack: (t.delayed_ack_ms > 0).then(|| ms(t.delayed_ack_ms)),
                time_wait: ms(t.time_wait_ms),
                fin_wait2_timeout: ms(t.fin_wait2_timeout_ms),
                idle_timeout: (t.idle_timeout_s > 0).then(|| s(t.idle_timeout_s)),
                syn_retries: t.syn_retries,
                data_retries: t.data_retries,
                keepalive: t.keepalive.then(|| Keepalive {
                    idle: s(t.keepalive_idle_s),
                    interval: s(t.keepalive_interval_s),
                    count: t.keepalive_count,
                }),
                ..TcpConfig::default()
            },
            max_connections: t.max_concurrency,
            syn_queue: t.syn_backlog,
            verify_rx_checksums: t.verify_rx_checksums,
            compute_tx_checksums: t.compute_tx_checksums,
            ephemeral_ports: t.ephemeral_ports.clone(),
            ..EndpointConfig::default()
        };
        if let Some(secret) = self.secret {
            e.secret = secret;
        }
        e
    }
}

/// The most cores a configuration may ask for.
pub const MAX_CORES: usize = 256;

/// This file's name for a field that tcp-core's check names.
fn endpoint_field(field: &str) -> &str {
    match field {
        "iface.prefix_len" => "interface.address",
        "iface.routes" => "route",
        "max_connections" => "tcp.max_concurrency",
        "syn_queue" => "tcp.syn_backlog",
        "ephemeral_ports" => "tcp.ephemeral_ports",
        "tcp.delayed_ack" => "tcp.delayed_ack_ms",
        other => other,
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// 1-based line of byte `offset` in `text`.
fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A line's key (`name = ...`), or its table header (`[name]`, `[[name]]`), if any.
fn line_key(line: &str) -> Option<(bool, &str)> {
    let l = line.trim_start();
    if let Some(rest) = l.strip_prefix('[') {
        let name = rest.trim_start_matches('[');
        let end = name.find(']')?;
        return Some((true, name[..end].trim()));
    }
    if l.starts_with('#') {
        return None;
    }
    let eq = l.find('=')?;
    Some((false, l[..eq].trim().trim_matches('"')))
}

/// The field whose key or value is at byte `offset`: the key on that line, qualified by the
/// table header above it, with the index of an array-of-tables entry (`route[1].gateway`).
fn field_at(text: &str, offset: usize) -> String {
    let line_no = line_of_offset(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let Some(line) = lines.get(line_no - 1) else {
        return String::new();
    };
    let key = match line_key(line) {
        Some((true, table)) => return table.to_string(),
        Some((false, key)) => key,
        None => return String::new(),
    };
    // The nearest header above, and for `[[name]]` which entry it is.
    for (i, l) in lines[..line_no - 1].iter().enumerate().rev() {
        if let Some((true, table)) = line_key(l) {
            if l.trim_start().starts_with("[[") {
                let index = lines[..i]
                    .iter()
                    .filter(|x| {
                        x.trim_start().starts_with("[[") && line_key(x) == Some((true, table))
                    })
                    .count();
                return format!("{table}[{index}].{key}");
            }
            return format!("{table}.{key}");
        }
    }
    key.to_string()
}

/// The 1-based line holding `field` (`tcp.send_buffer`, `cores`, `route[1].gateway`, or a
/// table such as `core`), if the file sets it.
fn line_of_field(text: &str, field: &str) -> Option<usize> {
    let mut offset = 0;
    for (i, line) in text.split('\n').enumerate() {
        if line_key(line).is_some() && field_at(text, offset) == field {
            return Some(i + 1);
        }
        offset += line.len() + 1;
    }
    None
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let prefix: u8 = p.parse().ok()?;
    (prefix <= 32).then_some((a.parse().ok()?, prefix))
}

fn de_mac<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
    let s = String::deserialize(d)?;
    parse_mac(&s).ok_or_else(|| {
        de::Error::custom(format!(
            "`{s}` is not a MAC address (six hex pairs: 02:00:00:00:00:01)"
        ))
    })
}

fn de_cidr<'de, D: Deserializer<'de>>(d: D) -> Result<(Ipv4Addr, u8), D::Error> {
    let s = String::deserialize(d)?;
    parse_cidr(&s).ok_or_else(|| {
        de::Error::custom(format!(
            "`{s}` is not an IPv4 address with a prefix length (10.0.0.1/24)"
        ))
    })
}

fn de_ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Addr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| de::Error::custom(format!("`{s}` is not an IPv4 address")))
}

fn de_opt_ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
    de_ipv4(d).map(Some)
}

fn de_port_range<'de, D: Deserializer<'de>>(d: D) -> Result<RangeInclusive<u16>, D::Error> {
    let s = String::deserialize(d)?;
    let parsed = s.split_once('-').and_then(|(a, b)| {
        let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (a >= 1 && a <= b).then_some(a..=b)
    });
    parsed.ok_or_else(|| {
        de::Error::custom(format!(
            "`{s}` is not a port range `first-last` with 1 <= first <= last <= 65535"
        ))
    })
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 16]>, D::Error> {
    let s = String::deserialize(d)?;
    let mut out = [0u8; 16];
    let ok = s.len() == 32
        && out.iter_mut().enumerate().all(|(i, b)| {
            s.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|v| *b = v)
                .is_some()
        });
    if ok {
        Ok(Some(out))
    } else {
        Err(de::Error::custom("the secret must be 32 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../mtcp.example.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "t.toml")
    }

    #[test]
    fn the_example_file_lists_the_defaults() {
        assert_eq!(parse(EXAMPLE), Ok(Config::default()));
        assert_eq!(parse(""), Ok(Config::default()));
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn the_example_file_names_every_field() {
        // Each field of every section appears in the example, set or commented out.
        for key in [
            "cores",
            "port",
            "pin_threads",
            "cpus",
            "stat_print",
            "secret",
            "[[core]]",
            "queue",
            "cpu",
            "[interface]",
            "mac",
            "address",
            "gateway",
            "[[arp]]",
            "ip",
            "[[route]]",
            "destination",
            "[tcp]",
            "max_concurrency",
            "syn_backlog",
            "send_buffer",
            "recv_buffer",
            "mss",
            "time_wait_ms",
            "fin_wait2_timeout_ms",
            "idle_timeout_s",
            "syn_retries",
            "data_retries",
            "keepalive",
            "keepalive_idle_s",
            "keepalive_interval_s",
            "keepalive_count",
            "delayed_ack_ms",
            "nodelay",
            "initial_window",
            "window_scaling",
            "timestamps",
            "sack",
            "ephemeral_ports",
            "verify_rx_checksums",
            "compute_tx_checksums",
            "[loop]",
            "busy_poll_us",
            "rx_batch",
            "command_batch",
            "command_queue",
        ] {
            assert!(EXAMPLE.contains(key), "{key} missing from the example");
        }
    }

    #[test]
    fn unknown_fields_are_errors_with_field_and_line() {
        let e = parse("cores = 1\ncolour = \"blue\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "colour"));
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse("[tcp]\nmss = 1400\nsend_bufer = 4096\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(3), "tcp.send_bufer"));
        let e = parse("[tcpp]\nmss = 1400\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(1), "tcpp"));
    }

    #[test]
    fn bad_values_name_field_and_line() {
        let e = parse("# c\n[tcp]\n\nsend_buffer = \"big\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(4), "tcp.send_buffer"));
        assert_eq!(
            e.to_string(),
            format!("t.toml line 4: tcp.send_buffer: {}", e.message)
        );
        let e = parse("[interface]\nmac = \"02:00:00:00:01\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "interface.mac"));
        assert!(e.message.contains("MAC"), "{e}");
        let e = parse("[interface]\naddress = \"10.0.0.1/33\"\n").unwrap_err();
        assert_eq!(e.field, "interface.address");
        let e = parse("[tcp]\nephemeral_ports = \"9-3\"\n").unwrap_err();
        assert_eq!(e.field, "tcp.ephemeral_ports");
        let e = parse("secret = \"abc\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(1), "secret"));
    }

    #[test]
    fn checks_after_parsing_name_field_and_line() {
        let e = parse("port = \"shm:x\"\ncores = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "cores"));
        let text = "[[route]]\ndestination = \"192.168.0.0/16\"\ngateway = \"10.0.0.9\"\n\
                    [[route]]\ndestination = \"172.16.0.0/12\"\ngateway = \"10.9.0.9\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(6), "route[1].gateway"));
        let e = parse("[interface]\ngateway = \"192.168.1.1\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "interface.gateway"));
        let e = parse("[tcp]\nmss = 20\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "tcp.mss"));
        let e = parse("[tcp]\nmax_concurrency = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "tcp.max_concurrency"));
        let e = parse("[tcp]\ndelayed_ack_ms = 900\n").unwrap_err();
        assert_eq!(e.field, "tcp.delayed_ack_ms");
        let e = parse("cpus = [100000]\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(1), "cpus"));
        let e = parse("cores = 1\n[[core]]\n[[core]]\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "core"));
        let e = parse("[loop]\nrx_batch = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "loop.rx_batch"));
    }

    #[test]
    fn a_default_at_fault_has_no_line() {
        // A gateway given in code, not in a file.
        let mut c = Config::default();
        c.interface.gateway = Some(Ipv4Addr::new(192, 168, 0, 1));
        let e = c.validate().unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (None, "interface.gateway"));
        assert!(e
            .to_string()
            .starts_with("configuration: interface.gateway: "));
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let e = Config::from_file("/nonexistent/mtcp.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (None, ""));
        assert!(e
            .to_string()
            .starts_with("/nonexistent/mtcp.toml: cannot read"));
    }

    #[test]
    fn settings_reach_the_endpoint_config() {
        let text = r#"
            cores = 2
            port = "shm:two/q=2"
            pin_threads = false
            secret = "000102030405060708090a0b0c0d0e0f"
            [[core]]
            [[core]]
            port = "shm:other"
            queue = 0
            [interface]
            mac = "02:aa:bb:cc:dd:ee"
            address = "198.18.0.1/15"
            gateway = "198.18.0.254"
            [[arp]]
            ip = "198.18.0.2"
            mac = "02:00:00:00:00:02"
            [[route]]
            destination = "10.1.0.0/16"
            gateway = "198.18.0.253"
            [tcp]
            max_concurrency = 10000
            syn_backlog = 64
            send_buffer = 8192
            recv_buffer = 16384
            mss = 1400
            time_wait_ms = 1000
            idle_timeout_s = 30
            syn_retries = 2
            data_retries = 4
            keepalive = true
            keepalive_idle_s = 10
            keepalive_interval_s = 2
            keepalive_count = 3
            delayed_ack_ms = 0
            nodelay = true
            initial_window = 4
            sack = false
            ephemeral_ports = "10000-20000"
        "#;
        let c = parse(text).unwrap();
        assert_eq!(c.port_of(0), ("shm:two/q=2".to_string(), 0));
        assert_eq!(c.port_of(1), ("shm:other".to_string(), 0));
        assert_eq!(c.cpu_of(1), None);
        let e = c.endpoint_config(1);
        assert_eq!(e.validate(), Ok(()));
        assert_eq!(e.iface.mac, [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        assert_eq!(
            (e.iface.addr, e.iface.prefix_len),
            (Ipv4Addr::new(198, 18, 0, 1), 15)
        );
        assert_eq!(e.iface.gateway, Some(Ipv4Addr::new(198, 18, 0, 254)));
        assert_eq!(
            e.iface.static_arp,
            vec![(Ipv4Addr::new(198, 18, 0, 2), [2, 0, 0, 0, 0, 2])]
        );
        assert_eq!(e.iface.routes.len(), 1);
        assert_eq!(e.iface.routes[0].prefix_len, 16);
        assert_eq!((e.max_connections, e.syn_queue), (10_000, 64));
        assert_eq!(
            (e.tcp.send_buffer, e.tcp.recv_buffer, e.tcp.mss),
            (8192, 16384, 1400)
        );
        assert_eq!(e.tcp.time_wait, Duration::from_millis(1000));
        assert_eq!(e.tcp.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!((e.tcp.syn_retries, e.tcp.data_retries), (2, 4));
        let k = e.tcp.keepalive.unwrap();
        assert_eq!(
            (k.idle, k.interval, k.count),
            (Duration::from_secs(10), Duration::from_secs(2), 3)
        );
        assert_eq!(e.tcp.delayed_ack, None);
        assert!(e.tcp.nodelay && !e.tcp.sack && e.tcp.timestamps);
        assert_eq!(e.tcp.initial_window_segments, Some(4));
        assert_eq!(e.ephemeral_ports, 10000..=20000);
        assert_eq!(e.secret[15], 0x0f);
    }

    #[test]
    fn shm_hosts_find_each_other() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let c = Config::shm_host("x", a, b);
        assert_eq!(c.validate(), Ok(()));
        let e = c.endpoint_config(0);
        assert_eq!(e.iface.mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(e.iface.static_arp, vec![(b, [2, 0, 0, 0, 0, 2])]);
        assert_eq!(c.port_of(0), ("shm:x".to_string(), 0));
    }

    #[test]
    fn cpus_default_to_the_core_index() {
        let c = parse("cores = 2\ncpus = [0]\n[[core]]\n[[core]]\ncpu = 0\n").unwrap();
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(c.cpu_of(0), Some(0));
        assert_eq!(c.cpu_of(1), Some(0));
        let c = parse("cores = 2\n").unwrap();
        assert_eq!(c.cpu_of(1), Some(1 % n));
    }
}
