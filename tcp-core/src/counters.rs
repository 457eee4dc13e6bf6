//! Per-endpoint counters, readable as one struct.

/// What an endpoint has seen and done. Every drop has a reason counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames handed to `handle_frame`.
    pub frames_in: u64,
    /// Frames produced by `poll_transmit`.
    pub frames_out: u64,
    /// TCP segments accepted for processing.
    pub segments_in: u64,
    /// TCP segments sent (including retransmissions).
    pub segments_out: u64,
    /// Segments retransmitted (RTO, fast retransmit, SACK recovery).
    pub retransmits: u64,
    /// Fast retransmits (loss recovery entered on duplicate ACKs).
    pub fast_retransmits: u64,
    /// Connections opened (active and passive, including from SYN cookies).
    pub connections_opened: u64,
    /// Connections reset by the application (`abort`, `close` with unread data, or a
    /// handshake that completed after its listener was closed).
    pub aborts: u64,
    /// Frames dropped for a bad IPv4, TCP or ICMP checksum.
    pub bad_checksum: u64,
    /// Frames dropped as truncated or malformed.
    pub malformed: u64,
    /// Frames not for us (other MAC/IP, unsupported protocol, IPv4 fragments).
    pub not_for_us: u64,
    /// Segments dropped as outside the receive window or failing PAWS.
    pub out_of_window: u64,
    /// RSTs sent.
    pub rst_sent: u64,
    /// RSTs received and accepted.
    pub rst_received: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Challenge ACKs suppressed by the rate limit.
    pub challenge_acks_limited: u64,
    /// SYNs dropped or answered with a cookie because a SYN queue was full.
    pub syn_queue_full: u64,
    /// SYN cookies sent.
    pub syn_cookies_sent: u64,
    /// Connections established from a valid SYN cookie.
    pub syn_cookies_accepted: u64,
    /// Connections dropped because an accept queue was full.
    pub accept_queue_full: u64,
    /// Connections refused because the connection table was full.
    pub table_full: u64,
    /// Out-of-order segments dropped because the reassembly bound was reached.
    pub reassembly_dropped: u64,
    /// Frames dropped waiting for ARP (queue bound or timeout).
    pub arp_dropped: u64,
    /// Control frames (ARP, RST, ICMP replies) dropped instead of sent: the control queue was
    /// full, the echo payload pool was full or the payload too long for the MTU, or the buffer
    /// given to `poll_transmit` was too small for the frame.
    pub control_dropped: u64,
    /// ICMP echo requests answered.
    pub icmp_echo_replies: u64,
    /// ICMP Destination Unreachable / Time Exceeded messages quoting a TCP segment.
    pub icmp_errors: u64,
    /// Segments with SYN and FIN dropped in LISTEN or SYN-SENT
    /// ([`TcpConfig::drop_syn_fin`](crate::config::TcpConfig::drop_syn_fin)).
    pub syn_fin_dropped: u64,
    /// Connections that timed out.
    pub timeouts: u64,
}
