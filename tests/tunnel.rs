//! End-to-end tunnel tests: curl and a WebSocket client through an in-process
//! agent and server on loopback, against local origins.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn tunnel() -> (Pki, TestServer, TestAgent) {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    (pki, server, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_methods_through_agent() {
    let (_pki, _server, agent) = tunnel().await;
    let origin = http_origin().await;
    let proxy = format!("http://{}", agent.addr);
    let url = format!("http://{origin}/thing?x=1");
    for method in ["GET", "POST", "PUT", "DELETE"] {
        let out = curl(&["-x", &proxy, "-X", method, "-d", "payload", "-H", "x-echo: kept", "-i", &url]).await;
        let text = out.text();
        assert_eq!(out.code, Some(0), "{method}: {}", out.stderr);
        assert!(text.starts_with("HTTP/1.1 200"), "{method}: {text}");
        assert!(text.contains("x-echo: kept"), "{method}: {text}");
        assert!(text.ends_with(&format!("{method} /thing payload")), "{method}: {text}");
    }
    let head = curl(&["-x", &proxy, "-I", &url]).await;
    assert_eq!(head.code, Some(0), "{}", head.stderr);
    assert!(head.text().starts_with("HTTP/1.1 200"), "{}", head.text());
    assert!(head.text().to_lowercase().contains("content-length: 11"), "{}", head.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_reach_the_origin() {
    let (_pki, _server, agent) = tunnel().await;
    let origin = http_origin().await;
    let proxy = format!("http://{}", agent.addr);
    // The origin answers 418 if it sees either header.
    let out = curl(&[
        "-x",
        &proxy,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Connection: x-hop-secret",
        "-H",
        "x-hop-secret: 1",
        "-H",
        "Proxy-Authorization: Basic Zm9vOmJhcg==",
        &format!("http://{origin}/"),
    ])
    .await;
    assert_eq!(out.text(), "200", "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_and_tcp_echo_through_connect() {
    let (pki, _server, agent) = tunnel().await;
    let origin = https_origin(&pki).await;
    let proxy = format!("http://{}", agent.addr);
    let ca = pki.path("origin-ca.crt");
    let out =
        curl(&["-x", &proxy, "--cacert", ca.to_str().unwrap(), &format!("https://localhost:{}/secure", origin.port())])
            .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.text(), "GET /secure");

    let echo = echo_origin().await;
    let mut stream = connect_through(agent.addr, &echo.to_string()).await;
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = stream.split();
    let send = async {
        writer.write_all(&payload).await.unwrap();
    };
    let mut got = vec![0u8; payload.len()];
    let recv = reader.read_exact(&mut got);
    let (_, read) = tokio::join!(send, recv);
    read.unwrap();
    assert_eq!(got, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_failures_name_target_and_cause() {
    let (_pki, _server, agent) = tunnel().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = format!("http://{}", agent.addr);
    let out = curl(&["-x", &proxy, "-w", "\n%{http_code}", &format!("http://{closed}/")]).await;
    let text = out.text();
    assert!(text.ends_with("\n502"), "{text}");
    assert!(text.contains(&closed.to_string()) && text.contains("refused"), "{text}");
    // Through CONNECT too: curl reports the proxy's status.
    let out = curl(&["-x", &proxy, "-w", "%{http_connect}", &format!("https://{closed}/")]).await;
    assert_eq!(out.text(), "502", "{}", out.stderr);
    // Metadata addresses are refused by policy whatever the agent asks.
    let out = curl(&["-x", &proxy, "-w", "\n%{http_code}", "http://169.254.169.254/latest/meta-data/"]).await;
    assert!(out.text().ends_with("\n403"), "{}", out.text());
}

async fn ws_origin(tls: Option<tokio_rustls::TlsAcceptor>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        echo_ws(tokio_tungstenite::accept_async(stream).await.unwrap()).await;
                    }
                    None => echo_ws(tokio_tungstenite::accept_async(tcp).await.unwrap()).await,
                }
            });
        }
    });
    addr
}

