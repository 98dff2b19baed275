//! The CloudFormation templates: cfn-lint clean, a policy check over IAM,
//! outputs and ingress (itself tested on broken copies), the Lambda
//! environment names against the code's single list, parameter files and the
//! stack policy against the templates, and both stacks created, updated and
//! deleted in the local AWS emulator.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::Moto;
use serde_json::{Value, json};

const TEMPLATES: [&str; 3] = ["fargate.yaml", "lambda.yaml", "apigateway-account.yaml"];

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/cloudformation"))
}

/// YAML to JSON, with short-form tags turned into their long form
/// (`!Ref X` → `{"Ref": "X"}`, `!Sub s` → `{"Fn::Sub": s}`).
fn plain(yaml: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => serde_json::to_value(n).unwrap(),
        Y::String(s) => json!(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(plain).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}")), plain(v)))
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let name = tagged.tag.to_string();
            let name = name.trim_start_matches('!');
            let key = if name == "Ref" { "Ref".to_string() } else { format!("Fn::{name}") };
            let mut inner = plain(tagged.value);
            if let (true, Some(text)) = (key == "Fn::GetAtt", inner.as_str()) {
                inner = json!(text.splitn(2, '.').collect::<Vec<_>>());
            }
            json!({ key: inner })
        }
    }
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    plain(serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn resources(template: &Value) -> impl Iterator<Item = (&String, &Value)> {
    template["Resources"].as_object().unwrap().iter()
}

/// A list property's items, with `Fn::If` items (and whole `Fn::If`
/// lists) expanded to both branches and `AWS::NoValue` dropped, so a
/// conditional policy or rule is checked like any other.
fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().flat_map(branches).collect(),
        Value::Null => vec![],
        other => branches(other),
    }
}

fn branches(value: &Value) -> Vec<&Value> {
    match value.get("Fn::If").and_then(Value::as_array).map(Vec::as_slice) {
        Some([_, then, otherwise]) => as_list(then).into_iter().chain(as_list(otherwise)).collect(),
        _ if *value == json!({ "Ref": "AWS::NoValue" }) => vec![],
        _ => vec![value],
    }
}

/// Actions AWS authorises against `Resource: "*"` as we call them, so a
/// scoped resource would deny them; each such statement must still carry a
/// condition. The first four have no resource type at all (Service
/// Authorization Reference). `ecs:ListTasks` lists `container-instance` as its
/// type, but a call without a container instance (always, on Fargate) is
/// authorised against "*" with the `ecs:cluster` key, as AWS's own example
/// grants it ("Amazon ECS identity-based policy examples", List and describe
/// task examples: `"Resource": ["*"]` with `ArnEquals` on `ecs:cluster`).
const STAR_ONLY: [&str; 6] = [
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "cloudwatch:GetMetricData",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ecs:ListTasks",
];

/// The one AWS managed policy a role may carry: the region's API Gateway
/// logging role serves every API of the region, and AWS prescribes this
/// policy for it ("Set up CloudWatch logging for REST APIs").
const MANAGED_POLICY_ALLOWED: &str =
    "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs";

/// Everything the policy check finds wrong in a template.
fn policy_violations(template: &Value) -> Vec<String> {
    let mut found = vec![];
    for (id, resource) in resources(template) {
        let props = &resource["Properties"];
        let documents: Vec<&Value> = match resource["Type"].as_str() {
            Some("AWS::IAM::Role") => as_list(&props["Policies"]).into_iter().map(|p| &p["PolicyDocument"]).collect(),
            Some("AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy") => vec![&props["PolicyDocument"]],
            _ => vec![],
        };
        for statement in documents.into_iter().flat_map(|d| as_list(&d["Statement"])) {
            found.extend(statement_violations(id, statement));
        }
        if resource["Type"] == "AWS::IAM::Role" {
            for arn in as_list(&props["ManagedPolicyArns"]) {
                if *arn != json!({ "Fn::Sub": MANAGED_POLICY_ALLOWED }) {
                    found.push(format!("{id}: managed policy {arn} (only {MANAGED_POLICY_ALLOWED} is accepted)"));
                }
            }
            for statement in as_list(&props["AssumeRolePolicyDocument"]["Statement"]) {
                if statement["Principal"] == "*" || statement["Principal"]["AWS"] == "*" {
                    found.push(format!("{id}: anyone may assume the role"));
                }
            }
        }
        found.extend(ingress_violations(id, resource));
    }
    found.extend(output_violations(template));
    found
}

fn statement_violations(id: &str, statement: &Value) -> Vec<String> {
    let mut found = vec![];
    if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
        found.push(format!("{id}: NotAction/NotResource grants too much"));
    }
    if statement["Effect"] != "Allow" {
        return found;
    }
    let actions: Vec<&str> = as_list(&statement["Action"]).into_iter().filter_map(Value::as_str).collect();
    for action in &actions {
        if action.contains('*') {
            found.push(format!("{id}: wildcard action {action}"));
        }
    }
    let star = as_list(&statement["Resource"]).iter().any(|r| r.as_str().is_some_and(|r| r == "*"));
    if actions.iter().any(|a| STAR_ONLY.contains(a)) && !star {
        found.push(format!(
            "{id}: {actions:?} must be granted on \"*\" (AWS authorises them there), not {}",
            statement["Resource"]
        ));
    }
    if star {
        let required = actions.iter().all(|a| STAR_ONLY.contains(a));
        if !required {
            found.push(format!("{id}: Resource \"*\" for {actions:?}, which can be scoped"));
        } else if statement.get("Condition").is_none() {
            found.push(format!("{id}: Resource \"*\" for {actions:?} without a condition"));
        }
    }
    found
}

