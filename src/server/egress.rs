//! Which addresses and ports the server may dial, decided on the address
//! actually dialled (after DNS), so a name resolving to a forbidden address is
//! refused too.
//!
//! Always refused: unspecified addresses and the server's own ports on local
//! addresses (a proxy loop). Refused unless allowed: loopback, link-local
//! (169.254.0.0/16 holds instance metadata and the ECS credentials endpoint
//! 169.254.170.2; fe80::/10) and fd00:ec2::/32. Then the configured lists:
//! `deny` CIDRs and `deny_ports` always win, `allow` CIDRs lift the defaults,
//! and a non-empty `allow_ports` admits only those ports.

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

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        IpAddr::V4(_) => ip,
    }
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
        if self.own_ports.contains(&port) && ip.is_loopback() {
            return Some(format!("port {port} is this server's own"));
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

fn default_refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local, where instance metadata and ECS credentials live"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        IpAddr::V6(v6) if v6.segments()[0] == 0xfd00 && v6.segments()[1] == 0x0ec2 => Some("cloud metadata"),
        _ => None,
    }
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
        for target in ["93.184.216.34:443", "[2606:2800:220:1::]:80", "10.0.0.5:8443"] {
            assert_eq!(policy.refusal(addr(target)), None, "{target}");
        }
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
