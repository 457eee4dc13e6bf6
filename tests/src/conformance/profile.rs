//! Profiles: how scripts written for another stack's defaults are read for ours.
//!
//! # The `freebsd` profile
//!
//! The corpus was written for FreeBSD. The profile configures tcp-core as close to FreeBSD's
//! defaults as [`EndpointConfig`] allows, and translates only what issue 7 allows it to.
//!
//! Configuration (not a translation: tcp-core runs with these values):
//! - MSS 1460 (`--mtu=N` gives MSS N − 40 when tcp-core accepts it, else the script is not
//!   applicable); initial window RFC 6928 (10 segments, FreeBSD's `initcwnd_segments`);
//!   delayed ACK 40 ms (`net.inet.tcp.delacktime`), every second segment at once;
//!   Nagle on; initial RTO 1 s (`rexmit_initial`); SACK, timestamps and window scaling on
//!   unless `sack.enable=0` / `rfc1323=0`; `drop_synfin=1` sets tcp-core's `drop_syn_fin`.
//! - `keepinit`, `keepidle`, `keepintvl`, `keepcnt` at FreeBSD's defaults are accepted (no
//!   effect); other values make the script not applicable. Sysctls after the script's first
//!   `socket` call (the cleanup at its end) are checked but do not configure the endpoint.
//! - Receive buffer: `net.inet.tcp.recvspace` (65 536) rounded up to a multiple of the MSS,
//!   as FreeBSD does once a connection is set up (65 700); send buffer `sendspace`.
//!   `SO_RCVBUF` reports the requested size (`recvspace`, or what `setsockopt` set) while
//!   the socket has no connection, and tcp-core's buffer capacity afterwards.
//! - `#ifdef STANDARD` sections are taken, `#ifdef FreeBSD` sections skipped: the suite
//!   marks its FreeBSD-only expectations so.
//!
//! Translations (every other field is compared exactly):
//! 1. **Option order and padding.** Outbound options are compared without their `nop` and
//!    `eol` bytes and in a canonical order (MSS, window scale, SACK-permitted, timestamps,
//!    SACK blocks): FreeBSD sends `mss,nop,wscale,sackOK,TS` and pads with `eol`, tcp-core
//!    sends `mss,sackOK,TS,nop,wscale` and pads with `nop`. The TCP data offset follows.
//! 2. **Window-scale value.** FreeBSD derives its shift from `kern.ipc.maxsockbuf` (2 MiB
//!    gives `wscale 6`); tcp-core derives it from the receive buffer. An expected `wscale 6`
//!    matches tcp-core's shift for the configured receive buffer (exactly that value);
//!    scripts that set another `maxsockbuf` are not applicable.
//! 3. **Advertised window under scaling.** When both SYNs carried a window scale, an
//!    outbound `win W` is compared in bytes: `W << 6` against the stack's `W' << s`; they
//!    match when they differ by less than one unit of the coarser scale. Without scaling
//!    (most scripts) the window is compared exactly.
//! 4. **Receiver silly-window avoidance.** FreeBSD puts all free buffer space (up to the
//!    largest window) in every segment; tcp-core keeps the right edge of its window where it
//!    was until it can move by at least min(buffer/2, MSS) (RFC 9293 §3.8.6.2.2, the
//!    receiver's SWS avoidance), so after data or a FIN arrives its window can be up to one
//!    MSS smaller than FreeBSD's (65 534 after a FIN instead of 65 535). A window below the
//!    expected one by less than one MSS matches, a zero window only matches zero.
//! 5. **MSS default.** An expected `mss 1460` is FreeBSD's default for a 1500-byte MTU;
//!    with `--mtu=N` both sides use N − 40, so MSS values are compared exactly.
//!
//! What packetdrill itself does not compare is not compared either: the TS value of an
//! outbound segment (packetdrill checks it only with `--tcp_ts_tick_usecs`) and its TS echo
//! reply; an inbound TS echo reply is mapped to the stack's clock as packetdrill does.

use tcp_core::{Duration, EndpointConfig};

use super::parse::TcpOpt;

/// FreeBSD's window-scale shift with `kern.ipc.maxsockbuf` = 2 MiB.
pub const FREEBSD_WSCALE: u8 = 6;

