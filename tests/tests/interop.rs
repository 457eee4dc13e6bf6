//! Interoperability with the Linux kernel (issue 6, scenarios 1 to 8), root only: our stack
//! on AF_PACKET in one namespace, the kernel's TCP in another, a seeded impairing relay in
//! the middle (`bench_tools::interop`, `bench_tools::relay`).
//!
//! Each test prints its figure (goodput and retransmissions of both stacks, probes, …) and
//! the relay's counters, and fails with them when a check fails. Without root they print
//! `skipped: needs root` and pass. The tests of this file take turns (one lock): they share
//! the machine's two cores with the relay and both stacks, and their figures would mean
//! nothing side by side.
//!
//! Sizes (CI): scenario 1 moves 64 MiB each way per connection on the clean link and 16 MiB
//! on the impaired ones (two connections each: we connect, the kernel connects); scenario 2
//! 4 MiB each way per exchange on the clean link and 1 MiB on the lossy one (16 exchanges
//! per link); scenario 3 2 MiB into a reader that
//! stops twice for 1.5 s, and a 640 KiB file through `curl --limit-rate 100k`.
//! Scenario 4 opens 10 000 connections at once each way (wrk for 10 s, epwget 20 requests
//! per connection); scenario 5 kills a peer process twice, cuts the link once during a
//! transfer and once during a connect, and makes 3 × 300 connections over 4 ports;
//! scenario 6 floods epserver (`mtcp-interop-epserver`, a child process) with spoofed SYNs
//! during 40 curl requests; scenario 7 sends 27 kinds of crafted frames, then 1 MiB each
//! way on three connections; scenario 8 soaks for 60 s (`MTCP_INTEROP_SOAK_SECS`).
//! `MTCP_INTEROP_LONG=1` runs the sizes instead (1 GiB each way; minutes).
//! `MTCP_INTEROP_PCAP=DIR` keeps the relay's captures of scenario 1 in DIR.

use bench_tools::interop::{self, LinkKind, Record, Sizes, SEED};
use bench_tools::netns;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static TURN: Mutex<()> = Mutex::new(());

fn sizes() -> Sizes {
    if std::env::var_os("MTCP_INTEROP_LONG").is_some_and(|v| v == "1") {
        Sizes::LONG
    } else {
        Sizes::CI
    }
}

fn pcap_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("MTCP_INTEROP_PCAP").map(Into::into)
}

/// Runs `f` on its turn when root; prints the record and its run time; fails when it failed.
fn scenario(what: &str, f: impl FnOnce() -> Record) {
    if netns::skip_unless_root(what) {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let start = Instant::now();
    let r = f();
    println!(
        "{r}\n  ({:.1} s)\n{}",
        start.elapsed().as_secs_f64(),
        r.detail
    );
    assert!(r.passed, "{}: {}\n{}", r.scenario, r.figure, r.detail);
}

#[test]
fn bulk_integrity_on_a_clean_link() {
    scenario("interop bulk, clean link", || {
        interop::bulk(
            LinkKind::Clean,
            sizes().bulk_clean,
            SEED,
            pcap_dir().as_deref(),
        )
    });
}

#[test]
fn bulk_integrity_on_a_lossy_link() {
    scenario("interop bulk, lossy link", || {
        interop::bulk(
            LinkKind::Lossy,
            sizes().bulk_impaired,
            SEED,
            pcap_dir().as_deref(),
        )
    });
}

#[test]
fn bulk_integrity_with_burst_loss() {
    scenario("interop bulk, burst loss", || {
        interop::bulk(
            LinkKind::Burst,
            sizes().bulk_impaired,
            SEED,
            pcap_dir().as_deref(),
        )
    });
}

#[test]
fn every_kernel_option_combination_on_a_clean_link() {
    scenario("interop option fallbacks, clean link", || {
        interop::option_fallbacks(LinkKind::Clean, sizes().options, SEED)
    });
}

#[test]
fn every_kernel_option_combination_on_a_lossy_link() {
    scenario("interop option fallbacks, lossy link", || {
        interop::option_fallbacks(LinkKind::Lossy, sizes().options_impaired, SEED)
    });
}

#[test]
fn zero_window_persist_probes() {
    scenario("interop zero window", || {
        interop::zero_window(sizes().zero_window, Duration::from_millis(1500), SEED)
    });
}

#[test]
fn curl_limit_rate_against_epserver() {
    scenario("interop curl --limit-rate", || {
        interop::curl_limit_rate(sizes().curl, "100k", SEED)
    });
}

/// Scenario 4's load: `MTCP_INTEROP_LONG=1` runs longer.
fn load() -> interop::many::Load {
    if std::env::var_os("MTCP_INTEROP_LONG").is_some_and(|v| v == "1") {
        interop::many::Load::LONG
    } else {
        interop::many::Load::CI
    }
}

#[test]
fn many_connections_from_wrk_against_epserver() {
    scenario("interop many connections, wrk against epserver", || {
        let l = load();
        interop::many::many_wrk(l.connections, l.wrk_duration, SEED)
    });
}

#[test]
fn many_connections_from_epwget_against_nginx() {
    scenario("interop many connections, epwget against nginx", || {
        let l = load();
        interop::many::many_epwget(l.connections, l.requests_per_connection, SEED)
    });
}

#[test]
fn abrupt_end_peer_process_killed() {
    scenario("interop abrupt end, peer process killed", || {
        interop::abrupt::kill(SEED)
    });
}

#[test]
fn abrupt_end_link_cut() {
    scenario("interop abrupt end, link cut", || {
        interop::abrupt::link_cut(SEED)
    });
}

#[test]
fn abrupt_end_time_wait_reuse_under_a_narrow_port_range() {
    scenario("interop abrupt end, TIME-WAIT reuse", || {
        interop::abrupt::tw_reuse(interop::abrupt::TW_CONNECTIONS, SEED)
    });
}

#[test]
fn hostile_segments_are_answered_or_dropped_and_counted() {
    scenario("interop hostile segments", || {
        interop::hostile::hostile(sizes().hostile, SEED)
    });
}

#[test]
fn syn_flood_against_epserver() {
    scenario("interop SYN flood", || {
        interop::flood::syn_flood(
            &[env!("CARGO_BIN_EXE_mtcp-interop-epserver").into()],
            sizes().flood_requests,
            SEED,
        )
    });
}

/// Scenario 8: `MTCP_INTEROP_SOAK_SECS` seconds of mixed traffic (the ten minutes:
/// `MTCP_INTEROP_SOAK_SECS=600`, or `MTCP_INTEROP_LONG=1`), 60 s by default.
fn soak_duration() -> Duration {
    match std::env::var("MTCP_INTEROP_SOAK_SECS") {
        Ok(s) => Duration::from_secs(s.trim().parse().expect("MTCP_INTEROP_SOAK_SECS: seconds")),
        Err(_) => sizes().soak,
    }
}

#[test]
fn soak_mixed_traffic_returns_to_baseline() {
    scenario("interop soak", || {
        interop::soak::soak(soak_duration(), SEED)
    });
}
