//! The optional upstream proxy between the agent and the Internet: the
//! corporate HTTP proxy or SOCKS5 server that a restrictive network makes
//! the only way out.
//!
//! [`Upstream`] decides, per destination, whether to dial directly or through
//! a proxy: an explicit setting (`--upstream-proxy`, YAML `upstream_proxy`)
//! or else the environment as curl reads it (`HTTPS_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`, lower-case forms too). [`open`] then gives a TCP stream to the
//! destination: a plain connect, or one through the proxy (`http://`: an HTTP
//! `CONNECT` with Basic or NTLM authentication, [`connect`]; `socks5://` and
//! `socks5h://`: RFC 1928 with RFC 1929 login, [`socks5`]). Names go to the
//! proxy unresolved (`CONNECT name:port`, `socks5h`): machines behind such
//! proxies often cannot resolve outside names at all.
//!
//! Each failure is an [`UpstreamError`] naming the proxy and what it said, in
//! words a person can act on; credentials never appear in them (a proxy is
//! shown as `http://user:***@host:port`).

mod connect;
pub mod ntlm;
mod socks5;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::client::proxy::matcher::Matcher;

use tokio::net::TcpStream;

use crate::config::Secret;

/// How the agent talks to its proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTP `CONNECT`, then the agent's own TLS inside.
    Http,
    /// SOCKS5, the agent resolving the destination's name itself.
    Socks5,
    /// SOCKS5, the proxy resolving the destination's name.
    Socks5h,
}

/// One upstream proxy, as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamProxy {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// `user` (for NTLM `DOMAIN\user`) and password, percent-decoded.
    pub credentials: Option<(String, Secret)>,
    /// Where the setting came from (`--upstream-proxy`, `HTTPS_PROXY`, …).
    pub source: String,
}

impl UpstreamProxy {
    /// Parses `http://[user:pass@]host:port`, `socks5://…` or `socks5h://…`.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let text = text.trim();
        let (scheme_text, rest) = text.split_once("://").unwrap_or(("http", text));
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "socks5" => Scheme::Socks5,
            "socks5h" => Scheme::Socks5h,
            "https" => return Err("an https:// proxy (TLS to the proxy itself) is not supported; use http://".into()),
            other => {
                return Err(format!("the scheme {other}:// is not supported; use http://, socks5:// or socks5h://"));
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if rest[authority.len()..].contains('@') {
            // A password holding `/`, `?` or `#` cut the URL short: never quote it back.
            return Err(
                "the URL has an @ after a /, ? or #: percent-encode those in the password (%2F, %3F, %23)".into()
            );
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let default_port = if scheme == Scheme::Http { 80 } else { 1080 };
        let (host, port) = split_host_port(host_port, default_port)?;
        let credentials = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            (decode(user), Secret::new(decode(password)))
        });
        Ok(Self { scheme, host, port, credentials, source: source.to_string() })
    }

    /// `host:port` as it is dialled (IPv6 in brackets).
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// Whether this proxy is one of `own` addresses (the agent itself). An
    /// agent on a wildcard address is itself at every address of this
    /// machine: loopback, `localhost`, and any address a socket can be bound
    /// to here (binding sends nothing).
    fn is_one_of(&self, own: &[SocketAddr]) -> bool {
        let host = self.host.as_str();
        let ip = host.parse::<std::net::IpAddr>().ok();
        let local = || {
            host.eq_ignore_ascii_case("localhost")
                || ip.is_some_and(|ip| ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok())
        };
        own.iter().any(|addr| {
            addr.port() == self.port
                && if addr.ip().is_unspecified() {
                    local()
                } else {
                    ip == Some(addr.ip()) || (host.eq_ignore_ascii_case("localhost") && addr.ip().is_loopback())
                }
        })
    }
}

/// Shown with the password replaced: safe for logs, errors and `--check`.
impl fmt::Display for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
        };
        match &self.credentials {
            Some((user, _)) => write!(f, "{scheme}://{user}:***@{}", self.address()),
            None => write!(f, "{scheme}://{}", self.address()),
        }
    }
}

