//! `af_packet` backend: a Linux interface through `AF_PACKET` sockets with mmap'd rings.
//!
//! Port name `afpacket:IFNAME[/q=N,slots=S,buf=B,tov=MS,steer=remote|local]`. Needs
//! `CAP_NET_RAW` in the interface's network namespace. Each queue pair is one packet socket
//! bound to the interface, with a TPACKET_V3 RX ring and a TPACKET_V3 TX frame ring in one
//! mapping; nothing is copied between the kernel's rings and the user (frames are read and
//! built in place).
//!
//! ## The mapping of one queue
//! ```text
//!  RX ring: `rx_blocks` blocks of `rx_block` bytes (kernel fills one block at a time)
//!  ┌──────────────────────────┬──────────────────────────┬─────┬──────────────────────────┐
//!  │desc│hdr|frame│hdr|frame│…│desc│hdr|frame│…          │  …  │desc│ (being filled)      │
//!  └──────────────────────────┴──────────────────────────┴─────┴──────────────────────────┘
//!    block 0: USER (ours)       block 1: USER (ours)             block k: KERNEL
//!    ▲ held until every frame of the block is released, then given back (TP_STATUS_KERNEL)
//!
//!  TX ring: `tx_frames` frames of `tx_frame` bytes (tpacket3_hdr, virtio_net_hdr, frame)
//!  ┌─────┬─────┬─────┬─────┬─────┬─────┬─────┬─────┐
//!  │ f   │ s   │ s   │ s   │ p   │ p   │ f   │ f   │   f: free (AVAILABLE), ours to fill
//!  └─────┴─────┴─────┴─────┴─────┴─────┴─────┴─────┘   p: pushed (SEND_REQUEST), not kicked
//!        ▲reclaim          ▲kick       ▲push             s: taken by the kernel (SENDING)
//! ```
//! (The TX cursors move left to right and wrap: free frames run from `push` round to
//! `reclaim`; `tx_pending()` counts `p`, and `tx_space()` counts `f`.)
//!
//! ## Ring formats
//! By default (`ring=v3`) both rings are TPACKET_V3, described below. With `ring=v2`
//! ([`AfpRing::Frames`](crate::AfpRing)) they are TPACKET_V2: the RX ring is a ring of frame
//! slots (frame slots never cross a block), each handed to user space — and a sleeping
//! `poll()` woken — as soon as the kernel has written it, with no retire timer; `rxsync`
//! indexes slot after slot into the same frame index (a slot is a "block" of one frame for
//! the release logic) and gives each slot back once its frame is released. The TX ring is
//! the same frame ring with `tpacket2_hdr` headers (32 bytes instead of 48). Request/response
//! traffic wants `ring=v2`: with V3 a lone frame waits for the 1 ms timer.
//!
//! ## RX: blocks → a reusable index of frames
//! TPACKET_V3 hands a whole block to user space when the block is full or when its retire
//! timer (`tp_retire_blk_tov`, from [`PortConfig::rx_block_timeout_ms`], at least 1 ms)
//! expires; the kernel's default of about 8 ms would ruin request/response latency, so the
//! timer is always set low. `rxsync` looks at the status of the block at its cursor every
//! time it is called — the block that was "current" when we last looked — so a block retired
//! by the timer is picked up by the next sync or the next wake-up from `poll()`, which the
//! kernel signals on every retire. Frames still sitting in the block the kernel is filling are
//! therefore delivered at most about one timer period later, never missed. (Reading a block
//! before it is retired is not safe: the kernel counts a frame before copying it.)
//!
//! `rxsync` walks every retired block from the cursor and records `(offset, length)` of each
//! frame in a fixed, preallocated index (a power-of-two ring of
//! `frames-per-block × held-blocks` entries), so `rx_frame(i)` is one array access and no
//! allocation happens per frame or per batch. Every header the kernel wrote is validated
//! against the bounds of its block (`tp_next_offset`, `tp_mac`, `tp_snaplen`); a malformed
//! block is cut short, never trusted. Frames truncated by the ring (`tp_snaplen < tp_len`) and
//! frames this host sent (`PACKET_OUTGOING`) are skipped. `rx_release(n)` advances the
//! release count and gives each block whose frames are all released back to the kernel.
//!
//! ## TX: frame ring, one kick per batch
//! `tx_buf(i)` is the data area of the `i`-th free frame; `tx_push(len)` writes `tp_len` and
//! sets `TP_STATUS_SEND_REQUEST`; `txsync` issues one `sendto(fd, NULL, 0, MSG_DONTWAIT)` if
//! anything is pending, then reclaims frames the kernel has finished with (`AVAILABLE`).
//! `PACKET_QDISC_BYPASS` is on (frames skip the egress qdisc and its hooks), `PACKET_LOSS` is
//! on (a malformed frame is dropped instead of stalling the ring), and `PACKET_IGNORE_OUTGOING`
//! keeps a socket from receiving what it (or anyone on this host) transmits on the interface.
//! A TX buffer is never larger than the interface's MTU plus the Ethernet header (read with
//! `SIOCGIFMTU` at open; `buf_size()` reports it): the kernel would drop a longer frame
//! without a word, so the layer above learns the limit instead (mtcp-api refuses an MSS that
//! does not fit).
//!
//! `PACKET_VNET_HDR` is on too, and each TX frame is preceded by a `virtio_net_hdr` that
//! requests no offload and sets `hdr_len` to the frame's length. Without it the kernel builds
//! each skb from the ring's page as a zero-copy fragment, which every tap and every veth then
//! copies into a freshly allocated page (`skb_copy_ubufs`); with it the kernel copies the
//! frame into the skb head once, and the page allocation disappears from the per-frame path.
//! On RX, the same option makes the kernel write a `virtio_net_hdr` before each frame; frames
//! are located by `tp_mac`, so it is simply skipped.
//!
//! ## Several queues: `PACKET_FANOUT_CBPF` steering by TCP port
//! With `q=N > 1`, the N sockets join one fanout group (a unique group id per port, assigned
//! by the kernel through `PACKET_FANOUT_FLAG_UNIQUEID`) of type `PACKET_FANOUT_CBPF`, and a
//! classic-BPF program ([`steering_program`]) picks the socket — the queue — for every frame
//! received. The exact rule, also computed by [`queue_for_frame`]:
//!
//! 1. The frame is IPv4 (EtherType `0x0800`), its IPv4 protocol is TCP (6), it is not a
//!    fragment (`MF` clear and fragment offset 0), its IHL is at least 5, and the 4 bytes of
//!    TCP ports lie inside the frame. Otherwise the frame goes to **queue 0** (ARP, IPv6,
//!    UDP, ICMP, fragments, runts).
//! 2. Its port is the TCP **source** port with [`Steering::RemotePort`] (a server spreads its
//!    clients) or the TCP **destination** port with [`Steering::LocalPort`] (a client picks a
//!    local port per queue).
//! 3. The queue is `port % N`.
//!
//! Frames the kernel received with an 802.1Q tag have the tag removed before steering and
//! are delivered without it, so the rule applies to the untagged frame the ring delivers.
//!
//! ## What this backend does not do
//! It does not set addresses, MTU or offloads on the interface (run
//! `ethtool -K DEV tx off tso off gso off` on a kernel-side veth peer, or frames arrive as
//! GSO super-frames with partial checksums); it does not see frames the kernel's own stack
//! sends on the interface; and it cannot sleep shorter than the retire timer when traffic is
//! light.

