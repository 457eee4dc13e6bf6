//! pcap tap (placeholder while being written).

/// A queue whose frames are also written to a pcap file.
pub struct PcapTap {}
