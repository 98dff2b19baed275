//! A long link on loopback, for bench/run's long-link mode: a TCP relay that
//! delivers every byte a fixed time after it arrived, in each direction.
//!
//! `bench-delay --one-way-ms 25 LISTEN=TARGET [LISTEN=TARGET …]`
//!
//! This kernel has no netem, so the delay lives here. A new connection is
//! charged one round trip before the relay dials the target (as a SYN and its
//! answer would be); after that each chunk read is written out `one-way-ms`
//! later. At most 64 MiB per direction may be in flight, far above the
//! bandwidth-delay product of anything measured, so the relay itself caps no
//! window: what limits a stream is the tunnel's own flow control.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Bytes one direction may hold while they wait out the delay.
const IN_FLIGHT: usize = 64 << 20;
const CHUNK: usize = 256 * 1024;

fn parse() -> Result<(Duration, Vec<(String, String)>), String> {
    let mut args = std::env::args().skip(1);
    let mut delay = Duration::from_millis(25);
    let mut pairs = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--one-way-ms" {
            let ms = args.next().ok_or("--one-way-ms needs a value")?;
            delay = Duration::from_millis(ms.parse().map_err(|e| format!("--one-way-ms: {e}"))?);
        } else if let Some((listen, target)) = arg.split_once('=') {
            pairs.push((listen.to_owned(), target.to_owned()));
        } else {
            return Err(format!("unexpected {arg}; usage: bench-delay --one-way-ms MS LISTEN=TARGET …"));
        }
    }
    if pairs.is_empty() {
        return Err("usage: bench-delay --one-way-ms MS LISTEN=TARGET …".into());
    }
    Ok((delay, pairs))
}

async fn serve(listener: TcpListener, target: String, delay: Duration) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                eprintln!("bench-delay: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let target = target.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay * 2).await;
            let Ok(server) = TcpStream::connect(&target).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            // An error either way drops both sockets (a reset, not a clean end).
            let _ = tokio::try_join!(
                direction(client_read, server_write, delay),
                direction(server_read, client_write, delay)
            );
        });
    }
}

/// Moves `from` to `to`, each chunk written `delay` after it was read; the
/// end of stream is passed on just as late. Fails on the first I/O error.
async fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) -> std::io::Result<()> {
    let budget = Arc::new(Semaphore::new(IN_FLIGHT));
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = {
        let budget = budget.clone();
        async move {
            let mut buffer = vec![0u8; CHUNK];
            loop {
                let n = from.read(&mut buffer).await?;
                // Each chunk is its own exact-size copy, so the budget bounds memory.
                let permit = budget.acquire_many(n as u32).await.map_err(std::io::Error::other)?;
                permit.forget();
                if queue.send((Instant::now() + delay, buffer[..n].to_vec())).is_err() || n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if chunk.is_empty() {
                return to.shutdown().await;
            }
            to.write_all(&chunk).await?;
            budget.add_permits(chunk.len());
        }
        Ok(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (delay, pairs) = match parse() {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("bench-delay: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut relays = Vec::new();
    for (listen, target) in pairs {
        match TcpListener::bind(&listen).await {
            Ok(listener) => relays.push(tokio::spawn(serve(listener, target, delay))),
            Err(error) => {
                eprintln!("bench-delay: {listen}: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    for relay in relays {
        let _ = relay.await;
    }
    std::process::ExitCode::SUCCESS
}
