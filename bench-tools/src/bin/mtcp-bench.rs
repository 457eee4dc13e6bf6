//! `mtcp-bench <name> [--json PATH] [options]`: every benchmark of mtcp-rs, one subcommand
//! each. Results print as a table; `--json PATH` also writes them as a JSON array.

use bench_tools::psio_bench;
use std::process::ExitCode;

const USAGE: &str = "usage: mtcp-bench <benchmark> [--json PATH] [options]

benchmarks:
  psio    frames/s and CPU per frame of each psio backend
          options: --frames N (default 5000000)  --runs R (default 5)  --no-af-packet  --no-shm";

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

fn run(args: &[String]) -> Result<(), String> {
    let Some(name) = args.first() else {
        return Err(USAGE.into());
    };
    let mut json = None;
    let mut opts = psio_bench::Options::default();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--json" => json = Some(value("--json")?),
            "--frames" => {
                opts.frames = value("--frames")?
                    .parse()
                    .map_err(|_| "--frames needs a number".to_string())?
            }
            "--runs" => {
                opts.runs = value("--runs")?
                    .parse()
                    .map_err(|_| "--runs needs a number".to_string())?
            }
            "--no-af-packet" => opts.no_af_packet = true,
            "--no-shm" => opts.no_shm = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let records = match name.as_str() {
        "psio" => {
            println!(
                "psio: {} frames per run, median of {} runs",
                opts.frames, opts.runs
            );
            psio_bench::print_header();
            psio_bench::run(&opts)?
        }
        "-h" | "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => return Err(format!("unknown benchmark {other}\n{USAGE}")),
    };
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("writing {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
