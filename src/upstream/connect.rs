//! HTTP `CONNECT` through a proxy, with Basic or NTLM authentication.
//!
//! Written here rather than with hyper-util's `Tunnel` connector, which
//! sends one `CONNECT` with a fixed header and reports a refusal without the
//! proxy's status line or its `Proxy-Authenticate` offers: NTLM needs three
//! messages on one connection, and the errors a person reads need both.
//! No credentials are sent until the proxy asks (a `407` naming its schemes);
//! NTLM is chosen over Basic when both are offered (it never sends the
//! password). Some proxies answer a wrong password with `401`: it counts as
//! `407`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{UpstreamError, UpstreamProxy, dial_proxy, join_host_port, ntlm, port_hint};

/// Largest proxy answer head read, and largest error body drained to keep
/// the connection for the next authentication step.
const MAX_HEAD: usize = 16 * 1024;
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// The parts of a proxy's answer to `CONNECT` that matter here.
struct Answer {
    status: u16,
    reason: String,
    /// Each challenge of the `Proxy-Authenticate` (or `WWW-Authenticate`)
    /// headers, one header possibly holding several (RFC 9110 §11.6.1).
    challenges: Vec<String>,
    /// Whether the connection may carry the next request, and if not why.
    reusable: Result<(), &'static str>,
    /// Squid's `X-Squid-Error` (e.g. `ERR_DNS_FAIL 0`), naming why it failed.
    squid_error: Option<String>,
}

impl Answer {
    /// `407 Proxy Authentication Required`, as the proxy wrote it.
    fn status_line(&self) -> String {
        format!("{} {}", self.status, self.reason).trim_end().to_string()
    }

    /// The offered schemes, e.g. `Basic, NTLM`.
    fn offers(&self) -> String {
        let mut schemes: Vec<&str> = Vec::new();
        for challenge in &self.challenges {
            let scheme = challenge.split_whitespace().next().unwrap_or_default();
            if !scheme.is_empty() && !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
                schemes.push(scheme);
            }
        }
        if schemes.is_empty() { "no scheme named".into() } else { schemes.join(", ") }
    }

    fn offers_scheme(&self, scheme: &str) -> bool {
        self.challenges.iter().any(|c| c.split_whitespace().next().is_some_and(|s| s.eq_ignore_ascii_case(scheme)))
    }

    /// The NTLM challenge message carried by a `407`, if any.
    fn ntlm_challenge(&self) -> Option<Vec<u8>> {
        self.challenges.iter().find_map(|c| {
            let (scheme, data) = c.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("NTLM").then(|| BASE64.decode(data.trim()).ok()).flatten()
        })
    }
}

/// A stream to `host:port` through the HTTP proxy `proxy`, and how it went
/// (the proxy's answer and the authentication used).
pub(super) async fn tunnel(proxy: &UpstreamProxy, host: &str, port: u16) -> Result<(TcpStream, String), UpstreamError> {
    let target = join_host_port(host, port);
    let mut stream = dial_proxy(proxy).await?;
    let first = exchange(&mut stream, proxy, &target, None).await?;
    if first.status == 200 {
        return Ok((stream, format!("CONNECT {target} answered {}", first.status_line())));
    }
    if !matches!(first.status, 401 | 407) {
        return Err(refused(proxy, &target, port, &first));
    }
    let offers = first.offers();
    let Some((user, password)) = &proxy.credentials else {
        return Err(UpstreamError::AuthRequired { proxy: proxy.to_string(), offers });
    };
    if first.reusable.is_err() {
        stream = dial_proxy(proxy).await?;
    }
    let (scheme, last) = if first.offers_scheme("NTLM") {
        let (domain, user) = user.split_once('\\').unwrap_or(("", user));
        let credentials = ntlm::NtlmCredentials {
            domain: domain.to_string(),
            user: user.to_string(),
            password: password.expose().to_string(),
        };
        ("NTLM", ntlm_exchange(&mut stream, proxy, &target, &credentials).await?)
    } else if first.offers_scheme("Basic") {
        let token = BASE64.encode(format!("{user}:{}", password.expose()));
        ("Basic", exchange(&mut stream, proxy, &target, Some(&format!("Basic {token}"))).await?)
    } else {
        return Err(UpstreamError::UnsupportedAuth { proxy: proxy.to_string(), offers });
    };
    match last.status {
        200 => Ok((stream, format!("CONNECT {target} answered {} after {scheme} authentication", last.status_line()))),
        401 | 407 => Err(UpstreamError::AuthFailed { proxy: proxy.to_string(), offers, tried: scheme }),
        _ => Err(refused(proxy, &target, port, &last)),
    }
}

