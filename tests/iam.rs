//! Every AWS call the code really makes, judged against the role policies of
//! the templates by an IAM evaluator of ours (tests/iam_eval.py, with its own
//! tests). moto enforces no IAM, so without this a policy AWS would refuse
//! passes every other test.
//!
//! The stacks are created in moto from the real templates; moto records each
//! request (tests/moto_launcher.py --record). Each component signs with its
//! own access key id: the four Lambda functions (their real handlers) and the
//! server's CloudWatch emitter (the real server). tests/iam_check.py turns
//! each recorded request into the action, resource ARN and context keys AWS
//! authorises it against and evaluates it against that component's role.
//!
//! Not covered: the deploy tool, which runs with the user's own credentials
//! (no template role), and the execution role's image pull and log writes,
//! which ECS makes, not our code.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use fluidity::lambda::control::Control;
use fluidity::lambda::env::Settings;
use fluidity::lambda::{self, Function};
use serde_json::Value;

/// Access key id → the role's logical id in the templates.
const PRINCIPALS: [(&str, &str); 5] = [
    ("fluidity-wake", "WakeRole"),
    ("fluidity-status", "StatusRole"),
    ("fluidity-sleep", "SleepRole"),
    ("fluidity-kill", "KillRole"),
    ("fluidity-server", "TaskRole"),
];

async fn python(args: &[&str]) -> Value {
    let output = tokio::process::Command::new("python3").args(args).output().await.unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The stack's security group (in `caller` mode) and server name.
struct Scope {
    group: String,
    zone: String,
}

async fn control_as(moto: &Moto, key: &str, scope: &Scope) -> Control {
    let config = moto.sdk_config_as(key).await;
    Control {
        ecs: aws_sdk_ecs::Client::new(&config),
        cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
        ec2: lambda::ec2::Ec2::from_sdk_config(&config).unwrap(),
        route53: lambda::route53::Route53::from_sdk_config(&config).unwrap(),
        settings: Settings {
            cluster: "fluidity-dev".into(),
            service: "fluidity-server-dev".into(),
            idle_threshold: Duration::from_secs(15 * 60),
            namespace: "Fluidity".into(),
            wake_wait: Duration::ZERO,
            api_budget: fluidity::lambda::env::API_BUDGET,
            server_port: 443,
            caller_ingress_group: Some(scope.group.clone()),
            dns: Some(lambda::env::ServerName { zone_id: scope.zone.clone(), name: "dev.fluidity.test".into() }),
        },
    }
}

/// Old activity and no connections, as an idle server reports them: the
/// sleep function then scales the service down (UpdateService is recorded).
async fn put_idle_metrics(moto: &Moto) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let client = aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await);
    let dims = vec![
        Dimension::builder().name("ServiceName").value("fluidity-server-dev").build(),
        Dimension::builder().name("ClusterName").value("fluidity-dev").build(),
    ];
    let at = aws_sdk_cloudwatch::primitives::DateTime::from_secs(now_secs() as i64 - 60);
    let datum = |name: &str, value: f64| {
        MetricDatum::builder().metric_name(name).set_dimensions(Some(dims.clone())).value(value).timestamp(at).build()
    };
    client
        .put_metric_data()
        .namespace("Fluidity")
        .metric_data(datum("ActiveConnections", 0.0))
        .metric_data(datum("LastActivityEpochSeconds", (now_secs() - 40 * 60) as f64))
        .send()
        .await
        .unwrap();
}

