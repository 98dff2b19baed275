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

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::Instrument;

use crate::http_util::{Body, BoxError};
pub(super) use window::{Ended, Meter};

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
        Ok(Ok(Stream { send, recv, meter: self.meter.clone(), buffered: Bytes::new(), shut: false }))
    }

    fn body_of(&self, response: Response<h2::RecvStream>) -> Response<ResponseBody> {
        // A response that ended with its head (to HEAD, a 304) is empty,
        // whatever length its Content-Length gives the representation.
        let length = if response.body().is_end_stream() {
            Some(0)
        } else {
            response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
        };
        response.map(|recv| ResponseBody { recv, meter: self.meter.clone(), length, data_done: false })
    }
}

/// Streams a request body into `stream`, each frame as the window allows;
/// a failing body resets the stream (the origin must not see a cut body as
/// complete).
async fn send_body(body: Body, mut stream: h2::SendStream<Bytes>) {
    let mut body = std::pin::pin!(body);
    loop {
        let frame = tokio::select! {
            frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
            // The server answered and closed the stream: stop reading.
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => return stream.send_reset(h2::Reason::CANCEL),
            Some(Ok(frame)) => frame,
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                }
                return;
            }
        };
        while data.has_remaining() {
            let Ok(room) = std::future::poll_fn(|cx| poll_room(&mut stream, data.len(), cx)).await else {
                return;
            };
            if stream.send_data(data.split_to(room.min(data.len())), false).is_err() {
                return;
            }
        }
    }
}

/// Waits until `stream` may send at least one byte of `wanted`.
fn poll_room(stream: &mut h2::SendStream<Bytes>, wanted: usize, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    stream.reserve_capacity(wanted);
    loop {
        let room = stream.capacity();
        if room > 0 {
            return Poll::Ready(Ok(room));
        }
        match ready!(stream.poll_capacity(cx)) {
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

fn io_error(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error.into_io().unwrap_or_else(|| io::ErrorKind::BrokenPipe.into());
    }
    io::Error::new(io::ErrorKind::BrokenPipe, error)
}

/// The server ended a `CONNECT` stream without error: RST_STREAM with
/// NO_ERROR. Response bodies do not use this: h2 keeps a response complete
/// once its END_STREAM has arrived (a reset after it, RFC 9113 §8.1,
/// included), and a reset before it cut the body short.
fn ended_cleanly(error: &h2::Error) -> bool {
    error.is_reset() && error.reason() == Some(h2::Reason::NO_ERROR)
}

/// A response body from the server. Each frame handed to the local client
/// gives its bytes back to the server's window, so a slow reader holds the
/// server to what it can take.
pub struct ResponseBody {
    recv: h2::RecvStream,
    meter: Arc<Meter>,
    length: Option<u64>,
    data_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.meter.took(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.length.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// A `CONNECT` stream through the server as a byte stream: reads take DATA
/// frames (giving their credit back as they are taken), writes send what
/// the server's window admits, shutdown ends our half.
pub struct Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    meter: Arc<Meter>,
    /// The rest of the last frame taken, not yet read.
    buffered: Bytes,
    shut: bool,
}

impl AsyncRead for Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.buffered.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.meter.took(data.len());
                    self.buffered = data;
                }
                Some(Err(error)) if ended_cleanly(&error) => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.buffered.len().min(buf.remaining());
        buf.put_slice(&self.buffered[..n]);
        self.buffered.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = ready!(poll_room(&mut self.send, buf.len(), cx))?;
        let n = room.min(buf.len());
        self.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !std::mem::replace(&mut self.shut, true) {
            self.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
