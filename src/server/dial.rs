//! Dialling a proxy target: DNS, the egress check on every resolved address,
//! and the connect, all under one deadline. Failures map to the HTTP status a
//! proxy should answer (502 refused/DNS, 504 timeout, 403 refused by policy).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::StatusCode;
use tokio::net::TcpStream;

pub use super::egress::EgressPolicy;

/// Why a target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("DNS lookup for {host} failed: {reason}")]
    Dns { host: String, reason: String },
    #[error("connection to {target} refused")]
    Refused { target: String },
    #[error("timed out after {after:?} connecting to {target}")]
    Timeout { target: String, after: Duration },
    #[error("{target} resolves to {addr}, which is not allowed ({reason}){}", local_hint(reason))]
    Denied { target: String, addr: IpAddr, reason: String },
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

/// How the server dials: the egress rules, static host entries and the deadline.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    pub policy: EgressPolicy,
    /// Names answered without DNS (lower-case), like /etc/hosts entries.
    pub hosts: HashMap<String, IpAddr>,
    pub timeout: Duration,
}

impl Dialer {
    /// Resolves `host`, drops refused addresses and connects to the first that answers.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        let target = format!("{host}:{port}");
        match tokio::time::timeout(self.timeout, self.dial_inner(host, port, &target)).await {
            Ok(result) => result,
            Err(_) => Err(DialError::Timeout { target, after: self.timeout }),
        }
    }

    async fn dial_inner(&self, host: &str, port: u16, target: &str) -> Result<TcpStream, DialError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = self.resolve(bare, port).await?;
        connect_first(addrs, target, &self.policy).await
    }

    async fn resolve(&self, bare: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ip) = self.hosts.get(&normalize_name(bare)) {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        Ok(tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| DialError::Dns { host: bare.to_string(), reason: dns_reason(&e) })?
            .collect())
    }
}

/// For a private or shared address, most likely a machine on the user's own
/// network that the browser sent into the tunnel: how to keep it local.
/// (Loopback, link-local metadata and explicit denials get no such advice.)
fn local_hint(reason: &str) -> &'static str {
    if ["a private network", "shared address space", "a unique-local network"].iter().any(|r| reason.starts_with(r)) {
        "; for a machine on your own network, have the agent's PAC send it DIRECT (pac.direct), or allow it on the server with egress.allow"
    } else {
        ""
    }
}

/// A host name as the static `hosts` map keys it: lower case, without the
/// one trailing dot of a fully qualified name (`EVIL.test.` is `evil.test`).
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

async fn connect_first(addrs: Vec<SocketAddr>, target: &str, policy: &EgressPolicy) -> Result<TcpStream, DialError> {
    let mut last = None;
    let mut denied = None;
    for addr in addrs {
        if let Some(reason) = policy.refusal(addr) {
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
    Err(last.or(denied).unwrap_or_else(|| DialError::Dns { host: target.to_string(), reason: "no addresses".into() }))
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
    fn only_private_targets_get_the_keep_it_local_hint() {
        let denied = |reason: &str| {
            let addr = "10.0.0.1".parse().unwrap();
            DialError::Denied { target: "nas.home".into(), addr, reason: reason.into() }.to_string()
        };
        assert!(denied("a private network (the server's VPC neighbours)").ends_with("egress.allow"));
        assert!(denied("shared address space (carrier-grade NAT, VPC secondary ranges)").contains("pac.direct"));
        for reason in [
            "loopback",
            "link-local, where instance metadata and ECS credentials live",
            "inside egress.deny 10.0.0.0/8",
        ] {
            assert!(!denied(reason).contains("pac.direct"), "{reason}");
        }
    }

    #[tokio::test]
    async fn refused_denied_and_dns_map_to_statuses() {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let open = Dialer {
            policy: EgressPolicy::default().allowing_loopback(),
            timeout: Duration::from_secs(3),
            ..Dialer::default()
        };
        let err = open.dial("127.0.0.1", port).await.unwrap_err();
        assert_eq!((err.kind(), err.status()), ("refused", StatusCode::BAD_GATEWAY));
        let strict = Dialer { timeout: Duration::from_secs(3), ..Dialer::default() };
        let err = strict.dial("127.0.0.1", port).await.unwrap_err();
        assert_eq!((err.kind(), err.status()), ("denied", StatusCode::FORBIDDEN));
        // A static host entry pointing at loopback is refused like the address itself.
        let hosts =
            Dialer { hosts: [("evil.test".to_string(), "127.0.0.1".parse().unwrap())].into(), ..strict.clone() };
        for spelling in ["EVIL.test", "evil.test.", "Evil.Test."] {
            assert_eq!(hosts.dial(spelling, port).await.unwrap_err().kind(), "denied", "{spelling}");
        }
        // No resolver answers here, or it says NXDOMAIN: either way a clear failure.
        let err = open.dial("name.invalid", 80).await.unwrap_err();
        assert!(matches!(err.kind(), "dns" | "timeout"), "{err}");
    }
}
