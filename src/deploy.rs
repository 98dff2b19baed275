//! The deploy tool: publishes the Lambda package and the server image, then
//! creates or updates the two stacks (Fargate first, then Lambda, which
//! imports the Fargate stack's exports) through change sets; reports status
//! with drift, prints outputs, deletes.
//!
//! - [`params`]: parameter files, overrides and template declarations (no AWS).
//! - [`aws`]: the clients (region, profile, endpoint) and one-line SDK errors.
//! - [`publish`]: artifact bucket, content-hash Lambda key, image repository, push.
//! - [`stack`]: change sets, event streaming, deletion.
//! - [`drift`]: drift detection per resource.
//! - [`image`]: the architecture of a server image archive, checked before a push.
//! - [`apigateway`]: the value of the agent's API key (never a stack output)
//!   and the region's API Gateway logging setting.
//! - [`secret`]: the server's certificates in Secrets Manager.
//! - [`iam`]: the ECS service-linked role a new account lacks.
//! - [`agent_config`]: the agent's configuration, written after a deploy.

pub mod agent_config;
pub mod apigateway;
pub mod aws;
pub mod drift;
pub mod iam;
pub mod image;
pub mod params;
pub mod publish;
pub mod secret;
pub mod stack;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ConfigError;
use aws::{AwsArgs, Clients};
use params::{Template, Values};
use stack::Outcome;

/// Deploys Fluidity to your AWS account and reports on it.
///
/// Two stacks per environment: fluidity-<env>-fargate (cluster, service with
/// desired count 0, task definition, security group, roles, logs) and
/// fluidity-<env>-lambda (wake/status/sleep/kill functions, API with key and
/// usage plan, schedules, alarms); and one per region shared by both
/// environments, fluidity-apigateway-account (API Gateway's logging role and
/// the region's account setting, which is a single value). Parameters come
/// from cloudformation/params-<env>.json; --param KEY=VALUE overrides one.
/// An update never changes the server's desired count: a sleeping server
/// stays asleep, and a running one comes back on the new image (the old task
/// stops first, the agent follows the new one to its new address).
///
/// The server's CA, certificate and key (ca.crt, server.crt, server.key in
/// --certs-dir, written by fluidity-certs) are kept in the Secrets Manager
/// secret fluidity-<env>-server-tls, which ECS hands to the task; the image
/// then carries none. With --certificates image they are expected baked
/// into the image instead (FLUIDITY_CERTS_DIR=certs nix build --impure).
///
/// Examples:
///   fluidity-deploy --env dev deploy --param VpcId=vpc-0abc --param PublicSubnets=subnet-1,subnet-2 --param AllowedIngressCidr=198.51.100.7/32 --image "$(nix build --print-out-paths .#server-image-aarch64)" --lambda-zip "$(nix build --print-out-paths .#lambda-zip)/fluidity-lambda.zip"
///   fluidity-deploy --env dev deploy --dry-run
///   fluidity-deploy --env dev status
///   fluidity-deploy --env dev outputs --json
///   FLUIDITY_API_KEY=$(fluidity-deploy --env dev api-key) fluidity-agent --config agent.yaml
///   fluidity-deploy --env dev delete --force
///
/// Exit codes: 0 done (including "no changes"), 1 an AWS call or a stack
/// operation failed, 2 bad parameters or arguments (nothing was changed).
#[derive(Debug, Parser)]
#[command(name = "fluidity-deploy", version, about, long_about, verbatim_doc_comment)]
pub struct Cli {
    /// Which environment: selects params-<env>.json and the stack names.
    #[arg(long, global = true, value_enum, default_value_t = Env::Dev, env = "FLUIDITY_ENV")]
    pub env: Env,
    /// Directory with fargate.yaml, lambda.yaml, apigateway-account.yaml, stack-policy.json and the parameter files.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "cloudformation",
        env = "FLUIDITY_CLOUDFORMATION_DIR"
    )]
    pub templates: PathBuf,
    /// Time between polls while waiting for CloudFormation (e.g. 5s, 500ms).
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = crate::config::parse_duration)]
    pub poll_interval: Duration,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Env {
    Dev,
    Prod,
}