use crate::bell::syscall;
use crate::error::{Error, Result};
use crate::{AfpRing, PortConfig, QueueIo, WaitSpec};
use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Which TCP port decides the queue a frame lands on (af_packet fanout steering).
///
/// See the [module documentation](self) for the whole rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// The remote peer's port (the received frame's TCP source port): a server's flows spread
    /// by client port.
    RemotePort,
    /// Our own port (the received frame's TCP destination port): a client picks a local port
    /// per queue.
    LocalPort,
}

impl Steering {
    /// Offset of the steering port within the TCP header.
    fn tcp_offset(self) -> u32 {
        match self {
            Steering::RemotePort => 0,
            Steering::LocalPort => 2,
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETH_HLEN: usize = 14;
const IPPROTO_TCP: u8 = 6;
/// `MF` flag and fragment offset bits of the IPv4 flags/fragment word.
const IP_FRAG_MASK: u16 = 0x3fff;

/// The queue (of `n`) that the fanout program steers a received Ethernet frame to.
///
/// `frame` starts with the Ethernet header, as [`QueueIo::rx_frame`] delivers it. IPv4/TCP
/// frames that are not fragments go to `port % n`, where `port` is the TCP source port
/// ([`Steering::RemotePort`]) or destination port ([`Steering::LocalPort`]); everything else
/// — and every frame too short to hold what the rule reads — goes to queue 0, as does every
/// frame when `n` is 0 or 1. Never panics.
pub fn queue_for_frame(frame: &[u8], n: usize, steering: Steering) -> usize {
    if n <= 1 {
        return 0;
    }
    let be16 = |b: &[u8], at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    };
    let port = (|| -> Option<u16> {
        if be16(frame, 12)? != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = frame.get(ETH_HLEN..)?;
        if *ip.get(9)? != IPPROTO_TCP || be16(ip, 6)? & IP_FRAG_MASK != 0 {
            return None;
        }
        let ihl = usize::from(*ip.first()? & 0x0f);
        if ihl < 5 {
            return None;
        }
        be16(ip, ihl * 4 + steering.tcp_offset() as usize)
    })();
    port.map_or(0, |p| queue_for_port(p, n))
}

/// The queue (of `n`) that TCP frames whose steering port is `port` land on: `port % n`
/// (0 when `n` is 0). A client using [`Steering::LocalPort`] picks local ports with this.
pub fn queue_for_port(port: u16, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        usize::from(port) % n
    }
}

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The classic-BPF fanout program implementing the steering rule for `n` queues.
///
/// It runs on received frames with the packet data starting at the IPv4 header (the kernel
/// has already pulled the Ethernet header) and reads the EtherType through the
/// `SKF_AD_PROTOCOL` extension. Its return value is the index of the socket in the fanout
/// group, which is the queue number. A load beyond the end of the frame ends a classic-BPF
/// program with 0, which is queue 0, as [`queue_for_frame`] says.
pub fn steering_program(n: u32, steering: Steering) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JMP,
        BPF_JSET, BPF_K, BPF_LD, BPF_LSH, BPF_MISC, BPF_MOD, BPF_RET, BPF_TAX, BPF_W,
    };
    const ZERO: u8 = 14; // index of `ret #0`
                         // Relative jump from instruction `at` to `ZERO`.
    const fn to_zero(at: u8) -> u8 {
        ZERO - at - 1
    }
    let protocol = (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32;
    vec![
        /* 0 */ stmt(BPF_LD | BPF_W | BPF_ABS, protocol),
        /* 1 */
        jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(ETHERTYPE_IPV4),
            0,
            to_zero(1),
        ),
        /* 2 */ stmt(BPF_LD | BPF_B | BPF_ABS, 9),
        /* 3 */
        jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(IPPROTO_TCP),
            0,
            to_zero(3),
        ),
        /* 4 */ stmt(BPF_LD | BPF_H | BPF_ABS, 6),
        /* 5 */
        jump(
            BPF_JMP | BPF_JSET | BPF_K,
            u32::from(IP_FRAG_MASK),
            to_zero(5),
            0,
        ),
        /* 6 */ stmt(BPF_LD | BPF_B | BPF_ABS, 0),
        /* 7 */ stmt(BPF_ALU | BPF_AND | BPF_K, 0x0f),
        /* 8 */ jump(BPF_JMP | BPF_JGE | BPF_K, 5, 0, to_zero(8)),
        /* 9 */ stmt(BPF_ALU | BPF_LSH | BPF_K, 2),
        /* 10 */ stmt(BPF_MISC | BPF_TAX, 0),
        /* 11 */ stmt(BPF_LD | BPF_H | BPF_IND, steering.tcp_offset()),
        /* 12 */ stmt(BPF_ALU | BPF_MOD | BPF_K, n.max(1)),
        /* 13 */ stmt(BPF_RET | BPF_A, 0),
        /* 14 */ stmt(BPF_RET | BPF_K, 0),
    ]
}

// ---------------------------------------------------------------------------------------
// Ring geometry

/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where frame data starts in a TX frame and
/// where the `sockaddr_ll` sits in an RX frame.
const TP3_HDR: usize = 48;
const _: () = assert!(size_of::<libc::tpacket3_hdr>() == TP3_HDR);
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: the same for the frame ring (`ring=v2`).
const TP2_HDR: usize = 32;
const _: () = assert!(size_of::<libc::tpacket2_hdr>() == TP2_HDR);
/// Offsets within a TPACKET_V2 frame header (`struct tpacket2_hdr`).
const H2_STATUS: usize = offset_of!(libc::tpacket2_hdr, tp_status);
const H2_LEN: usize = offset_of!(libc::tpacket2_hdr, tp_len);
const H2_SNAPLEN: usize = offset_of!(libc::tpacket2_hdr, tp_snaplen);
const H2_MAC: usize = offset_of!(libc::tpacket2_hdr, tp_mac);
/// `sll_pkttype` within the `sockaddr_ll` that follows a TPACKET_V2 RX frame header.
const SLL2_PKTTYPE: usize = TP2_HDR + offset_of!(libc::sockaddr_ll, sll_pkttype);
/// `BLK_PLUS_PRIV(0)`: the block descriptor, before the first frame of an RX block.
const BLOCK_DESC: usize = 48;
const _: () = assert!(size_of::<libc::tpacket_block_desc>() == BLOCK_DESC);
/// Room an RX frame needs beyond its bytes: header, `sockaddr_ll`, alignment.
const RX_FRAME_OVERHEAD: usize = 256;
/// Fewest bytes one RX frame occupies in a block (header + `sockaddr_ll` + 14-byte frame,
/// aligned); bounds the frames a block can hold.
const MIN_RX_FOOTPRINT: usize = 80;
const MIN_BLOCK: usize = 64 * 1024;
const MIN_RX_BLOCKS: usize = 4;
/// Upper bound of each ring's memory.
const MAX_RING_BYTES: usize = 256 << 20;
/// Retired RX blocks indexed at once, at most (bounds the index).
const MAX_HELD_BLOCKS: usize = 64;

/// Offsets within an RX block descriptor (`struct tpacket_block_desc`).
const BLOCK_STATUS: usize =
    offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, block_status);
const BLOCK_NUM_PKTS: usize =
    offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, num_pkts);
const BLOCK_FIRST_PKT: usize = offset_of!(libc::tpacket_block_desc, hdr)
    + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);