fn ingress_violations(id: &str, resource: &Value) -> Vec<String> {
    let rules = match resource["Type"].as_str() {
        Some("AWS::EC2::SecurityGroup") => as_list(&resource["Properties"]["SecurityGroupIngress"]),
        Some("AWS::EC2::SecurityGroupIngress") => vec![&resource["Properties"]],
        _ => return vec![],
    };
    let allowed = json!({ "Ref": "AllowedIngressCidr" });
    let server_port = json!({ "Ref": "ServerPort" });
    rules
        .into_iter()
        .filter(|rule| {
            !(rule["IpProtocol"] == "tcp"
                && rule["FromPort"] == server_port
                && rule["ToPort"] == server_port
                && rule["CidrIp"] == allowed
                && ["CidrIpv6", "SourceSecurityGroupId", "SourcePrefixListId"].iter().all(|k| rule.get(*k).is_none()))
        })
        .map(|rule| format!("{id}: ingress other than tcp ServerPort from AllowedIngressCidr: {rule}"))
        .collect()
}

fn output_violations(template: &Value) -> Vec<String> {
    let secret_types = ["AWS::IAM::AccessKey", "AWS::SecretsManager::Secret", "AWS::SSM::Parameter"];
    let secret_attributes = ["SecretAccessKey", "SecretString", "Value"];
    let no_echo: BTreeSet<&str> = template["Parameters"]
        .as_object()
        .map(|p| p.iter().filter(|(_, v)| v["NoEcho"] == true || v["NoEcho"] == "true").map(|(k, _)| k.as_str()))
        .into_iter()
        .flatten()
        .collect();
    let type_of = |name: &str| template["Resources"][name]["Type"].as_str().unwrap_or_default().to_string();
    let mut found = vec![];
    for (name, output) in template["Outputs"].as_object().into_iter().flatten() {
        let lower = name.to_ascii_lowercase();
        let named_secret =
            ["secret", "password", "token", "credential", "privatekey", "accesskey"].iter().any(|w| lower.contains(w))
                || (lower.contains("apikey") && !lower.ends_with("id"));
        if named_secret {
            found.push(format!("output {name}: its name says it holds a secret"));
        }
        let text = output["Value"].to_string();
        let mut refs = vec![];
        collect_refs(&output["Value"], &mut refs);
        for (target, attribute) in refs {
            let kind = type_of(&target);
            if no_echo.contains(target.as_str())
                || secret_types.contains(&kind.as_str())
                || attribute.is_some_and(|a| secret_attributes.contains(&a.as_str()))
            {
                found.push(format!("output {name}: {text} can hold a secret"));
            }
        }
    }
    found
}