/// NTLM's negotiate → challenge → authenticate, on one connection.
async fn ntlm_exchange(
    stream: &mut TcpStream,
    proxy: &UpstreamProxy,
    target: &str,
    credentials: &ntlm::NtlmCredentials,
) -> Result<Answer, UpstreamError> {
    let negotiate = format!("NTLM {}", BASE64.encode(ntlm::negotiate_message()));
    let challenged = exchange(stream, proxy, target, Some(&negotiate)).await?;
    if challenged.status == 200 {
        return Ok(challenged); // the proxy let the negotiate message through
    }
    let protocol = |reason: String| UpstreamError::Protocol { proxy: proxy.to_string(), reason };
    let Some(challenge) = challenged.ntlm_challenge().filter(|_| matches!(challenged.status, 401 | 407)) else {
        return Ok(challenged); // refused outright: the caller names the status
    };
    if let Err(why) = challenged.reusable {
        return Err(protocol(format!("it did not keep the connection for the rest of the NTLM exchange ({why})")));
    }
    let authenticate = ntlm::authenticate(credentials, &challenge)
        .map_err(|e| protocol(format!("its NTLM challenge is unusable: {e}")))?;
    exchange(stream, proxy, target, Some(&format!("NTLM {}", BASE64.encode(authenticate)))).await
}

/// A 5xx means the proxy tried and failed to reach the target; anything
/// else is a refusal (a 403 from an access rule, typically).
fn refused(proxy: &UpstreamProxy, target: &str, port: u16, answer: &Answer) -> UpstreamError {
    let status = answer.status_line();
    let (proxy, target) = (proxy.to_string(), target.to_string());
    if answer.status >= 500 {
        let detail = answer.squid_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
        return UpstreamError::ProxyCouldNotConnect { proxy, target, status, detail };
    }
    UpstreamError::Refused { proxy, target, status, hint: port_hint(port) }
}