impl Env {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Prod => "prod",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish the artifacts and create or update the stacks (Fargate, the region's shared logging stack, then Lambda).
    Deploy(DeployArgs),
    /// Stack states, drift per resource, the server's desired/running count, the API URL.
    Status {
        /// Skip drift detection (it takes a few seconds per stack).
        #[arg(long)]
        no_drift: bool,
    },
    /// Print both stacks' outputs.
    Outputs {
        /// As one JSON object: {"<stack>": {"<key>": "<value>"}}.
        #[arg(long)]
        json: bool,
    },
    /// Print the value of the agent's API key (stdout only), for the agent's
    /// `lifecycle.api_key` or FLUIDITY_API_KEY.
    ApiKey {
        /// The key's id (default: the Lambda stack's ApiKeyId output).
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete the Lambda stack, the Fargate stack and the certificate secret (the bucket and image repository are kept).
    Delete {
        /// Really delete: without it nothing is touched.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Override one stack parameter (repeatable), e.g. --param VpcId=vpc-0abc.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = params::parse_override)]
    pub params: Vec<(String, String)>,
    /// Parameters file (default: <templates>/params-<env>.json).
    #[arg(long = "params", value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// The Lambda package (`nix build .#lambda-zip`); uploaded under its SHA-256.
    /// Not needed when CodeBucket and CodeKey are given as parameters.
    #[arg(long, value_name = "ZIP", env = "FLUIDITY_LAMBDA_ZIP")]
    pub lambda_zip: Option<PathBuf>,
    /// The server image archive for the task's CpuArchitecture (default ARM64:
    /// `nix build .#server-image-aarch64`; X86_64: `.#server-image-x86_64`);
    /// pushed with a tag from its SHA-256. An archive built for another
    /// architecture is refused before anything is pushed. Not needed when
    /// ContainerImage is given as a parameter.
    #[arg(long, value_name = "ARCHIVE", env = "FLUIDITY_SERVER_IMAGE")]
    pub image: Option<PathBuf>,
    /// How the server gets its certificates: from a Secrets Manager secret the
    /// tool writes from --certs-dir (the image needs none), or baked into the
    /// image. A CertificateSecretArn parameter of your own is used as given.
    #[arg(long, value_enum, default_value_t = Certificates::SecretsManager, env = "FLUIDITY_SERVER_CERTIFICATES")]
    pub certificates: Certificates,
    /// Directory with the server's ca.crt, server.crt and server.key (fluidity-certs writes them).
    #[arg(long, value_name = "DIR", default_value = "certs", env = "FLUIDITY_CERTS_DIR")]
    pub certs_dir: PathBuf,
    /// Where to write the agent's configuration after the deploy (default
    /// fluidity-<env>-agent.yaml here; the API key goes beside it, mode 0600).
    #[arg(long, value_name = "FILE", env = "FLUIDITY_AGENT_CONFIG")]
    pub agent_config: Option<PathBuf>,
    /// The skopeo program used to push the image.
    #[arg(long, value_name = "PATH", default_value = "skopeo", env = "FLUIDITY_SKOPEO")]
    pub skopeo: PathBuf,
    /// Show each stack's change set and change nothing (no bucket, upload, push or stack change).
    #[arg(long)]
    pub dry_run: bool,
}

/// Where the server's certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Certificates {
    /// A Secrets Manager secret written from --certs-dir.
    SecretsManager,
    /// Baked into the image (nothing is stored in AWS).
    Image,
}

/// A failure: bad input (exit 2, nothing changed) or a failed operation (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// The names of one environment's stacks.
pub struct Stacks {
    pub fargate: String,
    pub lambda: String,
}

impl Stacks {
    pub fn of(env: Env) -> Self {
        Self {
            fargate: format!("fluidity-{}-fargate", env.as_str()),
            lambda: format!("fluidity-{}-lambda", env.as_str()),
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let stacks = Stacks::of(cli.env);
    match &cli.command {
        Command::Deploy(args) => deploy(&cli, args, &stacks).await,
        Command::Status { no_drift } => status(&cli, &stacks, !no_drift).await,
        Command::Outputs { json } => outputs(&cli, &stacks, *json).await,
        Command::ApiKey { id } => api_key(&cli, &stacks, id.as_deref()).await,
        Command::Delete { force } => delete(&cli, &stacks, *force).await,
    }
}

/// Everything a deploy needs from disk, read and checked before any AWS call.
struct Plan {
    fargate: Template,
    /// The region's shared API Gateway logging setting (apigateway-account.yaml).
    account: Template,
    lambda: Template,
    policy: String,
    values: Values,
    /// (path, sha256) of the Lambda package, unless CodeBucket/CodeKey are given.
    zip: Option<(PathBuf, String)>,
    /// (path, sha256) of the image archive, unless ContainerImage is given.
    image: Option<(PathBuf, String)>,
    /// The server's certificates, to be kept in Secrets Manager.
    tls: Option<secret::ServerTls>,
}

fn plan(cli: &Cli, args: &DeployArgs, stacks: &Stacks) -> Result<Plan, ConfigError> {
    let fargate = Template::load(&cli.templates.join("fargate.yaml"))?;
    let lambda = Template::load(&cli.templates.join("lambda.yaml"))?;
    let account = Template::load(&cli.templates.join("apigateway-account.yaml"))?;
    let policy_path = cli.templates.join("stack-policy.json");
    let policy = std::fs::read_to_string(&policy_path).map_err(|e| {
        ConfigError::new(
            policy_path.display().to_string(),
            format!("cannot read: {e}"),
            "restore it from the repository",
        )
    })?;
    serde_json::from_str::<serde_json::Value>(&policy).map_err(|e| {
        ConfigError::new(policy_path.display().to_string(), format!("not valid JSON: {e}"), "fix the stack policy")
    })?;
    let params_path =
        args.params_file.clone().unwrap_or_else(|| cli.templates.join(format!("params-{}.json", cli.env.as_str())));
    let mut values = Values::load(&params_path)?;
    values.apply(&args.params);
    values.set("FargateStackName", &stacks.fargate);
    values.check(&[&fargate, &lambda, &account])?;
    let zip = match (values.get("CodeBucket"), values.get("CodeKey")) {
        (Some(_), Some(_)) => None,
        _ => Some(artifact(
            args.lambda_zip.as_deref(),
            "--lambda-zip",
            "the Lambda package (nix build .#lambda-zip), or --param CodeBucket=… --param CodeKey=…",
        )?),
    };
    let image = match values.get("ContainerImage") {
        Some(_) => None,
        None => Some(artifact(
            args.image.as_deref(),
            "--image",
            "the server image archive (nix build .#server-image-aarch64 for the default ARM64 task), or --param ContainerImage=URI",
        )?),
    };
    if let Some((path, _)) = &image {
        check_architecture(path, values.get("CpuArchitecture").unwrap_or("ARM64"))?;
    }
    let own_secret = values.get("CertificateSecretArn").is_some();
    let tls = match args.certificates {
        Certificates::SecretsManager if !own_secret => Some(secret::ServerTls::load(&args.certs_dir)?),
        _ => None,
    };
    Ok(Plan { fargate, account, lambda, policy, values, zip, image, tls })
}

/// Refuses an image archive built for another CPU than the task's.
fn check_architecture(path: &Path, cpu_architecture: &str) -> Result<(), ConfigError> {
    let Some(wanted) = image::docker_architecture(cpu_architecture) else {
        return Err(ConfigError::new(
            "CpuArchitecture",
            format!("unknown value {cpu_architecture}"),
            "use ARM64 or X86_64",
        ));
    };
    let package = if wanted == "arm64" { "server-image-aarch64" } else { "server-image-x86_64" };
    let found = image::architecture(path).map_err(|e| {
        ConfigError::new("--image", e.to_string(), format!("pass the archive `nix build .#{package}` writes"))
    })?;
    if found != wanted {
        let mut fix = format!("pass the archive of nix build .#{package}");
        if let Some(other) = ["ARM64", "X86_64"].into_iter().find(|a| image::docker_architecture(a) == Some(&found)) {
            fix += &format!(", or run the task on it with --param CpuArchitecture={other}");
        }
        return Err(ConfigError::new(
            "--image",
            format!("{} is an {found} image but the task's CpuArchitecture is {cpu_architecture}", path.display()),
            fix,
        ));
    }
    Ok(())
}

fn artifact(path: Option<&Path>, flag: &str, what: &str) -> Result<(PathBuf, String), ConfigError> {
    let Some(path) = path else {
        return Err(ConfigError::new(flag, "not given", format!("pass {what}")));
    };
    let hash =
        publish::file_sha256(path).map_err(|e| ConfigError::new(flag, format!("{e:#}"), format!("pass {what}")))?;
    Ok((path.to_path_buf(), hash))
}

async fn deploy(cli: &Cli, args: &DeployArgs, stacks: &Stacks) -> Result<(), Error> {
    let mut plan = plan(cli, args, stacks)?;
    let clients = Clients::load(&cli.aws).await?;
    let account = publish::account_id(&clients).await?;
    let env = cli.env.as_str();
    let verb = if args.dry_run { "dry run for" } else { "deploying" };
    println!("{verb} fluidity {env} to account {account} in {}", clients.region);

    if let Some((path, hash)) = &plan.zip {
        let bucket = publish::bucket_name(env, &account, &clients.region);
        let key = publish::code_key(hash);
        if args.dry_run {
            println!("lambda package: would be s3://{bucket}/{key}");
        } else {
            if publish::ensure_bucket(&clients, &bucket).await? {
                println!("created bucket {bucket} (private)");
            }
            let uploaded = publish::upload(&clients, &bucket, &key, path).await?;
            println!(
                "lambda package: s3://{bucket}/{key}{}",
                if uploaded { " (uploaded)" } else { " (already there)" }
            );
        }
        plan.values.set("CodeBucket", bucket);
        plan.values.set("CodeKey", key);
    }
    if let Some((path, hash)) = &plan.image {
        let repository = plan.values.get("ImageRepositoryName").context("ImageRepositoryName is empty")?.to_owned();
        let tag = publish::image_tag(hash);
        let reference = if args.dry_run {
            // The URI the repository has or will have, so that an unchanged
            // image shows no change.
            format!("{account}.dkr.ecr.{}.amazonaws.com/{repository}:{tag}", clients.region)
        } else {
            let (uri, created) = publish::ensure_repository(&clients, &repository).await?;
            if created {
                println!("created image repository {uri} (immutable tags, scan on push)");
            }
            publish::expire_old_images(&clients, &repository).await?;
            let reference = format!("{uri}:{tag}");
            if publish::image_exists(&clients, &repository, &tag).await? {
                println!("server image: {reference} (already there)");
            } else {
                println!("server image: pushing {reference}…");
                publish::push_image(&clients, &args.skopeo, path, &reference).await?;
                println!("server image: {reference} (pushed)");
            }
            reference
        };
        if args.dry_run {
            println!("server image: would be {reference}");
        }
        plan.values.set("ContainerImage", reference);
    }

    if let Some(tls) = &plan.tls {
        let name = secret::name(env);
        let stored = if args.dry_run {
            println!("server certificates: would be kept in Secrets Manager as {name}");
            secret::current(&clients, &name).await?
        } else {
            let stored = secret::store(&clients, &name, tls).await?;
            println!("server certificates: secret {name} ({})", stored.change);
            Some((stored.arn, stored.version))
        };
        if let Some((arn, version)) = stored {
            plan.values.set("CertificateSecretArn", arn);
            plan.values.set("CertificateSecretVersionId", version);
        }
    }

    if args.dry_run {
        println!("ECS service-linked role: would be created if the account lacks it");
    } else if iam::ensure_ecs_role(&clients).await? == iam::RoleState::Created {
        println!("ECS service-linked role: created (a new account has none, and ECS needs it)");
    }

    let fargate = stack::find(&clients.cloudformation, &stacks.fargate).await?;
    // An update leaves the service's desired count alone (unless asked):
    // sending a value would reset it, waking a sleeping server or stopping
    // a running one.
    if fargate.as_ref().is_some_and(stack::is_live) && !args.params.iter().any(|(k, _)| k == "DesiredCount") {
        plan.values.set("DesiredCount", KEEP_DESIRED_COUNT);
    }
    let shared = shared_logging(&clients, plan.values.get("ApiGatewayAccountStackName"), env).await?;
    if shared.is_none() {
        plan.values.set("ApiGatewayAccountStackName", NO_SHARED_STACK);
    }
    let account_missing = shared.as_ref().is_some_and(|(_, exists)| !exists);
    let account_stack = shared.map(|(name, _)| name);
    // The package the Lambda stack runs now: kept as the rollback target.
    let previous_key = match stack::find(&clients.cloudformation, &stacks.lambda).await? {
        Some(lambda) => lambda
            .parameters()
            .iter()
            .find(|p| p.parameter_key() == Some("CodeKey"))
            .and_then(|p| p.parameter_value())
            .map(str::to_owned),
        None => None,
    };
    let mut order = vec![(&stacks.fargate, &plan.fargate, "this environment's server")];
    if let Some(name) = &account_stack {
        order.push((name, &plan.account, "API Gateway's logging role, shared by every environment in the region"));
    }
    order.push((&stacks.lambda, &plan.lambda, "this environment's control plane"));
    for (name, template, role) in order {
        if args.dry_run && *name == stacks.lambda && (!fargate.as_ref().is_some_and(stack::is_live) || account_missing)
        {
            println!(
                "stack {name}: not shown in this dry run (it imports the outputs of stacks that do not exist yet)"
            );
            continue;
        }
        println!("stack {name} ({role}):");
        let request = stack::Request {
            name,
            template_body: &template.body,
            parameters: plan.values.for_template(template)?,
            stack_policy: &plan.policy,
            dry_run: args.dry_run,
            poll: cli.poll_interval,
        };
        let outcome = stack::deploy(&clients.cloudformation, &request).await?;
        println!(
            "stack {name}: {}",
            match outcome {
                Outcome::Created => "created",
                Outcome::Updated => "updated",
                Outcome::NoChanges => "no changes",
                Outcome::DryRun => "dry run, nothing changed",
            }
        );
        // Production stacks cannot be deleted by accident (`delete --force` lifts it).
        if cli.env == Env::Prod && Some(name) != account_stack.as_ref() && !args.dry_run {
            stack::protect(&clients.cloudformation, name, true).await?;
            println!("stack {name}: termination protection on");
        }
    }
    if args.dry_run {
        return Ok(());
    }
    if plan.zip.is_some()
        && let (Some(bucket), Some(key)) = (plan.values.get("CodeBucket"), plan.values.get("CodeKey"))
    {
        let keep: Vec<&str> = [Some(key), previous_key.as_deref()].into_iter().flatten().collect();
        let removed = publish::prune_packages(&clients, bucket, &keep).await?;
        if removed > 0 {
            println!("lambda package: removed {removed} older package(s) (kept the current and the previous one)");
        }
    }
    print_outputs(&clients, stacks, false).await?;
    write_agent_config(cli, args, stacks, &clients).await
}

/// Ends a deploy with the agent's configuration for this environment and
/// the one command that starts the agent with it.
async fn write_agent_config(cli: &Cli, args: &DeployArgs, stacks: &Stacks, clients: &Clients) -> Result<(), Error> {
    let env = cli.env.as_str();
    let Some(lambda) = stack::find(&clients.cloudformation, &stacks.lambda).await? else { return Ok(()) };
    let Some(api_url) = stack::output(&lambda, "ApiUrl") else {
        println!("agent configuration: not written ({} has no ApiUrl output)", stacks.lambda);
        return Ok(());
    };
    // The key's value is never an output: its id is (ApiKeyId), else the
    // key is found by the name the template gives it.
    let key = match stack::output(&lambda, "ApiKeyId") {
        Some(id) => Some(apigateway::key_value(clients, &id).await?),
        None => apigateway::key_value_by_name(clients, &format!("fluidity-{env}-agent")).await?,
    };
    let path = args.agent_config.clone().unwrap_or_else(|| agent_config::default_path(env));
    let written = agent_config::write(&path, env, &api_url, key.as_deref(), &args.certs_dir)?;
    match &written.key {
        Some(key) => println!(
            "agent configuration: {} (the API key is in {}, mode 0600)",
            written.config.display(),
            key.display()
        ),
        None => println!(
            "agent configuration: {} (no API key found: set FLUIDITY_API_KEY=$(fluidity-deploy --env {env} api-key --id KEY_ID))",
            written.config.display()
        ),
    }
    if let Some(kept) = &written.kept {
        println!("agent configuration: kept your edited {}; compare it with the new one", kept.display());
    }
    println!("start the agent: fluidity-agent --config {}", written.config.display());
    Ok(())
}

/// The stack of the region's API Gateway logging setting (apigateway-account.yaml).
pub const ACCOUNT_STACK: &str = "fluidity-apigateway-account";

/// `ApiGatewayAccountStackName` when the region's setting is someone else's.
pub const NO_SHARED_STACK: &str = "none";

/// Whether to deploy the shared logging stack `name` (and whether it exists
/// yet): yes when the region's API Gateway account setting is unset or is
/// that stack's role; no (and say so) when it names a role someone else
/// set, which is left alone, or when the user passed
/// `ApiGatewayAccountStackName=none`.
async fn shared_logging(clients: &Clients, name: Option<&str>, env: &str) -> Result<Option<(String, bool)>, Error> {
    let Some(name) = name.filter(|n| *n != NO_SHARED_STACK) else { return Ok(None) };
    let region_role = apigateway::logs_role(clients)
        .await
        .context("cannot read this region's API Gateway account setting (apigateway:GET on /account)")?;
    let existing = stack::find(&clients.cloudformation, name).await?;
    let exists = existing.is_some();
    let Some(region_role) = region_role else { return Ok(Some((name.to_owned(), exists))) };
    let ours = existing.and_then(|s| stack::output(&s, "LogsRoleArn"));
    if ours.as_deref() == Some(region_role.as_str()) {
        return Ok(Some((name.to_owned(), exists)));
    }
    println!(
        "API Gateway logging: this region's account setting uses {region_role}, which Fluidity did not set; \
         leaving it alone (that role must be able to write /aws/apigateway/fluidity-{env}-access)"
    );
    Ok(None)
}

/// `DesiredCount` on updates: the template leaves the property out.
pub const KEEP_DESIRED_COUNT: &str = "keep";

async fn status(cli: &Cli, stacks: &Stacks, with_drift: bool) -> Result<(), Error> {
    let clients = Clients::load(&cli.aws).await?;
    let cfn = &clients.cloudformation;
    let mut found = Vec::new();
    for name in [&stacks.fargate, &stacks.lambda] {
        let Some(described) = stack::find(cfn, name).await? else {
            println!("{name}: not deployed");
            found.push(None);
            continue;
        };
        let status = described.stack_status().map_or("UNKNOWN", |s| s.as_str());
        let when =
            described.last_updated_time().or(described.creation_time()).map(|t| t.to_string()).unwrap_or_default();
        println!("{name}: {status} (last change {when})");
        if with_drift {
            match drift::detect(cfn, name, cli.poll_interval).await {
                Ok(report) => {
                    println!("  drift: {}", report.stack);
                    for r in &report.resources {
                        println!("    {:<12} {} ({})", r.status, r.logical_id, r.resource_type);
                        for difference in &r.differences {
                            println!("                 {difference}");
                        }
                    }
                }
                Err(e) => println!("  drift: unavailable ({e:#})"),
            }
        }
        found.push(Some(described));
    }
    if let Some(Some(fargate)) = found.first()
        && let (Some(cluster), Some(service)) =
            (stack::output(fargate, "ClusterName"), stack::output(fargate, "ServiceName"))
    {
        match clients.ecs.describe_services().cluster(&cluster).services(&service).send().await {
            Ok(described) => match described.services().first() {
                Some(s) => println!(
                    "server: desired {}, running {}, pending {} (service {service} in {cluster})",
                    s.desired_count(),
                    s.running_count(),
                    s.pending_count()
                ),
                None => println!("server: service {service} not found in cluster {cluster}"),
            },
            Err(e) => println!("server: unknown ({})", aws::describe(&e)),
        }
    }
    if let Some(Some(lambda)) = found.get(1)
        && let Some(url) = stack::output(lambda, "ApiUrl")
    {
        println!("api: {url}");
    }
    Ok(())
}

async fn outputs(cli: &Cli, stacks: &Stacks, json: bool) -> Result<(), Error> {
    let clients = Clients::load(&cli.aws).await?;
    print_outputs(&clients, stacks, json).await
}

async fn print_outputs(clients: &Clients, stacks: &Stacks, json: bool) -> Result<(), Error> {
    let mut all = Vec::new();
    for name in [&stacks.fargate, &stacks.lambda] {
        if let Some(described) = stack::find(&clients.cloudformation, name).await? {
            all.push((name.clone(), stack::outputs(&described)));
        }
    }
    if all.is_empty() {
        return Err(anyhow::anyhow!("neither {} nor {} exists; deploy first", stacks.fargate, stacks.lambda).into());
    }
    if json {
        let object: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|(name, outputs)| {
                let values =
                    outputs.iter().map(|(k, v, _)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
                (name.clone(), serde_json::Value::Object(values))
            })
            .collect();
        println!("{}", serde_json::Value::Object(object));
        return Ok(());
    }
    let rows: Vec<(&str, &str, &str)> = all
        .iter()
        .flat_map(|(name, outputs)| outputs.iter().map(move |(k, v, _)| (name.as_str(), k.as_str(), v.as_str())))
        .collect();
    let stack_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
    let key_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(6);
    println!("{:<stack_width$}  {:<key_width$}  VALUE", "STACK", "OUTPUT");
    for (name, key, value) in rows {
        println!("{name:<stack_width$}  {key:<key_width$}  {value}");
    }
    Ok(())
}

async fn api_key(cli: &Cli, stacks: &Stacks, id: Option<&str>) -> Result<(), Error> {
    let clients = Clients::load(&cli.aws).await?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => {
            let Some(lambda) = stack::find(&clients.cloudformation, &stacks.lambda).await? else {
                return Err(anyhow::anyhow!("{} does not exist; deploy first (or pass --id)", stacks.lambda).into());
            };
            stack::output(&lambda, "ApiKeyId")
                .with_context(|| format!("{} has no ApiKeyId output; pass --id", stacks.lambda))?
        }
    };
    println!("{}", apigateway::key_value(&clients, &id).await?);
    Ok(())
}

async fn delete(cli: &Cli, stacks: &Stacks, force: bool) -> Result<(), Error> {
    if !force {
        return Err(ConfigError::new(
            "--force",
            format!("refusing to delete {} and {} without it", stacks.lambda, stacks.fargate),
            "this removes the API, its key and the server; add --force to go ahead",
        )
        .into());
    }
    let clients = Clients::load(&cli.aws).await?;
    for name in [&stacks.lambda, &stacks.fargate] {
        println!("deleting {name}…");
        if stack::delete(&clients.cloudformation, name, cli.poll_interval).await? {
            println!("{name}: deleted");
        } else {
            println!("{name}: not deployed, nothing to delete");
        }
    }
    let name = secret::name(cli.env.as_str());
    if secret::delete(&clients, &name).await? {
        println!("{name}: deleted (the server's certificates, without a recovery window)");
    }
    println!("kept: the artifact bucket and the image repository (delete them by hand when no longer needed)");
    println!(
        "kept: {ACCOUNT_STACK}, the region's API Gateway logging setting other environments may use \
         (CloudFormation refuses to delete it while one still imports it)"
    );
    Ok(())
}
