//! Our own raw sender (issue 6, scenarios 6 and 7): crafted Ethernet frames written straight
//! onto a veth end with an `AF_PACKET` socket, and the frames coming back read from it.
//!
//! In the lab it sits on the kernel side's veth (`io-linux`, in the `linux` namespace): what
//! it writes travels the link toward our stack exactly as the kernel's own segments do, with
//! whatever source addresses the frame says; what it reads are the frames arriving there,
//! our stack's answers among them.
//!
//! - [`RawSocket`]: a plain `AF_PACKET`/`SOCK_RAW` socket bound to one interface (opened in
//!   the calling thread's namespace): [`RawSocket::send`] one frame, [`RawSocket::send_batch`]
//!   many with one `sendmmsg`, [`RawSocket::recv`] the next incoming frame with a timeout.
//!   A send-only socket ([`RawSocket::sender`]) receives nothing, so a flooder does not pay
//!   for the answers it provokes.
//! - [`Tcp4`]: an Ethernet + IPv4 + TCP frame built by hand with correct checksums (IPv4
//!   options, fragment fields and TCP options as given); [`broken`] turns a correct frame
//!   into the deliberately wrong variants (a checksum, a data offset, a total length).
//! - [`Seen`]: the TCP fields of a received frame, parsed with `smoltcp::wire`'s checked
//!   views (an oracle independent of the builder).
//!
//! ## What it does not do
//! No ARP, no routing, no retransmission: the caller names both MACs and sends every frame
//! itself. `AF_PACKET` refuses frames shorter than an Ethernet header and longer than the
//! interface's MTU plus 14 bytes; those errors are returned as they are.

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// TCP FIN.
pub const FIN: u8 = 0x01;
/// TCP SYN.
pub const SYN: u8 = 0x02;
/// TCP RST.
pub const RST: u8 = 0x04;
/// TCP PSH.
pub const PSH: u8 = 0x08;
/// TCP ACK.
pub const ACK: u8 = 0x10;

const ETH_LEN: usize = 14;
const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;

// ---------------------------------------------------------------------------------------------
// The socket
// ---------------------------------------------------------------------------------------------

/// A frame read by [`RawSocket::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Its length (at most the buffer's).
    pub len: usize,
    /// Sent by this host (`PACKET_OUTGOING`: the kernel's own frames on the interface)
    /// rather than received from the link.
    pub outgoing: bool,
}

/// An `AF_PACKET` raw socket bound to one interface.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
}

/// `-1` as the last OS error.
fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r == -1 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

impl RawSocket {
    /// Opens a socket on `dev` (in the calling thread's namespace) that sends and receives
    /// every frame (`ETH_P_ALL`).
    pub fn open(dev: &str) -> io::Result<RawSocket> {
        RawSocket::bind(dev, ETH_P_ALL)
    }

    /// Opens a send-only socket on `dev`: bound with protocol 0, it is handed no frame.
    pub fn sender(dev: &str) -> io::Result<RawSocket> {
        RawSocket::bind(dev, 0)
    }

    fn bind(dev: &str, protocol: u16) -> io::Result<RawSocket> {
        let name = std::ffi::CString::new(dev)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in device name"))?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("interface {dev}: {e}")));
        }
        // SAFETY: plain system call with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        let fd = check(fd, "socket(AF_PACKET)")?;
        // SAFETY: `fd` was just returned by socket and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length given is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(r, &format!("bind to {dev}"))?;
        let size: libc::c_int = 4 << 20;
        // SAFETY: the option value is a c_int that lives for the call; a failure (the
        // limit of rmem_max) is harmless, so the result is ignored.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(RawSocket { fd })
    }

    /// Writes one frame onto the link, as it is (no padding, no checksum fixed).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length for the duration of the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n == -1 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }

    /// Writes `frames` with one `sendmmsg` (at most 1024 at a time); how many were sent.
    /// An error is returned only when not even the first frame went out.
    pub fn send_batch(&self, frames: &[Vec<u8>]) -> io::Result<usize> {
        let frames = &frames[..frames.len().min(1024)];
        if frames.is_empty() {
            return Ok(0);
        }
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: every header points to one iovec of `iov`, each naming a frame of
        // `frames`; all of them outlive the call, and the kernel only reads the frames.
        let n = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                0,
            )
        };
        if n == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The next frame on the interface, read into `buf`, waiting at most `timeout`;
    /// `None` when none came.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<Received>> {
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is valid for writes of its length, `from` for `from_len` bytes;
            // both outlive the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n >= 0 {
                return Ok(Some(Received {
                    len: n as usize,
                    outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
                }));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {}
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r == -1 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building frames
// ---------------------------------------------------------------------------------------------

