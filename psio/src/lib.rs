//! # psio — event-driven, batched, zero-copy packet I/O
//!
//! psio is the bottom layer of mtcp-rs: it moves Ethernet frames between the TCP stack and a
//! link, in batches, without copying, and lets one thread sleep until any of many queues is
//! ready ([`PortSet::select`], the equivalent of mTCP's `ps_select()`).
//!
//! ## The model (netmap's)
//! A [`Port`] has N queue pairs. Each queue is a ring of slots `{buf_idx, len, flags}` over a
//! pool of fixed-size buffers. The user owns the slots from `head` up to (not including)
//! `tail`; the other side (kernel or peer) owns the rest. `txsync`/`rxsync` hand a whole
//! batch across at once; frames are read and written in place.
//!
//! ```text
//!   TX ring                                  RX ring
//!   ┌───┬───┬───┬───┬───┬───┬───┬───┐        ┌───┬───┬───┬───┬───┬───┬───┬───┐
//!   │ s │ s │ f │ f │ f │ f │ p │ p │        │ . │ . │ r │ r │ r │ . │ . │ . │
//!   └───┴───┴───┴───┴───┴───┴───┴───┘        └───┴───┴───┴───┴───┴───┴───┴───┘
//!             ▲head           ▲tail                  ▲head       ▲tail
//!   f: free, user may fill    p: pending (pushed,    r: received, user reads them
//!   s: in flight / reserved      not yet synced)     .: owned by the other side
//! ```
//!
//! Every backend is reached through the same object-safe trait, [`QueueIo`]: `rx_frame(i)`
//! borrows the i-th received frame in place, `rx_release(n)` gives n slots back,
//! `tx_buf(i)` lends the i-th free TX buffer, `tx_push(len)` commits the next one, and
//! `rxsync`/`txsync` exchange the batch with the other side.
//!
//! ## Example
//! ```
//! use psio::{Interest, PortConfig, PortSet};
//!
//! // Two ends of an in-process link (`Port::open("shm:NAME")` links processes by name).
//! let (mut a, b) = psio::sys::shm::pair(&PortConfig::default())?;
//! let tx = a.queue(0);
//! tx.tx_buf(0)[..60].fill(0xab); // build the frame in place in a TX slot
//! tx.tx_push(60);
//! tx.txsync()?; // one sync per batch
//!
//! let mut set = PortSet::new()?;
//! let p = set.add(b);
//! let rx_only = [Interest { port: p, queue: 0, rx: true, tx: false }];
//! let outcome = set.select(&rx_only, Some(1_000_000))?;
//! assert_eq!(outcome.ready, 1);
//! let rx = set.port(p).queue(0);
//! assert_eq!(rx.rx_frame(0), &[0xab; 60][..]); // read in place
//! rx.rx_release(1);
//! # Ok::<(), psio::Error>(())
//! ```
//!
//! ## Backends (one file each under `sys/`)
//! | name | what | needs |
//! |---|---|---|
//! | `shm:NAME` | netmap-format rings in shared memory linking two endpoints (threads or processes) | nothing |
//! | `afpacket:IFNAME` | TPACKET_V3 RX ring + mmap TX ring on a Linux interface (`ring=v2`: TPACKET_V2 frame rings, no RX block timer); `q=N` queues via `PACKET_FANOUT` + classic BPF steering by TCP port | `CAP_NET_RAW` |
//! | `netmap:IFNAME[-R]`, `vale*:P` | the real netmap kernel module | `/dev/netmap` |
//!
//! A backend provides, per queue: `rxsync`/`txsync` that never block, in-place frame access,
//! and for sleeping an `arm`/`disarm` pair that returns a file descriptor to `poll()`. psio
//! adds the middleware [`Impaired`] (seeded loss, burst loss, duplication, reordering, delay,
//! corruption) and [`PcapTap`] (a capture file that tcpdump and Wireshark open); both wrap any
//! queue and are themselves queues.
//!
//! ## Port names
//! `backend:name[/option=value,...]`, e.g. `shm:demo/q=2,slots=512`, `afpacket:veth0/q=2`,
//! `netmap:eth0-1`. Options override [`PortConfig`]: `q` (queue pairs), `slots` (slots per
//! ring), `buf` (buffer bytes), `steer` (`remote` or `local` TCP port, af_packet only).
//!
//! ## What psio does not do
//! It knows nothing of IP or TCP beyond the 4 bytes of TCP ports its af_packet steering
//! program reads; it never allocates per frame in steady state; it never spins without a
//! configured busy-poll budget.

