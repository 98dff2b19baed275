//! The agent behind a corporate network (`common::corpnet`: namespaces linked
//! by veth pairs, 198.18.0.0/15, no default route, the client with no route
//! to the server and no name resolution for it): the real Squid or Dante in
//! the gateway is the only way through. The server listens on 443 in the
//! server namespace; the agent runs in the client namespace, usually as
//! `fluidity-agent --check`, which connects once and prints every step.
//!
//! Cases: no proxy fails (topology sanity); the proxy from the flag and from
//! each environment variable; NO_PROXY bypassing it; Basic with the right and
//! a wrong password (the 407 line); NTLM (Squid's `ntlm_fake_auth` runs the
//! real three-message exchange); a server on 8443 behind Squid's
//! `CONNECT !SSL_ports` rule (the refused-CONNECT line with its hint); SOCKS5
//! through Dante with and without a login; TLS interception by Squid's
//! ssl-bump (the interception line naming the bump CA); and real traffic
//! through the agent and the proxy; a proxy name that does not resolve.

mod common;

use common::corpnet::*;
use common::*;

/// The corporate network with a Fluidity server on `SERVER_IP:port`.
struct Site {
    net: Corpnet,
    pki: Pki,
    _server: Proc,
    port: u16,
}

impl Site {
    async fn new(port: u16) -> Self {
        let net = Corpnet::new();
        let pki = Pki::new();
        let listen = format!("{SERVER_IP}:{port}");
        let mut args = vec!["--listen", &listen, "--health-listen", "off", "--egress-allow", "198.18.0.0/15"];
        let tls = pki.flags("server");
        args.extend(tls.iter().map(String::as_str));
        let server = net.server.spawn(bin_path("fluidity-server"), &args, &[]);
        server.wait_for("server listening").await;
        Self { net, pki, _server: server, port }
    }