/// The real server, emitting its metrics as the task role would.
async fn run_server_emitter(moto: &Moto) {
    let pki = Pki::new();
    let args = fluidity::server::ServerArgs {
        listen: Some("127.0.0.1:0".into()),
        tls: pki.tls_args("server"),
        emit_metrics: Some(true),
        metrics_interval: Some("300ms".into()),
        metrics_namespace: Some("Fluidity".into()),
        service_name: Some("fluidity-server-dev".into()),
        cluster_name: Some("fluidity-dev".into()),
        metrics_endpoint_url: Some(moto.url()),
        ..Default::default()
    };
    let config = fluidity::server::ServerConfig::from_parts(&args, Default::default()).unwrap();
    // Signed with the access key that names the role in the recording.
    let client =
        fluidity::server::cloudwatch::CloudWatch::with_keys(&moto.url(), "us-east-1", "fluidity-server", "test");
    let server = fluidity::server::Server::bind(config).await.unwrap().with_cloudwatch_client(client.unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aws_call_the_code_makes_is_allowed_by_its_role_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("recording.jsonl");
    let moto = Moto::start_recording(&recording).await;
    let stacks =
        python(&[concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cfn_stacks.py"), &moto.url(), "create", "dev"]).await;
    let fargate = &stacks["stacks"]["fluidity-dev-fargate"];
    let roles: BTreeMap<&str, &str> = PRINCIPALS
        .iter()
        .map(|(key, logical)| (*key, stacks["roles"][*logical].as_str().unwrap_or_else(|| panic!("no {logical}"))))
        .collect();

    // The functions, through their real handlers, each with its own key,
    // in `caller` mode and with a server name (the stacks' parameters).
    let group = fargate["CallerIngressGroup"].as_str().unwrap();
    assert!(group.starts_with("sg-"), "caller mode: {fargate}");
    let scope = Scope { group: group.into(), zone: stacks["zone"].as_str().unwrap().into() };
    let (wake, status, sleep, kill) = (
        control_as(&moto, "fluidity-wake", &scope).await,
        control_as(&moto, "fluidity-status", &scope).await,
        control_as(&moto, "fluidity-sleep", &scope).await,
        control_as(&moto, "fluidity-kill", &scope).await,
    );
    let api = |f, c, m, p| async move { lambda::handle(f, c, &control::api_event(m, p)).await.unwrap() };
    assert_eq!(api(Function::Wake, &wake, "POST", "/wake").await["statusCode"], 200);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws_fixture.py");
    let (subnet, sg) = (stacks["subnet"].as_str().unwrap(), fargate["SecurityGroupId"].as_str().unwrap());
    let args = [fixture, &moto.url(), "run-task", "fluidity-dev", "fluidity-server-dev", subnet, sg, "--public-ip"];
    let task = python(&args).await;
    assert!(task["public_ip"].is_string(), "{task}");
    for (f, c, m, p) in [(Function::Wake, &wake, "POST", "/wake"), (Function::Status, &status, "GET", "/status")] {
        let answer = api(f, c, m, p).await;
        assert_eq!(answer["statusCode"], 200, "{answer}");
        assert!(answer["body"].as_str().unwrap().contains(task["public_ip"].as_str().unwrap()), "{answer}");
    }
    put_idle_metrics(&moto).await;
    let slept = lambda::handle(Function::Sleep, &sleep, &control::schedule_event()).await.unwrap();
    assert_eq!(slept["action"], "scaled to 0", "the idle server is put to sleep: {slept}");
    // Woken again (admitting the caller again), so that Kill has a task and an address to revoke.
    assert_eq!(api(Function::Wake, &wake, "POST", "/wake").await["statusCode"], 200);
    assert_eq!(api(Function::Kill, &kill, "POST", "/kill").await["statusCode"], 200);
    run_server_emitter(&moto).await;

    let roles_file = dir.path().join("roles.json");
    std::fs::write(&roles_file, serde_json::to_vec(&roles).unwrap()).unwrap();
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/iam_check.py");
    let (recorded, roles_path) = (recording.to_str().unwrap(), roles_file.to_str().unwrap());
    let report =
        python(&[check, &moto.url(), recorded, roles_path, &scope.group, &scope.zone, "dev.fluidity.test"]).await;

    // Every recorded call is allowed.
    assert!(report["denied"].as_array().unwrap().is_empty(), "denied: {:#}", report["denied"]);
    // ...and the ones signed by hand (the server's PutMetricData, the
    // Lambda's EC2 call) are what AWS's models accept, with signatures
    // botocore's signer computes the same.
    let (checked, signatures, problems) = model_check(&recording);
    assert!(problems.is_empty(), "requests AWS would refuse: {problems:#?}");
    assert!(signatures >= 2, "signatures recomputed: {signatures}");
    for operation in [
        "cloudwatch.PutMetricData",
        "ec2.DescribeNetworkInterfaces",
        "ec2.DescribeSecurityGroups",
        "ec2.AuthorizeSecurityGroupIngress",
        "ec2.RevokeSecurityGroupIngress",
        "ec2.UpdateSecurityGroupRuleDescriptionsIngress",
        "route53.ChangeResourceRecordSets",
    ] {
        assert!(checked[operation].as_u64().unwrap_or(0) > 0, "{operation} not checked: {checked}");
    }
    // ...and the recording holds what each component must do (so the check is not vacuous).
    let actions = |key: &str| -> Vec<String> {
        report["actions"][key]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let expect = [
        (
            "fluidity-wake",
            &[
                "ecs:DescribeServices",
                "ecs:UpdateService",
                "ecs:ListTasks",
                "ecs:DescribeTasks",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSecurityGroups",
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
                "route53:ChangeResourceRecordSets",
            ][..],
        ),
        (
            "fluidity-status",
            &[
                "ecs:DescribeServices",
                "ecs:ListTasks",
                "ecs:DescribeTasks",
                "ec2:DescribeNetworkInterfaces",
                "route53:ChangeResourceRecordSets",
            ],
        ),
        (
            "fluidity-sleep",
            &[
                "ecs:DescribeServices",
                "ecs:ListTasks",
                "ecs:DescribeTasks",
                "cloudwatch:GetMetricData",
                "ecs:UpdateService",
                "ec2:RevokeSecurityGroupIngress",
                "route53:ChangeResourceRecordSets",
            ],
        ),
        (
            "fluidity-kill",
            &[
                "ecs:DescribeServices",
                "ecs:UpdateService",
                "ecs:ListTasks",
                "ec2:DescribeSecurityGroups",
                "ec2:RevokeSecurityGroupIngress",
                "route53:ChangeResourceRecordSets",
            ],
        ),
        ("fluidity-server", &["cloudwatch:PutMetricData"]),
    ];
    for (key, wanted) in expect {
        for action in wanted {
            assert!(actions(key).contains(&action.to_string()), "{key} never called {action}: {:?}", actions(key));
        }
    }
    // Each role is refused what it must not do.
    let forbidden = report["forbidden"].as_array().unwrap();
    assert!(forbidden.len() >= 22, "{forbidden:?}");
    for case in forbidden {
        assert_ne!(case["decision"], "Allow", "{case}");
    }
    // The ListTasks statement as it was (scoped to container-instance/*) is
    // refused for the very calls the functions make: the check catches it.
    let old = report["old_list_tasks"].as_array().unwrap();
    assert!(!old.is_empty() && old.iter().all(|d| d == "ImplicitDeny"), "{old:?}");
}

/// The evaluator's own tests (wildcards, NotAction, NotResource, each
/// condition operator the templates use, explicit deny, IfExists…).
#[test]
fn the_iam_evaluator_passes_its_own_tests() {
    let output = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/iam_eval_test.py"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && text.contains("OK"), "{text}");
}
