//! Load client for bench/run, for the two measurements wrk cannot make:
//!
//! `bench-client tunnels --target HOST:PORT --ca CA.PEM --name DNS [--proxy ADDR] -c 16 -s 10`
//!   opens new HTTPS connections as fast as it can from `-c` workers for `-s`
//!   seconds: through the proxy with `CONNECT` (or directly), a TLS handshake
//!   with the origin, `GET /1k` with `Connection: close`, the whole response
//!   read. Prints `{"completed":N,"errors":E,"seconds":S,"per_second":R}`.
//!
//! `bench-client hold --proxy ADDR --target HOST:PORT -n 1000`
//!   opens N idle `CONNECT` tunnels, prints `{"held":N}`, and keeps them open
//!   until its standard input closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Default)]
struct Args {
    mode: String,
    proxy: Option<String>,
    target: String,
    ca: Option<String>,
    name: String,
    concurrency: usize,
    seconds: u64,
    count: usize,
}

fn parse() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let mut args = Args { concurrency: 16, seconds: 10, count: 1000, ..Default::default() };
    args.mode = raw.next().ok_or("usage: bench-client tunnels|hold [options] (see bench/client.rs)")?;
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--proxy" => args.proxy = Some(value()?),
            "--target" => args.target = value()?,
            "--ca" => args.ca = Some(value()?),
            "--name" => args.name = value()?,
            "-c" => args.concurrency = value()?.parse().map_err(|e| format!("-c: {e}"))?,
            "-s" => args.seconds = value()?.parse().map_err(|e| format!("-s: {e}"))?,
            "-n" => args.count = value()?.parse().map_err(|e| format!("-n: {e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.target.is_empty() {
        return Err("--target HOST:PORT is required".into());
    }
    Ok(args)
}

/// A TCP stream to `target`, through `proxy` with CONNECT when given.
async fn open(proxy: Option<&str>, target: &str) -> std::io::Result<TcpStream> {
    let Some(proxy) = proxy else {
        return TcpStream::connect(target).await;
    };
    let mut tcp = TcpStream::connect(proxy).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await?;
    // Read the response head byte by byte so nothing after it is consumed.
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Err(std::io::Error::other("proxy closed during CONNECT"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(std::io::Error::other(String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string()));
    }
    Ok(tcp)
}

async fn one_tunnel(args: &Args, tls: &tokio_rustls::TlsConnector) -> std::io::Result<()> {
    let tcp = open(args.proxy.as_deref(), &args.target).await?;
    let name = rustls::pki_types::ServerName::try_from(args.name.clone()).map_err(std::io::Error::other)?;
    let mut stream = tls.connect(name, tcp).await?;
    stream
        .write_all(format!("GET /1k HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", args.name).as_bytes())
        .await?;
    let mut response = Vec::with_capacity(2048);
    let _ = stream.read_to_end(&mut response).await; // a peer without close_notify still ends the body
    if !response.starts_with(b"HTTP/1.1 200") || response.len() < 1024 {
        return Err(std::io::Error::other("bad response"));
    }
    Ok(())
}

async fn tunnels(args: Args) -> Result<(), String> {
    let ca = args.ca.as_deref().ok_or("--ca is required for tunnels")?;
    let pem = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let args = Arc::new(args);
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (args, tls, done, errors) = (args.clone(), tls.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match one_tunnel(&args, &tls).await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let completed = done.load(Ordering::Relaxed);
    println!(
        r#"{{"completed":{completed},"errors":{},"seconds":{seconds:.3},"per_second":{:.1}}}"#,
        errors.load(Ordering::Relaxed),
        completed as f64 / seconds
    );
    Ok(())
}

async fn hold(args: Args) -> Result<(), String> {
    let proxy = args.proxy.as_deref().ok_or("--proxy is required for hold")?;
    let mut held = Vec::with_capacity(args.count);
    for i in 0..args.count {
        held.push(open(Some(proxy), &args.target).await.map_err(|e| format!("tunnel {i}: {e}"))?);
    }
    println!(r#"{{"held":{}}}"#, held.len());
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    let _ = stdin.read_line(&mut line).await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let outcome = match parse() {
        Ok(args) if args.mode == "tunnels" => tunnels(args).await,
        Ok(args) if args.mode == "hold" => hold(args).await,
        Ok(args) => Err(format!("unknown mode {}", args.mode)),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-client: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
