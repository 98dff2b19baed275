//! Receive windows that follow the path, paced by the local reader, and the
//! keepalive pings that measure it.
//!
//! One HTTP/2 stream moves at most one window per round trip, and whatever
//! the window admits is buffered here when the local reader is slower than
//! the link. So a connection starts with [`START_STREAM_WINDOW`] per stream
//! and grows it only when its readers prove they need more: each PING's
//! round trip is a sample of how many bytes the readers *took* (not how many
//! arrived) in that time. That rate times the path's smallest round trip is
//! the bandwidth-delay product the readers sustain (counted over the whole
//! connection, so several parallel streams count together). While that is
//! at least half the stream window, the window is likely what holds them
//! back, and it grows fourfold (a faster slow start), up to `stream_window`.
//! The connection window stays [`CONNECTION_HEADROOM`] above it, so a bulk
//! stream leaves room for a small one beside it. One keepalive interval
//! with no byte taken puts both back at the start (the connection window
//! shrinks as the server spends its credit: lowering it sends no frame).
//!
//! On loopback or a LAN the smallest round trip is well under a millisecond,
//! so windows never grow: a slow reader costs at most the start window per
//! stream. Over 50 ms a reader taking more than 8 MiB per round trip
//! (about 168 MB/s) grows its window to 64 MiB with one sample. The most a
//! stalled reader can leave buffered is `stream_window` per stream and
//! `connection_window` per connection, after a reader that kept up had
//! grown them, plus the one frame a CONNECT stream holds (256 KiB at most).
//!
//! The same pings keep the connection alive: one every
//! `keepalive_interval` (back to back while readers take a quarter of the
//! window per round trip and the window can still grow), and one
//! unanswered within `keepalive_timeout` ends the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Each stream's receive window on a new connection (and after a quiet
/// spell): 16 MiB, at most 335 MB/s over a 50 ms round trip (about 200
/// measured).
pub const START_STREAM_WINDOW: u32 = 16 << 20;

/// How far the connection's window stays above a stream's: what other
/// streams may have in flight beside one bulk stream.
pub const CONNECTION_HEADROOM: u32 = 16 << 20;

/// How much a window the readers use at least half of grows per sample.
const GROWTH: u64 = 4;

/// What the readers of one connection have taken, shared by its bodies and
/// streams and read by its pinger.
#[derive(Debug)]
pub struct Meter {
    taken: AtomicU64,
    /// The pinger waits for readers to have taken this many bytes in all
    /// (`u64::MAX`: it is not waiting); the reader that gets there wakes it.
    wake_at: AtomicU64,
    traffic: Notify,
    closed: AtomicBool,
    /// Each stream's receive window as last advertised.
    window: AtomicU32,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            taken: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            traffic: Notify::new(),
            closed: AtomicBool::new(false),
            window: AtomicU32::new(0),
        }
    }
}

impl crate::h2_stream::Taken for Meter {
    /// A reader took `bytes` from the connection.
    fn took(&self, bytes: usize) {
        let taken = self.taken.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if taken >= self.wake_at.load(Ordering::Relaxed) && self.wake_at.swap(u64::MAX, Ordering::Relaxed) != u64::MAX {
            self.traffic.notify_one();
        }
    }
}

impl Meter {
    fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Each stream's receive window as last advertised, in bytes.
    pub fn window(&self) -> u32 {
        self.window.load(Ordering::Relaxed)
    }
}

/// The window sizes this connection may use, and its keepalive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest stream window (`stream_window`).
    pub stream: u32,
    /// The largest connection window (`connection_window`).
    pub connection: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Limits {
    /// The stream window a connection starts with.
    pub fn start(&self) -> u32 {
        START_STREAM_WINDOW.min(self.stream)
    }

    /// The connection window that goes with a stream window of `stream`.
    pub fn connection_for(&self, stream: u32) -> u32 {
        stream.saturating_add(CONNECTION_HEADROOM).min(self.connection).max(stream)
    }
}

/// The stream window's state: the decisions, apart from the I/O.
#[derive(Debug)]
pub struct Windows {
    limits: Limits,
    current: u32,
    /// The smallest round trip seen: the path's, without queues.
    floor: Option<Duration>,
}

impl Windows {
    pub fn new(limits: Limits) -> Self {
        Self { limits, current: limits.start(), floor: None }
    }

