//! # mtcp-api — BSD-like sockets and epoll over per-core contexts
//!
//! Place in the layers: the top of the stack. It glues `psio` (packet I/O), `tcp-core` (the
//! protocol) and `event` (readiness) together. Applications program against this crate (and,
//! later, its C ABI).
//!
//! ## What it holds
//! - [`Config`]: the whole configuration, from a TOML file (`mtcp-api/mtcp.example.toml`
//!   lists every field) or built in code; errors name the field and its line.
//! - [`init`] → [`Mtcp`]: one stack thread per core, pinned, running
//!   `select → RX batch → commands → timers → events → TX batch` over its psio queue
//!   ([`stack::StackCore::pass`]); [`Mtcp::context`] hands out each core's application side,
//!   [`Mtcp::stats`] its statistics, [`Mtcp::destroy`] closes and joins.
//! - [`Context`]: one core's application side — descriptors (sockets, epoll instances,
//!   pipes), BSD-like calls with errno-like [`Error`]s, epoll with Linux's semantics. It talks
//!   to its stack thread through two bounded crossbeam channels ([`proto::Cmd`] one way,
//!   [`proto::Msg`] the other) and psio's doorbell, rung only when the stack thread sleeps;
//!   received bytes and send credit live on this side, so `read` and `write` are queue
//!   operations. [`Context::run_to_completion`] runs the same calls with the stack in the
//!   calling thread.
//! - [`net`]: `TcpListener`/`TcpStream` with `std::io::Read`/`Write` on top of a context.
//!
//! ## Invariants
//! - A descriptor number is reused only after the stack released it, so no message about an
//!   old socket reaches a new one.
//! - The application side never takes a lock shared with another core; every socket is
//!   non-blocking; only `listen` waits for its stack (for the answer to "is this port free").
//! - Every queue is bounded: commands and messages by their channels, received bytes by
//!   `SO_RCVBUF`, unacknowledged written bytes by `SO_SNDBUF`, pending connections by the
//!   listen backlog.
//!
//! What it leaves to others: wire formats and TCP behaviour (`tcp-core`), frame movement
//! (`psio`), epoll bookkeeping (`event`).
#![forbid(unsafe_code)]

pub mod config;
pub mod context;
pub mod error;
pub mod net;
pub mod proto;
pub mod stack;

pub use config::{Config, ConfigError};
pub use context::{init, Context, EpollOp, InitError, Mtcp, Shutdown, SockOpt, SockOptName};
pub use error::Error;
pub use event::{EpollEvent, Events};
pub use proto::Fd;
pub use stack::StackStats;