async fn echo_ws<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
) {
    while let Some(Ok(message)) = ws.next().await {
        if message.is_text() || message.is_binary() {
            ws.send(message).await.unwrap();
        }
    }
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) {
    for i in 0..1000 {
        ws.send(Message::text(format!("message {i}"))).await.unwrap();
    }
    for i in 0..1000 {
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), format!("message {i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_proxied_upgrade() {
    let (_pki, _server, agent) = tunnel().await;
    let origin = ws_origin(None).await;
    let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let request = format!(
        "GET http://{origin}/chat HTTP/1.1\r\nHost: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tcp,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    exchange(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_connect_and_tls() {
    let (_pki, _server, agent) = tunnel().await;
    let ca = fluidity::certs::Ca::new("WS CA", fluidity::certs::Validity::days(1)).unwrap();
    let pair = ca.issue_server(&["localhost".into()], fluidity::certs::Validity::days(1)).unwrap();
    let origin = ws_origin(Some(tls_acceptor(&pair))).await;
    let tcp = connect_through(agent.addr, &format!("localhost:{}", origin.port())).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let (mut ws, response) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/chat", origin.port()), tls).await.unwrap();
    assert_eq!(response.status(), 101);
    exchange(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_the_pool() {
    let (_pki, server, agent) = tunnel().await;
    let origin = http_origin().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let proxy = agent.addr;
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            let request = hyper::Request::get(format!("http://{origin}/slow?{i}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            assert_eq!(&body[..], b"GET /slow");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let accepted = fluidity::server::Stats::get(&server.stats.handshakes_ok);
    assert!((1..=2).contains(&accepted), "{accepted} TLS connections for a pool of 2");
    assert_eq!(agent.pool.connections_opened(), accepted);
    assert!(fluidity::server::Stats::get(&server.stats.streams) >= 200);
}

/// An origin that counts the TCP connections it accepts and answers "ok":
/// chunked for `/chunked`, with a length otherwise, and 204 without a body
/// for `/empty`.
async fn counting_origin() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let frames =
                        ["o", "k"].map(|s| Ok(hyper::body::Frame::data(bytes::Bytes::from_static(s.as_bytes()))));
                    let (status, body) = match req.uri().path() {
                        "/chunked" => {
                            (200, BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames))))
                        }
                        "/empty" => (204, http_body_util::Empty::new().boxed()),
                        _ => (200, http_body_util::Full::new(bytes::Bytes::from_static(b"ok")).boxed()),
                    };
                    let mut response = hyper::Response::new(body);
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_reused_across_requests() {
    let (_pki, _server, agent) = tunnel().await;
    let (origin, accepted) = counting_origin().await;
    let proxy = format!("http://{}", agent.addr);
    // Separate curl processes: separate client connections, same origin.
    for _ in 0..5 {
        let out = curl(&["-sS", "-x", &proxy, &format!("http://{origin}/")]).await;
        assert_eq!(out.text(), "ok", "{}", out.stderr);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "the server should keep the origin connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_reused_after_chunked_and_empty_responses() {
    let (_pki, _server, agent) = tunnel().await;
    let (origin, accepted) = counting_origin().await;
    let proxy = format!("http://{}", agent.addr);
    // A chunked body ends with its terminating chunk, a sized one with its
    // last byte, a 204 and a HEAD with their headers: each must give the
    // connection back.
    let status = ["-w", "%{http_code}"];
    let head = ["-I", "-o", "/dev/null", "-w", "%{http_code}"];
    for (path, args, expect) in [
        ("chunked", &[][..], "ok"),
        ("empty", &status[..], "204"),
        ("chunked", &head[..], "200"),
        ("", &[], "ok"),
        ("chunked", &[], "ok"),
    ] {
        let url = format!("http://{origin}/{path}");
        let out = curl(&[args, &["-x", &proxy, &url]].concat()).await;
        assert_eq!(out.text(), expect, "{url} {args:?}: {}", out.stderr);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "every response should give the connection back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_reused_after_trailers() {
    // A chunked response with trailers ends with its trailers frame, after
    // which hyper polls the body no more. This origin sends trailers unasked
    // (the proxy drops `TE`, so a hyper origin would not send them).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-check\r\n\r\n\
                                2\r\nok\r\n0\r\nx-check: 1\r\n\r\n";
                let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if tcp.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let (_pki, _server, agent) = tunnel().await;
    let proxy = format!("http://{}", agent.addr);
    for _ in 0..3 {
        let out = curl(&["-x", &proxy, &format!("http://{origin}/")]).await;
        assert_eq!(out.text(), "ok", "{}", out.stderr);
    }
    let kept = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(kept, 1, "a response with trailers should give the connection back");
}
