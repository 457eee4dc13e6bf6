//! # bench-tools — applications and benchmarks of mtcp-rs
//!
//! Everything a user runs: the `mtcp-bench` binary with one subcommand per benchmark
//! (`compare`, its default, runs the others side by side; `psio`, `core`, `pingpong`,
//! `http`), the [`epserver`] static-file HTTP server and the [`epwget`] load generator (their
//! programs, also reachable as `mtcp-bench epserver` and `mtcp-bench epwget`; their shared
//! HTTP/1.1 code is [`http`], the rest they share [`apps`]). Each benchmark prints a table and, with
//! `--json PATH`, writes one JSON record per case; every performance claim is a ratio against
//! a baseline measured in the same run.
//!
//! [`netns`] creates the network namespaces and veth pairs that root-only benchmarks and tests
//! run in, and always removes them. [`relay`] is a seeded, impairing layer-2 relay between
//! two veth ends, and [`interop`] the interoperability scenarios against the Linux kernel
//! (`mtcp-bench interop`, `tests/tests/interop.rs`) built on both.

pub mod afp_bench;
pub mod apps;
pub mod cli;
pub mod compare;
pub mod core_bench;
pub mod cpu;
pub mod epserver;
pub mod epwget;
pub mod http;
pub mod http_bench;
pub mod interop;
pub mod netns;
pub mod pingpong;
pub mod plot;
pub mod psio_bench;
pub mod relay;
pub mod veth_cost;
