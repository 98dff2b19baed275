//! The agent's lifecycle end to end: a small local HTTP front routes `/wake`,
//! `/status` and `/kill` to the real Lambda handlers against moto (as API
//! Gateway would, API key included, and counting calls: the API's monthly
//! quota is small); the service's task is reported at a loopback address
//! where a real server listens. The agent binary wakes, waits, connects,
//! carries curl's requests, follows a replaced server to its new address,
//! lets the server be put to sleep while connected but idle, wakes it on the
//! next request, and kills the server on SIGINT.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::control::*;
use common::*;
use fluidity::lambda::{self, Function, control::Control};
use http_body_util::{BodyExt, Full};

const API_KEY: &str = "test-key-0123456789";

/// The API Gateway stand-in's counters and switches.
#[derive(Default)]
struct Front {
    calls: AtomicUsize,
    wakes: AtomicUsize,
    /// Answer every call as API Gateway does once the usage plan's quota is spent.
    quota_spent: AtomicBool,
    /// The agent's public address, as API Gateway reports it in `sourceIp`
    /// (198.51.100.7 unless a test moves the agent to another network).
    source_ip: std::sync::Mutex<Option<String>>,
}

impl Front {
    fn source_ip(&self) -> String {
        self.source_ip.lock().unwrap().clone().unwrap_or_else(|| "198.51.100.7".into())
    }
}

