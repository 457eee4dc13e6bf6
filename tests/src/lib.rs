//! # mtcp-tests — cross-crate integration tests
//!
//! The tests under `tests/tests/` exercise several crates of the workspace together:
//! psio backends between threads, processes and network namespaces; later stack↔stack and
//! stack↔Linux-kernel runs over veth pairs inside namespaces the tests create and delete
//! (with `bench_tools::netns`, which removes them even when a test fails).
#![forbid(unsafe_code)]

pub mod conformance;
pub mod epoll_diff;
pub mod epoll_mtcp;
