//! `mtcp-interop-epserver ARGS`: epserver (`bench_tools::epserver`, the program of
//! `mtcp-bench epserver`), built with this crate so that `tests/tests/interop.rs` runs it
//! as a child process that is never older than the test (`CARGO_BIN_EXE_…`); the SYN
//! flood scenario reads its peak resident set and its printed counters.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bench_tools::epserver::main(&args)
}
