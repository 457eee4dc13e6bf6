//! The Linux half of the epoll differential test: every scenario of
//! `mtcp_tests::epoll_diff` run over real sockets and a real epoll instance on loopback.
//!
//! Linux is the reference, so its results are recorded, not hard-coded. These tests make
//! sure the recording can be trusted: a scenario gives the same results run after run
//! (`linux_results_are_stable`), and the semantics the catalog documents are what this kernel
//! does (`linux_results_match_documented_semantics`). Scenarios run in parallel threads: each
//! mostly sleeps at its settle points, so the whole file takes well under a second.
//!
//! `cargo test -p mtcp-tests --test epoll_linux -- --nocapture` prints every recording.

use mtcp_tests::epoll_diff::{
    catalog, describe, scenarios, LinuxSockets, Name, Scenario, Sockets, WaitResult, EPOLLERR,
    EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP,
};
use std::thread;

/// Runs every scenario `times` times on Linux, all at once, each in its own thread; returns
/// the results by scenario, in `scenarios()` order.
fn run_all(times: usize) -> Vec<(Scenario, Vec<Vec<WaitResult>>)> {
    let all = scenarios();
    thread::scope(|scope| {
        let handles: Vec<_> = all
            .iter()
            .map(|s| {
                let runs: Vec<_> = (0..times)
                    .map(|_| scope.spawn(move || LinuxSockets.run(s)))
                    .collect();
                (s, runs)
            })
            .collect();
        handles
            .into_iter()
            .map(|(s, runs)| {
                let results = runs
                    .into_iter()
                    .map(|h| {
                        let r = h.join().expect("runner thread panicked");
                        let r = r.unwrap_or_else(|e| panic!("Linux run failed: {e}"));
                        assert_eq!(r.len(), s.wait_count(), "{}: one result per wait", s.name);
                        r
                    })
                    .collect();
                (s.clone(), results)
            })
            .collect()
    })
}

/// Runs one scenario on Linux, panicking with the reason if it fails; returns its name for
/// the messages of `assert_wait`.
fn linux(s: Scenario) -> (&'static str, Vec<WaitResult>) {
    let r = LinuxSockets
        .run(&s)
        .unwrap_or_else(|e| panic!("Linux run failed: {e}"));
    (s.name, r)
}

/// The flags reported for `name` at wait `wait` (1-based, as `describe` numbers them), or
/// `None` when it was not reported.
fn flags(r: &[WaitResult], wait: usize, name: Name) -> Option<u32> {
    r[wait - 1]
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, f)| f)
}

/// Asserts that wait `wait` reported exactly `expected`, showing the whole recording if not.
fn assert_wait(scenario: &str, r: &[WaitResult], wait: usize, expected: &[(Name, u32)]) {
    assert_eq!(
        r[wait - 1],
        expected,
        "{scenario}, wait {wait}; Linux recorded:\n{}",
        describe(r)
    );
}

#[test]
fn linux_results_are_stable() {
    for (s, runs) in run_all(2) {
        println!("{}:\n{}", s.name, describe(&runs[0]));
        assert_eq!(
            runs[0],
            runs[1],
            "{}: two Linux runs differ\nfirst:\n{}second:\n{}",
            s.name,
            describe(&runs[0]),
            describe(&runs[1])
        );
    }
}

