//! The corporate network fixture (`common::corpnet`) checked with curl and
//! Python only, none of our binaries: the client namespace cannot reach the
//! server directly nor resolve its name, and the real Squid and Dante in the
//! gateway namespace are the only way through, behaving as a corporate proxy
//! does — CONNECT to port 443 only (403 elsewhere), Basic and NTLM proxy
//! authentication (407 without valid credentials), SOCKS5 with names
//! resolved by the gateway, with or without an RFC 1929 login, and TLS
//! interception (ssl-bump) with certificates signed by the network's own CA.
//! The agent's upstream-proxy tests build on this fixture.

mod common;

use std::time::Duration;

use common::corpnet::*;
use fluidity::certs::{Ca, Validity, write_file};

/// curl's `-w` output of the CONNECT status, then a space.
const CONNECT_CODE: &str = "%{http_connect} ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_can_reach_the_server_neither_directly_nor_by_name() {
    let net = Corpnet::new();
    let _origin = net.server.http_origin(SERVER_IP, 443, None).await;

    // The origin is up: the gateway itself reaches it, by address and by name.
    let from_gateway = net.gateway.curl(&["http://198.18.2.2:443/", "http://fluidity.test:443/name"]).await;
    assert_eq!(from_gateway.text(), "origin 443 /origin 443 /name", "{}", from_gateway.stderr);

    // The client has no route to it...
    let direct = net.client.curl(&["--max-time", "5", "http://198.18.2.2:443/"]).await;
    assert_eq!(direct.code, Some(7), "curl must fail to connect: {}", direct.stderr);
    let dial = net.client.dial(SERVER_IP, 443, Duration::ZERO).await;
    assert!(dial.as_ref().is_err_and(|e| e.contains("Network is unreachable")), "{dial:?}");
    // ...nor to the gateway's far side (the gateway does not forward anyway).
    let dial = net.client.dial(GATEWAY_OUTSIDE_IP, 443, Duration::ZERO).await;
    assert!(dial.as_ref().is_err_and(|e| e.contains("Network is unreachable")), "{dial:?}");
    // ...and cannot resolve its names.
    for name in SERVER_NAMES {
        let by_name = net.client.curl(&[&format!("http://{name}:443/")]).await;
        assert_eq!(by_name.code, Some(6), "{name} must not resolve in the client: {}", by_name.stderr);
    }
    // Nor can the server reach the client: its only route is to the gateway's /24.
    let back = net.server.dial(CLIENT_IP, 22, Duration::ZERO).await;
    assert!(back.as_ref().is_err_and(|e| e.contains("Network is unreachable")), "{back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_tunnels_to_port_443_by_name_and_refuses_other_ports() {
    let net = Corpnet::new();
    let _origin = net.server.http_origin(SERVER_IP, 443, None).await;
    let _other = net.server.http_origin(SERVER_IP, 8443, None).await;
    let squid = Squid::start(&net, SquidOptions::default()).await;
    let proxy = squid.url();

    let tunnel = net.client.curl(&["-p", "-x", &proxy, "-w", CONNECT_CODE, "http://fluidity.test:443/t"]).await;
    assert_eq!(tunnel.text(), "origin 443 /t200 ", "{}", tunnel.stderr);
    let log = squid.wait_access_log("TCP_TUNNEL/200").await;
    assert!(log.contains("CONNECT fluidity.test:443 - HIER_DIRECT/198.18.2.2"), "{log}");

    let refused = net.client.curl(&["-p", "-x", &proxy, "-w", CONNECT_CODE, "http://fluidity.test:8443/"]).await;
    assert_eq!((refused.code, refused.text().as_str()), (Some(56), "403 "), "{}", refused.stderr);
    let log = squid.wait_access_log("TCP_DENIED/403").await;
    assert!(log.contains("CONNECT fluidity.test:8443"), "{log}");

    // Plain HTTP is forwarded (any safe port), names resolved by the gateway too.
    let forwarded = net.client.curl(&["-x", &proxy, "http://api.fluidity.test:8443/plain"]).await;
    assert_eq!(forwarded.text(), "origin 8443 /plain", "{}", forwarded.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_basic_auth_demands_the_right_password() {
    let net = Corpnet::new();
    let _origin = net.server.http_origin(SERVER_IP, 443, None).await;
    let auth = SquidAuth::Basic { user: "alice".into(), password: "s3cret pass".into() };
    let squid = Squid::start(&net, SquidOptions { auth, ..Default::default() }).await;
    let proxy = squid.url();
    let through = |login: Option<&'static str>| {
        let (net, proxy) = (&net, proxy.clone());
        async move {
            let mut args = vec!["-p", "-x", &proxy, "-w", CONNECT_CODE, "-D", "-"];
            if let Some(login) = login {
                args.extend(["-U", login]);
            }
            args.push("http://fluidity.test:443/");
            net.client.curl(&args).await
        }
    };

    let anonymous = through(None).await;
    assert!(anonymous.text().starts_with("HTTP/1.1 407"), "{}{}", anonymous.text(), anonymous.stderr);
    assert!(anonymous.text().contains("Proxy-Authenticate: Basic realm=\"corpnet\""), "{}", anonymous.text());
    assert!(anonymous.text().ends_with("407 "), "{}", anonymous.text());

    let good = through(Some("alice:s3cret pass")).await;
    assert!(good.text().ends_with("origin 443 /200 "), "{}{}", good.text(), good.stderr);

    let wrong = through(Some("alice:wrong")).await;
    assert!(wrong.text().ends_with("407 "), "{}{}", wrong.text(), wrong.stderr);

    let log = squid.wait_access_log("TCP_TUNNEL/200").await;
    assert!(log.contains("CONNECT fluidity.test:443 alice HIER_DIRECT"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_ntlm_runs_the_three_message_exchange() {
    let net = Corpnet::new();
    let _origin = net.server.http_origin(SERVER_IP, 443, None).await;
    let squid = Squid::start(&net, SquidOptions { auth: SquidAuth::Ntlm, ..Default::default() }).await;
    let proxy = squid.url();

    let anonymous = net.client.curl(&["-p", "-x", &proxy, "-D", "-", "http://fluidity.test:443/"]).await;
    assert!(anonymous.text().starts_with("HTTP/1.1 407"), "{}{}", anonymous.text(), anonymous.stderr);
    assert!(anonymous.text().contains("Proxy-Authenticate: NTLM\r\n"), "{}", anonymous.text());

    let ntlm = net
        .client
        .curl(&[
            "--proxy-ntlm",
            "-U",
            "CORP\\bob:anything",
            "-p",
            "-x",
            &proxy,
            "-w",
            CONNECT_CODE,
            "-v",
            "http://fluidity.test:443/",
        ])
        .await;
    assert_eq!(ntlm.text(), "origin 443 /200 ", "{}", ntlm.stderr);
    // Type 1 sent, type 2 challenge received, type 3 sent on the same connection.
    assert_eq!(ntlm.stderr.matches("Proxy-Authorization: NTLM ").count(), 2, "{}", ntlm.stderr);
    assert!(ntlm.stderr.contains("Proxy-Authenticate: NTLM T"), "{}", ntlm.stderr);

    let log = squid.wait_access_log("TCP_TUNNEL/200").await;
    let line = log.lines().find(|l| l.contains("TCP_TUNNEL/200")).unwrap();
    // The user field: Squid 5.7's decoder adds a byte to each name (`CORPb\\bobw`).
    let user = line.split_whitespace().nth(7).unwrap();
    assert!(user.starts_with("CORP") && user.contains("\\bob"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dante_connects_by_name() {
    let net = Corpnet::new();
    let _origin = net.server.http_origin(SERVER_IP, 443, None).await;
    let dante = Dante::start(&net, None).await;
    let socks = net.client.curl(&["--socks5-hostname", dante.addr, "http://fluidity.test:443/s"]).await;
    assert_eq!(socks.text(), "origin 443 /s", "{}", socks.stderr);
    let log = dante.wait_log("198.18.2.2.443").await;
    assert!(log.contains("pass(1): tcp/connect"), "{log}");
    // A name the gateway cannot resolve: Dante answers with a SOCKS failure.
    let unknown = net.client.curl(&["--socks5-hostname", dante.addr, "http://unknown.test:443/"]).await;
    assert_eq!(unknown.code, Some(97), "{}", unknown.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dante_login_demands_the_right_password() {
    let net = Corpnet::new();
    let _origin = net.server.http_origin(SERVER_IP, 443, None).await;
    let dante = Dante::start(&net, Some(("carol", "p@ss word"))).await;
    let via = |login: &str| format!("socks5h://{login}198.18.1.1:1080");
    let anonymous = net.client.curl(&["-x", &via(""), "http://fluidity.test:443/"]).await;
    assert_eq!(anonymous.code, Some(97), "{}", anonymous.stderr);
    assert!(anonymous.stderr.contains("No authentication method was acceptable"), "{}", anonymous.stderr);

    let good = net.client.curl(&["-x", &via("carol:p%40ss%20word@"), "http://fluidity.test:443/login"]).await;
    assert_eq!(good.text(), "origin 443 /login", "{}", good.stderr);
    let log = dante.wait_log("username%carol@198.18.1.2").await;
    assert!(log.contains("198.18.2.2.443"), "{log}");

    let wrong = net.client.curl(&["-x", &via("carol:wrong@"), "http://fluidity.test:443/"]).await;
    assert_eq!(wrong.code, Some(97), "{}", wrong.stderr);
    assert!(wrong.stderr.contains("rejected"), "{}", wrong.stderr);
    let log = dante.wait_log("authentication failed").await;
    assert!(log.contains("user \"carol\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_bump_presents_certificates_from_the_network_ca() {
    let net = Corpnet::new();
    let dir = tempfile::tempdir().unwrap();
    // The origin's certificate comes from a private CA, as the Fluidity server's does.
    fluidity::install_crypto_provider();
    let origin_ca = Ca::new("Origin CA", Validity::days(2)).unwrap();
    let pair = origin_ca.issue_server(&["fluidity.test".into()], Validity::days(2)).unwrap();
    let (cert, key) = (dir.path().join("origin.crt"), dir.path().join("origin.key"));
    write_file(&cert, &pair.cert_pem, false, true).unwrap();
    write_file(&key, &pair.key_pem, true, true).unwrap();
    let _origin = net.server.http_origin(SERVER_IP, 443, Some((&cert, &key))).await;

    // Without a proxy in the way, the gateway sees the origin's own certificate.
    let plain = net.gateway.curl(&["-k", "-v", "https://fluidity.test/"]).await;
    assert_eq!(plain.text(), "origin 443 /", "{}", plain.stderr);
    assert!(plain.stderr.contains("issuer: O=Fluidity; CN=Origin CA"), "{}", plain.stderr);

    let (ca_cert, ca_key, subject) = make_bump_ca(dir.path());
    let squid =
        Squid::start(&net, SquidOptions { bump_ca: Some((ca_cert.clone(), ca_key)), ..Default::default() }).await;
    let bumped = net.client.curl(&["-p", "-x", &squid.url(), "-k", "-v", "https://fluidity.test/b"]).await;
    assert_eq!(bumped.text(), "origin 443 /b", "{}", bumped.stderr);
    assert!(bumped.stderr.contains(&format!("issuer: {subject}")), "{}", bumped.stderr);
    // Squid mimics the origin certificate's subject and signs it with the bump CA.
    assert!(bumped.stderr.contains("subject: O=Fluidity; CN=fluidity.test"), "{}", bumped.stderr);
    // Trusting the bump CA, curl verifies the forged certificate.
    let trusting = net
        .client
        .curl(&["-p", "-x", &squid.url(), "--cacert", ca_cert.to_str().unwrap(), "https://fluidity.test/trusted"])
        .await;
    assert_eq!(trusting.text(), "origin 443 /trusted", "{}", trusting.stderr);
    // Squid saw the requests inside the tunnel.
    let log = squid.wait_access_log("GET https://fluidity.test/trusted").await;
    assert!(log.contains("GET https://fluidity.test/b"), "{log}");
}
