//! Connection states (RFC 9293 §3.3.2), socket handles, events and typed errors.

use core::fmt;

/// The eleven states of RFC 9293 §3.3.2, displayed as the RFC writes them (`SYN-SENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a connection request.
    Listen,
    /// SYN sent, waiting for a matching SYN.
    SynSent,
    /// SYN received and answered, waiting for the ACK of our SYN.
    SynReceived,
    /// Open: data flows both ways.
    Established,
    /// We closed; waiting for the ACK of our FIN or the peer's FIN.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed; waiting for our application to close.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed first and we closed after; waiting for the ACK of our FIN.
    LastAck,
    /// Both closed; waiting 2·MSL for stray segments.
    TimeWait,
}

impl State {
    /// All states, in the RFC's order.
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];

    /// The name RFC 9293 uses.
    pub const fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        }
    }

    /// A synchronized state (RFC 9293 §3.5.2): the connection's sequence numbers are agreed.
    pub const fn is_synchronized(self) -> bool {
        !matches!(
            self,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        )
    }

    /// The application can still send (our FIN not yet queued).
    pub const fn can_send(self) -> bool {
        matches!(self, State::Established | State::CloseWait)
    }

    /// The peer can still send data to us (its FIN not yet received).
    pub const fn can_receive(self) -> bool {
        matches!(
            self,
            State::SynReceived | State::Established | State::FinWait1 | State::FinWait2
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A socket of an endpoint: a slot and the generation of its occupant, so that a handle kept
/// after its connection is gone never reaches the next connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    /// Slot in the endpoint's connection table.
    pub slot: u32,
    /// Occupant generation of the slot.
    pub generation: u32,
}

/// Why a connection ended (carried by [`Event::Closed`] and readable afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both sides closed and every byte was acknowledged.
    Normal,
    /// The peer sent a valid RST.
    Reset,
    /// The peer refused the connection (RST in answer to our SYN).
    Refused,
    /// Retransmissions (of SYN, data or FIN), or keepalive probes, went unanswered.
    TimedOut,
    /// The application aborted (we sent RST).
    Aborted,
}

/// What `poll_event` reports to the layer above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A listener has a new established connection waiting in its accept queue.
    Accepted {
        /// The listening socket.
        listener: Handle,
        /// The new connection.
        conn: Handle,
    },
    /// An active open completed (SYN-SENT → ESTABLISHED).
    Connected(Handle),
    /// Data (or the peer's FIN) became readable.
    Readable(Handle),
    /// Room became available in the send buffer.
    Writable(Handle),
    /// The peer sent FIN: no more data will arrive after what is buffered.
    PeerClosed(Handle),
    /// The connection was reset by the peer.
    Reset(Handle),
    /// The connection timed out (retransmissions or keepalive).
    TimedOut(Handle),
    /// The connection reached CLOSED (after the closing handshake, a reset or a timeout).
    /// The handle stays valid, for reading what is left and for `close`, which the
    /// application must still call.
    Closed(Handle, CloseReason),
}

/// A snapshot of one connection's variables (RFC 9293 names), for tests, statistics and
/// debugging: [`Endpoint::conn_info`](crate::Endpoint::conn_info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The state.
    pub state: State,
    /// SND.UNA: oldest unacknowledged sequence number.
    pub snd_una: crate::SeqNumber,
    /// Next sequence number to send (behind `snd_max` after a retransmission timeout).
    pub snd_nxt: crate::SeqNumber,
    /// RFC 9293's SND.NXT: one past the highest sequence number sent.
    pub snd_max: crate::SeqNumber,
    /// SND.WND in bytes (scaled).
    pub snd_wnd: u32,
    /// Congestion window in bytes.
    pub cwnd: u32,
    /// Slow-start threshold in bytes.
    pub ssthresh: u32,
    /// Send MSS.
    pub smss: u16,
    /// RCV.NXT.
    pub rcv_nxt: crate::SeqNumber,
    /// Free receive buffer space (the window we can offer).
    pub rcv_wnd: u32,
    /// Bytes in the send buffer (unacknowledged or unsent).
    pub send_buffered: usize,
    /// Send buffer capacity.
    pub send_capacity: usize,
    /// Bytes received in order and not yet read.
    pub recv_buffered: usize,
    /// Receive buffer capacity.
    pub recv_capacity: usize,
    /// Timestamps in effect.
    pub timestamps: bool,
    /// SACK in effect.
    pub sack: bool,
    /// Window scaling in effect.
    pub window_scaling: bool,
    /// The peer's shift count.
    pub snd_wscale: u8,
    /// Our shift count.
    pub rcv_wscale: u8,
    /// Current retransmission timeout, backoff included.
    pub rto: crate::Duration,
    /// Smoothed RTT, once measured.
    pub srtt: Option<crate::Duration>,
}

/// Errors of socket operations: API misuse and states, never peer behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketError {
    /// The handle names no live socket (closed, or never existed).
    BadHandle,
    /// Nothing to read or no room to write right now.
    WouldBlock,
    /// The operation needs a connected socket.
    NotConnected,
    /// The local address and port are taken.
    AddrInUse,
    /// No ephemeral port is free for this destination.
    PortsExhausted,
    /// The per-core connection limit is reached.
    TooManyConnections,
    /// The destination has no route.
    NoRoute,
    /// The socket was shut down for writing (or closed) already.
    Shutdown,
    /// The connection was reset by the peer.
    ConnectionReset,
    /// The peer refused the connection.
    ConnectionRefused,
    /// The connection timed out.
    TimedOut,
    /// The operation does not apply to this socket (e.g. `send` on a listener).
    InvalidOperation,
    /// An argument is out of range.
    InvalidArgument,
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            SocketError::BadHandle => "no such socket",
            SocketError::WouldBlock => "operation would block",
            SocketError::NotConnected => "socket is not connected",
            SocketError::AddrInUse => "address already in use",
            SocketError::PortsExhausted => "no free ephemeral port for this destination",
            SocketError::TooManyConnections => "connection limit reached",
            SocketError::NoRoute => "no route to host",
            SocketError::Shutdown => "socket is shut down for writing",
            SocketError::ConnectionReset => "connection reset by peer",
            SocketError::ConnectionRefused => "connection refused",
            SocketError::TimedOut => "connection timed out",
            SocketError::InvalidOperation => "operation not valid on this socket",
            SocketError::InvalidArgument => "invalid argument",
        };
        f.write_str(s)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SocketError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn states_display_as_the_rfc_names_them() {
        assert_eq!(State::SynSent.to_string(), "SYN-SENT");
        assert_eq!(State::ALL.len(), 11);
        let synced = State::ALL.iter().filter(|s| s.is_synchronized()).count();
        assert_eq!(synced, 7);
        assert!(State::CloseWait.can_send() && !State::CloseWait.can_receive());
    }
}
