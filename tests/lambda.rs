//! The Lambda control plane against a local AWS emulator (moto, with the real
//! SDK clients) and, as a built binary, under a Lambda Runtime API emulator.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::control::*;
use common::*;
use fluidity::lambda::control::Control;
use fluidity::lambda::{self, Function};
use serde_json::{Value, json};

/// Calls `function` with an API event; returns (statusCode, parsed body).
async fn call(control: &Control, function: Function, method: &str, path: &str) -> (u64, Value) {
    let response = lambda::handle(function, control, &api_event(method, path)).await.unwrap();
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    (response["statusCode"].as_u64().unwrap(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_status_kill_against_the_emulator() {
    let moto = Moto::start().await;
    let f = fixture(&moto, "fluidity-server-test").await;
    let c = control(&moto, &f.service).await;

    let (code, status) = call(&c, Function::Status, "GET", "/status").await;
    assert_eq!((code, status["state"].as_str(), status["desired"].as_i64()), (200, Some("stopped"), Some(0)));

    let (code, woken) = call(&c, Function::Wake, "POST", "/wake").await;
    assert_eq!((code, woken["changed"].as_bool()), (200, Some(true)));
    assert_eq!(woken["status"]["state"], "starting");
    assert_eq!(desired(&c).await, 1);
    let (_, again) = call(&c, Function::Wake, "POST", "/wake").await;
    assert_eq!(again["changed"], false);
    assert_eq!(desired(&c).await, 1, "wake never goes above 1");

    // Another service's task in the same cluster must never be reported.
    let other = fixture(&moto, "someone-else").await;
    run_task(&moto, &other, true).await;
    let (_, status) = call(&c, Function::Status, "GET", "/status").await;
    assert_eq!(status["state"], "starting");
    assert_eq!(status["task_arn"], Value::Null);

    let task = run_task(&moto, &f, true).await;
    let (_, status) = call(&c, Function::Status, "GET", "/status").await;
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["running"], 1);
    assert_eq!(status["task_arn"], task["task_arn"]);
    assert_eq!(status["public_ip"], task["public_ip"]);

    let (code, killed) = call(&c, Function::Kill, "POST", "/kill").await;
    assert_eq!((code, killed["changed"].as_bool()), (200, Some(true)));
    assert_eq!(killed["status"]["state"], "stopping");
    assert_eq!(desired(&c).await, 0);
    let (_, again) = call(&c, Function::Kill, "POST", "/kill").await;
    assert_eq!(again["changed"], false);

    // The nightly schedule kills too.
    call(&c, Function::Wake, "POST", "/wake").await;
    let scheduled = lambda::handle(Function::Kill, &c, &schedule_event()).await.unwrap();
    assert_eq!(scheduled["changed"], true);
    assert_eq!(desired(&c).await, 0);
}

async fn put_activity(moto: &Moto, service: &str, connections: f64, last_activity_ago: u64) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let client = aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await);
    let dims = vec![
        Dimension::builder().name("ServiceName").value(service).build(),
        Dimension::builder().name("ClusterName").value(CLUSTER).build(),
    ];
    let at = aws_sdk_cloudwatch::primitives::DateTime::from_secs(now_secs() as i64 - 60);
    let datum = |name: &str, value: f64, unit| {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dims.clone()))
            .value(value)
            .unit(unit)
            .timestamp(at)
            .build()
    };
    client
        .put_metric_data()
        .namespace("Fluidity")
        .metric_data(datum("ActiveConnections", connections, StandardUnit::Count))
        .metric_data(datum("LastActivityEpochSeconds", (now_secs() - last_activity_ago) as f64, StandardUnit::None))
        .send()
        .await
        .unwrap();
}

/// The group's entries as (cidr, port), and the whole list.
async fn ingress(moto: &Moto, sg: &str) -> (Vec<(String, u64)>, Value) {
    let rules = python(&[&moto.url(), "ingress", sg]).await;
    let pairs = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["cidr"].as_str().unwrap().to_string(), r["port"].as_u64().unwrap()))
        .collect();
    (pairs, rules)
}