/// Offsets within a frame header (`struct tpacket3_hdr`).
const H_NEXT: usize = offset_of!(libc::tpacket3_hdr, tp_next_offset);
const H_SNAPLEN: usize = offset_of!(libc::tpacket3_hdr, tp_snaplen);
const H_LEN: usize = offset_of!(libc::tpacket3_hdr, tp_len);
const H_STATUS: usize = offset_of!(libc::tpacket3_hdr, tp_status);
const H_MAC: usize = offset_of!(libc::tpacket3_hdr, tp_mac);
/// `sll_pkttype` within the `sockaddr_ll` that follows an RX frame header.
const SLL_PKTTYPE: usize = TP3_HDR + offset_of!(libc::sockaddr_ll, sll_pkttype);
/// `struct virtio_net_hdr` (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset),
/// which precedes each TX frame when `PACKET_VNET_HDR` is on.
const VNET_HDR: usize = 10;
/// `hdr_len` within it (little-endian on the architectures Linux runs virtio on).
const VNET_HDR_LEN: usize = 2;

/// TX status bits we act on (the high bits are timestamp flags).
const TX_STATUS_MASK: u32 =
    libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING | libc::TP_STATUS_WRONG_FORMAT;

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Sizes of one queue's rings, derived from a [`PortConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    ring: AfpRing,
    /// Bytes of the TX frame header (`tpacket3_hdr` or `tpacket2_hdr`, aligned).
    tx_hdr: usize,
    buf_size: usize,
    rx_block: usize,
    rx_blocks: usize,
    /// `tp_frame_size` of the RX request (TPACKET_V3 packs frames; this only sizes the
    /// request).
    rx_frame: usize,
    tov_ms: u32,
    tx_block: usize,
    tx_blocks: usize,
    tx_frame: usize,
    tx_per_block: usize,
    /// Frames one RX unit (a block; a frame slot with `ring=v2`) can hold at most.
    per_block_cap: usize,
    /// RX units (blocks, or frame slots with `ring=v2`) indexed at once at most.
    held_max: usize,
    /// RX units in the ring: blocks, or frame slots with `ring=v2`.
    rx_units: usize,
    /// Entries of the RX frame index (a power of two ≥ `per_block_cap × held_max`).
    index_cap: usize,
}

impl Geometry {
    fn new(c: &PortConfig) -> Geometry {
        let buf_size = c.buf_size as usize;
        let slots = c.slots as usize;
        let rx_block = (buf_size + RX_FRAME_OVERHEAD)
            .next_power_of_two()
            .max(MIN_BLOCK);
        let rx_blocks = (slots * buf_size)
            .div_ceil(rx_block)
            .clamp(MIN_RX_BLOCKS, MAX_RING_BYTES / rx_block);
        let rx_frame = round_up(buf_size + RX_FRAME_OVERHEAD, libc::TPACKET_ALIGNMENT);
        let ring = c.afpacket_ring;
        let tx_hdr = match ring {
            AfpRing::Blocks => TP3_HDR,
            AfpRing::Frames => TP2_HDR,
        };
        let tx_frame = round_up(tx_hdr + VNET_HDR + buf_size, libc::TPACKET_ALIGNMENT);
        let tx_block = tx_frame.next_power_of_two().max(MIN_BLOCK);
        let tx_per_block = tx_block / tx_frame;
        let tx_blocks = slots
            .div_ceil(tx_per_block)
            .clamp(1, MAX_RING_BYTES / tx_block);
        let (per_block_cap, rx_units, held_max) = match ring {
            AfpRing::Blocks => (
                (rx_block - BLOCK_DESC) / MIN_RX_FOOTPRINT,
                rx_blocks,
                rx_blocks.min(MAX_HELD_BLOCKS),
            ),
            AfpRing::Frames => {
                let frames = rx_blocks * (rx_block / rx_frame);
                (1, frames, frames)
            }
        };
        Geometry {
            ring,
            tx_hdr,
            buf_size,
            rx_block,
            rx_blocks,
            rx_frame,
            tov_ms: c.rx_block_timeout_ms.max(1),
            tx_block,
            tx_blocks,
            tx_frame,
            tx_per_block,
            per_block_cap,
            held_max,
            rx_units,
            index_cap: (per_block_cap * held_max).next_power_of_two(),
        }
    }

    fn rx_len(&self) -> usize {
        self.rx_block * self.rx_blocks
    }

    fn tx_frames(&self) -> usize {
        self.tx_per_block * self.tx_blocks
    }

    fn map_len(&self) -> usize {
        self.rx_len() + self.tx_block * self.tx_blocks
    }

    /// Offset in the mapping of RX unit `u`: block `u`, or frame slot `u` with `ring=v2`
    /// (frame slots never cross a block).
    fn rx_unit_offset(&self, u: usize) -> usize {
        match self.ring {
            AfpRing::Blocks => u * self.rx_block,
            AfpRing::Frames => {
                let per_block = self.rx_block / self.rx_frame;
                (u / per_block) * self.rx_block + (u % per_block) * self.rx_frame
            }
        }
    }

    /// Offset in the mapping of RX unit `u`'s status word.
    fn rx_status_offset(&self, u: usize) -> usize {
        self.rx_unit_offset(u)
            + match self.ring {
                AfpRing::Blocks => BLOCK_STATUS,
                AfpRing::Frames => H2_STATUS,
            }
    }

    /// Offset in the mapping of TX frame `i`'s status word.
    fn tx_status_offset(&self, i: usize) -> usize {
        self.tx_frame_offset(i)
            + match self.ring {
                AfpRing::Blocks => H_STATUS,
                AfpRing::Frames => H2_STATUS,
            }
    }

    /// Offset in the mapping of TX frame `i` (its frame header).
    fn tx_frame_offset(&self, i: usize) -> usize {
        self.rx_len()
            + (i / self.tx_per_block) * self.tx_block
            + (i % self.tx_per_block) * self.tx_frame
    }

    fn rx_req(&self) -> libc::tpacket_req3 {
        let per_block = self.rx_block / self.rx_frame;
        libc::tpacket_req3 {
            tp_block_size: self.rx_block as u32,
            tp_block_nr: self.rx_blocks as u32,
            tp_frame_size: self.rx_frame as u32,
            tp_frame_nr: (per_block * self.rx_blocks) as u32,
            // (TPACKET_V2 reads only the first four fields.)
            tp_retire_blk_tov: self.tov_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        }
    }

    fn tx_req(&self) -> libc::tpacket_req3 {
        // The TPACKET_V3 TX ring is a frame ring: the block-only fields must be zero.
        libc::tpacket_req3 {
            tp_block_size: self.tx_block as u32,
            tp_block_nr: self.tx_blocks as u32,
            tp_frame_size: self.tx_frame as u32,
            tp_frame_nr: self.tx_frames() as u32,
            tp_retire_blk_tov: 0,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing retired RX blocks (safe code over a byte slice: every read is bounds-checked)

/// Where one received frame is in the mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FrameRef {
    off: u32,
    len: u32,
}

/// What [`scan_block`] found in one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BlockScan {
    /// Frames indexed.
    frames: usize,
    /// Frames skipped: truncated by the ring, empty, or malformed headers.
    skipped: usize,
    /// Frames skipped because this host sent them (`PACKET_OUTGOING`).
    outgoing: usize,
}

fn rd_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn rd_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Indexes the frames of one retired block: `block` is its memory, `base` its offset in the
/// mapping; at most `cap` frames are passed to `push`. Headers are validated against the
/// block's bounds, so any content — garbage included — yields in-bounds frames or none.
fn scan_block(block: &[u8], base: usize, cap: usize, mut push: impl FnMut(FrameRef)) -> BlockScan {
    let mut scan = BlockScan::default();
    let (Some(num), Some(first)) = (
        rd_u32(block, BLOCK_NUM_PKTS),
        rd_u32(block, BLOCK_FIRST_PKT),
    ) else {
        return scan;
    };
    let num = num as usize;
    let mut off = first as usize;
    if off < BLOCK_DESC {
        scan.skipped = num;
        return scan;
    }
    for k in 0..num {
        let hdr = (|| {
            Some((
                rd_u32(block, off + H_NEXT)?,
                rd_u32(block, off + H_SNAPLEN)? as usize,
                rd_u32(block, off + H_LEN)? as usize,
                rd_u16(block, off + H_MAC)? as usize,
                *block.get(off + SLL_PKTTYPE)?,
            ))
        })();
        let Some((next, snaplen, len, mac, pkttype)) = hdr else {
            scan.skipped += num - k;
            break;
        };
        let start = off + mac;
        let in_bounds =
            mac >= TP3_HDR && start.checked_add(snaplen).is_some_and(|e| e <= block.len());
        if scan.frames >= cap {
            scan.skipped += num - k;
            break;
        } else if !in_bounds || snaplen == 0 || snaplen < len {
            scan.skipped += 1;
        } else if pkttype == libc::PACKET_OUTGOING {
            scan.outgoing += 1;
        } else {
            push(FrameRef {
                off: (base + start) as u32,
                len: snaplen as u32,
            });
            scan.frames += 1;
        }
        if k + 1 < num {
            let next = next as usize;
            if next == 0 || off + next + TP3_HDR > block.len() {
                scan.skipped += num - k - 1;
                break;
            }
            off += next;
        }
    }
    scan
}

/// What [`scan_frame`] found in one TPACKET_V2 frame slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotScan {
    /// A frame to deliver.
    Frame(FrameRef),
    /// Truncated by the ring, empty, or a malformed header.
    Skipped,
    /// Sent by this host (`PACKET_OUTGOING`).
    Outgoing,
}

