//! What `epserver` and `epwget` share besides HTTP: flag parsing helpers, the `-N cores`
//! override of a configuration, signal-driven shutdown, and latency percentiles.

use mtcp_api::Config;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Applies `-N cores` to `config`: sets `cores` and, on a `shm:` or `afpacket:` port whose
/// name does not give a queue count, asks for one queue per core (`q=N`), so that core `i`
/// uses queue `i`. On `afpacket:` with several queues it also picks the steering that keeps
/// a flow on the core owning it, unless the name gives one: by the remote port for a server
/// (`steer=remote`), by the local port for a client (`steer=local`, mtcp-api's clients pick
/// local ports by core). Both ends of a shm link must agree on the count: the first process
/// to open a link sets its shape.
pub fn set_cores(config: &mut Config, cores: usize, client: bool) {
    config.cores = cores;
    let port = &mut config.port;
    let afpacket = port.starts_with("afpacket:");
    if !(port.starts_with("shm:") || afpacket) {
        return;
    }
    let has = |port: &str, key: &str| {
        port.split_once('/')
            .is_some_and(|(_, opts)| opts.split(',').any(|o| o.starts_with(key)))
    };
    let add = |port: &mut String, opt: String| {
        port.push(if port.contains('/') { ',' } else { '/' });
        port.push_str(&opt);
    };
    if !has(port, "q=") {
        add(port, format!("q={cores}"));
    }
    if afpacket && cores > 1 && !has(port, "steer=") {
        let steer = if client { "local" } else { "remote" };
        add(port, format!("steer={steer}"));
    }
}

/// Blocks `SIGINT` and `SIGTERM` in the calling thread (call it before spawning any thread,
/// so that every thread inherits the mask) and starts a thread that waits for either and
/// then sets the returned flag. Application threads poll the flag and wind down.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if set.wait().is_ok() {
                flag.store(true, Ordering::Release);
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    Ok(stop)
}

/// The value of flag `flag` parsed as a `T`, with an error naming the flag.
pub fn number<T: std::str::FromStr>(flag: &str, text: Option<&String>) -> Result<T, String> {
    let text = text.ok_or_else(|| format!("{flag} needs a value"))?;
    text.parse()
        .map_err(|_| format!("{flag} needs a number, not {text:?}"))
}

/// Percentiles of a set of latencies in µs (sorts `v`): `(p50, p90, p99, max)`, `None` when
/// empty. Nearest-rank.
pub fn percentiles(v: &mut [u32]) -> Option<(u32, u32, u32, u32)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(0.50), at(0.90), at(0.99), v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_set_queues() {
        let mut c = Config {
            port: "shm:www".into(),
            ..Config::default()
        };
        set_cores(&mut c, 2, false);
        assert_eq!((c.cores, c.port.as_str()), (2, "shm:www/q=2"));
        c.port = "shm:www/slots=512".into();
        set_cores(&mut c, 3, true);
        assert_eq!(c.port, "shm:www/slots=512,q=3");
        set_cores(&mut c, 4, true);
        assert_eq!(c.port, "shm:www/slots=512,q=3");
        c.port = "afpacket:veth0".into();
        set_cores(&mut c, 2, true);
        assert_eq!(c.port, "afpacket:veth0/q=2,steer=local");
        c.port = "afpacket:veth0".into();
        set_cores(&mut c, 2, false);
        assert_eq!(c.port, "afpacket:veth0/q=2,steer=remote");
        c.port = "afpacket:veth0/steer=local".into();
        set_cores(&mut c, 1, false);
        assert_eq!(c.port, "afpacket:veth0/steer=local,q=1");
    }

    #[test]
    fn percentile_ranks() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut v), Some((50, 90, 99, 100)));
        assert_eq!(percentiles(&mut [7]), Some((7, 7, 7, 7)));
        assert_eq!(percentiles(&mut []), None);
    }
}