/// Sends one `CONNECT` and reads the answer's head (and an error's body, so
/// the connection can carry the next step).
async fn exchange(
    stream: &mut TcpStream,
    proxy: &UpstreamProxy,
    target: &str,
    authorization: Option<&str>,
) -> Result<Answer, UpstreamError> {
    let broken = |e: std::io::Error| UpstreamError::ProxyUnreachable {
        proxy: proxy.to_string(),
        reason: format!("the connection broke during CONNECT ({e})"),
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Connection: Keep-Alive\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(broken)?;
    let (mut answer, content_length, extra) = read_head(stream, proxy).await?;
    if answer.status == 200 {
        if extra != 0 {
            return Err(UpstreamError::Protocol {
                proxy: proxy.to_string(),
                reason: "it sent bytes after its 200 before the tunnel carried any".into(),
            });
        }
        return Ok(answer);
    }
    // Keep the connection only if the whole body can be read and dropped.
    match content_length {
        Some(length) if answer.reusable.is_ok() && length <= MAX_DRAINED_BODY && extra <= length => {
            let mut rest = vec![0; length - extra];
            stream.read_exact(&mut rest).await.map_err(broken)?;
        }
        Some(_) if answer.reusable.is_ok() => answer.reusable = Err("its answer's body is too large to skip"),
        None if answer.reusable.is_ok() => answer.reusable = Err("its answer has no Content-Length"),
        _ => {}
    }
    Ok(answer)
}

/// Reads an answer head; also its `Content-Length` and how many body bytes
/// were read with it.
async fn read_head(
    stream: &mut TcpStream,
    proxy: &UpstreamProxy,
) -> Result<(Answer, Option<usize>, usize), UpstreamError> {
    let protocol = |reason: String| UpstreamError::Protocol { proxy: proxy.to_string(), reason };
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let read = stream.read(&mut chunk).await.map_err(|e| UpstreamError::ProxyUnreachable {
            proxy: proxy.to_string(),
            reason: format!("the connection broke before it answered CONNECT ({e})"),
        })?;
        if read == 0 {
            return Err(protocol("it closed the connection without answering CONNECT".into()));
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buffer) {
            Ok(httparse::Status::Complete(head_len)) => {
                let answer = answer_of(&response);
                let length = header(&response, "content-length").and_then(|v| v.trim().parse().ok());
                return Ok((answer, length, buffer.len() - head_len));
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(protocol(format!("its answer head exceeds {MAX_HEAD} bytes"))),
            Err(e) => {
                return Err(protocol(format!("its answer to CONNECT is not HTTP ({e}); is it really an HTTP proxy?")));
            }
        }
    }
}

fn answer_of(response: &httparse::Response<'_, '_>) -> Answer {
    let challenges = response
        .headers
        .iter()
        .filter(|h| {
            h.name.eq_ignore_ascii_case("proxy-authenticate") || h.name.eq_ignore_ascii_case("www-authenticate")
        })
        .flat_map(|h| split_challenges(&String::from_utf8_lossy(h.value)))
        .collect();
    let connection: Vec<String> = ["connection", "proxy-connection"]
        .iter()
        .filter_map(|name| header(response, name))
        .map(|v| v.to_ascii_lowercase())
        .collect();
    let says = |word: &str| connection.iter().any(|v| v.split(',').any(|t| t.trim() == word));
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when told.
    let reusable = if says("close") {
        Err("it answered with Connection: close")
    } else if response.version == Some(1) || says("keep-alive") {
        Ok(())
    } else {
        Err("it answered in HTTP/1.0 without keep-alive")
    };
    Answer {
        status: response.code.unwrap_or_default(),
        reason: response.reason.unwrap_or_default().to_string(),
        challenges,
        reusable,
        squid_error: header(response, "x-squid-error").map(str::to_string),
    }
}

/// The challenges in one `Proxy-Authenticate` value: a challenge starts with
/// a scheme token; the comma-separated parts after it that hold `=` (outside
/// quotes) are its parameters (RFC 9110 §11.6.1: `NTLM, Basic realm="a, b"`).
fn split_challenges(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    let mut challenges: Vec<String> = Vec::new();
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let first = part.split_whitespace().next().unwrap_or_default();
        let is_parameter = first.contains('=') && !first.ends_with('=');
        match challenges.last_mut() {
            Some(last) if is_parameter => {
                last.push_str(", ");
                last.push_str(part);
            }
            _ => challenges.push(part.to_string()),
        }
    }
    challenges
}

