//! The proxy auto-config file the agent serves at `/proxy.pac`: everything
//! through the agent, except what must stay on the local network — this
//! machine's names, private, link-local and loopback IP literals (a home
//! router, an intranet at 10.x), and the configured `pac.direct` entries
//! (name suffixes and IPv4 CIDR blocks; by default the `NO_PROXY` entries).
//!
//! Only IP *literals* are tested against address ranges: `isInNet` on a name
//! would make the browser resolve every name locally first, which is slow
//! and tells the local resolver every site visited.

/// Private (RFC 1918), shared (RFC 6598), link-local and loopback IPv4 ranges.
const LOCAL_V4: [(&str, &str); 6] = [
    ("10.0.0.0", "255.0.0.0"),
    ("172.16.0.0", "255.240.0.0"),
    ("192.168.0.0", "255.255.0.0"),
    ("100.64.0.0", "255.192.0.0"),
    ("169.254.0.0", "255.255.0.0"),
    ("127.0.0.0", "255.0.0.0"),
];

/// The script for an agent at `proxy` (`host:port`), with `direct` entries.
pub fn script(proxy: &str, direct: &[String]) -> String {
    let mut names = Vec::new();
    let mut nets: Vec<(String, String)> = LOCAL_V4.iter().map(|(n, m)| (n.to_string(), m.to_string())).collect();
    for entry in direct.iter().map(|e| e.trim()) {
        if let Some((net, mask)) = ipv4_cidr(entry) {
            nets.push((net, mask));
        } else if is_name_suffix(entry) {
            names.push(suffix_of(entry).to_ascii_lowercase());
        }
    }
    let mut out = String::from(
        "// Fluidity agent: everything through the tunnel; this machine, the local network and pac.direct DIRECT.\n",
    );
    out.push_str("function FindProxyForURL(url, host) {\n");
    out.push_str("  host = host.toLowerCase();\n");
    // An IPv6 literal has no dot either: it is not a plain host name.
    out.push_str(
        "  if ((isPlainHostName(host) && host.indexOf(\":\") < 0) || host == \"localhost\") return \"DIRECT\";\n",
    );
    out.push_str("  if (/^\\d+\\.\\d+\\.\\d+\\.\\d+$/.test(host)) {\n");
    for (net, mask) in &nets {
        out.push_str(&format!("    if (isInNet(host, \"{net}\", \"{mask}\")) return \"DIRECT\";\n"));
    }
    out.push_str("  }\n");
    // IPv6 literals: loopback, link-local fe80::/10, unique-local fc00::/7.
    out.push_str("  var v6 = host.replace(/^\\[|\\]$/g, \"\");\n");
    out.push_str("  if (v6 == \"::1\" || /^(fe[89ab][0-9a-f]|f[cd][0-9a-f]{2}):/.test(v6)) return \"DIRECT\";\n");
    for name in &names {
        out.push_str(&format!("  if (host == \"{name}\" || dnsDomainIs(host, \".{name}\")) return \"DIRECT\";\n"));
    }
    out.push_str(&format!("  return \"PROXY {proxy}; SOCKS5 {proxy}\";\n}}\n"));
    out
}

/// `corp.example` from `corp.example`, `.corp.example` or `*.corp.example`.
fn suffix_of(entry: &str) -> &str {
    entry.trim_start_matches('*').trim_start_matches('.')
}

/// `a.b.c.d/n` as a network and a dotted mask.
fn ipv4_cidr(entry: &str) -> Option<(String, String)> {
    let (net, bits) = entry.split_once('/').unwrap_or((entry, "32"));
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 32)?;
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    let net = std::net::Ipv4Addr::from(u32::from(net) & mask);
    Some((net.to_string(), std::net::Ipv4Addr::from(mask).to_string()))
}

/// A DNS name or suffix (`corp.example`, `.corp.example`): nothing that could
/// break out of a JavaScript string.
fn is_name_suffix(entry: &str) -> bool {
    let name = suffix_of(entry);
    name.bytes().any(|b| b.is_ascii_alphanumeric())
        && name.parse::<std::net::IpAddr>().is_err()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `entry` is one `pac.direct` accepts (for validating the YAML).
pub fn is_valid_entry(entry: &str) -> bool {
    ipv4_cidr(entry.trim()).is_some() || is_name_suffix(entry.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_rules_and_nothing_escapes() {
        let direct =
            ["corp.example", ".intra.example", "198.18.0.0/15", "10.1.2.3", "x\";alert(1);\"", "*", "fd00::/8"]
                .map(String::from);
        let js = script("127.0.0.1:8080", &direct);
        assert!(
            js.contains("dnsDomainIs(host, \".corp.example\")") && js.contains("host == \"intra.example\""),
            "{js}"
        );
        assert!(js.contains("isInNet(host, \"198.18.0.0\", \"255.254.0.0\")"), "{js}");
        assert!(js.contains("isInNet(host, \"10.1.2.3\", \"255.255.255.255\")"), "{js}");
        assert!(!js.contains("alert") && !js.contains("\"*\""), "{js}");
        assert!(js.ends_with("return \"PROXY 127.0.0.1:8080; SOCKS5 127.0.0.1:8080\";\n}\n"), "{js}");
        assert!(
            is_valid_entry("10.0.0.0/8") && is_valid_entry(".corp") && !is_valid_entry("a b") && !is_valid_entry("*")
        );
    }
}
