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

/// A free loopback port (bound, then released for the program to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `bin` with its stderr a pipe whose reader has already gone, so
/// every log line fails with EPIPE.
fn spawn_with_dead_stderr(bin: &str, args: &[&str]) -> std::process::Child {
    let mut child = std::process::Command::new(bin_path(bin))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader exits
    child
}

fn terminate(child: &mut std::process::Child, within: std::time::Duration) -> Option<i32> {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_log_pipe_never_stops_the_proxy_or_its_signals() {
    let pki = Pki::new();
    let origin = http_origin().await;
    let (server_port, agent_port) = (free_port(), free_port());
    let server_listen = format!("127.0.0.1:{server_port}");
    let (cert, key, ca) = (pki.path("server.crt"), pki.path("server.key"), pki.path("ca.crt"));
    let server_args = [
        "--listen",
        &server_listen,
        "--allow-loopback",
        "--health-listen",
        "off",
        "--drain-timeout",
        "2s",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ];
    let (ccert, ckey) = (pki.path("client.crt"), pki.path("client.key"));
    let agent_listen = format!("127.0.0.1:{agent_port}");
    let agent_args = [
        "--listen",
        &agent_listen,
        "--server",
        &server_listen,
        "--drain-timeout",
        "2s",
        "--reconnect-max-backoff",
        "300ms",
        "--cert",
        ccert.to_str().unwrap(),
        "--key",
        ckey.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ];
    let mut server = spawn_with_dead_stderr("fluidity-server", &server_args);
    let mut agent = spawn_with_dead_stderr("fluidity-agent", &agent_args);
    let proxy = format!("http://{agent_listen}");
    let url = format!("http://{origin}/piped");
    let through = || async {
        for _ in 0..100 {
            if curl(&["-x", &proxy, &url]).await.text() == "GET /piped" {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(through().await, "the tunnel carries traffic while nobody reads its logs");

    // The server restarts: SIGTERM still ends it (exit 0, within its drain
    // bound), and the agent, logging into the same dead pipe, reconnects.
    assert_eq!(terminate(&mut server, std::time::Duration::from_secs(6)), Some(0), "server on SIGTERM");
    let mut server = spawn_with_dead_stderr("fluidity-server", &server_args);
    assert!(through().await, "the agent reconnected after the server restart");

    assert_eq!(terminate(&mut agent, std::time::Duration::from_secs(6)), Some(0), "agent on SIGTERM");
    assert_eq!(terminate(&mut server, std::time::Duration::from_secs(6)), Some(0), "server on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluidity_certs_never_writes_through_a_symbolic_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    std::fs::create_dir(&out).unwrap();
    let elsewhere = dir.path().join("elsewhere.key");
    std::os::unix::fs::symlink(&elsewhere, out.join("client.key")).unwrap(); // dangling
    let args = ["--dir", out.to_str().unwrap()];
    let (code, _, stderr) = run_bin("fluidity-certs", &args, &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("client.key is a symbolic link"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!out.join("ca.crt").exists(), "nothing is written unless everything can be");
    assert!(!elsewhere.exists(), "the link's target is never created");

    // --force does not write through it either.
    let (code, _, stderr) = run_bin("fluidity-certs", &["--dir", out.to_str().unwrap(), "--force"], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!elsewhere.exists() && !out.join("ca.crt").exists());

    // Without the link: all five, the keys 0600, no staging files left.
    std::fs::remove_file(out.join("client.key")).unwrap();
    let (code, _, stderr) = run_bin("fluidity-certs", &args, &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("client.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "client.crt", "client.key", "server.crt", "server.key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_fluidity_ca_is_an_unknown_issuer() {
    use fluidity::certs::{Ca, Validity};
    let pki = Pki::new();
    let (server, addr) = server_process(&pki, "server").await;
    // Two runs of fluidity-certs make two CAs of the same name.
    let (first, second) =
        (Ca::new("Fluidity CA", Validity::days(1)).unwrap(), Ca::new("Fluidity CA", Validity::days(1)).unwrap());
    assert_ne!(subject_of(first.cert_pem()), subject_of(second.cert_pem()), "each CA has a subject of its own");
    pki.write_pair("foreign", &second.issue_client("laptop", Validity::days(1)).unwrap());
    let ca = pki.path("ca.crt");
    let (cert, key) = (pki.path("foreign.crt"), pki.path("foreign.key"));
    let proxy = format!("https://127.0.0.1:{}", addr.port());
    let args = ["--proxy", &proxy, "--proxy-cacert", ca.to_str().unwrap(), "--proxy-cert", cert.to_str().unwrap()];
    let out = curl(&[&args[..], &["--proxy-key", key.to_str().unwrap(), "http://127.0.0.1:9/"]].concat()).await;
    assert_ne!(out.code, Some(0));
    server.wait_for("UnknownIssuer").await;
    assert_eq!(count_lines(&server, "BadSignature"), 0, "{:#?}", server.lines());
}

fn subject_of(pem: &str) -> String {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.subject().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_own_certificate_is_refused_at_start_and_on_reload() {
    use fluidity::certs::Validity;
    let pki = Pki::new();
    pki.write_pair("expired", &pki.ca.issue_client("old-laptop", Validity::expired()).unwrap());
    let (cert, key, ca) = (pki.path("expired.crt"), pki.path("expired.key"), pki.path("ca.crt"));
    let args = ["--listen", "127.0.0.1:0", "--server", "127.0.0.1:9", "--cert", cert.to_str().unwrap()];
    let all = [&args[..], &["--key", key.to_str().unwrap(), "--ca", ca.to_str().unwrap()]].concat();
    let (code, _, stderr) = run_bin("fluidity-agent", &all, &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("expired on") && stderr.contains("expired.crt"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    // Running with a good one, then SIGHUP after it was replaced by an
    // expired one: the reload is refused and the tunnel keeps working.
    let (_server, addr) = server_process(&pki, "server").await;
    let agent = agent_process(&pki, addr).await;
    let proxy = agent.logged_addr("local proxy listening").await;
    let origin = http_origin().await;
    let url = format!("http://{origin}/still");
    assert_eq!(curl(&["-x", &format!("http://{proxy}"), &url]).await.text(), "GET /still");
    std::fs::copy(pki.path("expired.crt"), pki.path("client.crt")).unwrap();
    std::fs::copy(pki.path("expired.key"), pki.path("client.key")).unwrap();
    agent.signal("HUP");
    agent.wait_for("expired on").await;
    assert_eq!(curl(&["-x", &format!("http://{proxy}"), &url]).await.text(), "GET /still");
}

/// A target that holds every connection and counts the ones still open.
async fn holding_target() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let open = count.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// Within 5 s of `event` the target holds no connection from the server and
/// the server is back to about `baseline` descriptors.
async fn all_cut_within_5s(open: &std::sync::atomic::AtomicUsize, server: &Proc, baseline: usize, event: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(open.load(Ordering::SeqCst), 0, "target connections still open 5 s after {event}");
    let fds = open_fds(server.pid());
    assert!(fds <= baseline + 5, "the server still holds {fds} descriptors (was {baseline} before)");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_cuts_the_tunnels_of_a_dead_agent() {
    let pki = Pki::new();
    let (server, addr) = server_process(&pki, "server").await;
    let (target, open) = holding_target().await;
    let baseline = open_fds(server.pid());
    let agent = agent_process(&pki, addr).await;
    let proxy = agent.logged_addr("local proxy listening").await;
    let mut tunnels = Vec::new();
    for _ in 0..200 {
        tunnels.push(connect_through(proxy, &target.to_string()).await);
    }
    assert_eq!(open.load(Ordering::SeqCst), 200);
    assert!(open_fds(server.pid()) >= baseline + 200, "the server holds the target connections");

    // The agent dies (kill -9): its connection to the server goes with it.
    agent.signal("KILL");
    all_cut_within_5s(&open, &server, baseline, "the agent died").await;
    drop(tunnels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_picked_port_never_tunnels_into_itself() {
    // Port 0 (local mode, tests): the port the server actually got is guarded.
    let pki = Pki::new();
    let server = start_server(&pki, "server").await; // 127.0.0.1:0, loopback targets allowed
    let agent = start_agent(&pki, server.addr).await;
    let target = server.addr.to_string();
    let status = raw(agent.addr, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
    assert!(status.starts_with("HTTP/1.1 403"), "CONNECT to the server's own port: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_after_the_header_timeout() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(agent.addr).await.unwrap());
    }
    let mut slow = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    slow.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\n").await.unwrap(); // and never the rest
    let started = std::time::Instant::now();
    let limit = fluidity::agent::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(3);
    for mut tcp in silent.into_iter().chain([slow]) {
        let mut buf = [0u8; 256];
        let left = limit.saturating_sub(started.elapsed());
        let read = tokio::time::timeout(left, tcp.read(&mut buf)).await;
        assert!(read.is_ok(), "a silent connection was still open after {:?}", started.elapsed());
    }
    assert!(started.elapsed() >= fluidity::agent::HEADER_READ_TIMEOUT - std::time::Duration::from_secs(1));
}

/// A TCP relay to `to` that counts the connections made through it.
async fn counting_relay(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_server_rejects_backs_off_and_is_named_once() {
    use fluidity::certs::{Ca, Validity};
    let pki = Pki::new();
    // The server's certificate is from the agent's CA, but it trusts only
    // another CA for clients: every handshake ends with its UnknownCA alert.
    let other = Ca::new("Other CA", Validity::days(1)).unwrap();
    pki.write("other-ca.crt", other.cert_pem());
    let (cert, key, ca) = (pki.path("server.crt"), pki.path("server.key"), pki.path("other-ca.crt"));
    let args = ["--listen", "127.0.0.1:0", "--allow-loopback", "--health-listen", "off", "--cert"];
    let args = [&args[..], &[cert.to_str().unwrap(), "--key", key.to_str().unwrap(), "--ca", ca.to_str().unwrap()]];
    let server = spawn_bin("fluidity-server", &args.concat());
    let addr = server.logged_addr("server listening").await;
    let (relay, attempts) = counting_relay(addr).await;

    let agent = agent_process_with(&pki, relay, &["--pool-size", "2"]).await;
    agent.wait_for("local proxy listening").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let early = attempts.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let total = attempts.load(Ordering::SeqCst);
    // Two slots, each backing off from 100 ms, doubling: at most 7 attempts
    // each in 6 s, 2 each in the last 3 (a rejection counted as a success
    // would make 13 a second each).
    assert!((2..=16).contains(&total), "{total} connection attempts in 6 s");
    assert!(total - early <= 5, "{} attempts in the last 3 s: the backoff does not grow", total - early);
    let named = "client certificate is from a CA it does not trust";
    assert_eq!(count_lines(&agent, named), 1, "{:#?}", agent.lines());
    assert_eq!(count_lines(&agent, "tunnel to server established"), 0, "{:#?}", agent.lines());
    assert_eq!(count_lines(&agent, "tunnel connection up"), 0, "{:#?}", agent.lines());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_capped_and_their_failures_logged_within_a_budget() {
    let pki = Pki::new();
    let flags = ["--max-handshakes", "20", "--handshake-timeout", "60s"];
    let (server, addr) = server_process_on(&pki, "server", "127.0.0.1:0", &flags).await;
    let health: std::net::SocketAddr = {
        let line = server.wait_for("server listening").await;
        line.split("health=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap()
    };
    // 40 clients connect and say nothing: 20 are let into their handshake,
    // the other 20 are closed at once instead of holding a descriptor each.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut closed = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    for tcp in &mut silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await;
        closed += usize::from(matches!(read, Ok(Ok(0)) | Ok(Err(_))));
    }
    assert_eq!(closed, 20, "connections past max_handshakes must be closed at once");
    // They hang up: 20 more failures. Lines stay within the budget of 10 in
    // 10 s (all of this takes about 1 s).
    drop(silent);
    let metrics = loop {
        let text = raw_get(health, "/metrics").await;
        if text.contains("fluidity_handshake_failures_total{reason=\"other\"} 20") {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(metrics.contains("fluidity_handshake_failures_total{reason=\"busy\"} 20"), "{metrics}");
    let lines = count_lines(&server, "tls handshake failed") + count_lines(&server, "too many TLS handshakes");
    assert!((1..=10).contains(&lines), "{lines} lines for 40 failures: {:#?}", server.lines());
    // The slots are free again: a real client gets through.
    let (ca, cert, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
    let origin = http_origin().await;
    let proxy = format!("https://127.0.0.1:{}", addr.port());
    let args = ["--proxy", &proxy, "--proxy-cacert", ca.to_str().unwrap(), "--proxy-cert", cert.to_str().unwrap()];
    let url = format!("http://{origin}/after");
    let out = curl(&[&args[..], &["--proxy-key", key.to_str().unwrap(), &url]].concat()).await;
    assert_eq!(out.text(), "GET /after");
}

/// GET `path` from a plain HTTP endpoint; the whole response.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_connections_that_sent_no_request_are_capped() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    let origin = http_origin().await;
    let request = format!("GET http://{origin}/ok HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let mut silent = Vec::new();
    for _ in 0..fluidity::agent::MAX_WAITING_CLIENTS {
        silent.push(tokio::net::TcpStream::connect(agent.addr).await.unwrap());
    }
    // One more is closed at once rather than held until the header timeout.
    let mut extra = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), extra.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a connection past the cap was held: {read:?}");
    // A waiting client that sends its request stops counting (and is served):
    // there is room for a new client again.
    silent[0].write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut silent[0]).await.starts_with("HTTP/1.1 200"));
    let mut next = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    next.write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut next).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_block_is_431_for_its_request_only() {
    let pki = Pki::new();
    let shared = SharedTunnel::start(&pki).await;
    let (agent, origin) = (&shared.agent, shared.origin);
    // Within 64 KiB a head is served; beyond it (one header, or many whose
    // HTTP/2 list size grows by 32 bytes each) it is a 431 for that request.
    for (count, size, want) in [(1, 60_000, 200), (90, 700, 431), (99, 600, 200), (1, 70_000, 431)] {
        let mut request = format!("GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\n");
        for i in 0..count {
            request.push_str(&format!("x-big-{i}: {}\r\n", "v".repeat(size)));
        }
        request.push_str("\r\n");
        let status = raw(agent.addr, &request).await;
        assert!(status.starts_with(&format!("HTTP/1.1 {want}")), "{count} x {size} bytes: {status}");
        shared.still_fine(&format!("{count} x {size}")).await;
    }
}

/// A server and an agent with one tunnel connection that every request shares.
struct SharedTunnel {
    _server: TestServer,
    agent: TestAgent,
    origin: std::net::SocketAddr,
    opened: u64,
}

impl SharedTunnel {
    async fn start(pki: &Pki) -> Self {
        let server = start_server(pki, "server").await;
        let agent = start_agent_with(pki, server.addr, |a| a.pool_size = Some(1)).await;
        let origin = http_origin().await;
        let shared = Self { _server: server, opened: 0, agent, origin };
        shared.still_fine("start").await;
        Self { opened: shared.agent.pool.connections_opened(), ..shared }
    }

    /// Another request goes through, on the same tunnel connection.
    async fn still_fine(&self, after: &str) {
        let (proxy, url) = (format!("http://{}", self.agent.addr), format!("http://{}/fine", self.origin));
        assert_eq!(curl(&["-x", &proxy, &url]).await.text(), "GET /fine", "after {after}");
        if self.opened > 0 {
            assert_eq!(
                self.agent.pool.connections_opened(),
                self.opened,
                "the tunnel connection was replaced after {after}"
            );
        }
    }
}

/// An origin whose responses carry one header of `size` bytes.
async fn big_header_origin(size: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut tcp).await;
                let head = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "v".repeat(size));
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_header_block_fails_its_request_only() {
    let pki = Pki::new();
    let shared = SharedTunnel::start(&pki).await;
    let agent = &shared.agent;
    for (size, want) in [(60_000, 200), (70_000, 502), (300_000, 502)] {
        let big = big_header_origin(size).await;
        let status = raw(agent.addr, &format!("GET http://{big}/ HTTP/1.1\r\nHost: {big}\r\n\r\n")).await;
        assert!(status.starts_with(&format!("HTTP/1.1 {want}")), "{size} bytes: {status}");
        shared.still_fine(&format!("a {size}-byte response header")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_400() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    let origin = http_origin().await;
    let request = format!(
        "POST http://{origin}/upload HTTP/1.1\r\nHost: {origin}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"
    );
    // Through the agent (the body goes on as HTTP/2) ...
    let status = raw(agent.addr, &request).await;
    assert!(status.starts_with("HTTP/1.1 400"), "through the agent: {status}");
    // ... and straight to the server over HTTP/1.1, as curl would.
    let mut tls = tls_to_server(&pki, server.addr, b"http/1.1").await;
    tls.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 400"), "at the server: {head}");
}

/// Moves bytes between a local HTTP/2 client and its TLS connection until
/// `stop`; then hands the TLS connection back (between frames, when idle).
async fn pump(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    mut local: tokio::io::DuplexStream,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return tls,
            n = local.read(&mut up) => match n {
                Ok(n) if n > 0 => tls.write_all(&up[..n]).await.unwrap(),
                _ => return tls,
            },
            n = tls.read(&mut down) => match n {
                Ok(n) if n > 0 => local.write_all(&down[..n]).await.unwrap(),
                _ => return tls,
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_cuts_the_tunnels_of_a_client_that_sends_goaway_and_closes() {
    let pki = Pki::new();
    let (server, addr) = server_process(&pki, "server").await;
    let (target, open) = holding_target().await;
    let baseline = open_fds(server.pid());
    let tls = tls_to_server(&pki, addr, b"h2").await;
    let (local, remote) = tokio::io::duplex(1 << 20);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let pumping = tokio::spawn(pump(tls, remote, stopped));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(local),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(connection);
    let mut tunnels = Vec::new();
    for _ in 0..200 {
        let request =
            http::Request::connect(target.to_string()).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        let mut response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        tunnels.push(hyper::upgrade::on(&mut response).await.unwrap());
    }
    assert_eq!(open.load(Ordering::SeqCst), 200);

    // The client says GOAWAY (no error) and closes its TLS session, with
    // every tunnel still open on its side.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    let mut tls = pumping.await.unwrap();
    let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    tls.write_all(&goaway).await.unwrap();
    tls.shutdown().await.unwrap();
    drop(tls);
    all_cut_within_5s(&open, &server, baseline, "GOAWAY and close").await;
    drop((tunnels, driver));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_refused_407_keep_counting_as_waiting() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent_with(&pki, server.addr, |a| a.proxy_auth = Some("alice:s3cret".parse().unwrap())).await;
    let request = "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n";
    let mut refused = Vec::new();
    for _ in 0..fluidity::agent::MAX_WAITING_CLIENTS {
        let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 407"));
        refused.push(tcp); // kept alive, as a client re-sending every few seconds would
    }
    // They never authenticated: the cap is reached and the next one is closed.
    let mut extra = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), extra.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "unauthenticated clients were not capped: {read:?}");
}

/// A client that chose HTTP/2 but never sends its preface holds nothing for
/// long: the server closes it after `handshake_timeout`, as a stalled TLS
/// handshake, and a shutdown meanwhile does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_without_a_preface_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let server =
        start_server_with(&pki, "server", |a| a.handshake_timeout = Some("1s".into()), Default::default()).await;
    let started = std::time::Instant::now();
    let mut silent = tls_to_server(&pki, server.addr, b"h2").await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "still open after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    let _waiting = tls_to_server(&pki, server.addr, b"h2").await;
    let stopping = std::time::Instant::now();
    server.stop.cancel();
    server.task.await.unwrap().unwrap();
    assert!(stopping.elapsed() < std::time::Duration::from_millis(900), "shutdown waited {:?}", stopping.elapsed());
}
