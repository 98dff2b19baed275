//! One proxied request: `CONNECT host:port` becomes a byte tunnel; an
//! absolute-form request is forwarded to the origin over HTTP/1.1 with
//! streaming bodies both ways and hop-by-hop headers removed. An HTTP/1.1
//! `Upgrade` (WebSocket) from a client is passed through and joined.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, debug_span, warn};

use super::dial::DialError;
use super::origins::{Origins, Pooled, Returning};
use super::{ServerConfig, Stats};
use crate::h2_stream::{RecvBody, Stream, send_body};
use crate::http_util::{Body, BoxError, boxed, empty, strip_hop_by_hop, text_response, wants_upgrade};
use crate::relay::relay;

pub(super) struct Proxy {
    config: Arc<ServerConfig>,
    stats: Arc<Stats>,
    tracker: TaskTracker,
    origins: Arc<Origins>,
}

impl Proxy {
    pub(super) fn new(config: Arc<ServerConfig>, stats: Arc<Stats>, tracker: TaskTracker) -> Self {
        Self { config, stats, tracker, origins: Arc::default() }
    }

    /// Serves one request of an HTTP/1.1 connection; never fails at the
    /// HTTP level (errors become replies).
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Span,
    ) -> Result<Response<Body>, Infallible> {
        let _in_progress = self.begin();
        let span = debug_span!(parent: &conn, "stream", method = %req.method(), target = %req.uri());
        let response = async {
            let response = if req.method() == Method::CONNECT {
                match self.dial_target(req.uri()).await {
                    Ok(origin) => {
                        let upgraded = hyper::upgrade::on(req);
                        // The tunnel owns its connection and sees its end itself.
                        let never = CancellationToken::new();
                        self.spawn_tunnel(async move { upgraded.await.map(TokioIo::new) }, origin, never);
                        Response::new(empty())
                    }
                    Err(refused) => refused,
                }
            } else {
                self.forward(req).await
            };
            debug!(status = response.status().as_u16(), "answered");
            response
        }
        .instrument(span)
        .await;
        Ok(response)
    }

    /// Serves one stream of an HTTP/2 connection, inside the connection's
    /// task: answers it, pipes the answer's body, and hands a `CONNECT`
    /// tunnel to a task of its own. Stops as soon as the agent resets the
    /// stream while it waits for the answer (the body's pipe watches too).
    pub(super) async fn serve_stream(
        self: Arc<Self>,
        req: Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        conn: Span,
        conn_gone: CancellationToken,
    ) {
        let _in_progress = self.begin();
        let span = debug_span!(parent: &conn, "stream", method = %req.method(), target = %req.uri());
        async move {
            let (parts, recv) = req.into_parts();
            let response = if parts.method == Method::CONNECT {
                let dialled = tokio::select! {
                    dialled = self.dial_target(&parts.uri) => dialled,
                    _ = reset(&mut respond) => return,
                };
                match dialled {
                    Ok(origin) => {
                        let send = match respond.send_response(Response::new(()), false) {
                            Ok(send) => send,
                            Err(error) => return debug!(%error, "answer not sent"),
                        };
                        debug!(status = 200, "answered");
                        let tunnel = Stream::new(send, recv, ());
                        return self.spawn_tunnel(async { Ok(tunnel) }, origin, conn_gone);
                    }
                    Err(refused) => refused,
                }
            } else {
                let body = RecvBody::new(recv, &parts.headers, ());
                tokio::select! {
                    response = self.forward(Request::from_parts(parts, body)) => response,
                    _ = reset(&mut respond) => return,
                }
            };
            debug!(status = response.status().as_u16(), "answered");
            let (mut parts, body) = response.into_parts();
            let end = body.is_end_stream();
            // A reply of known size says so (ours: refusals, dial errors).
            if !end
                && !parts.headers.contains_key(CONTENT_LENGTH)
                && let Some(length) = body.size_hint().exact()
            {
                parts.headers.insert(CONTENT_LENGTH, length.into());
            }
            match respond.send_response(Response::from_parts(parts, ()), end) {
                Ok(send) if !end => send_body(body, send).await,
                Ok(_) => {}
                Err(error) => debug!(%error, "answer not sent"),
            }
        }
        .instrument(span)
        .await;
    }

    /// Counts a new request as activity; the guard holds it as in progress.
    fn begin(&self) -> impl Drop + use<> {
        self.stats.streams.fetch_add(1, Ordering::Relaxed);
        self.stats.activity.touch();
        self.stats.hold(|s| &s.streams_active)
    }

    /// Dials a `CONNECT` request's `host:port` (egress policy included); a
    /// refusal or failure comes back as the reply to send.
    async fn dial_target(&self, uri: &http::Uri) -> Result<TcpStream, Response<Body>> {
        if let Some(reason) = crate::http_util::target_refusal(true, uri) {
            return Err(text_response(StatusCode::BAD_REQUEST, reason));
        }
        let Some(authority) = uri.authority() else {
            return Err(text_response(StatusCode::BAD_REQUEST, "CONNECT needs a host:port target"));
        };
        let Some(port) = authority.port_u16() else {
            return Err(text_response(StatusCode::BAD_REQUEST, format!("CONNECT target {authority} has no port")));
        };
        self.config.dialer.dial(authority.host(), port).await.map_err(|error| self.dial_failed(error))
    }

    /// Relays the tunnel `client` gives (once the agent has the answer) to
    /// `origin`, in a task of its own, until either ends, it idles out, or
    /// the agent's connection is gone.
    fn spawn_tunnel<F, T>(&self, client: F, origin: TcpStream, conn_gone: CancellationToken)
    where
        F: Future<Output = Result<T, hyper::Error>> + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (idle, stats) = (self.config.idle_timeout, self.stats.clone());
        let open = self.stats.hold(|s| &s.streams_active);
        self.tracker.spawn(
            async move {
                let client = tokio::select! {
                    client = client => client,
                    _ = conn_gone.cancelled() => return,
                };
                match client {
                    Ok(client) => tokio::select! {
                        ended = relay(client, origin, idle, stats.activity.clone()) => debug!(?ended, "tunnel ended"),
                        _ = conn_gone.cancelled() => debug!("agent connection gone, tunnel closed"),
                    },
                    Err(error) => warn!(%error, "CONNECT upgrade failed"),
                }
                drop(open);
            }
            .in_current_span(),
        );
    }

    async fn forward<B>(&self, mut req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError> + std::fmt::Display,
    {
        let uri = req.uri().clone();
        if let Some(reason) = crate::http_util::target_refusal(false, &uri) {
            return text_response(StatusCode::BAD_REQUEST, reason);
        }
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
        let port = authority.port_u16().unwrap_or(80);
        let key = format!("{}:{port}", authority.host());
        let pooled = if upgrade { None } else { self.origins.take(&key) };
        let reused = pooled.is_some();
        let Pooled { mut sender, mut used } = match pooled {
            Some(pooled) => pooled,
            None => match self.dial_http(&authority, port).await {
                Ok(sender) => Pooled { sender, used: 0 },
                Err(response) => return response,
            },
        };
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        parts.uri = crate::http_util::origin_form(&uri);
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(HOST, host);
        }
        let counted = CountingBody { inner: body, stats: self.stats.clone(), up: true };
        let (body, failure) = crate::http_util::noting_failure(counted);
        let body = boxed(body);
        let closed = |error: hyper::Error| match failure.get() {
            Some(failure) => crate::http_util::malformed_body(failure),
            None => text_response(
                StatusCode::BAD_GATEWAY,
                format!("{authority} closed the connection without a response: {error}"),
            ),
        };
        let mut response = match sender.try_send_request(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            // A kept-alive connection the origin closed meanwhile: the request
            // was not sent, so it goes once more on a fresh connection.
            Err(mut error) if reused && error.message().is_some() => {
                let Some(request) = error.take_message() else { return closed(error.into_error()) };
                debug!("pooled origin connection was closed, dialling a fresh one");
                (sender, used) = match self.dial_http(&authority, port).await {
                    Ok(sender) => (sender, 0),
                    Err(response) => return response,
                };
                match sender.send_request(request).await {
                    Ok(response) => response,
                    Err(error) => return closed(error),
                }
            }
            Err(error) => return closed(error.into_error()),
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let origin_upgrade = hyper::upgrade::on(&mut response);
            let (idle, stats) = (self.config.idle_timeout, self.stats.clone());
            let open = self.stats.hold(|s| &s.streams_active);
            self.tracker.spawn(
                async move {
                    join_upgrades(client_upgrade, origin_upgrade, idle, stats).await;
                    drop(open);
                }
                .in_current_span(),
            );
        }
        // Upgrade goes back only to a client that asked for it (over HTTP/2
        // none can: such a head may carry no Upgrade, RFC 9113 §8.2.2).
        strip_hop_by_hop(response.headers_mut(), upgrade && switching);
        let stats = self.stats.clone();
        let counted = |body| CountingBody { inner: body, stats, up: false };
        if upgrade || switching {
            return response.map(|body| boxed(counted(body)));
        }
        let origins = self.origins.clone();
        response.map(|body| boxed(Returning::new(counted(body), origins, key, Pooled { sender, used })))
    }

    /// Dials `authority` (egress policy included) and opens HTTP/1.1 on it.
    async fn dial_http(
        &self,
        authority: &http::uri::Authority,
        port: u16,
    ) -> Result<hyper::client::conn::http1::SendRequest<Body>, Response<Body>> {
        let origin = self.config.dialer.dial(authority.host(), port).await.map_err(|e| self.dial_failed(e))?;
        // Kept-alive connections keep their read buffers: a fixed 64 KiB
        // (hyper's adaptive default grows to ~400 KiB and varies in size,
        // which fragments the heap) keeps a pool of them small and steady.
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(64 * 1024))
            .handshake(TokioIo::new(origin))
            .await
            .map_err(|error| {
                text_response(StatusCode::BAD_GATEWAY, format!("HTTP handshake with {authority} failed: {error}"))
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(%error, "origin connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn dial_failed(&self, error: DialError) -> Response<Body> {
        if matches!(error, DialError::Denied { .. }) {
            self.stats.egress_refused.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.dial_failed(error.kind());
        }
        warn!(kind = error.kind(), %error, "dial failed");
        let mut response = text_response(error.status(), error.to_string());
        let kind = HeaderValue::from_static(error.kind());
        response.headers_mut().insert(crate::protocol::DIAL_ERROR_HEADER, kind);
        response
    }
}

async fn join_upgrades(
    client: hyper::upgrade::OnUpgrade,
    origin: hyper::upgrade::OnUpgrade,
    idle: std::time::Duration,
    stats: Arc<Stats>,
) {
    match tokio::try_join!(client, origin) {
        Ok((client, origin)) => {
            let ended = relay(TokioIo::new(client), TokioIo::new(origin), idle, stats.activity.clone()).await;
            debug!(?ended, "upgraded connection ended");
        }
        Err(error) => warn!(%error, "upgrade failed"),
    }
}

/// The agent reset the stream (its client went away, say): nothing more to do.
async fn reset(respond: &mut h2::server::SendResponse<Bytes>) {
    let reason = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
    debug!(?reason, "stream reset by the agent");
}

pin_project_lite::pin_project! {
    /// A body that counts the bytes it carries as activity (`up`: towards the target).
    struct CountingBody<B> {
        #[pin]
        inner: B,
        stats: Arc<Stats>,
        up: bool,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let counter = if *this.up { &this.stats.activity.bytes_up } else { &this.stats.activity.bytes_down };
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            this.stats.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
