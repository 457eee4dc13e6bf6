//! `af_packet` backend (placeholder while being written).

use crate::error::Result;
use crate::{PortConfig, QueueIo};

/// Which TCP port decides the queue a frame lands on (af_packet fanout steering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// The remote peer's port: a server's flows spread by client port.
    RemotePort,
    /// Our own port: a client picks a local port per queue.
    LocalPort,
}

pub(crate) fn open(_ifname: &str, _config: &PortConfig) -> Result<Vec<Box<dyn QueueIo>>> {
    todo!()
}
