//! Soak: mixed traffic (plain requests, uploads, CONNECT tunnels) through the
//! real binaries for a while, checking that memory and open file descriptors
//! level off. 90 s in the normal run (growth measured over the last 30 s);
//! `tests/soak.sh` runs 10 minutes
//! (FLUIDITY_SOAK_SECONDS).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

async fn traffic_until(
    deadline: Instant,
    proxy: std::net::SocketAddr,
    origin: std::net::SocketAddr,
    echo: std::net::SocketAddr,
) -> u64 {
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                match (worker + done) % 3 {
                    0 => {
                        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
                        let (mut sender, conn) =
                            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
                        tokio::spawn(conn);
                        let request = hyper::Request::get(format!("http://{origin}/download/65536"))
                            .body(http_body_util::Empty::<bytes::Bytes>::new())
                            .unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
                        assert_eq!(body.len(), 65536);
                    }
                    1 => {
                        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
                        let (mut sender, conn) =
                            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
                        tokio::spawn(conn);
                        let request = hyper::Request::post(format!("http://{origin}/upload"))
                            .body(http_body_util::Full::new(bytes::Bytes::from(vec![7u8; 100_000])))
                            .unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
                        assert!(body.starts_with(b"100000 "));
                    }
                    _ => {
                        let mut tunnel = connect_through(proxy, &echo.to_string()).await;
                        tunnel.write_all(&[1u8; 4096]).await.unwrap();
                        let mut back = [0u8; 4096];
                        tunnel.read_exact(&mut back).await.unwrap();
                    }
                }
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_memory_and_descriptors_level_off() {
    let seconds: u64 = std::env::var("FLUIDITY_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(90);
    // The server's kept-alive origin connections and the allocator settle in
    // about a minute of this traffic (a 240 s run: +0.8 % over the last 160 s);
    // growth is measured after that.
    let warmup = Duration::from_secs((seconds * 2 / 3).max(5));
    let pki = Pki::new();
    let (server, server_addr) = server_process(&pki, "server").await;
    let agent = agent_process(&pki, server_addr).await;
    let proxy = agent.logged_addr("local proxy listening").await;
    agent.wait_for("tunnel to server established").await;
    let origin = http_origin().await;
    let echo = echo_origin().await;

    let warm = traffic_until(Instant::now() + warmup, proxy, origin, echo).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = [(rss_kib(server.pid()), open_fds(server.pid())), (rss_kib(agent.pid()), open_fds(agent.pid()))];
    let rest = Duration::from_secs(seconds).saturating_sub(warmup);
    let more = traffic_until(Instant::now() + rest, proxy, origin, echo).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = [(rss_kib(server.pid()), open_fds(server.pid())), (rss_kib(agent.pid()), open_fds(agent.pid()))];

    println!("soak {seconds}s: {warm} operations in warm-up, {more} after");
    println!("| process | RSS after warm-up KiB | RSS at end KiB | growth | fds after warm-up | fds at end |");
    println!("|---|---|---|---|---|---|");
    for (name, ((rss0, fd0), (rss1, fd1))) in ["server", "agent"].iter().zip(before.iter().zip(after.iter())) {
        let growth = (*rss1 as f64 - *rss0 as f64) / *rss0 as f64 * 100.0;
        println!("| {name} | {rss0} | {rss1} | {growth:.1} % | {fd0} | {fd1} |");
        assert!(growth < 10.0, "{name} RSS grew {growth:.1} % after warm-up");
        assert!(*fd1 <= fd0 + 2, "{name} open descriptors went from {fd0} to {fd1}");
    }
    assert!(more > 0);
    assert_eq!(agent.terminate().await, Some(0));
    assert_eq!(server.terminate().await, Some(0));
}