async fn wake_from(control: &Control, ip: &str) -> Value {
    let response = lambda::handle(Function::Wake, control, &api_event_from("POST", "/wake", ip)).await.unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    response
}

/// `AllowedIngressCidr=caller`: each wake admits exactly the address it came
/// from (API Gateway's `requestContext.identity.sourceIp`) on the server's
/// port, described as Fluidity's with its time; at most four at once, the
/// oldest revoked first (and any left on an earlier ServerPort); Sleep and
/// Kill revoke them all, and leave entries
/// that are not Fluidity's alone. A fixed-CIDR stack's group is never touched,
/// and without a server name no Route 53 call is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_admits_its_caller_and_sleep_and_kill_revoke_them() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("recording.jsonl");
    let moto = Moto::start_recording(&recording).await;
    let f = fixture(&moto, "svc-caller").await;
    let mut c = control(&moto, &f.service).await;
    c.settings.caller_ingress_group = Some(f.sg.clone());
    python(&[&moto.url(), "allow", &f.sg, "192.0.2.1/32", "443", "office, by hand"]).await;
    let by_hand = ("192.0.2.1/32".to_string(), 443);
    // Left by a wake from before ServerPort moved from 8443: the next wake revokes it.
    python(&[&moto.url(), "allow", &f.sg, "198.51.100.99/32", "8443", "fluidity wake 2026-01-01T00:00:00.000Z"]).await;

    wake_from(&c, "198.51.100.1").await;
    let (rules, listed) = ingress(&moto, &f.sg).await;
    assert_eq!(rules, [by_hand.clone(), ("198.51.100.1/32".into(), 443)], "A only: {listed}");
    let description = listed[1]["description"].as_str().unwrap();
    assert!(description.starts_with("fluidity wake 20") && description.ends_with('Z'), "{description}");
    wake_from(&c, "198.51.100.1").await;
    assert_eq!(ingress(&moto, &f.sg).await.0.len(), 2, "a second wake from A adds nothing");
    wake_from(&c, "2001:db8::b").await;
    let (rules, listed) = ingress(&moto, &f.sg).await;
    let cidrs: Vec<&str> = rules.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cidrs, ["192.0.2.1/32", "198.51.100.1/32", "2001:db8::b/128"], "A and B: {listed}");

    // Three more networks: four of Fluidity's entries at most, A (the oldest) goes.
    for ip in ["198.51.100.3", "198.51.100.4", "198.51.100.5"] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        wake_from(&c, ip).await;
    }
    let (rules, listed) = ingress(&moto, &f.sg).await;
    let mut cidrs: Vec<&str> = rules.iter().map(|(c, _)| c.as_str()).collect();
    cidrs.sort();
    assert_eq!(
        cidrs,
        ["192.0.2.1/32", "198.51.100.3/32", "198.51.100.4/32", "198.51.100.5/32", "2001:db8::b/128"],
        "the oldest revoked first: {listed}"
    );

    // Racing calls: admitting an admitted address, or revoking a revoked one, is no error.
    let five = "198.51.100.5".parse().unwrap();
    c.ec2.admit(&f.sg, 443, five, "2026-12-07T00:00:00.000Z").await.expect("already admitted");
    let admitted = c.ec2.caller_rules(&f.sg).await.unwrap();
    assert_eq!(admitted.len(), 4, "{admitted:?}");

    let (code, _) = call(&c, Function::Kill, "POST", "/kill").await;
    assert_eq!(code, 200);
    assert_eq!(ingress(&moto, &f.sg).await.0, std::slice::from_ref(&by_hand), "kill revokes Fluidity's entries only");
    c.ec2.revoke(&f.sg, &admitted).await.expect("already revoked");

    // Woken again, then put to sleep by the schedule: revoked again.
    wake_from(&c, "198.51.100.1").await;
    run_task(&moto, &f, true).await;
    put_activity(&moto, &f.service, 0.0, 30 * 60).await;
    let slept = lambda::handle(Function::Sleep, &c, &schedule_event()).await.unwrap();
    assert_eq!(slept["action"], "scaled to 0", "{slept}");
    assert_eq!(ingress(&moto, &f.sg).await.0, std::slice::from_ref(&by_hand), "sleep revokes them");

    // A fixed-CIDR stack (no caller group): Wake, Kill and Sleep leave the group alone.
    let fixed = control(&moto, &f.service).await;
    wake_from(&fixed, "198.51.100.9").await;
    call(&fixed, Function::Kill, "POST", "/kill").await;
    assert_eq!(ingress(&moto, &f.sg).await.0, [by_hand], "a fixed-CIDR stack's group is never touched");

    let route53 = std::fs::read_to_string(&recording).unwrap().lines().filter(|l| l.contains("/2013-04-01/")).count();
    assert_eq!(route53, 0, "no Route 53 call without a server name");
}

