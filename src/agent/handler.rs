//! One request from a local client, carried over the tunnel:
//!
//! - `CONNECT host:port` → an HTTP/2 `CONNECT` stream to the server, joined to
//!   the client's connection once the server answers 200;
//! - an `Upgrade` request (`ws://`) → a `CONNECT` stream to the origin, over
//!   which the agent speaks HTTP/1.1 to complete the upgrade end to end;
//! - any other absolute-form request → forwarded as an HTTP/2 request, bodies
//!   streamed both ways, hop-by-hop headers removed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, warn};

use super::http2::{Ready, ResponseBody, Stream};
use super::pool::{Lease, Pool, TunnelError};
use super::socks;
use super::target::{Target, classify, tunnel_authority};
use crate::config::Secret;
use crate::http_util::{
    Body, boxed, empty, malformed_body, noting_failure, strip_hop_by_hop, text_response, wants_upgrade,
};
use crate::protocol::DIAL_ERROR_HEADER;
use crate::relay::{Activity, relay};

/// Serves local proxy requests through the pool.
pub(super) struct Handler {
    pub(super) pool: Arc<Pool>,
    pub(super) tracker: TaskTracker,
    pub(super) idle_timeout: Duration,
    pub(super) proxy_auth: Option<Secret>,
    pub(super) activity: Arc<Activity>,
    /// The local address the agent listens on (for the PAC file).
    pub(super) listen: std::net::SocketAddr,
    /// Name suffixes and CIDR blocks the PAC file sends DIRECT.
    pub(super) pac_direct: Arc<Vec<String>>,
    /// Requests served since start (the status page).
    pub(super) requests: std::sync::atomic::AtomicU64,
    pub(super) started: std::time::Instant,
}

/// A reply for the local client, already formatted.
type Reply = Response<Body>;

impl Handler {
    pub(super) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Reply, Infallible> {
        let span = debug_span!("request", method = %req.method(), target = %req.uri());
        let reply = async {
            // The PAC file is served to anyone who can reach the port: a
            // browser fetches it before it knows of any proxy credentials.
            let reply = if is_pac_request(&req) {
                self.pac(&req)
            } else if is_status_request(&req) {
                self.status(&req)
            } else if !self.authorized(&req) {
                proxy_auth_required()
            } else {
                self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if req.method() == Method::CONNECT {
                    self.connect(req).await
                } else if req.version() == Version::HTTP_11 && wants_upgrade(req.headers()) {
                    self.upgrade(req).await
                } else {
                    self.forward(req).await
                }
            };
            debug!(status = reply.status().as_u16(), "answered");
            reply
        }
        .instrument(span)
        .await;
        Ok(reply)
    }

    async fn connect(&self, req: Request<Incoming>) -> Reply {
        let authority = match classify(req.method(), req.uri()) {
            Target::Connect(authority) => authority,
            Target::Http { .. } => return text_response(StatusCode::BAD_REQUEST, "CONNECT needs a host:port target"),
            Target::Invalid(reason) => return text_response(StatusCode::BAD_REQUEST, reason),
        };
        let server_side = match self.open_tunnel(&authority).await {
            Ok(upgraded) => upgraded,
            Err(reply) => return reply,
        };
        let client_side = hyper::upgrade::on(req);
        let (idle, activity) = (self.idle_timeout, self.activity.clone());
        self.tracker.spawn(
            async move {
                match client_side.await {
                    Ok(client) => copy(TokioIo::new(client), server_side, idle, activity).await,
                    Err(error) => warn!(%error, "client CONNECT upgrade failed"),
                }
            }
            .in_current_span(),
        );
        Response::new(empty())
    }

