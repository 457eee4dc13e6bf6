//! `mtcp-bench compare`: the paper's experiments, side by side in one invocation, on every
//! stack this machine can run.
//!
//! ## Workloads and stacks
//! The ping-pong family runs on [`pingpong`]'s application (the same epoll code on every
//! stack; its module doc says what is measured and how):
//! - **new-conn** and **persistent**: 64-byte requests and responses, a new connection per
//!   transaction or long-lived connections;
//! - **setup**: the connection setup rate (connect, the server accepts and resets);
//! - **bulk**: one connection's one-way throughput (a transaction is one megabyte);
//!
//! on mtcp-rs over shared memory (`mtcp-shm` with stack threads, `mtcp-shm-rtc` in
//! run-to-completion mode), Linux over loopback (`linux-loopback`), smoltcp over the same
//! kind of shared-memory link (`smoltcp-shm`), and, as root, mtcp-rs on AF_PACKET over a veth
//! pair between two namespaces (`mtcp-veth`, `mtcp-veth-rtc`, both ends ours) and Linux over
//! the same kind of veth pair (`linux-veth`). **http** runs epwget against epserver (both on
//! mtcp-rs) and wrk against nginx (both on Linux) over the same kinds of link
//! ([`http_bench`](crate::http_bench)).
//!
//! Each figure is the median of `--runs` runs (3 by default), the runs of the stacks of a
//! case alternating. `--quick` (the default of `mtcp-bench` without arguments) is the subset
//! that needs no root and finishes in about a minute: every workload at one concurrency
//! level, short windows. The full run adds concurrency levels, two cores per side, the veth
//! stacks (root) and SVG figures (`--svg DIR`).
//!
//! ## Output
//! Rows print as each case finishes; a summary table at the end adds, for each row,
//! Linux's CPU per transaction over the same kind of link divided by the row's (`×linux`),
//! and smoltcp's over the row's for the shared-memory rows (`×smoltcp`): how many times less
//! CPU per transaction. Then the targets, each with the figure measured. `--json
//! PATH` writes every record (`stack`, `mode`, `concurrency`, `cores`, `tx_per_s`,
//! `cpu_us_per_tx`, `gbit_per_s`, `p50_us`, `p99_us`; `null` where a figure does not apply).
//! A case that fails is reported and skipped; the command then fails at the end, after
//! writing what it measured.

use crate::http_bench;
use crate::netns;
use crate::pingpong::{self, Mode, Plan, Record, Stack};
use crate::plot;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `mtcp-bench compare`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The quick subset (no root, about a minute).
    pub quick: bool,
    /// Runs per case (medians); default 3.
    pub runs: Option<usize>,
    /// Seconds per measured window; default 0.3 quick, 1 full.
    pub seconds: Option<f64>,
    /// Directory for the SVG figures (created), if any.
    pub svg: Option<PathBuf>,
    /// Leave out the HTTP workload.
    pub no_http: bool,
    /// Measure nothing: read the records of an earlier `--json` file and print (and draw)
    /// them again.
    pub from: Option<PathBuf>,
}

/// One case of the ping-pong family.
#[derive(Debug, Clone, Copy)]
struct Case {
    mode: Mode,
    concurrency: usize,
    cores: usize,
}

/// The ping-pong cases of a run.
fn cases(quick: bool) -> Vec<Case> {
    let c = |mode, concurrency, cores| Case {
        mode,
        concurrency,
        cores,
    };
    if quick {
        return vec![
            c(Mode::NewConn, 64, 1),
            c(Mode::Persistent, 64, 1),
            c(Mode::Setup, 64, 1),
            c(Mode::Bulk, 1, 1),
        ];
    }
    let mut out = Vec::new();
    for mode in [Mode::NewConn, Mode::Persistent] {
        for conc in [16, 64, 256, 1024] {
            out.push(c(mode, conc, 1));
        }
        for conc in [64, 1024] {
            out.push(c(mode, conc, 2));
        }
    }
    for conc in [64, 1024] {
        out.push(c(Mode::Setup, conc, 1));
    }
    out.push(c(Mode::Bulk, 1, 1));
    out
}

/// The stacks of a run (the veth ones only as root).
fn stacks(quick: bool) -> Vec<Stack> {
    if quick {
        Stack::NO_ROOT.to_vec()
    } else {
        Stack::ALL.to_vec()
    }
}

/// Linux's stack over the same kind of link as `stack`.
fn linux_of(stack: &str) -> &'static str {
    if stack.contains("veth") {
        "linux-veth"
    } else {
        "linux-loopback"
    }
}

fn is_ours(stack: &str) -> bool {
    stack.starts_with("mtcp-")
}

