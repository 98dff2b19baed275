//! Helpers for the Lambda control plane against moto: the ECS fixture made by
//! tests/aws_fixture.py, SDK-backed `Control`s, API Gateway and EventBridge events.

use std::time::Duration;

use fluidity::lambda;
use fluidity::lambda::control::Control;
use fluidity::lambda::env::Settings;
use serde_json::{Value, json};

use super::Moto;

pub const CLUSTER: &str = "fluidity-test";

pub struct Fixture {
    pub subnet: String,
    pub sg: String,
    pub service: String,
}

pub async fn python(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws_fixture.py");
    let output = tokio::process::Command::new("python3").arg(script).args(args).output().await.unwrap();
    assert!(output.status.success(), "aws_fixture {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

pub async fn fixture(moto: &Moto, service: &str) -> Fixture {
    let out = python(&[&moto.url(), "setup", CLUSTER, service]).await;
    Fixture {
        subnet: out["subnet"].as_str().unwrap().into(),
        sg: out["sg"].as_str().unwrap().into(),
        service: service.into(),
    }
}

pub async fn run_task(moto: &Moto, f: &Fixture, public_ip: bool) -> Value {
    run_task_with(moto, f, public_ip.then_some("--public-ip")).await
}

/// Starts a task of the service whose network interface has the public IP `ip`
/// (an Elastic IP allocated at that address, e.g. 127.0.0.1 for a local server).
pub async fn run_task_at(moto: &Moto, f: &Fixture, ip: &str) -> Value {
    run_task_with(moto, f, Some(&format!("--public-ip={ip}"))).await
}

/// Stops a task (the service's task going away, as when Fargate replaces it).
pub async fn stop_task(moto: &Moto, task_arn: &str) {
    python(&[&moto.url(), "stop-task", CLUSTER, task_arn]).await;
}

async fn run_task_with(moto: &Moto, f: &Fixture, public_ip: Option<&str>) -> Value {
    let mut args =
        vec![moto.url(), "run-task".into(), CLUSTER.into(), f.service.clone(), f.subnet.clone(), f.sg.clone()];
    args.extend(public_ip.map(str::to_string));
    python(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

pub async fn control(moto: &Moto, service: &str) -> Control {
    let config = moto.sdk_config().await;
    Control {
        ecs: aws_sdk_ecs::Client::new(&config),
        cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
        ec2: lambda::ec2::Ec2::from_sdk_config(&config).unwrap(),
        route53: lambda::route53::Route53::from_sdk_config(&config).unwrap(),
        settings: Settings {
            cluster: CLUSTER.into(),
            service: service.into(),
            idle_threshold: Duration::from_secs(15 * 60),
            namespace: "Fluidity".into(),
            wake_wait: Duration::ZERO,
            api_budget: lambda::env::API_BUDGET,
            server_port: 443,
            caller_ingress_group: None,
            dns: None,
        },
    }
}

pub fn api_event(method: &str, path: &str) -> Value {
    api_event_from(method, path, "198.51.100.7")
}

/// An API Gateway event from the client at `source_ip` (`requestContext.identity.sourceIp`).
pub fn api_event_from(method: &str, path: &str, source_ip: &str) -> Value {
    json!({
        "resource": path, "path": path, "httpMethod": method,
        "headers": { "x-api-key": "redacted" }, "multiValueHeaders": {},
        "queryStringParameters": null, "pathParameters": null, "stageVariables": null,
        "requestContext": { "resourcePath": path, "httpMethod": method, "stage": "prod", "requestId": "r-1", "accountId": "123456789012",
                            "identity": { "sourceIp": source_ip } },
        "body": null, "isBase64Encoded": false
    })
}

pub fn schedule_event() -> Value {
    json!({ "version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-22T23:00:00Z", "region": "us-east-1", "resources": [], "detail": {} })
}

pub async fn desired(control: &Control) -> i32 {
    let out =
        control.ecs.describe_services().cluster(CLUSTER).services(&control.settings.service).send().await.unwrap();
    out.services()[0].desired_count()
}
