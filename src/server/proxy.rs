//! One proxied request: `CONNECT host:port` becomes a byte tunnel; an
//! absolute-form request is forwarded to the origin over HTTP/1.1 with
//! streaming bodies both ways and hop-by-hop headers removed. An HTTP/1.1
//! `Upgrade` (WebSocket) from a client is passed through and joined.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, debug_span, warn};

use super::dial::{DialError, EgressPolicy, dial};
use super::{ServerConfig, Stats};
use crate::http_util::{Body, boxed, empty, strip_hop_by_hop, text_response, wants_upgrade};

/// Buffer size of each direction of a tunnel copy.
const TUNNEL_BUFFER: usize = 64 * 1024;

pub(super) struct Proxy {
    config: Arc<ServerConfig>,
    stats: Arc<Stats>,
    policy: EgressPolicy,
    tracker: TaskTracker,
}

impl Proxy {
    pub(super) fn new(config: Arc<ServerConfig>, stats: Arc<Stats>, tracker: TaskTracker) -> Self {
        let policy = EgressPolicy { allow_loopback: config.allow_loopback };
        Self { config, stats, policy, tracker }
    }

    /// Serves one request; never fails at the HTTP level (errors become replies).
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Span,
    ) -> Result<Response<Body>, Infallible> {
        self.stats.streams.fetch_add(1, Ordering::Relaxed);
        let span = debug_span!(parent: &conn, "stream", method = %req.method(), target = %req.uri());
        let response = async {
            let response =
                if req.method() == Method::CONNECT { self.connect(req).await } else { self.forward(req).await };
            debug!(status = response.status().as_u16(), "answered");
            response
        }
        .instrument(span)
        .await;
        Ok(response)
    }

    async fn connect(&self, req: Request<Incoming>) -> Response<Body> {
        let Some(authority) = req.uri().authority().cloned() else {
            return text_response(StatusCode::BAD_REQUEST, "CONNECT needs a host:port target");
        };
        let Some(port) = authority.port_u16() else {
            return text_response(StatusCode::BAD_REQUEST, format!("CONNECT target {authority} has no port"));
        };
        let origin = match dial(authority.host(), port, &self.policy, self.config.dial_timeout).await {
            Ok(stream) => stream,
            Err(error) => return dial_failed(error),
        };
        self.tracker.spawn(tunnel(req, origin).in_current_span());
        Response::new(empty())
    }

    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
            return text_response(
                StatusCode::BAD_REQUEST,
                format!("{uri} is not an absolute URL; this is a forward proxy, send http://host/path or CONNECT"),
            );
        };
        if scheme != "http" {
            return text_response(
                StatusCode::BAD_REQUEST,
                format!("{scheme}:// is not forwarded; use CONNECT for TLS targets"),
            );
        }
        let upgrade = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
        let origin =
            match dial(authority.host(), authority.port_u16().unwrap_or(80), &self.policy, self.config.dial_timeout)
                .await
            {
                Ok(stream) => stream,
                Err(error) => return dial_failed(error),
            };
        let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(origin)).await {
            Ok(pair) => pair,
            Err(error) => {
                return text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("HTTP handshake with {authority} failed: {error}"),
                );
            }
        };
        tokio::spawn(
            async move {
                if let Err(error) = connection.with_upgrades().await {
                    debug!(%error, "origin connection ended with an error");
                }
            }
            .in_current_span(),
        );
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        parts.uri = uri.path_and_query().map(|pq| Uri::from(pq.clone())).unwrap_or_else(|| Uri::from_static("/"));
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(HOST, host);
        }
        let mut response = match sender.send_request(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(error) => {
                return text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("{authority} closed the connection without a response: {error}"),
                );
            }
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let origin_upgrade = hyper::upgrade::on(&mut response);
            self.tracker.spawn(join_upgrades(client_upgrade, origin_upgrade).in_current_span());
        }
        strip_hop_by_hop(response.headers_mut(), switching);
        response.map(boxed)
    }
}

fn dial_failed(error: DialError) -> Response<Body> {
    warn!(kind = error.kind(), %error, "dial failed");
    text_response(error.status(), error.to_string())
}

async fn tunnel(req: Request<Incoming>, mut origin: TcpStream) {
    match hyper::upgrade::on(req).await {
        Ok(upgraded) => {
            let mut client = TokioIo::new(upgraded);
            match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut origin, TUNNEL_BUFFER, TUNNEL_BUFFER).await
            {
                Ok((up, down)) => debug!(up, down, "tunnel closed"),
                Err(error) => debug!(%error, "tunnel ended"),
            }
        }
        Err(error) => warn!(%error, "CONNECT upgrade failed"),
    }
}

async fn join_upgrades(client: hyper::upgrade::OnUpgrade, origin: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, origin) {
        Ok((client, origin)) => {
            let (mut client, mut origin) = (TokioIo::new(client), TokioIo::new(origin));
            match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut origin, TUNNEL_BUFFER, TUNNEL_BUFFER).await
            {
                Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
                Err(error) => debug!(%error, "upgraded connection ended"),
            }
        }
        Err(error) => warn!(%error, "upgrade failed"),
    }
}
