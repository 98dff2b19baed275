//! HTTP/2 windows that follow the path (docs/protocol.md, "Windows"): over a
//! link with a long round trip a reader that keeps up grows its stream's
//! window past the start, and a bulk stream leaves room for a small request
//! beside it on the same connection. In-process agent and server, with a
//! relay between them that delays every byte.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Half the relay's round trip.
const ONE_WAY: Duration = Duration::from_millis(150);
const RTT: Duration = Duration::from_millis(300);
const START_WINDOW: u32 = 16 << 20;

/// A TCP relay to `target` that delivers each byte `ONE_WAY` after it
/// arrived, both ways, without capping what is in flight.
async fn delayed(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else { continue };
            let (a_read, a_write) = inbound.into_split();
            let (b_read, b_write) = outbound.into_split();
            tokio::spawn(late(a_read, b_write));
            tokio::spawn(late(b_read, a_write));
        }
    });
    addr
}

async fn late(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let (queue, mut due) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 256 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 || queue.send((tokio::time::Instant::now() + ONE_WAY, buffer[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// Sends `GET url` through the proxy at `proxy` on a new connection and
/// returns the time to the response's first byte.
async fn first_byte(proxy: SocketAddr, url: &str) -> Duration {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let started = Instant::now();
    client
        .write_all(format!("GET {url} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(client.read(&mut byte).await.unwrap(), 1);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_keeps_up_grows_its_window_and_a_small_request_still_passes() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let link = delayed(server.addr).await;
    let agent = start_agent_with(&pki, link, |args| args.pool_size = Some(1)).await;
    let origin = http_origin().await;
    wait_until(|| !agent.pool.receive_windows().is_empty()).await;
    assert_eq!(agent.pool.receive_windows(), vec![START_WINDOW], "a connection starts at 16 MiB per stream");

    // A small request alone: the baseline.
    let small = format!("http://{origin}/small");
    let mut alone = Vec::new();
    for _ in 0..3 {
        alone.push(first_byte(agent.addr, &small).await);
    }
    let alone = *alone.iter().min().unwrap();

    // A bulk download read as fast as it comes.
    const SIZE: u64 = 1 << 30;
    let mut bulk = TcpStream::connect(agent.addr).await.unwrap();
    bulk.write_all(format!("GET http://{origin}/download/{SIZE} HTTP/1.1\r\nHost: origin\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (done, mut finished) = tokio::sync::oneshot::channel::<u64>();
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            match bulk.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n as u64,
            }
        }
        let _ = done.send(received);
    });

    // The window grows while the download runs.
    let grow_started = Instant::now();
    let grown = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let window = agent.pool.receive_windows().first().copied().unwrap_or(0);
            if window > START_WINDOW {
                return window;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stream window grew past 16 MiB while a reader kept up over a 300 ms round trip");
    println!("grew to {grown} after {:?}", grow_started.elapsed());
    assert!(grown <= 64 << 20, "grew to {grown}, past the default limit");

    // Beside it, on the same (only) connection, a small request waits at
    // most one more round trip than alone.
    let mut beside = Vec::new();
    for _ in 0..3 {
        beside.push(first_byte(agent.addr, &small).await);
    }
    let beside = *beside.iter().min().unwrap();
    assert!(finished.try_recv().is_err(), "the download was still running");
    println!("first byte alone {alone:?}, beside the bulk stream {beside:?}, window {grown}");
    assert!(beside <= alone + RTT, "first byte beside a bulk stream {beside:?}, alone {alone:?}");
    reader.abort();
}
