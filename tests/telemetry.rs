//! Server telemetry: CloudWatch activity metrics against a local AWS emulator
//! (moto), read back with the real SDK, signed with fixed keys or with an
//! ECS task role from a container credentials endpoint; resilience to the
//! emulator going away, the
//! Prometheus endpoint parsed by a real parser, health during drain and the
//! healthcheck subcommand.

mod common;

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "FluidityTest";

fn metrics_args(args: &mut fluidity::server::ServerArgs, moto: &Moto, service: &str) {
    args.emit_metrics = Some(true);
    args.metrics_interval = Some("500ms".into());
    args.metrics_namespace = Some(NAMESPACE.into());
    args.service_name = Some(service.into());
    args.cluster_name = Some("test-cluster".into());
    args.metrics_endpoint_url = Some(moto.url());
}

async fn start_metered_server(pki: &Pki, moto: &Moto, service: &str) -> TestServer {
    let mut args = fluidity::server::ServerArgs::default();
    metrics_args(&mut args, moto, service);
    start_server_with_client(pki, args, moto).await
}

/// An in-process server whose PutMetricData goes to `moto` with fixed keys.
async fn start_server_with_client(pki: &Pki, base: fluidity::server::ServerArgs, moto: &Moto) -> TestServer {
    let args = fluidity::server::ServerArgs {
        listen: Some("127.0.0.1:0".into()),
        tls: pki.tls_args("server"),
        allow_loopback: Some(true),
        drain_timeout: Some("2s".into()),
        health_listen: Some("127.0.0.1:0".into()),
        ..base
    };
    let config = fluidity::server::ServerConfig::from_parts(&args, Default::default()).unwrap();
    let cloudwatch =
        fluidity::server::cloudwatch::CloudWatch::with_keys(&moto.url(), "us-east-1", "test", "test").unwrap();
    let server = fluidity::server::Server::bind(config).await.unwrap().with_cloudwatch_client(cloudwatch);
    let (addr, stats, stop) = (server.local_addr(), server.stats(), tokio_util::sync::CancellationToken::new());
    let task = tokio::spawn(server.run(stop.clone()));
    TestServer { addr, stats, stop, task }
}

