//! Which addresses and ports the server may dial, decided on the address
//! actually dialled (after DNS), so a name resolving to a forbidden address is
//! refused too.
//!
//! Always refused: unspecified addresses and the server's own ports on local
//! addresses (a proxy loop). Refused unless allowed: "this network"
//! (0.0.0.0/8: Linux routes 0.0.0.1 and up to the host), loopback,
//! link-local (169.254.0.0/16 holds instance metadata and the ECS credentials
//! endpoint 169.254.170.2; fe80::/10), private networks (10/8, 172.16/12,
//! 192.168/16, the shared 100.64/10 and unique-local fc00::/7, which holds
//! fd00:ec2::/32: on Fargate these are the task's VPC neighbours), multicast
//! and the reserved 240/4. IPv6 forms that carry an IPv4 address (mapped
//! `::ffff:a.b.c.d`, compatible `::a.b.c.d`, translated `::ffff:0:a.b.c.d`
//! and NAT64 `64:ff9b::a.b.c.d`) are judged by that IPv4 address. Then the
//! configured lists: `deny` CIDRs and `deny_ports` always win, `allow` CIDRs
//! lift the defaults, and a non-empty `allow_ports` admits only those ports.

use std::net::{IpAddr, SocketAddr};

/// An IP network such as `10.0.0.0/8` or `fd00:ec2::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("`{text}` is not an IP network like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => {
                p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("bad prefix in `{text}`"))?
            }
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// True when `ip` lies inside this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (ip >> shift)
}

/// The IPv4 address an IPv6 address stands for, if it embeds one: mapped
/// (`::ffff:0:0/96`), translated (`::ffff:0:0:0/96`), NAT64 (`64:ff9b::/96`,
/// RFC 6052) or the deprecated compatible form (`::/96`, but not `::` and
/// `::1`); otherwise the address itself.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let low = std::net::Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    let embeds = match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] => true,          // mapped
        [0, 0, 0, 0, 0xffff, 0] => true,          // translated
        [0x64, 0xff9b, 0, 0, 0, 0] => true,       // NAT64 well-known prefix
        [0, 0, 0, 0, 0, 0] => u32::from(low) > 1, // compatible (not :: or ::1)
        _ => false,
    };
    if embeds { IpAddr::V4(low) } else { ip }
}

/// The egress rules of one server.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
    pub allow_ports: Vec<u16>,
    pub deny_ports: Vec<u16>,
    /// The server's own listening ports (never dialled on local addresses).
    pub own_ports: Vec<u16>,
}

impl EgressPolicy {
    /// A policy that also allows loopback targets (local mode, tests).
    pub fn allowing_loopback(mut self) -> Self {
        self.allow.extend(["127.0.0.0/8", "::1/128"].iter().filter_map(|c| c.parse::<Cidr>().ok()));
        self
    }

    /// The reason `addr` is refused, if it is.
    pub fn refusal(&self, addr: SocketAddr) -> Option<String> {
        let ip = canonical(addr.ip());
        let port = addr.port();
        if ip.is_unspecified() {
            return Some("unspecified address".into());
        }
        if self.own_ports.contains(&port) && is_own_address(addr.ip()) {
            return Some(format!("port {port} of this host is this server's own"));
        }
        if self.deny_ports.contains(&port) {
            return Some(format!("port {port} is in egress.deny_ports"));
        }
        if !self.allow_ports.is_empty() && !self.allow_ports.contains(&port) {
            return Some(format!("port {port} is not in egress.allow_ports"));
        }
        if let Some(net) = self.deny.iter().find(|net| net.contains(ip)) {
            return Some(format!("inside egress.deny {}/{}", net.addr, net.prefix));
        }
        if self.allow.iter().any(|net| net.contains(ip)) {
            return None;
        }
        default_refusal(ip).map(str::to_string)
    }
}

/// Whether `ip` is an address of this host (loopback, or one of its
/// interfaces, such as a Fargate task's ENI address): binding a socket to it
/// succeeds only then. Nothing is sent.
fn is_own_address(ip: IpAddr) -> bool {
    ip.is_loopback() || canonical(ip).is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Networks refused unless `egress.allow` lifts them, with the reason given.
const DEFAULT_DENY: [(&str, &str); 13] = [
    ("0.0.0.0/8", "\"this network\" (Linux routes it to this host)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, where instance metadata and ECS credentials live"),
    ("10.0.0.0/8", "a private network (the server's VPC neighbours)"),
    ("172.16.0.0/12", "a private network (the server's VPC neighbours)"),
    ("192.168.0.0/16", "a private network (the server's VPC neighbours)"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT, VPC secondary ranges)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and the broadcast address)"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("fc00::/7", "a unique-local network (VPC neighbours, fd00:ec2:: metadata)"),
    ("ff00::/8", "multicast"),
];

