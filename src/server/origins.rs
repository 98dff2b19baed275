//! Kept-alive HTTP/1.1 connections to origins. Once a forwarded response has
//! been read to its end and its body ([`Returning`]) dropped, the connection
//! waits (up to [`IDLE`]) for the next request to the same `host:port`, so
//! keep-alive clients do not pay a TCP handshake per request. Upgraded
//! connections never come back; at most [`MAX_IDLE_PER_ORIGIN`] wait per
//! origin. Connections were checked by the egress policy when dialled, and a
//! pooled one is only ever reused for the same authority.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use crate::http_util::Body;

/// How long an unused connection is kept.
pub const IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per origin.
pub const MAX_IDLE_PER_ORIGIN: usize = 64;
/// Requests one connection carries before it is retired (as nginx's
/// `keepalive_requests` does): long-lived connections slowly accumulate
/// buffer memory, and retiring them keeps the server's footprint flat.
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 1000;

/// A kept-alive connection and how many requests it has carried.
pub(super) struct Pooled {
    pub sender: SendRequest<Body>,
    pub used: u32,
}

type Idle = Vec<(Pooled, Instant)>;

/// Idle origin connections by `host:port`.
#[derive(Default)]
pub(super) struct Origins {
    idle: Mutex<HashMap<String, Idle>>,
}

impl Origins {
    /// A ready, recently used connection to `key`, if one waits.
    pub(super) fn take(&self, key: &str) -> Option<Pooled> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = idle.get_mut(key)?;
        while let Some((pooled, since)) = waiting.pop() {
            if since.elapsed() < IDLE && pooled.sender.is_ready() {
                return Some(pooled);
            }
        }
        None
    }

    /// Returns `pooled` to the pool for the next request to `key`: at once
    /// if its connection is ready again (the usual case once the response
    /// has been read to its end), else once it is (a request body still
    /// being sent), or never if the connection closes first.
    pub(super) fn give_back(self: &Arc<Self>, key: String, mut pooled: Pooled) {
        pooled.used += 1;
        if pooled.used >= MAX_REQUESTS_PER_CONNECTION || pooled.sender.is_closed() {
            return;
        }
        if pooled.sender.is_ready() {
            self.park(key, pooled);
            return;
        }
        // Dropped off any runtime (a plain thread), the connection just goes;
        // during a shutdown the waiter spawned here is cancelled at once.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let origins = self.clone();
        runtime.spawn(async move {
            if pooled.sender.ready().await.is_ok() {
                origins.park(key, pooled);
            }
        });
    }

    /// Parks a ready connection, first dropping expired and closed ones (of
    /// every origin, so origins never asked for again do not keep theirs).
    fn park(&self, key: String, pooled: Pooled) {
        let now = Instant::now(); // one clock read per request, not one per idle connection
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, waiting| {
            waiting.retain(|(p, since)| now.duration_since(*since) < IDLE && !p.sender.is_closed());
            !waiting.is_empty()
        });
        let waiting = idle.entry(key).or_default();
        if waiting.len() < MAX_IDLE_PER_ORIGIN {
            waiting.push((pooled, now));
        }
    }
}

/// A forwarded response's body that gives its origin connection back to the
/// pool when it is dropped after its end, so no task has to wait for the
/// connection per request. Dropped before its end (the client went away), it
/// drops the connection too: the rest of that response is not drained.
pub(super) struct Returning<B: http_body::Body> {
    inner: B,
    ended: bool,
    home: Option<(Arc<Origins>, String, Pooled)>,
}

impl<B: http_body::Body> Returning<B> {
    pub(super) fn new(inner: B, origins: Arc<Origins>, key: String, pooled: Pooled) -> Self {
        Self { inner, ended: false, home: Some((origins, key, pooled)) }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Returning<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling after trailers (always the last frame) and
        // once `is_end_stream` says so: a body of known length ends with its
        // last byte, which `drop` sees, not with a `None`.
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => self.ended = true,
            _ => {}
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

impl<B: http_body::Body> Drop for Returning<B> {
    fn drop(&mut self) {
        if let Some((origins, key, pooled)) = self.home.take()
            && (self.ended || self.inner.is_end_stream())
        {
            origins.give_back(key, pooled);
        }
    }
}