pub mod error;
pub mod hint;
pub mod impair;
pub mod pcap;
pub mod ring;
pub mod select;
pub mod sys;

mod bell;

pub use error::{Error, Result};
pub use hint::{checksum_sum, prefetch};
pub use impair::{GilbertElliott, ImpairStats, ImpairStatsHandle, Impaired, ImpairmentConfig};
pub use pcap::PcapTap;
pub use select::{Doorbell, Interest, PortSet, Ready, SelectOutcome};
pub use sys::af_packet::Steering;

use std::os::fd::RawFd;

/// What [`PortSet::select`] needs from a queue in order to sleep on it: a descriptor and the
/// `poll()` events that mean "something may have changed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitSpec {
    /// Descriptor to poll.
    pub fd: RawFd,
    /// `POLLIN`/`POLLOUT` bits to wait for.
    pub events: i16,
}

impl WaitSpec {
    /// Waits on `fd` itself: `POLLIN` for `rx`, `POLLOUT` for `tx` (backends whose descriptor
    /// reports ring readiness directly, as af_packet's and netmap's do).
    pub fn readiness(fd: RawFd, rx: bool, tx: bool) -> WaitSpec {
        let mut events = 0;
        if rx {
            events |= libc::POLLIN;
        }
        if tx {
            events |= libc::POLLOUT;
        }
        WaitSpec { fd, events }
    }
}

/// One queue pair of a port, whatever the backend: the contract every backend and every
/// middleware fulfils.
///
/// Calling order per batch: `rxsync` → `rx_frame(0..rx_available())` → `rx_release(n)`;
/// `tx_buf(0)` → fill → `tx_push(len)` (repeat while `tx_space() > 0`) → `txsync`. None of
/// these calls blocks; sleeping is [`PortSet::select`]'s job, which uses `arm`/`disarm`.
///
/// Indices out of range (`i >= rx_available()`, `i >= tx_space()`, pushing with no space or a
/// length beyond [`buf_size`](QueueIo::buf_size)) are API misuse and panic; nothing a peer
/// sends can cause a panic.
pub trait QueueIo: Send {
    /// Fetches frames that arrived since the last call and hands slots given back with
    /// [`rx_release`](QueueIo::rx_release) to the other side. Returns the number of received
    /// frames now available.
    fn rxsync(&mut self) -> Result<usize>;
    /// Received frames available without another sync.
    fn rx_available(&self) -> usize;
    /// The `i`-th available received frame, in place.
    fn rx_frame(&self, i: usize) -> &[u8];
    /// Gives the first `n` available frames back (their slots return at the next `rxsync`).
    fn rx_release(&mut self, n: usize);

    /// Publishes pushed frames to the link and reclaims slots it has finished with. Returns
    /// the number of free TX slots.
    fn txsync(&mut self) -> Result<usize>;
    /// Free TX slots available without another sync.
    fn tx_space(&self) -> usize;
    /// The whole buffer of the `i`-th free TX slot, to build a frame in place.
    fn tx_buf(&mut self, i: usize) -> &mut [u8];
    /// Commits the first free TX slot (`tx_buf(0)`) holding a frame of `len` bytes; it is
    /// sent at the next `txsync`.
    fn tx_push(&mut self, len: usize);
    /// Frames pushed but not yet accepted by the link (a full peer keeps them here).
    fn tx_pending(&self) -> usize;

    /// Bytes in each buffer: the largest frame this queue carries.
    fn buf_size(&self) -> usize;

    /// Prepares to sleep: after this, the returned descriptor becomes readable (or writable)
    /// when RX frames arrive (`rx`) or TX room frees up (`tx`). Frames pushed but not synced
    /// are the caller's business: `txsync` before sleeping, and ask for `tx` while
    /// `tx_pending() > 0` after it. `None` means the queue cannot be slept on and `select`
    /// bounds its sleep instead (1 ms) and asks again.
    fn arm(&mut self, rx: bool, tx: bool) -> Result<Option<WaitSpec>>;
    /// Undoes [`arm`](QueueIo::arm) after waking, consuming any wake-up token.
    fn disarm(&mut self);
}

