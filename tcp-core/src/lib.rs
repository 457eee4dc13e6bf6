//! # tcp-core — the TCP/IPv4 protocol engine of mtcp-rs, with no I/O
//!
//! Place in the layers: `mtcp-api` drives one `Endpoint` of this crate per core; this crate
//! depends on no other crate of the workspace, performs no I/O, reads no clock and draws no
//! randomness. Frames come in through `handle_frame(now, bytes)`, time through
//! `handle_timeout(now)`; frames leave through `poll_transmit(now, buf)` into a caller's
//! buffer (a psio TX slot), and readiness through `poll_event()`.
//!
//! What it will hold (see issue "tcp-core" and `DESIGN.md`): the RFC 9293 state machine,
//! MSS/window scaling/timestamps/SACK, NewReno congestion control, RFC 6298 retransmission
//! timers, delayed ACK and Nagle, keepalive, TIME_WAIT, RFC 5961 protections, SYN cookies,
//! ARP and ICMP echo. Wire formats are parsed and emitted with `smoltcp::wire` only.
//!
//! What it deliberately leaves to others: packet I/O (`psio`), readiness delivery to
//! applications (`event`), threads, queues and sockets (`mtcp-api`).
//!
//! This foundation commit only establishes the crate and its guarantees: `no_std` (with
//! `alloc`) and no `unsafe`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

/// A point in time, in microseconds since an origin chosen by the caller.
///
/// tcp-core never reads a clock: every input carries the current `Instant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    /// Microseconds since the caller's origin.
    pub const fn micros(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Instant;

    #[test]
    fn instants_order_by_microseconds() {
        assert!(Instant(5) < Instant(7));
        assert_eq!(Instant(42).micros(), 42);
    }
}