    /// One ping's sample: readers took `bytes` during its round trip `rtt`.
    /// Returns the new stream window when it should grow.
    pub fn sample(&mut self, bytes: u64, rtt: Duration) -> Option<u32> {
        let floor = self.floor.map_or(rtt, |floor| floor.min(rtt));
        self.floor = Some(floor);
        let rtt = rtt.as_nanos().max(1);
        let sustained = u64::try_from(u128::from(bytes) * floor.as_nanos() / rtt).unwrap_or(u64::MAX);
        // Readers that take at least half the window per round trip of the
        // path are held back by it: it grows fourfold, so a long path is
        // filled within a round trip or two (a 256 MiB download over 50 ms
        // takes about ten). Otherwise the window is more than enough.
        let current = u64::from(self.current);
        if sustained.saturating_mul(2) < current {
            return None;
        }
        let wanted = current.saturating_mul(GROWTH).max(sustained.saturating_mul(2));
        let wanted = u32::try_from(wanted.min(u64::from(self.limits.stream))).unwrap_or(self.limits.stream);
        if wanted <= self.current {
            return None;
        }
        self.current = wanted;
        Some(wanted)
    }

    /// Nothing was taken for a keepalive interval: back to the start window.
    pub fn quiet(&mut self) -> Option<u32> {
        let start = self.limits.start();
        (self.current > start).then(|| {
            self.current = start;
            start
        })
    }

    /// Whether the window can still grow (worth sampling back to back).
    pub fn can_grow(&self) -> bool {
        self.current < self.limits.stream
    }

    /// What readers take per round trip in a bulk transfer, one that may
    /// need a larger window: a quarter of it. Less (small requests, a
    /// trickle) is not worth a ping: each costs both ends two system calls.
    pub fn bulk(&self) -> u64 {
        u64::from(self.current / 4)
    }
}

/// How a connection ended, other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error(transparent)]
    Http2(#[from] h2::Error),
    #[error("the server did not answer a ping within {0:?}")]
    Unanswered(Duration),
}

/// Drives connection `conn` until it ends, pinging and resizing its windows.
pub async fn drive<T>(
    mut conn: h2::client::Connection<T, Bytes>,
    meter: std::sync::Arc<Meter>,
    limits: Limits,
) -> Result<(), Ended>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    meter.window.store(limits.start(), Ordering::Relaxed);
    // Taken once, here, from a connection just made: always there.
    let pings = conn.ping_pong();
    let (resize, mut resized) = mpsc::unbounded_channel();
    let mut pinger = std::pin::pin!(async {
        match pings {
            Some(pings) => pace(pings, &meter, limits, resize).await,
            None => std::future::pending().await,
        }
    });
    // A window size not sent yet: h2 takes one SETTINGS change at a time,
    // so a change waits while the last one is unacknowledged.
    let mut wanted = None;
    let apply = |conn: &mut h2::client::Connection<T, Bytes>, wanted: &mut Option<u32>| {
        let Some(stream) = *wanted else { return false };
        if conn.set_initial_window_size(stream).is_err() {
            return false;
        }
        conn.set_target_window_size(limits.connection_for(stream));
        meter.window.store(stream, Ordering::Relaxed);
        tracing::debug!(stream, connection = limits.connection_for(stream), "receive windows resized");
        *wanted = None;
        true
    };
    let ended = std::future::poll_fn(|cx| {
        while let Poll::Ready(Some(stream)) = resized.poll_recv(cx) {
            wanted = Some(stream);
        }
        apply(&mut conn, &mut wanted);
        if let Poll::Ready(ended) = Pin::new(&mut conn).poll(cx) {
            return Poll::Ready(ended.map_err(Ended::from));
        }
        // The poll may have taken the last change's acknowledgement: send
        // the waiting one, and poll again to write it.
        if apply(&mut conn, &mut wanted) {
            cx.waker().wake_by_ref();
        }
        pinger.as_mut().poll(cx).map(Err)
    })
    .await;
    meter.closed.store(true, Ordering::Relaxed);
    ended
}