/// Settings for opening a port; options in the port name override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Queue pairs (RX+TX) to open. Default 1.
    pub queues: usize,
    /// Slots per ring (shm: exact; af_packet: frames per TX ring and RX blocks scale with
    /// it). Default 1024.
    pub slots: u32,
    /// Bytes per buffer (largest frame). Default 2048.
    pub buf_size: u32,
    /// How af_packet spreads TCP flows over queues. Default: by the remote port.
    pub steering: Steering,
    /// af_packet: milliseconds after which a partly filled RX block is handed to user space
    /// (TPACKET_V3 `tp_retire_blk_tov`; 0 means the smallest, 1 ms). Default 0.
    pub rx_block_timeout_ms: u32,
    /// af_packet: the ring format (port option `ring=v3|v2`). Default
    /// [`AfpRing::Blocks`].
    pub afpacket_ring: AfpRing,
}

/// The format of an af_packet port's rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfpRing {
    /// TPACKET_V3 (`ring=v3`): the kernel packs received frames into blocks and hands a
    /// block over when it is full or its retire timer (at least 1 ms) expires. Fewest
    /// wake-ups and least memory under load; light traffic waits up to a timer period.
    #[default]
    Blocks,
    /// TPACKET_V2 (`ring=v2`): one slot per frame, each handed over (and a sleeping
    /// `select` woken) as soon as it is written. For request/response traffic.
    Frames,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            queues: 1,
            slots: 1024,
            buf_size: 2048,
            steering: Steering::RemotePort,
            rx_block_timeout_ms: 0,
            afpacket_ring: AfpRing::Blocks,
        }
    }
}

/// A parsed port name: `backend:name[/opts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortName {
    /// `shm`, `afpacket`, `netmap` or `vale...`.
    pub backend: String,
    /// Link or interface name, as the backend understands it.
    pub name: String,
    /// The configuration with the name's options applied.
    pub config: PortConfig,
}

impl PortName {
    /// Parses `name`, applying its options on top of `base`.
    pub fn parse(full: &str, base: &PortConfig) -> Result<PortName> {
        let bad = |reason: &str| Error::BadPortName {
            name: full.to_string(),
            reason: reason.to_string(),
        };
        let (backend, rest) = full.split_once(':').ok_or_else(|| bad("missing ':'"))?;
        if backend.is_empty() {
            return Err(bad("empty backend"));
        }
        let (name, opts) = match rest.split_once('/') {
            Some((n, o)) => (n, Some(o)),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("empty link or interface name"));
        }
        let mut config = base.clone();
        for opt in opts
            .into_iter()
            .flat_map(|o| o.split(','))
            .filter(|o| !o.is_empty())
        {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| bad(&format!("option {opt:?} is not key=value")))?;
            let num = |v: &str| -> Result<u32> {
                v.parse::<u32>()
                    .map_err(|_| bad(&format!("option {k}={v:?} is not a number")))
            };
            match k {
                "q" => config.queues = num(v)? as usize,
                "slots" => config.slots = num(v)?,
                "buf" => config.buf_size = num(v)?,
                "tov" => config.rx_block_timeout_ms = num(v)?,
                "ring" => {
                    config.afpacket_ring = match v {
                        "v3" => AfpRing::Blocks,
                        "v2" => AfpRing::Frames,
                        _ => return Err(bad("ring must be v3 or v2")),
                    }
                }
                "steer" => {
                    config.steering = match v {
                        "remote" => Steering::RemotePort,
                        "local" => Steering::LocalPort,
                        _ => return Err(bad("steer must be remote or local")),
                    }
                }
                _ => return Err(bad(&format!("unknown option {k:?}"))),
            }
        }
        config.validate()?;
        Ok(PortName {
            backend: backend.to_string(),
            name: name.to_string(),
            config,
        })
    }
}

