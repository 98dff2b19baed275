//! The agent's side of HTTP/2, on the `h2` crate directly: hyper's client
//! releases flow-control credit on its own and caps its adaptive window at
//! 16 MiB, and one download over a long link needs more than that, given
//! only while the local reader keeps up ([`window`]).
//!
//! - [`Sender`]: one connection; [`Sender::ready`] gives a [`Ready`] that
//!   sends one request (its body streams on in a task of its own, paced by
//!   the server's window) or opens one `CONNECT` stream.
//! - [`ResponseBody`]: a response's body; credit goes back to the server as
//!   the local client takes each frame, never before.
//! - [`Stream`]: a `CONNECT` stream as bytes both ways (a tunnel, a WebSocket).

pub(super) mod window;

use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use tracing::Instrument;

use crate::h2_stream::{RecvBody, send_body};
use crate::http_util::Body;
pub(super) use window::{Ended, Meter};

/// A response body from the server: each frame handed to the local client
/// gives its bytes back to the server's window (and to the [`Meter`]).
pub type ResponseBody = RecvBody<Arc<Meter>>;
/// A `CONNECT` stream through the server as a byte stream.
pub type Stream = crate::h2_stream::Stream<Arc<Meter>>;

/// The request side of one tunnel connection; clones share it.
#[derive(Clone)]
pub struct Sender {
    inner: h2::client::SendRequest<Bytes>,
    meter: Arc<Meter>,
}

impl Sender {
    pub(super) fn new(inner: h2::client::SendRequest<Bytes>, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.meter.is_closed()
    }

    /// Each stream's receive window on this connection, in bytes.
    pub fn receive_window(&self) -> u32 {
        self.meter.window()
    }

    /// This connection, once it may open another stream. An error means
    /// the connection is going away and nothing was sent: another one can
    /// take the request.
    pub async fn ready(&self) -> Result<Ready, h2::Error> {
        let inner = self.inner.clone().ready().await?;
        Ok(Ready { inner, meter: self.meter.clone() })
    }
}

/// A connection ready for one more stream (see [`Sender::ready`]).
pub struct Ready {
    inner: h2::client::SendRequest<Bytes>,
    meter: Arc<Meter>,
}

impl Ready {
    /// Sends `request` and waits for the response's head. A body streams on
    /// in a task of its own, sending only what the server's window admits.
    pub async fn send(mut self, request: Request<Body>) -> Result<Response<ResponseBody>, h2::Error> {
        let (parts, body) = request.into_parts();
        let end = body.is_end_stream();
        let (response, stream) = self.inner.send_request(Request::from_parts(parts, ()), end)?;
        if !end {
            tokio::spawn(send_body(body, stream).in_current_span());
        }
        Ok(self.body_of(response.await?))
    }

    /// Opens a `CONNECT` stream to `target`. The server's 200 gives the
    /// stream; any other answer comes back as the error, with its body.
    pub async fn connect(mut self, target: &Authority) -> Result<Result<Stream, Response<ResponseBody>>, h2::Error> {
        let mut head = Request::new(());
        *head.method_mut() = Method::CONNECT;
        *head.uri_mut() = http::Uri::from(target.clone());
        let (response, send) = self.inner.send_request(head, false)?;
        let response = response.await?;
        if response.status() != StatusCode::OK {
            return Ok(Err(self.body_of(response)));
        }
        let recv = response.into_body();
        Ok(Ok(Stream::new(send, recv, self.meter.clone())))
    }

    fn body_of(&self, response: Response<h2::RecvStream>) -> Response<ResponseBody> {
        let (parts, recv) = response.into_parts();
        let body = RecvBody::new(recv, &parts.headers, self.meter.clone());
        Response::from_parts(parts, body)
    }
}