/// With `HostedZoneId` and `ServerDomainName`, Wake and Status point the
/// name's A record (TTL 60) at the running task's public IP, and it follows
/// the task to its new address on the next wake; Kill and Sleep park it at
/// 192.0.2.1, so it never names an address AWS took back. A zone that
/// refuses the change does not fail the wake (the agent dials the IP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_name_follows_the_task_across_wakes() {
    let moto = Moto::start().await;
    let f = fixture(&moto, "svc-named").await;
    let zone = python(&[&moto.url(), "zone", "fluidity.test"]).await["id"].as_str().unwrap().to_string();
    let mut c = control(&moto, &f.service).await;
    c.settings.dns = Some(lambda::env::ServerName { zone_id: zone.clone(), name: "tunnel.fluidity.test".into() });
    let records = || async { python(&[&moto.url(), "records", &zone]).await };

    call(&c, Function::Wake, "POST", "/wake").await;
    assert!(records().await.get("tunnel.fluidity.test").is_none(), "no address yet, no record");
    let first = run_task(&moto, &f, true).await;
    let (_, woken) = call(&c, Function::Wake, "POST", "/wake").await;
    assert_eq!(woken["status"]["public_ip"], first["public_ip"]);
    let record = &records().await["tunnel.fluidity.test"];
    assert_eq!(record["values"], json!([first["public_ip"]]), "{record}");
    assert_eq!(record["ttl"], 60);

    // The night: killed (the name parked), the task stops; the next wake starts one at another address.
    call(&c, Function::Kill, "POST", "/kill").await;
    assert_eq!(records().await["tunnel.fluidity.test"]["values"], json!(["192.0.2.1"]), "parked");
    stop_task(&moto, first["task_arn"].as_str().unwrap()).await;
    call(&c, Function::Wake, "POST", "/wake").await;
    let second = run_task(&moto, &f, true).await;
    assert_ne!(second["public_ip"], first["public_ip"]);
    let (_, status) = call(&c, Function::Status, "GET", "/status").await;
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(
        records().await["tunnel.fluidity.test"]["values"],
        json!([second["public_ip"]]),
        "status follows the task"
    );

    // Put to sleep by the schedule: parked again.
    put_activity(&moto, &f.service, 0.0, 30 * 60).await;
    let slept = lambda::handle(Function::Sleep, &c, &schedule_event()).await.unwrap();
    assert_eq!(slept["action"], "scaled to 0", "{slept}");
    assert_eq!(records().await["tunnel.fluidity.test"]["values"], json!(["192.0.2.1"]), "parked by sleep");

    // A zone Route 53 does not know: the wake still answers, with the IP.
    c.settings.dns =
        Some(lambda::env::ServerName { zone_id: "ZNOSUCHZONE".into(), name: "tunnel.fluidity.test".into() });
    let (code, woken) = call(&c, Function::Wake, "POST", "/wake").await;
    assert_eq!((code, &woken["status"]["public_ip"]), (200, &second["public_ip"]), "{woken}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_decides_from_metrics_in_the_emulator() {
    let moto = Moto::start().await;
    for (service, metrics, expect_desired, expect_action) in [
        ("svc-idle", Some((0.0, 30 * 60)), 0, "scaled to 0"),
        ("svc-busy", Some((0.0, 60)), 1, "left running"),
        // Connected but idle: connections do not keep the server up, traffic does.
        ("svc-connected", Some((1.0, 30 * 60)), 0, "scaled to 0"),
        ("svc-connected-busy", Some((2.0, 60)), 1, "left running"),
        ("svc-young", None, 1, "left running"),
    ] {
        let f = fixture(&moto, service).await;
        let c = control(&moto, service).await;
        call(&c, Function::Wake, "POST", "/wake").await;
        run_task(&moto, &f, true).await;
        if let Some((connections, ago)) = metrics {
            put_activity(&moto, service, connections, ago).await;
        }
        let outcome = lambda::handle(Function::Sleep, &c, &schedule_event()).await.unwrap();
        assert_eq!(outcome["action"], expect_action, "{service}: {outcome}");
        assert_eq!(desired(&c).await, expect_desired, "{service}: {outcome}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_waits_for_the_task_so_one_call_usually_suffices() {
    let moto = Moto::start().await;
    let f = fixture(&moto, "svc-waits").await;
    let mut c = control(&moto, "svc-waits").await;
    c.settings.wake_wait = Duration::from_secs(6);
    // "Fargate" starts the task 1.5 s after the wake.
    let starter = tokio::spawn({
        let (url, subnet, sg) = (moto.url(), f.subnet.clone(), f.sg.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            python(&[&url, "run-task", CLUSTER, "svc-waits", &subnet, &sg, "--public-ip"]).await
        }
    });
    let started = std::time::Instant::now();
    let (code, woken) = call(&c, Function::Wake, "POST", "/wake").await;
    let task = starter.await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(woken["changed"], true);
    assert_eq!(woken["status"]["state"], "running", "{woken}");
    assert_eq!(woken["status"]["public_ip"], task["public_ip"]);
    assert!(started.elapsed() < Duration::from_secs(6), "answered as soon as the task ran: {:?}", started.elapsed());

    // Nothing starts: the wait is bounded by WAKE_WAIT_SECONDS.
    let _never = fixture(&moto, "svc-never").await;
    let mut c = control(&moto, "svc-never").await;
    c.settings.wake_wait = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let (_, woken) = call(&c, Function::Wake, "POST", "/wake").await;
    assert_eq!(woken["status"]["state"], "starting", "{woken}");
    assert!((Duration::from_secs(1)..Duration::from_secs(5)).contains(&started.elapsed()), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_400_and_aws_failures_502() {
    let moto = Moto::start().await;
    fixture(&moto, "svc-errors").await;
    let c = control(&moto, "svc-errors").await;
    for event in [json!({ "hello": "world" }), json!("just text"), json!({ "httpMethod": 7 }), json!(null)] {
        let response = lambda::handle(Function::Wake, &c, &event).await.unwrap();
        assert_eq!(response["statusCode"], 400, "{event}");
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"], "BadRequest");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    let (code, body) = call(&c, Function::Wake, "GET", "/wake").await;
    assert_eq!(code, 400);
    assert!(body["message"].as_str().unwrap().contains("POST"), "{body}");
    assert!(lambda::handle(Function::Wake, &c, &schedule_event()).await.is_err());

    let missing = control(&moto, "no-such-service").await;
    let (code, body) = call(&missing, Function::Status, "GET", "/status").await;
    assert_eq!((code, body["error"].as_str()), (502, Some("ServiceNotFound")));

    moto.stop();
    let (code, body) = call(&c, Function::Wake, "POST", "/wake").await;
    assert_eq!((code, body["error"].as_str()), (502, Some("EcsError")), "{body}");
}

/// API Gateway ends a Lambda integration after 29 s and answers 504 itself
/// ("Amazon API Gateway quotas"): a call whose AWS requests hang answers
/// 504 with a reason within the function's budget instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_aws_calls_end_in_a_504_within_the_budget() {
    let moto = Moto::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            connections.push(tcp); // accepted, never answered
        }
    });
    let mut c = control(&moto, "svc-hangs").await;
    let config = moto.sdk_config().await;
    c.ecs = aws_sdk_ecs::Client::from_conf(aws_sdk_ecs::config::Builder::from(&config).endpoint_url(&hanging).build());
    c.settings.api_budget = std::time::Duration::from_millis(1500);
    for (function, method, path) in [(Function::Wake, "POST", "/wake"), (Function::Status, "GET", "/status")] {
        let started = std::time::Instant::now();
        let (code, body) = call(&c, function, method, path).await;
        assert_eq!((code, body["error"].as_str()), (504, Some("Timeout")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("within 1.5 s"), "{body}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }
    held.abort();
}

/// A Lambda Runtime API emulator: hands out queued events, records answers.
struct RuntimeApi {
    addr: std::net::SocketAddr,
    events: tokio::sync::mpsc::UnboundedSender<Value>,
    answers: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
}

async fn runtime_api() -> RuntimeApi {
    use http_body_util::{BodyExt, Full};
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let (answers_tx, answers_rx) = tokio::sync::mpsc::unbounded_channel();
    let events_rx = Arc::new(tokio::sync::Mutex::new(events_rx));
    let counter = Arc::new(Mutex::new(0u64));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (events_rx, answers_tx, counter) = (events_rx.clone(), answers_tx.clone(), counter.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (events_rx, answers_tx, counter) = (events_rx.clone(), answers_tx.clone(), counter.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        if path.ends_with("/invocation/next") {
                            let event = events_rx.lock().await.recv().await.unwrap_or(Value::Null);
                            let id = {
                                let mut n = counter.lock().unwrap();
                                *n += 1;
                                format!("req-{n}")
                            };
                            let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_millis();
                            let response = hyper::Response::builder()
                                .header("lambda-runtime-aws-request-id", &id)
                                .header("lambda-runtime-deadline-ms", deadline.to_string())
                                .header(
                                    "lambda-runtime-invoked-function-arn",
                                    "arn:aws:lambda:us-east-1:123456789012:function:fluidity-test",
                                )
                                .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000")
                                .body(Full::new(bytes::Bytes::from(event.to_string())))
                                .unwrap();
                            return Ok::<_, std::convert::Infallible>(response);
                        }
                        let kind = if path.ends_with("/response") { "response" } else { "error" };
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let _ = answers_tx.send((kind.to_string(), value));
                        Ok(hyper::Response::builder().status(202).body(Full::new(bytes::Bytes::new())).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    RuntimeApi { addr, events: events_tx, answers: answers_rx }
}

fn lambda_process(handler: &str, runtime: &RuntimeApi, moto_url: &str, service: &str) -> Proc {
    lambda_program(std::path::Path::new(bin_path("fluidity-lambda")), handler, runtime, moto_url, service)
}

fn lambda_program(
    program: &std::path::Path,
    handler: &str,
    runtime: &RuntimeApi,
    moto_url: &str,
    service: &str,
) -> Proc {
    let runtime_addr = runtime.addr.to_string();
    let env: HashMap<&str, &str> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_addr.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "fluidity-test"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("_HANDLER", handler),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_ENDPOINT_URL", moto_url),
        (fluidity::lambda::env::CLUSTER_NAME, CLUSTER),
        (fluidity::lambda::env::SERVICE_NAME, service),
        (fluidity::lambda::env::IDLE_THRESHOLD_MINUTES, "15"),
    ]
    .into_iter()
    .collect();
    let env: Vec<(&str, &str)> = env.into_iter().collect();
    spawn_program(program, &[], &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_binary_answers_under_the_runtime_api() {
    let moto = Moto::start().await;
    let f = fixture(&moto, "svc-runtime").await;

    let mut runtime = runtime_api().await;
    let wake = lambda_process("wake", &runtime, &moto.url(), &f.service);
    runtime.events.send(api_event("POST", "/wake")).unwrap();
    let (kind, answer) = tokio::time::timeout(Duration::from_secs(30), runtime.answers.recv()).await.unwrap().unwrap();
    assert_eq!(kind, "response", "{answer}");
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["changed"], true);
    runtime.events.send(json!({ "not": "an event" })).unwrap();
    let (_, answer) = tokio::time::timeout(Duration::from_secs(30), runtime.answers.recv()).await.unwrap().unwrap();
    assert_eq!(answer["statusCode"], 400);
    drop(wake);

    let mut runtime = runtime_api().await;
    let sleep = lambda_process("sleep", &runtime, &moto.url(), &f.service);
    runtime.events.send(schedule_event()).unwrap();
    let (kind, answer) = tokio::time::timeout(Duration::from_secs(30), runtime.answers.recv()).await.unwrap().unwrap();
    assert_eq!(kind, "response", "{answer}");
    // No task and no metrics: a service just woken is left running.
    assert_eq!(answer["action"], "left running", "{answer}");

    // An AWS failure in a scheduled run is an invocation error, and logged.
    moto.stop();
    runtime.events.send(schedule_event()).unwrap();
    let (kind, answer) = tokio::time::timeout(Duration::from_secs(60), runtime.answers.recv()).await.unwrap().unwrap();
    assert_eq!(kind, "error", "{answer}");
    assert_eq!(answer["errorType"], "EcsError", "{answer}");
    sleep.wait_for("AWS call failed").await;
}

/// The deployment package contract, checked on the host build: the zip made by
/// the flake's own script holds exactly `bootstrap` (0755) at its root, is
/// byte-for-byte reproducible, and, unpacked, starts under the Runtime API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_has_bootstrap_at_root_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/nix/lambda-zip.sh");
    let zip = |name: &str| {
        let out = dir.path().join(name);
        let status = std::process::Command::new("bash").arg(script).arg(bin_path("fluidity-lambda")).arg(&out).status();
        assert!(status.unwrap().success(), "lambda-zip.sh failed");
        out
    };
    let first = zip("a.zip");
    std::thread::sleep(Duration::from_millis(1100));
    let second = zip("b.zip");
    assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap(), "zip is not reproducible");

    let listing = std::process::Command::new("unzip").arg("-Z").arg(&first).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    let entries: Vec<&str> = listing.lines().filter(|l| l.starts_with('-') || l.starts_with('d')).collect();
    assert_eq!(entries.len(), 1, "{listing}");
    assert!(entries[0].starts_with("-rwxr-xr-x") && entries[0].ends_with(" bootstrap"), "{listing}");

    let unpacked = dir.path().join("task");
    let status = std::process::Command::new("unzip").arg("-q").arg(&first).arg("-d").arg(&unpacked).status();
    assert!(status.unwrap().success());

    let moto = Moto::start().await;
    let f = fixture(&moto, "svc-zip").await;
    let mut runtime = runtime_api().await;
    let _status = lambda_program(&unpacked.join("bootstrap"), "bootstrap.status", &runtime, &moto.url(), &f.service);
    runtime.events.send(api_event("GET", "/status")).unwrap();
    let (kind, answer) = tokio::time::timeout(Duration::from_secs(30), runtime.answers.recv()).await.unwrap().unwrap();
    assert_eq!((kind.as_str(), answer["statusCode"].as_u64()), ("response", Some(200)), "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["state"], "stopped", "{body}");
}
