//! # event — epoll-like readiness for mtcp-rs sockets
//!
//! Place in the layers: `mtcp-api` feeds socket state changes from `tcp-core` into this crate
//! and applications read them back through `epoll_wait`. It depends on no other crate of the
//! workspace and performs no I/O.
//!
//! What it will hold (issue "event + mtcp-api"): interest sets with IN/OUT/ERR/HUP/RDHUP/PRI
//! masks, level-triggered, edge-triggered and one-shot registrations, a ready list, and
//! flow-level aggregation (several state changes of one socket within one stack pass become a
//! single event carrying the union of flags).
//!
//! What it leaves to others: sockets and threads (`mtcp-api`), the protocol (`tcp-core`).
#![forbid(unsafe_code)]