/// [`DEFAULT_DENY`] parsed once (every dial consults it).
static DEFAULT_NETS: std::sync::LazyLock<Vec<(Cidr, &'static str)>> = std::sync::LazyLock::new(|| {
    // The table is constant and each entry parses (a unit test checks).
    DEFAULT_DENY.iter().filter_map(|(net, why)| Some((net.parse().ok()?, *why))).collect()
});

fn default_refusal(ip: IpAddr) -> Option<&'static str> {
    DEFAULT_NETS.iter().find_map(|(net, why)| net.contains(ip).then_some(*why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()));
        let v6: Cidr = "fd00:ec2::/32".parse().unwrap();
        assert!(v6.contains("fd00:ec2::254".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn default_policy() {
        let policy = EgressPolicy { own_ports: vec![8443], ..EgressPolicy::default() };
        let refused = [
            "169.254.169.254:80",
            "169.254.170.2:80",
            "127.0.0.1:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "0.0.0.0:80",
            "[fe80::1]:80",
            "[fd00:ec2::254]:80",
        ];
        for target in refused {
            assert!(policy.refusal(addr(target)).is_some(), "{target}");
        }
        for target in ["93.184.216.34:443", "[2606:2800:220:1::]:80", "[64:ff9b::5db8:d822]:443"] {
            assert_eq!(policy.refusal(addr(target)), None, "{target}");
        }
    }

    #[test]
    fn private_networks_and_embedded_ipv4_forms_are_refused_by_default() {
        let policy = EgressPolicy::default();
        let refused = [
            ("10.0.0.5:8443", "private"),
            ("172.16.0.1:80", "private"),
            ("172.31.255.254:80", "private"),
            ("192.168.1.1:80", "private"),
            ("100.64.0.1:80", "shared"),
            ("[fc00::1]:80", "unique-local"),
            ("[fd12:3456::1]:80", "unique-local"),
            ("0.0.0.1:80", "this network"),
            ("0.255.255.255:80", "this network"),
            ("[::a9fe:aa02]:80", "link-local"),        // ::169.254.170.2 (compatible)
            ("[::ffff:0:a9fe:aa02]:80", "link-local"), // translated
            ("[64:ff9b::a9fe:a9fe]:80", "link-local"), // NAT64 169.254.169.254
            ("[64:ff9b::7f00:1]:80", "loopback"),      // NAT64 127.0.0.1
            ("[::ffff:10.0.0.1]:80", "private"),       // mapped
            ("[::7f00:1]:80", "loopback"),             // compatible 127.0.0.1
            ("224.0.0.1:80", "multicast"),
            ("255.255.255.255:80", "reserved"),
        ];
        for (target, why) in refused {
            let refusal = policy.refusal(addr(target)).unwrap_or_else(|| panic!("{target} was allowed"));
            assert!(refusal.contains(why), "{target}: {refusal}");
        }
        for target in ["172.32.0.1:80", "100.128.0.1:80", "[2001:db8::1]:80", "11.0.0.1:80"] {
            assert_eq!(policy.refusal(addr(target)), None, "{target}");
        }
        // Each lifted by an explicit allow.
        let lifted = EgressPolicy {
            allow: ["10.0.0.0/8", "100.64.0.0/10", "fc00::/7", "169.254.170.2/32"]
                .iter()
                .map(|c| c.parse().unwrap())
                .collect(),
            ..EgressPolicy::default()
        };
        for target in
            ["10.0.0.5:80", "100.64.0.1:80", "[fd12::1]:80", "[64:ff9b::a9fe:aa02]:80", "[::ffff:10.1.1.1]:80"]
        {
            assert_eq!(lifted.refusal(addr(target)), None, "{target}");
        }
        assert!(lifted.refusal(addr("192.168.0.1:80")).is_some(), "only what was allowed");
        for (net, _) in DEFAULT_DENY {
            assert!(net.parse::<Cidr>().is_ok(), "{net}");
        }
        assert_eq!(DEFAULT_NETS.len(), DEFAULT_DENY.len());
    }

    #[test]
    fn configured_lists() {
        let policy = EgressPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            deny: vec!["10.0.0.0/8".parse().unwrap()],
            deny_ports: vec![25],
            own_ports: vec![8443],
            ..EgressPolicy::default()
        };
        assert_eq!(policy.refusal(addr("127.0.0.1:80")), None);
        assert!(policy.refusal(addr("127.0.0.1:8443")).unwrap().contains("own"));
        assert!(policy.refusal(addr("10.9.9.9:80")).unwrap().contains("egress.deny"));
        assert!(policy.refusal(addr("93.184.216.34:25")).unwrap().contains("deny_ports"));
        let only_web = EgressPolicy { allow_ports: vec![80, 443], ..EgressPolicy::default() };
        assert!(only_web.refusal(addr("93.184.216.34:22")).is_some());
        assert_eq!(only_web.refusal(addr("93.184.216.34:443")), None);
        let local = EgressPolicy::default().allowing_loopback();
        assert_eq!(local.refusal(addr("[::1]:80")), None);
        assert!(local.refusal(addr("169.254.170.2:80")).is_some());
    }
}
