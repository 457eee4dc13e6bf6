//! Ethernet + IPv4 + TCP/ICMP frames, built and parsed byte by byte.
//!
//! The runner does not reuse tcp-core's wire code on purpose: a conformance check should not
//! share the parser of the stack it checks. Parsing never panics: every length is checked
//! before it is used, and a frame that is not Ethernet/IPv4/TCP is reported as such.

use std::net::Ipv4Addr;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// The addresses of both ends of the test link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The stack's MAC.
    pub local_mac: [u8; 6],
    /// The script's MAC.
    pub remote_mac: [u8; 6],
    /// The stack's IPv4 address.
    pub local_ip: Ipv4Addr,
    /// The script's IPv4 address.
    pub remote_ip: Ipv4Addr,
}

/// A TCP segment to build (inbound) or as parsed (outbound). Numbers are on-the-wire values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segment {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits (see [`flags`]).
    pub flags: u8,
    /// Window field.
    pub window: u16,
    /// Raw option bytes (a multiple of 4 when built).
    pub options: Vec<u8>,
    /// Payload length (payload bytes are zeros when built).
    pub payload_len: usize,
    /// IPv4 TTL.
    pub ttl: u8,
    /// IPv4 TOS byte.
    pub tos: u8,
}

/// One's-complement sum of `data` as big-endian 16-bit words.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn eth_ip(link: &Link, proto: u8, ttl: u8, tos: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + 20 + l4.len());
    f.extend_from_slice(&link.local_mac);
    f.extend_from_slice(&link.remote_mac);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let total = (20 + l4.len()).min(usize::from(u16::MAX)) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = ttl;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&link.remote_ip.octets());
    ip[16..20].copy_from_slice(&link.local_ip.octets());
    let c = fold(sum16(0, &ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// The TCP header and payload of `seg` sent from the script's address to the stack's, with
/// its checksum.
fn tcp_bytes(src: Ipv4Addr, dst: Ipv4Addr, seg: &Segment) -> Vec<u8> {
    let mut opts = seg.options.clone();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let hlen = 20 + opts.len();
    let mut t = vec![0u8; hlen + seg.payload_len];
    t[0..2].copy_from_slice(&seg.src_port.to_be_bytes());
    t[2..4].copy_from_slice(&seg.dst_port.to_be_bytes());
    t[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    t[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    t[12] = ((hlen / 4) as u8) << 4;
    t[13] = seg.flags;
    t[14..16].copy_from_slice(&seg.window.to_be_bytes());
    t[20..hlen].copy_from_slice(&opts);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, PROTO_TCP]);
    pseudo.extend_from_slice(&(t.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    let c = fold(sum16(sum16(0, &pseudo), &t));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An inbound TCP frame (script → stack).
pub fn build_tcp(link: &Link, seg: &Segment) -> Vec<u8> {
    let tcp = tcp_bytes(link.remote_ip, link.local_ip, seg);
    eth_ip(link, PROTO_TCP, seg.ttl, seg.tos, &tcp)
}

/// An inbound ICMP error (script → stack) about a segment the stack sent: `quoted` is that
/// segment (from the stack's address to the script's); the message quotes its IPv4 header
/// and the first 8 bytes of its TCP header (RFC 792). `rest` is the 4-byte field after the
/// checksum (unused, or the next-hop MTU).
pub fn build_icmp_error(
    link: &Link,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &Segment,
) -> Vec<u8> {
    let tcp = tcp_bytes(link.local_ip, link.remote_ip, quoted);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    let total = (20 + tcp.len()).min(usize::from(u16::MAX)) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = PROTO_TCP;
    ip[12..16].copy_from_slice(&link.local_ip.octets());
    ip[16..20].copy_from_slice(&link.remote_ip.octets());
    let c = fold(sum16(0, &ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(&ip);
    icmp.extend_from_slice(&tcp[..8]);
    let c = fold(sum16(0, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    eth_ip(link, PROTO_ICMP, 64, 0, &icmp)
}

/// What the stack sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A TCP segment from the stack's address to the script's.
    Tcp(Segment),
    /// Something else (ARP, ICMP, a frame to another address...), described.
    Other(String),
}

/// Parses a frame the stack sent. Checks the IPv4 header checksum and the TCP checksum.
pub fn parse_outbound(link: &Link, f: &[u8]) -> Outbound {
    let other = |s: &str| Outbound::Other(s.to_string());
    if f.len() < ETH_LEN + 20 {
        return other("short frame");
    }
    if u16::from_be_bytes([f[12], f[13]]) != ETHERTYPE_IPV4 {
        return Outbound::Other(format!(
            "ethertype 0x{:04x}",
            u16::from_be_bytes([f[12], f[13]])
        ));
    }
    if f[0..6] != link.remote_mac || f[6..12] != link.local_mac {
        return other("frame with unexpected MAC addresses");
    }
    let ip = &f[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() {
        return other("bad IPv4 header");
    }
    if fold(sum16(0, &ip[..ihl])) != 0 {
        return other("bad IPv4 header checksum");
    }
    let (src, dst) = (
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
    );
    if src != link.local_ip || dst != link.remote_ip {
        return Outbound::Other(format!("IPv4 packet {src} -> {dst}"));
    }
    if ip[9] != PROTO_TCP {
        return Outbound::Other(format!("IPv4 protocol {}", ip[9]));
    }
    let t = &ip[ihl..total];
    if t.len() < 20 {
        return other("short TCP header");
    }
    let hlen = usize::from(t[12] >> 4) * 4;
    if hlen < 20 || hlen > t.len() {
        return other("bad TCP data offset");
    }
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, PROTO_TCP]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    if fold(sum16(sum16(0, &pseudo), t)) != 0 {
        return other("bad TCP checksum");
    }
    Outbound::Tcp(Segment {
        src_port: u16::from_be_bytes([t[0], t[1]]),
        dst_port: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13],
        window: u16::from_be_bytes([t[14], t[15]]),
        options: t[20..hlen].to_vec(),
        payload_len: t.len() - hlen,
        ttl: ip[8],
        tos: ip[1],
    })
}

/// A TCP option as found on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireOpt {
    /// Kind 0.
    Eol,
    /// Kind 1.
    Nop,
    /// Kind 2.
    Mss(u16),
    /// Kind 3.
    Wscale(u8),
    /// Kind 4.
    SackOk,
    /// Kind 5, raw blocks.
    Sack(Vec<(u32, u32)>),
    /// Kind 8.
    Ts(u32, u32),
    /// Anything else: kind and data.
    Other(u8, Vec<u8>),
}

/// Splits option bytes into options; `Err` describes malformed bytes. After an EOL the
/// rest is padding and each zero byte is reported as another EOL (as packetdrill prints).
pub fn parse_options(b: &[u8]) -> Result<Vec<WireOpt>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            0 => {
                out.push(WireOpt::Eol);
                i += 1;
            }
            1 => {
                out.push(WireOpt::Nop);
                i += 1;
            }
            kind => {
                let Some(&len) = b.get(i + 1) else {
                    return Err(format!("option {kind} without a length"));
                };
                let len = usize::from(len);
                if len < 2 || i + len > b.len() {
                    return Err(format!("option {kind} with bad length {len}"));
                }
                let d = &b[i + 2..i + len];
                let be32 = |x: &[u8]| u32::from_be_bytes([x[0], x[1], x[2], x[3]]);
                let o = match (kind, d.len()) {
                    (2, 2) => WireOpt::Mss(u16::from_be_bytes([d[0], d[1]])),
                    (3, 1) => WireOpt::Wscale(d[0]),
                    (4, 0) => WireOpt::SackOk,
                    (5, n) if n % 8 == 0 => WireOpt::Sack(
                        d.chunks_exact(8)
                            .map(|c| (be32(&c[0..4]), be32(&c[4..8])))
                            .collect(),
                    ),
                    (8, 8) => WireOpt::Ts(be32(&d[0..4]), be32(&d[4..8])),
                    _ => WireOpt::Other(kind, d.to_vec()),
                };
                out.push(o);
                i += len;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link {
            local_mac: [2, 0, 0, 0, 0, 1],
            remote_mac: [2, 0, 0, 0, 0, 2],
            local_ip: Ipv4Addr::new(192, 168, 0, 1),
            remote_ip: Ipv4Addr::new(192, 0, 2, 1),
        }
    }

    #[test]
    fn a_built_frame_parses_back_when_mirrored() {
        let l = link();
        let seg = Segment {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: flags::SYN | flags::ACK,
            window: 5,
            options: vec![2, 4, 5, 180, 4, 2, 0, 0],
            payload_len: 3,
            ttl: 64,
            tos: 0,
        };
        let f = build_tcp(&l, &seg);
        // The mirrored link sees it as outbound.
        let m = Link {
            local_mac: l.remote_mac,
            remote_mac: l.local_mac,
            local_ip: l.remote_ip,
            remote_ip: l.local_ip,
        };
        assert_eq!(parse_outbound(&m, &f), Outbound::Tcp(seg.clone()));
        assert_eq!(
            parse_options(&seg.options).unwrap(),
            vec![
                WireOpt::Mss(1460),
                WireOpt::SackOk,
                WireOpt::Eol,
                WireOpt::Eol
            ]
        );
        for n in 0..f.len() {
            let _ = parse_outbound(&m, &f[..n]);
        }
        assert!(parse_options(&[2, 9, 0]).is_err());
    }
}
