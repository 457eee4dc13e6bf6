//! # mtcp-packetdrill — mtcp-rs as a packetdrill shared library
//!
//! [packetdrill](https://github.com/google/packetdrill) tests a stack that is not the local
//! kernel through a shared library: run with `--so_filename=libmtcp_packetdrill.so`, it
//! `dlopen`s the library, calls [`packetdrill_interface_init`] with the `--so_flags` string,
//! and from then on makes every system call of a script, injects every inbound packet, sniffs
//! every outbound packet and reads and advances the clock through the function pointers the
//! library filled in (`struct packetdrill_interface`, declared here as
//! [`packetdrill_interface`]).
//!
//! Behind the pointers: one tcp-core `Endpoint` (created at the first call that needs it) on a
//! **virtual clock**.
//! - `gettimeofday` reports the clock and moves it by 1 µs per call (packetdrill spins on the
//!   clock for the last 20 µs before each event); `usleep` moves it by its argument. Every
//!   timer due on the way runs at its own deadline, so retransmissions, delayed ACKs and
//!   TIME-WAIT happen at the right virtual times and a script with a 3 s RTO runs in
//!   milliseconds.
//! - `netdev_send` takes an IPv4 packet (no link-layer header), wraps it in an Ethernet header
//!   and hands it to the endpoint. `netdev_receive` returns the next IPv4 packet the endpoint
//!   sent (Ethernet header stripped) with the virtual time it left; when none is waiting it
//!   moves the clock through the endpoint's timers until one leaves — that is what "blocking
//!   until the kernel sends" means on a virtual clock — giving up after 600 s of virtual time
//!   (it then returns an empty packet, which packetdrill reports as a parse error on that
//!   line). ARP is bypassed: the script's side is a static neighbour and the gateway.
//! - Socket calls map onto the endpoint by descriptor (3 up, lowest free first) with Linux
//!   semantics and errno values. Calls that would block wait for the stack to change (the
//!   other packetdrill thread injecting a packet or moving the clock); see the `shared` module.
//!   Unsupported calls (`epoll_*`, `pipe`, `splice`) return -1 with `ENOSYS`.
//! - `fcntl` and `ioctl` are C-variadic in packetdrill's struct; a small C shim (`shim.c`)
//!   reads their optional argument and calls non-variadic Rust functions.
//!
//! The `--so_flags` syntax is in the `flags` module, and `README.md` beside this crate says
//! how to run a corpus and what is known not to work.
//!
//! What it deliberately does not do: IPv6, UDP, ICMP sockets, epoll, pipes; it is a test
//! adapter, not a production socket layer (`mtcp-api` is). No panic crosses the C boundary:
//! every entry point runs under `catch_unwind` and reports `EIO` instead.

pub mod ffi;
pub mod flags;
pub mod shared;
pub mod stack;

pub use ffi::{packetdrill_interface, packetdrill_interface_init};
