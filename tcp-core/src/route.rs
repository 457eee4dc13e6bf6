//! Next-hop selection: the interface's subnet, static routes (longest prefix wins), then the
//! default gateway.

use crate::config::InterfaceConfig;
use core::net::Ipv4Addr;

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

/// True when `a` lies in `net/prefix_len`.
pub fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix_len: u8) -> bool {
    let m = mask(prefix_len);
    u32::from(a) & m == u32::from(net) & m
}

/// The address to resolve with ARP to reach `dst`, or `None` when there is no route.
///
/// Order: on-link destinations (our subnet) go direct; otherwise the most specific static
/// route; otherwise the default gateway. Broadcast, multicast, loopback and unspecified
/// destinations have no route.
pub fn next_hop(iface: &InterfaceConfig, dst: Ipv4Addr) -> Option<Ipv4Addr> {
    if dst.is_unspecified() || dst.is_broadcast() || dst.is_multicast() || dst.is_loopback() {
        return None;
    }
    if in_subnet(dst, iface.addr, iface.prefix_len) {
        return Some(dst);
    }
    iface
        .routes
        .iter()
        .filter(|r| in_subnet(dst, r.dest, r.prefix_len))
        .max_by_key(|r| r.prefix_len)
        .map(|r| r.gateway)
        .or(iface.gateway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;
    use alloc::vec;

    #[test]
    fn subnet_then_longest_route_then_gateway() {
        let iface = InterfaceConfig {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 254)),
            routes: vec![
                Route {
                    dest: Ipv4Addr::new(198, 18, 0, 0),
                    prefix_len: 15,
                    gateway: Ipv4Addr::new(10, 0, 0, 2),
                },
                Route {
                    dest: Ipv4Addr::new(198, 18, 5, 0),
                    prefix_len: 24,
                    gateway: Ipv4Addr::new(10, 0, 0, 3),
                },
            ],
            ..InterfaceConfig::default()
        };
        let hop = |a: [u8; 4]| next_hop(&iface, Ipv4Addr::from(a));
        assert_eq!(hop([10, 0, 0, 7]), Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(hop([198, 19, 1, 1]), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(hop([198, 18, 5, 9]), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(hop([192, 0, 2, 1]), Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(hop([255, 255, 255, 255]), None);
        assert_eq!(hop([127, 0, 0, 1]), None);
        let no_gw = InterfaceConfig {
            gateway: None,
            ..iface.clone()
        };
        assert_eq!(next_hop(&no_gw, Ipv4Addr::new(192, 0, 2, 1)), None);
        assert!(in_subnet(
            Ipv4Addr::new(1, 2, 3, 4),
            Ipv4Addr::new(9, 9, 9, 9),
            0
        ));
    }
}
