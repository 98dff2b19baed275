//! SOCKS5 on the agent's HTTP port, with real clients: curl with
//! `--socks5-hostname` and `--socks5` (IPv4 and IPv6 literals), a WebSocket
//! client, RFC 1929 login, the reply codes for the server's refusals, and
//! malformed greetings that must not hurt the agent; and the PAC file the
//! agent serves, evaluated by a real PAC engine (pacparser).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Opens a SOCKS5 CONNECT to `destination` (ATYP + address + port bytes)
/// through `agent`, with no authentication; the reply code and the stream.
async fn socks_connect(agent: std::net::SocketAddr, destination: &[u8]) -> (u8, tokio::net::TcpStream) {
    let mut tcp = tokio::net::TcpStream::connect(agent).await.unwrap();
    tcp.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    tcp.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice, [5, 0]);
    tcp.write_all(&[&[5, 1, 0][..], destination].concat()).await.unwrap();
    let mut reply = [0u8; 10];
    tcp.read_exact(&mut reply).await.unwrap();
    (reply[1], tcp)
}

fn name(host: &str, port: u16) -> Vec<u8> {
    [&[3, host.len() as u8][..], host.as_bytes(), &port.to_be_bytes()].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_websocket_clients_go_through_socks5() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    let socks = agent.addr.to_string();
    let origin = http_origin().await;
    let hostname = format!("http://localhost:{}/by-name", origin.port());
    assert_eq!(curl(&["--socks5-hostname", &socks, &hostname]).await.text(), "GET /by-name");
    let v4 = format!("http://{origin}/v4");
    assert_eq!(curl(&["--socks5", &socks, &v4]).await.text(), "GET /v4");
    let v6_origin = http_origin_on("[::1]:0").await;
    let v6 = format!("http://[::1]:{}/v6", v6_origin.port());
    let out = curl(&["--socks5", &socks, &v6]).await;
    assert_eq!(out.text(), "GET /v6", "{}", out.stderr);
    // HTTP still works on the same port.
    assert_eq!(curl(&["-x", &format!("http://{socks}"), &v4]).await.text(), "GET /v4");

    // A WebSocket client over the SOCKS tunnel.
    let ws = ws_echo_origin().await;
    let (reply, tcp) = socks_connect(agent.addr, &name("localhost", ws.port())).await;
    assert_eq!(reply, 0);
    let url = format!("ws://localhost:{}/chat", ws.port());
    let (mut socket, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    socket.send(Message::text("over socks")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "over socks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_socks_reply_codes() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    // The server's own port: refused by its egress policy.
    let (reply, _) =
        socks_connect(agent.addr, &[&[1, 127, 0, 0, 1][..], &server.addr.port().to_be_bytes()].concat()).await;
    assert_eq!(reply, 0x02, "not allowed");
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (reply, _) = socks_connect(agent.addr, &[&[1, 127, 0, 0, 1][..], &closed.to_be_bytes()].concat()).await;
    assert_eq!(reply, 0x05, "connection refused");
    // A name that cannot resolve (a 64-byte label: no DNS query can carry it).
    let (reply, _) = socks_connect(agent.addr, &name(&format!("{}.test", "a".repeat(64)), 80)).await;
    assert_eq!(reply, 0x04, "host unreachable");
    // BIND is not offered.
    let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    tcp.write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await.unwrap();
    let mut answer = [0u8; 12];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[3], 0x07, "command not supported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_auth_socks_needs_the_same_credentials() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent_with(&pki, server.addr, |a| a.proxy_auth = Some("alice:s3cret".parse().unwrap())).await;
    let socks = agent.addr.to_string();
    let origin = http_origin().await;
    let url = format!("http://{origin}/auth");
    let out = curl(&["--socks5-hostname", &socks, "--proxy-user", "alice:s3cret", &url]).await;
    assert_eq!(out.text(), "GET /auth", "{}", out.stderr);
    let out = curl(&["--socks5-hostname", &socks, "--proxy-user", "alice:wrong", &url]).await;
    assert_ne!(out.code, Some(0), "wrong password accepted");
    let out = curl(&["--socks5-hostname", &socks, &url]).await;
    assert_ne!(out.code, Some(0), "no credentials accepted");
    // On the wire: the RFC 1929 failure reply, then the connection ends.
    let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    tcp.write_all(&[&[5, 1, 2, 1, 5][..], b"alice", &[5], b"wrong"].concat()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, [5, 2, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_greetings_close_the_connection_and_nothing_else() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    let agent = start_agent(&pki, server.addr).await;
    let origin = http_origin().await;
    let cases: [&[u8]; 5] = [&[5, 0], &[5, 1], &[5, 1, 0, 4, 1, 0, 1], &[5, 1, 0, 5, 1, 0, 3, 9, b'x'], &[5, 255]];
    for greeting in cases {
        let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
        tcp.write_all(greeting).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{greeting:?}: the connection stayed open");
    }
    let out = curl(&["--socks5", &agent.addr.to_string(), &format!("http://{origin}/alive")]).await;
    assert_eq!(out.text(), "GET /alive");
}

/// Evaluates `pac` with pacparser (a real PAC engine) for each URL.
fn find_proxy(pac: &str, urls: &[&str]) -> Vec<String> {
    let script = "import sys, pacparser\npacparser.init()\npacparser.parse_pac_string(sys.stdin.read())\n\
                  for url in sys.argv[1:]:\n    print(pacparser.find_proxy(url))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .args(urls)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), pac.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pacparser failed");
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_a_pac_file_a_pac_engine_understands() {
    let pki = Pki::new();
    let server = start_server(&pki, "server").await;
    // With proxy auth on: the PAC file needs none (browsers fetch it first).
    let agent = start_agent_with(&pki, server.addr, |a| a.proxy_auth = Some("alice:s3cret".parse().unwrap())).await;
    let url = format!("http://{}/proxy.pac", agent.addr);
    let out = curl(&["-sS", "-D", "-", &url]).await;
    let text = out.text();
    let (head, pac) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/x-ns-proxy-autoconfig"), "{head}");
    let origin = http_origin().await;
    let remote = format!("http://{origin}/via-pac").replace("127.0.0.1", "example.test");
    let answers = find_proxy(pac, &[&remote, "http://localhost:8080/", "http://intranet/"]);
    let expected = format!("PROXY {0}; SOCKS5 {0}", agent.addr);
    assert_eq!(answers, [expected.as_str(), "DIRECT", "DIRECT"]);
    // What the PAC file names works: its PROXY entry carries a request.
    let proxy = answers[0].split(';').next().unwrap().trim().strip_prefix("PROXY ").unwrap().to_owned();
    let via =
        curl(&["-x", &format!("http://{proxy}"), "--proxy-user", "alice:s3cret", &format!("http://{origin}/via-pac")])
            .await;
    assert_eq!(via.text(), "GET /via-pac");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pac_file_keeps_the_local_network_local() {
    use fluidity::agent::config::{RawAgentConfig, RawPac};
    use fluidity::agent::{AgentArgs, AgentConfig};
    let pki = Pki::new();
    let args = AgentArgs {
        listen: Some("127.0.0.1:0".into()),
        server: Some("127.0.0.1:9".into()),
        tls: pki.tls_args("client"),
        ..AgentArgs::default()
    };
    let pac_of = |file: RawAgentConfig, env: &'static [(&'static str, &'static str)]| {
        let args = args.clone();
        async move {
            let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
            let config = AgentConfig::from_parts_with_env(&args, file, &lookup).unwrap();
            let agent = fluidity::agent::Agent::bind(config).await.unwrap();
            let addr = agent.local_addr();
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(agent.run(stop.clone()));
            let text = curl(&["-sS", &format!("http://{addr}/proxy.pac")]).await.text();
            stop.cancel();
            (addr, text)
        }
    };
    // By default the NO_PROXY entries are sent DIRECT too. (No IPv6 literals
    // here: pacparser cuts a bracketed host at its first colon.)
    let (addr, pac) = pac_of(RawAgentConfig::default(), &[("NO_PROXY", "corp.example, 198.18.0.0/15")]).await;
    let tunnel = format!("PROXY {addr}; SOCKS5 {addr}");
    let cases = [
        ("http://10.1.2.3/", "DIRECT"),
        ("http://172.20.0.1/", "DIRECT"),
        ("http://192.168.1.1/", "DIRECT"),
        ("http://169.254.169.254/", "DIRECT"),
        ("http://wiki.corp.example/", "DIRECT"),
        ("http://198.19.0.1/", "DIRECT"),
        ("http://8.8.8.8/", &tunnel),
        ("http://172.32.0.1/", &tunnel),
        ("http://example.com/", &tunnel),
        ("http://corp.example.evil.test/", &tunnel),
    ];
    let urls: Vec<&str> = cases.iter().map(|(url, _)| *url).collect();
    for ((url, want), got) in cases.iter().zip(find_proxy(&pac, &urls)) {
        assert_eq!(&got, want, "{url}");
    }
    // pac.direct replaces the NO_PROXY default.
    let file = RawAgentConfig { pac: RawPac { direct: Some(vec![".intra.test".into()]) }, ..Default::default() };
    let (addr, pac) = pac_of(file, &[("NO_PROXY", "corp.example")]).await;
    let tunnel = format!("PROXY {addr}; SOCKS5 {addr}");
    let got = find_proxy(&pac, &["http://git.intra.test/", "http://wiki.corp.example/", "http://10.0.0.1/"]);
    assert_eq!(got, ["DIRECT", tunnel.as_str(), "DIRECT"]);
}