/// The API Gateway stand-in: checks `x-api-key`, turns the request into a proxy
/// event, calls the handler, and turns its answer back into HTTP.
async fn api_front(control: Arc<Control>) -> (SocketAddr, Arc<Front>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let front = Arc::new(Front::default());
    let counters = front.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (control, front) = (control.clone(), front.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (control, front) = (control.clone(), front.clone());
                    async move {
                        front.calls.fetch_add(1, Ordering::SeqCst);
                        if front.quota_spent.load(Ordering::SeqCst) {
                            let body = Full::new(bytes::Bytes::from_static(br#"{"message":"Limit Exceeded"}"#));
                            return Ok(hyper::Response::builder().status(429).body(body).unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(route(&control, &front, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, counters)
}

async fn route(
    control: &Control,
    front: &Front,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<bytes::Bytes>> {
    let reply = |status: u16, body: String| {
        hyper::Response::builder().status(status).body(Full::new(bytes::Bytes::from(body))).unwrap()
    };
    if req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return reply(403, r#"{"message":"Forbidden"}"#.into());
    }
    let function = match req.uri().path().rsplit('/').next() {
        Some("wake") => Function::Wake,
        Some("status") => Function::Status,
        Some("kill") => Function::Kill,
        _ => return reply(404, r#"{"message":"Missing Authentication Token"}"#.into()),
    };
    if function == Function::Wake {
        front.wakes.fetch_add(1, Ordering::SeqCst);
    }
    let event = api_event_from(req.method().as_str(), req.uri().path(), &front.source_ip());
    let _ = req.into_body().collect().await;
    match lambda::handle(function, control, &event).await {
        Ok(answer) => reply(
            answer["statusCode"].as_u64().unwrap_or(502) as u16,
            answer["body"].as_str().unwrap_or_default().to_string(),
        ),
        Err(error) => reply(502, format!(r#"{{"message":"{error}"}}"#)),
    }
}

/// A port free on both 127.0.0.1 and 127.0.0.2 (the "old" and "new" task addresses).
fn shared_port() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
}

async fn wait_desired(control: &Control, want: i32) {
    for _ in 0..200 {
        if desired(control).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("desired count never became {want}");
}

/// The agent's `GET /status`, as curl asks for it (Host: 127.0.0.1:PORT).
async fn agent_status(proxy: SocketAddr) -> serde_json::Value {
    let out = curl(&["-sS", &format!("http://{proxy}/status")]).await;
    serde_json::from_str(&out.text()).unwrap_or_else(|e| panic!("{e}: {} {}", out.text(), out.stderr))
}

/// Whether a request through the agent reaches the origin within ~10 s.
async fn carries(proxy: SocketAddr, url: &str) -> bool {
    for _ in 0..50 {
        let out = curl(&["-sS", "-x", &format!("http://{proxy}"), url]).await;
        if out.text() == "GET /hello" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn agent_args<'a>(pki: &'a Pki, api: &'a str, port: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--api-url",
        api,
        "--server-port",
        port,
        "--keepalive-interval",
        "1s",
        "--keepalive-timeout",
        "1s",
        "--reconnect-max-backoff",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, file) in [("--cert", "client.crt"), ("--key", "client.key"), ("--ca", "ca.crt")] {
        args.push(flag.into());
        args.push(pki.path(file).to_str().unwrap().into());
    }
    if !extra.contains(&"--poll-interval") {
        args.extend(["--poll-interval".into(), "200ms".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A server at `listen` that publishes its CloudWatch metrics to the emulator
/// every 500 ms under the fixture's cluster and `service`.
async fn metered_server(pki: &Pki, moto: &Moto, service: &str, listen: &str) -> Proc {
    let url = moto.url();
    let metrics = ["--emit-metrics", "--metrics-endpoint-url", &url, "--metrics-interval", "500ms"];
    let names = ["--metrics-namespace", "Fluidity", "--service-name", service, "--cluster-name", CLUSTER];
    let flags: Vec<&str> = metrics.into_iter().chain(names).collect();
    server_process_with(pki, "server", listen, &flags, &AWS_TEST_ENV).await.0
}

fn spawn_agent(args: &[String], key: &str) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_bin_with("fluidity-agent", &args, &[("FLUIDITY_API_KEY", key)])
}

/// One service in moto behind a counting API front whose Wake waits (as
/// deployed, shorter) for the task; certificates and a port for its servers.
struct World {
    moto: Moto,
    f: Fixture,
    control: Arc<Control>,
    counters: Arc<Front>,
    api: String,
    pki: Pki,
    port: u16,
}

impl World {
    async fn new(service: &str) -> Self {
        let moto = Moto::start().await;
        let f = fixture(&moto, service).await;
        let mut control = control(&moto, service).await;
        control.settings.wake_wait = Duration::from_secs(8);
        let control = Arc::new(control);
        let (front, counters) = api_front(control.clone()).await;
        Self { moto, f, control, counters, api: format!("http://{front}"), pki: Pki::new(), port: shared_port() }
    }

    fn agent(&self, extra: &[&str]) -> Proc {
        spawn_agent(&agent_args(&self.pki, &self.api, &self.port.to_string(), extra), API_KEY)
    }

    /// A server on `ip` at the shared port.
    async fn server_at(&self, ip: &str) -> Proc {
        server_process_on(&self.pki, "server", &format!("{ip}:{}", self.port), &[]).await.0
    }

    fn calls(&self) -> usize {
        self.counters.calls.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_costs_at_most_five_api_calls() {
    let w = World::new("svc-calls").await;
    let (moto, f, control) = (&w.moto, &w.f, &w.control);
    let origin = http_origin().await;
    let _server = w.server_at("127.0.0.1").await;
    let mut agent = w.agent(&[]);

    // Wake → (Fargate starts the task a moment later) → connect → traffic → kill.
    wait_desired(control, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run_task_at(moto, f, "127.0.0.1").await;
    agent.wait_for("tunnel to server established").await;
    let proxy = agent.logged_addr("local proxy listening").await;
    let url = format!("http://{origin}/hello");
    for _ in 0..5 {
        assert_eq!(curl(&["-sS", "-x", &format!("http://{proxy}"), &url]).await.text(), "GET /hello");
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // the agent polls nothing while connected
    agent.signal("INT");
    assert_eq!(agent.wait_exit().await, Some(0));
    assert_eq!(desired(control).await, 0);
    let calls = w.calls();
    assert!((2..=5).contains(&calls), "a whole session cost {calls} control API calls");
}

/// Behind a corporate proxy: the control API calls (wake, kill) and the
/// tunnel all go through it, as its access log shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_and_the_tunnel_go_through_the_upstream_proxy() {
    let w = World::new("svc-proxied").await;
    let (moto, f, control) = (&w.moto, &w.f, &w.control);
    let proxy = common::connect_proxy::ConnectProxy::start(None).await;
    let origin = http_origin().await;
    let _server = w.server_at("127.0.0.1").await;
    let mut agent = w.agent(&["--upstream-proxy", &proxy.url()]);

    wait_desired(control, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run_task_at(moto, f, "127.0.0.1").await;
    agent.wait_for("tunnel to server established").await;
    let local = agent.logged_addr("local proxy listening").await;
    assert!(carries(local, &format!("http://{origin}/hello")).await);
    agent.signal("INT");
    assert_eq!(agent.wait_exit().await, Some(0));
    assert_eq!(desired(control).await, 0);

    let api = w.api.trim_start_matches("http://").to_string();
    let targets = proxy.targets();
    let api_calls = targets.iter().filter(|t| **t == api).count();
    assert_eq!(api_calls, w.calls(), "every control API call through the proxy: {targets:?}");
    assert!(api_calls >= 2, "wake and kill at least: {targets:?}");
    let server = format!("127.0.0.1:{}", w.port);
    assert!(targets.contains(&server), "the tunnel through the proxy: {targets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_replaced_server_sleeps_when_idle_and_wakes_on_the_next_request() {
    let w = World::new("svc-lifecycle").await;
    let (moto, f, control) = (&w.moto, &w.f, &w.control);
    let origin = http_origin().await;

    let first_server = w.server_at("127.0.0.1").await;
    let mut agent = w.agent(&[]);

    // The agent wakes the service; "Fargate" then starts the task at 127.0.0.1.
    wait_desired(control, 1).await;
    let first_task = run_task_at(moto, f, "127.0.0.1").await;
    agent.wait_for("tunnel to server established").await;
    let proxy = agent.logged_addr("local proxy listening").await;
    let url = format!("http://{origin}/hello");
    let out = curl(&["-sS", "-x", &format!("http://{proxy}"), &url]).await;
    assert_eq!(out.text(), "GET /hello", "{}", out.stderr);
    let up = agent_status(proxy).await;
    assert_eq!((up["state"].as_str(), up["connections_up"].as_u64() > Some(0)), (Some("up"), true), "{up}");
    assert_eq!(up["server"], format!("127.0.0.1:{}", w.port));
    assert!(up["requests"].as_u64() >= Some(1) && up["control_api_calls"].as_u64() >= Some(1), "{up}");
    // Read-only, for this machine's programs: a page that rebinds its name
    // to 127.0.0.1 sends its own Host and is refused; no method changes anything.
    let rebound = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: attacker.example",
        &format!("http://{proxy}/status"),
    ])
    .await;
    assert_eq!(rebound.text(), "403");
    let posted =
        curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &format!("http://{proxy}/status")]).await;
    assert_eq!(posted.text(), "405");
    assert_eq!(desired(control).await, 1, "nothing on /status changes the server");

    // The task is replaced: the old server dies, a new one runs at 127.0.0.2.
    drop(first_server);
    stop_task(moto, first_task["task_arn"].as_str().unwrap()).await;
    // This one publishes its activity metrics to the emulator, as on Fargate.
    let second_server = metered_server(&w.pki, moto, &f.service, &format!("127.0.0.2:{}", w.port)).await;
    let second_task = run_task_at(moto, f, "127.0.0.2").await;
    agent.wait_for("to=127.0.0.2").await;
    assert!(carries(proxy, &url).await, "the agent never carried a request through the new server");

    // Idle while connected: the agent keeps its connections open, nobody
    // browses; the real Sleep function (idle threshold 3 s here) reads the
    // server's metrics and scales the service to 0; "Fargate" stops the task.
    let mut sleeper = common::control::control(moto, &f.service).await;
    sleeper.settings.idle_threshold = Duration::from_secs(3);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let slept = lambda::handle(Function::Sleep, &sleeper, &schedule_event()).await.unwrap();
    assert_eq!(slept["action"], "scaled to 0", "{slept}");
    assert!(slept["reason"].as_str().unwrap().contains("open but idle"), "connected but idle: {slept}");
    assert_eq!(desired(control).await, 0);
    drop(second_server);
    stop_task(moto, second_task["task_arn"].as_str().unwrap()).await;
    agent.wait_for("the next request wakes it").await;
    let asleep = agent_status(proxy).await;
    assert_eq!(asleep["state"], "asleep", "{asleep}");
    // `fluidity-agent status` says it to a person, with exit code 3 (the agent runs, the server does not).
    let mut args = agent_args(&w.pki, &w.api, &w.port.to_string(), &[]);
    let listen = args.iter().position(|a| a == "--listen").unwrap() + 1;
    args[listen] = proxy.to_string();
    args.push("status".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_bin("fluidity-agent", &args, &[("FLUIDITY_API_KEY", API_KEY)]).await;
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(stdout.starts_with("server: asleep (") && stdout.contains("why: the control plane stopped"), "{stdout}");
    // Nobody browses: the agent leaves it asleep.
    let before = w.calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(desired(control).await, 0, "the agent woke the server without a request");
    assert_eq!(w.calls(), before, "a sleeping server costs no API calls");

    // Requests (a browser sends several at once): they wait while the agent
    // wakes the server once, then go through.
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(
                async move { curl(&["-sS", "--max-time", "40", "-x", &format!("http://{proxy}"), &url]).await },
            )
        })
        .collect();
    wait_desired(control, 1).await;
    let waking = agent_status(proxy).await;
    assert_eq!(waking["state"], "waking", "{waking}");
    let third_server = w.server_at("127.0.0.1").await;
    let third_task = run_task_at(moto, f, "127.0.0.1").await;
    for request in requests {
        let out = request.await.unwrap();
        assert_eq!(out.text(), "GET /hello", "a waking request: {}", out.stderr);
    }
    assert_eq!(count_lines(&agent, "a request arrived for the sleeping server"), 1, "one wake for all of them");

    // Asleep again: nothing left over from those requests wakes it unasked.
    control.kill().await.unwrap();
    drop(third_server);
    stop_task(moto, third_task["task_arn"].as_str().unwrap()).await;
    for _ in 0..100 {
        if count_lines(&agent, "the next request wakes it") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count_lines(&agent, "the next request wakes it"), 2, "{:#?}", agent.lines());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(desired(control).await, 0, "woken again without a request");
    assert_eq!(count_lines(&agent, "a request arrived for the sleeping server"), 1);

    // SIGINT while asleep: exit 0 without a kill call (nothing to stop).
    let before = w.calls();
    agent.signal("INT");
    let code = agent.wait_exit().await;
    let lines = agent.lines();
    assert_eq!(code, Some(0));
    assert_eq!(desired(control).await, 0);
    assert_eq!(w.calls(), before, "no kill for a sleeping server");
    assert!(lines.iter().all(|l| !l.contains(API_KEY)), "the API key was logged");
}

/// The server's security group as the network applies it: a connection to
/// the task's address is forwarded to the server only while the group (in
/// moto) admits the agent's current address on the server port, and held
/// unanswered otherwise, as a dropped packet is (the agent's connection
/// attempt times out). A move to another network cuts what was forwarded.
struct SecurityGroup {
    cut: tokio::sync::watch::Sender<u64>,
}

impl SecurityGroup {
    async fn start(
        listen: SocketAddr,
        server: SocketAddr,
        moto_addr: String,
        control: Arc<Control>,
        front: Arc<Front>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let (cut, watch) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (control, front, mut watch, moto_addr) =
                    (control.clone(), front.clone(), watch.clone(), moto_addr.clone());
                watch.mark_unchanged();
                tokio::spawn(async move {
                    // Read through boto3, not the code under test.
                    let group = control.settings.caller_ingress_group.clone().unwrap();
                    let url = format!("http://{moto_addr}");
                    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws_fixture.py");
                    let out = tokio::process::Command::new("python3").args([script, &url, "ingress", &group]).output();
                    let Ok(out) = out.await else { return };
                    let rules: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let (source, port) = (format!("{}/32", front.source_ip()), control.settings.server_port);
                    let admitted = rules
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| r["cidr"] == source.as_str() && r["port"] == port);
                    if admitted {
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(server).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream) => {}
                            _ = watch.changed() => {}
                        }
                    } else {
                        let _ = tokio::time::timeout(Duration::from_secs(30), watch.changed()).await;
                    }
                });
            }
        });
        Self { cut }
    }

    /// The agent is now on another network: `ip` is its address, and its
    /// connections through the old one are gone.
    fn move_agent(&self, front: &Front, ip: &str) {
        *front.source_ip.lock().unwrap() = Some(ip.into());
        self.cut.send_modify(|generation| *generation += 1);
    }
}

/// `AllowedIngressCidr=caller`: the wake admits the agent's address; when the
/// laptop moves to another network the server still runs but every
/// connection attempt times out, and the agent calls `/wake` once, which
/// admits the new address: the tunnel heals by itself, within one wake and a
/// few calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_another_network_heals_with_one_wake() {
    let moto = Moto::start().await;
    let f = fixture(&moto, "svc-moving").await;
    let port = shared_port();
    let mut control = control(&moto, &f.service).await;
    control.settings.wake_wait = Duration::from_secs(8);
    control.settings.caller_ingress_group = Some(f.sg.clone());
    control.settings.server_port = port;
    let control = Arc::new(control);
    let (front, counters) = api_front(control.clone()).await;
    let pki = Pki::new();
    let (_server, server) = server_process_on(&pki, "server", "127.0.0.1:0", &[]).await;
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let moto_addr = moto.url().trim_start_matches("http://").to_string();
    let group = SecurityGroup::start(listen, server, moto_addr, control.clone(), counters.clone()).await;
    let origin = http_origin().await;
    let api = format!("http://{front}");
    let args = agent_args(&pki, &api, &port.to_string(), &["--connect-timeout", "3s", "--poll-interval", "1s"]);
    let mut agent = spawn_agent(&args, API_KEY);

    wait_desired(&control, 1).await;
    run_task_at(&moto, &f, "127.0.0.1").await;
    agent.wait_for("tunnel to server established").await;
    let proxy = agent.logged_addr("local proxy listening").await;
    let url = format!("http://{origin}/hello");
    assert!(carries(proxy, &url).await, "through the group that admits 198.51.100.7");
    let (calls, wakes) = (counters.calls.load(Ordering::SeqCst), counters.wakes.load(Ordering::SeqCst));

    group.move_agent(&counters, "203.0.113.50");
    agent.wait_for("connections to it time out").await;
    assert!(carries(proxy, &url).await, "the tunnel never healed after the move");
    let woken = counters.wakes.load(Ordering::SeqCst) - wakes;
    let called = counters.calls.load(Ordering::SeqCst) - calls;
    assert_eq!(woken, 1, "one wake admits the new network");
    assert!(called <= 6, "{called} control API calls to heal");
    let admitted: Vec<String> = control.ec2.caller_rules(&f.sg).await.unwrap().iter().map(|r| r.cidr.clone()).collect();
    assert_eq!(admitted, ["198.51.100.7/32", "203.0.113.50/32"]);

    agent.signal("INT");
    assert_eq!(agent.wait_exit().await, Some(0));
    assert!(control.ec2.caller_rules(&f.sg).await.unwrap().is_empty(), "the kill on exit revokes them");
}

/// A laptop's suspend while the server was replaced: the agent is stopped
/// (SIGSTOP) for two minutes, meanwhile the task is replaced by one at
/// another address; continued, the agent renews its connections, asks the
/// control API where the server is now, and the next request works within
/// 15 s, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_suspend_the_agent_finds_the_replaced_server() {
    let w = World::new("svc-suspend").await;
    let first_server = w.server_at("127.0.0.1").await;
    let mut agent = w.agent(&[]);
    wait_desired(&w.control, 1).await;
    let first_task = run_task_at(&w.moto, &w.f, "127.0.0.1").await;
    agent.wait_for("tunnel to server established").await;
    let proxy = agent.logged_addr("local proxy listening").await;
    let origin = http_origin().await;
    let url = format!("http://{origin}/hello");
    assert!(carries(proxy, &url).await);

    agent.signal("STOP");
    drop(first_server);
    stop_task(&w.moto, first_task["task_arn"].as_str().unwrap()).await;
    let _second_server = w.server_at("127.0.0.2").await;
    run_task_at(&w.moto, &w.f, "127.0.0.2").await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    agent.signal("CONT");
    let resumed = std::time::Instant::now();
    let out = curl(&["-sS", "--max-time", "15", "-x", &format!("http://{proxy}"), &url]).await;
    assert_eq!(out.text(), "GET /hello", "{} after {:?}: {:#?}", out.stderr, resumed.elapsed(), agent.lines());
    assert!(resumed.elapsed() < Duration::from_secs(15), "took {:?}", resumed.elapsed());
    assert!(count_lines(&agent, "to=127.0.0.2") >= 1, "{:#?}", agent.lines());
    agent.signal("INT");
    assert_eq!(agent.wait_exit().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_polled_with_backoff_and_a_spent_quota_is_final() {
    let w = World::new("svc-unreachable").await;
    let server = w.server_at("127.0.0.1").await;
    // poll_interval 100 ms: the backoff is in poll intervals, so 10 minutes
    // at the default 5 s are 12 s here. Without backoff that would be about
    // 80 calls (each takes some tens of ms through moto).
    let mut agent = w.agent(&["--poll-interval", "100ms"]);
    wait_desired(&w.control, 1).await;
    run_task_at(&w.moto, &w.f, "127.0.0.1").await;
    agent.wait_for("tunnel to server established").await;

    // The API says running, but the tunnel cannot reach the server (the
    // user's address changed, say): ten minutes of accelerated time.
    drop(server);
    agent.wait_for("tunnel connection").await;
    let before = w.calls();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let polled = w.calls() - before;
    assert!((1..=20).contains(&polled), "{polled} calls in 10 minutes of an unreachable server");
    agent.wait_for("the tunnel cannot reach it").await;

    // The quota is spent: one clear line, and no further calls.
    w.counters.quota_spent.store(true, Ordering::SeqCst);
    agent.wait_for("quota is used up").await;
    let after = w.calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.calls(), after, "the agent keeps calling a spent API");
    let quota_lines = agent.lines().iter().filter(|l| l.contains("quota is used up")).count();
    assert_eq!(quota_lines, 1, "{:#?}", agent.lines());
    agent.signal("INT");
    assert_eq!(agent.wait_exit().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_at_start_ends_with_one_line() {
    let moto = Moto::start().await;
    let f = fixture(&moto, "svc-quota").await;
    let control = Arc::new(control(&moto, &f.service).await);
    let (front, counters) = api_front(control.clone()).await;
    counters.quota_spent.store(true, Ordering::SeqCst);
    let pki = Pki::new();
    let mut agent = spawn_agent(&agent_args(&pki, &format!("http://{front}"), "8443", &[]), API_KEY);
    let code = agent.wait_exit().await;
    assert_ne!(code, Some(0));
    let lines = agent.lines();
    let quota: Vec<&String> = lines.iter().filter(|l| l.contains("quota is used up")).collect();
    assert_eq!(quota.len(), 1, "{lines:#?}");
    assert!(quota[0].contains("ApiQuotaPerMonth"), "{}", quota[0]);
    assert_eq!(counters.calls.load(Ordering::SeqCst), 1, "no retries and no kill against a spent quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_wake_timeout_end_with_one_clear_line() {
    let moto = Moto::start().await;
    let f = fixture(&moto, "svc-refused").await;
    let control = Arc::new(control(&moto, &f.service).await);
    let api = format!("http://{}", api_front(control.clone()).await.0);
    let pki = Pki::new();

    let mut agent = spawn_agent(&agent_args(&pki, &api, "8443", &[]), "not-the-key");
    let code = agent.wait_exit().await;
    assert_ne!(code, Some(0));
    let lines = agent.lines();
    let refused: Vec<&String> = lines.iter().filter(|l| l.contains("refused the API key")).collect();
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert!(refused[0].contains("from FLUIDITY_API_KEY"), "{}", refused[0]);
    assert!(!refused[0].contains("not-the-key"), "the key itself must never be printed");
    assert_eq!(desired(&control).await, 0, "a refused wake changes nothing");

    // The right key, but no task ever starts: the wait ends naming the last state.
    let mut agent = spawn_agent(&agent_args(&pki, &api, "8443", &["--wake-timeout", "2s"]), API_KEY);
    let code = agent.wait_exit().await;
    assert_ne!(code, Some(0));
    let lines = agent.lines();
    let timeout = lines.iter().find(|l| l.contains("not ready after")).unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(timeout.contains("last state seen: starting, desired 1, running 0"), "{timeout}");
    // Giving up stops what it woke (kill_on_exit), so nothing keeps running.
    assert_eq!(desired(&control).await, 0);
}

/// The agent under a real pseudo-terminal (util-linux `script`), its
/// terminal output going to a file; stdin feeds the terminal (0x03 is Ctrl-C).
struct OnTerminal {
    child: tokio::process::Child,
    output: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl OnTerminal {
    fn start(args: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("terminal.out");
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let command = format!("exec '{}' {}", bin_path("fluidity-agent"), quoted.join(" "));
        let child = tokio::process::Command::new("script")
            .args(["-q", "-f", "-e", "-c", &command])
            .arg(&output)
            .env("FLUIDITY_API_KEY", API_KEY)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, output, _dir: dir }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.output).unwrap_or_default()).into_owned()
    }

    /// Types Ctrl-C on the terminal; the agent must exit 0 within 10 s.
    async fn ctrl_c_and_wait(&mut self) {
        tokio::io::AsyncWriteExt::write_all(self.child.stdin.as_mut().unwrap(), b"\x03").await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        assert_eq!(status.unwrap().unwrap().code(), Some(0), "{:?}", self.text());
    }

    async fn wait_for(&self, needle: &str) -> String {
        for _ in 0..150 {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {needle:?} on the terminal: {:?}", self.text());
    }
}

const CLEAR_LINE: &str = "\r\x1b[2K";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wake_progress_line_on_a_terminal_clears_when_up_and_on_ctrl_c() {
    let w = World::new("svc-terminal").await;
    let _server = w.server_at("127.0.0.1").await;
    let mut terminal = OnTerminal::start(&agent_args(&w.pki, &w.api, &w.port.to_string(), &[]));
    // The line is redrawn in place while the task starts …
    wait_desired(&w.control, 1).await;
    terminal.wait_for("the server… 1s").await;
    let task = run_task_at(&w.moto, &w.f, "127.0.0.1").await;
    // … and replaced by one line when the server is up.
    let text = terminal.wait_for("fluidity: server up at 127.0.0.1:").await;
    let redraws = text.matches(CLEAR_LINE).count();
    assert!(redraws >= 4, "{redraws} redraws: {text:?}");
    let (before, after) = text.split_once("fluidity: server up at").unwrap();
    assert!(before.ends_with(CLEAR_LINE), "the last frame was not cleared: {text:?}");
    let summary = after.split('\n').next().unwrap();
    assert!(summary.contains(" after ") && summary.ends_with("s\r"), "{summary:?}");
    assert!(!after.contains("the server…"), "the spinner went on after the server was up: {after:?}");
    terminal.ctrl_c_and_wait().await;
    stop_task(&w.moto, task["task_arn"].as_str().unwrap()).await;

    // Ctrl-C during the wait: the line is cleared, nothing is left on it.
    let mut terminal = OnTerminal::start(&agent_args(&w.pki, &w.api, &w.port.to_string(), &[]));
    terminal.wait_for("the server… 1s").await;
    terminal.ctrl_c_and_wait().await;
    let text = terminal.text();
    let last_frame = text.rfind("the server…").unwrap();
    assert!(text[last_frame..].contains(CLEAR_LINE), "the progress line was left behind: {text:?}");
}
