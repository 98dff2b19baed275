//! The agent's dial path on loopback, through `fluidity-agent --check` (which
//! really connects and prints each step): the SNI and ALPN it sends (read
//! from the ClientHello a test listener receives), the failures a person must
//! be able to act on — TLS interception naming the issuer, a certificate
//! made for clients, a port that does not speak TLS, nothing listening, a
//! proxy refusing, a wrong API key, a leaf certificate given as the CA — and
//! a passing check through an upstream proxy set by flag or `HTTPS_PROXY`;
//! a refused proxy password that stops the agent instead of being retried;
//! timeouts that name the step they stopped in.

mod common;

use std::net::SocketAddr;

use common::connect_proxy::ConnectProxy;
use common::*;
use fluidity::certs::Validity;

/// `fluidity-agent --check` against `server` with the test client pair.
async fn check(pki: &Pki, server: &str, extra: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let tls = pki.flags("client");
    let mut args = vec!["--check", "--server", server];
    if !extra.contains(&"--connect-timeout") {
        args.extend(["--connect-timeout", "5s"]);
    }
    args.extend(tls.iter().map(String::as_str));
    args.extend_from_slice(extra);
    run_bin("fluidity-agent", &args, envs).await
}

/// A listener that reads one ClientHello: (SNI, ALPN offered).
async fn hello_reader() -> (SocketAddr, tokio::task::JoinHandle<(Option<String>, Vec<String>)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let start = acceptor.await.unwrap();
        let hello = start.client_hello();
        let alpn = hello.alpn().map(|a| a.map(|p| String::from_utf8_lossy(p).into_owned()).collect());
        (hello.server_name().map(str::to_string), alpn.unwrap_or_default())
    });
    (addr, task)
}

