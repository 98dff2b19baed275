//! The deploy tool: publishes the Lambda package and the server image, then
//! creates or updates the two stacks (Fargate first, then Lambda, which
//! imports the Fargate stack's exports) through change sets; reports status
//! with drift, prints outputs, deletes.
//!
//! - [`templates`]: the templates and parameter files built into the binary.
//! - [`params`]: parameter files, overrides and template declarations (no AWS).
//! - [`plan`]: everything a deploy reads from disk, checked before any AWS call.
//! - [`network`]: the VPC and subnets, the region's default ones unless given.
//! - [`aws`]: the clients (region, profile, endpoint) and one-line SDK errors.
//! - [`publish`]: artifact bucket, content-hash Lambda key, image repository, push.
//! - [`stack`]: change sets, event streaming, deletion.
//! - [`drift`]: drift detection per resource.
//! - [`image`]: the architecture of a server image archive, checked before a push.
//! - [`apigateway`]: the value of the agent's API key (never a stack output)
//!   and the region's API Gateway logging setting.
//! - [`certificates`]: the server's certificates in Parameter Store.
//! - [`secret`]: the Secrets Manager secret earlier versions kept them in.
//! - [`iam`]: the ECS service-linked role a new account lacks.
//! - [`logging`]: the region's API Gateway logging role in its shared stack,
//!   and the move of an older install's own role there.
//! - [`agent_config`]: the agent's configuration, written after a deploy.
//! - [`steps`]: the `deploy` command, as the steps it takes.
//! - [`verify`]: one run of a new task definition before a deploy is done.

pub mod agent_config;
pub mod apigateway;
pub mod aws;
pub mod certificates;
pub mod drift;
pub mod iam;
pub mod image;
pub mod logging;
pub mod network;
pub mod params;
pub mod plan;
pub mod publish;
pub mod secret;
pub mod stack;
pub mod steps;
pub mod templates;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ConfigError;
use aws::{AwsArgs, Clients};

/// Deploys Fluidity to your AWS account and reports on it.
///
/// Two stacks per environment: fluidity-<env>-fargate (cluster, service with
/// desired count 0, task definition, security group, roles, logs) and
/// fluidity-<env>-lambda (wake/status/sleep/kill functions, API with key and
/// usage plan, schedules, alarms); and one per region shared by both
/// environments, fluidity-apigateway-account (API Gateway's logging role and
/// the region's account setting, which is a single value). The templates and
/// parameter files are built into this binary (from cloudformation/ of its
/// source; --templates DIR reads them from DIR instead). Parameters come from
/// params-<env>.json; --param KEY=VALUE overrides one. Without VpcId and
/// PublicSubnets the server goes into the region's default VPC, in its
/// subnets that give a public IP (an update keeps the deployed ones); with
/// AllowedIngressCidr left at "caller", only the address that woke the
/// server may reach it.
/// An update never changes the server's desired count: a sleeping server
/// stays asleep, and a running one comes back on the new image (the old task
/// stops first, the agent follows the new one to its new address).
///
/// The server's CA, certificate and key (ca.crt, server.crt, server.key in
/// --certs-dir, written by fluidity-certs) are kept as SecureString
/// parameters under /fluidity/<env>/server-tls/<hash>/ in Parameter Store
/// (no monthly fee), which ECS hands to the task; the image then carries
/// none. A secret an earlier version kept them in is deleted once the stack
/// no longer reads it. With --certificates image they are expected baked
/// into the image instead (FLUIDITY_IMAGE_CERTS_DIR=certs nix build --impure; the tool refuses an image without them).
///
/// Examples:
///   fluidity-deploy --env dev deploy --image "$(nix build --print-out-paths .#server-image-aarch64)" --lambda-zip "$(nix build --print-out-paths .#lambda-zip)/fluidity-lambda.zip"
///   fluidity-deploy --env dev deploy --param VpcId=vpc-0abc --param PublicSubnets=subnet-1,subnet-2 --param AllowedIngressCidr=198.51.100.7/32 …
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
    /// Read fargate.yaml, lambda.yaml, apigateway-account.yaml, stack-policy.json and params-<env>.json
    /// from DIR instead of the copies built into this binary (default: built in).
    #[arg(long, global = true, value_name = "DIR", env = "FLUIDITY_CLOUDFORMATION_DIR")]
    pub templates: Option<PathBuf>,
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
    /// Delete the Lambda stack, the Fargate stack and the certificate parameters (the bucket and image repository too with --purge).
    Delete {
        /// Really delete: without it nothing is touched.
        #[arg(long)]
        force: bool,
        /// Also delete the artifact bucket (the Lambda packages) and the image
        /// repository (every server image): nothing of this environment is
        /// left, and a later deploy uploads and pushes again.
        #[arg(long, requires = "force")]
        purge: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Override one stack parameter (repeatable), e.g. --param VpcId=vpc-0abc.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = params::parse_override)]
    pub params: Vec<(String, String)>,
    /// Parameters file (default: params-<env>.json, built in or from --templates).
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
    /// How the server gets its certificates: from Parameter Store, written by
    /// the tool from --certs-dir (the image needs none), or baked into the
    /// image. A CertificateParameterPath or CertificateSecretArn parameter of
    /// your own is used as given.
    #[arg(long, value_enum, default_value_t = Certificates::ParameterStore, env = "FLUIDITY_SERVER_CERTIFICATES")]
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
    /// SecureString parameters written from --certs-dir.
    ParameterStore,
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
        Command::Deploy(args) => steps::deploy(&cli, args, &stacks).await,
        Command::Status { no_drift } => status(&cli, &stacks, !no_drift).await,
        Command::Outputs { json } => outputs(&cli, &stacks, *json).await,
        Command::ApiKey { id } => api_key(&cli, &stacks, id.as_deref()).await,
        Command::Delete { force, purge } => delete(&cli, &stacks, *force, *purge).await,
    }
}

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