/// The key facts of each scenario's documentation (see `epoll_diff::catalog`), one check per
/// scenario, all run at once.
#[test]
fn linux_results_match_documented_semantics() {
    let checks: Vec<fn()> = vec![
        || {
            let (s, r) = linux(catalog::lt_data_arrival());
            assert_wait(s, &r, 1, &[]);
            // Level-triggered: reported on every wait while unread, even partly read.
            for wait in 2..=4 {
                assert_wait(s, &r, wait, &[("server", EPOLLIN)]);
            }
            assert_wait(s, &r, 5, &[]);
        },
        || {
            let (s, r) = linux(catalog::et_data_arrival());
            // Once per arrival: not again while unread, not on a partial read.
            assert_wait(s, &r, 2, &[("server", EPOLLIN)]);
            assert_wait(s, &r, 3, &[]);
            assert_wait(s, &r, 4, &[]);
            assert_wait(s, &r, 5, &[("server", EPOLLIN)]);
            assert_wait(s, &r, 6, &[]);
        },
        || {
            let (s, r) = linux(catalog::et_reports_all_ready_flags());
            assert_wait(s, &r, 1, &[("server", EPOLLOUT)]);
            assert_wait(s, &r, 2, &[]);
            // The edge came from IN; OUT rides along.
            assert_wait(s, &r, 3, &[("server", EPOLLIN | EPOLLOUT)]);
        },
        || {
            let (s, r) = linux(catalog::oneshot());
            assert_wait(s, &r, 1, &[("server", EPOLLIN)]);
            // Silent through new data and a FIN until EpollMod re-arms it.
            for wait in 2..=4 {
                assert_wait(s, &r, wait, &[]);
            }
            assert_wait(s, &r, 5, &[("server", EPOLLIN | EPOLLRDHUP)]);
            assert_wait(s, &r, 6, &[]);
        },
        || {
            let (_, r) = linux(catalog::peer_fin());
            let fin = flags(&r, 2, "server").expect("server reported after the FIN");
            assert_eq!(fin & (EPOLLIN | EPOLLRDHUP), EPOLLIN | EPOLLRDHUP);
            assert_eq!(fin & EPOLLHUP, 0, "half-closed is not hung up");
            let both = flags(&r, 4, "server").expect("server reported after both FINs");
            assert_ne!(both & EPOLLHUP, 0, "both directions closed: HUP");
            // RDHUP only when asked for; HUP always.
            assert_eq!(flags(&r, 4, "client"), Some(EPOLLIN | EPOLLOUT | EPOLLHUP));
        },
        || {
            let (s, r) = linux(catalog::own_shutdown_write());
            assert_wait(s, &r, 1, &[("client", EPOLLOUT)]);
            let f = flags(&r, 3, "client").expect("client reported after both FINs");
            assert_ne!(f & EPOLLHUP, 0);
        },
        || {
            let (_, r) = linux(catalog::peer_rst());
            let rst = flags(&r, 2, "server").expect("server reported after the RST");
            assert_eq!(rst & (EPOLLERR | EPOLLHUP), EPOLLERR | EPOLLHUP);
            let read = flags(&r, 3, "server").expect("server reported after reading");
            assert_eq!(read & EPOLLERR, 0, "the read consumed the error");
        },
        || {
            let (_, r) = linux(catalog::close_with_unread_data());
            let f = flags(&r, 2, "client").expect("client reported after the close");
            assert_ne!(f & EPOLLERR, 0, "unread data turns close into a RST");
        },
        || {
            let (s, r) = linux(catalog::send_buffer_full());
            assert_wait(s, &r, 1, &[("client", EPOLLOUT)]);
            assert_wait(s, &r, 2, &[("server", EPOLLIN)]);
            assert_wait(s, &r, 3, &[("client", EPOLLOUT)]);
        },
        || {
            let (s, r) = linux(catalog::et_writable_again());
            assert_wait(s, &r, 3, &[]);
            assert_wait(s, &r, 4, &[]);
            assert_wait(s, &r, 5, &[("client", EPOLLOUT)]);
            assert_wait(s, &r, 6, &[]);
        },
        || {
            let (s, r) = linux(catalog::connect_success());
            assert_wait(s, &r, 1, &[("client", EPOLLOUT), ("listener", EPOLLIN)]);
            assert_wait(s, &r, 2, &[("client", EPOLLOUT)]);
        },
        || {
            let (_, r) = linux(catalog::connect_refused());
            let f = flags(&r, 1, "client").expect("refused client reported");
            assert_eq!(f & (EPOLLERR | EPOLLHUP), EPOLLERR | EPOLLHUP);
            let f = flags(&r, 2, "client").expect("still hung up after SO_ERROR");
            assert_eq!(f & (EPOLLERR | EPOLLHUP), EPOLLHUP);
        },
        || {
            let (s, r) = linux(catalog::accept_ready());
            assert_wait(s, &r, 1, &[]);
            assert_wait(s, &r, 2, &[("listener", EPOLLIN)]);
            assert_wait(s, &r, 3, &[("listener", EPOLLIN)]);
            assert_wait(s, &r, 4, &[]);
        },
        || {
            let (s, r) = linux(catalog::two_pending_connections());
            assert_wait(s, &r, 1, &[("listener", EPOLLIN)]);
            assert_wait(s, &r, 2, &[("listener", EPOLLIN)]);
            assert_wait(s, &r, 3, &[]);
        },
        || {
            let (s, r) = linux(catalog::et_listener());
            assert_wait(s, &r, 1, &[("listener", EPOLLIN)]);
            assert_wait(s, &r, 2, &[]);
            assert_wait(s, &r, 3, &[]);
            assert_wait(s, &r, 4, &[("listener", EPOLLIN)]);
        },
        || {
            let (s, r) = linux(catalog::fresh_socket());
            let fresh = [("fresh1", EPOLLOUT | EPOLLHUP), ("fresh2", EPOLLHUP)];
            assert_wait(s, &r, 1, &fresh);
            assert_wait(s, &r, 2, &[("fresh2", EPOLLHUP)]);
        },
        || {
            let (s, r) = linux(catalog::epoll_del());
            assert_wait(s, &r, 2, &[]);
            assert_wait(s, &r, 3, &[]);
            assert_wait(s, &r, 4, &[("server", EPOLLIN)]);
        },
        || {
            let (s, r) = linux(catalog::close_registered());
            assert_eq!(flags(&r, 2, "server"), None, "closed: no longer reported");
            assert_wait(s, &r, 3, &[]);
        },
    ];
    assert_eq!(
        checks.len(),
        scenarios().len(),
        "every scenario has its semantics checked"
    );
    thread::scope(|scope| {
        for check in checks {
            scope.spawn(check);
        }
    });
}