/// Reads the frame of one TPACKET_V2 RX slot (`slot` is its memory, `base` its offset in the
/// mapping). The header is validated against the slot's bounds: any content yields an
/// in-bounds frame or none.
fn scan_frame(slot: &[u8], base: usize) -> SlotScan {
    let hdr = (|| {
        Some((
            rd_u32(slot, H2_SNAPLEN)? as usize,
            rd_u32(slot, H2_LEN)? as usize,
            rd_u16(slot, H2_MAC)? as usize,
            *slot.get(SLL2_PKTTYPE)?,
        ))
    })();
    let Some((snaplen, len, mac, pkttype)) = hdr else {
        return SlotScan::Skipped;
    };
    let in_bounds = mac >= TP2_HDR && mac.checked_add(snaplen).is_some_and(|e| e <= slot.len());
    if !in_bounds || snaplen == 0 || snaplen < len {
        SlotScan::Skipped
    } else if pkttype == libc::PACKET_OUTGOING {
        SlotScan::Outgoing
    } else {
        SlotScan::Frame(FrameRef {
            off: (base + mac) as u32,
            len: snaplen as u32,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The OS side

/// An `mmap` of a packet socket's rings, unmapped on drop.
struct Ring {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by one queue and only touched through it; it holds no
// thread-affine state, so moving it to another thread is sound.
unsafe impl Send for Ring {}

impl Ring {
    fn map(fd: RawFd, len: usize) -> Result<Ring> {
        // SAFETY: a fresh shared mapping of the socket's rings; the kernel checks that `len`
        // equals the rings' size. No existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os("mmap of the AF_PACKET rings"));
        }
        Ok(Ring { ptr: p.cast(), len })
    }

    /// The 32-bit status word at `off` (a block or frame status the kernel also writes).
    fn status(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.len,
            "status offset {off} outside the ring"
        );
        // SAFETY: in bounds and 4-aligned (checked above; the mapping is page aligned); the
        // word stays mapped as long as `self`; the kernel accesses it atomically too.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no reference into the
        // mapping outlives the queue that owns this Ring.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn setopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the given size for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn packet_opt<T>(fd: RawFd, name: libc::c_int, value: &T, context: &'static str) -> Result<()> {
    setopt(fd, libc::SOL_PACKET, name, value).map_err(|e| Error::io(context, e))
}

/// Maps a failed `socket(AF_PACKET)` to an error that says what to do.
fn socket_error(e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Error::PermissionDenied {
            what: "AF_PACKET needs CAP_NET_RAW",
            hint: "run as root",
        },
        _ => Error::io("socket(AF_PACKET, SOCK_RAW)", e),
    }
}

/// The interface index of `name` in this network namespace.
fn interface_index(name: &str) -> Result<u32> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(Error::NoSuchInterface(name.to_string()));
    }
    let c = CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx != 0 {
        return Ok(idx);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::EINVAL) | None | Some(0) => {
            Err(Error::NoSuchInterface(name.to_string()))
        }
        _ => Err(Error::io("if_nametoindex", e)),
    }
}

/// Bytes of an Ethernet header (no VLAN tag): what a frame adds to the interface's MTU.
const ETH_HEADER: usize = 14;

/// The MTU of interface `name` (`SIOCGIFMTU` on `fd`, any socket of the namespace). The
/// kernel drops a TX ring frame longer than the MTU plus the link header (with
/// `PACKET_LOSS`, silently: the connection that sent it would stall), so the queue never
/// offers more room than that.
fn interface_mtu(fd: RawFd, name: &str) -> Result<usize> {
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(Error::NoSuchInterface(name.to_string()));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the NUL-terminated name of `req` and writes `ifru_mtu`; `req`
    // outlives the call.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    if r == -1 {
        return Err(Error::io(
            "reading the MTU (SIOCGIFMTU)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel filled the `ifru_mtu` member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(usize::try_from(mtu).unwrap_or(0))
}

/// Counters of one queue (shown by `Debug`).
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    rx_frames: u64,
    rx_skipped: u64,
    rx_outgoing: u64,
    tx_frames: u64,
    tx_kicks: u64,
    tx_kick_retries: u64,
    tx_wrong_format: u64,
}

/// A block indexed and not yet given back: its number and the index count after its frames.
#[derive(Debug, Clone, Copy)]
struct Held {
    block: usize,
    end: u64,
}

/// One queue pair: a packet socket with its mapped rings.
struct AfpQueue {
    // Declared before `fd`: the rings are unmapped before the socket closes.
    ring: Ring,
    fd: OwnedFd,
    ifname: String,
    queue: usize,
    g: Geometry,
    // RX
    /// Next block to look at.
    rx_next: usize,
    /// Blocks indexed and not yet given back, oldest first (capacity `held_max`).
    held: VecDeque<Held>,
    /// Ring of indexed frames; entry `k & mask` is the `k`-th frame indexed.
    index: Box<[FrameRef]>,
    indexed: u64,
    released: u64,
    // TX
    tx_next_push: usize,
    tx_next_kick: usize,
    tx_next_reclaim: usize,
    tx_pending: usize,
    tx_in_flight: usize,
    /// Offset of a frame's bytes within its TX slot: after the tpacket3_hdr, and after a
    /// virtio_net_hdr when `PACKET_VNET_HDR` is on.
    tx_data: usize,
    /// The largest frame the interface sends: its MTU plus the Ethernet header, at most the
    /// buffer size. What `buf_size` reports, `tx_buf` hands out and `tx_push` accepts.
    frame_max: usize,
    stats: Stats,
}

impl std::fmt::Debug for AfpQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfpQueue")
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("fd", &self.fd.as_raw_fd())
            .field("geometry", &self.g)
            .field("rx_available", &self.rx_available())
            .field("tx_space", &self.tx_space())
            .field("tx_pending", &self.tx_pending)
            .field("stats", &self.stats)
            .finish()
    }
}