/// `baseline`'s CPU per transaction over `r`'s, in `r`'s case.
fn ratio(all: &[Record], r: &Record, baseline: &str) -> Option<f64> {
    all.iter()
        .find(|b| {
            b.stack == baseline
                && b.mode == r.mode
                && b.concurrency == r.concurrency
                && b.cores == r.cores
        })
        .map(|b| b.cpu_us_per_tx / r.cpu_us_per_tx)
        .filter(|x| x.is_finite())
}

fn times(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.1}x"))
}

/// Prints the table's header.
fn print_header() {
    println!(
        "{:<14} {:<10} {:>5} {:>5} | {:>10} {:>10} {:>7} {:>8} {:>8} | {:>7} {:>8}",
        "stack",
        "mode",
        "conc",
        "cores",
        "tx/s",
        "CPU µs/tx",
        "Gbit/s",
        "p50 µs",
        "p99 µs",
        "×linux",
        "×smoltcp"
    );
}

fn print_row(all: &[Record], r: &Record) {
    let (lx, sx) = if is_ours(&r.stack) {
        let smol = (!r.stack.contains("veth"))
            .then(|| ratio(all, r, "smoltcp-shm"))
            .flatten();
        (ratio(all, r, linux_of(&r.stack)), smol)
    } else if r.stack == "smoltcp-shm" {
        (ratio(all, r, "linux-loopback"), None)
    } else {
        (None, None)
    };
    println!(
        "{:<14} {:<10} {:>5} {:>5} | {:>10.0} {:>10.2} {:>7.3} {:>8.1} {:>8.1} | {:>7} {:>8}",
        r.stack,
        r.mode,
        r.concurrency,
        r.cores,
        r.tx_per_s,
        r.cpu_us_per_tx,
        r.gbit_per_s,
        r.p50_us,
        r.p99_us,
        times(lx),
        times(sx),
    );
}

/// The best ratio of `ours` over its Linux baseline in `mode`, with the case where it was
/// measured.
fn best(all: &[Record], mode: &str, ours: &[&str]) -> Option<(f64, String)> {
    all.iter()
        .filter(|r| r.mode == mode && ours.contains(&r.stack.as_str()))
        .filter_map(|r| {
            ratio(all, r, linux_of(&r.stack)).map(|x| {
                (
                    x,
                    format!(
                        "{} at {} conns, {} core(s)",
                        r.stack, r.concurrency, r.cores
                    ),
                )
            })
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// Prints the targets with the figures measured.
fn print_targets(all: &[Record]) {
    println!("targets (CPU per transaction, Linux over the same kind of link / mtcp-rs):");
    let line = |what: &str, goal: f64, got: Option<(f64, String)>| match got {
        Some((x, at)) => println!(
            "  {what}: ≥ {goal}x: best {x:.1}x ({at}) {}",
            if x >= goal { "met" } else { "NOT met" }
        ),
        None => println!("  {what}: ≥ {goal}x: not measured in this run"),
    };
    line(
        "new-conn, mtcp-rs over shm vs Linux loopback",
        30.0,
        best(all, "new-conn", &["mtcp-shm", "mtcp-shm-rtc"]),
    );
    line(
        "new-conn, mtcp-rs over veth vs Linux over veth",
        5.0,
        best(all, "new-conn", &["mtcp-veth", "mtcp-veth-rtc"]),
    );
    line(
        "HTTP requests per CPU-second over veth vs nginx + wrk",
        5.0,
        best(all, "http", &["mtcp-veth", "mtcp-veth-rtc"]),
    );
}

/// Runs the comparison, printing as it goes; returns every record measured. Failed cases
/// are reported and skipped; the error at the end lists them (after `json` and the figures
/// are written by the caller from the records returned alongside).
pub fn run(opts: &Options) -> (Vec<Record>, Vec<String>) {
    if let Some(path) = &opts.from {
        let all = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Vec<Record>>(&t).map_err(|e| e.to_string()))
        {
            Ok(all) => all,
            Err(e) => return (Vec::new(), vec![format!("reading {}: {e}", path.display())]),
        };
        println!("records of {}:", path.display());
        let failed = summarize(&all, opts);
        return (all, failed);
    }
    let t0 = Instant::now();
    let runs = opts.runs.unwrap_or(3).max(1);
    let seconds = opts.seconds.unwrap_or(if opts.quick { 0.3 } else { 1.0 });
    let mut stacks = stacks(opts.quick);
    pingpong::without_root_stacks(&mut stacks);
    println!(
        "compare{}: medians of {runs} runs, windows of {seconds} s; CPU = user + system of \
         every thread of both ends; ×linux (×smoltcp) = Linux's (smoltcp's) CPU per \
         transaction over the row's",
        if opts.quick { " --quick" } else { "" }
    );
    print_header();
    let mut all: Vec<Record> = Vec::new();
    let mut failed = Vec::new();
    for case in cases(opts.quick) {
        let plan = Plan {
            mode: case.mode,
            concurrency: case.concurrency,
            cores: case.cores,
            seconds,
            pin: true,
            busy_poll_us: 0,
        };
        match pingpong::run_case(&stacks, &plan, runs) {
            Ok(c) => {
                for r in &c.records {
                    print_row(&c.records, r);
                }
                for n in &c.notes {
                    println!("  note: {n}");
                }
                all.extend(c.records);
            }
            Err(e) => {
                println!("  failed: {e}");
                failed.push(e);
            }
        }
    }
    if !opts.no_http {
        let base = http_bench::Options {
            runs,
            seconds: seconds.max(1.0),
            ..http_bench::Options::default()
        };
        // Full: 64 and 256 connections on one core per side, 64 on two.
        let plans = if opts.quick {
            vec![base]
        } else {
            let all_stacks = http_bench::HttpStack::ALL.to_vec();
            vec![
                http_bench::Options {
                    stacks: all_stacks.clone(),
                    concurrency: vec![64, 256],
                    ..base.clone()
                },
                http_bench::Options {
                    stacks: all_stacks,
                    concurrency: vec![64],
                    cores: 2,
                    ..base
                },
            ]
        };
        for h in &plans {
            match http_bench::run(h) {
                Ok(rs) => all.extend(rs),
                Err(e) => {
                    println!("  failed: http: {e}");
                    failed.push(format!("http: {e}"));
                }
            }
        }
    }
    println!();
    println!("summary ({:.0} s):", t0.elapsed().as_secs_f64());
    if !netns::is_root() {
        println!(
            "not root: mtcp-veth, mtcp-veth-rtc and linux-veth (and HTTP over veth) were \
             skipped"
        );
    }
    failed.extend(summarize(&all, opts));
    (all, failed)
}

/// The summary table, the targets and the figures of `all`; errors writing the figures.
fn summarize(all: &[Record], opts: &Options) -> Vec<String> {
    print_header();
    for r in all {
        print_row(all, r);
    }
    print_targets(all);
    let mut failed = Vec::new();
    if let Some(dir) = &opts.svg {
        match write_figures(all, dir) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
            }
            Err(e) => failed.push(e),
        }
    }
    failed
}