/// Settings a script chooses through `sysctl` lines and `--` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// `net.inet.tcp.recvspace`.
    pub recvspace: usize,
    /// `net.inet.tcp.sendspace`.
    pub sendspace: usize,
    /// `net.inet.tcp.sack.enable`.
    pub sack: bool,
    /// `net.inet.tcp.rfc1323` (timestamps and window scaling).
    pub rfc1323: bool,
    /// `net.inet.tcp.delacktime`, ms.
    pub delack_ms: u64,
    /// MSS from `--mtu`.
    pub mss: u16,
    /// `net.inet.tcp.drop_synfin` (tcp-core's `drop_syn_fin`).
    pub drop_synfin: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            recvspace: 65_536,
            sendspace: 32_768,
            sack: true,
            rfc1323: true,
            delack_ms: 40,
            mss: 1460,
            drop_synfin: false,
        }
    }
}

/// A profile.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Its name (`freebsd`).
    pub name: &'static str,
    /// Names `#ifdef` sees defined.
    pub defines: &'static [&'static str],
}

/// The FreeBSD profile (see the module documentation).
pub const FREEBSD: Profile = Profile {
    name: "freebsd",
    defines: &["STANDARD"],
};

impl Profile {
    /// The profile named `name`.
    pub fn by_name(name: &str) -> Option<Profile> {
        (name == FREEBSD.name).then_some(FREEBSD)
    }

    /// Applies `sysctl -w name=value`; `Err` says why the script is not applicable.
    pub fn sysctl(&self, setup: &mut Setup, name: &str, value: &str) -> Result<(), String> {
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("sysctl {name}={value}: not a number"))
        };
        let na = |why: &str| Err(format!("sysctl {name}={value}: {why}"));
        match name {
            "net.inet.tcp.recvspace" => setup.recvspace = num()? as usize,
            "net.inet.tcp.sendspace" => setup.sendspace = num()? as usize,
            "net.inet.tcp.sack.enable" => setup.sack = num()? != 0,
            "net.inet.tcp.rfc1323" => setup.rfc1323 = num()? != 0,
            "net.inet.tcp.delacktime" => {
                let ms = num()?;
                if ms == 0 || ms > 500 {
                    return na("delayed ACK outside tcp-core's 1..=500 ms");
                }
                setup.delack_ms = ms;
            }
            "kern.ipc.maxsockbuf" => {
                if num()? != 2_097_152 {
                    return na("FreeBSD derives its window scale from it; tcp-core does not");
                }
            }
            "net.inet.tcp.ecn.enable" => {
                // 2: answer ECN only when asked (scripts asking are not applicable anyway);
                // 0: never.
                if num()? == 1 {
                    return na("ECN (RFC 3168) is not implemented");
                }
            }
            "net.inet.tcp.rexmit_initial" => {
                if num()? != 1000 {
                    return na("initial RTO other than 1 s");
                }
            }
            // Set to FreeBSD's default (what the scripts do to be sure of it), they change
            // nothing: the script runs, and its timing is compared with tcp-core's.
            "net.inet.tcp.keepinit" | "net.inet.tcp.keepintvl" if num()? == 75_000 => {}
            "net.inet.tcp.keepidle" if num()? == 7_200_000 => {}
            "net.inet.tcp.keepcnt" if num()? == 8 => {}
            "net.inet.tcp.keepinit"
            | "net.inet.tcp.keepidle"
            | "net.inet.tcp.keepintvl"
            | "net.inet.tcp.keepcnt" => {
                return na(
                    "keepalive and connection-establishment timers are not configurable per sysctl",
                );
            }
            "net.inet.tcp.udp_tunneling_port" | "net.inet.tcp.udp_tunneling_overhead" => {
                return na("TCP over UDP is not implemented");
            }
            "net.inet.tcp.syncookies" | "net.inet.tcp.syncookies_only" => {
                return na("SYN cookies only beyond the SYN backlog, not switchable");
            }
            "net.inet.tcp.ecn.maxretries" | "net.inet.tcp.rexmit_drop_options" => {
                if num()? != 0 {
                    return na("not modelled");
                }
            }
            // No effect on what the scripts observe here, or a FreeBSD policy switch whose
            // effect the script's expectations show (RFC 5961 `insecure_*`,
            // `icmp_may_rst`, `tolerate_missing_ts`): tcp-core has one behaviour, and a
            // script expecting the other fails (and is listed under `differs` with the RFC).
            "net.inet.tcp.drop_synfin" => setup.drop_synfin = num()? != 0,
            "net.inet.tcp.blackhole"
            | "net.inet.tcp.hostcache.purgenow"
            | "net.inet.tcp.rexmit_slop"
            | "net.inet.tcp.insecure_rst"
            | "net.inet.tcp.insecure_syn"
            | "net.inet.tcp.icmp_may_rst"
            | "net.inet.tcp.tolerate_missing_ts" => {
                num()?;
            }
            _ => return na("not modelled"),
        }
        Ok(())
    }

    /// The endpoint configuration for a script's setup (addresses are the runner's).
    pub fn config(&self, setup: &Setup) -> EndpointConfig {
        let mut c = EndpointConfig::default();
        let mss = usize::from(setup.mss.max(1));
        c.tcp.mss = setup.mss;
        c.tcp.recv_buffer = setup.recvspace.div_ceil(mss).saturating_mul(mss);
        c.tcp.send_buffer = setup.sendspace.max(mss);
        c.tcp.sack = setup.sack;
        c.tcp.timestamps = setup.rfc1323;
        c.tcp.window_scaling = setup.rfc1323;
        c.tcp.initial_window_segments = None;
        c.tcp.delayed_ack = Some(Duration::from_millis(setup.delack_ms));
        c.tcp.initial_rto = Duration::from_secs(1);
        c.tcp.nodelay = false;
        c.tcp.drop_syn_fin = setup.drop_synfin;
        c
    }

    /// The shift tcp-core announces for `recv_buffer` (RFC 7323 §2.3: the smallest that
    /// covers the buffer).
    pub fn our_wscale(recv_buffer: usize) -> u8 {
        let mut s = 0u8;
        while (recv_buffer >> s) > usize::from(u16::MAX) && s < 14 {
            s += 1;
        }
        s
    }

    /// Whether an outbound window matches. `scaling`: both SYNs carried window scale, and
    /// `ours` is our shift.
    /// `mss` is the stack's MSS (the SWS-avoidance threshold of translation 5).
    pub fn window_matches(
        &self,
        expected: u32,
        actual: u16,
        scaling: Option<u8>,
        mss: u16,
    ) -> bool {
        let (e, a, unit) = match scaling {
            None => (u64::from(expected), u64::from(actual), 1),
            Some(ours) => (
                u64::from(expected) << FREEBSD_WSCALE,
                u64::from(actual) << ours,
                1u64 << FREEBSD_WSCALE.max(ours),
            ),
        };
        if e.abs_diff(a) < unit {
            return true;
        }
        // Translation 5: the right edge may lag FreeBSD's by less than one MSS, never to zero.
        a > 0 && a < e && e - a < u64::from(mss) + unit
    }

    /// Whether an expected window-scale option value matches ours.
    pub fn wscale_matches(&self, expected: u8, actual: u8, our_shift: u8) -> bool {
        if expected == FREEBSD_WSCALE {
            actual == our_shift
        } else {
            expected == actual
        }
    }
}

