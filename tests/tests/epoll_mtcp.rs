//! The epoll differential test: every scenario of `mtcp_tests::epoll_diff` run on Linux
//! (real sockets and epoll on loopback) and on mtcp-api (two run-to-completion contexts over
//! shared memory), asserting the same sequence of (socket, flags) reports.
//!
//! `cargo test -p mtcp-tests --test epoll_mtcp -- --nocapture` prints both recordings.

use mtcp_tests::epoll_diff::{describe, scenarios, LinuxSockets, Sockets};
use mtcp_tests::epoll_mtcp::MtcpSockets;
use std::thread;

#[test]
fn mtcp_epoll_reports_what_linux_reports() {
    let all = scenarios();
    let results: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = all
            .iter()
            .map(|s| {
                (
                    s,
                    scope.spawn(move || LinuxSockets.run(s)),
                    scope.spawn(move || MtcpSockets.run(s)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(s, l, m)| (s, l.join().expect("linux"), m.join().expect("mtcp")))
            .collect()
    });
    let mut failures = Vec::new();
    for (s, linux, mtcp) in results {
        let linux = linux.unwrap_or_else(|e| panic!("Linux run failed: {e}"));
        match mtcp {
            Err(e) => failures.push(format!("{}: mtcp run failed: {e}", s.name)),
            Ok(m) if m != linux => failures.push(format!(
                "{}:\n  linux:\n{}\n  mtcp:\n{}",
                s.name,
                describe(&linux),
                describe(&m)
            )),
            Ok(m) => println!("{}: same\n{}", s.name, describe(&m)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