/// Writes one SVG figure per workload with something to draw into `dir`.
pub fn write_figures(all: &[Record], dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for mode in ["new-conn", "persistent", "setup", "http"] {
        let path = dir.join(format!("{mode}.svg"));
        if plot::write_figure(all, mode, &path)? {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(stack: &str, mode: &str, concurrency: usize, cpu: f64) -> Record {
        Record {
            stack: stack.into(),
            mode: mode.into(),
            concurrency,
            cores: 1,
            tx_per_s: 1e6 / cpu,
            cpu_us_per_tx: cpu,
            gbit_per_s: 0.0,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
        }
    }

    #[test]
    fn ratios_pair_each_row_with_linux_over_the_same_link_and_case() {
        let all = vec![
            rec("linux-loopback", "new-conn", 64, 60.0),
            rec("linux-loopback", "new-conn", 1024, 40.0),
            rec("linux-veth", "new-conn", 64, 80.0),
            rec("mtcp-shm", "new-conn", 64, 3.0),
            rec("mtcp-shm-rtc", "new-conn", 1024, 1.0),
            rec("mtcp-veth", "new-conn", 64, 20.0),
            rec("mtcp-veth", "persistent", 64, 10.0),
        ];
        assert_eq!(ratio(&all, &all[3], linux_of("mtcp-shm")), Some(20.0));
        assert_eq!(ratio(&all, &all[5], linux_of("mtcp-veth")), Some(4.0));
        // No Linux row for persistent: no ratio.
        assert_eq!(ratio(&all, &all[6], linux_of("mtcp-veth")), None);
        let (x, at) = best(&all, "new-conn", &["mtcp-shm", "mtcp-shm-rtc"]).unwrap();
        assert_eq!(x, 40.0);
        assert!(at.contains("mtcp-shm-rtc at 1024"), "{at}");
        assert!(best(&all, "http", &["mtcp-veth"]).is_none());
    }

    /// The quick comparison (short windows, one run, HTTP left to its own tests) measures
    /// every workload on every stack that needs no root, smoltcp included.
    #[test]
    fn quick_compare_measures_every_stack_and_workload() {
        let (records, failed) = run(&Options {
            quick: true,
            runs: Some(1),
            seconds: Some(0.1),
            svg: None,
            no_http: true,
            from: None,
        });
        assert!(failed.is_empty(), "{failed:?}");
        for stack in stacks(true).into_iter().filter(|s| !s.needs_root()) {
            for case in cases(true) {
                let r = records
                    .iter()
                    .find(|r| r.stack == stack.name() && r.mode == case.mode.name())
                    .unwrap_or_else(|| panic!("no record of {stack} {}", case.mode));
                assert!(r.tx_per_s > 0.0 && r.cpu_us_per_tx > 0.0, "{r:?}");
                assert!(r.cpu_us_per_tx.is_finite(), "{r:?}");
            }
        }
    }
}
