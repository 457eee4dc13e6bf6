//! Backends: one file each.
//!
//! Every backend provides, for each queue pair of a port, a [`QueueIo`](crate::QueueIo):
//! - `rxsync`/`txsync` that never block and hand a whole batch across;
//! - in-place frame access (`rx_frame`, `tx_buf`): no copy between the link and the user;
//! - `arm`/`disarm`: a descriptor that `poll()` reports when the queue may have become ready,
//!   so [`PortSet::select`](crate::PortSet::select) can sleep without spinning;
//! - typed errors that say what to do ([`Error`](crate::Error));
//! - no allocation per frame once open.
//!
//! `shm` is always built and needs nothing, so every test can run without root. `af_packet`
//! needs `CAP_NET_RAW`; `netmap` needs `/dev/netmap` and otherwise fails with
//! [`Error::NetmapMissing`](crate::Error::NetmapMissing).

pub mod af_packet;
pub mod affinity;
pub mod netmap;
pub mod shm;
