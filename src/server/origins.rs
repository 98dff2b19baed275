//! Kept-alive HTTP/1.1 connections to origins. Once a forwarded response has
//! been read to its end, the connection waits (up to [`IDLE`]) for the next
//! request to the same `host:port`, so keep-alive clients do not pay a TCP
//! handshake per request. Upgraded connections never come back; at most
//! [`MAX_IDLE_PER_ORIGIN`] wait per origin. Connections were checked by the
//! egress policy when dialled, and a pooled one is only ever reused for the
//! same authority.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

    /// Returns `sender` to the pool once its response has been fully read
    /// (or drops it if the connection closes first).
    pub(super) fn give_back(self: &Arc<Self>, key: String, mut pooled: Pooled) {
        pooled.used += 1;
        if pooled.used >= MAX_REQUESTS_PER_CONNECTION {
            return;
        }
        let origins = self.clone();
        tokio::spawn(async move {
            if pooled.sender.ready().await.is_err() {
                return;
            }
            let mut idle = origins.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|_, waiting| {
                waiting.retain(|(p, since)| since.elapsed() < IDLE && !p.sender.is_closed());
                !waiting.is_empty()
            });
            let waiting = idle.entry(key).or_default();
            if waiting.len() < MAX_IDLE_PER_ORIGIN {
                waiting.push((pooled, Instant::now()));
            }
        });
    }
}