impl fmt::Debug for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamProxy({self} from {})", self.source)
    }
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// `host[:port]`, with IPv6 in brackets; the port defaults to `default`.
/// Errors quote the host at most, never what follows a colon (in a proxy
/// URL written without `@`, that could be a password).
pub fn split_host_port(text: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an IPv6 address has no closing bracket")?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("text follows the IPv6 address's bracket")?)),
        }
    } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
        (text, None)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("no host is named".into());
    }
    let port = match port {
        Some(port) => port.parse().map_err(|_| format!("the port after {host} is not a number from 0 to 65535"))?,
        None => default,
    };
    Ok((host.to_string(), port))
}

/// `host:port`, with an IPv6 host in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The proxy setting as given (flag, environment variable or YAML), before
/// the process environment is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySetting {
    /// Nothing set: follow `HTTPS_PROXY` and the other variables.
    FromEnvironment,
    /// `none`: always dial directly, whatever the environment says.
    Direct,
    /// A proxy URL (it may hold a password: `Debug` hides it) and where it was set.
    Url { url: Secret, source: String },
}

/// Per-destination choice between a direct connection and a proxy.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    /// For TLS destinations (the server, an `https://` API).
    https: Option<UpstreamProxy>,
    /// For plain `http://` destinations (a control API on this machine).
    http: Option<UpstreamProxy>,
    /// The `NO_PROXY` rules and the variable they came from. hyper-util's
    /// matcher implements curl's rules (suffixes, CIDR blocks, `*`); the
    /// proxy URL given to it only marks a match.
    no_proxy: Option<(Arc<Matcher>, String)>,
    /// Lines to log once at start (a variable that was ignored, and why).
    pub notes: Vec<String>,
}

/// Environment variables in curl's order of preference (lower case first).
const HTTPS_VARS: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
/// Only the lower-case `http_proxy`, as curl (a CGI program may receive an
/// upper-case one from a request's `Proxy:` header).
const HTTP_VARS: [&str; 3] = ["http_proxy", "all_proxy", "ALL_PROXY"];
const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// The `NO_PROXY` list and the variable it came from (`env` reads one),
/// lower case first as curl; also the default of the PAC's `pac.direct`.
pub fn no_proxy_list(env: &dyn Fn(&str) -> Option<String>) -> Option<(String, String)> {
    first_set(env, &NO_PROXY_VARS)
}

/// The first of `names` set to something not blank, and its name.
fn first_set(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (v, name.to_string())))
}

impl Upstream {
    /// Resolves `setting` against the environment (`env` reads a variable;
    /// tests pass a map). `own` are the agent's listening addresses: an
    /// environment proxy pointing there is ignored with a note (it would be
    /// the agent proxying through itself); an explicit one is an error.
    pub fn resolve(
        setting: &ProxySetting,
        env: &dyn Fn(&str) -> Option<String>,
        own: &[SocketAddr],
    ) -> Result<Self, String> {
        let first = |names: &[&str]| first_set(env, names);
        let no_proxy = no_proxy_list(env).map(|(list, name)| {
            let matcher = Matcher::builder().all(String::from("http://proxy.invalid")).no(list).build();
            (Arc::new(matcher), name)
        });
        let mut upstream = Self { no_proxy, ..Self::default() };
        match setting {
            ProxySetting::Direct => upstream.no_proxy = None,
            ProxySetting::Url { url, source } => {
                let proxy = UpstreamProxy::parse(url.expose(), source).map_err(|e| format!("{source}: {e}"))?;
                if proxy.is_one_of(own) {
                    return Err(format!("{source} points at this agent's own address {}", proxy.address()));
                }
                upstream.https = Some(proxy.clone());
                upstream.http = Some(proxy);
            }
            ProxySetting::FromEnvironment => {
                upstream.https = upstream.env_proxy(first(&HTTPS_VARS), own);
                upstream.http = upstream.env_proxy(first(&HTTP_VARS), own);
            }
        }
        Ok(upstream)
    }

