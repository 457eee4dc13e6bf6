//! The `epwget` program: [`bench_tools::epwget`] (also `mtcp-bench epwget`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bench_tools::epwget::main(&args)
}
