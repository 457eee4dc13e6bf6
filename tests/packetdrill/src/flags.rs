//! The `--so_flags` string: `key=value` items separated by commas or spaces.
//!
//! | key | value | default |
//! | --- | --- | --- |
//! | `local_ip` | the stack's IPv4 address | the first of: a `bind()` address, the destination of the first injected packet, 192.168.0.1 |
//! | `remote_ip` | the script's IPv4 address (a `/len` suffix is ignored) | 192.0.2.1 |
//! | `mss` | MSS announced and used, 88..=9000 | 1460 |
//! | `rcvbuf`, `sndbuf` | buffer sizes per connection, bytes | 65536 |
//! | `delayed_ack_ms` | delayed-ACK timeout; 0 acknowledges every segment | 40 |
//! | `min_rto_ms` | lower bound of the RTO | 200 |
//! | `wscale`, `sack`, `timestamps` | offer the option: 0 or 1 | 1 |
//! | `seed` | a number the ISNs, ports and SYN cookies derive from | fixed |
//!
//! Unknown keys and bad values are reported on stderr and ignored: packetdrill's init
//! function cannot fail.

use std::net::Ipv4Addr;

use tcp_core::{Duration, EndpointConfig};

/// What the flags set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The stack's address, if the flags fix it.
    pub local_ip: Option<Ipv4Addr>,
    /// The script's address (the static neighbour and gateway).
    pub remote_ip: Ipv4Addr,
    /// The endpoint configuration, addresses aside.
    pub config: EndpointConfig,
}

/// packetdrill's default remote address (`config.c`: `192.0.2.1/24`).
pub const DEFAULT_REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The local address used when neither the flags, `bind()` nor a packet named one. Older
/// packetdrill releases always used it; newer ones pick a random address in 192.168.0.0/16
/// unless `--local_ip` is given.
pub const DEFAULT_LOCAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);

impl Default for Settings {
    fn default() -> Self {
        let mut config = EndpointConfig {
            // One script opens a handful of connections; keep allocations small.
            max_connections: 1024,
            ..EndpointConfig::default()
        };
        config.tcp.time_wait = Duration::from_secs(60);
        Settings {
            local_ip: None,
            remote_ip: DEFAULT_REMOTE_IP,
            config,
        }
    }
}

/// Parses `flags`; returns the settings and one message per ignored item.
pub fn parse(flags: &str) -> (Settings, Vec<String>) {
    let mut s = Settings::default();
    let mut warnings = Vec::new();
    for item in flags
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
    {
        if let Err(why) = apply(&mut s, item) {
            warnings.push(format!("so_flags item `{item}` ignored: {why}"));
        }
    }
    if let Err(e) = s.config.validate() {
        warnings.push(format!(
            "so_flags give an invalid configuration ({e}); using defaults"
        ));
        let keep = (s.local_ip, s.remote_ip);
        s = Settings::default();
        (s.local_ip, s.remote_ip) = keep;
    }
    (s, warnings)
}

fn apply(s: &mut Settings, item: &str) -> Result<(), String> {
    let (key, value) = item
        .split_once('=')
        .ok_or_else(|| "expected key=value".to_string())?;
    let num = || value.parse::<u64>().map_err(|e| format!("{value}: {e}"));
    let flag = || match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("{value}: expected 0 or 1")),
    };
    let addr = || {
        let a = value.split('/').next().unwrap_or(value);
        a.parse::<Ipv4Addr>().map_err(|e| format!("{value}: {e}"))
    };
    let tcp = &mut s.config.tcp;
    match key {
        "local_ip" => s.local_ip = Some(addr()?),
        "remote_ip" => s.remote_ip = addr()?,
        "mss" => tcp.mss = u16::try_from(num()?).map_err(|e| e.to_string())?,
        "rcvbuf" => tcp.recv_buffer = usize::try_from(num()?).map_err(|e| e.to_string())?,
        "sndbuf" => tcp.send_buffer = usize::try_from(num()?).map_err(|e| e.to_string())?,
        "delayed_ack_ms" => {
            tcp.delayed_ack = match num()? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            }
        }
        "min_rto_ms" => tcp.min_rto = Duration::from_millis(num()?),
        "wscale" => tcp.window_scaling = flag()?,
        "sack" => tcp.sack = flag()?,
        "timestamps" => tcp.timestamps = flag()?,
        "seed" => {
            let n = num()?.to_le_bytes();
            s.config.secret[..8].copy_from_slice(&n);
            s.config.secret[8..].copy_from_slice(&n);
        }
        _ => return Err("unknown key".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_split_on_commas_and_spaces() {
        let (s, w) = parse("local_ip=10.0.0.2, remote_ip=10.0.0.9/24 mss=1000,sack=0");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.local_ip, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(s.remote_ip, Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(s.config.tcp.mss, 1000);
        assert!(!s.config.tcp.sack);
    }

    #[test]
    fn bad_items_are_reported_and_ignored() {
        let (s, w) = parse("mss=20 bogus=1 wscale=2 nokey");
        assert_eq!(w.len(), 4, "{w:?}"); // three items and the invalid MSS
        assert_eq!(s.config.tcp.mss, 1460);
        assert!(s.config.tcp.window_scaling);
        let (s, w) = parse("");
        assert!(w.is_empty());
        assert_eq!(s, Settings::default());
    }
}