    /// The proxy a variable names, unless it is unusable or the agent itself.
    fn env_proxy(&mut self, found: Option<(String, String)>, own: &[SocketAddr]) -> Option<UpstreamProxy> {
        let (value, name) = found?;
        let note = match UpstreamProxy::parse(&value, &name) {
            Ok(proxy) if !proxy.is_one_of(own) => return Some(proxy),
            Ok(proxy) => format!(
                "ignoring {name}={proxy}: that is this agent's own address (set --upstream-proxy none to silence this)"
            ),
            Err(reason) => format!("ignoring {name}: {reason}"),
        };
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
        None
    }

    /// The proxy for `host` (`tls`: a TLS destination), or `None` for a
    /// direct connection (no proxy set, or `NO_PROXY` matches `host`).
    pub fn for_target(&self, tls: bool, host: &str) -> Option<&UpstreamProxy> {
        let proxy = if tls { self.https.as_ref() } else { self.http.as_ref() }?;
        let Some((matcher, _)) = &self.no_proxy else { return Some(proxy) };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let uri: http::Uri = format!("https://{}/", join_host_port(host, 443)).parse().ok()?;
        matcher.intercept(&uri).is_some().then_some(proxy)
    }

    /// One line saying how `host` is reached and why, for `--check`.
    pub fn describe(&self, tls: bool, host: &str) -> String {
        match (self.for_target(tls, host), if tls { &self.https } else { &self.http }) {
            (Some(proxy), _) => format!("through the upstream proxy {proxy} (from {})", proxy.source),
            (None, Some(proxy)) => format!(
                "directly: {} lists it, so {proxy} is not used",
                self.no_proxy.as_ref().map(|(_, name)| name.as_str()).unwrap_or("NO_PROXY")
            ),
            (None, None) => "directly (no upstream proxy set)".into(),
        }
    }
}

/// Why a connection through (or to) the upstream proxy failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach {target}: {reason}")]
    Direct { target: String, reason: String },
    #[error("cannot reach the upstream proxy {proxy}: {reason}")]
    ProxyUnreachable { proxy: String, reason: String },
    #[error("proxy authentication failed at {proxy} (it offers: {offers}; tried {tried})")]
    AuthFailed { proxy: String, offers: String, tried: &'static str },
    #[error(
        "the proxy {proxy} requires authentication (it offers: {offers}); put USER:PASSWORD in the proxy URL (DOMAIN%5Cuser for NTLM)"
    )]
    AuthRequired { proxy: String, offers: String },
    #[error(
        "the proxy {proxy} offers only {offers} authentication, which Fluidity does not speak yet; ask for Basic or NTLM, or a bypass for the server's address"
    )]
    UnsupportedAuth { proxy: String, offers: String },
    #[error("the proxy {proxy} refused CONNECT to {target}: {status}{hint}")]
    Refused { proxy: String, target: String, status: String, hint: &'static str },
    #[error("the proxy {proxy} could not connect to {target}: {status}{detail}")]
    ProxyCouldNotConnect { proxy: String, target: String, status: String, detail: String },
    #[error("the SOCKS5 proxy {proxy} could not connect to {target}: {meaning}")]
    SocksRefused { proxy: String, target: String, meaning: String },
    #[error("the SOCKS5 proxy {proxy} refused this agent: {reason}")]
    SocksAuth { proxy: String, reason: String },
    #[error("the upstream proxy {proxy} broke the protocol: {reason}")]
    Protocol { proxy: String, reason: String },
}

impl UpstreamError {
    /// The proxy refused this agent's credentials (or wants some): retrying
    /// cannot help and, against a directory-backed proxy, would lock the
    /// account.
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            Self::AuthFailed { .. } | Self::AuthRequired { .. } | Self::UnsupportedAuth { .. } | Self::SocksAuth { .. }
        )
    }
}

/// A hint for a refused `CONNECT` to another port than 443.
fn port_hint(port: u16) -> &'static str {
    if port == 443 {
        ""
    } else {
        "; many proxies allow CONNECT only to port 443: run the server on 443 (the ServerPort parameter)"
    }
}