    /// A SOCKS5 client (the listener saw its first byte): negotiate within
    /// `deadline`, open the CONNECT stream, answer with its reply code, relay.
    /// `waiting` is released once the client has asked for a destination.
    pub(super) async fn socks(
        self: Arc<Self>,
        mut tcp: tokio::net::TcpStream,
        waiting: tokio::sync::OwnedSemaphorePermit,
        deadline: Duration,
    ) {
        let credentials = self.proxy_auth.as_ref().map(Secret::expose);
        let destination = match tokio::time::timeout(deadline, socks::negotiate(&mut tcp, credentials)).await {
            Ok(Ok(destination)) => destination,
            Ok(Err(error)) => return debug!(%error, "SOCKS negotiation failed"),
            Err(_) => return debug!("SOCKS client too slow, closing"),
        };
        drop(waiting);
        let span = debug_span!("socks", target = %destination.authority());
        async move {
            let opened = match Authority::try_from(destination.authority()) {
                Ok(authority) => self.open_tunnel(&authority).await,
                Err(_) => Err(text_response(StatusCode::BAD_REQUEST, "bad SOCKS destination")),
            };
            let tunnel = match opened {
                Ok(tunnel) => tunnel,
                Err(refusal) => {
                    let kind = refusal.headers().get(DIAL_ERROR_HEADER).and_then(|v| v.to_str().ok());
                    let reply = socks::Reply::for_server_answer(refusal.status(), kind);
                    debug!(status = refusal.status().as_u16(), ?reply, "SOCKS CONNECT refused");
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, &reply.message()).await;
                    return;
                }
            };
            if tokio::io::AsyncWriteExt::write_all(&mut tcp, &socks::Reply::Succeeded.message()).await.is_err() {
                return;
            }
            let ended = relay(tcp, tunnel, self.idle_timeout, self.activity.clone()).await;
            debug!(?ended, "SOCKS tunnel ended");
        }
        .instrument(span)
        .await;
    }

    async fn upgrade(&self, mut req: Request<Incoming>) -> Reply {
        let (authority, path) = match classify(req.method(), req.uri()) {
            Target::Http { authority, path } => (authority, path),
            Target::Connect(_) => return text_response(StatusCode::BAD_REQUEST, "CONNECT cannot be upgraded"),
            Target::Invalid(reason) => return text_response(StatusCode::BAD_REQUEST, reason),
        };
        let Some(target) = tunnel_authority(&authority) else {
            return text_response(StatusCode::BAD_REQUEST, format!("bad target {authority}"));
        };
        let tunnel = match self.open_tunnel(&target).await {
            Ok(tunnel) => tunnel,
            Err(reply) => return reply,
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(tunnel)).await {
                Ok(pair) => pair,
                Err(error) => {
                    return text_response(
                        StatusCode::BAD_GATEWAY,
                        format!("HTTP handshake with {authority} failed: {error}"),
                    );
                }
            };
        tokio::spawn(async move { connection.with_upgrades().await }.in_current_span());
        let client_side = hyper::upgrade::on(&mut req);
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        parts.uri = path;
        if !parts.headers.contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(HOST, host);
        }
        let mut response = match sender.send_request(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(error) => {
                return text_response(StatusCode::BAD_GATEWAY, format!("{authority} closed the connection: {error}"));
            }
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let origin_side = hyper::upgrade::on(&mut response);
            let (idle, activity) = (self.idle_timeout, self.activity.clone());
            self.tracker.spawn(join(client_side, origin_side, idle, activity).in_current_span());
        }
        strip_hop_by_hop(response.headers_mut(), switching);
        response.map(boxed)
    }

    async fn forward(&self, req: Request<Incoming>) -> Reply {
        if let Target::Invalid(reason) = classify(req.method(), req.uri()) {
            return text_response(StatusCode::BAD_REQUEST, reason);
        }
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        // HTTP/2 carries the host in :authority, taken from the absolute URI.
        parts.headers.remove(HOST);
        parts.version = Version::HTTP_2;
        let (body, failure) = noting_failure(body);
        let mut response = match self.send(Request::from_parts(parts, boxed(body))).await {
            Ok(response) => response,
            Err(reply) => return failure.get().map_or(reply, |failure| malformed_body(failure)),
        };
        strip_hop_by_hop(response.headers_mut(), false);
        response.map(boxed)
    }

    /// Sends `request` over the tunnel.
    async fn send(&self, request: Request<Body>) -> Result<Response<ResponseBody>, Reply> {
        let ready = self.ready().await?;
        ready.send(request).await.map_err(|e| dropped(&e))
    }

    /// A connection ready for one more stream. If the first one picked was
    /// going away, nothing was sent on it and another one is taken.
    async fn ready(&self) -> Result<Ready, Reply> {
        let lease = self.pool.sender().await.map_err(|e| tunnel_down(&e))?;
        match lease.sender.ready().await {
            Ok(ready) => Ok(ready),
            Err(error) => {
                debug!(%error, "the tunnel connection is going away, taking another");
                let Lease { sender, .. } = self.pool.retry(&lease).await.map_err(|e| tunnel_down(&e))?;
                sender.ready().await.map_err(|e| dropped(&e))
            }
        }
    }

    /// Opens a CONNECT stream to `target` through the server. On failure the
    /// server's own reply (502, 504, 403 with its reason) is passed back.
    async fn open_tunnel(&self, target: &Authority) -> Result<Stream, Reply> {
        let ready = self.ready().await?;
        match ready.connect(target).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(mut refusal)) => {
                strip_hop_by_hop(refusal.headers_mut(), false);
                Err(refusal.map(boxed))
            }
            Err(error) => Err(text_response(StatusCode::BAD_GATEWAY, format!("CONNECT to {target} failed: {error}"))),
        }
    }

    /// Whether `req` is one this proxy serves: the PAC file, the status, or authorised.
    pub(super) fn admits(&self, req: &Request<Incoming>) -> bool {
        is_pac_request(req) || is_status_request(req) || self.authorized(req)
    }

    /// `GET /status`: the agent's report, for this machine's programs only
    /// (see [`super::status`]); read-only whatever the method.
    fn status(&self, req: &Request<Incoming>) -> Reply {
        let peer = req.extensions().get::<super::status::Peer>().map(|p| p.0);
        let host = req.headers().get(HOST).and_then(|v| v.to_str().ok());
        if let Some(why) = super::status::refusal(peer, host) {
            return text_response(StatusCode::FORBIDDEN, why);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text_response(StatusCode::METHOD_NOT_ALLOWED, "the status is read-only: GET /status");
        }
        let requests = self.requests.load(std::sync::atomic::Ordering::Relaxed);
        let report = super::status::report(&self.pool, &self.activity, requests, self.started);
        let mut reply = Response::new(boxed(http_body_util::Full::new(bytes::Bytes::from(report.to_string()))));
        reply.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        reply.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        reply
    }

    /// The proxy auto-config file: HTTP and SOCKS5 at the address the client
    /// used (the Host header, else the bound address), local names direct.
    fn pac(&self, req: &Request<Incoming>) -> Reply {
        let host = req.headers().get(HOST).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Authority>().ok());
        let ip = self.listen.ip();
        let fallback = if ip.is_unspecified() { "127.0.0.1".to_owned() } else { ip.to_string() };
        let name = host.as_ref().map_or(fallback, |h| h.host().to_owned());
        let port = host.and_then(|h| h.port_u16()).unwrap_or(self.listen.port());
        let proxy = if name.contains(':') && !name.starts_with('[') {
            format!("[{name}]:{port}")
        } else {
            format!("{name}:{port}")
        };
        let script = super::pac::script(&proxy, &self.pac_direct);
        let mut reply = Response::new(boxed(http_body_util::Full::new(bytes::Bytes::from(script))));
        reply
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-ns-proxy-autoconfig"));
        reply
    }

    /// True when no proxy authentication is configured or the request carries it.
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        use base64::Engine;
        let Some(expected) = &self.proxy_auth else { return true };
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let Some(credentials) = req
            .headers()
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            .and_then(|(scheme, credentials)| scheme.eq_ignore_ascii_case("basic").then_some(credentials))
        else {
            return false;
        };
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials.trim()).unwrap_or_default();
        constant_time_eq(&decoded, expected.expose().as_bytes())
    }
}

