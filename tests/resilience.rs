//! Resilience and security of the tunnel: server crash and restart, silent
//! partitions, drain on SIGTERM, egress policy, agent exposure, certificate
//! reload.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn proxy_url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_on_the_same_port() {
    let pki = Pki::new();
    let (server, addr) = server_process(&pki, "server").await;
    let agent = start_agent_with(&pki, addr, |a| {
        a.reconnect_max_backoff = Some("1s".into());
        a.request_wait = Some("5s".into());
    })
    .await;
    let origin = http_origin().await;
    let proxy = proxy_url(agent.addr);
    let out = curl(&["-x", &proxy, &format!("http://{origin}/before")]).await;
    assert_eq!(out.text(), "GET /before", "{}", out.stderr);

    // A slow download in flight when the server dies must fail promptly.
    let big = format!("http://{origin}/trickle/{}", 100 * 1024 * 1024);
    let download = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            let started = Instant::now();
            let out = curl(&["-x", &proxy, "-o", "/dev/null", &big]).await;
            (out.code, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut server = server;
    server.child.start_kill().unwrap();
    let killed_at = Instant::now();
    server.child.wait().await.unwrap();
    let (code, _) = download.await.unwrap();
    assert_ne!(code, Some(0), "the interrupted download must fail");
    assert!(killed_at.elapsed() < Duration::from_secs(5), "the download hung after the kill");

    let (_server, again) = server_process_on(&pki, "server", &addr.to_string(), &[]).await;
    assert_eq!(again, addr);
    let started = Instant::now();
    let out = curl(&["-x", &proxy, &format!("http://{origin}/after")]).await;
    assert_eq!(out.text(), "GET /after", "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// What a test can do to the relay's connections.
#[derive(Default)]
struct RelayControls {
    /// While set, every connection holds its bytes: a silent black hole.
    paused: AtomicBool,
    /// Bumped by a cut: every connection made before it holds its bytes for
    /// good (as a NAT or Wi-Fi change leaves them after a suspend); new
    /// ones are forwarded.
    cut: std::sync::atomic::AtomicU64,
}

/// A TCP relay to `target` that can stop forwarding without closing anything.
async fn relay(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<RelayControls>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let controls = Arc::new(RelayControls::default());
    let shared = controls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else { continue };
            let (controls, born) = (shared.clone(), shared.cut.load(Ordering::SeqCst));
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let pump = |controls: Arc<RelayControls>| {
                    move |mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf| async move {
                        let mut buffer = vec![0u8; 16384];
                        loop {
                            let n = match from.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if controls.cut.load(Ordering::SeqCst) != born {
                                std::future::pending::<()>().await;
                            }
                            while controls.paused.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if to.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                tokio::join!(pump(controls.clone())(ir, ow), pump(controls)(or, iw));
            });
        }
    });
    (addr, controls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_partition_is_detected_and_traffic_resumes() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let (relay, controls) = relay(server.addr).await;
    let agent = agent_process_with(
        &pki,
        relay,
        &[
            "--keepalive-interval",
            "1s",
            "--keepalive-timeout",
            "1s",
            "--pool-size",
            "1",
            "--reconnect-max-backoff",
            "1s",
            "--connect-timeout",
            "2s",
        ],
    )
    .await;
    let proxy = proxy_url(agent.logged_addr("local proxy listening").await);
    agent.wait_for("tunnel connection up").await;
    let origin = http_origin().await;
    assert_eq!(curl(&["-x", &proxy, &format!("http://{origin}/one")]).await.text(), "GET /one");
    let mut tunnel = echo_tunnel(&proxy).await;

    controls.paused.store(true, Ordering::SeqCst);
    let paused_at = Instant::now();
    agent.wait_for("tunnel connection lost").await;
    let detected = paused_at.elapsed();
    assert!(detected <= Duration::from_millis(2 * 1000 + 700), "dead connection noticed after {detected:?}");
    // A tunnel on the dead connection, idle on both ends, is closed with it.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), tunnel.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the client's tunnel outlived its connection: {read:?}");

    controls.paused.store(false, Ordering::SeqCst);
    let out = curl(&["-x", &proxy, &format!("http://{origin}/two")]).await;
    assert_eq!(out.text(), "GET /two", "{}", out.stderr);
}

/// A CONNECT tunnel through the agent at `proxy` (`http://host:port`) to an
/// echo origin, shown to carry bytes.
async fn echo_tunnel(proxy: &str) -> tokio::net::TcpStream {
    let echo = echo_origin().await;
    let mut tunnel = tokio::net::TcpStream::connect(proxy.trim_start_matches("http://")).await.unwrap();
    tunnel.write_all(format!("CONNECT {echo} HTTP/1.1\r\nhost: {echo}\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tunnel.read(&mut byte).await.unwrap(), 1, "{}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    tunnel
}

/// How long the suspend tests keep the agent stopped.
const SUSPENDED_FOR: Duration = Duration::from_secs(120);

/// A laptop's suspend: the agent is stopped (SIGSTOP) for two minutes while
/// its connections to the server go silently dead, then continued. With
/// the default keepalive (10 s pings, 10 s timeout) waiting for the pings
/// would fail the first requests; the agent notices the pause and renews
/// its connections, so a request within 15 s works, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_suspend_the_next_request_works_without_a_restart() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let (relay, controls) = relay(server.addr).await;
    let agent = agent_process_with(&pki, relay, &[]).await;
    let proxy = proxy_url(agent.logged_addr("local proxy listening").await);
    agent.wait_for("tunnel connection up").await;
    let origin = http_origin().await;
    assert_eq!(curl(&["-x", &proxy, &format!("http://{origin}/before")]).await.text(), "GET /before");

    agent.signal("STOP");
    controls.cut.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(SUSPENDED_FOR).await;
    agent.signal("CONT");
    let resumed = Instant::now();
    let out = curl(&["-sS", "--max-time", "15", "-x", &proxy, &format!("http://{origin}/after")]).await;
    assert_eq!(out.text(), "GET /after", "{} after {:?}: {:#?}", out.stderr, resumed.elapsed(), agent.lines());
    assert!(resumed.elapsed() < Duration::from_secs(15), "took {:?}", resumed.elapsed());
    let noticed = agent.lines().iter().any(|l| l.contains("the agent was paused") && l.contains("paused_s=12"));
    assert!(noticed, "{:#?}", agent.lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_download_refuses_new_connections_and_exits_zero() {
    let pki = Pki::new();
    let (server, addr) = server_process_on(&pki, "server", "127.0.0.1:0", &["--drain-timeout", "25s"]).await;
    let agent = agent_process_with(&pki, addr, &[]).await;
    let agent_addr = agent.logged_addr("local proxy listening").await;
    agent.wait_for("tunnel connection up").await;
    let origin = http_origin().await;
    let size: u64 = 20 * 1024 * 1024;
    let download = slow_download(proxy_url(agent_addr), format!("http://{origin}/download/{size}"), "5M");
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.signal("TERM");
    server.wait_for("stopped accepting").await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener must be closed while draining");
    let (ok, total, digest) = download.await.unwrap();
    assert!(ok && total == size, "download did not complete: ok={ok} bytes={total}");
    assert_eq!(digest, pattern_sha256(size));
    let mut server = server;
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    // A drain is a clean close, even where the agent's goodbye met a socket
    // the server had already closed: no warning that the tunnel was lost
    // (logged for one connection in seven before).
    let ends = || {
        agent.lines().into_iter().filter(|l| l.contains("reconnecting") && !l.contains("attempt")).collect::<Vec<_>>()
    };
    wait_until(|| ends().len() >= 2).await;
    let ends = ends();
    assert!(ends.len() == 2 && !ends.iter().any(|l| l.contains("lost")), "{ends:#?}");
}

/// A response that has fully arrived is the local client's to read whole,
/// however slowly, even when its connection dies before the client is done:
/// the agent must not cut short what it already holds. (A server that
/// drains and closes under a slow reader hit this in one run out of five.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_has_arrived_survives_its_connection() {
    let origin = http_origin().await;
    let request =
        format!("GET http://{origin}/download/{ARRIVED} HTTP/1.1\r\nhost: {origin}\r\nconnection: close\r\n\r\n");
    let body = response_body_across_a_lost_connection(request).await;
    assert_eq!(body.len() as u64, ARRIVED);
    assert_eq!(hex(&Sha256::digest(&body)), pattern_sha256(ARRIVED));
}

/// The same while the request's body is still being sent (RFC 9113 §8.1: a
/// server may answer in full before the request has ended), so the stream
/// is only half closed when its connection dies. The response is chunked:
/// its end is the last chunk, which the agent writes only if the stream
/// ends cleanly. h2 0.4.20 failed such a stream after its data (the agent
/// then cut the response before its last chunk); 0.4.21 ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_has_arrived_survives_its_connection_during_an_upload() {
    let origin = answers_before_the_upload_ends().await;
    let request = format!(
        "POST http://{origin}/ HTTP/1.1\r\nhost: {origin}\r\ncontent-length: 1073741824\r\n\r\n{}",
        "x".repeat(1024)
    );
    let chunked = response_body_across_a_lost_connection(request).await;
    let body = dechunk(&chunked).expect("the response up to its last chunk");
    assert_eq!(body.len() as u64, ARRIVED);
    assert_eq!(hex(&Sha256::digest(&body)), pattern_sha256(ARRIVED));
}

/// Size of the response in the two tests above: well inside one receive
/// window, so all of it reaches the agent at once.
const ARRIVED: u64 = 12 * 1024 * 1024;

/// Sends `request` (raw HTTP/1.1) through an agent whose one tunnel
/// connection passes a relay; once the response has reached the agent, the
/// relay goes silent and the ping timeout ends the connection. Returns the
/// response's body as a slow client then reads it (as sent, chunked or not).
async fn response_body_across_a_lost_connection(request: String) -> Vec<u8> {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let (relay, controls) = relay(server.addr).await;
    let flags = ["--keepalive-interval", "1s", "--keepalive-timeout", "1s", "--pool-size", "1"];
    let agent = agent_process_with(&pki, relay, &flags).await;
    let proxy = agent.logged_addr("local proxy listening").await;
    agent.wait_for("tunnel connection up").await;
    // A small receive buffer keeps most of the response in the agent, not
    // in the kernel, when the connection dies.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut client = socket.connect(proxy).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let mut received = vec![0u8; 4096];
    let n = client.read(&mut received).await.unwrap();
    received.truncate(n);
    tokio::time::sleep(Duration::from_millis(500)).await;

    controls.cut.fetch_add(1, Ordering::SeqCst);
    agent.wait_for("tunnel connection lost").await;
    let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received)).await;
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&received[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    received.split_off(head_end)
}

/// The data of a chunked body, if it ends with its last (empty) chunk.
fn dechunk(mut chunked: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&chunked[..line_end]).ok()?, 16).ok()?;
        chunked = &chunked[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(chunked.get(..size)?);
        chunked = chunked.get(size + 2..)?;
    }
}

