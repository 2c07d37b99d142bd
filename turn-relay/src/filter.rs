//! Which peers an allocation may reach: safe by default, as coturn's
//! `denied-peer-ip` set plus what a relay on a media host must refuse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Ranges refused unless `allow_peers` names them: loopback, private,
/// shared (CGN), link-local, multicast, unspecified and "this network",
/// reserved and broadcast, unique-local, 6to4, Teredo, local-use NAT64 and
/// discard-only. IPv4-mapped, IPv4-compatible and NAT64 (64:ff9b::/96)
/// IPv6 forms are judged by the IPv4 address they carry as well.
pub const DEFAULT_DENIED_PEERS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "100::/64",
    "2001::/32",
    "2002::/16",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The peer filter of one relay.
#[derive(Debug, Clone)]
pub struct PeerFilter {
    defaults: Vec<IpNet>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    always: Vec<SocketAddr>,
}

/// The IPv4 address an IPv6 address carries, for the forms that a dual-stack
/// socket or a NAT64 would deliver to that IPv4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(v4),
        // IPv4-compatible ::a.b.c.d (deprecated), but not :: and ::1
        [0, 0, 0, 0, 0, 0, _, _] if s[6] != 0 || s[7] > 1 => Some(v4),
        // NAT64 well-known prefix 64:ff9b::/96
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(v4),
        _ => None,
    }
}

impl PeerFilter {
    /// `allow` opens default-denied ranges; `deny` adds refusals and beats
    /// `allow`; `always` are exact addresses reachable whatever the lists say.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, always: Vec<SocketAddr>) -> PeerFilter {
        let defaults = DEFAULT_DENIED_PEERS
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        PeerFilter {
            defaults,
            allow,
            deny,
            always,
        }
    }

    fn listed(list: &[IpNet], ip: IpAddr, v4: Option<Ipv4Addr>) -> bool {
        list.iter()
            .any(|n| n.contains(&ip) || v4.is_some_and(|v4| n.contains(&IpAddr::V4(v4))))
    }

    /// May a permission be installed for `ip`? True for allowed addresses
    /// and for the address of an always-reachable peer (whose other ports
    /// [`PeerFilter::peer_allowed`] still refuses).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.by_lists(ip) || self.always.iter().any(|a| a.ip() == ip)
    }

    /// May data be sent to `peer`?
    pub fn peer_allowed(&self, peer: SocketAddr) -> bool {
        self.by_lists(peer.ip()) || self.always.contains(&peer)
    }

    fn by_lists(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_v4(v6),
        };
        if Self::listed(&self.deny, ip, v4) {
            return false;
        }
        if Self::listed(&self.defaults, ip, v4) {
            // Only an allow entry for the address as written opens it: an
            // allowed 127.0.0.1 does not open ::ffff:127.0.0.1.
            return self.allow.iter().any(|n| n.contains(&ip));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) const DENIED: &[&str] = &[
        "127.0.0.1",
        "127.1.2.3",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "0.0.0.0",
        "0.1.2.3",
        "100.64.0.1",
        "100.127.255.254",
        "255.255.255.255",
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:192.168.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::1",
        "2002:c0a8:101::1",
        "2001:0:4136:e378::1",
    ];

    #[test]
    fn denies_every_default_range_and_its_ipv6_forms() {
        let f = PeerFilter::new(vec![], vec![], vec![]);
        for s in DENIED {
            assert!(!f.ip_allowed(ip(s)), "{s} allowed");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "172.32.0.1",
        ] {
            assert!(f.ip_allowed(ip(s)), "{s} refused");
        }
    }

    #[test]
    fn allow_opens_defaults_deny_wins() {
        let f = PeerFilter::new(
            nets(&["127.0.0.1/32", "10.0.0.0/8"]),
            nets(&["10.9.0.0/16", "8.8.8.0/24"]),
            vec![],
        );
        assert!(f.ip_allowed(ip("127.0.0.1")));
        assert!(!f.ip_allowed(ip("127.0.0.2")));
        assert!(!f.ip_allowed(ip("::ffff:127.0.0.1")));
        assert!(f.ip_allowed(ip("10.1.0.1")));
        assert!(!f.ip_allowed(ip("10.9.0.1")));
        assert!(!f.ip_allowed(ip("8.8.8.8")));
        assert!(!f.ip_allowed(ip("::ffff:8.8.8.8")));
        assert!(f.ip_allowed(ip("8.8.4.4")));
    }

    #[test]
    fn always_reachable_is_exact() {
        let sfu: SocketAddr = "127.0.0.1:7882".parse().unwrap();
        let f = PeerFilter::new(vec![], vec![], vec![sfu]);
        assert!(f.ip_allowed(ip("127.0.0.1")));
        assert!(f.peer_allowed(sfu));
        assert!(!f.peer_allowed("127.0.0.1:11211".parse().unwrap()));
        assert!(!f.peer_allowed("[::ffff:127.0.0.1]:7882".parse().unwrap()));
    }
}