/// Maximum of `metric` for `service` over the last minutes, if any.
async fn max_metric(client: &aws_sdk_cloudwatch::Client, service: &str, metric: &str) -> Option<f64> {
    let dims = [("ServiceName", service), ("ClusterName", "test-cluster")]
        .iter()
        .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
        .collect::<Vec<_>>();
    let query = MetricDataQuery::builder()
        .id("m")
        .metric_stat(
            MetricStat::builder()
                .metric(Metric::builder().namespace(NAMESPACE).metric_name(metric).set_dimensions(Some(dims)).build())
                .period(60)
                .stat("Maximum")
                .build(),
        )
        .build();
    let now = now_secs() as i64;
    let output = client
        .get_metric_data()
        .metric_data_queries(query)
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(now - 600))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(now + 600))
        .send()
        .await
        .unwrap();
    let values: Vec<f64> = output.metric_data_results().iter().flat_map(|r| r.values().to_vec()).collect();
    values.into_iter().reduce(f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_only_and_websocket_only_sessions_count_as_activity() {
    let moto = Moto::start().await;
    let client = aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await);
    let pki = Pki::new();

    // CONNECT-only: a raw TCP echo through a tunnel.
    let connect_server = start_metered_server(&pki, &moto, "svc-connect").await;
    let connect_agent = start_agent_with(&pki, connect_server.addr, |a| a.pool_size = Some(1)).await;
    // WebSocket-only: a ws:// upgrade through the agent.
    let ws_server = start_metered_server(&pki, &moto, "svc-ws").await;
    let ws_agent = start_agent_with(&pki, ws_server.addr, |a| a.pool_size = Some(1)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let traffic_at = now_secs();
    let echo = echo_origin().await;
    let mut tunnel = connect_through(connect_agent.addr, &echo.to_string()).await;
    tunnel.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tunnel.read_exact(&mut back).await.unwrap();

    let ws = ws_echo_origin().await;
    let mut tcp = tokio::net::TcpStream::connect(ws_agent.addr).await.unwrap();
    let request = format!(
        "GET http://{ws}/ HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 101"));
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tcp,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    socket.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "hello");

    tokio::time::sleep(Duration::from_secs(2)).await;
    for service in ["svc-connect", "svc-ws"] {
        let last = max_metric(&client, service, "LastActivityEpochSeconds")
            .await
            .unwrap_or_else(|| panic!("{service}: no LastActivityEpochSeconds"));
        assert!(
            last >= traffic_at as f64 && last <= now_secs() as f64,
            "{service}: last activity {last} vs traffic at {traffic_at}"
        );
        let active = max_metric(&client, service, "ActiveConnections")
            .await
            .unwrap_or_else(|| panic!("{service}: no ActiveConnections"));
        assert_eq!(active, 1.0, "{service}: one agent connection");
    }
    drop((tunnel, socket));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_outage_is_survived_with_bounded_warnings() {
    let moto = Moto::start().await;
    let port = moto.port;
    let url = moto.url();
    let pki = Pki::new();
    let flags = ["--emit-metrics", "--metrics-interval", "200ms", "--metrics-namespace", NAMESPACE];
    let names = ["--service-name", "svc-outage", "--cluster-name", "test-cluster", "--metrics-endpoint-url", &url];
    let flags: Vec<&str> = flags.into_iter().chain(names).collect();
    let (server, addr) = server_process_with(&pki, "server", "127.0.0.1:0", &flags, &AWS_TEST_ENV).await;
    let agent = start_agent(&pki, addr).await;
    let origin = http_origin().await;
    let proxy = format!("http://{}", agent.addr);

    moto.stop();
    let started = std::time::Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let out = curl(&["-x", &proxy, &format!("http://{origin}/during")]).await;
        assert_eq!(out.text(), "GET /during", "the proxy must keep working: {}", out.stderr);
        requests += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(requests > 10);
    let warnings = count_lines(&server, "could not publish metrics");
    // About 30 failed attempts; warnings only at the 1st, 2nd, 4th, 8th, 16th…
    assert!((1..=6).contains(&warnings), "{warnings} warnings for an outage");

    let moto = Moto::start_on(port).await;
    server.wait_for("metrics flowing again").await;
    let client = aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(max_metric(&client, "svc-outage", "ActiveConnections").await.is_some());
    assert_eq!(server.terminate().await, Some(0));
}

