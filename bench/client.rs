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
//!
//! `bench-client first-byte --target HOST:PORT [--ca CA.PEM --name DNS] [--proxy ADDR] -n 5`
//!   N times, one after the other: a new connection (through the proxy with
//!   `CONNECT` and TLS to the origin when `--ca` is given, else an
//!   absolute-form `GET http://…` to the proxy), `GET /1k`, and the time from
//!   the first connect to the response's first byte. Prints
//!   `{"median_ms":M,"runs_ms":[…]}`.
//!
//! `bench-client page --target H:P,H:P,… --ca CA.PEM --name DNS [--proxy ADDR] -n 10`
//!   a page load: one new HTTPS connection per origin, all at once, each
//!   fetching `/10k` N times over keep-alive. Prints `{"ms":T,"requests":R}`.

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
    path: String,
}

fn parse() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let mut args = Args { concurrency: 16, seconds: 10, count: 1000, path: "/1k".into(), ..Default::default() };
    args.mode = raw.next().ok_or("usage: bench-client tunnels|hold|first-byte|page [options] (see bench/client.rs)")?;
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
            "--path" => args.path = value()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.target.is_empty() {
        return Err("--target HOST:PORT is required".into());
    }
    if args.count == 0 {
        return Err("-n must be at least 1".into());
    }
    Ok(args)
}

/// A TCP stream to `target`, through `proxy` with CONNECT when given.
async fn open(proxy: Option<&str>, target: &str) -> std::io::Result<TcpStream> {
    let Some(proxy) = proxy else {
        let tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        return Ok(tcp);
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

/// A TLS connection to `target` (through `proxy` with CONNECT when given), checked against `args.name`.
async fn open_tls(
    args: &Args,
    target: &str,
    tls: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = open(args.proxy.as_deref(), target).await?;
    let name = rustls::pki_types::ServerName::try_from(args.name.clone()).map_err(std::io::Error::other)?;
    tls.connect(name, tcp).await
}

async fn one_tunnel(args: &Args, tls: &tokio_rustls::TlsConnector) -> std::io::Result<()> {
    let mut stream = open_tls(args, &args.target, tls).await?;
    stream
        .write_all(format!("GET /1k HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", args.name).as_bytes())
        .await?;
    let mut response = Vec::with_capacity(2048);
    read_response(&mut stream, &mut response).await
}

fn tls_connector(ca: &str) -> Result<tokio_rustls::TlsConnector, String> {
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
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn tunnels(args: Args) -> Result<(), String> {
    let tls = tls_connector(args.ca.as_deref().ok_or("--ca is required for tunnels")?)?;
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

/// Reads one keep-alive response (a `Content-Length` body) from `stream`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::other(what.to_string());
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed before the response head"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(bad(head.lines().next().unwrap_or("")));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad("no content-length"))?;
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed inside the body"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    buffer.drain(..head_end + length);
    Ok(())
}

/// Milliseconds from a new connection to the first byte of `GET /1k`'s answer.
async fn one_first_byte(args: &Args, tls: Option<&tokio_rustls::TlsConnector>) -> std::io::Result<f64> {
    let started = Instant::now();
    let mut first = [0u8; 1];
    match tls {
        Some(tls) => {
            let mut stream = open_tls(args, &args.target, tls).await?;
            let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", args.path, args.name);
            stream.write_all(request.as_bytes()).await?;
            stream.read_exact(&mut first).await?;
        }
        None => {
            let (to, uri) = match &args.proxy {
                Some(proxy) => (proxy.as_str(), format!("http://{}{}", args.target, args.path)),
                None => (args.target.as_str(), args.path.clone()),
            };
            let mut tcp = TcpStream::connect(to).await?;
            tcp.set_nodelay(true)?;
            let request = format!("GET {uri} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", args.target);
            tcp.write_all(request.as_bytes()).await?;
            tcp.read_exact(&mut first).await?;
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

async fn first_byte(args: Args) -> Result<(), String> {
    let tls = args.ca.as_deref().map(tls_connector).transpose()?;
    let mut runs = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        runs.push(one_first_byte(&args, tls.as_ref()).await.map_err(|e| format!("first byte: {e}"))?);
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let runs: Vec<String> = runs.iter().map(|ms| format!("{ms:.2}")).collect();
    println!(r#"{{"median_ms":{median:.2},"runs_ms":[{}]}}"#, runs.join(","));
    Ok(())
}

/// One origin's share of a page: a new HTTPS connection, `count` requests on it.
async fn page_origin(args: Arc<Args>, target: String, tls: tokio_rustls::TlsConnector) -> std::io::Result<usize> {
    let mut stream = open_tls(&args, &target, &tls).await?;
    let mut buffer = Vec::with_capacity(32 * 1024);
    for _ in 0..args.count {
        stream.write_all(format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", args.path, args.name).as_bytes()).await?;
        read_response(&mut stream, &mut buffer).await?;
    }
    Ok(args.count)
}

async fn page(args: Args) -> Result<(), String> {
    let tls = tls_connector(args.ca.as_deref().ok_or("--ca is required for page")?)?;
    let targets: Vec<String> = args.target.split(',').map(str::to_owned).collect();
    let args = Arc::new(args);
    let started = Instant::now();
    let loads: Vec<_> = targets.into_iter().map(|t| tokio::spawn(page_origin(args.clone(), t, tls.clone()))).collect();
    let mut requests = 0;
    for load in loads {
        requests += load.await.map_err(|e| e.to_string())?.map_err(|e| format!("page: {e}"))?;
    }
    println!(r#"{{"ms":{:.2},"requests":{requests}}}"#, started.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let outcome = match parse() {
        Ok(args) if args.mode == "tunnels" => tunnels(args).await,
        Ok(args) if args.mode == "hold" => hold(args).await,
        Ok(args) if args.mode == "first-byte" => first_byte(args).await,
        Ok(args) if args.mode == "page" => page(args).await,
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
