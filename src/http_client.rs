//! A one-shot HTTP/1.1 client for small control calls: the Lambda's signed EC2
//! query, the agent's calls to the control API, the deploy tool's API-key
//! call, the server's ECS task-metadata read and its `healthcheck`
//! subcommand. `http://` or `https://` (rustls with ring, the webpki roots,
//! TLS 1.2+ as public endpoints need); the body is collected as text. The
//! request goes out in origin form (`GET /path?query`, RFC 9112 §3.2.1) with
//! a `Host` header, as servers other than proxies expect. Callers bound it
//! with their own timeout. The agent's client goes out through its upstream
//! proxy when one applies ([`OneShot::with_upstream`]): a `CONNECT` tunnel
//! (or SOCKS5) to the host, then the same request inside.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("bad URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("connect to {host}: {source}")]
    Connect { host: String, source: std::io::Error },
    #[error("{0}")]
    Upstream(crate::upstream::UpstreamError),
    #[error("TLS with {host}: {source}")]
    Tls { host: String, source: std::io::Error },
    #[error("HTTP with {host}: {source}")]
    Http { host: String, source: hyper::Error },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// A client for one request at a time; cheap to clone.
#[derive(Clone)]
pub struct OneShot {
    tls: tokio_rustls::TlsConnector,
    upstream: Arc<crate::upstream::Upstream>,
}

impl OneShot {
    /// Builds the TLS configuration (the webpki roots).
    pub fn new() -> Result<Self, HttpClientError> {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpClientError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: tokio_rustls::TlsConnector::from(Arc::new(tls)), upstream: Arc::default() })
    }

    /// Sends requests through `upstream`'s proxy where it applies.
    pub fn with_upstream(self, upstream: crate::upstream::Upstream) -> Self {
        Self { upstream: Arc::new(upstream), ..self }
    }

    /// Sends `request` (its URI absolute: scheme and host say where) and
    /// returns the status and body text.
    pub async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<(u16, String), HttpClientError> {
        let answer = self.exchange(request).await?;
        Ok((answer.status, answer.body))
    }

    /// As [`OneShot::send`], with the answer's headers.
    pub async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<Answer, HttpClientError> {
        let uri = request.uri().clone();
        let bad = |reason: &str| HttpClientError::BadUrl { url: uri.to_string(), reason: reason.into() };
        let host = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let request = origin_form(request, host.as_str()).map_err(|e| bad(&e))?;
        let port = host.port_u16().unwrap_or(if https { 443 } else { 80 });
        let hostname = host.host().trim_start_matches('[').trim_end_matches(']');
        let shown = host.to_string();
        let tcp = match self.upstream.for_target(https, hostname) {
            Some(proxy) => {
                crate::upstream::open(Some(proxy), hostname, port).await.map_err(HttpClientError::Upstream)?
            }
            None => TcpStream::connect((hostname, port))
                .await
                .map_err(|source| HttpClientError::Connect { host: shown.clone(), source })?,
        };
        if https {
            let name = rustls::pki_types::ServerName::try_from(hostname.to_string())
                .map_err(|e| bad(&format!("not a host name: {e}")))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|source| HttpClientError::Tls { host: shown.clone(), source })?;
            exchange(TokioIo::new(tls), request).await.map_err(|source| HttpClientError::Http { host: shown, source })
        } else {
            exchange(TokioIo::new(tcp), request).await.map_err(|source| HttpClientError::Http { host: shown, source })
        }
    }
}

/// The request with its target in origin form and a `Host` header.
fn origin_form(request: http::Request<Full<Bytes>>, host: &str) -> Result<http::Request<Full<Bytes>>, String> {
    let (mut parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = target.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if !parts.headers.contains_key(http::header::HOST) {
        parts
            .headers
            .insert(http::header::HOST, host.parse().map_err(|e: http::header::InvalidHeaderValue| e.to_string())?);
    }
    Ok(http::Request::from_parts(parts, body))
}

/// An answer: status, headers and the body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

async fn exchange<T>(io: T, request: http::Request<Full<Bytes>>) -> Result<Answer, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that records the request head it gets and answers 200 "ok".
    async fn recording_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { answer_once(listener, "ok").await });
        (addr, task)
    }

    /// Reads a request head, up to its blank line.
    pub(crate) async fn read_head(tcp: &mut tokio::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// Accepts one connection, reads its request head, answers 200 with
    /// `body`; returns the head (for the tests of the callers too).
    pub(crate) async fn answer_once(listener: tokio::net::TcpListener, body: &str) -> String {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        tcp.write_all(answer.as_bytes()).await.unwrap();
        head
    }

    #[tokio::test]
    async fn sends_origin_form_with_a_host_header() {
        let (addr, head) = recording_server().await;
        let request = http::Request::post(format!("http://{addr}/api/wake?x=1"))
            .header("x-api-key", "k")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, body) = OneShot::new().unwrap().send(request).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "ok"));
        let head = head.await.unwrap();
        assert!(head.starts_with("POST /api/wake?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("host: {addr}\r\n")), "{head}");
    }

    #[tokio::test]
    async fn bad_urls_and_dead_hosts_are_named() {
        let client = OneShot::new().unwrap();
        let send = |uri: &str| client.send(http::Request::get(uri).body(Full::new(Bytes::new())).unwrap());
        assert!(matches!(send("ftp://127.0.0.1/").await, Err(HttpClientError::BadUrl { .. })));
        assert!(matches!(send("/relative").await, Err(HttpClientError::BadUrl { .. })));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let error = send(&format!("http://{closed}/")).await.unwrap_err();
        assert!(matches!(error, HttpClientError::Connect { .. }), "{error}");
        assert!(error.to_string().contains(&closed.to_string()), "{error}");
    }
}
