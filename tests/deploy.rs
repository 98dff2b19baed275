//! The deploy tool against the local AWS emulator (moto): create, update, no
//! changes, dry run, status with drift (recorded responses, as moto has no
//! drift detection), outputs as a table and JSON, the API key's value, delete
//! refused and forced, a failed creation; the region's default VPC for a
//! newcomer who names no network, the templates built into the binary, the
//! agent's configuration; bad parameters change nothing. The image push goes through
//! tests/fake_skopeo.py (moto has no registry), which records its call.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Moto;
use serde_json::Value;
use sha2::{Digest, Sha256};

const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const BUCKET: &str = "fluidity-dev-artifacts-123456789012-us-east-1";
const ACCOUNT: &str = "fluidity-apigateway-account";
/// The access key the tool runs with (the test's own setup uses another).
const DEPLOYER_KEY: &str = "fluidity-deployer";

/// A moto instance with a VPC and subnet, the two artifacts on disk and the
/// environment the tool runs in (never the machine's own AWS configuration).
struct World {
    moto: Moto,
    dir: tempfile::TempDir,
    vpc: String,
    subnet: String,
    cfn: aws_sdk_cloudformation::Client,
    s3: aws_sdk_s3::Client,
    ecr: aws_sdk_ecr::Client,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let moto = Moto::start_with_recorded_drift(&dir.path().join("requests.jsonl")).await;
        let network = fixture(&moto, &["network"]);
        let zip = dir.path().join("fluidity-lambda.zip");
        let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr('bootstrap', '#!/bin/sh\\n')\n";
        assert!(Command::new("python3").args(["-c", script, zip.to_str().unwrap()]).status().unwrap().success());
        for (name, arch) in [("server-image.tar.gz", "arm64"), ("server-image-amd64.tar.gz", "amd64")] {
            docker_archive(&dir.path().join(name), arch, "1");
        }
        write_certs(&dir.path().join("certs"), false);
        let config = moto.sdk_config().await;
        let s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build();
        Self {
            vpc: network["vpc"].as_str().unwrap().to_owned(),
            subnet: network["subnet"].as_str().unwrap().to_owned(),
            cfn: aws_sdk_cloudformation::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            ecr: aws_sdk_ecr::Client::new(&config),
            moto,
            dir,
        }
    }

    fn fixture(&self, args: &[&str]) -> Value {
        fixture(&self.moto, args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `fluidity-deploy ARGS` with the repository's templates: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/cloudformation");
        let args: Vec<&str> = ["--templates", templates].into_iter().chain(args.iter().copied()).collect();
        self.run_in(self.dir.path(), &args)
    }

    /// Runs `fluidity-deploy ARGS` in `dir`, with the templates built into it unless ARGS name others.
    fn run_in(&self, dir: &Path, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(common::bin_path("fluidity-deploy"))
            .args(["--poll-interval", "100ms"])
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ENDPOINT_URL", self.moto.url())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", DEPLOYER_KEY)
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_CONFIG_FILE", self.path("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.path("no-aws-credentials"))
            .env("FLUIDITY_SKOPEO", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_skopeo.py"))
            .env("FAKE_SKOPEO_LOG", self.path("skopeo.log"))
            .env("FLUIDITY_CERTS_DIR", self.path("certs"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// `deploy` with the user-supplied parameters and both artifacts.
    fn deploy(&self, extra: &[&str]) -> (i32, String, String) {
        self.deploy_image(&self.path("server-image.tar.gz"), extra)
    }

    /// `deploy` as above with another image archive.
    fn deploy_image(&self, image: &Path, extra: &[&str]) -> (i32, String, String) {
        let (vpc, subnet) = (format!("VpcId={}", self.vpc), format!("PublicSubnets={}", self.subnet));
        let zip = self.path("fluidity-lambda.zip");
        let mut args =
            vec!["deploy", "--param", &vpc, "--param", &subnet, "--param", "AllowedIngressCidr=203.0.113.7/32"];
        args.extend(["--image", image.to_str().unwrap(), "--lambda-zip", zip.to_str().unwrap()]);
        args.extend(extra);
        self.run(&args)
    }

    /// `deploy` as a newcomer runs it: both artifacts and no parameter.
    fn deploy_newcomer(&self, extra: &[&str]) -> (i32, String, String) {
        let (image, zip) = (self.path("server-image.tar.gz"), self.path("fluidity-lambda.zip"));
        let mut args = vec!["deploy", "--image", image.to_str().unwrap(), "--lambda-zip", zip.to_str().unwrap()];
        args.extend(extra);
        self.run(&args)
    }

    fn skopeo_calls(&self) -> Vec<Value> {
        let log = std::fs::read_to_string(self.path("skopeo.log")).unwrap_or_default();
        log.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Stacks that exist (not deleted), by name.
    async fn live_stacks(&self) -> Vec<String> {
        let listed = self.cfn.list_stacks().send().await.unwrap();
        let mut names: Vec<String> = listed
            .stack_summaries()
            .iter()
            .filter(|s| s.stack_status().is_some_and(|st| st.as_str() != "DELETE_COMPLETE"))
            .map(|s| s.stack_name().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    }

    async fn parameter(&self, stack: &str, key: &str) -> String {
        let described = self.cfn.describe_stacks().stack_name(stack).send().await.unwrap();
        let stack = &described.stacks()[0];
        let found = stack.parameters().iter().find(|p| p.parameter_key() == Some(key));
        found.and_then(|p| p.parameter_value()).unwrap_or_else(|| panic!("no parameter {key}")).to_owned()
    }

    /// The tool's recorded calls judged against cloudformation/deployer-policy.json
    /// (tests/deployer_check.py): asserts none was denied and the policy
    /// refuses what it must; the actions seen.
    fn deployer_check(&self) -> Vec<String> {
        let output = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deployer_check.py"))
            .arg(self.path("requests.jsonl"))
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/cloudformation/deployer-policy.json"))
            .arg(DEPLOYER_KEY)
            .output()
            .unwrap();
        assert!(output.status.success(), "deployer_check.py: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["denied"], serde_json::json!([]), "calls the deployer policy refuses");
        assert_eq!(report["forbidden"], serde_json::json!([]), "the deployer policy allows too much");
        assert_eq!(report["for_the_stacks"], serde_json::json!([]), "CloudFormation could not make these");
        // "Managed policy size: 6,144 characters" (IAM User Guide, "IAM and AWS STS quotas").
        assert!(report["size"].as_u64().unwrap() <= 6144, "too long for a managed policy: {}", report["size"]);
        report["actions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
    }

    /// Leaves stack `name` as a failed creation does: ROLLBACK_COMPLETE
    /// (a function whose package does not exist).
    async fn fail_creation(&self, name: &str) {
        let template = r#"{"Resources": {"F": {"Type": "AWS::Lambda::Function", "Properties": {
            "Code": {"S3Bucket": "fluidity-no-such-bucket", "S3Key": "missing.zip"},
            "Role": "arn:aws:iam::123456789012:role/none", "Handler": "bootstrap", "Runtime": "provided.al2023"}}}}"#;
        let change_set = self
            .cfn
            .create_change_set()
            .stack_name(name)
            .change_set_name("fails")
            .change_set_type(aws_sdk_cloudformation::types::ChangeSetType::Create)
            .template_body(template)
            .send()
            .await
            .unwrap();
        self.cfn.execute_change_set().change_set_name(change_set.id().unwrap()).send().await.unwrap();
        let stacks = self.cfn.describe_stacks().stack_name(name).send().await.unwrap();
        assert_eq!(stacks.stacks()[0].stack_status().map(|s| s.as_str()), Some("ROLLBACK_COMPLETE"));
    }

    /// The physical id of a stack's resource, if it has it.
    async fn resource(&self, stack: &str, logical_id: &str) -> Option<String> {
        let found = self.cfn.describe_stack_resource().stack_name(stack).logical_resource_id(logical_id).send().await;
        found.ok().and_then(|r| r.stack_resource_detail()?.physical_resource_id().map(str::to_owned))
    }

    async fn nothing_created(&self) {
        assert!(self.live_stacks().await.is_empty(), "stacks: {:?}", self.live_stacks().await);
        assert!(self.s3.list_buckets().send().await.unwrap().buckets().is_empty(), "a bucket was created");
        let repos = self.ecr.describe_repositories().send().await.unwrap();
        assert!(repos.repositories().is_empty(), "an image repository was created");
        assert!(self.skopeo_calls().is_empty(), "an image was pushed");
    }
}

/// Writes a CA, server and client certificates into `dir` with fluidity-certs.
fn write_certs(dir: &Path, force: bool) {
    let mut command = Command::new(common::bin_path("fluidity-certs"));
    command.arg("--dir").arg(dir).env_remove("FLUIDITY_CERTS_DIR").stdout(std::process::Stdio::null());
    if force {
        command.arg("--force");
    }
    assert!(command.status().unwrap().success());
}

/// Runs tests/aws_fixture.py against the emulator; its JSON answer.
fn fixture(moto: &Moto, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws_fixture.py");
    let out = Command::new("python3").arg(script).arg(moto.url()).args(args).output().unwrap();
    assert!(out.status.success(), "aws_fixture.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A small docker-archive as `nix build .#server-image-*` writes it (gzipped
/// tar: manifest.json, the image config naming its architecture, one layer);
/// `content` changes the layer, so the archive's hash.
fn docker_archive(path: &Path, architecture: &str, content: &str) {
    let script = r#"
import io, json, sys, tarfile
path, arch, content = sys.argv[1:]
with tarfile.open(path, "w:gz") as tar:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    add("0123abcd/layer.tar", content.encode() * 1000)
    add("manifest.json", json.dumps([{"Config": "c0ffee.json", "RepoTags": ["fluidity-server:test"], "Layers": ["0123abcd/layer.tar"]}]).encode())
    add("c0ffee.json", json.dumps({"architecture": arch, "os": "linux", "config": {"Entrypoint": ["/bin/fluidity-server"]}}).encode())
"#;
    let status = Command::new("python3").args(["-c", script, path.to_str().unwrap(), architecture, content]).status();
    assert!(status.unwrap().success(), "docker-archive {}", path.display());
}

/// A docker-archive whose one layer is a tar holding `files`.
fn docker_archive_with(path: &Path, architecture: &str, files: &[&str]) {
    let script = r#"
import io, json, sys, tarfile
path, arch, files = sys.argv[1], sys.argv[2], sys.argv[3:]
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as inner:
    for name in files:
        info = tarfile.TarInfo("./" + name)
        info.size = 3
        inner.addfile(info, io.BytesIO(b"pem"))
with tarfile.open(path, "w:gz") as tar:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    add("0123abcd/layer.tar", layer.getvalue())
    add("manifest.json", json.dumps([{"Config": "c0ffee.json", "RepoTags": ["fluidity-server:test"], "Layers": ["0123abcd/layer.tar"]}]).encode())
    add("c0ffee.json", json.dumps({"architecture": arch, "os": "linux", "config": {"Entrypoint": ["/bin/fluidity-server"]}}).encode())
"#;
    let mut args = vec!["-c", script, path.to_str().unwrap(), architecture];
    args.extend(files);
    let status = Command::new("python3").args(&args).status();
    assert!(status.unwrap().success(), "docker-archive {}", path.display());
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    lines[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_update_no_changes_status_outputs_delete() {
    let world = World::new().await;
    let (fargate, lambda) = ("fluidity-dev-fargate", "fluidity-dev-lambda");

    // 1. Create: artifacts published under content hashes, both stacks created.
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "deploy failed:\n{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-fargate: created"), "{out}");
    assert!(out.contains("stack fluidity-dev-lambda: created"), "{out}");
    assert!(out.contains("stack fluidity-apigateway-account: created"), "the region's logging setting:\n{out}");
    assert!(
        out.find("fluidity-dev-fargate: created") < out.find("fluidity-apigateway-account: created")
            && out.find("fluidity-apigateway-account: created") < out.find("fluidity-dev-lambda: created"),
        "Fargate, then the shared logging stack, then Lambda (its stage needs the setting):\n{out}"
    );
    assert!(out.contains("CREATE_COMPLETE"), "events streamed:\n{out}");
    assert!(out.contains("ApiUrl"), "outputs printed after deploy:\n{out}");
    // A new account has no ECS service-linked role: made before any stack.
    let role = out.find("ECS service-linked role: created").expect(&out);
    assert!(role < out.find("stack fluidity-dev-fargate").unwrap(), "{out}");

    let zip_key = format!("lambda/{}.zip", sha256_hex(&world.path("fluidity-lambda.zip")));
    let tag = &sha256_hex(&world.path("server-image.tar.gz"))[..16];
    let image = format!("{REGISTRY}/fluidity-server-dev:{tag}");
    assert_eq!(world.parameter(fargate, "ContainerImage").await, image);
    assert_eq!(world.parameter(lambda, "CodeBucket").await, BUCKET);
    assert_eq!(world.parameter(lambda, "CodeKey").await, zip_key);
    assert_eq!(world.parameter(lambda, "FargateStackName").await, fargate);
    world.s3.head_object().bucket(BUCKET).key(&zip_key).send().await.expect("the package is uploaded");
    let block = world.s3.get_public_access_block().bucket(BUCKET).send().await.unwrap();
    let block = block.public_access_block_configuration().unwrap();
    assert_eq!(block.block_public_acls(), Some(true));
    assert_eq!(block.restrict_public_buckets(), Some(true));
    let policy_file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/cloudformation/stack-policy.json")).unwrap();
    for stack in [fargate, ACCOUNT, lambda] {
        let policy = world.cfn.get_stack_policy().stack_name(stack).send().await.unwrap();
        assert_eq!(policy.stack_policy_body(), Some(policy_file.as_str()), "stack policy of {stack}");
    }

    // Old images expire beyond the newest 10.
    let policy = world.ecr.get_lifecycle_policy().repository_name("fluidity-server-dev").send().await.unwrap();
    let policy: Value = serde_json::from_str(policy.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(policy["rules"][0]["selection"]["countNumber"], 10, "{policy}");
    assert_eq!(
        world.cfn.describe_stacks().stack_name(fargate).send().await.unwrap().stacks()[0]
            .enable_termination_protection(),
        Some(false),
        "dev stacks are not protected"
    );

    // The push: one skopeo call with the archive, the content-hash tag and an
    // auth file only we can read, gone afterwards.
    let calls = world.skopeo_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let args: Vec<&str> = calls[0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let archive = format!("docker-archive:{}", world.path("server-image.tar.gz").display());
    assert!(args.contains(&archive.as_str()), "{args:?}");
    assert_eq!(args.last().copied(), Some(format!("docker://{image}").as_str()));
    assert_eq!(calls[0]["auth_file_mode"], 0o600);
    assert!(
        calls[0]["auth"]["auths"][REGISTRY]["auth"].as_str().is_some_and(|a| !a.is_empty()),
        "{}",
        calls[0]["auth"]
    );
    assert!(!Path::new(calls[0]["auth_file"].as_str().unwrap()).exists(), "auth file removed");
    assert!(
        !out.contains(calls[0]["auth"]["auths"][REGISTRY]["auth"].as_str().unwrap()),
        "the registry token is never printed"
    );

    // 2. Update: a changed parameter updates the Lambda stack; nothing is
    // re-published. The Fargate stack changes once: from now on DesiredCount
    // is left out of its updates ("keep"), so no deploy resets the server.
    let (code, out, err) = world.deploy(&["--param", "IdleThresholdMinutes=9"]);
    assert_eq!(code, 0, "update failed:\n{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-fargate: updated"), "{out}");
    assert_eq!(world.parameter(fargate, "DesiredCount").await, "keep");
    assert!(out.contains("stack fluidity-apigateway-account: no changes"), "{out}");
    assert!(out.contains("stack fluidity-dev-lambda: updated"), "{out}");
    assert!(out.contains("UPDATE_COMPLETE"), "{out}");
    assert!(out.contains("(already there)"), "{out}");
    assert_eq!(world.parameter(lambda, "IdleThresholdMinutes").await, "9");
    assert_eq!(world.skopeo_calls().len(), 1, "the image is not pushed again");
    // The role exists now: IAM's "has been taken" is no error, and no news.
    assert!(!out.contains("service-linked role"), "{out}");

    // 3. Unchanged: "no changes" for both, success.
    let (code, out, err) = world.deploy(&["--param", "IdleThresholdMinutes=9"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("stack fluidity-dev-fargate: no changes") && out.contains("stack fluidity-dev-lambda: no changes"),
        "{out}"
    );

    // 4. Dry run of a change: the change set is shown and discarded.
    let (code, out, err) = world.deploy(&["--param", "IdleThresholdMinutes=7", "--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("change set for fluidity-dev-lambda (update)"), "{out}");
    assert!(out.contains("stack fluidity-dev-lambda: dry run, nothing changed"), "{out}");
    assert!(out.contains("stack fluidity-dev-fargate: no changes"), "the unchanged image is seen as unchanged:\n{out}");
    assert_eq!(world.parameter(lambda, "IdleThresholdMinutes").await, "9");
    let change_sets = world.cfn.list_change_sets().stack_name(lambda).send().await.unwrap();
    assert!(
        change_sets.summaries().iter().all(|s| s.execution_status().is_some_and(|e| e.as_str() == "EXECUTE_COMPLETE")),
        "no pending change set is left: {:?}",
        change_sets.summaries()
    );

    // 5. Status: states, drift per resource (recorded: in progress, then two pages), service counts, API URL.
    let (code, out, err) = world.run(&["status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("fluidity-dev-fargate: UPDATE_COMPLETE"), "{out}");
    assert!(out.contains("fluidity-dev-lambda: UPDATE_COMPLETE"), "{out}");
    assert!(out.contains("drift: DRIFTED"), "{out}");
    assert!(out.contains("MODIFIED     SecurityGroup (AWS::EC2::SecurityGroup)"), "{out}");
    assert!(out.contains("/SecurityGroupIngress/0/CidrIp: 203.0.113.7/32 → 0.0.0.0/0"), "{out}");
    assert!(out.contains("IN_SYNC      Service (AWS::ECS::Service)"), "second page read:\n{out}");
    assert!(out.contains("DELETED      LogGroup (AWS::Logs::LogGroup)"), "{out}");
    assert!(out.contains("NOT_CHECKED  TaskDefinition (AWS::ECS::TaskDefinition)"), "{out}");
    assert!(out.contains("drift: IN_SYNC"), "{out}");
    assert!(out.contains("server: desired 0, running 0"), "{out}");
    assert!(out.contains("api: https://"), "{out}");

    // 6. Outputs: the table and JSON agree with CloudFormation.
    let (code, table, err) = world.run(&["outputs"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.lines().next().is_some_and(|h| h.starts_with("STACK") && h.contains("OUTPUT") && h.contains("VALUE"))
    );
    let (code, json, err) = world.run(&["outputs", "--json"]);
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&json).expect("outputs --json is JSON");
    for stack in [fargate, lambda] {
        let described = world.cfn.describe_stacks().stack_name(stack).send().await.unwrap();
        let outputs = described.stacks()[0].outputs();
        assert!(!outputs.is_empty());
        for output in outputs {
            let (key, value) = (output.output_key().unwrap(), output.output_value().unwrap());
            assert_eq!(json[stack][key], value, "{stack} {key}");
            assert!(
                table.lines().any(|l| l.starts_with(stack) && l.contains(key) && l.ends_with(value)),
                "{key} in:\n{table}"
            );
        }
    }
    assert_eq!(json[fargate]["ClusterName"], "fluidity-dev");

    // 7. The API key's value: moto does not create AWS::ApiGateway::ApiKey, so
    // the ApiKeyId output is missing (said in one line); by id it is read.
    let (code, _, err) = world.run(&["api-key"]);
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("no ApiKeyId output; pass --id"), "{err}");
    let secret = "fluidity-test-key-0123456789abcdef";
    let key = world.fixture(&["api-key", secret]);
    let (code, out, err) = world.run(&["api-key", "--id", key["id"].as_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, format!("{secret}\n").as_str()), "{err}");
    let (code, _, err) = world.run(&["api-key", "--id", "nosuchkey"]);
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("404"), "{err}");

    // 8. Delete: refused without --force (nothing touched), then done.
    let (code, out, err) = world.run(&["delete"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(one_line(&err).contains("--force"), "{err}");
    assert_eq!(world.live_stacks().await, [ACCOUNT, fargate, lambda]);
    let (code, out, err) = world.run(&["delete", "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.find("fluidity-dev-lambda: deleted") < out.find("fluidity-dev-fargate: deleted"),
        "Lambda first:\n{out}"
    );
    assert_eq!(world.live_stacks().await, [ACCOUNT], "the region's logging setting outlives an environment");
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("kept: the artifact bucket s3://fluidity-dev-artifacts-"), "{out}");
    assert!(last.contains("image repository fluidity-server-dev") && last.contains(ACCOUNT), "{last}");
    let (code, _, err) = world.run(&["outputs"]);
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("deploy first"), "{err}");

    // 9. --purge (only with --force) removes the bucket and the repository too.
    let (code, _, err) = world.run(&["delete", "--purge"]);
    assert_eq!(code, 2, "{err}");
    assert!(world.s3.head_bucket().bucket(BUCKET).send().await.is_ok(), "nothing removed without --force");
    let (code, out, err) = world.run(&["delete", "--force", "--purge"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("s3://{BUCKET}: deleted")) && out.contains("fluidity-server-dev: deleted"), "{out}");
    assert!(world.s3.head_bucket().bucket(BUCKET).send().await.is_err(), "the bucket is gone");
    assert!(world.ecr.describe_repositories().send().await.unwrap().repositories().is_empty());
    assert!(!out.lines().last().unwrap().contains("artifact bucket"), "{out}");

    // Every call of all this is one the deployer policy in the repository allows.
    let actions = world.deployer_check();
    for expected in [
        "cloudformation:CreateChangeSet",
        "cloudformation:ExecuteChangeSet",
        "cloudformation:SetStackPolicy",
        "cloudformation:DetectStackDrift",
        "cloudformation:DeleteStack",
        "s3:PutObject",
        "s3:DeleteBucket",
        "ecr:CreateRepository",
        "ecr:DeleteRepository",
        "ssm:PutParameter",
        "ssm:DeleteParameters",
        "iam:CreateServiceLinkedRole",
        "apigateway:GET",
        "ecs:DescribeServices",
    ] {
        assert!(actions.iter().any(|a| a == expected), "{expected} not exercised: {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_change_nothing() {
    let world = World::new().await;

    // A malformed parameters file.
    let bad = world.path("params-broken.json");
    std::fs::write(&bad, "{\"VpcId\": \"vpc-1\",\n").unwrap();
    let (code, out, err) = world.deploy(&["--params", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let line = one_line(&err);
    assert!(line.contains("params-broken.json") && line.contains("not valid JSON"), "{line}");

    // A value of the wrong kind.
    std::fs::write(&bad, r#"{"VpcId": ["vpc-1"]}"#).unwrap();
    let (code, _, err) = world.deploy(&["--params", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("VpcId is a list"), "{err}");

    // Subnets without their VPC (params-dev.json has VpcId "", and no --param gives it).
    let zip = world.path("fluidity-lambda.zip");
    let image = world.path("server-image.tar.gz");
    let (code, out, err) = world.run(&[
        "deploy",
        "--param",
        "PublicSubnets=subnet-1",
        "--param",
        "AllowedIngressCidr=203.0.113.7/32",
        "--image",
        image.to_str().unwrap(),
        "--lambda-zip",
        zip.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    let line = one_line(&err);
    assert!(line.contains("`VpcId`: not given, but PublicSubnets is"), "{line}");

    // A misspelt override and a value outside AllowedValues.
    let (code, _, err) = world.deploy(&["--param", "IdleTresholdMinutes=9"]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("`IdleTresholdMinutes`: unknown parameter"), "{err}");
    let (code, _, err) = world.deploy(&["--param", "CpuArchitecture=SPARC"]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("CpuArchitecture"), "{err}");

    // No image archive and no ContainerImage.
    let (vpc, subnet) = (format!("VpcId={}", world.vpc), format!("PublicSubnets={}", world.subnet));
    let (code, _, err) = world.run(&[
        "deploy",
        "--param",
        &vpc,
        "--param",
        &subnet,
        "--param",
        "AllowedIngressCidr=203.0.113.7/32",
        "--lambda-zip",
        zip.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("--image"), "{err}");

    // An image built for the other architecture: refused before any change.
    let amd64 = world.path("server-image-amd64.tar.gz");
    let (code, _, err) = world.deploy_image(&amd64, &[]);
    assert_eq!(code, 2);
    let line = one_line(&err);
    assert!(line.contains("is an amd64 image but the task's CpuArchitecture is ARM64"), "{line}");
    assert!(line.contains("nix build .#server-image-aarch64") && line.contains("CpuArchitecture=X86_64"), "{line}");
    // Something that is not an image archive at all.
    std::fs::write(world.path("not-an-image.tar.gz"), b"an image archive, as nix build writes it").unwrap();
    let (code, _, err) = world.deploy_image(&world.path("not-an-image.tar.gz"), &[]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("is not a docker-archive"), "{err}");
    // The same amd64 archive passes the check for an X86_64 task (a dry run changes nothing).
    let (code, out, err) = world.deploy_image(&amd64, &["--param", "CpuArchitecture=X86_64", "--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");

    world.nothing_created().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_keeps_a_running_server_running() {
    let world = World::new().await;
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    // The agent wakes the server: desired 1, as the wake function sets it.
    let config = world.moto.sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let desired = || async {
        let described = ecs.describe_services().cluster("fluidity-dev").services("fluidity-server-dev").send().await;
        described.unwrap().services()[0].desired_count()
    };
    assert_eq!(desired().await, 0, "created asleep");
    ecs.update_service().cluster("fluidity-dev").service("fluidity-server-dev").desired_count(1).send().await.unwrap();

    // A new image is deployed during the session.
    docker_archive(&world.path("server-image.tar.gz"), "arm64", "2");
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-fargate: updated"), "the new image rolls out:\n{out}");
    assert_eq!(world.parameter("fluidity-dev-fargate", "DesiredCount").await, "keep", "left out of the update");
    assert_eq!(desired().await, 1, "the running server is not stopped by the deploy");

    // Asleep again (kill): the next deploy keeps it asleep.
    ecs.update_service().cluster("fluidity-dev").service("fluidity-server-dev").desired_count(0).send().await.unwrap();
    docker_archive(&world.path("server-image.tar.gz"), "arm64", "3");
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(desired().await, 0, "a sleeping server is not woken by the deploy");
}

#[tokio::test(flavor = "multi_thread")]
async fn old_lambda_packages_are_removed_but_the_current_and_previous_stay() {
    let world = World::new().await;
    let zip = world.path("fluidity-lambda.zip");
    let mut keys = vec![];
    for build in ["1", "2", "3"] {
        let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr('bootstrap', sys.argv[2])\n";
        assert!(Command::new("python3").args(["-c", script, zip.to_str().unwrap(), build]).status().unwrap().success());
        let (code, out, err) = world.deploy(&[]);
        assert_eq!(code, 0, "{out}\n{err}");
        keys.push(format!("lambda/{}.zip", sha256_hex(&zip)));
        assert_eq!(world.parameter("fluidity-dev-lambda", "CodeKey").await, *keys.last().unwrap());
    }
    let listed = world.s3.list_objects_v2().bucket(BUCKET).prefix("lambda/").send().await.unwrap();
    let mut stored: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    stored.sort();
    let mut wanted = vec![keys[1].as_str(), keys[2].as_str()];
    wanted.sort();
    assert_eq!(stored, wanted, "the current package and the previous one (for a rollback)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_logging_role_set_by_someone_else_is_left_alone() {
    let world = World::new().await;
    let theirs = "arn:aws:iam::123456789012:role/their-apigateway-logs";
    assert_eq!(world.fixture(&["account-role", theirs])["role"], theirs);
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("uses {theirs}, which Fluidity did not set; leaving it alone")), "{out}");
    assert!(!out.contains("stack fluidity-apigateway-account"), "{out}");
    assert_eq!(world.live_stacks().await, ["fluidity-dev-fargate", "fluidity-dev-lambda"]);
    assert_eq!(world.parameter("fluidity-dev-lambda", "ApiGatewayAccountStackName").await, "none");
}

#[tokio::test(flavor = "multi_thread")]
async fn production_stacks_are_protected_until_delete_force() {
    let world = World::new().await;
    let image = world.path("server-image.tar.gz");
    let (code, out, err) =
        world.deploy_image(&image, &["--env", "prod", "--param", "ImageRepositoryName=fluidity-server-prod"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for stack in ["fluidity-prod-fargate", "fluidity-prod-lambda"] {
        assert!(out.contains(&format!("stack {stack}: termination protection on")), "{out}");
        let described = world.cfn.describe_stacks().stack_name(stack).send().await.unwrap();
        assert_eq!(described.stacks()[0].enable_termination_protection(), Some(true), "{stack}");
    }
    // Deleting by hand is refused, as AWS refuses it.
    let refused = world.cfn.delete_stack().stack_name("fluidity-prod-lambda").send().await;
    assert!(format!("{refused:?}").contains("TerminationProtection"), "{refused:?}");
    assert!(world.live_stacks().await.contains(&"fluidity-prod-lambda".to_string()));
    // delete --force says it lifts the protection, then deletes.
    let (code, out, err) = world.run(&["--env", "prod", "delete", "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("fluidity-prod-lambda: lifting its termination protection (--force)"), "{out}");
    assert_eq!(world.live_stacks().await, [ACCOUNT]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_of_a_new_environment_changes_nothing() {
    let world = World::new().await;
    let (code, out, err) = world.deploy(&["--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("change set for fluidity-dev-fargate (new stack)"), "{out}");
    assert!(out.contains("+ Add     Service (AWS::ECS::Service)"), "{out}");
    assert!(out.contains("stack fluidity-dev-fargate: dry run, nothing changed"), "{out}");
    assert!(out.contains("would be s3://"), "{out}");
    assert!(err.is_empty(), "{err}");
    world.nothing_created().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_creation_reports_its_events_and_blocks_redeploys() {
    let world = World::new().await;
    // The Lambda stack's functions point at a package that does not exist.
    let missing = ["--param", "CodeBucket=fluidity-no-such-bucket", "--param", "CodeKey=lambda/missing.zip"];
    let (code, out, err) = world.deploy(&missing);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-fargate: created"), "{out}");
    assert!(out.contains("CREATE_FAILED") && out.contains("ROLLBACK_COMPLETE"), "events streamed:\n{out}");
    assert!(err.contains("failed events of fluidity-dev-lambda:"), "{err}");
    assert!(err.lines().any(|l| l.contains("CREATE_FAILED") && l.contains("NoSuchBucket")), "the reason:\n{err}");
    let last = err.lines().last().unwrap();
    assert!(last.contains("ended in ROLLBACK_COMPLETE") && last.contains("delete --force"), "{last}");
    assert!(
        world.skopeo_calls().len() == 1 && !out.contains("lambda package:"),
        "no upload when CodeKey is given:\n{out}"
    );

    // A rolled-back stack cannot be updated: said in one line, nothing done.
    let (code, _, err) = world.deploy(&missing);
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("is ROLLBACK_COMPLETE and cannot be updated; run `delete --force`"), "{err}");

    // Delete clears it; a deploy with the real package then succeeds.
    let (code, out, err) = world.run(&["delete", "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-lambda: created"), "{out}");
}

/// The server's certificates go to Parameter Store (standard SecureString
/// parameters: no monthly fee), under a path named by their content, which
/// the task definition reads; an earlier version's secret is deleted once
/// the stack no longer reads it.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_certificates_reach_the_task_through_parameter_store() {
    let world = World::new().await;
    let root = "/fluidity/dev/server-tls";
    // An install of an earlier version kept them in a Secrets Manager secret.
    world.fixture(&["put-secret", "fluidity-dev-server-tls", "{}"]);
    let certs = world.path("certs");
    let file = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    let key = file("server.key");
    let key_body = key.lines().nth(1).unwrap().to_owned();
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let path = world.parameter("fluidity-dev-fargate", "CertificateParameterPath").await;
    assert!(path.starts_with(&format!("{root}/")) && path.len() == root.len() + 17, "{path}");
    assert!(out.contains(&format!("server certificates: Parameter Store {path} (created)")), "{out}");
    assert!(!out.contains(&key_body) && !err.contains(&key_body), "the key was printed");
    assert!(!out.contains("PRIVATE KEY") && !err.contains("PRIVATE KEY"), "the key was printed");
    assert!(out.contains("deleted the Secrets Manager secret fluidity-dev-server-tls"), "{out}");
    assert!(world.fixture(&["secret", "fluidity-dev-server-tls"])["arn"].is_null(), "the $0.40/month secret is gone");

    // Three standard SecureString parameters, one per file, read by the task.
    let stored = world.fixture(&["parameters", root]);
    for name in ["ca.crt", "server.crt", "server.key"] {
        let parameter = &stored[format!("{path}/{name}")];
        assert_eq!(parameter["value"], file(name), "{name}");
        assert_eq!((parameter["type"].as_str(), parameter["tier"].as_str()), (Some("SecureString"), Some("Standard")));
    }
    assert_eq!(stored.as_object().unwrap().len(), 3);
    let arn = |name: &str| format!("arn:aws:ssm:us-east-1:123456789012:parameter{path}/{name}");
    assert_eq!(
        task_secrets(&world).await,
        [
            ("FLUIDITY_TLS_CA_PEM".to_owned(), arn("ca.crt")),
            ("FLUIDITY_TLS_CERT_PEM".to_owned(), arn("server.crt")),
            ("FLUIDITY_TLS_KEY_PEM".to_owned(), arn("server.key")),
        ]
    );
    // The default task (Cpu 256) runs the server on one runtime thread.
    let env = task_container(&world).await.environment().to_vec();
    let threads = env.iter().find(|e| e.name() == Some("FLUIDITY_WORKER_THREADS")).and_then(|e| e.value());
    assert_eq!(threads, Some("1"), "{env:?}");

    // The same files again: the same path, nothing written. New ones: a new
    // path the task definition follows; the previous set stays for a
    // rollback, older ones go.
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("Parameter Store {path} (unchanged)")), "{out}");
    let mut paths = vec![path.clone()];
    for _ in 0..2 {
        write_certs(&certs, true);
        let (code, out, err) = world.deploy(&[]);
        assert_eq!(code, 0, "{out}\n{err}");
        let rotated = world.parameter("fluidity-dev-fargate", "CertificateParameterPath").await;
        assert!(!paths.contains(&rotated) && out.contains(&format!("{rotated} (created)")), "{out}");
        // The task definition's secrets name the path (above), so CloudFormation
        // replaces it when the path changes; moto keeps the old revision, so
        // the stack's parameter is what is checked here.
        paths.push(rotated);
    }
    let stored = world.fixture(&["parameters", root]);
    let mut held: Vec<&str> = stored.as_object().unwrap().keys().map(|k| k.rsplit_once('/').unwrap().0).collect();
    held.dedup();
    assert_eq!(held.len(), 2, "the current and the previous set: {held:?}");
    assert!(held.contains(&paths[1].as_str()) && held.contains(&paths[2].as_str()), "{held:?} {paths:?}");
    assert_eq!(stored[format!("{}/server.key", paths[2])]["value"], file("server.key"));

    // delete --force leaves no key behind.
    let (code, out, err) = world.run(&["delete", "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("{root}: deleted")), "{out}");
    assert!(out.contains("waiting 30 s: Parameter Store takes a deleted name again only after that"), "{out}");
    assert_eq!(world.fixture(&["parameters", root]), serde_json::json!({}));

    // Every SSM, Secrets Manager and API Gateway request the tool signed
    // itself is one AWS accepts.
    let (checked, signatures, problems) = common::model_check(&world.path("requests.jsonl"));
    assert!(problems.is_empty(), "requests AWS would refuse: {problems:#?}");
    assert!(signatures >= 3, "signatures recomputed: {signatures}");
    for operation in
        ["ssm.PutParameter", "ssm.GetParametersByPath", "ssm.DeleteParameters", "secretsmanager.DeleteSecret"]
    {
        assert!(checked[operation].as_u64().unwrap_or(0) > 0, "{operation} not checked: {checked}");
    }
    world.deployer_check();
}

/// The model checker's own tests: a CreateSecret without its idempotency
/// token, wrong types, lengths, versions and members are caught.
#[test]
fn the_model_checker_passes_its_own_tests() {
    let output = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/model_check_test.py"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && text.contains("OK"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_broken_server_certificates_change_nothing() {
    let world = World::new().await;
    let certs = world.path("certs");
    std::fs::remove_file(certs.join("server.key")).unwrap();
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(one_line(&err).contains("server.key") && one_line(&err).contains("fluidity-certs"), "{err}");
    // A key that is not the certificate's.
    std::fs::copy(certs.join("client.key"), certs.join("server.key")).unwrap();
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(one_line(&err).contains("does not match"), "{err}");
    // A certificate with a long chain: more than a standard parameter holds.
    write_certs(&certs, true);
    let chain = std::fs::read_to_string(certs.join("server.crt")).unwrap()
        + &std::fs::read_to_string(certs.join("ca.crt")).unwrap().repeat(6);
    std::fs::write(certs.join("server.crt"), chain).unwrap();
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(one_line(&err).contains("a standard Parameter Store parameter holds 4096"), "{err}");
    world.nothing_created().await;
    assert_eq!(world.fixture(&["parameters", "/fluidity"]), serde_json::json!({}));
    // Baked into the image instead: refused for a certificate-free image
    // (it would start a server without a key), then nothing is stored.
    let (code, out, err) = world.deploy(&["--certificates", "image"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let line = one_line(&err);
    assert!(line.contains("`--certificates image`") && line.contains("has no /etc/fluidity/certs/ca.crt"), "{line}");
    assert!(line.contains("FLUIDITY_IMAGE_CERTS_DIR=certs nix build"), "{line}");
    world.nothing_created().await;
    let baked = world.path("server-image-baked.tar.gz");
    docker_archive_with(
        &baked,
        "arm64",
        &["etc/fluidity/certs/ca.crt", "etc/fluidity/certs/server.crt", "etc/fluidity/certs/server.key"],
    );
    let (code, out, err) = world.deploy_image(&baked, &["--certificates", "image"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("server certificates"), "{out}");
    assert_eq!(world.parameter("fluidity-dev-fargate", "CertificateParameterPath").await, "");
    assert_eq!(world.fixture(&["parameters", "/fluidity"]), serde_json::json!({}));
}

/// The server container of the Fargate service's task definition.
async fn task_container(world: &World) -> aws_sdk_ecs::types::ContainerDefinition {
    let config = world.moto.sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let services =
        ecs.describe_services().cluster("fluidity-dev").services("fluidity-server-dev").send().await.unwrap();
    let definition = services.services()[0].task_definition().unwrap().to_owned();
    let described = ecs.describe_task_definition().task_definition(definition).send().await.unwrap();
    described.task_definition().unwrap().container_definitions()[0].clone()
}

/// The container secrets of the Fargate service's task definition: (name, valueFrom).
async fn task_secrets(world: &World) -> Vec<(String, String)> {
    let container = task_container(world).await;
    container.secrets().iter().map(|s| (s.name().to_owned(), s.value_from().to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_ends_with_an_agent_configuration_the_agent_accepts() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new().await;
    // moto's CloudFormation skips AWS::ApiGateway::ApiKey (and the ApiKeyId
    // output): make the key the template names, as AWS would.
    world.fixture(&["api-key", "agent-key-0123456789", "fluidity-dev-agent"]);
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (config, key) = (world.path("fluidity-dev-agent.yaml"), world.path("fluidity-dev-api-key"));
    assert!(out.contains(&format!("the API key is in {}, mode 0600", key.display())), "{out}");
    assert!(out.contains("start the agent: fluidity-agent --config fluidity-dev-agent.yaml"), "{out}");
    assert!(!out.contains("agent-key-0123456789") && !err.contains("agent-key-0123456789"), "the key was printed");
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim(), "agent-key-0123456789");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let yaml = std::fs::read_to_string(&config).unwrap();
    assert!(!yaml.contains("agent-key-0123456789"), "{yaml}");

    // The agent loads it as written: URL, key file, client certificates.
    // --check then calls the API: through a local proxy that refuses it, so
    // nothing leaves this machine and the call is seen to go to the URL.
    let proxy = common::connect_proxy::ConnectProxy::start(Some("403 Forbidden")).await;
    let check = |config: &Path| {
        Command::new(common::bin_path("fluidity-agent"))
            .args(["--config", config.to_str().unwrap(), "--check", "--upstream-proxy", &proxy.url()])
            .env_remove("FLUIDITY_API_KEY")
            .current_dir(world.dir.path())
            .output()
            .unwrap()
    };
    let out = check(&config);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a failed call, not a bad configuration: {stdout}{stderr}");
    assert!(stdout.contains("control API https://") && stdout.contains("execute-api"), "{stdout}");
    assert!(stderr.contains("control API status call") && stderr.contains("refused CONNECT"), "{stderr}");
    let targets = proxy.targets();
    assert!(targets.len() == 1 && targets[0].contains(".execute-api.") && targets[0].ends_with(":443"), "{targets:?}");
    // A key file others can read is refused, as ssh refuses such a key.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A first deploy interrupted after its change set was made leaves the stack
/// in REVIEW_IN_PROGRESS, with no resources: the next deploy creates it as
/// new, with the template's desired count, not the "keep" meant for updates
/// (a new service given "keep" would start at 1: a paid server nobody asked for).
#[tokio::test(flavor = "multi_thread")]
async fn a_stack_left_in_review_is_deployed_as_new() {
    let world = World::new().await;
    let template = r#"{"Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}}}"#;
    world
        .cfn
        .create_change_set()
        .stack_name("fluidity-dev-fargate")
        .change_set_name("interrupted")
        .change_set_type(aws_sdk_cloudformation::types::ChangeSetType::Create)
        .template_body(template)
        .send()
        .await
        .unwrap();
    let stacks = world.cfn.describe_stacks().stack_name("fluidity-dev-fargate").send().await.unwrap();
    assert_eq!(stacks.stacks()[0].stack_status().map(|s| s.as_str()), Some("REVIEW_IN_PROGRESS"));
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-fargate: created"), "{out}");
    assert_eq!(world.parameter("fluidity-dev-fargate", "DesiredCount").await, "0");
}

/// An install made before the region's shared logging stack: its Lambda
/// stack holds its own `ApiGatewayLogsRole`, the region's API Gateway
/// setting points at it, and the stack policy denies deleting it (the
/// emulator enforces stack policies on updates as AWS does; see
/// tests/stack_policy.py). The next deploy recognises that role as
/// Fluidity's, deploys the shared stack and points the region at its role,
/// then removes the old role under a policy relaxed for that update only.
/// Before the migration existed this deploy called the role "not ours" and
/// its Lambda update was refused ("Action denied by stack policy").
#[tokio::test(flavor = "multi_thread")]
async fn an_install_from_before_the_shared_logging_stack_is_upgraded() {
    let world = World::new().await;
    let lambda = "fluidity-dev-lambda";
    let (code, out, err) = world.deploy(&["--param", "ApiGatewayAccountStackName=none"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // The Lambda stack as the older version made it, with its parameters.
    let old = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lambda-before-shared-logging.yaml"
    ))
    .unwrap();
    let current = world.cfn.describe_stacks().stack_name(lambda).send().await.unwrap().stacks()[0].clone();
    let parameters = current
        .parameters()
        .iter()
        .filter(|p| p.parameter_key().is_some_and(|k| old.contains(&format!("\n  {k}:\n"))))
        .cloned()
        .collect::<Vec<_>>();
    let policy =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/cloudformation/stack-policy.json")).unwrap();
    world.cfn.delete_stack().stack_name(lambda).send().await.unwrap();
    world
        .cfn
        .create_stack()
        .stack_name(lambda)
        .template_body(&old)
        .set_parameters(Some(parameters))
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
        .stack_policy_body(&policy)
        .send()
        .await
        .unwrap();
    let old_role = world.resource(lambda, "ApiGatewayLogsRole").await.expect("the old layout holds the role");
    let old_arn = format!("arn:aws:iam::123456789012:role/{old_role}");
    assert_eq!(world.fixture(&["account-role", &old_arn])["role"], old_arn.as_str());

    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("this region uses {lambda}'s own role; moving it to the shared stack {ACCOUNT}")),
        "{out}"
    );
    assert!(out.contains(&format!("stack {lambda}: removes its ApiGatewayLogsRole")), "{out}");
    assert!(out.contains(&format!("stack {lambda}: removes its NightlyKill")), "the UTC-only rule too:\n{out}");
    assert!(out.contains(&format!("stack {lambda}: updated")), "{out}");
    assert_eq!(world.live_stacks().await, [ACCOUNT, "fluidity-dev-fargate", lambda]);
    assert_eq!(world.resource(lambda, "ApiGatewayLogsRole").await, None, "the old role is gone");
    assert_eq!(world.resource(lambda, "NightlyKill").await, None, "the UTC-only rule is gone");
    let shared = world.cfn.describe_stacks().stack_name(ACCOUNT).send().await.unwrap().stacks()[0].clone();
    let shared_role = shared.outputs().iter().find(|o| o.output_key() == Some("LogsRoleArn")).unwrap();
    assert_eq!(
        world.fixture(&["account-role"])["role"],
        shared_role.output_value().unwrap(),
        "the region logs with the shared role"
    );
    assert_eq!(world.parameter(lambda, "ApiGatewayAccountStackName").await, ACCOUNT);
    let applied = world.cfn.get_stack_policy().stack_name(lambda).send().await.unwrap();
    let applied: Value = serde_json::from_str(applied.stack_policy_body().unwrap()).unwrap();
    assert_eq!(applied, serde_json::from_str::<Value>(&policy).unwrap(), "the relaxed policy lasted one update");

    // Done once: the next deploy changes nothing and moves nothing.
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("moving it") && !out.contains("removes its"), "{out}");

    // The account setting was made by a request AWS's model accepts.
    let (checked, signatures, problems) = common::model_check(&world.path("requests.jsonl"));
    assert!(problems.is_empty(), "requests AWS would refuse: {problems:#?}");
    assert!(signatures > 0, "no signature recomputed");
    assert!(checked["apigateway.UpdateAccount"].as_u64().unwrap_or(0) > 0, "UpdateAccount not checked: {checked}");
    let actions = world.deployer_check();
    assert!(actions.iter().any(|a| a == "iam:PassRole"), "the account setting passes the role: {actions:?}");
}

/// The stack policy evaluator and the emulator's enforcement of it pass
/// their own tests (tests/stack_policy_test.py).
#[test]
fn the_stack_policy_enforcement_passes_its_own_tests() {
    let output = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stack_policy_test.py"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && text.contains("OK"), "{text}");
}

/// A role created moments before is refused for the region's logging
/// setting until IAM has propagated it (the emulator refuses the first
/// UpdateAccount calls as API Gateway does then, see
/// tests/moto_launcher.py): the tool makes the setting itself and retries,
/// where a stack that sets it at once would fail and roll back.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_logging_role_is_retried_until_iam_has_made_it_usable() {
    let world = World::new().await;
    let armed = post_to_emulator(&format!("{}/fluidity-test/role-not-usable-yet?times=3", world.moto.url()));
    assert!(armed, "the emulator took the instruction");
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("API Gateway logging: waiting for IAM to make the new role usable"), "{out}");
    assert!(out.contains(&format!("this region now logs with {ACCOUNT}'s role (it used no role)")), "{out}");
    assert_eq!(
        world.parameter(ACCOUNT, "SetAccountSetting").await,
        "false",
        "the stack leaves the setting to the tool"
    );
    let shared = world.cfn.describe_stacks().stack_name(ACCOUNT).send().await.unwrap().stacks()[0].clone();
    let role = shared.outputs().iter().find(|o| o.output_key() == Some("LogsRoleArn")).unwrap();
    assert_eq!(world.fixture(&["account-role"])["role"], role.output_value().unwrap());
}

/// A shared logging stack whose creation failed (ROLLBACK_COMPLETE) holds
/// and exports nothing, and CloudFormation takes no update of it: `delete
/// --force` removes it, and `deploy` replaces it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_shared_logging_stack_is_removed_by_delete_and_replaced_by_deploy() {
    let world = World::new().await;
    world.fail_creation(ACCOUNT).await;
    let (code, out, err) = world.run(&["delete", "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("{ACCOUNT}: deleted (its creation had failed; nothing imports it)")), "{out}");
    assert!(world.live_stacks().await.is_empty(), "{:?}", world.live_stacks().await);

    world.fail_creation(ACCOUNT).await;
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "stack {ACCOUNT}: its creation had failed (nothing imports it); deleted, creating it again"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("stack {ACCOUNT}: created")), "{out}");
}

/// POSTs to the emulator's own control path; whether it answered 200.
fn post_to_emulator(url: &str) -> bool {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout) == "200"
}

/// The usual deploy is made while the server sleeps, so ECS's circuit
/// breaker never judges a new task definition (no deployment starts at
/// desired 0, nor on a later wake). The tool runs one task of it: one that
/// stops (the emulator makes the next task exit as a crashing container
/// does, see tests/moto_launcher.py) fails the deploy, and the Fargate stack
/// is put back on the previous task definition before anything else changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_task_definition_that_crashes_is_put_back() {
    let world = World::new().await;
    let crash_next = || post_to_emulator(&format!("{}/fluidity-test/crash-next-tasks?times=1", world.moto.url()));
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-fargate: the new task definition ran and was healthy"), "{out}");
    let image = world.parameter("fluidity-dev-fargate", "ContainerImage").await;

    docker_archive(&world.path("server-image.tar.gz"), "arm64", "exits at once");
    assert!(crash_next());
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let last = err.lines().last().unwrap();
    assert!(last.contains("the new task definition failed its check: Essential container in task exited"), "{err}");
    assert!(last.contains("exited with 1") && last.contains("back on the previous one"), "{last}");
    assert_eq!(world.parameter("fluidity-dev-fargate", "ContainerImage").await, image, "the stack was put back");
    assert!(!out.contains("stack fluidity-dev-lambda ("), "nothing after the Fargate stack changed:\n{out}");

    // A fixed image deploys; an unchanged task definition is not run again.
    docker_archive(&world.path("server-image.tar.gz"), "arm64", "fixed");
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("the new task definition ran and was healthy"), "{out}");
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("task definition ran"), "checked once:\n{out}");

    // A first deploy has nothing to go back to: it says so, the server asleep.
    let fresh = World::new().await;
    assert!(post_to_emulator(&format!("{}/fluidity-test/crash-next-tasks?times=1", fresh.moto.url())));
    let (code, out, err) = fresh.deploy(&[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(one_line(&err).contains("failed its check") && err.contains("the server stays asleep"), "{err}");
}

/// The ids of a `List<…>` parameter as moto shows it (`['a', 'b']`; AWS: `a,b`).
fn ids(value: &str) -> Vec<&str> {
    value.split(',').map(|s| s.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))).collect()
}

/// The agent configuration a deploy wrote (`fluidity-dev-agent.yaml` in `dir`).
fn agent_yaml(dir: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(dir.join("fluidity-dev-agent.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

/// A newcomer names no network: the region's default VPC and those of its
/// subnets that give a public IP are chosen, said in one line (in a dry run
/// too), and given to the Fargate stack; the ingress is left to Wake
/// ("caller"). Before, VpcId was a "missing required parameter".
#[tokio::test(flavor = "multi_thread")]
async fn without_a_network_the_default_vpc_and_its_public_subnets_are_used() {
    let world = World::new().await;
    let fargate = "fluidity-dev-fargate";
    let vpc = world.fixture(&["default-vpc", "add-private-subnet"]);
    let (id, public) = (vpc["vpc"].as_str().unwrap(), vpc["public"].as_array().unwrap());
    let public: Vec<&str> = public.iter().map(|s| s.as_str().unwrap()).collect();
    let private = vpc["private"][0].as_str().unwrap();
    assert!(public.len() > 1, "moto makes a default subnet per zone: {vpc}");
    let line =
        format!("network: the region's default VPC {id} and its subnets that give a public IP, {}", public.join(","));

    let (code, out, err) = world.deploy_newcomer(&["--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&line), "the dry run shows the choice:\n{out}");
    world.nothing_created().await;

    let (code, out, err) = world.deploy_newcomer(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.matches("network: ").count(), 1, "{out}");
    assert!(out.contains(&line), "{out}");
    assert!(out.find(&line) < out.find("lambda package:"), "chosen before anything is made:\n{out}");
    assert_eq!(world.parameter(fargate, "VpcId").await, id);
    assert_eq!(ids(&world.parameter(fargate, "PublicSubnets").await), public);
    assert!(!out.contains(private), "a subnet without public IPs is not chosen");
    assert_eq!(world.parameter(fargate, "AllowedIngressCidr").await, "caller");

    // The two EC2 calls are signed as AWS's model wants, and the deployer policy allows them.
    let (checked, _, problems) = common::model_check(&world.path("requests.jsonl"));
    assert!(problems.is_empty(), "requests AWS would refuse: {problems:#?}");
    for operation in ["ec2.DescribeVpcs", "ec2.DescribeSubnets"] {
        assert!(checked[operation].as_u64().unwrap_or(0) > 0, "{operation} not checked: {checked}");
    }
    let actions = world.deployer_check();
    assert!(actions.iter().any(|a| a == "ec2:DescribeSubnets"), "{actions:?}");
}

/// A region without a default VPC, or whose default VPC has no subnet that
/// gives a public IP, is refused in one line (exit 2) before anything is
/// made: no stack, bucket, repository, image or parameter.
#[tokio::test(flavor = "multi_thread")]
async fn a_region_without_a_default_vpc_is_refused_before_anything_is_made() {
    let world = World::new().await;
    let vpc = world.fixture(&["default-vpc", "no-public-subnets"]);
    let (code, out, err) = world.deploy_newcomer(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    let line = one_line(&err);
    let expected = format!("`PublicSubnets`: not given, and the default VPC {} of us-east-1 has no subnet", vpc["vpc"]);
    assert!(line.contains(&expected.replace('"', "")) && line.contains("--param PublicSubnets="), "{line}");

    // A VPC named without subnets: its own subnets that give a public IP (the test's has none).
    let (code, out, err) = world.deploy_newcomer(&["--param", &format!("VpcId={}", world.vpc)]);
    assert_eq!(code, 2, "{out}\n{err}");
    let expected = format!("`PublicSubnets`: not given, and VPC {} has no subnet that gives a public IP", world.vpc);
    assert!(one_line(&err).contains(&expected), "{err}");

    world.fixture(&["default-vpc", "delete"]);
    let (code, out, err) = world.deploy_newcomer(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    let line = one_line(&err);
    assert!(line.contains("`VpcId`: not given, and us-east-1 has no default VPC"), "{line}");
    assert!(line.contains("--param VpcId=vpc-… --param PublicSubnets=subnet-…"), "{line}");
    assert!(!out.contains("network:"), "{out}");
    world.nothing_created().await;
    assert_eq!(world.fixture(&["parameters", "/fluidity"]), serde_json::json!({}), "no certificate parameter");
}

/// The agent's configuration carries the server's port from the Fargate
/// stack (443 by default, 8443 when asked) and the name the control plane
/// keeps pointed at the server; an update that names no network keeps the
/// deployed one. Before, no port was written (the agent assumed 8443).
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_configuration_follows_the_server_port_and_name() {
    let world = World::new().await;
    let fargate = "fluidity-dev-fargate";
    let (code, out, err) = world.deploy(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let yaml = agent_yaml(world.dir.path());
    assert_eq!(yaml["lifecycle"]["server_port"], 443, "{yaml:?}");
    assert!(yaml["lifecycle"].get("server_host").is_none(), "{yaml:?}");

    let named = ["--param", "HostedZoneId=Z0123456789ABCDEFGHIJ", "--param", "ServerDomainName=tunnel.example.com"];
    let (code, out, err) = world.deploy_newcomer(&[&["--param", "ServerPort=8443"][..], &named].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    let kept = format!("network: VPC {} and subnets {}, as deployed", world.vpc, world.subnet);
    assert!(out.contains(&kept), "{out}");
    // The install was given a fixed CIDR: it keeps it (`caller` is for new
    // stacks), and the Lambda stack gets the same value, so its functions leave the group alone.
    assert!(out.contains("kept as deployed: AllowedIngressCidr=203.0.113.7/32 ("), "{out}");
    assert_eq!(world.parameter(fargate, "AllowedIngressCidr").await, "203.0.113.7/32");
    assert_eq!(world.parameter("fluidity-dev-lambda", "AllowedIngressCidr").await, "203.0.113.7/32");
    assert_eq!(world.parameter("fluidity-dev-lambda", "ServerPort").await, "8443");
    assert_eq!(world.parameter(fargate, "VpcId").await, world.vpc, "an update moves nothing");
    assert_eq!(ids(&world.parameter(fargate, "PublicSubnets").await), [world.subnet.as_str()]);
    let described = world.cfn.describe_stacks().stack_name(fargate).send().await.unwrap();
    let output = described.stacks()[0].outputs().iter().find(|o| o.output_key() == Some("ServerPort")).cloned();
    assert_eq!(output.and_then(|o| o.output_value).as_deref(), Some("8443"));
    let yaml = agent_yaml(world.dir.path());
    assert_eq!(yaml["lifecycle"]["server_port"], 8443, "{yaml:?}");
    assert_eq!(yaml["lifecycle"]["server_host"], "tunnel.example.com", "{yaml:?}");
    // The agent takes it: --check gets as far as the API call (refused by a local proxy), not exit 2.
    let proxy = common::connect_proxy::ConnectProxy::start(Some("403 Forbidden")).await;
    let out = Command::new(common::bin_path("fluidity-agent"))
        .args(["--config", "fluidity-dev-agent.yaml", "--check", "--upstream-proxy", &proxy.url()])
        .env("FLUIDITY_API_KEY", "test-key")
        .current_dir(world.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a failed call, not a bad configuration: {stderr}");
    assert!(stderr.contains("refused CONNECT"), "{stderr}");
}

/// The binary alone deploys: run from an empty directory, without
/// --templates, it uses the templates and parameter files built into it
/// (before, it looked for ./cloudformation and stopped). --templates DIR
/// still reads them from DIR, and --help says both.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_alone_deploys_from_an_empty_directory() {
    let world = World::new().await;
    let repository = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/cloudformation"));
    let empty = world.path("elsewhere");
    std::fs::create_dir(&empty).unwrap();
    let (code, help, _) = world.run_in(&empty, &["--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("built into this binary") && help.contains("--templates <DIR>"), "{help}");
    assert!(help.contains("default VPC"), "{help}");

    let (image, zip) = (world.path("server-image.tar.gz"), world.path("fluidity-lambda.zip"));
    let artifacts = ["--image", image.to_str().unwrap(), "--lambda-zip", zip.to_str().unwrap()];
    let (vpc, subnet) = (format!("VpcId={}", world.vpc), format!("PublicSubnets={}", world.subnet));
    let network = ["--param", &vpc, "--param", &subnet];
    let (code, out, err) = world.run_in(&empty, &[&["deploy"][..], &artifacts, &network].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stack fluidity-dev-lambda: created"), "{out}");
    for (stack, file) in [("fluidity-dev-fargate", "fargate.yaml"), ("fluidity-dev-lambda", "lambda.yaml")] {
        let deployed = world.cfn.get_template().stack_name(stack).send().await.unwrap();
        let built_in = std::fs::read_to_string(repository.join(file)).unwrap();
        assert_eq!(deployed.template_body(), Some(built_in.as_str()), "{stack}");
    }
    assert_eq!(world.parameter("fluidity-dev-lambda", "IdleThresholdMinutes").await, "5", "params-dev.json");
    assert!(empty.join("fluidity-dev-agent.yaml").exists(), "the agent's configuration is written here");

    // --templates DIR: its own parameter file is the one read.
    let own = world.path("own-templates");
    std::fs::create_dir(&own).unwrap();
    for entry in std::fs::read_dir(repository).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, own.join(path.file_name().unwrap())).unwrap();
    }
    let params = std::fs::read_to_string(own.join("params-dev.json")).unwrap();
    std::fs::write(
        own.join("params-dev.json"),
        params.replace(r#""IdleThresholdMinutes": "5""#, r#""IdleThresholdMinutes": "11""#),
    )
    .unwrap();
    let templates = ["--templates", own.to_str().unwrap()];
    let (code, out, err) = world.run_in(&empty, &[&templates[..], &["deploy"], &artifacts, &network].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(world.parameter("fluidity-dev-lambda", "IdleThresholdMinutes").await, "11");
    // A directory without them: one line naming the file, nothing changed.
    std::fs::remove_file(own.join("lambda.yaml")).unwrap();
    let (code, _, err) = world.run_in(&empty, &[&templates[..], &["deploy"], &artifacts, &network].concat());
    assert_eq!(code, 2);
    assert!(one_line(&err).contains(&format!("{}`: cannot read", own.join("lambda.yaml").display())), "{err}");
}
