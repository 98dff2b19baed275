//! Byte relay between two streams (a CONNECT tunnel, an upgraded WebSocket):
//! both directions at once, buffers that start at 1 KiB and grow to 64 KiB
//! once a read fills them (so a thousand idle tunnels stay small while a bulk
//! transfer gets large reads), ends when both sides have finished, as soon
//! as either fails (closing both, so neither end waits on a dead tunnel), or
//! when no byte moved for `idle_timeout`. Bytes and the time of the last byte
//! are recorded in shared atomics, cheap enough for the hot path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Largest size of each direction's buffer.
pub const BUFFER: usize = 64 * 1024;
/// Size each direction's buffer starts at.
pub const INITIAL_BUFFER: usize = 1024;

/// Traffic counters shared by every relay of a process.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bytes from the client side towards the target.
    pub bytes_up: AtomicU64,
    /// Bytes from the target towards the client.
    pub bytes_down: AtomicU64,
    /// Unix seconds of the last byte relayed (0 = never).
    pub last_activity_secs: AtomicU64,
}

impl Activity {
    /// Marks "now" as the time of the last activity.
    pub fn touch(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.last_activity_secs.store(now, Ordering::Relaxed);
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// One side closed and the other finished.
    Closed { up: u64, down: u64 },
    /// No byte moved for the idle timeout.
    Idle { up: u64, down: u64 },
    /// An I/O error on either side.
    Error { up: u64, down: u64 },
}

/// Relays between `client` and `target` until both directions finish, an
/// error occurs on either, or nothing moves for `idle_timeout`. Both streams
/// are dropped when it returns.
pub async fn relay<A, B>(client: A, target: B, idle_timeout: Duration, activity: Arc<Activity>) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (target_read, target_write) = tokio::io::split(target);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let clock = Clock { start: Instant::now(), last_ms: AtomicU64::new(0) };
    let upstream = pump(client_read, target_write, &up, &activity.bytes_up, &activity, &clock);
    let downstream = pump(target_read, client_write, &down, &activity.bytes_down, &activity, &clock);
    // One timer, set again only when it fires: moving a byte costs a clock
    // read, not a wake-up of this task and a new timer each time.
    let watchdog = async {
        loop {
            let deadline = clock.last() + idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let totals = || (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    tokio::select! {
        // A half-close passes on and the other direction goes on; an error
        // ends both: the other side learns of it by its stream closing.
        moved = async { tokio::try_join!(upstream, downstream) } => {
            let (up, down) = totals();
            if moved.is_err() { Ended::Error { up, down } } else { Ended::Closed { up, down } }
        }
        () = watchdog => {
            let (up, down) = totals();
            Ended::Idle { up, down }
        }
    }
}

/// When a byte last moved through one relay.
struct Clock {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved.
    last_ms: AtomicU64,
}

impl Clock {
    fn moved(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

async fn pump<R, W>(
    mut from: R,
    mut to: W,
    moved: &AtomicU64,
    total: &AtomicU64,
    activity: &Activity,
    clock: &Clock,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; INITIAL_BUFFER];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            // Half-close: pass the end of stream on, keep the other direction open.
            return to.shutdown().await;
        }
        to.write_all(&buffer[..n]).await?;
        if n == buffer.len() && buffer.len() < BUFFER {
            buffer.resize(buffer.len() * 4, 0);
        }
        moved.fetch_add(n as u64, Ordering::Relaxed);
        total.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
        clock.moved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_and_counts() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (target, mut target_peer) = tokio::io::duplex(1024);
        let activity = Arc::new(Activity::default());
        let task = tokio::spawn(relay(client, target, Duration::from_secs(60), activity.clone()));
        client_peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        target_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        target_peer.write_all(b"world!").await.unwrap();
        let mut got = [0u8; 6];
        client_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"world!");
        drop(client_peer);
        drop(target_peer);
        assert_eq!(task.await.unwrap(), Ended::Closed { up: 5, down: 6 });
        assert_eq!(activity.bytes_up.load(Ordering::Relaxed), 5);
        assert!(activity.last_activity_secs.load(Ordering::Relaxed) > 0);
    }

    /// A stream whose reads fail (a tunnel whose connection died).
    struct Broken;

    impl AsyncRead for Broken {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
        }
    }

    impl AsyncWrite for Broken {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_side_closes_the_other_at_once() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(client, Broken, Duration::from_secs(3600), Arc::default()));
        // The client sends nothing: only the failure can end the relay.
        let mut got = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(1), client_peer.read(&mut got)).await;
        assert!(matches!(read, Ok(Ok(0))), "the client must see its tunnel end: {read:?}");
        assert_eq!(task.await.unwrap(), Ended::Error { up: 0, down: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn idle_relay_is_closed() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (target, _target_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(client, target, Duration::from_secs(300), Arc::default()));
        client_peer.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_secs(200)).await;
        client_peer.write_all(b"y").await.unwrap();
        tokio::time::sleep(Duration::from_secs(250)).await;
        assert!(!task.is_finished(), "activity resets the idle clock: 450 s in, 250 s after the last byte");
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(task.is_finished(), "300 s after the last byte");
        assert_eq!(task.await.unwrap(), Ended::Idle { up: 2, down: 0 });
    }
}