/// Pings the server: back to back while a bulk transfer runs and the window
/// can grow, else every keepalive interval or as soon as readers have taken
/// a bulk transfer's worth. Returns only when a ping goes unanswered.
async fn pace(mut pings: h2::PingPong, meter: &Meter, limits: Limits, resize: mpsc::UnboundedSender<u32>) -> Ended {
    let mut windows = Windows::new(limits);
    loop {
        let before = meter.taken();
        let sent = Instant::now();
        match tokio::time::timeout(limits.keepalive_timeout, pings.ping(h2::Ping::opaque())).await {
            Err(_) => return Ended::Unanswered(limits.keepalive_timeout),
            // The connection is ending; its own result says why.
            Ok(Err(_)) => return std::future::pending().await,
            Ok(Ok(_)) => {}
        }
        let taken = meter.taken() - before;
        if let Some(stream) = windows.sample(taken, sent.elapsed()) {
            let _ = resize.send(stream);
        }
        if taken >= windows.bulk() && windows.can_grow() {
            continue;
        }
        let mark = meter.taken();
        if windows.can_grow() {
            meter.wake_at.store(mark + windows.bulk(), Ordering::Relaxed);
        }
        let quiet = tokio::select! {
            () = tokio::time::sleep(limits.keepalive_interval) => true,
            () = meter.traffic.notified(), if windows.can_grow() => false,
        };
        meter.wake_at.store(u64::MAX, Ordering::Relaxed);
        if quiet
            && meter.taken() == mark
            && let Some(stream) = windows.quiet()
        {
            let _ = resize.send(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits(stream: u32) -> Limits {
        Limits {
            stream,
            connection: stream + CONNECTION_HEADROOM,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_fast_reader_on_a_long_path_grows_its_window_to_the_limit() {
        let mut windows = Windows::new(limits(64 << 20));
        let rtt = Duration::from_millis(50);
        assert_eq!(windows.sample(0, rtt), None, "an idle ping only learns the path");
        // Window-limited: 3/4 of the window each round trip.
        let mut window = u64::from(START_STREAM_WINDOW);
        let mut steps = 0;
        while let Some(grown) = windows.sample(window * 3 / 4, rtt) {
            assert!(u64::from(grown) > window);
            window = u64::from(grown);
            steps += 1;
        }
        assert_eq!(window, 64 * MIB);
        assert_eq!(steps, 1, "one sample to grow");
        assert!(!windows.can_grow());
    }

    #[test]
    fn queues_do_not_pass_for_a_long_path() {
        // Loopback: 200 µs idle; under load a ping waits behind 16 MiB and
        // takes 20 ms while the reader took all of it. The path is short.
        let mut windows = Windows::new(limits(64 << 20));
        assert_eq!(windows.sample(0, Duration::from_micros(200)), None);
        for _ in 0..10 {
            assert_eq!(windows.sample(16 * MIB, Duration::from_millis(20)), None);
        }
    }

    #[test]
    fn a_slow_reader_keeps_the_window_it_needs() {
        // 50 ms path, a reader taking 100 MB/s: 5 MB per round trip is well
        // inside the start window.
        let mut windows = Windows::new(limits(64 << 20));
        let rtt = Duration::from_millis(50);
        assert_eq!(windows.sample(0, rtt), None);
        assert_eq!(windows.sample(5_000_000, rtt), None);
        // 160 MB/s needs 8 MB, just under half the window.
        assert_eq!(windows.sample(8_000_000, rtt), None);
        // 200 MB/s needs 10 MB, more than half: fourfold, to the limit.
        assert_eq!(windows.sample(10_000_000, rtt), Some(64 << 20));
    }

    #[test]
    fn quiet_returns_to_the_start_and_limits_hold() {
        let mut windows = Windows::new(limits(64 << 20));
        assert_eq!(windows.quiet(), None);
        windows.sample(0, Duration::from_millis(50));
        windows.sample(40 * MIB, Duration::from_millis(50));
        assert_eq!(windows.quiet(), Some(START_STREAM_WINDOW));
        // A configured window below the start: never grows past it.
        let small = limits(4 << 20);
        let mut windows = Windows::new(small);
        assert_eq!(small.start(), 4 << 20);
        windows.sample(0, Duration::from_millis(50));
        assert_eq!(windows.sample(64 * MIB, Duration::from_millis(50)), None);
        assert_eq!(small.connection_for(4 << 20), (4 << 20) + CONNECTION_HEADROOM);
        let tight = Limits { connection: 1 << 20, ..small };
        assert_eq!(tight.connection_for(4 << 20), 4 << 20, "never below the stream's own window");
    }
}
