//! # mtcp-api — BSD-like sockets and epoll over per-core contexts
//!
//! Place in the layers: the top of the stack. It glues `psio` (packet I/O), `tcp-core` (the
//! protocol) and `event` (readiness) together: one `Context` per core with a stack thread
//! running `select → RX batch → commands → timers → events → TX batch`, a per-core socket
//! table, and lock-free command and event queues between application threads and the stack
//! thread. Applications program against this crate (and, later, its C ABI).
//!
//! What it leaves to others: wire formats and TCP behaviour (`tcp-core`), frame movement
//! (`psio`), epoll bookkeeping (`event`).
//!
//! Built so far: [`Config`], the configuration every context starts from (TOML or code).
//! Contexts, sockets and epoll arrive next (issue "event + mtcp-api").
#![forbid(unsafe_code)]

pub mod config;
pub mod error;

pub use config::{Config, ConfigError};
pub use error::Error;

pub mod context;
pub mod net;
pub mod proto;
pub mod stack;

pub use context::{init, Context, EpollOp, InitError, Mtcp, Shutdown, SockOpt, SockOptName};
pub use event::{EpollEvent, Events};
pub use proto::Fd;