async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let out = curl(&["-w", "\n%{http_code}", &format!("http://{addr}{path}")]).await;
    let text = out.text();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_match_the_traffic() {
    let pki = Pki::new();
    let (server, addr) = server_process(&pki, "server").await;
    let health: std::net::SocketAddr = server
        .wait_for("server listening")
        .await
        .split("health=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let agent = start_agent_with(&pki, addr, |a| a.pool_size = Some(1)).await;
    let origin = http_origin().await;
    let proxy = format!("http://{}", agent.addr);
    for _ in 0..3 {
        assert_eq!(
            curl(&["-x", &proxy, "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{origin}/download/1000")])
                .await
                .text(),
            "200"
        );
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    curl(&["-x", &proxy, &format!("http://{closed}/")]).await;
    curl(&["-x", &proxy, "http://169.254.170.2/"]).await;
    // A handshake without a client certificate.
    curl(&[
        "--proxy",
        &format!("https://127.0.0.1:{}", addr.port()),
        "--proxy-cacert",
        pki.path("ca.crt").to_str().unwrap(),
        "http://x/",
    ])
    .await;
    server.wait_for("client presented no certificate").await;

    let (code, text) = get_text(health, "/metrics").await;
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no {name} {label:?} in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("unexpected type for {name}"),
        }
    };
    assert_eq!(value("fluidity_connections_active", None), 1.0);
    assert_eq!(value("fluidity_streams_total", None), 5.0);
    assert!(value("fluidity_bytes_total", Some(("direction", "down"))) >= 3000.0);
    assert_eq!(value("fluidity_dial_errors_total", Some(("kind", "refused"))), 1.0);
    assert_eq!(value("fluidity_egress_refused_total", None), 1.0);
    assert_eq!(value("fluidity_handshake_failures_total", Some(("reason", "no_certificate"))), 1.0);
    assert!(value("fluidity_last_activity_timestamp_seconds", None) >= (now_secs() - 60) as f64);
    assert_eq!(value("fluidity_draining", None), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_flips_during_drain_and_healthcheck_exit_codes() {
    let pki = Pki::new();
    let (server, addr) = server_process_on(&pki, "server", "127.0.0.1:0", &["--drain-timeout", "20s"]).await;
    let health = server
        .wait_for("server listening")
        .await
        .split("health=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let check =
        |h: String| async move { run_bin("fluidity-server", &["--health-listen", &h, "healthcheck"], &[]).await.0 };
    assert_eq!(get_text(health.parse().unwrap(), "/healthz").await.0, 200);
    assert_eq!(check(health.clone()).await, Some(0));

    // Keep a slow download open so the drain lasts.
    let agent = start_agent(&pki, addr).await;
    let origin = http_origin().await;
    let proxy = format!("http://{}", agent.addr);
    let download = tokio::spawn(async move {
        curl(&["-x", &proxy, "-o", "/dev/null", &format!("http://{origin}/trickle/4000000")]).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal("TERM");
    server.wait_for("stopped accepting").await;
    assert_eq!(get_text(health.parse().unwrap(), "/healthz").await.0, 503);
    assert_eq!(check(health.clone()).await, Some(1));
    assert_eq!(download.await.unwrap().code, Some(0));

    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    assert_eq!(check(nobody).await, Some(1));
    let (code, _, stderr) = run_bin("fluidity-server", &["--health-listen", "off", "healthcheck"], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
}

/// A container credentials endpoint (as ECS serves the task role): answers
/// every GET with fixed keys and records the Authorization headers it saw.
async fn credentials_endpoint() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = tcp.read(&mut head).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..n]).to_string();
                let auth =
                    head.lines().find_map(|l| l.strip_prefix("authorization: ").or(l.strip_prefix("Authorization: ")));
                log.lock().unwrap().push(auth.unwrap_or("").to_owned());
                let body = r#"{"AccessKeyId":"ASIATASKROLE","SecretAccessKey":"task-secret","Token":"task-token","Expiration":"2099-01-01T00:00:00Z"}"#;
                let reply =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_signs_with_the_ecs_task_role() {
    let moto = Moto::start().await;
    let (endpoint, seen) = credentials_endpoint().await;
    let pki = Pki::new();
    let url = moto.url();
    let full_uri = format!("http://{endpoint}/v2/credentials/task");
    let flags = ["--emit-metrics", "--metrics-interval", "200ms", "--metrics-namespace", NAMESPACE];
    let names = ["--service-name", "svc-task-role", "--cluster-name", "test-cluster", "--metrics-endpoint-url", &url];
    let flags: Vec<&str> = flags.into_iter().chain(names).collect();
    // No keys in the environment: only the task role can sign.
    let envs = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full_uri.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer ecs-agent-token"),
    ];
    let (server, _addr) = server_process_with(&pki, "server", "127.0.0.1:0", &flags, &envs).await;
    let client = aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await);
    let mut published = None;
    for _ in 0..50 {
        published = max_metric(&client, "svc-task-role", "ActiveConnections").await;
        if published.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published, Some(0.0), "{:#?}", server.lines());
    // Fetched once and cached (they expire in 2099), with the agent's token.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, ["Bearer ecs-agent-token"], "credential fetches");
    assert_eq!(count_lines(&server, "could not publish metrics"), 0, "{:#?}", server.lines());
}