impl AfpQueue {
    /// Opens one packet socket on `ifindex` with both rings mapped, bound and receiving.
    fn open(ifname: &str, ifindex: u32, queue: usize, g: &Geometry) -> Result<AfpQueue> {
        // Protocol 0: the socket receives nothing until it is bound with ETH_P_ALL below,
        // after its rings exist.
        // SAFETY: plain system call with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd == -1 {
            return Err(socket_error(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by socket and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let (version, what) = match g.ring {
            AfpRing::Blocks => (
                libc::tpacket_versions::TPACKET_V3,
                "setting PACKET_VERSION to TPACKET_V3",
            ),
            AfpRing::Frames => (
                libc::tpacket_versions::TPACKET_V2,
                "setting PACKET_VERSION to TPACKET_V2",
            ),
        };
        packet_opt(raw, libc::PACKET_VERSION, &(version as libc::c_int), what)?;
        let one: libc::c_int = 1;
        packet_opt(
            raw,
            libc::PACKET_QDISC_BYPASS,
            &one,
            "setting PACKET_QDISC_BYPASS",
        )?;
        packet_opt(raw, libc::PACKET_LOSS, &one, "setting PACKET_LOSS")?;
        // Must precede the rings. Without it (old kernels) TX frames ride as page fragments.
        let vnet = setopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one).is_ok();
        // Linux ≥ 4.20; older kernels still work because rxsync skips PACKET_OUTGOING frames.
        let _ = setopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        packet_opt(
            raw,
            libc::PACKET_RX_RING,
            &g.rx_req(),
            "setting up the AF_PACKET RX ring (PACKET_RX_RING)",
        )?;
        packet_opt(
            raw,
            libc::PACKET_TX_RING,
            &g.tx_req(),
            "setting up the AF_PACKET TX ring (PACKET_TX_RING)",
        )?;
        let ring = Ring::map(raw, g.map_len())?;
        let addr = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex as libc::c_int,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `addr` is a valid sockaddr_ll of the given size.
        let r = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r == -1 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    Error::NoSuchInterface(ifname.to_string())
                }
                _ => Error::io("binding the AF_PACKET socket to the interface", e),
            });
        }
        Ok(AfpQueue {
            ring,
            fd,
            ifname: ifname.to_string(),
            queue,
            g: *g,
            rx_next: 0,
            held: VecDeque::with_capacity(g.held_max),
            index: vec![FrameRef::default(); g.index_cap].into_boxed_slice(),
            indexed: 0,
            released: 0,
            tx_next_push: 0,
            tx_next_kick: 0,
            tx_next_reclaim: 0,
            tx_pending: 0,
            tx_in_flight: 0,
            tx_data: if vnet { g.tx_hdr + VNET_HDR } else { g.tx_hdr },
            frame_max: (interface_mtu(raw, ifname)? + ETH_HEADER).min(g.buf_size),
            stats: Stats::default(),
        })
    }

    /// The status word of RX unit `u` (a block, or a frame slot with `ring=v2`).
    fn block_status(&self, u: usize) -> &AtomicU32 {
        self.ring.status(self.g.rx_status_offset(u))
    }

    fn tx_status(&self, frame: usize) -> &AtomicU32 {
        self.ring.status(self.g.tx_status_offset(frame))
    }

    fn index_room(&self) -> usize {
        self.g.index_cap - (self.indexed - self.released) as usize
    }

    /// Indexes retired block `b` (its status was seen as TP_STATUS_USER).
    fn index_block(&mut self, b: usize) {
        let base = b * self.g.rx_block;
        debug_assert!(base + self.g.rx_block <= self.g.rx_len());
        // SAFETY: the block lies inside the mapping (b < rx_blocks). Its status is USER
        // (loaded with Acquire by the caller), so the kernel does not write to it until we
        // store TP_STATUS_KERNEL, which happens only after this slice is gone.
        let block = unsafe { std::slice::from_raw_parts(self.ring.ptr.add(base), self.g.rx_block) };
        let mask = (self.g.index_cap - 1) as u64;
        let index = &mut self.index;
        let indexed = &mut self.indexed;
        let scan = scan_block(block, base, self.g.per_block_cap, |f| {
            index[(*indexed & mask) as usize] = f;
            *indexed += 1;
        });
        self.stats.rx_frames += scan.frames as u64;
        self.stats.rx_skipped += scan.skipped as u64;
        self.stats.rx_outgoing += scan.outgoing as u64;
        self.held.push_back(Held {
            block: b,
            end: self.indexed,
        });
    }

    /// Indexes the frame in slot `u` (`ring=v2`; its status was seen as TP_STATUS_USER).
    fn index_slot(&mut self, u: usize) {
        let base = self.g.rx_unit_offset(u);
        debug_assert!(base + self.g.rx_frame <= self.g.rx_len());
        // SAFETY: the slot lies inside the mapping (u < rx_units); its status is USER (loaded
        // with Acquire by the caller), so the kernel does not write to it until we store
        // TP_STATUS_KERNEL, which happens only after this slice is gone.
        let slot = unsafe { std::slice::from_raw_parts(self.ring.ptr.add(base), self.g.rx_frame) };
        match scan_frame(slot, base) {
            SlotScan::Frame(f) => {
                let mask = (self.g.index_cap - 1) as u64;
                self.index[(self.indexed & mask) as usize] = f;
                self.indexed += 1;
                self.stats.rx_frames += 1;
            }
            SlotScan::Skipped => self.stats.rx_skipped += 1,
            SlotScan::Outgoing => self.stats.rx_outgoing += 1,
        }
        self.held.push_back(Held {
            block: u,
            end: self.indexed,
        });
    }

    /// Gives back every held block whose frames are all released.
    fn return_blocks(&mut self) {
        while let Some(h) = self.held.front().copied() {
            if h.end > self.released {
                break;
            }
            self.block_status(h.block)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.held.pop_front();
        }
    }

    fn tx_advance(&self, i: usize) -> usize {
        if i + 1 == self.g.tx_frames() {
            0
        } else {
            i + 1
        }
    }

    /// One `sendto` kick; then counts the frames the kernel took.
    fn kick(&mut self) -> Result<()> {
        // SAFETY: a kick of the TX ring: no buffers are passed.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        let err = (r == -1).then(io::Error::last_os_error);
        self.stats.tx_kicks += 1;
        // Frames the kernel took are SENDING, or already AVAILABLE (sent), or dropped as
        // malformed; whatever is still SEND_REQUEST waits for the next kick.
        while self.tx_pending > 0 {
            let st = self.tx_status(self.tx_next_kick).load(Ordering::Acquire) & TX_STATUS_MASK;
            if st == libc::TP_STATUS_SEND_REQUEST {
                break;
            }
            self.tx_next_kick = self.tx_advance(self.tx_next_kick);
            self.tx_pending -= 1;
            self.tx_in_flight += 1;
        }
        match err {
            None => Ok(()),
            Some(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR)
                ) =>
            {
                self.stats.tx_kick_retries += 1;
                Ok(())
            }
            Some(e) => Err(Error::io("sending on the AF_PACKET TX ring (sendto)", e)),
        }
    }

    /// Takes back frames the kernel has finished with, oldest first.
    fn reclaim(&mut self) {
        while self.tx_in_flight > 0 {
            let status = self.tx_status(self.tx_next_reclaim);
            let st = status.load(Ordering::Acquire) & TX_STATUS_MASK;
            if st & (libc::TP_STATUS_SENDING | libc::TP_STATUS_SEND_REQUEST) != 0 {
                break;
            }
            if st & libc::TP_STATUS_WRONG_FORMAT != 0 {
                status.store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
                self.stats.tx_wrong_format += 1;
            }
            self.tx_next_reclaim = self.tx_advance(self.tx_next_reclaim);
            self.tx_in_flight -= 1;
        }
    }
}