/// The Internet checksum (RFC 1071) of `data`, continuing the sum `acc`: the one's
/// complement of the folded one's-complement sum of 16-bit big-endian words.
pub fn checksum(acc: u32, data: &[u8]) -> u16 {
    let mut sum = u64::from(acc);
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP pseudo-header's sum (RFC 9293 §3.1) for a segment of `tcp_len` bytes.
fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: usize) -> u32 {
    let word = |b: [u8; 4]| {
        u32::from(u16::from_be_bytes([b[0], b[1]])) + u32::from(u16::from_be_bytes([b[2], b[3]]))
    };
    word(src.octets()) + word(dst.octets()) + 6 + tcp_len as u32
}

/// An Ethernet + IPv4 + TCP frame to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp4 {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// The flag byte (any combination: [`SYN`], [`ACK`], …).
    pub flags: u8,
    /// The window field, as sent.
    pub window: u16,
    /// TCP options, padded by the builder with zeros (EOL) to a multiple of 4 bytes.
    pub tcp_options: Vec<u8>,
    /// The data.
    pub payload: Vec<u8>,
    /// IPv4 options, padded with zeros (EOL) to a multiple of 4 bytes.
    pub ip_options: Vec<u8>,
    /// IPv4 identification.
    pub ident: u16,
    /// IPv4 "more fragments".
    pub more_fragments: bool,
    /// IPv4 fragment offset, in 8-byte units.
    pub fragment_offset: u16,
}