fn header<'a>(response: &'a httparse::Response<'_, '_>, name: &str) -> Option<&'a str> {
    response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamProxy;
    use tokio::net::TcpListener;

    /// A proxy that answers each request head with the next scripted answer
    /// and records what it received.
    async fn scripted(answers: Vec<&'static str>) -> (UpstreamProxy, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    if socket.read(&mut byte).await.unwrap() == 0 {
                        return seen;
                    }
                    head.push(byte[0]);
                }
                seen.push(String::from_utf8(head).unwrap());
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        let url = format!("http://CORP%5Cjane:secret@{addr}");
        (UpstreamProxy::parse(&url, "test").unwrap(), task)
    }

    const BASIC_407: &str = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nProxy-Authenticate: Negotiate\r\nContent-Length: 5\r\n\r\nnope!";

    #[tokio::test]
    async fn basic_after_a_407_then_failure_names_the_offers() {
        let (proxy, seen) = scripted(vec![BASIC_407, "HTTP/1.1 200 Connection established\r\n\r\n"]).await;
        tunnel(&proxy, "fluidity.test", 443).await.unwrap();
        let seen = seen.await.unwrap();
        assert!(seen[0].starts_with("CONNECT fluidity.test:443 HTTP/1.1\r\n") && !seen[0].contains("Authorization"));
        let token = BASE64.encode("CORP\\jane:secret");
        assert!(seen[1].contains(&format!("Proxy-Authorization: Basic {token}")), "{}", seen[1]);

        let (proxy, _) = scripted(vec![BASIC_407, BASIC_407]).await;
        let error = tunnel(&proxy, "fluidity.test", 443).await.unwrap_err().to_string();
        assert!(error.starts_with("proxy authentication failed at http://CORP\\jane:***@127.0.0.1:"), "{error}");
        assert!(error.ends_with("(it offers: Basic, Negotiate; tried Basic)") && !error.contains("secret"), "{error}");
    }

    #[tokio::test]
    async fn a_401_counts_as_a_407_and_http_1_0_keep_alive_keeps_the_connection() {
        // One connection only: the second CONNECT must travel on the first one.
        let first = "HTTP/1.0 401 Unauthorized\r\nProxy-Connection: keep-alive\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 2\r\n\r\nno";
        let (proxy, seen) = scripted(vec![first, "HTTP/1.0 200 Connection established\r\n\r\n"]).await;
        let (_, how) = tunnel(&proxy, "fluidity.test", 443).await.unwrap();
        assert!(how.ends_with("after Basic authentication"), "{how}");
        assert_eq!(seen.await.unwrap().len(), 2);
    }

    #[test]
    fn one_header_may_hold_several_challenges() {
        let got = split_challenges(r#"NTLM, Basic realm="corp, east", charset="UTF-8", Negotiate abc=="#);
        assert_eq!(got, ["NTLM", r#"Basic realm="corp, east", charset="UTF-8""#, "Negotiate abc=="]);
        let answer =
            Answer { status: 407, reason: String::new(), challenges: got, reusable: Ok(()), squid_error: None };
        assert_eq!(answer.offers(), "NTLM, Basic, Negotiate");
        assert!(answer.offers_scheme("basic"));
    }

    #[tokio::test]
    async fn refusals_and_unsupported_schemes_are_named() {
        let (proxy, _) = scripted(vec!["HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"]).await;
        let error = tunnel(&proxy, "198.18.2.2", 8443).await.unwrap_err().to_string();
        assert!(
            error.contains(
                "refused CONNECT to 198.18.2.2:8443: 403 Forbidden; many proxies allow CONNECT only to port 443"
            ),
            "{error}"
        );
        let unreachable =
            "HTTP/1.1 503 Service Unavailable\r\nX-Squid-Error: ERR_CONNECT_FAIL 111\r\nContent-Length: 0\r\n\r\n";
        let (proxy, _) = scripted(vec![unreachable]).await;
        let error = tunnel(&proxy, "fluidity.test", 443).await.unwrap_err().to_string();
        let line = "could not connect to fluidity.test:443: 503 Service Unavailable (ERR_CONNECT_FAIL 111)";
        assert!(error.ends_with(line), "{error}");
        let negotiate = "HTTP/1.1 407 No\r\nProxy-Authenticate: Negotiate\r\nContent-Length: 0\r\n\r\n";
        let (proxy, _) = scripted(vec![negotiate]).await;
        let error = tunnel(&proxy, "fluidity.test", 443).await.unwrap_err().to_string();
        assert!(error.contains("offers only Negotiate authentication"), "{error}");
        let (mut anonymous, _) = scripted(vec![BASIC_407]).await;
        anonymous.credentials = None;
        let error = tunnel(&anonymous, "fluidity.test", 443).await.unwrap_err().to_string();
        assert!(error.contains("requires authentication (it offers: Basic, Negotiate)"), "{error}");
        let (proxy, _) = scripted(vec!["SSH-2.0-OpenSSH_9.2\r\n\r\n"]).await;
        let error = tunnel(&proxy, "fluidity.test", 443).await.unwrap_err().to_string();
        assert!(error.contains("is not HTTP"), "{error}");
    }
}