/// A TLS listener presenting `pair` (no client certificate asked).
async fn presenting(pair: &fluidity::certs::Pair) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls_acceptor(pair);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_follows_what_is_dialled_and_alpn_is_a_browsers() {
    let pki = Pki::new();
    let cases: [(&str, &[&str], Option<&str>); 3] = [
        ("127.0.0.1", &[], None),
        ("localhost", &[], Some("localhost")),
        ("127.0.0.1", &["--server-sni", "www.example.com"], Some("www.example.com")),
    ];
    for (host, extra, want) in cases {
        let (addr, hello) = hello_reader().await;
        let _ = check(&pki, &format!("{host}:{}", addr.port()), extra, &[]).await;
        let (sni, alpn) = hello.await.unwrap();
        assert_eq!(sni.as_deref(), want, "{host} {extra:?}");
        assert_eq!(alpn, ["h2", "http/1.1"]);
    }
    let (addr, hello) = hello_reader().await;
    let _ = check(&pki, &format!("localhost:{}", addr.port()), &["--server-sni", "none"], &[]).await;
    assert_eq!(hello.await.unwrap().0, None, "--server-sni none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_say_what_happened() {
    let pki = Pki::new();
    // An intercepting proxy re-signs with its own root.
    let corp = fluidity::certs::Ca::new("Corp Inspection CA", Validity::days(2)).unwrap();
    let forged = corp.issue_server(&["fluidity-server".into(), "127.0.0.1".into()], Validity::days(2)).unwrap();
    let (code, _, err) = check(&pki, &presenting(&forged).await.to_string(), &[], &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the network is intercepting TLS") && err.contains("CN=Corp Inspection CA"), "{err}");
    assert!(err.contains("mutual TLS cannot pass an intercepting proxy"), "{err}");

    // A server certificate from a regenerated Fluidity CA is not interception.
    let regenerated = fluidity::certs::Ca::new("Fluidity CA", Validity::days(2)).unwrap();
    let other = regenerated.issue_server(&["fluidity-server".into()], Validity::days(2)).unwrap();
    let (code, _, err) = check(&pki, &presenting(&other).await.to_string(), &[], &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a Fluidity CA other than the one in tls.ca: the certificates were regenerated"), "{err}");
    assert!(!err.contains("intercepting"), "{err}");

    let client_cert = pki.ca.issue_client("fluidity-server", Validity::days(2)).unwrap();
    let (code, _, err) = check(&pki, &presenting(&client_cert).await.to_string(), &[], &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a certificate made for clients, not for a server"), "{err}");
    assert!(!err.contains("InvalidPurpose"), "{err}");

    let plain = http_origin().await;
    let (code, _, err) = check(&pki, &plain.to_string(), &[], &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not speak TLS") && !err.contains("InvalidContentType"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_step_that_failed() {
    let pki = Pki::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, out, err) = check(&pki, &closed.to_string(), &[], &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("to be reached directly (no upstream proxy set)"), "{out}");
    assert!(err.contains("the tunnel to the server: cannot reach the Fluidity server"), "{err}");

    let refusing = ConnectProxy::start(Some("403 Forbidden")).await;
    let (code, out, err) = check(&pki, &closed.to_string(), &["--upstream-proxy", &refusing.url()], &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let line = format!("the proxy {} refused CONNECT to {closed}: 403 Forbidden", refusing.url());
    assert!(err.contains(&line) && err.contains("allow CONNECT only to port 443"), "{err}");

    // A leaf certificate given as the CA is a configuration error (exit 2).
    let leaf = Pki::new();
    std::fs::copy(leaf.path("client.crt"), leaf.path("ca.crt")).unwrap();
    let (code, _, err) = check(&leaf, &closed.to_string(), &[], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tls.ca") && err.contains("not a CA certificate"), "{err}");

    // A control API that refuses the key.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let body = r#"{"message":"Forbidden"}"#;
            let answer = format!("HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
    });
    let tls = pki.flags("client");
    let mut args = vec!["--check", "--api-url", &api];
    args.extend(tls.iter().map(String::as_str));
    let (code, out, err) = run_bin("fluidity-agent", &args, &[("FLUIDITY_API_KEY", "wrong")]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("control API status call") && err.contains("refused the API key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_through_a_proxy_from_the_flag_or_the_environment() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let proxy = ConnectProxy::start(None).await;
    let target = server.addr.to_string();

    let (code, out, err) = check(&pki, &target, &["--upstream-proxy", &proxy.url()], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    for step in [
        format!("to be reached through the upstream proxy {} (from --upstream-proxy)", proxy.url()),
        format!("CONNECT {target} answered 200"),
        "TLS 1.3: the server's certificate is from the Fluidity CA and valid for fluidity-server (SNI sent: none)"
            .into(),
        "HTTP/2: the server accepted this agent's client certificate".into(),
        "check passed".into(),
    ] {
        assert!(out.contains(&step), "missing {step:?} in {out}");
    }

    let (code, out, err) = check(&pki, &target, &[], &[("HTTPS_PROXY", &proxy.url())]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(from HTTPS_PROXY)"), "{out}");
    // NO_PROXY lifts it; `none` ignores the environment.
    let env = [("HTTPS_PROXY", proxy.url()), ("NO_PROXY", "127.0.0.0/8".to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, _) = check(&pki, &target, &[], &env).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("directly: NO_PROXY lists it"), "{out}");
    let (_, out, _) = check(&pki, &target, &["--upstream-proxy", "none"], &[("HTTPS_PROXY", &proxy.url())]).await;
    assert!(out.contains("to be reached directly (no upstream proxy set)"), "{out}");
    assert_eq!(proxy.targets().len(), 2, "only the flag and HTTPS_PROXY runs used the proxy");

    // Never itself: HTTPS_PROXY naming the agent's own address is ignored, in one line.
    // (--check binds nothing: a port found free is named, not taken.)
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let value = format!("http://{own}");
    let (code, out, _) = check(&pki, &target, &["--listen", &own.to_string()], &[("HTTPS_PROXY", &value)]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("ignoring HTTPS_PROXY={value}: that is this agent's own address")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_proxy_password_stops_the_agent_instead_of_retrying() {
    let pki = Pki::new();
    let challenge = "407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"";
    let proxy = ConnectProxy::start(Some(challenge)).await;
    let url = proxy.url().replace("http://", "http://jane:wrong-pw@");
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut agent = agent_process_with(&pki, unused, &["--upstream-proxy", &url]).await;
    // Each retry against a directory-backed proxy counts towards locking the account.
    assert_eq!(agent.wait_exit().await, Some(1));
    let lines = agent.lines().join("\n");
    let line = format!("proxy authentication failed at http://jane:***@{} (it offers: Basic; tried Basic)", proxy.addr);
    assert!(lines.contains(&line), "{lines}");
    assert!(!lines.contains("wrong-pw"), "{lines}");
    let attempts = proxy.targets().len();
    assert!(attempts <= 4, "{attempts} CONNECTs: at most two per pool slot (unauthenticated, then Basic)");
}

/// A listener that accepts and then says nothing.
async fn silent() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_names_the_step_it_stopped_in() {
    let pki = Pki::new();
    let (quiet, _held) = silent().await;
    let fast = ["--connect-timeout", "1s"];
    let (code, _, err) = check(&pki, &quiet.to_string(), &fast, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("timed out after 1s") && err.contains("in the TLS handshake"), "{err}");

    // A "proxy" that never answers (say, an HTTP proxy given as socks5h://).
    let proxy = format!("socks5h://{quiet}");
    let (code, _, err) =
        check(&pki, "fluidity.test:443", &[&fast[..], &["--upstream-proxy", &proxy]].concat(), &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no answer through the upstream proxy"), "{err}");
}
