//! `netmap` backend (placeholder while being written).

use crate::error::{Error, Result};
use crate::{PortConfig, QueueIo};

pub(crate) fn open(_name: &str, _config: &PortConfig) -> Result<Vec<Box<dyn QueueIo>>> {
    Err(Error::NetmapMissing)
}
