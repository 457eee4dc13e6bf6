//! `mtcp-bench http` end to end, for a short window: epserver and epwget over shared memory
//! and (when nginx and wrk are installed) nginx and wrk over loopback; as root also both
//! over veth. Checks that every selected stack completed requests and gave finite figures
//! (no timing assertions). The module itself fails a run with any HTTP or socket error.
//!
//! Cargo builds epserver and epwget (this package's binaries) for integration tests, in the
//! directory above this test's executable, where `http_bench` looks for them.

use bench_tools::http_bench::{run, HttpStack, Options};
use bench_tools::netns;

fn check(stacks: &[HttpStack]) {
    let opts = Options {
        stacks: stacks.to_vec(),
        concurrency: vec![8],
        cores: 1,
        seconds: 1.0,
        runs: 1,
    };
    let records = run(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        records
            .iter()
            .any(|r| r.stack == "mtcp-shm" || r.stack == "mtcp-veth"),
        "{records:?}"
    );
    for r in &records {
        assert_eq!((r.mode.as_str(), r.concurrency, r.cores), ("http", 8, 1));
        for (what, v) in [
            ("tx_per_s", r.tx_per_s),
            ("cpu_us_per_tx", r.cpu_us_per_tx),
            ("gbit_per_s", r.gbit_per_s),
            ("p50_us", r.p50_us),
            ("p99_us", r.p99_us),
        ] {
            assert!(v.is_finite() && v > 0.0, "{}: {what} = {v}", r.stack);
        }
    }
}

#[test]
fn shm_and_loopback_complete_requests() {
    check(&HttpStack::NO_ROOT);
}

#[test]
fn veth_stacks_complete_requests() {
    if netns::skip_unless_root("mtcp-bench http over veth") {
        return;
    }
    check(&HttpStack::VETH);
}
