//! `mtcp-bench <name> [--json PATH] [options]`: every benchmark of mtcp-rs, one subcommand
//! each. Results print as a table; `--json PATH` also writes them as a JSON array. Without
//! arguments it runs `compare --quick`.

use bench_tools::{compare, core_bench, http_bench, interop, pingpong, psio_bench, veth_cost};
use std::process::ExitCode;

const USAGE: &str = "usage: mtcp-bench [<benchmark> [--json PATH] [options]]

benchmarks (and the applications: mtcp-bench epserver|epwget ARGS runs them):
  compare (the default, as compare --quick)
          the paper's experiments side by side: new-conn, persistent, setup (connect +
          reset), bulk (one connection) and HTTP (epwget -> epserver, wrk -> nginx) on
          mtcp-rs over shm (stack threads, run-to-completion), Linux loopback, smoltcp over
          shm and, as root, mtcp-rs and Linux over a veth pair; medians, ratios to Linux and
          to smoltcp, the targets
          options: --quick (no root, about a minute)  --runs R (default 3)  --seconds S
                   (per window; default 0.3 quick, 1 full)  --svg DIR (figures)  --no-http
                   --from JSON (measure nothing: print and draw an earlier --json file)
  psio    frames/s and CPU per frame of each psio backend
          options: --frames N (default 5000000)  --runs R (default 5)  --no-af-packet  --no-shm
  vethcost
          (root) kernel CPU per 64 B frame a user-level stack pays on a veth pair: psio's
          af_packet rings against an AF_XDP socket (copy mode, XDP redirect), batch 1 and 32
          options: --frames N (default 1000000)  --runs R (default 3)
  core    tcp-core (mtcp-rs) against smoltcp, two stacks in one thread over an in-memory link:
          short transactions (connect, 64 B request, 64 B response, close) at 1, 64, 1024, 4096,
          65536 and 1000000 concurrent connections, one-connection bulk at MTU 1500, and
          resident memory per idle connection; levels above 64 where smoltcp does not run
          alternate their windows with a second pair at 64 and print the ratio of the rates
          options: --runs R (default 3, medians)  --seconds S (per window, default 1)
                   --concurrency N,N,...  --max-concurrency N  --buffer BYTES (default 2048)
                   --no-smoltcp  --no-mtcp-rs  --smoltcp-max N (default 4096)
                   --no-short  --no-bulk  --no-idle
                   --idle-conns N (default 65536)  --smoltcp-idle-conns N (default 4096)
  pingpong
          64 B request/response over mtcp-rs (two mtcp-api instances in this process over a
          shared-memory link) and over Linux's loopback, the same epoll application on both:
          tx/s, process CPU µs per transaction (all threads, getrusage), p50/p99 latency, and
          Linux's CPU per transaction over mtcp-rs's
          options: --mode new-conn,persistent,setup,bulk|all (default new-conn,persistent;
                   setup: the server resets each connection it accepts; bulk: one-way
                   stream, a transaction is 1 MB)  --concurrency N,N,... (default 64)
                   --cores C (per side, default 1)  --stack NAME,... among mtcp-shm,
                   mtcp-shm-rtc, linux-loopback, smoltcp-shm, mtcp-veth, mtcp-veth-rtc,
                   linux-veth, or shm (no root), veth or all (default shm)  --seconds S (per window, default 2)  --runs R (default 3,
                   medians)  --no-pin  --busy-poll US (mtcp-rs polls this long before
                   sleeping, default 0)
  http    keep-alive GETs of a 64 B file: epserver driven by epwget (mtcp-rs; child processes
          of this executable) against nginx driven by wrk (Linux), same cores on both
          sides: requests/s, CPU µs per request of server and client together, p50/p99, and
          Linux's CPU per request over ours (same kind of link)
          options: --stack NAME,... among mtcp-shm, mtcp-shm-rtc, linux-loopback,
                   mtcp-veth, mtcp-veth-rtc, linux-veth, or shm, veth, all (default
                   shm; veth needs root)  --concurrency N,N,... (default 64)  --cores C
                   (default 1)  --seconds S (per client run, whole seconds, default 2)
                   --runs R (default 3, medians)
  interop interoperability with the Linux kernel (root; issue 6, scenarios 1-8): bulk
          integrity on a clean, a lossy and a burst-loss link (our client and server,
          sha256 both ways, goodput, retransmits), the kernel's SACK/timestamps/window
          scaling in all 8 combinations on a clean and a lossy link, zero window (a kernel
          reader that stops; our persist probes), curl --limit-rate against epserver,
          10 000 connections at once (wrk against epserver, epwget against nginx), abrupt
          ends (peer killed, link cut, TIME-WAIT reuse over 4 ports), a SYN flood against
          epserver (curl's success rate, SYN cookies, peak RSS), hostile segments
          (answered or dropped per RFC, counted) and a soak of mixed traffic (table and
          memory back to baseline); one line per scenario
          options: --long (1 GiB each way, 10-minute soak)  --seed N  --pcap DIR (the
                   relay's captures)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The applications, so that benchmarks can run them from this one executable.
    match args.first().map(String::as_str) {
        Some("epserver") => return bench_tools::epserver::main(&args[1..]),
        Some("epwget") => return bench_tools::epwget::main(&args[1..]),
        _ => {}
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtcp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mtcp-bench interop [--json PATH] [options]`: the scenarios print as they end; the JSON
/// holds one `{"scenario", "passed", "figure", "detail"}` record each.
fn interop(args: &[String]) -> Result<(), String> {
    let mut json = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--json" {
            json = Some(it.next().ok_or("--json needs a value")?.clone());
        } else {
            rest.push(a.clone());
        }
    }
    let records = interop::main(&rest)?;
    if let Some(path) = &json {
        let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("writing {path}: {e}"))?;
        println!("wrote {path}");
    }
    let failed: Vec<&str> = records
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.scenario.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} needs a number, not {text:?}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let quick = ["compare".to_string(), "--quick".to_string()];
    let args = if args.is_empty() { &quick[..] } else { args };
    let name = &args[0];
    if name == "http" {
        return http(&args[1..]);
    }
    if name == "interop" {
        return interop(&args[1..]);
    }
    let mut json = None;
    let mut runs = None;
    let mut seconds = None;
    let mut concurrency = None;
    let mut psio = psio_bench::Options::default();
    let mut frames = None;
    let mut core = core_bench::Options::default();
    let mut pingpong = pingpong::Options::default();
    let mut cmp = compare::Options::default();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--json" => json = Some(value("--json")?),
            "--runs" => runs = Some(number("--runs", &value("--runs")?)?),
            "--frames" => frames = Some(number("--frames", &value("--frames")?)?),
            "--no-af-packet" => psio.no_af_packet = true,
            "--no-shm" => psio.no_shm = true,
            "--seconds" => seconds = Some(number("--seconds", &value("--seconds")?)?),
            "--concurrency" => {
                concurrency = Some(
                    value("--concurrency")?
                        .split(',')
                        .map(|c| number("--concurrency", c.trim()))
                        .collect::<Result<Vec<usize>, _>>()?,
                )
            }
            "--max-concurrency" => {
                core.max_concurrency = number("--max-concurrency", &value("--max-concurrency")?)?
            }
            "--buffer" => core.buffer = number("--buffer", &value("--buffer")?)?,
            "--no-smoltcp" => core.smoltcp = false,
            "--no-mtcp-rs" => core.mtcp = false,
            "--smoltcp-max" => {
                core.smoltcp_max = number("--smoltcp-max", &value("--smoltcp-max")?)?
            }
            "--no-short" => core.short = false,
            "--no-bulk" => core.bulk = false,
            "--no-idle" => core.idle = false,
            "--idle-conns" => core.idle_conns = number("--idle-conns", &value("--idle-conns")?)?,
            "--smoltcp-idle-conns" => {
                core.smoltcp_idle_conns =
                    number("--smoltcp-idle-conns", &value("--smoltcp-idle-conns")?)?
            }
            "--mode" => pingpong.modes = pingpong::Mode::parse_list(&value("--mode")?)?,
            "--stack" => pingpong.stacks = pingpong::Stack::parse_list(&value("--stack")?)?,
            "--cores" => pingpong.cores = number("--cores", &value("--cores")?)?,
            "--no-pin" => pingpong.pin = false,
            "--quick" => cmp.quick = true,
            "--svg" => cmp.svg = Some(value("--svg")?.into()),
            "--no-http" => cmp.no_http = true,
            "--from" => cmp.from = Some(value("--from")?.into()),
            "--busy-poll" => pingpong.busy_poll_us = number("--busy-poll", &value("--busy-poll")?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let text = match name.as_str() {
        "compare" => {
            cmp.runs = runs;
            cmp.seconds = seconds;
            if cmp.seconds.is_some_and(|s| !s.is_finite() || s <= 0.0) || runs == Some(0) {
                return Err("--seconds and --runs must be positive".into());
            }
            let (records, failed) = compare::run(&cmp);
            let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
            if let Some(path) = &json {
                std::fs::write(path, text + "\n").map_err(|e| format!("writing {path}: {e}"))?;
                println!("wrote {path}");
            }
            if failed.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "{} case(s) failed:\n  {}",
                failed.len(),
                failed.join("\n  ")
            ));
        }
        "vethcost" => {
            let frames = frames.unwrap_or(1_000_000);
            let runs = runs.unwrap_or(3);
            println!("vethcost: {frames} frames of 64 B per run, median of {runs} runs");
            veth_cost::print_header();
            let records = veth_cost::run(frames, runs)?;
            serde_json::to_string_pretty(&records)
        }
        "psio" => {
            if let Some(f) = frames {
                psio.frames = f;
            }
            if let Some(r) = runs {
                psio.runs = r;
            }
            println!(
                "psio: {} frames per run, median of {} runs",
                psio.frames, psio.runs
            );
            psio_bench::print_header();
            let records = psio_bench::run(&psio)?;
            serde_json::to_string_pretty(&records)
        }
        "core" => {
            if let Some(r) = runs {
                core.runs = r;
            }
            if let Some(s) = seconds {
                core.seconds = s;
            }
            if let Some(c) = concurrency {
                core.concurrency = c;
            }
            if !core.seconds.is_finite() || core.seconds <= 0.0 || core.runs == 0 {
                return Err("--seconds and --runs must be positive".into());
            }
            println!(
                "core: windows of {} s (and at least `conc` transactions), median of {}; \
                 CPU µs per transaction of the whole loop; cpu m/s = mtcp-rs / smoltcp",
                core.seconds, core.runs
            );
            let records = core_bench::run(&core)?;
            serde_json::to_string_pretty(&records)
        }
        "pingpong" => {
            if let Some(r) = runs {
                pingpong.runs = r;
            }
            if let Some(s) = seconds {
                pingpong.seconds = s;
            }
            if let Some(c) = concurrency {
                pingpong.concurrency = c;
            }
            if !pingpong.seconds.is_finite() || pingpong.seconds <= 0.0 || pingpong.runs == 0 {
                return Err("--seconds and --runs must be positive".into());
            }
            println!(
                "pingpong: windows of {} s after a warm-up, median of {} runs; CPU µs/tx = \
                 getrusage(RUSAGE_SELF) user+sys of this whole process (client, server and \
                 stack threads; Linux's loopback softirq work runs in the sockets' system \
                 calls) per transaction; linux/mtcp = Linux's CPU µs/tx over mtcp-rs's (x \
                 less CPU per transaction). new-conn: the client closes with a reset on both \
                 stacks (Linux SO_LINGER 0, mtcp-rs Context::abort), the server closes right \
                 after its response",
                pingpong.seconds, pingpong.runs
            );
            if pingpong.pin {
                println!(
                    "threads pinned (on 2 CPUs: mtcp-rs's stack threads on one, its \
                     application threads on the other; Linux's server thread on one, its \
                     client thread on the other; --no-pin leaves it to the scheduler)"
                );
            }
            pingpong::print_header();
            let records = pingpong::run(&pingpong)?;
            serde_json::to_string_pretty(&records)
        }
        "-h" | "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => return Err(format!("unknown benchmark {other}\n{USAGE}")),
    }
    .map_err(|e| e.to_string())?;
    if let Some(path) = json {
        std::fs::write(&path, text + "\n").map_err(|e| format!("writing {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

/// `mtcp-bench http [options]`.
fn http(args: &[String]) -> Result<(), String> {
    let mut opts = http_bench::Options::default();
    let mut json = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--json" => json = Some(value("--json")?),
            "--stack" => opts.stacks = http_bench::HttpStack::parse_list(&value("--stack")?)?,
            "--concurrency" => {
                opts.concurrency = value("--concurrency")?
                    .split(',')
                    .map(|c| number("--concurrency", c.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--cores" => opts.cores = number("--cores", &value("--cores")?)?,
            "--seconds" => opts.seconds = number("--seconds", &value("--seconds")?)?,
            "--runs" => opts.runs = number("--runs", &value("--runs")?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    println!(
        "http: keep-alive GETs of a {} B file; each figure the median of {} runs, each run a \
         fresh server, a warm-up client run, then a measured client run of about {} s; CPU \
         µs/req = user+sys of server (/proc schedstat, all threads and processes) + client \
         (wait4 rusage) over the client's run, per request; linux/mtcp = Linux's CPU per \
         request over ours",
        http_bench::BODY_LEN,
        opts.runs,
        opts.seconds.round().max(1.0)
    );
    let records = http_bench::run(&opts)?;
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("writing {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