impl Tcp4 {
    /// A segment from `src` to `dst` with no options, no data, window 65 535.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    ) -> Tcp4 {
        Tcp4 {
            src_mac,
            dst_mac,
            src,
            dst,
            src_port,
            dst_port,
            seq,
            ack,
            flags,
            window: 65_535,
            tcp_options: Vec::new(),
            payload: Vec::new(),
            ip_options: Vec::new(),
            ident: 0,
            more_fragments: false,
            fragment_offset: 0,
        }
    }

    /// Length of the IPv4 header it builds.
    pub fn ip_header_len(&self) -> usize {
        20 + self.ip_options.len().div_ceil(4) * 4
    }

    /// Length of the TCP header it builds.
    pub fn tcp_header_len(&self) -> usize {
        20 + self.tcp_options.len().div_ceil(4) * 4
    }

    /// The frame, with correct IPv4 and TCP checksums. Options longer than their headers
    /// allow (40 bytes each) make a header whose length field is wrong: build such frames
    /// on purpose only.
    pub fn frame(&self) -> Vec<u8> {
        let ihl = self.ip_header_len();
        let thl = self.tcp_header_len();
        let tcp_len = thl + self.payload.len();
        let mut f = vec![0u8; ETH_LEN + ihl + tcp_len];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        {
            let ip = &mut f[ETH_LEN..ETH_LEN + ihl];
            ip[0] = 0x40 | ((ihl / 4) as u8 & 0x0f);
            ip[2..4].copy_from_slice(&((ihl + tcp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&self.ident.to_be_bytes());
            let frag = (u16::from(self.more_fragments) << 13) | (self.fragment_offset & 0x1fff);
            ip[6..8].copy_from_slice(&frag.to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&self.src.octets());
            ip[16..20].copy_from_slice(&self.dst.octets());
            ip[20..20 + self.ip_options.len()].copy_from_slice(&self.ip_options);
            let sum = checksum(0, ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let tcp = &mut f[ETH_LEN + ihl..];
        tcp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = ((thl / 4) as u8) << 4;
        tcp[13] = self.flags;
        tcp[14..16].copy_from_slice(&self.window.to_be_bytes());
        tcp[20..20 + self.tcp_options.len()].copy_from_slice(&self.tcp_options);
        tcp[thl..].copy_from_slice(&self.payload);
        let sum = checksum(pseudo_sum(self.src, self.dst, tcp_len), tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f
    }
}

/// Deliberately broken variants of a correct Ethernet + IPv4 + TCP frame (as [`Tcp4`]
/// builds): each changes one thing and keeps every other field (and checksum) right.
pub mod broken {
    use super::{checksum, pseudo_sum, ETH_LEN};
    use std::net::Ipv4Addr;

    fn ihl(f: &[u8]) -> usize {
        usize::from(f[ETH_LEN] & 0x0f) * 4
    }

    fn fix_ip_checksum(f: &mut [u8]) {
        let end = ETH_LEN + ihl(f);
        f[ETH_LEN + 10..ETH_LEN + 12].fill(0);
        let sum = checksum(0, &f[ETH_LEN..end]);
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
    }

    fn fix_tcp_checksum(f: &mut [u8]) {
        let at = ETH_LEN + ihl(f);
        let ip = &f[ETH_LEN..];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let tcp = &mut f[at..];
        tcp[16..18].fill(0);
        let sum = checksum(pseudo_sum(src, dst, tcp.len()), tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    }

    /// The TCP checksum off by one bit.
    pub fn tcp_checksum(mut f: Vec<u8>) -> Vec<u8> {
        let at = ETH_LEN + ihl(&f) + 17;
        f[at] ^= 0x01;
        f
    }

    /// The IPv4 header checksum off by one bit.
    pub fn ip_checksum(mut f: Vec<u8>) -> Vec<u8> {
        f[ETH_LEN + 11] ^= 0x01;
        f
    }

    /// The TCP data offset field set to `words` (0 to 15), the checksum recomputed.
    pub fn data_offset(mut f: Vec<u8>, words: u8) -> Vec<u8> {
        let at = ETH_LEN + ihl(&f) + 12;
        f[at] = (f[at] & 0x0f) | (words << 4);
        fix_tcp_checksum(&mut f);
        f
    }

    /// The IPv4 total length set to `len`, the header checksum recomputed.
    pub fn total_length(mut f: Vec<u8>, len: u16) -> Vec<u8> {
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&len.to_be_bytes());
        fix_ip_checksum(&mut f);
        f
    }

    /// The frame cut to its first `len` bytes (headers left as they were).
    pub fn truncated(mut f: Vec<u8>, len: usize) -> Vec<u8> {
        f.truncate(len);
        f
    }
}

// ---------------------------------------------------------------------------------------------
// Reading answers
// ---------------------------------------------------------------------------------------------

/// The fields of a received TCP segment that the scenarios look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// The flag byte.
    pub flags: u8,
    /// The window field.
    pub window: u16,
    /// Bytes of data.
    pub payload: usize,
}

impl Seen {
    /// The Ethernet + IPv4 + TCP frame `f` parsed, checksums verified; `None` for anything
    /// else (or anything malformed).
    pub fn parse(f: &[u8]) -> Option<Seen> {
        let eth = EthernetFrame::new_checked(f).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if ip.next_header() != IpProtocol::Tcp || !ip.verify_checksum() {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        if !tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()) {
            return None;
        }
        let raw = ip.payload();
        Some(Seen {
            src_mac: eth.src_addr().0,
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            src_port: tcp.src_port(),
            dst_port: tcp.dst_port(),
            seq: tcp.seq_number().0 as u32,
            ack: tcp.ack_number().0 as u32,
            flags: raw[13],
            window: tcp.window_len(),
            payload: tcp.payload().len(),
        })
    }

    /// Whether it carries all of `flags`.
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tcp4 {
        let mut s = Tcp4::new(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            40_000,
            5002,
            0x1234_5678,
            0x9abc_def0,
            ACK | PSH,
        );
        s.payload = b"hello, hostile world".to_vec();
        s
    }

    /// smoltcp's checked views, an oracle independent of the builder.
    fn verdict(f: &[u8]) -> (bool, bool) {
        let eth = EthernetFrame::new_checked(f).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let tcp = TcpPacket::new_unchecked(ip.payload());
        (
            ip.verify_checksum(),
            tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()),
        )
    }

    #[test]
    fn built_frames_verify_and_read_back() {
        let s = sample();
        let f = s.frame();
        assert_eq!(f.len(), 14 + 20 + 20 + 20);
        assert_eq!(verdict(&f), (true, true));
        let seen = Seen::parse(&f).unwrap();
        assert_eq!(
            (seen.src_port, seen.dst_port, seen.seq, seen.ack),
            (40_000, 5002, 0x1234_5678, 0x9abc_def0)
        );
        assert_eq!(
            (seen.flags, seen.window, seen.payload),
            (ACK | PSH, 65_535, 20)
        );
        assert!(seen.has(ACK) && !seen.has(SYN));
        // Options on both layers (odd lengths padded), still valid.
        let mut s = sample();
        s.ip_options = vec![0x94, 0x04, 0x00, 0x00, 0x01];
        s.tcp_options = vec![0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07];
        let f = s.frame();
        assert_eq!((s.ip_header_len(), s.tcp_header_len()), (28, 28));
        assert_eq!(verdict(&f), (true, true));
        let tcp = TcpPacket::new_checked(&f[14 + 28..]).unwrap();
        assert_eq!(tcp.header_len(), 28);
        assert_eq!(tcp.payload(), b"hello, hostile world");
        // An odd-length payload sums its last byte as the high half of a word.
        let mut s = sample();
        s.payload = vec![0xff; 7];
        assert_eq!(verdict(&s.frame()), (true, true));
    }

    #[test]
    fn fragment_fields_are_written() {
        let mut s = sample();
        s.more_fragments = true;
        s.fragment_offset = 185;
        let f = s.frame();
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.more_frags());
        assert_eq!(ip.frag_offset(), 185 * 8);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn broken_variants_are_broken_only_the_intended_way() {
        let f = sample().frame();
        assert_eq!(verdict(&broken::tcp_checksum(f.clone())), (true, false));
        assert_eq!(verdict(&broken::ip_checksum(f.clone())), (false, true));
        for words in [0u8, 4, 15] {
            let b = broken::data_offset(f.clone(), words);
            assert_eq!(b[14 + 20 + 12] >> 4, words);
            // The checksum is right: only the offset is wrong.
            assert_eq!(verdict(&b), (true, true), "{words}");
            assert!(TcpPacket::new_checked(&b[14 + 20..]).is_err(), "{words}");
        }
        let b = broken::total_length(f.clone(), 2000);
        // The header sums to zero (its checksum is right), its length is beyond the frame.
        assert_eq!(checksum(0, &b[14..34]), 0);
        assert!(Ipv4Packet::new_checked(&b[14..]).is_err());
        assert_eq!(broken::truncated(f.clone(), 14).len(), 14);
        assert!(Seen::parse(&broken::tcp_checksum(f.clone())).is_none());
        assert!(Seen::parse(&broken::ip_checksum(f)).is_none());
    }

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (complement 220d).
        assert_eq!(
            checksum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(0, &[]), 0xffff);
    }
}