impl QueueIo for AfpQueue {
    fn rxsync(&mut self) -> Result<usize> {
        self.return_blocks();
        while self.held.len() < self.g.held_max && self.index_room() >= self.g.per_block_cap {
            let b = self.rx_next;
            if self.block_status(b).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break;
            }
            match self.g.ring {
                AfpRing::Blocks => self.index_block(b),
                AfpRing::Frames => self.index_slot(b),
            }
            self.rx_next = if b + 1 == self.g.rx_units { 0 } else { b + 1 };
        }
        // Blocks that held no usable frame go straight back.
        self.return_blocks();
        Ok(self.rx_available())
    }

    #[inline]
    fn rx_available(&self) -> usize {
        (self.indexed - self.released) as usize
    }

    #[inline]
    fn rx_frame(&self, i: usize) -> &[u8] {
        assert!(
            i < self.rx_available(),
            "rx_frame({i}) beyond rx_available()"
        );
        let f = self.index[((self.released + i as u64) & (self.g.index_cap as u64 - 1)) as usize];
        // SAFETY: `scan_block` only indexes frames lying inside their block, inside the
        // mapping; the block stays USER (the kernel does not write it) until this frame is
        // released, which needs `&mut self` and so ends this borrow first.
        unsafe { std::slice::from_raw_parts(self.ring.ptr.add(f.off as usize), f.len as usize) }
    }

    fn rx_release(&mut self, n: usize) {
        assert!(
            n <= self.rx_available(),
            "rx_release({n}) beyond rx_available()"
        );
        self.released += n as u64;
        self.return_blocks();
    }

    fn txsync(&mut self) -> Result<usize> {
        let kicked = if self.tx_pending > 0 {
            self.kick()
        } else {
            Ok(())
        };
        self.reclaim();
        kicked.map(|()| self.tx_space())
    }

    #[inline]
    fn tx_space(&self) -> usize {
        self.g.tx_frames() - self.tx_pending - self.tx_in_flight
    }

    #[inline]
    fn tx_buf(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.tx_space(), "tx_buf({i}) beyond tx_space()");
        let mut frame = self.tx_next_push + i;
        if frame >= self.g.tx_frames() {
            frame -= self.g.tx_frames();
        }
        let off = self.g.tx_frame_offset(frame) + self.tx_data;
        // SAFETY: the frame's data area (frame_max ≤ buf_size ≤ tx_frame - tx_data bytes) lies
        // inside the mapping; the frame is free (AVAILABLE), so the kernel does not touch it, and the
        // `&mut self` borrow keeps this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.ring.ptr.add(off), self.frame_max) }
    }

    fn tx_push(&mut self, len: usize) {
        assert!(self.tx_space() > 0, "tx_push with no free TX slot");
        assert!(len <= self.frame_max, "tx_push({len}) beyond buf_size()");
        let hdr = self.g.tx_frame_offset(self.tx_next_push);
        // With a virtio_net_hdr (10 bytes, right before the frame), `tp_len` covers it too.
        let tp_len = (len + self.tx_data - self.g.tx_hdr) as u32;
        let (at_len, at_snaplen, at_next) = match self.g.ring {
            AfpRing::Blocks => (H_LEN, H_SNAPLEN, Some(H_NEXT)),
            AfpRing::Frames => (H2_LEN, H2_SNAPLEN, None),
        };
        // SAFETY: the header (and the virtio_net_hdr after it) lies inside the mapping
        // (offsets computed from the geometry the kernel accepted) and is 16-byte aligned;
        // the frame is still ours (AVAILABLE), so the kernel does not read it concurrently.
        unsafe {
            let h = self.ring.ptr.add(hdr);
            if let Some(at) = at_next {
                h.add(at).cast::<u32>().write(0);
            }
            h.add(at_len).cast::<u32>().write(tp_len);
            h.add(at_snaplen).cast::<u32>().write(tp_len);
            if self.tx_data != self.g.tx_hdr {
                // No offloads requested; `hdr_len` = the whole frame makes the kernel copy
                // it into the skb head instead of attaching the ring page (module docs).
                let v = h.add(self.g.tx_hdr);
                v.write_bytes(0, VNET_HDR);
                let hdr_len = u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes();
                v.add(VNET_HDR_LEN)
                    .copy_from_nonoverlapping(hdr_len.as_ptr(), 2);
            }
        }
        // Release: the frame's bytes and length are visible before the kernel sees the request.
        self.tx_status(self.tx_next_push)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_next_push = self.tx_advance(self.tx_next_push);
        self.tx_pending += 1;
        self.stats.tx_frames += 1;
    }

    #[inline]
    fn tx_pending(&self) -> usize {
        self.tx_pending
    }

    fn buf_size(&self) -> usize {
        self.frame_max
    }

    fn arm(&mut self, rx: bool, tx: bool) -> Result<Option<WaitSpec>> {
        // The kernel reports POLLIN when an RX block is retired (full or timer) and POLLOUT
        // when the TX ring's next frame is free or the socket has send buffer room; select
        // re-checks the rings after arming, so a retire in between is not lost.
        Ok(Some(WaitSpec::readiness(self.fd.as_raw_fd(), rx, tx)))
    }

    fn disarm(&mut self) {}
}

// ---------------------------------------------------------------------------------------
// Fanout

fn join_fanout(fd: RawFd, id: u16, type_flags: u32) -> io::Result<()> {
    let arg: u32 = u32::from(id) | (type_flags << 16);
    setopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
}

/// Creates a new fanout group with `fd` as its first member; returns the group id and the
/// type/flags later members must join with.
fn create_group(fd: RawFd) -> Result<(u16, u32)> {
    let base = libc::PACKET_FANOUT_CBPF;
    let ignore_out = libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
    let unique = libc::PACKET_FANOUT_FLAG_UNIQUEID;
    // PACKET_FANOUT_FLAG_IGNORE_OUTGOING is recent; without it rxsync still drops outgoing
    // frames (they only cost a detour through the ring).
    let flags = match join_fanout(fd, 0, base | ignore_out | unique) {
        Ok(()) => base | ignore_out,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            join_fanout(fd, 0, base | unique)
                .map_err(|e| Error::io("creating the PACKET_FANOUT group", e))?;
            base
        }
        Err(e) => return Err(Error::io("creating the PACKET_FANOUT group", e)),
    };
    let mut val: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: `val`/`len` are valid out-pointers of the right size.
    syscall!("reading the PACKET_FANOUT group id", unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut val as *mut u32).cast(),
            &mut len,
        )
    })?;
    Ok(((val & 0xffff) as u16, flags))
}

fn set_program(fd: RawFd, n: usize, steering: Steering) -> Result<()> {
    let mut prog = steering_program(n as u32, steering);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `prog` outlives it.
    packet_opt(
        fd,
        libc::PACKET_FANOUT_DATA,
        &fprog,
        "attaching the steering program (PACKET_FANOUT_DATA)",
    )
}