    /// The agent's arguments for this site (server by name: it reaches the proxy unresolved).
    fn agent_args(&self, server: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> =
            ["--listen", "127.0.0.1:0", "--server", server, "--connect-timeout", "5s"].map(String::from).into();
        args.extend(self.pki.flags("client"));
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// `fluidity-agent --check` in the client namespace: (exit code, stdout, stderr).
    async fn check(&self, extra: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let server = format!("fluidity.test:{}", self.port);
        let args = self.agent_args(&server, &[&["--check"], extra].concat());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.net.client.output(bin_path("fluidity-agent"), &args, envs).await;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_proxy_gets_through_from_the_flag_or_any_variable() {
    let site = Site::new(443).await;
    let squid = Squid::start(&site.net, SquidOptions::default()).await;
    let proxy = squid.url();

    // Topology sanity: without the proxy the server is out of reach.
    let (code, out, err) = site.check(&["--upstream-proxy", "none"], &[("HTTPS_PROXY", &proxy)]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("cannot reach the Fluidity server at fluidity.test:443"), "{err}");

    let (code, out, err) = site.check(&["--upstream-proxy", &proxy], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("CONNECT fluidity.test:443 answered 200"), "{out}");
    assert!(out.contains("SNI sent: fluidity.test"), "{out}");
    squid.wait_access_log("CONNECT fluidity.test:443").await;

    for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        let (code, out, err) = site.check(&[], &[(var, &proxy)]).await;
        assert_eq!(code, Some(0), "{var}: {out}{err}");
        assert!(out.contains(&format!("through the upstream proxy {proxy} (from {var})")), "{out}");
    }
    // A proxy name the client cannot resolve is named as such.
    let (code, _, err) = site.check(&["--upstream-proxy", "http://proxy.corp.test:3128"], &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot reach the upstream proxy http://proxy.corp.test:3128: its name does not resolve"),
        "{err}"
    );
    let (code, out, _) = site.check(&[], &[("HTTPS_PROXY", &proxy), ("NO_PROXY", ".test")]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("directly: NO_PROXY lists it"), "{out}");

    // Real traffic: curl → agent → Squid → server → an origin beside it.
    let _origin = site.net.server.http_origin(SERVER_IP, 8080, None).await;
    let server = format!("fluidity.test:{}", site.port);
    let agent_args = site.agent_args(&server, &["--upstream-proxy", &proxy]);
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let agent = site.net.client.spawn(bin_path("fluidity-agent"), &agent_args, &[]);
    agent.wait_for("tunnel to server established").await;
    let local = agent.logged_addr("local proxy listening").await;
    let got = site.net.client.curl(&["-x", &format!("http://{local}"), &format!("http://{SERVER_IP}:8080/via")]).await;
    assert_eq!(got.text(), "origin 8080 /via", "{}", got.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_ntlm_pass_and_a_wrong_password_is_named() {
    let site = Site::new(443).await;
    let auth = SquidAuth::Basic { user: "alice".into(), password: "s3cret".into() };
    let squid = Squid::start(&site.net, SquidOptions { auth, ..Default::default() }).await;
    let (code, out, err) = site.check(&["--upstream-proxy", "http://alice:s3cret@198.18.1.1:3128"], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("after Basic authentication"), "{out}");
    let (code, out, err) = site.check(&[], &[("HTTPS_PROXY", "http://alice:wrong-pw@198.18.1.1:3128")]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let line = "proxy authentication failed at http://alice:***@198.18.1.1:3128 (it offers: Basic; tried Basic)";
    assert!(err.contains(line), "{err}");
    assert!(!err.contains("wrong-pw") && !out.contains("wrong-pw"), "the password was printed");
    drop(squid);

    let squid = Squid::start(&site.net, SquidOptions { auth: SquidAuth::Ntlm, ..Default::default() }).await;
    let (code, out, err) = site.check(&["--upstream-proxy", "http://CORP%5Cbob:pw@198.18.1.1:3128"], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("CONNECT fluidity.test:443 answered 200") && out.contains("after NTLM authentication"),
        "{out}"
    );
    let log = squid.wait_access_log("TCP_TUNNEL/200").await;
    assert!(log.contains("bob"), "the NTLM user in the access log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_off_port_443_is_refused_with_a_hint() {
    let site = Site::new(8443).await;
    let squid = Squid::start(&site.net, SquidOptions::default()).await;
    let (code, out, err) = site.check(&["--upstream-proxy", &squid.url()], &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let line = "the proxy http://198.18.1.1:3128 refused CONNECT to fluidity.test:8443: 403 Forbidden; many proxies allow CONNECT only to port 443";
    assert!(err.contains(line), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_through_dante_with_and_without_a_login() {
    let site = Site::new(443).await;
    let dante = Dante::start(&site.net, None).await;
    let (code, out, err) = site.check(&["--upstream-proxy", "socks5h://198.18.1.1:1080"], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("SOCKS5 CONNECT to fluidity.test:443 succeeded"), "{out}");
    drop(dante);
    let _dante = Dante::start(&site.net, Some(("carol", "socks-pw"))).await;
    let (code, out, err) = site.check(&[], &[("ALL_PROXY", "socks5h://carol:socks-pw@198.18.1.1:1080")]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("succeeded after a login"), "{out}");
    let (code, _, err) = site.check(&[], &[("ALL_PROXY", "socks5h://carol:nope@198.18.1.1:1080")]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused this agent: the user name or password was not accepted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_interception_is_named_with_its_issuer() {
    let site = Site::new(443).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = make_bump_ca(dir.path());
    let squid = Squid::start(&site.net, SquidOptions { bump_ca: Some((cert, key)), ..Default::default() }).await;
    let (code, out, err) = site.check(&["--upstream-proxy", &squid.url()], &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("the network is intercepting TLS"), "{err}");
    assert!(err.contains("Corpnet Bump CA"), "the issuer is named: {err}");
}