/// A TCP stream to `host:port`: direct, or tunnelled through `proxy`.
pub async fn open(proxy: Option<&UpstreamProxy>, host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
    open_described(proxy, host, port).await.map(|(stream, _)| stream)
}

/// As [`open`], with a line saying how it went (for `--check`).
pub async fn open_described(
    proxy: Option<&UpstreamProxy>,
    host: &str,
    port: u16,
) -> Result<(TcpStream, String), UpstreamError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target = join_host_port(host, port);
    let Some(proxy) = proxy else {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| UpstreamError::Direct { target: target.clone(), reason: e.to_string() })?;
        let _ = stream.set_nodelay(true);
        return Ok((stream, format!("TCP connected to {target} directly")));
    };
    match proxy.scheme {
        Scheme::Http => connect::tunnel(proxy, host, port).await,
        Scheme::Socks5 | Scheme::Socks5h => socks5::tunnel(proxy, host, port).await,
    }
}

/// A TCP connection to the proxy itself.
async fn dial_proxy(proxy: &UpstreamProxy) -> Result<TcpStream, UpstreamError> {
    let stream = TcpStream::connect((proxy.host.as_str(), proxy.port)).await.map_err(|e| {
        let reason = if e.to_string().contains("lookup address") {
            format!("its name does not resolve ({e})")
        } else {
            e.to_string()
        };
        UpstreamError::ProxyUnreachable { proxy: proxy.to_string(), reason }
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn proxy_urls() {
        let p = UpstreamProxy::parse("http://CORP%5Cjane:p%40ss@proxy.corp:3128", "test").unwrap();
        assert_eq!((p.scheme, p.host.as_str(), p.port), (Scheme::Http, "proxy.corp", 3128));
        let (user, password) = p.credentials.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("CORP\\jane", "p@ss"));
        assert_eq!(p.to_string(), "http://CORP\\jane:***@proxy.corp:3128");
        assert!(!format!("{p:?}").contains("p@ss"));
        assert_eq!(UpstreamProxy::parse("proxy:8080", "t").unwrap().scheme, Scheme::Http);
        assert_eq!(UpstreamProxy::parse("http://proxy", "t").unwrap().port, 80);
        assert_eq!(UpstreamProxy::parse("socks5h://[::1]", "t").unwrap().address(), "[::1]:1080");
        assert_eq!(UpstreamProxy::parse("socks5://u:p@10.0.0.1:1081/", "t").unwrap().scheme, Scheme::Socks5);
        for bad in ["https://proxy:443", "ftp://proxy", "http://:8080", "http://proxy:99999", "http://[::1"] {
            assert!(UpstreamProxy::parse(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_follows_curl() {
        let own: [SocketAddr; 1] = ["127.0.0.1:8080".parse().unwrap()];
        let vars = env(&[
            ("https_proxy", "http://low:3128"),
            ("HTTPS_PROXY", "http://up:3128"),
            ("ALL_PROXY", "socks5h://all:1080"),
        ]);
        let up = Upstream::resolve(&ProxySetting::FromEnvironment, &vars, &own).unwrap();
        let proxy = up.for_target(true, "203.0.113.7").unwrap();
        // curl reads the lower-case variable first.
        assert_eq!((proxy.host.as_str(), proxy.source.as_str()), ("low", "https_proxy"));
        // http:// destinations take ALL_PROXY when no http_proxy is set.
        assert_eq!(up.for_target(false, "127.0.0.1").unwrap().host, "all");

        let all = Upstream::resolve(&ProxySetting::FromEnvironment, &env(&[("all_proxy", "socks5://s:1080")]), &own);
        assert_eq!(all.unwrap().for_target(true, "x.example").unwrap().source, "all_proxy");

        let none = Upstream::resolve(&ProxySetting::Direct, &vars, &own).unwrap();
        assert!(none.for_target(true, "x.example").is_none());

        let flag = ProxySetting::Url { url: Secret::new("http://flag:8080"), source: "--upstream-proxy".into() };
        let explicit = Upstream::resolve(&flag, &vars, &own).unwrap();
        assert_eq!(explicit.for_target(true, "x.example").unwrap().host, "flag");
    }

    #[test]
    fn no_proxy_suffixes_cidrs_and_star() {
        let own = [];
        let vars = env(&[("HTTPS_PROXY", "http://p:3128"), ("no_proxy", "corp.example, 198.18.0.0/15,.internal")]);
        let up = Upstream::resolve(&ProxySetting::FromEnvironment, &vars, &own).unwrap();
        for direct in ["corp.example", "api.corp.example", "198.19.1.1", "db.internal"] {
            assert!(up.for_target(true, direct).is_none(), "{direct}");
        }
        for proxied in ["notcorp.example", "203.0.113.7", "internal.example"] {
            assert!(up.for_target(true, proxied).is_some(), "{proxied}");
        }
        assert!(up.describe(true, "corp.example").contains("no_proxy lists it"));
        let star = env(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "*")]);
        let up = Upstream::resolve(&ProxySetting::FromEnvironment, &star, &own).unwrap();
        assert!(up.for_target(true, "anything.example").is_none());
    }

    #[test]
    fn never_itself() {
        let own: [SocketAddr; 1] = ["127.0.0.1:8080".parse().unwrap()];
        let vars = env(&[("HTTPS_PROXY", "http://127.0.0.1:8080"), ("ALL_PROXY", "http://localhost:8080")]);
        let up = Upstream::resolve(&ProxySetting::FromEnvironment, &vars, &own).unwrap();
        assert!(up.for_target(true, "203.0.113.7").is_none());
        assert!(
            up.notes.iter().any(|n| n.contains("ignoring HTTPS_PROXY") && n.contains("own address")),
            "{:?}",
            up.notes
        );
        let other_port = env(&[("HTTPS_PROXY", "http://127.0.0.1:3128")]);
        assert!(Upstream::resolve(&ProxySetting::FromEnvironment, &other_port, &own).unwrap().https.is_some());
        let wildcard: [SocketAddr; 1] = ["0.0.0.0:8080".parse().unwrap()];
        assert!(Upstream::resolve(&ProxySetting::FromEnvironment, &vars, &wildcard).unwrap().https.is_none());
        // On a wildcard address, a proxy elsewhere on the network at the same port is not the agent.
        let corporate = env(&[("HTTPS_PROXY", "http://10.1.2.3:8080")]);
        assert!(Upstream::resolve(&ProxySetting::FromEnvironment, &corporate, &wildcard).unwrap().https.is_some());
        let flag = ProxySetting::Url { url: Secret::new("http://localhost:8080"), source: "--upstream-proxy".into() };
        assert!(Upstream::resolve(&flag, &vars, &own).unwrap_err().contains("own address"));
        let secret = ProxySetting::Url { url: Secret::new("http://u:hunter2@p:1"), source: "--upstream-proxy".into() };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_closed_proxy_port_is_named() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let proxy = UpstreamProxy::parse(&format!("socks5h://{closed}"), "test").unwrap();
        let error = open(Some(&proxy), "fluidity.test", 443).await.unwrap_err().to_string();
        assert!(error.contains(&format!("cannot reach the upstream proxy socks5h://{closed}: ")), "{error}");
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }

    #[test]
    fn parse_errors_never_quote_a_password() {
        for (url, want, secret) in [
            ("http://jane:s3cr/et@proxy:3128", "percent-encode", "s3cr"),
            ("jane:hunter2", "not a number", "hunter2"),
            ("http://jane:1234/xy@127.0.0.1:3128", "percent-encode", "1234"),
            ("http://proxy.corp:3128:1", "not a number", "3128:1"),
        ] {
            let error = UpstreamProxy::parse(url, "t").unwrap_err();
            assert!(error.contains(want) && !error.contains(secret), "{url}: {error}");
        }
    }
}
