//! `mtcp-bench <name> [--json PATH] [options]`: every benchmark of mtcp-rs, one subcommand
//! each. Results print as a table; `--json PATH` also writes them as a JSON array.

use bench_tools::{core_bench, psio_bench};
use std::process::ExitCode;

const USAGE: &str = "usage: mtcp-bench <benchmark> [--json PATH] [options]

benchmarks:
  psio    frames/s and CPU per frame of each psio backend
          options: --frames N (default 5000000)  --runs R (default 5)  --no-af-packet  --no-shm
  core    tcp-core (mtcp-rs) against smoltcp, two stacks in one thread over an in-memory link:
          short transactions (connect, 64 B request, 64 B response, close) at 1, 64, 1024, 4096,
          65536 and 1000000 concurrent connections, one-connection bulk at MTU 1500, and
          resident memory per idle connection; levels above 64 where smoltcp does not run
          alternate their windows with a second pair at 64 and print the ratio of the rates
          options: --runs R (default 3, medians)  --seconds S (per window, default 1)
                   --concurrency N,N,...  --max-concurrency N  --buffer BYTES (default 2048)
                   --no-smoltcp  --no-mtcp-rs  --smoltcp-max N (default 4096)
                   --no-short  --no-bulk  --no-idle
                   --idle-conns N (default 65536)  --smoltcp-idle-conns N (default 4096)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtcp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} needs a number, not {text:?}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let Some(name) = args.first() else {
        return Err(USAGE.into());
    };
    let mut json = None;
    let mut runs = None;
    let mut psio = psio_bench::Options::default();
    let mut core = core_bench::Options::default();
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
            "--frames" => psio.frames = number("--frames", &value("--frames")?)?,
            "--no-af-packet" => psio.no_af_packet = true,
            "--no-shm" => psio.no_shm = true,
            "--seconds" => core.seconds = number("--seconds", &value("--seconds")?)?,
            "--concurrency" => {
                core.concurrency = value("--concurrency")?
                    .split(',')
                    .map(|c| number("--concurrency", c.trim()))
                    .collect::<Result<_, _>>()?
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
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let text = match name.as_str() {
        "psio" => {
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
