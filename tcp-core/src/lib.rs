//! # tcp-core — the TCP/IPv4 protocol engine of mtcp-rs, with no I/O
//!
//! Place in the layers: `mtcp-api` drives one `Endpoint` of this crate per core; this crate
//! depends on no other crate of the workspace, performs no I/O, reads no clock and draws no
//! randomness. Frames come in through `handle_frame(now, bytes)`, time through
//! `handle_timeout(now)`; frames leave through `poll_transmit(now, buf)` into a caller's
//! buffer (a psio TX slot), and readiness through `poll_event()`.
//!
//! RFCs to read before changing anything here: RFC 9293 (TCP), RFC 7323 (window scaling,
//! timestamps, PAWS), RFC 2018 and RFC 6675 (SACK), RFC 5681 and RFC 6582 (NewReno),
//! RFC 6298 (RTO), RFC 6928 (initial window), RFC 5961 (blind-attack protections),
//! RFC 6528 (ISNs), RFC 6191 (TIME_WAIT reuse), RFC 1122 (delayed ACK, keepalive), RFC 826
//! (ARP), RFC 792 (ICMP echo).
//!
//! ## Building blocks (this crate's modules)
//! - [`time`]: `Instant`/`Duration` in µs, supplied by the caller.
//! - [`config`], [`counters`], [`state`]: settings, counters, states, handles, events, errors.
//! - [`seq`]: sequence numbers with modular comparison.
//! - [`flow`]: the flow table, 4-tuple → connection slot in O(1), bounded.
//! - [`isn`]: keyed hashing (SipHash-2-4), RFC 6528 ISNs, ephemeral ports, SYN cookies.
//! - [`wire`]: parsing and emitting frames with `smoltcp::wire` (wire formats only).
//! - [`route`]: next hop by subnet, static routes and gateway.
//! - [`arp`]: the ARP cache with a bounded queue of frames waiting for resolution.
//! - [`buffer`]: send and receive buffers, bounded out-of-order reassembly, SACK blocks.
//! - [`scoreboard`]: the sender's SACK scoreboard (RFC 6675).
//! - [`timer`]: a timer wheel with O(1) insert and cancel.
//! - [`rtt`] and [`cc`]: the RFC 6298 estimator and congestion control (NewReno).
//!
//! With the `testing` feature, the `testing` module exports the seeded simulated link the tests use.
//!
//! What it deliberately leaves to others: packet I/O (`psio`), readiness delivery to
//! applications (`event`), threads, queues and sockets (`mtcp-api`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod arp;
pub mod buffer;
pub mod cc;
pub mod config;
mod conn;
pub mod counters;
pub mod endpoint;
pub mod flow;
pub mod isn;
pub mod route;
pub mod rtt;
pub mod scoreboard;
pub mod seq;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod timer;
mod timewait;
pub mod wire;

pub use config::{EndpointConfig, InterfaceConfig, Prefetch, TcpConfig};
pub use counters::Counters;
pub use endpoint::Endpoint;
pub use seq::SeqNumber;
pub use state::{CloseReason, ConnInfo, Event, Handle, SocketError, State};
pub use time::{Duration, Instant};
pub use wire::ChecksumAccel;
