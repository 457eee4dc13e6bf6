//! The `epserver` program: [`bench_tools::epserver`] (also `mtcp-bench epserver`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bench_tools::epserver::main(&args)
}
