//! # bench-tools — applications and benchmarks of mtcp-rs
//!
//! Everything a user runs: the `mtcp-bench` binary with one subcommand per benchmark (today
//! `psio`; later `pingpong`, `bulk`, `conns`, `compare`), and later the `epserver` HTTP server
//! and `epwget` load generator. Each benchmark prints a table and, with `--json PATH`, writes
//! one JSON record per case; every performance claim is a ratio against a baseline measured in
//! the same run.

pub mod cpu;
pub mod json;
pub mod psio_bench;