/// Opens `config.queues` queue pairs on interface `ifname` (see the module documentation).
pub(crate) fn open(ifname: &str, config: &PortConfig) -> Result<Vec<Box<dyn QueueIo>>> {
    config.validate()?;
    let ifindex = interface_index(ifname)?;
    let g = Geometry::new(config);
    let n = config.queues;
    let mut queues: Vec<Box<dyn QueueIo>> = Vec::with_capacity(n);
    let mut group: Option<(u16, u32)> = None;
    for q in 0..n {
        let queue = AfpQueue::open(ifname, ifindex, q, &g)?;
        if n > 1 {
            let fd = queue.fd.as_raw_fd();
            // Members join in queue order: the program's return value indexes them so.
            match group {
                None => {
                    group = Some(create_group(fd)?);
                    set_program(fd, n, config.steering)?;
                }
                Some((id, flags)) => join_fanout(fd, id, flags)
                    .map_err(|e| Error::io("joining the PACKET_FANOUT group", e))?,
            }
        }
        queues.push(Box::new(queue));
    }
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds an Ethernet + IPv4 + TCP frame (IPv4 header of `ihl` words).
    fn tcp_frame(sport: u16, dport: u16, ihl: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + usize::from(ihl) * 4 + 20];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x40 | ihl;
        f[14 + 6..14 + 8].copy_from_slice(&frag.to_be_bytes());
        f[14 + 9] = 6;
        let t = 14 + usize::from(ihl) * 4;
        f[t..t + 2].copy_from_slice(&sport.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn tcp_frames_are_steered_by_the_chosen_port() {
        let f = tcp_frame(40_003, 80, 5, 0x4000); // DF set: not a fragment
        assert_eq!(queue_for_frame(&f, 4, Steering::RemotePort), 40_003 % 4);
        assert_eq!(queue_for_frame(&f, 4, Steering::LocalPort), 80 % 4);
        assert_eq!(queue_for_frame(&f, 7, Steering::RemotePort), 40_003 % 7);
        // IP options move the TCP header.
        let f = tcp_frame(1001, 2002, 7, 0);
        assert_eq!(queue_for_frame(&f, 4, Steering::RemotePort), 1);
        assert_eq!(queue_for_frame(&f, 4, Steering::LocalPort), 2);
        // One queue, or none: always 0.
        assert_eq!(queue_for_frame(&f, 1, Steering::RemotePort), 0);
        assert_eq!(queue_for_frame(&f, 0, Steering::RemotePort), 0);
        assert_eq!(queue_for_port(7, 4), 3);
        assert_eq!(queue_for_port(7, 0), 0);
    }

    #[test]
    fn everything_else_goes_to_queue_zero() {
        let q = |f: &[u8]| queue_for_frame(f, 4, Steering::RemotePort);
        // Fragments: MF set, or an offset.
        assert_eq!(q(&tcp_frame(3, 3, 5, 0x2000)), 0);
        assert_eq!(q(&tcp_frame(3, 3, 5, 0x0001)), 0);
        // UDP.
        let mut f = tcp_frame(3, 3, 5, 0);
        f[14 + 9] = 17;
        assert_eq!(q(&f), 0);
        // ARP and IPv6.
        let mut f = tcp_frame(3, 3, 5, 0);
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(q(&f), 0);
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(q(&f), 0);
        // IHL below 5.
        assert_eq!(q(&tcp_frame(3, 3, 4, 0)), 0);
        // Runts: ports beyond the end, headers cut short, nothing at all.
        let f = tcp_frame(3, 3, 15, 0);
        assert_eq!(q(&f[..60]), 0);
        assert_eq!(q(&tcp_frame(3, 3, 5, 0)[..35]), 0);
        assert_eq!(
            q(&tcp_frame(3, 3, 5, 0)[..36]),
            3,
            "the ports are the last bytes read"
        );
        assert_eq!(q(&[]), 0);
        assert_eq!(q(&[0x08]), 0);
    }

    /// A classic-BPF interpreter for the instructions `steering_program` uses, run the way
    /// the fanout hook runs it: data starts at the network header, the protocol comes from
    /// the EtherType, and a load out of bounds returns 0.
    fn run_cbpf(prog: &[libc::sock_filter], frame: &[u8]) -> u32 {
        use libc::*;
        let Some(ethertype) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return 0;
        };
        let data = &frame[14.min(frame.len())..];
        let load = |at: u32, size: u32| -> Option<u32> {
            let at = at as usize;
            let b = data.get(at..at + size as usize)?;
            Some(b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x)))
        };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            let size = |c: u32| match c & 0x18 {
                BPF_W => 4,
                BPF_H => 2,
                _ => 1,
            };
            match code {
                c if c == BPF_LD | BPF_W | BPF_ABS
                    && i.k == (SKF_AD_OFF + SKF_AD_PROTOCOL) as u32 =>
                {
                    a = u32::from(ethertype)
                }
                c if c & 0x07 == BPF_LD && c & 0xe0 == BPF_ABS => match load(i.k, size(c)) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c & 0x07 == BPF_LD && c & 0xe0 == BPF_IND => {
                    match load(x.wrapping_add(i.k), size(c)) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                c if c == BPF_ALU | BPF_AND | BPF_K => a &= i.k,
                c if c == BPF_ALU | BPF_LSH | BPF_K => a <<= i.k,
                c if c == BPF_ALU | BPF_MOD | BPF_K => a %= i.k,
                c if c == BPF_MISC | BPF_TAX => x = a,
                c if c & 0x07 == BPF_JMP => {
                    let taken = match c & 0xf0 {
                        BPF_JEQ => a == i.k,
                        BPF_JGE => a >= i.k,
                        BPF_JSET => a & i.k != 0,
                        other => panic!("unexpected jump {other:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c if c == BPF_RET | BPF_A => return a,
                c if c == BPF_RET | BPF_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<u16>(),
            any::<u16>(),
            0u8..16,
            prop_oneof![Just(0u16), Just(0x4000), any::<u16>()],
            prop_oneof![Just(6u8), any::<u8>()],
            prop_oneof![Just(0x0800u16), any::<u16>()],
            0usize..120,
        )
            .prop_map(|(sp, dp, ihl, frag, proto, et, cut)| {
                let mut f = tcp_frame(sp, dp, ihl.max(1), frag);
                f[12..14].copy_from_slice(&et.to_be_bytes());
                f[14] = (f[14] & 0xf0) | ihl;
                f[14 + 9] = proto;
                f.truncate(cut.max(1));
                f
            })
    }

    proptest! {
        #[test]
        fn the_bpf_program_agrees_with_queue_for_frame(
            frame in frame_strategy(), n in 2u32..9, local in any::<bool>(),
        ) {
            let steering = if local { Steering::LocalPort } else { Steering::RemotePort };
            let prog = steering_program(n, steering);
            let kernel = run_cbpf(&prog, &frame) % n;
            prop_assert_eq!(kernel as usize, queue_for_frame(&frame, n as usize, steering));
        }

        #[test]
        fn garbage_slots_never_index_outside_the_slot(
            slot in proptest::collection::vec(any::<u8>(), 0..3000),
            base in 0usize..1 << 20,
        ) {
            if let SlotScan::Frame(f) = scan_frame(&slot, base) {
                let (off, len) = (f.off as usize, f.len as usize);
                prop_assert!(len > 0 && off >= base + TP2_HDR && off + len <= base + slot.len());
            }
        }

        #[test]
        fn garbage_blocks_never_index_outside_the_block(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096), cap in 0usize..64,
        ) {
            let mut seen = 0;
            let scan = scan_block(&bytes, 1 << 20, cap, |f| {
                seen += 1;
                assert!(f.off as usize >= 1 << 20);
                assert!(f.off as usize - (1 << 20) + f.len as usize <= bytes.len());
            });
            prop_assert_eq!(scan.frames, seen);
            prop_assert!(seen <= cap);
        }
    }

    proptest! {
        #[test]
        fn damaged_blocks_never_index_outside_the_block(
            damage in proptest::collection::vec((0usize..2048, any::<u8>()), 1..16),
        ) {
            let a = [7u8; 300];
            let mut block = build_block(2048, &[(&a, 300, 0), (&a[..60], 60, 0), (&a, 300, 0)]);
            for (at, v) in damage {
                block[at] = v;
            }
            scan_block(&block, 4096, 16, |f| {
                assert!(f.off as usize >= 4096);
                assert!(f.off as usize - 4096 + f.len as usize <= block.len());
            });
        }
    }

    /// Writes a V3 block like the kernel does: frames back to back, 16-aligned.
    fn build_block(size: usize, frames: &[(&[u8], u32, u8)]) -> Vec<u8> {
        let mut b = vec![0u8; size];
        let put32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        put32(&mut b, BLOCK_STATUS, libc::TP_STATUS_USER);
        put32(&mut b, BLOCK_NUM_PKTS, frames.len() as u32);
        put32(&mut b, BLOCK_FIRST_PKT, BLOCK_DESC as u32);
        let mut off = BLOCK_DESC;
        for (k, (data, wire_len, pkttype)) in frames.iter().enumerate() {
            let mac = 82usize;
            let next = round_up(mac + data.len(), 16);
            let last = k + 1 == frames.len();
            put32(&mut b, off + H_NEXT, if last { 0 } else { next as u32 });
            put32(&mut b, off + H_SNAPLEN, data.len() as u32);
            put32(&mut b, off + H_LEN, *wire_len);
            b[off + H_MAC..off + H_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[off + SLL_PKTTYPE] = *pkttype;
            b[off + mac..off + mac + data.len()].copy_from_slice(data);
            off += next;
        }
        b
    }

    #[test]
    fn blocks_are_indexed_and_bad_frames_skipped() {
        let a = [0xaau8; 60];
        let b = [0xbbu8; 1514];
        let c = [0xccu8; 100];
        let block = build_block(
            8192,
            &[
                (&a, 60, libc::PACKET_HOST),
                (&b, 1514, libc::PACKET_OTHERHOST),
                (&c, 200, libc::PACKET_HOST), // truncated by the ring
                (&a, 60, libc::PACKET_OUTGOING),
                (&c, 100, libc::PACKET_BROADCAST),
            ],
        );
        let mut got = Vec::new();
        let scan = scan_block(&block, 4096, 100, |f| got.push(f));
        assert_eq!(
            scan,
            BlockScan {
                frames: 3,
                skipped: 1,
                outgoing: 1
            }
        );
        let bytes = |f: &FrameRef| &block[f.off as usize - 4096..][..f.len as usize];
        assert_eq!(bytes(&got[0]), &a[..]);
        assert_eq!(bytes(&got[1]), &b[..]);
        assert_eq!(bytes(&got[2]), &c[..]);
        // A cap cuts the block short.
        let scan = scan_block(&block, 0, 2, |_| {});
        assert_eq!((scan.frames, scan.skipped), (2, 3));
    }

    #[test]
    fn malformed_blocks_are_cut_short() {
        let a = [1u8; 64];
        let mut block = build_block(4096, &[(&a, 64, 0), (&a, 64, 0), (&a, 64, 0)]);
        // A next offset pointing past the block.
        block[BLOCK_DESC + H_NEXT..][..4].copy_from_slice(&5000u32.to_ne_bytes());
        let scan = scan_block(&block, 0, 100, |_| {});
        assert_eq!((scan.frames, scan.skipped), (1, 2));
        // A zero next offset before the last frame.
        block[BLOCK_DESC + H_NEXT..][..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(scan_block(&block, 0, 100, |_| {}).frames, 1);
        // A frame whose data would run past the block.
        let mut block = build_block(4096, &[(&a, 64, 0)]);
        block[BLOCK_DESC + H_SNAPLEN..][..4].copy_from_slice(&4000u32.to_ne_bytes());
        block[BLOCK_DESC + H_LEN..][..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(scan_block(&block, 0, 100, |_| {}).skipped, 1);
        // A first-frame offset inside the descriptor; an absurd frame count.
        let mut block = build_block(4096, &[(&a, 64, 0)]);
        block[BLOCK_FIRST_PKT..][..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(scan_block(&block, 0, 100, |_| {}).frames, 0);
        let mut block = build_block(4096, &[(&a, 64, 0)]);
        block[BLOCK_NUM_PKTS..][..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(scan_block(&block, 0, 100, |_| {}).frames, 1);
    }

    #[test]
    fn geometry_satisfies_the_kernel() {
        let page = 4096;
        for (slots, buf) in [
            (1024, 2048),
            (8, 128),
            (65536, 65472),
            (4096, 9216),
            (100, 1600),
        ] {
            for ring in [AfpRing::Blocks, AfpRing::Frames] {
                let c = PortConfig {
                    slots,
                    buf_size: buf,
                    afpacket_ring: ring,
                    ..PortConfig::default()
                };
                c.validate().unwrap();
                let g = Geometry::new(&c);
                let (rx, tx) = (g.rx_req(), g.tx_req());
                for r in [rx, tx] {
                    assert!(
                        (r.tp_block_size as usize).is_multiple_of(page)
                            && r.tp_block_size.is_power_of_two()
                    );
                    assert!((r.tp_frame_size as usize).is_multiple_of(libc::TPACKET_ALIGNMENT));
                    assert!(r.tp_frame_size <= r.tp_block_size && r.tp_frame_nr > 0);
                    assert_eq!(
                        (r.tp_block_size / r.tp_frame_size) * r.tp_block_nr,
                        r.tp_frame_nr
                    );
                }
                // The largest frame fits an RX block, and a TX frame holds a whole buffer.
                assert!(g.rx_block - BLOCK_DESC >= g.buf_size + 112);
                assert!(g.tx_frame - g.tx_hdr - VNET_HDR >= g.buf_size);
                if ring == AfpRing::Frames {
                    // Every frame slot lies inside the RX ring, its largest frame included
                    // (header, sockaddr_ll, alignment and a virtio_net_hdr: at most 112 bytes).
                    assert_eq!(g.rx_units as u32, rx.tp_frame_nr);
                    let last = g.rx_unit_offset(g.rx_units - 1);
                    assert!(last + g.rx_frame <= g.rx_len());
                    assert!(g.rx_frame >= g.buf_size + 112);
                    assert_eq!(g.held_max, g.rx_units);
                }
                // As many TX frames as slots, unless the ring hit its memory bound.
                assert!(
                    g.tx_frames() >= slots as usize || g.tx_blocks * g.tx_block == MAX_RING_BYTES
                );
                assert!(
                    g.index_cap.is_power_of_two() && g.index_cap >= g.per_block_cap * g.held_max
                );
                assert!(g.map_len() <= 2 * MAX_RING_BYTES);
                assert!(g.tx_frame_offset(g.tx_frames() - 1) + g.tx_frame <= g.map_len());
                assert!(g.tov_ms >= 1);
            }
        }
    }

    #[test]
    fn socket_errors_say_what_to_do() {
        for errno in [libc::EPERM, libc::EACCES] {
            let e = socket_error(io::Error::from_raw_os_error(errno));
            assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
            assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
        }
        let e = socket_error(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }

    #[test]
    fn without_cap_net_raw_opening_says_to_run_as_root() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return; // root has CAP_NET_RAW; the errno mapping is covered above
        }
        let e = crate::Port::open("afpacket:lo").unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        assert!(e.to_string().contains("run as root"), "{e}");
    }

    #[test]
    fn a_missing_interface_is_named() {
        for name in ["mtcp-nosuch0", "a-name-longer-than-ifnamsiz", "bad\0name"] {
            let e = crate::Port::open(&format!("afpacket:{name}")).unwrap_err();
            assert!(
                matches!(&e, Error::NoSuchInterface(n) if n == name),
                "{e:?}"
            );
            assert!(
                e.to_string().contains(name.split('\0').next().unwrap()),
                "{e}"
            );
        }
    }
}