/// Every `Ref` and `GetAtt` target (with its attribute) and `${X}` in a `Sub`.
fn collect_refs(value: &Value, out: &mut Vec<(String, Option<String>)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("Ref") {
                out.push((target.clone(), None));
            }
            if let Some(Value::Array(parts)) = map.get("Fn::GetAtt") {
                let part = |i: usize| parts.get(i).and_then(Value::as_str).map(str::to_string);
                out.push((part(0).unwrap_or_default(), part(1)));
            }
            if let Some(text) = map.get("Fn::Sub").and_then(|s| s.as_str().or_else(|| s[0].as_str())) {
                for piece in text.split("${").skip(1) {
                    let inner = piece.split('}').next().unwrap_or_default();
                    let (target, attribute) = inner.split_once('.').unwrap_or((inner, ""));
                    out.push((target.to_string(), (!attribute.is_empty()).then(|| attribute.to_string())));
                }
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn cfn_lint_reports_nothing() {
    let output = std::process::Command::new("cfn-lint")
        .args(TEMPLATES.map(|t| dir().join(t)))
        .output()
        .expect("cfn-lint is installed by tests/setup.sh");
    let report = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && report.trim().is_empty(), "cfn-lint:\n{report}");
}

#[test]
fn templates_pass_the_policy_check() {
    for name in TEMPLATES {
        let violations = policy_violations(&load(name));
        assert!(violations.is_empty(), "{name}:\n{}", violations.join("\n"));
    }
}

#[test]
fn policy_check_catches_each_kind_of_fault() {
    let fargate = load("fargate.yaml");
    let lambda = load("lambda.yaml");
    let list_tasks = "/Resources/StatusRole/Properties/Policies/0/PolicyDocument/Statement/1";
    assert_eq!(lambda.pointer(list_tasks).unwrap()["Action"], "ecs:ListTasks", "the pointer finds the statement");
    let mut broken = lambda.clone();
    broken.pointer_mut(list_tasks).unwrap()["Resource"] = json!({ "Fn::Sub":
        "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:container-instance/*" });
    let violations = policy_violations(&broken);
    assert!(
        violations.iter().any(|v| v.contains("must be granted on")),
        "ListTasks on container-instance: {violations:?}"
    );
    let task_policy = "/Resources/TaskRole/Properties/Policies/0/PolicyDocument/Statement/0";
    type Breakage = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Breakage, &str)> = vec![
        (
            "star resource for a scopable action",
            Box::new(|t| t.pointer_mut(task_policy).unwrap()["Action"] = json!("ecs:UpdateService")),
            "can be scoped",
        ),
        (
            "star resource without condition",
            Box::new(|t| {
                t.pointer_mut(task_policy).unwrap().as_object_mut().unwrap().remove("Condition");
            }),
            "without a condition",
        ),
        (
            "wildcard action",
            Box::new(|t| t.pointer_mut(task_policy).unwrap()["Action"] = json!("cloudwatch:*")),
            "wildcard action",
        ),
        (
            "ssh from anywhere",
            Box::new(|t| {
                t.pointer_mut("/Resources/SecurityGroup/Properties/SecurityGroupIngress/Fn::If/1")
                    .unwrap()
                    .as_array_mut()
                    .unwrap()
                    .push(json!({ "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "0.0.0.0/0" }))
            }),
            "ingress other than",
        ),
        (
            "the server port from the world",
            Box::new(|t| {
                t.pointer_mut("/Resources/SecurityGroup/Properties/SecurityGroupIngress/Fn::If/1/0").unwrap()["CidrIp"] =
                    json!("0.0.0.0/0")
            }),
            "ingress other than",
        ),
        (
            "a fixed port instead of ServerPort",
            Box::new(|t| {
                t.pointer_mut("/Resources/SecurityGroup/Properties/SecurityGroupIngress/Fn::If/1/0").unwrap()["FromPort"] =
                    json!(8443)
            }),
            "ingress other than",
        ),
        (
            "access key secret in an output",
            Box::new(|t| {
                t["Resources"]["Key"] = json!({ "Type": "AWS::IAM::AccessKey", "Properties": { "UserName": "u" } });
                t["Outputs"]["Deployer"] = json!({ "Value": { "Fn::GetAtt": ["Key", "SecretAccessKey"] } });
            }),
            "can hold a secret",
        ),
        (
            "output named like a secret",
            Box::new(|t| t["Outputs"]["ApiKeyValue"] = json!({ "Value": "x" })),
            "holds a secret",
        ),
    ];
    for (what, break_it, expect) in cases {
        let mut broken = fargate.clone();
        break_it(&mut broken);
        let violations = policy_violations(&broken);
        assert!(violations.iter().any(|v| v.contains(expect)), "{what}: not caught: {violations:?}");
    }
}

/// Port 443 as a non-root user: the task sets the namespaced sysctl
/// `net.ipv4.ip_unprivileged_port_start` to ServerPort ("SystemControl",
/// Amazon ECS API Reference: every namespaced net.* sysctl is supported on
/// Fargate platform 1.4.0 and later), runs as 65532, and its port mapping,
/// listen address, security group and outputs all follow ServerPort.
#[test]
fn the_server_listens_on_server_port_as_a_non_root_user() {
    let template = load("fargate.yaml");
    let port = json!({ "Ref": "ServerPort" });
    assert_eq!(template["Parameters"]["ServerPort"]["Default"], 443);
    let container = &template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    let user = container["User"].as_str().expect("the container names its user");
    assert!(user.split(':').all(|id| id.parse::<u32>().is_ok_and(|id| id != 0)), "non-root: {user}");
    assert_eq!(user, "65532:65532", "the image's unprivileged user");
    assert_eq!(
        container["SystemControls"],
        json!([{ "Namespace": "net.ipv4.ip_unprivileged_port_start", "Value": port }]),
        "ports from ServerPort up are unprivileged in the task's namespace"
    );
    assert_eq!(container["PortMappings"], json!([{ "ContainerPort": port, "Protocol": "tcp" }]));
    let listen = as_list(&container["Environment"]).into_iter().find(|e| e["Name"] == "FLUIDITY_LISTEN").cloned();
    assert_eq!(listen, Some(json!({ "Name": "FLUIDITY_LISTEN", "Value": { "Fn::Sub": "0.0.0.0:${ServerPort}" } })));
    let rules = as_list(&template["Resources"]["SecurityGroup"]["Properties"]["SecurityGroupIngress"]);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!((&rules[0]["FromPort"], &rules[0]["ToPort"]), (&port, &port));
    assert_eq!(template["Outputs"]["ServerPort"]["Value"], port);
}

/// `caller` (the default) leaves no fixed rule in the group: the Wake
/// function adds the waking address, and only it may (an export names the
/// group, `none` with a fixed CIDR, and the functions' roles may change only
/// that group).
#[test]
fn caller_mode_has_no_fixed_ingress_and_the_functions_may_change_only_that_group() {
    let template = load("fargate.yaml");
    assert_eq!(template["Parameters"]["AllowedIngressCidr"]["Default"], "caller");
    let pattern = regex_lite_match(template["Parameters"]["AllowedIngressCidr"]["AllowedPattern"].as_str().unwrap());
    assert!(pattern("caller") && pattern("203.0.113.7/32") && !pattern("anyone") && !pattern("0.0.0.0"));
    assert_eq!(
        template["Conditions"]["FixedIngress"],
        json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "AllowedIngressCidr" }, "caller"] }] })
    );
    let ingress = &template["Resources"]["SecurityGroup"]["Properties"]["SecurityGroupIngress"]["Fn::If"];
    assert_eq!((&ingress[0], &ingress[2]), (&json!("FixedIngress"), &json!({ "Ref": "AWS::NoValue" })));
    assert_eq!(
        template["Outputs"]["CallerIngressGroup"]["Value"],
        json!({ "Fn::If": ["FixedIngress", "none", { "Ref": "SecurityGroup" }] })
    );
    let lambda = load("lambda.yaml");
    let group_arn =
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:security-group/${ServerSecurityGroupId}";
    for (role, actions) in [
        (
            "WakeRole",
            vec![
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
                "ec2:RevokeSecurityGroupIngress",
            ],
        ),
        ("SleepRole", vec!["ec2:RevokeSecurityGroupIngress"]),
        ("KillRole", vec!["ec2:RevokeSecurityGroupIngress"]),
    ] {
        let statements =
            as_list(&lambda["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]);
        let changes: Vec<&&Value> = statements
            .iter()
            .filter(|s| as_list(&s["Action"]).iter().any(|a| a.as_str().unwrap().contains("SecurityGroupIngress")))
            .collect();
        assert_eq!(changes.len(), 1, "{role}: {changes:?}");
        let granted: Vec<&str> = as_list(&changes[0]["Action"]).iter().filter_map(|a| a.as_str()).collect();
        assert_eq!(granted, actions, "{role}");
        let resources = as_list(&changes[0]["Resource"]);
        assert_eq!(resources[0], &json!({ "Fn::Sub": group_arn }), "{role}: the server's group only");
    }
    // Granted only in caller mode, which the Lambda stack reads from its own
    // parameters (the same values as the Fargate stack's, and its group's
    // id: an export could not change while imported, nor the group be replaced).
    assert_eq!(
        lambda["Conditions"]["CallerIngress"],
        json!({ "Fn::And": [
            { "Fn::Equals": [{ "Ref": "AllowedIngressCidr" }, "caller"] },
            { "Fn::Not": [{ "Fn::Equals": [{ "Ref": "ServerSecurityGroupId" }, ""] }] },
        ] })
    );
    assert!(template["Outputs"]["SecurityGroupId"].get("Export").is_none(), "the group may be replaced");
    let description = &template["Resources"]["SecurityGroup"]["Properties"]["GroupDescription"];
    assert_eq!(description, "Fluidity server, 8443 from the allowed CIDR only", "a new description replaces the group");
    let wake = &lambda["Resources"]["WakeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    let guarded = wake.as_array().unwrap().iter().filter(|s| s["Fn::If"][0] == "CallerIngress").count();
    assert_eq!(guarded, 2, "describe and change, both only in caller mode");
    assert!(!fargate_exports_change_with(&template, &["ServerPort", "AllowedIngressCidr"]));
    let status =
        as_list(&lambda["Resources"]["StatusRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]);
    assert!(!status.iter().any(|s| s.to_string().contains("SecurityGroupIngress")), "status never changes the group");
}

/// Whether an export's value depends on one of `parameters` (CloudFormation
/// refuses to update an export that another stack imports).
fn fargate_exports_change_with(template: &Value, parameters: &[&str]) -> bool {
    let outputs = template["Outputs"].as_object().unwrap();
    outputs.values().filter(|o| o.get("Export").is_some()).any(|o| {
        let text = o["Value"].to_string();
        parameters.iter().any(|p| text.contains(&format!("\"Ref\":\"{p}\""))) || text.contains("FixedIngress")
    })
}

/// The optional name: Route 53 changes on that zone only, for that one name,
/// A records and UPSERT ("Using IAM policy conditions for fine-grained access
/// control to manage resource record sets", Route 53 Developer Guide); none
/// at all without the parameters.
#[test]
fn the_server_name_may_be_changed_and_nothing_else_in_the_zone() {
    let lambda = load("lambda.yaml");
    assert_eq!(lambda["Parameters"]["HostedZoneId"]["Default"], "");
    assert_eq!(lambda["Parameters"]["ServerDomainName"]["Default"], "");
    // Wake and Status point it at the task, Sleep and Kill park it.
    for role in ["WakeRole", "StatusRole", "SleepRole", "KillRole"] {
        let statements = &lambda["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
        let conditional: Vec<&Value> = statements
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s.get("Fn::If").is_some_and(|f| f[1]["Action"] == "route53:ChangeResourceRecordSets"))
            .collect();
        assert_eq!(conditional.len(), 1, "{role}");
        let [condition, grant, otherwise] = conditional[0]["Fn::If"].as_array().unwrap().as_slice() else { panic!() };
        assert_eq!((condition, otherwise), (&json!("HasServerName"), &json!({ "Ref": "AWS::NoValue" })));
        assert_eq!(
            grant["Resource"],
            json!({ "Fn::Sub": "arn:${AWS::Partition}:route53:::hostedzone/${HostedZoneId}" })
        );
        let only = &grant["Condition"]["ForAllValues:StringEquals"];
        assert_eq!(
            only["route53:ChangeResourceRecordSetsNormalizedRecordNames"],
            json!([{ "Ref": "ServerDomainName" }])
        );
        assert_eq!(only["route53:ChangeResourceRecordSetsRecordTypes"], json!(["A"]));
        assert_eq!(only["route53:ChangeResourceRecordSetsActions"], json!(["UPSERT"]));
    }
}

#[test]
fn lambda_environment_is_exactly_what_the_code_reads() {
    let template = load("lambda.yaml");
    let wanted: BTreeSet<&str> = fluidity::lambda::env::ALL.into_iter().collect();
    let mut functions = 0;
    for (id, resource) in resources(&template).filter(|(_, r)| r["Type"] == "AWS::Lambda::Function") {
        functions += 1;
        let props = &resource["Properties"];
        let set: BTreeSet<&str> =
            props["Environment"]["Variables"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(set, wanted, "{id}: environment variables differ from src/lambda/env.rs");
        let handler = props["Handler"].as_str().unwrap();
        assert!(fluidity::lambda::Function::from_handler(handler).is_some(), "{id}: unknown handler {handler}");
        assert_eq!(props["Architectures"], json!(["arm64"]), "{id}");
        assert_eq!(props["Runtime"], "provided.al2023", "{id}");
    }
    assert_eq!(functions, 4, "wake, status, sleep and kill");
    // Wake waits up to WakeWaitSeconds for the task: its timeout must allow it.
    let parameters = &template["Parameters"];
    let (wait_max, timeout_min) =
        (parameters["WakeWaitSeconds"]["MaxValue"].as_i64(), parameters["FunctionTimeout"]["MinValue"].as_i64());
    assert_eq!(wait_max, Some(fluidity::lambda::env::MAX_WAKE_WAIT_SECONDS as i64));
    assert!(timeout_min >= wait_max.map(|w| w + 5), "FunctionTimeout {timeout_min:?} vs WakeWaitSeconds {wait_max:?}");
    // The shortest idle window still covers a metrics interval and the
    // datapoint's delay: a busy server is never judged by a missing datapoint.
    use fluidity::protocol::metrics::{DEFAULT_INTERVAL_SECS, VISIBILITY_DELAY_SECS};
    let idle_min = parameters["IdleThresholdMinutes"]["MinValue"].as_u64().unwrap();
    assert!(idle_min * 60 > DEFAULT_INTERVAL_SECS + VISIBILITY_DELAY_SECS, "IdleThresholdMinutes MinValue {idle_min}");
}

fn parameter_names(template: &Value) -> BTreeSet<String> {
    template["Parameters"].as_object().into_iter().flatten().map(|(k, _)| k.clone()).collect()
}

#[test]
fn parameter_files_fit_the_templates() {
    let templates: Vec<Value> = TEMPLATES.iter().map(|t| load(t)).collect();
    let declared: BTreeSet<String> = templates.iter().flat_map(parameter_names).collect();
    for (env, seed) in [
        ("dev", [("LogRetentionDays", "7"), ("IdleThresholdMinutes", "5"), ("SleepCheckIntervalMinutes", "2")]),
        ("prod", [("LogRetentionDays", "30"), ("IdleThresholdMinutes", "15"), ("SleepCheckIntervalMinutes", "5")]),
    ] {
        let file = dir().join(format!("params-{env}.json"));
        let params: BTreeMap<String, String> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let keys: BTreeSet<String> = params.keys().cloned().collect();
        assert_eq!(keys, declared, "params-{env}.json must list every template parameter, and only those");
        for (key, value) in seed.into_iter().chain([("Cpu", "256"), ("Memory", "512"), ("DesiredCount", "0")]) {
            assert_eq!(params[key], value, "params-{env}.json {key} (seed 000)");
        }
        assert_eq!(params["ClusterName"], format!("fluidity-{env}"));
        assert_eq!(params["ServiceName"], format!("fluidity-server-{env}"));
        for template in &templates {
            for (name, spec) in template["Parameters"].as_object().into_iter().flatten() {
                let value = &params[name];
                if value.is_empty() {
                    continue; // supplied at deploy time (the deploy tool or --param)
                }
                if let Some(allowed) = spec["AllowedValues"].as_array() {
                    let allowed: Vec<String> =
                        allowed.iter().map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string())).collect();
                    assert!(allowed.contains(value), "params-{env}.json {name}={value} not in {allowed:?}");
                }
                let number = value.parse::<f64>();
                for (bound, ok) in [("MinValue", true), ("MaxValue", false)] {
                    if let Some(limit) = spec[bound].as_f64() {
                        let n = number.as_ref().unwrap_or_else(|_| panic!("{name} must be a number"));
                        assert!(
                            if ok { *n >= limit } else { *n <= limit },
                            "params-{env}.json {name}={value} vs {bound}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn stack_policy_protects_what_it_should() {
    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("stack-policy.json")).unwrap()).unwrap();
    let mut replace_protected = BTreeSet::new();
    let mut delete_protected = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap().iter().filter(|s| s["Effect"] == "Deny") {
        let actions: Vec<&str> = as_list(&statement["Action"]).into_iter().filter_map(Value::as_str).collect();
        for resource in as_list(&statement["Resource"]).into_iter().filter_map(Value::as_str) {
            let id = resource.strip_prefix("LogicalResourceId/").expect("resources are logical ids").to_string();
            if actions.contains(&"Update:Replace") {
                replace_protected.insert(id.clone());
            }
            if actions.contains(&"Update:Delete") {
                delete_protected.insert(id);
            }
        }
    }
    let templates: Vec<Value> = TEMPLATES.iter().map(|t| load(t)).collect();
    let all: BTreeMap<String, String> = templates
        .iter()
        .flat_map(|t| {
            resources(t).map(|(id, r)| (id.clone(), r["Type"].as_str().unwrap().to_string())).collect::<Vec<_>>()
        })
        .collect();
    for id in delete_protected.iter().chain(&replace_protected) {
        assert!(all.contains_key(id), "stack-policy.json names {id}, which no template defines");
    }
    let must = [
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Stage",
        "AWS::Lambda::Function",
        "AWS::Events::Rule",
        "AWS::IAM::Role",
        "AWS::ECS::Service",
        "AWS::ECS::Cluster",
        "AWS::ECS::TaskDefinition",
    ];
    for (id, kind) in &all {
        if must.contains(&kind.as_str()) {
            assert!(delete_protected.contains(id), "{id} ({kind}) is not protected from deletion");
        }
    }
    // A new image replaces the task definition: that must stay possible.
    assert!(!replace_protected.contains("TaskDefinition"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stacks_create_update_and_delete_in_the_emulator() {
    let moto = Moto::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cfn_stacks.py");
    let output =
        tokio::process::Command::new("python3").args([script, &moto.url(), "lifecycle", "dev"]).output().await.unwrap();
    assert!(output.status.success(), "cfn_stacks.py: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    // moto skips AWS::ApiGateway::ApiKey, so ApiKeyId is the one output it cannot show.
    let lambda_outputs: Vec<&str> = vec![
        "AlarmTopicArn",
        "ApiUrl",
        "DashboardUrl",
        "KillFunctionName",
        "SleepFunctionName",
        "StatusFunctionName",
        "WakeFunctionName",
    ];
    let fargate_outputs = [
        "CallerIngressGroup",
        "ClusterArn",
        "ClusterName",
        "LogGroupName",
        "MetricsNamespace",
        "SecurityGroupId",
        "ServerPort",
        "ServiceArn",
        "ServiceName",
        "TaskDefinitionArn",
    ];
    let keys = |phase: &str, stack: &str| -> Vec<String> {
        let mut keys: Vec<String> = report[phase][stack]["outputs"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    for (phase, status) in [("created", "CREATE_COMPLETE"), ("updated", "UPDATE_COMPLETE")] {
        assert_eq!(report[phase]["fluidity-dev-fargate"]["status"], status, "{report}");
        assert_eq!(report[phase]["fluidity-dev-lambda"]["status"], status, "{report}");
        assert_eq!(keys(phase, "fluidity-dev-fargate"), fargate_outputs, "{phase}");
        assert_eq!(keys(phase, "fluidity-dev-lambda"), lambda_outputs, "{phase}");
    }
    let created = &report["created"];
    assert_eq!(created["fluidity-dev-fargate"]["outputs"]["ServiceName"], "fluidity-server-dev");
    assert!(created["fluidity-dev-lambda"]["outputs"]["ApiUrl"].as_str().unwrap().ends_with("/api"));

    // The functions read the Fargate stack's exports and the parameters.
    let env_of = |phase: &str, f: &str| report[phase]["functions"][format!("fluidity-dev-{f}")]["env"].clone();
    for f in ["wake", "status", "sleep", "kill"] {
        let env = env_of("created", f);
        assert_eq!(env["CLUSTER_NAME"], "fluidity-dev", "{f}: {env}");
        assert_eq!(env["SERVICE_NAME"], "fluidity-server-dev", "{f}: {env}");
        assert_eq!(env["METRICS_NAMESPACE"], "Fluidity", "{f}: {env}");
        assert_eq!(env["IDLE_THRESHOLD_MINUTES"].to_string().trim_matches('"'), "5", "{f}: {env}");
        assert_eq!(env_of("updated", f)["IDLE_THRESHOLD_MINUTES"].to_string().trim_matches('"'), "9", "{f}");
        assert_eq!(report["created"]["functions"][format!("fluidity-dev-{f}")]["handler"], f);
        // `caller` mode: the group the functions may admit callers to, the port, and the name.
        let group = &created["fluidity-dev-fargate"]["outputs"]["CallerIngressGroup"];
        assert!(group.as_str().unwrap().starts_with("sg-"), "{group}");
        assert_eq!(env["CALLER_INGRESS_GROUP"], *group, "{f}: {env}");
        assert_eq!(env["SERVER_PORT"].to_string().trim_matches('"'), "443", "{f}: {env}");
        assert_eq!(env["DNS_NAME"], "dev.fluidity.test", "{f}: {env}");
    }
    // A new image and stop timeout make a new task definition revision.
    let revision = |phase: &str| report[phase]["fluidity-dev-fargate"]["outputs"]["TaskDefinitionArn"].clone();
    assert_ne!(revision("created"), revision("updated"));

    assert_eq!(
        report["deleted"],
        json!({ "fluidity-dev-fargate": ["DELETE_COMPLETE"], "fluidity-dev-lambda": ["DELETE_COMPLETE"] })
    );
    assert_eq!(report["shared"], "CREATE_COMPLETE", "the region's logging stack outlives the environment");
}

/// The stage has access logging, which API Gateway accepts only once the
/// region's account setting names a CloudWatch role ("CloudWatch Logs role
/// ARN must be set in account settings to enable logging", the Stage's
/// CREATE_FAILED reason on a fresh account; "Set up CloudWatch logging for
/// REST APIs", API Gateway Developer Guide). moto creates stacks in any
/// order, so the dependency is checked in the templates: the stage imports
/// the shared stack's export in a property, and that stack writes the
/// setting from its role.
#[test]
fn the_stage_waits_for_the_regions_logging_setting() {
    let lambda = load("lambda.yaml");
    let account = load("apigateway-account.yaml");
    let stage = &lambda["Resources"]["Stage"];
    assert!(stage["Properties"]["AccessLogSetting"].is_object(), "the stage logs access");
    // The stage imports the shared stack's export in a property (a tag):
    // created after it, and it cannot be deleted while this stack stands.
    let tags = stage["Properties"]["Tags"].as_array().unwrap();
    let tag = tags.iter().find(|t| t["Key"] == "fluidity:api-gateway-logs-role").expect("the import's tag");
    assert_eq!(
        tag["Value"],
        json!({ "Fn::If": [
            "UsesSharedLogsRole",
            { "Fn::ImportValue": { "Fn::Sub": "${ApiGatewayAccountStackName}-LogsRoleArn" } },
            "none"
        ] })
    );
    assert!(stage.get("Metadata").is_none() && stage.get("DependsOn").is_none(), "no other wiring is needed");
    assert_eq!(
        lambda["Conditions"]["UsesSharedLogsRole"],
        json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "ApiGatewayAccountStackName" }, NO_SHARED_STACK] }] })
    );
    // On a fresh account the setting needs an API Gateway resource to exist first.
    assert_eq!(account["Resources"]["ApiGatewayAccount"]["DependsOn"], "AccountAnchorKey");
    assert_eq!(account["Resources"]["AccountAnchorKey"]["Properties"]["Enabled"], false);
    assert_eq!(lambda["Parameters"]["ApiGatewayAccountStackName"]["Default"], "fluidity-apigateway-account");
    // The shared stack: the export is the role the setting points at.
    assert_eq!(
        account["Outputs"]["LogsRoleArn"]["Export"]["Name"],
        json!({ "Fn::Sub": "${AWS::StackName}-LogsRoleArn" })
    );
    assert_eq!(account["Outputs"]["LogsRoleArn"]["Value"], json!({ "Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"] }));
    assert_eq!(
        account["Resources"]["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"],
        json!({ "Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"] })
    );
    // No environment sets the region's single value itself any more.
    for name in ["fargate.yaml", "lambda.yaml"] {
        assert!(resources(&load(name)).all(|(_, r)| r["Type"] != "AWS::ApiGateway::Account"), "{name}");
    }
    // Access log lines are JSON: messageString is already quoted.
    let format = stage["Properties"]["AccessLogSetting"]["Format"].as_str().unwrap();
    let sample = format.replace("$context.error.messageString", "\"Forbidden\"").replace("$context.", "");
    serde_json::from_str::<Value>(&sample).unwrap_or_else(|e| panic!("access log format is not JSON ({e}): {format}"));
}

/// What `ApiGatewayAccountStackName` says when the region's setting is someone else's.
const NO_SHARED_STACK: &str = "none";

/// Dev and prod in one region both write access logs through the region's
/// one setting, and deleting dev leaves prod's logging intact. Judged by our
/// IAM evaluator on the role policy moto resolved (tests/cfn_stacks.py two-envs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_in_one_region_both_keep_their_access_logs() {
    let moto = Moto::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cfn_stacks.py");
    let output =
        tokio::process::Command::new("python3").args([script, &moto.url(), "two-envs"]).output().await.unwrap();
    assert!(output.status.success(), "cfn_stacks.py: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    for (phase, envs) in [("both", vec!["dev", "prod"]), ("after-deleting-dev", vec!["prod"])] {
        for env in envs {
            let access = &report[phase][env];
            assert_eq!(access["group"], format!("/aws/apigateway/fluidity-{env}-access"), "{report}");
            for action in ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"] {
                assert_eq!(access[action], "Allow", "{phase}: {env} {action}: {report}");
            }
        }
    }
    assert_eq!(report["shared"], "CREATE_COMPLETE");
}

/// ECS reads the certificate secret with the execution role as the
/// service's first task starts, so the role's permission to read it must
/// exist before the service: it is inline on the role (the service refers
/// to the task definition, which refers to the role). A separate
/// `AWS::IAM::Policy` has no ordering against the service, and a DependsOn
/// cannot name a conditional resource.
#[test]
fn the_execution_roles_secret_permissions_exist_before_the_service() {
    let fargate = load("fargate.yaml");
    assert!(resources(&fargate).all(|(_, r)| r["Type"] != "AWS::IAM::Policy"), "no detached policy");
    let policies = fargate["Resources"]["ExecutionRole"]["Properties"]["Policies"].as_array().unwrap();
    let conditional: Vec<(&str, &str)> = policies
        .iter()
        .filter_map(|p| Some((p["Fn::If"][0].as_str()?, p["Fn::If"][1]["PolicyName"].as_str()?)))
        .collect();
    assert_eq!(
        conditional,
        [
            ("HasCertificateParameters", "read-certificate-parameters"),
            ("HasCertificateSecret", "read-certificate-secret"),
            ("HasCertificateKey", "decrypt-certificate-secret")
        ]
    );
    let resources = &fargate["Resources"];
    assert_eq!(resources["Service"]["Properties"]["TaskDefinition"], json!({ "Ref": "TaskDefinition" }));
    assert_eq!(
        resources["TaskDefinition"]["Properties"]["ExecutionRoleArn"],
        json!({ "Fn::GetAtt": ["ExecutionRole", "Arn"] })
    );
}

/// A spent monthly quota answers every call 429 until the month ends (the
/// agent can no longer wake the server): an alarm on the stage's 4XXError
/// says so, through the same topic as the other alarms.
#[test]
fn a_spent_api_quota_raises_an_alarm() {
    let lambda = load("lambda.yaml");
    let alarms: Vec<&Value> =
        resources(&lambda).filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm").map(|(_, r)| r).collect();
    let quota = alarms
        .iter()
        .find(|a| a["Properties"]["MetricName"] == "4XXError")
        .expect("an alarm on the API's client errors");
    let properties = &quota["Properties"];
    assert_eq!(properties["Namespace"], "AWS/ApiGateway");
    let dimensions = properties["Dimensions"].as_array().unwrap();
    assert!(dimensions.iter().any(|d| d["Name"] == "Stage" && d["Value"] == json!({ "Ref": "Stage" })));
    assert_eq!(properties["AlarmActions"], json!([{ "Ref": "AlarmTopic" }]));
    assert_eq!(properties["TreatMissingData"], "notBreaching", "no data is no refusal");
}

/// The nightly stop happens at NightlyStopHour in NightlyStopTimeZone (an
/// EventBridge rule's cron is UTC only: Tokyo's 23:00 would be 08:00), and
/// the schedule may invoke the Kill function and nothing else, with an
/// input the function takes for a scheduled call.
#[test]
fn the_nightly_stop_follows_the_users_time_zone() {
    let lambda = load("lambda.yaml");
    let stop = &lambda["Resources"]["NightlyStop"];
    assert_eq!(stop["Type"], "AWS::Scheduler::Schedule");
    let properties = &stop["Properties"];
    assert_eq!(properties["ScheduleExpression"], json!({ "Fn::Sub": "cron(0 ${NightlyStopHour} * * ? *)" }));
    assert_eq!(properties["ScheduleExpressionTimezone"], json!({ "Ref": "NightlyStopTimeZone" }));
    assert_eq!(properties["Target"]["Arn"], json!({ "Fn::GetAtt": ["KillFunction", "Arn"] }));
    assert_eq!(properties["Target"]["RoleArn"], json!({ "Fn::GetAtt": ["NightlyStopRole", "Arn"] }));
    let retry = &properties["Target"]["RetryPolicy"];
    assert!(
        retry["MaximumEventAgeInSeconds"].as_u64().unwrap() <= 3600,
        "a late stop is dropped, not delivered next morning"
    );
    let input: Value = serde_json::from_str(properties["Target"]["Input"].as_str().unwrap()).unwrap();
    assert_eq!(input["detail-type"], "Scheduled Event", "what fluidity-lambda takes as a schedule");
    let hour = &lambda["Parameters"]["NightlyStopHour"];
    assert_eq!(
        (hour["MinValue"].as_u64(), hour["MaxValue"].as_u64(), hour["Default"].as_u64()),
        (Some(0), Some(23), Some(23))
    );
    let zone = regex_lite_match(lambda["Parameters"]["NightlyStopTimeZone"]["AllowedPattern"].as_str().unwrap());
    for good in ["UTC", "Asia/Tokyo", "America/Argentina/Buenos_Aires", "Etc/GMT+9", "EST5EDT"] {
        assert!(zone(good), "{good}");
    }
    for bad in ["", "Tokyo time", "../etc/passwd", "Asia/Tokyo;"] {
        assert!(!zone(bad), "{bad}");
    }
    let role = &lambda["Resources"]["NightlyStopRole"]["Properties"];
    assert_eq!(role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"], "scheduler.amazonaws.com");
    let statements = role["Policies"][0]["PolicyDocument"]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Action"], "lambda:InvokeFunction");
    assert_eq!(statements[0]["Resource"], json!({ "Fn::GetAtt": ["KillFunction", "Arn"] }));
    assert!(lambda["Resources"].get("NightlyKill").is_none(), "the UTC-only rule is gone");
}

/// A matcher for the parameter's AllowedPattern (anchored; CloudFormation's
/// patterns are Java regular expressions, which this one is too).
fn regex_lite_match(pattern: &str) -> impl Fn(&str) -> bool {
    let script = "import re, sys\nprint('yes' if re.fullmatch(sys.argv[1], sys.argv[2]) else 'no')";
    let pattern = pattern.to_owned();
    move |value: &str| {
        let out = std::process::Command::new("python3").args(["-c", script, &pattern, value]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    }
}
