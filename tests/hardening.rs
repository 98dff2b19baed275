//! Requests a careless or hostile client sends, with real sockets on
//! loopback: userinfo in a URL, a URL as a CONNECT target, upper-case
//! `BASIC` credentials, empty proxy credentials, and static `hosts` names
//! spelt with another case or a trailing dot.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` as written to the proxy at `proxy`; the response's status line.
async fn raw(proxy: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut answer)).await.unwrap().unwrap();
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_and_url_connect_targets_are_400_before_any_dial() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    let origin = http_origin().await;

    // A target that notes any connection made to it.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trapped = trap.local_addr().unwrap();
    let touched = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let touched = touched.clone();
        async move {
            while trap.accept().await.is_ok() {
                touched.store(true, Ordering::SeqCst);
            }
        }
    });
    let request = format!("GET http://user:pw@{trapped}/secret HTTP/1.1\r\nHost: {trapped}\r\n\r\n");
    let status = raw(agent.addr, &request).await;
    assert!(status.starts_with("HTTP/1.1 400"), "userinfo: {status}");
    let request = format!("CONNECT http://{trapped}/ HTTP/1.1\r\nHost: {trapped}\r\n\r\n");
    let status = raw(agent.addr, &request).await;
    assert!(status.starts_with("HTTP/1.1 400"), "a URL as CONNECT target: {status}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!touched.load(Ordering::SeqCst), "a refused request reached its target");
    // A well-formed request still goes through.
    let request = format!("GET http://{origin}/fine HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    assert!(raw(agent.addr, &request).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_is_case_insensitive_and_empty_credentials_are_refused() {
    use base64::Engine;
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent_with(&pki, server.addr, |a| {
        a.proxy_auth = Some(fluidity::config::Secret::new("alice:s3cret"));
    })
    .await;
    let origin = http_origin().await;
    let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    for scheme in ["Basic", "BASIC", "basic", "bAsIc"] {
        let request = format!(
            "GET http://{origin}/auth HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: {scheme} {token}\r\n\r\n"
        );
        assert!(raw(agent.addr, &request).await.starts_with("HTTP/1.1 200"), "{scheme}");
    }
    let request =
        format!("GET http://{origin}/auth HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Bearer {token}\r\n\r\n");
    assert!(raw(agent.addr, &request).await.starts_with("HTTP/1.1 407"), "another scheme");

    // Empty user or password never counts as authentication (off loopback it
    // would be the only guard).
    let (cert, key, ca) = (pki.path("client.crt"), pki.path("client.key"), pki.path("ca.crt"));
    for credentials in [":", "user:", ":password"] {
        let args = ["--listen", "0.0.0.0:0", "--server", "127.0.0.1:9", "--proxy-auth", credentials];
        let tls = ["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), "--ca", ca.to_str().unwrap()];
        let all: Vec<&str> = args.iter().chain(tls.iter()).copied().collect();
        let (code, _, stderr) = run_bin("fluidity-agent", &all, &[]).await;
        assert_eq!(code, Some(2), "{credentials:?}: {stderr}");
        assert!(stderr.contains("proxy_auth") && stderr.contains("non-empty"), "{credentials:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_hosts_match_any_case_and_a_trailing_dot() {
    let pki = Pki::new();
    let origin = http_origin().await;
    // evil.test is pinned to loopback, which this server refuses: every
    // spelling must hit the pin (403), never go to system DNS (502).
    let file = fluidity::server::config::RawServerConfig {
        hosts: HashMap::from([("Evil.Test.".to_string(), "127.0.0.1".to_string())]),
        ..Default::default()
    };
    let server = start_server_with(&pki, "server", |a| a.allow_loopback = Some(false), file).await;
    let agent = start_agent(&pki, server.addr).await;
    for name in ["evil.test", "EVIL.TEST", "evil.test.", "EVIL.TEST."] {
        let target = format!("{name}:{}", origin.port());
        let status = raw(agent.addr, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{name}: {status}");
    }
}
