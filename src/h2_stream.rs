//! HTTP/2 streams on the `h2` crate, shared by the agent's client and the
//! server: a received body whose flow-control credit goes back only as its
//! reader takes each frame ([`RecvBody`]), a body sent as the peer's window
//! admits ([`send_body`]), and a stream as bytes both ways for `CONNECT`
//! ([`Stream`]). A [`Taken`] hook sees every byte a reader takes (the
//! agent's window sizing samples it; the server needs nothing).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http_util::{Body, BoxError};

/// Told of the bytes a reader took from a stream.
pub trait Taken: Send + Sync + Unpin + 'static {
    /// `n` more bytes were taken (and their credit given back).
    fn took(&self, n: usize);
}

impl Taken for () {
    fn took(&self, _: usize) {}
}

impl<T: Taken> Taken for std::sync::Arc<T> {
    fn took(&self, n: usize) {
        T::took(self, n);
    }
}

/// Streams `body` into `stream`, each frame as the window allows, and ends
/// the stream after it. A failing body resets the stream with `CANCEL`, so
/// the peer never sees a cut body as complete; a peer that resets the
/// stream stops the sending.
pub async fn send_body(body: Body, mut stream: h2::SendStream<Bytes>) {
    let mut body = std::pin::pin!(body);
    loop {
        let frame = tokio::select! {
            frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
            // The peer closed the stream (answered already, or gave up): stop reading.
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
        // Known to be the last frame (a body of known length at its end):
        // END_STREAM goes with it, not in a frame of its own.
        let last = body.is_end_stream();
        if data.is_empty() {
            if last {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            continue;
        }
        while data.has_remaining() {
            let Ok(room) = std::future::poll_fn(|cx| poll_room(&mut stream, data.len(), cx)).await else {
                return;
            };
            let chunk = data.split_to(room.min(data.len()));
            if stream.send_data(chunk, last && data.is_empty()).is_err() {
                return;
            }
        }
        if last {
            return;
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

/// The peer ended a `CONNECT` stream without error: RST_STREAM with
/// NO_ERROR. Bodies do not use this: h2 keeps a body complete once its
/// END_STREAM has arrived (a reset after it, RFC 9113 §8.1, included), and
/// a reset before it cut the body short.
fn ended_cleanly(error: &h2::Error) -> bool {
    error.is_reset() && error.reason() == Some(h2::Reason::NO_ERROR)
}

/// A received body. Each frame handed to its reader gives its bytes back to
/// the peer's window, so a slow reader holds the peer to what it can take.
pub struct RecvBody<T> {
    recv: h2::RecvStream,
    taken: T,
    length: Option<u64>,
    data_done: bool,
}

impl<T: Taken> RecvBody<T> {
    /// The body of a message whose head carried `headers`.
    pub fn new(recv: h2::RecvStream, headers: &http::HeaderMap, taken: T) -> Self {
        // A message that ended with its head (a response to HEAD, a 304, a
        // GET) is empty, whatever length its Content-Length gives the
        // representation.
        let length = if recv.is_end_stream() {
            Some(0)
        } else {
            headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
        };
        Self { recv, taken, length, data_done: false }
    }
}

impl<T: Taken> http_body::Body for RecvBody<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.taken.took(data.len());
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

/// A `CONNECT` stream as bytes both ways: reads take DATA frames (giving
/// their credit back as they are taken), writes send what the peer's
/// window admits, shutdown ends our half.
pub struct Stream<T> {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    taken: T,
    /// The rest of the last frame taken, not yet read.
    buffered: Bytes,
    shut: bool,
}

impl<T: Taken> Stream<T> {
    /// Joins the two halves of one stream.
    pub fn new(send: h2::SendStream<Bytes>, recv: h2::RecvStream, taken: T) -> Self {
        Self { send, recv, taken, buffered: Bytes::new(), shut: false }
    }
}

impl<T: Taken> AsyncRead for Stream<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.buffered.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.taken.took(data.len());
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

impl<T: Taken> AsyncWrite for Stream<T> {
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
