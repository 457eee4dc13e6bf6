//! The epoll differential test: every scenario of `mtcp_tests::epoll_diff` run on Linux
//! (real sockets and epoll on loopback) and on mtcp-api in each of its modes (two contexts
//! over shared memory, run to completion or with stack threads; see
//! `mtcp_tests::epoll_mtcp::Mode`), asserting that each mode records the same sequence of
//! (socket, flags) reports as Linux.
//!
//! `cargo test -p mtcp-tests --test epoll_mtcp -- --nocapture` prints the recordings.

use mtcp_tests::epoll_diff::{describe, scenarios, LinuxSockets, Scenario, Sockets, WaitResult};
use mtcp_tests::epoll_mtcp::{Mode, MtcpSockets};
use std::thread;

type Recording = Result<Vec<WaitResult>, String>;

/// Runs every scenario on its own thread, all at once; the recordings in scenario order.
fn run_all(
    all: &[Scenario],
    what: &str,
    run: impl Fn(&Scenario) -> Recording + Sync,
) -> Vec<Recording> {
    let run = &run;
    thread::scope(|scope| {
        let handles: Vec<_> = all.iter().map(|s| scope.spawn(move || run(s))).collect();
        handles
            .into_iter()
            .zip(all)
            .map(|(h, s)| {
                h.join()
                    .unwrap_or_else(|_| panic!("{} ({what}) panicked", s.name))
            })
            .collect()
    })
}

#[test]
fn mtcp_epoll_reports_what_linux_reports() {
    let all = scenarios();
    // Linux and run-to-completion mtcp first, then mtcp with stack threads on its own: the
    // run-to-completion runs keep the CPUs busy while they settle (they poll without a
    // pause), and stack threads that share the CPUs with them wake up late enough to miss a
    // settle (a refused connect took up to 100 ms to come back on 2 CPUs).
    let (linux, rtc) = thread::scope(|scope| {
        let linux = scope.spawn(|| run_all(&all, "linux", |s| LinuxSockets.run(s)));
        let rtc = run_all(&all, Mode::Rtc.name(), |s| {
            MtcpSockets::new(Mode::Rtc).run(s)
        });
        (linux.join().expect("linux"), rtc)
    });
    let threaded = run_all(&all, Mode::Threaded.name(), |s| {
        MtcpSockets::new(Mode::Threaded).run(s)
    });
    let modes = [(Mode::Rtc, rtc), (Mode::Threaded, threaded)];
    let mut failures = Vec::new();
    for (i, (s, linux)) in all.iter().zip(linux).enumerate() {
        let linux = linux.unwrap_or_else(|e| panic!("Linux run failed: {e}"));
        for (mode, recordings) in &modes {
            match &recordings[i] {
                Err(e) => failures.push(format!("{} ({mode}): mtcp run failed: {e}", s.name)),
                Ok(m) if *m != linux => failures.push(format!(
                    "{} ({mode}):\n  linux:\n{}\n  mtcp ({mode}):\n{}",
                    s.name,
                    describe(&linux),
                    describe(m)
                )),
                Ok(m) => println!("{} ({mode}): same\n{}", s.name, describe(m)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs ({} scenarios, each in {} modes) differ from Linux:\n{}",
        failures.len(),
        all.len() * modes.len(),
        all.len(),
        modes.len(),
        failures.join("\n")
    );
}