async fn delete(cli: &Cli, stacks: &Stacks, force: bool, purge: bool) -> Result<(), Error> {
    if !force {
        return Err(ConfigError::new(
            "--force",
            format!("refusing to delete {} and {} without it", stacks.lambda, stacks.fargate),
            "this removes the API, its key and the server; add --force to go ahead",
        )
        .into());
    }
    let clients = Clients::load(&cli.aws).await?;
    let env = cli.env.as_str();
    // The repository's name is the Fargate stack's parameter (read before it goes).
    let fargate = stack::find(&clients.cloudformation, &stacks.fargate).await?;
    let repository = fargate
        .as_ref()
        .and_then(|f| f.parameters().iter().find(|p| p.parameter_key() == Some("ImageRepositoryName")))
        .and_then(|p| p.parameter_value())
        .map_or_else(|| format!("fluidity-server-{env}"), str::to_owned);
    for name in [&stacks.lambda, &stacks.fargate] {
        println!("deleting {name}…");
        if stack::delete(&clients.cloudformation, name, cli.poll_interval).await? {
            println!("{name}: deleted");
        } else {
            println!("{name}: not deployed, nothing to delete");
        }
    }
    let shared_removed = logging::remove_failed(&clients, logging::ACCOUNT_STACK, cli.poll_interval).await?;
    if shared_removed {
        println!("{}: deleted (its creation had failed; nothing imports it)", logging::ACCOUNT_STACK);
    }
    let removed = certificates::prune(&clients, env, &[]).await?;
    if removed > 0 {
        println!("{}: deleted (the server's certificates)", certificates::root(env));
        // "After deleting a parameter, wait for at least 30 seconds to create
        // a parameter with the same name" (DeleteParameter, SSM API
        // Reference): a deploy right after this one writes the same names.
        println!(
            "waiting {} s: Parameter Store takes a deleted name again only after that",
            certificates::NAME_REUSE.as_secs()
        );
        tokio::time::sleep(certificates::NAME_REUSE).await;
    }
    let name = secret::name(env);
    if secret::delete(&clients, &name).await? {
        println!("{name}: deleted (an earlier version's certificate secret, without a recovery window)");
    }
    let bucket = publish::bucket_name(env, &publish::account_id(&clients).await?, &clients.region);
    let mut kept = Vec::new();
    if purge {
        let gone = |existed: bool| if existed { "deleted" } else { "not there" };
        println!("s3://{bucket}: {} (the Lambda packages)", gone(publish::delete_bucket(&clients, &bucket).await?));
        println!(
            "{repository}: {} (the server images)",
            gone(publish::delete_repository(&clients, &repository).await?)
        );
    } else {
        kept.push(format!(
            "the artifact bucket s3://{bucket} and the image repository {repository} (--purge removes them)"
        ));
    }
    if !shared_removed && stack::find(&clients.cloudformation, logging::ACCOUNT_STACK).await?.is_some() {
        kept.push(format!(
            "{}, the region's API Gateway logging role other environments may use \
             (CloudFormation refuses to delete it while one still imports it)",
            logging::ACCOUNT_STACK
        ));
    }
    // The last line says what is left, if anything.
    if !kept.is_empty() {
        println!("kept: {}", kept.join("; "));
    }
    Ok(())
}