/// Where the agent serves its PAC file, on its own port.
pub const PAC_PATH: &str = "/proxy.pac";

/// A request in origin form for `/status`: for the agent itself, whatever the method.
fn is_status_request(req: &Request<Incoming>) -> bool {
    req.uri().authority().is_none() && req.uri().path() == super::status::STATUS_PATH
}

/// `GET /proxy.pac` in origin form: a request for the agent itself.
fn is_pac_request(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET && req.uri().authority().is_none() && req.uri().path() == PAC_PATH
}

fn tunnel_down(error: &TunnelError) -> Reply {
    warn!(%error, "no tunnel connection");
    text_response(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

fn dropped(error: &h2::Error) -> Reply {
    text_response(StatusCode::BAD_GATEWAY, format!("the tunnel dropped the request: {error}"))
}

fn proxy_auth_required() -> Reply {
    let mut reply = text_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "this proxy requires Basic authentication: use curl --proxy-user USER:PASSWORD, or USER:PASSWORD@ in the proxy URL",
    );
    reply.headers_mut().insert(http::header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"fluidity\""));
    reply
}

/// Compares in time that does not depend on where the inputs differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn join(client: OnUpgrade, origin: OnUpgrade, idle: Duration, activity: Arc<Activity>) {
    match tokio::try_join!(client, origin) {
        Ok((client, origin)) => copy(TokioIo::new(client), TokioIo::new(origin), idle, activity).await,
        Err(error) => warn!(%error, "upgrade failed"),
    }
}

async fn copy<A, B>(a: A, b: B, idle: Duration, activity: Arc<Activity>)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ended = relay(a, b, idle, activity).await;
    debug!(?ended, "tunnel ended");
}