impl PortConfig {
    /// Checks ranges; every backend relies on these bounds.
    pub fn validate(&self) -> Result<()> {
        if self.queues == 0 || self.queues > 64 {
            return Err(Error::InvalidConfig(format!(
                "queues = {} (must be 1..=64)",
                self.queues
            )));
        }
        if !(8..=65536).contains(&self.slots) {
            return Err(Error::InvalidConfig(format!(
                "slots = {} (must be 8..=65536)",
                self.slots
            )));
        }
        // A slot's length is a u16: the largest frame is 65535 bytes.
        if !(128..=65472).contains(&self.buf_size) || !self.buf_size.is_multiple_of(64) {
            return Err(Error::InvalidConfig(format!(
                "buf_size = {} (must be a multiple of 64 in 128..=65472)",
                self.buf_size
            )));
        }
        Ok(())
    }
}

/// An open port: N queue pairs of one backend, possibly wrapped by middleware.
pub struct Port {
    name: String,
    queues: Vec<Box<dyn QueueIo>>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("name", &self.name)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl Port {
    /// Opens a port by name with default settings: `"shm:demo"`, `"afpacket:veth0/q=2"`,
    /// `"netmap:eth0-1"`.
    pub fn open(name: &str) -> Result<Port> {
        Port::open_with(name, &PortConfig::default())
    }

    /// Opens a port by name; options in the name override `config`.
    pub fn open_with(name: &str, config: &PortConfig) -> Result<Port> {
        let parsed = PortName::parse(name, config)?;
        let queues = match parsed.backend.as_str() {
            "shm" => sys::shm::open(&parsed.name, &parsed.config)?,
            "afpacket" | "af_packet" => sys::af_packet::open(&parsed.name, &parsed.config)?,
            "netmap" => sys::netmap::open(name, &parsed.config)?,
            b if b.starts_with("vale") => sys::netmap::open(name, &parsed.config)?,
            other => {
                return Err(Error::BadPortName {
                    name: name.to_string(),
                    reason: format!(
                        "unknown backend {other:?} (known: shm, afpacket, netmap, vale*)"
                    ),
                })
            }
        };
        Ok(Port::from_queues(name, queues))
    }

    /// Builds a port from queues made elsewhere (a backend's constructor, middleware).
    pub fn from_queues(name: &str, queues: Vec<Box<dyn QueueIo>>) -> Port {
        Port {
            name: name.to_string(),
            queues,
        }
    }

    /// The name the port was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of queue pairs.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Queue pair `i` (panics if `i >= num_queues()`).
    pub fn queue(&mut self, i: usize) -> &mut dyn QueueIo {
        &mut *self.queues[i]
    }

    /// Takes the queues out of the port (to drive them one by one, or wrap some of them).
    pub fn into_queues(self) -> Vec<Box<dyn QueueIo>> {
        self.queues
    }

    /// Wraps every queue in middleware, e.g.
    /// `port.wrap(|q, i| Box::new(Impaired::new(q, cfg.clone(), seed + i as u64)))`.
    pub fn wrap(self, mut f: impl FnMut(Box<dyn QueueIo>, usize) -> Box<dyn QueueIo>) -> Port {
        let queues = self
            .queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| f(q, i))
            .collect();
        Port {
            name: self.name,
            queues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_parse_with_options() {
        let p = PortName::parse("afpacket:veth0/q=2,steer=local", &PortConfig::default()).unwrap();
        assert_eq!(p.backend, "afpacket");
        assert_eq!(p.name, "veth0");
        assert_eq!(p.config.queues, 2);
        assert_eq!(p.config.steering, Steering::LocalPort);
        let p = PortName::parse("netmap:eth0-1", &PortConfig::default()).unwrap();
        assert_eq!((p.backend.as_str(), p.name.as_str()), ("netmap", "eth0-1"));
    }

    #[test]
    fn bad_port_names_say_why() {
        for bad in [
            "shm",
            ":x",
            "shm:",
            "shm:x/q",
            "shm:x/q=a",
            "shm:x/zz=1",
            "shm:x/q=0",
        ] {
            let e = PortName::parse(bad, &PortConfig::default()).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
        let e = Port::open("carrier-pigeon:x").unwrap_err().to_string();
        assert!(e.contains("unknown backend"), "{e}");
    }
}