/// Sort key of an option in the canonical order of translation 1 (`None` for nop/eol).
pub fn canonical_rank(o: &TcpOpt) -> Option<u8> {
    match o {
        TcpOpt::Eol | TcpOpt::Nop => None,
        TcpOpt::Mss(_) => Some(0),
        TcpOpt::Wscale(_) => Some(1),
        TcpOpt::SackOk => Some(2),
        TcpOpt::Ts { .. } => Some(3),
        TcpOpt::Sack(_) => Some(4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freebsd_buffers_round_up_to_the_mss() {
        let c = FREEBSD.config(&Setup::default());
        assert_eq!(c.tcp.recv_buffer, 65_700);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(Profile::our_wscale(65_700), 1);
        assert!(FREEBSD.window_matches(1026, 32_850, Some(1), 1460));
        assert!(!FREEBSD.window_matches(1026, 30_000, Some(1), 1460));
        assert!(FREEBSD.window_matches(65_535, 65_535, None, 1460));
        assert!(FREEBSD.window_matches(65_535, 65_534, None, 1460));
        assert!(!FREEBSD.window_matches(65_535, 64_000, None, 1460));
        assert!(!FREEBSD.window_matches(1000, 0, None, 1460));
        assert!(!FREEBSD.window_matches(65_534, 65_535, None, 1460));
        let mut s = Setup::default();
        assert!(FREEBSD
            .sysctl(&mut s, "kern.ipc.maxsockbuf", "73728")
            .is_err());
        assert!(FREEBSD
            .sysctl(&mut s, "net.inet.tcp.sack.enable", "0")
            .is_ok());
        assert!(!s.sack);
        assert!(FREEBSD
            .sysctl(&mut s, "net.inet.tcp.sack.enable", "x")
            .is_err());
    }
}
