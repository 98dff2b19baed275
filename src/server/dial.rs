//! Dialling a proxy target: DNS, the egress check on every resolved address,
//! and the connect, all under one deadline. Failures map to the HTTP status a
//! proxy should answer (502 refused/DNS, 504 timeout, 403 refused by policy).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::StatusCode;
use tokio::net::TcpStream;

/// Why a target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("DNS lookup for {host} failed: {reason}")]
    Dns { host: String, reason: String },
    #[error("connection to {target} refused")]
    Refused { target: String },
    #[error("timed out after {after:?} connecting to {target}")]
    Timeout { target: String, after: Duration },
    #[error("{target} resolves to {addr}, which is not allowed ({reason})")]
    Denied { target: String, addr: IpAddr, reason: &'static str },
    #[error("cannot connect to {target}: {reason}")]
    Other { target: String, reason: String },
}

impl DialError {
    /// The status a forward proxy answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Denied { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dns { .. } => "dns",
            Self::Refused { .. } => "refused",
            Self::Timeout { .. } => "timeout",
            Self::Denied { .. } => "denied",
            Self::Other { .. } => "other",
        }
    }
}

/// Which resolved addresses the server may dial.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Allow loopback targets (local mode and tests only).
    pub allow_loopback: bool,
}

impl EgressPolicy {
    /// Returns the reason `ip` is refused, if it is.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            IpAddr::V4(_) => ip,
        };
        if ip.is_unspecified() {
            return Some("unspecified address");
        }
        if ip.is_loopback() && !self.allow_loopback {
            return Some("loopback");
        }
        match ip {
            IpAddr::V4(v4) if v4.is_link_local() => Some("link-local, where cloud metadata lives"),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
            IpAddr::V6(v6) if v6.segments()[0] == 0xfd00 && v6.segments()[1] == 0x0ec2 => Some("cloud metadata"),
            _ => None,
        }
    }
}

/// Resolves `host`, drops refused addresses and connects to the first that answers.
pub async fn dial(host: &str, port: u16, policy: &EgressPolicy, timeout: Duration) -> Result<TcpStream, DialError> {
    let target = format!("{host}:{port}");
    match tokio::time::timeout(timeout, dial_inner(host, port, &target, policy)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout { target, after: timeout }),
    }
}

async fn dial_inner(host: &str, port: u16, target: &str, policy: &EgressPolicy) -> Result<TcpStream, DialError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| DialError::Dns { host: bare.to_string(), reason: dns_reason(&e) })?
            .collect(),
    };
    let mut last = None;
    let mut denied = None;
    for addr in addrs {
        if let Some(reason) = policy.refusal(addr.ip()) {
            denied.get_or_insert(DialError::Denied { target: target.to_string(), addr: addr.ip(), reason });
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(DialError::Refused { target: target.to_string() });
            }
            Err(e) => last = Some(DialError::Other { target: target.to_string(), reason: e.to_string() }),
        }
    }
    Err(last.or(denied).unwrap_or_else(|| DialError::Dns { host: bare.to_string(), reason: "no addresses".into() }))
}

fn dns_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    if text.contains("failed to lookup address information") {
        text.rsplit(": ").next().unwrap_or(&text).to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_refusals() {
        let policy = EgressPolicy::default();
        let cases = [
            ("169.254.169.254", true),
            ("169.254.170.2", true),
            ("127.0.0.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("0.0.0.0", true),
            ("fe80::1", true),
            ("fd00:ec2::254", true),
            ("93.184.216.34", false),
            ("2606:2800:220:1::", false),
        ];
        for (ip, refused) in cases {
            assert_eq!(policy.refusal(ip.parse().unwrap()).is_some(), refused, "{ip}");
        }
        let local = EgressPolicy { allow_loopback: true };
        assert!(local.refusal("127.0.0.1".parse().unwrap()).is_none());
        assert!(local.refusal("169.254.170.2".parse().unwrap()).is_some());
    }

    #[tokio::test]
    async fn refused_and_denied_map_to_statuses() {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let policy = EgressPolicy { allow_loopback: true };
        let err = dial("127.0.0.1", port, &policy, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!((err.kind(), err.status()), ("refused", StatusCode::BAD_GATEWAY));
        let err = dial("127.0.0.1", port, &EgressPolicy::default(), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!((err.kind(), err.status()), ("denied", StatusCode::FORBIDDEN));
        // No resolver answers here, or it says NXDOMAIN: either way a clear failure.
        let err = dial("name.invalid", 80, &policy, Duration::from_secs(3)).await.unwrap_err();
        assert!(matches!(err.kind(), "dns" | "timeout"), "{err}");
    }
}