/// An origin that answers each request at once, `ARRIVED` pattern bytes in
/// 64 KiB chunks, then goes on reading (and dropping) the request's body.
async fn answers_before_the_upload_ends() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n @ 1..) = tcp.read(&mut buffer).await else { return };
                    head.extend_from_slice(&buffer[..n]);
                }
                let (mut read, mut write) = tcp.into_split();
                tokio::spawn(async move { while let Ok(1..) = read.read(&mut buffer).await {} });
                let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for index in 0..ARRIVED / CHUNK as u64 {
                    response.extend_from_slice(format!("{CHUNK:x}\r\n").as_bytes());
                    response.extend_from_slice(&pattern_chunk(index, CHUNK));
                    response.extend_from_slice(b"\r\n");
                }
                response.extend_from_slice(b"0\r\n\r\n");
                let _ = write.write_all(&response).await;
                // Kept open: the request's body has not ended.
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

/// curl downloading `url` through `proxy` at `rate`: whether it succeeded,
/// the bytes it wrote and their SHA-256.
fn slow_download(proxy: String, url: String, rate: &str) -> tokio::task::JoinHandle<(bool, u64, String)> {
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "--limit-rate", rate, "-x", &proxy, &url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::spawn(async move {
        let mut stdout = child.stdout.take().unwrap();
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 65536];
        let mut total = 0u64;
        loop {
            let n = stdout.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buffer[..n]);
        }
        (child.wait().await.unwrap().success(), total, hex(&hasher.finalize()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_policy_refuses_local_targets_unless_allowed() {
    let pki = Pki::new();
    let origin = http_origin().await;
    let port = origin.port();
    let v6 = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let v6_port = v6.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = v6.accept().await else { continue };
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let _ = tcp.read(&mut buffer).await;
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nv6").await;
            });
        }
    });
    let hosts = || fluidity::server::config::RawServerConfig {
        hosts: [("loopy.test".to_string(), "127.0.0.1".to_string())].into(),
        ..Default::default()
    };
    let targets = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{v6_port}/"),
        format!("http://localhost:{port}/"),
        format!("http://loopy.test:{port}/"),
    ];

    let strict = start_server_with(&pki, "server", |a| a.allow_loopback = Some(false), hosts()).await;
    let agent = start_agent(&pki, strict.addr).await;
    let proxy = proxy_url(agent.addr);
    for target in targets.iter().chain([&"http://169.254.170.2/v2/credentials".to_string()]) {
        let out = curl(&["-x", &proxy, "-w", "\n%{http_code}", target]).await;
        let text = out.text();
        assert!(text.ends_with("\n403") && text.contains("not allowed"), "{target}: {text}");
    }
    assert_eq!(fluidity::server::Stats::get(&strict.stats.egress_refused), 5);

    let open = start_server_with(
        &pki,
        "server",
        |a| {
            a.allow_loopback = Some(false);
            a.egress_allow = vec!["127.0.0.0/8".into(), "::1/128".into()];
        },
        hosts(),
    )
    .await;
    let agent = start_agent(&pki, open.addr).await;
    let proxy = proxy_url(agent.addr);
    for target in &targets {
        let out = curl(&["-x", &proxy, "-w", "\n%{http_code}", target]).await;
        assert!(out.text().ends_with("\n200"), "{target}: {}", out.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_agent_needs_auth_or_explicit_consent() {
    let pki = Pki::new();
    let (code, _, stderr) = run_bin(
        "fluidity-agent",
        &[
            "--listen",
            "0.0.0.0:0",
            "--server",
            "127.0.0.1:9",
            "--cert",
            pki.path("client.crt").to_str().unwrap(),
            "--key",
            pki.path("client.key").to_str().unwrap(),
            "--ca",
            pki.path("ca.crt").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("proxy_auth") && stderr.contains("--allow-open-proxy"), "{stderr}");

    let server = start_server(&pki, "server").await;
    let agent = start_agent_with(&pki, server.addr, |a| {
        a.listen = Some("0.0.0.0:0".into());
        a.proxy_auth = Some(fluidity::config::Secret::new("alice:s3cret"));
    })
    .await;
    let origin = http_origin().await;
    let proxy = format!("http://127.0.0.1:{}", agent.addr.port());
    let url = format!("http://{origin}/auth");
    let out = curl(&["-x", &proxy, "-w", "%{http_code}", "-o", "/dev/null", &url]).await;
    assert_eq!(out.text(), "407");
    let out = curl(&["-x", &proxy, "--proxy-user", "alice:wrong", "-w", "%{http_code}", "-o", "/dev/null", &url]).await;
    assert_eq!(out.text(), "407");
    let out = curl(&["-x", &proxy, "--proxy-user", "alice:s3cret", &url]).await;
    assert_eq!(out.text(), "GET /auth", "{}", out.stderr);
}

async fn presented_certificate(pki: &Pki, addr: std::net::SocketAddr) -> Vec<u8> {
    let material = fluidity::tls::TlsMaterial::load(
        &fluidity::tls::TlsSources::resolve(&pki.tls_args("client"), &Default::default(), pki.dir.path(), ["", "", ""]),
        "tls",
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(material.client_config(&[b"h2"]).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect("fluidity-server".try_into().unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn first_cert_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_on_sighup() {
    let pki = Pki::new();
    let (server, addr) = server_process(&pki, "server").await;
    let original = std::fs::read_to_string(pki.path("server.crt")).unwrap();
    assert_eq!(presented_certificate(&pki, addr).await, first_cert_der(&original));

    // An open tunnel through the agent, before the reload.
    let agent = start_agent(&pki, addr).await;
    let echo = echo_origin().await;
    let mut tunnel = connect_through(agent.addr, &echo.to_string()).await;
    tunnel.write_all(b"before").await.unwrap();
    let mut got = [0u8; 6];
    tunnel.read_exact(&mut got).await.unwrap();

    let rotated = pki
        .ca
        .issue_server(&["fluidity-server".into(), "127.0.0.1".into()], fluidity::certs::Validity::days(3))
        .unwrap();
    pki.write_pair("server", &rotated);
    server.signal("HUP");
    server.wait_for("certificates reloaded").await;
    assert_eq!(presented_certificate(&pki, addr).await, first_cert_der(&rotated.cert_pem));
    tunnel.write_all(b"after!").await.unwrap();
    tunnel.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"after!");

    std::fs::write(pki.path("server.crt"), "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        .unwrap();
    server.signal("HUP");
    server.wait_for("certificate reload refused").await;
    assert_eq!(presented_certificate(&pki, addr).await, first_cert_der(&rotated.cert_pem));
    let out = curl(&["-x", &proxy_url(agent.addr), &format!("http://{}/still", http_origin().await)]).await;
    assert_eq!(out.text(), "GET /still");
}

/// A `tracing` writer into a shared buffer (the log lines of this thread).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// While the server stays unreachable the agent says so once, then again
/// about once a minute with the attempt count, not on every retry (paused
/// time: two virtual minutes pass in no time).
#[tokio::test(start_paused = true)]
async fn an_unreachable_server_is_named_once_then_once_a_minute() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let pki = Pki::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let agent = start_agent_with(&pki, closed, |a| a.reconnect_max_backoff = Some("2s".into())).await;
    tokio::time::sleep(Duration::from_secs(150)).await;
    agent.stop.cancel();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let named = log.lines().filter(|l| l.contains("tunnel connection attempt failed") && l.contains("WARN")).count();
    let reminders: Vec<&str> = log.lines().filter(|l| l.contains("still cannot reach the server")).collect();
    assert_eq!(named, 1, "the reason is named once across both slots:\n{log}");
    assert!((2..=3).contains(&reminders.len()), "a reminder a minute over 150 s:\n{log}");
    assert!(reminders.iter().all(|l| l.contains("attempts=") && l.contains(&closed.to_string())), "{reminders:?}");
}
