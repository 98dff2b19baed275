//! The `deploy` command, as the steps it takes: read and check everything
//! on disk ([`plan`], no AWS call), choose the network unless it is given
//! ([`network`]), then publish the Lambda package and the server image, keep
//! the server's certificates, make sure the account has ECS's service-linked
//! role, look at what is deployed already, deploy the Fargate stack and run
//! its new task definition once, the region's shared logging stack, the
//! Lambda stack (retiring an older layout's resources), prune what older
//! deploys left, and end with the agent's configuration (the server's port
//! and name read from the stacks).

use anyhow::Context;

use super::aws::Clients;
use super::logging::{self, Shared};
use super::params::Template;
use super::plan::{Plan, plan};
use super::stack::{self, Outcome};
use super::{
    Cli, DeployArgs, Env, Error, Stacks, agent_config, apigateway, certificates, iam, network, publish, secret, verify,
};

/// Resources older versions put in the Lambda stack that lambda.yaml no
/// longer has, and why; the stack policy protects some of them, so the
/// update that removes them runs under a policy allowing exactly that.
const RETIRED: &[(&str, &str)] = &[
    (logging::OLD_ROLE, "API Gateway logs with the shared stack's role now"),
    ("NightlyKill", "the nightly stop is an EventBridge Scheduler schedule now, in NightlyStopTimeZone"),
    ("NightlyKillPermission", "the schedule invokes the function with its own role"),
];

/// `DesiredCount` on updates: the template leaves the property out.
pub const KEEP_DESIRED_COUNT: &str = "keep";

/// Runs `deploy`.
pub async fn deploy(cli: &Cli, args: &DeployArgs, stacks: &Stacks) -> Result<(), Error> {
    let mut plan = plan(cli, args, stacks)?;
    let run = Run::start(cli, args, stacks).await?;
    let deployed = run.keep_deployed_choices(&mut plan).await?;
    run.choose_network(&mut plan, deployed.as_ref()).await?;
    run.publish_package(&mut plan).await?;
    run.publish_image(&mut plan).await?;
    run.keep_certificates(&mut plan).await?;
    run.ensure_service_linked_role().await?;
    let found = run.survey(&mut plan).await?;
    run.deploy_fargate(&plan).await?;
    run.check_task_definition(&plan, &found).await?;
    run.pass_security_group(&mut plan).await?;
    run.deploy_shared_logging(&plan, &found).await?;
    run.deploy_lambda(&plan, &found).await?;
    if args.dry_run {
        return Ok(());
    }
    run.prune(&plan, &found).await?;
    super::print_outputs(&run.clients, stacks, false).await?;
    write_agent_config(cli, args, stacks, &run.clients).await
}

/// One deploy under way: its arguments and AWS clients.
struct Run<'a> {
    cli: &'a Cli,
    args: &'a DeployArgs,
    stacks: &'a Stacks,
    clients: Clients,
    account: String,
    env: &'static str,
}

/// What is deployed already, read before any stack changes.
struct Found {
    /// The region's shared logging stack, unless its setting is someone else's.
    shared: Option<Shared>,
    /// Resources of an older layout the Lambda stack still holds ([`RETIRED`]).
    retiring: Vec<(&'static str, &'static str)>,
    /// The package the Lambda stack runs now: kept as the rollback target.
    previous_key: Option<String>,
    /// The certificate path the Fargate stack reads now: kept likewise.
    previous_certificates: Option<String>,
    /// The live Fargate stack as it is (none: this deploy creates it), to put
    /// back if its new task definition fails.
    previous: Option<PreviousFargate>,
}

/// A live Fargate stack's template, parameters and task definition.
struct PreviousFargate {
    template: String,
    parameters: Vec<(String, String)>,
}

impl<'a> Run<'a> {
    async fn start(cli: &'a Cli, args: &'a DeployArgs, stacks: &'a Stacks) -> Result<Self, Error> {
        let clients = Clients::load(&cli.aws).await?;
        let account = publish::account_id(&clients).await?;
        let env = cli.env.as_str();
        let verb = if args.dry_run { "dry run for" } else { "deploying" };
        println!("{verb} fluidity {env} to account {account} in {}", clients.region);
        Ok(Self { cli, args, stacks, clients, account, env })
    }

    /// What an earlier deploy was given and this one is not (neither by
    /// `--param` nor in the parameter file) is kept: a plain `deploy` does
    /// not move the server back to 443, drop its name, or turn a fixed
    /// `AllowedIngressCidr` into `caller` (the default for new stacks only).
    /// Returns the live Fargate stack, if any (the network step reads it too).
    async fn keep_deployed_choices(
        &self,
        plan: &mut Plan,
    ) -> Result<Option<aws_sdk_cloudformation::types::Stack>, Error> {
        let cloudformation = &self.clients.cloudformation;
        let fargate = stack::find(cloudformation, &self.stacks.fargate).await?.filter(stack::is_live);
        let lambda = stack::find(cloudformation, &self.stacks.lambda).await?.filter(stack::is_live);
        let mut kept = vec![];
        for (key, deployed) in [
            ("AllowedIngressCidr", &fargate),
            ("ServerPort", &fargate),
            ("HostedZoneId", &lambda),
            ("ServerDomainName", &lambda),
        ] {
            let given = self.args.params.iter().any(|(k, _)| k == key) || plan.values.get(key).is_some();
            if let Some(value) = deployed.as_ref().and_then(|s| stack::parameter(s, key)).filter(|_| !given) {
                kept.push(format!("{key}={value}"));
                plan.values.set(key, value);
            }
        }
        if !kept.is_empty() {
            println!("kept as deployed: {} (--param KEY=VALUE changes one)", kept.join(", "));
        }
        Ok(fargate)
    }

    /// The Lambda stack admits callers to the Fargate stack's security
    /// group: its id, read from the stack just deployed (a parameter, not an
    /// import, so that the Fargate stack may replace the group).
    async fn pass_security_group(&self, plan: &mut Plan) -> Result<(), Error> {
        let fargate = stack::find(&self.clients.cloudformation, &self.stacks.fargate).await?;
        if let Some(group) = fargate.as_ref().and_then(|f| stack::output(f, "SecurityGroupId")) {
            plan.values.set("ServerSecurityGroupId", group);
        }
        Ok(())
    }

    /// The VPC and subnets when the user named none: those deployed, else the
    /// region's default ones. Before anything is made, so that a region
    /// without them changes nothing.
    async fn choose_network(
        &self,
        plan: &mut Plan,
        fargate: Option<&aws_sdk_cloudformation::types::Stack>,
    ) -> Result<(), Error> {
        let deployed =
            fargate.and_then(|f| Some((stack::parameter(f, "VpcId")?, stack::parameter(f, "PublicSubnets")?)));
        let Some(chosen) = network::choose(&self.clients, &plan.values, deployed).await? else { return Ok(()) };
        println!("{chosen}");
        plan.values.set("VpcId", &chosen.vpc);
        plan.values.set("PublicSubnets", chosen.subnets.join(","));
        Ok(())
    }

    /// Uploads the Lambda package under its hash (private bucket, made once).
    async fn publish_package(&self, plan: &mut Plan) -> Result<(), Error> {
        let Some((path, hash)) = &plan.zip else { return Ok(()) };
        let bucket = publish::bucket_name(self.env, &self.account, &self.clients.region);
        let key = publish::code_key(hash);
        if self.args.dry_run {
            println!("lambda package: would be s3://{bucket}/{key}");
        } else {
            if publish::ensure_bucket(&self.clients, &bucket).await? {
                println!("created bucket {bucket} (private)");
            }
            let uploaded = publish::upload(&self.clients, &bucket, &key, path).await?;
            println!(
                "lambda package: s3://{bucket}/{key}{}",
                if uploaded { " (uploaded)" } else { " (already there)" }
            );
        }
        plan.values.set("CodeBucket", bucket);
        plan.values.set("CodeKey", key);
        Ok(())
    }

    /// Pushes the server image under a tag from its hash, unless it is there.
    async fn publish_image(&self, plan: &mut Plan) -> Result<(), Error> {
        let Some((path, hash)) = &plan.image else { return Ok(()) };
        let (clients, account) = (&self.clients, &self.account);
        let repository = plan.values.get("ImageRepositoryName").context("ImageRepositoryName is empty")?.to_owned();
        let tag = publish::image_tag(hash);
        let reference = if self.args.dry_run {
            // The URI the repository has or will have, so that an unchanged
            // image shows no change.
            let region = &clients.region;
            let reference =
                format!("{account}.dkr.ecr.{region}.{}/{repository}:{tag}", crate::sigv4::dns_suffix(region));
            println!("server image: would be {reference}");
            reference
        } else {
            let (uri, created) = publish::ensure_repository(clients, &repository).await?;
            if created {
                println!("created image repository {uri} (immutable tags, scan on push)");
            }
            publish::expire_old_images(clients, &repository).await?;
            let reference = format!("{uri}:{tag}");
            if publish::image_exists(clients, &repository, &tag).await? {
                println!("server image: {reference} (already there)");
            } else {
                println!("server image: pushing {reference}…");
                publish::push_image(clients, &self.args.skopeo, path, &reference).await?;
                println!("server image: {reference} (pushed)");
            }
            reference
        };
        plan.values.set("ContainerImage", reference);
        Ok(())
    }

    /// Keeps the server's certificates in Parameter Store, under a path
    /// named by their content.
    async fn keep_certificates(&self, plan: &mut Plan) -> Result<(), Error> {
        let Some(tls) = &plan.tls else { return Ok(()) };
        let path = tls.path(self.env);
        if self.args.dry_run {
            println!("server certificates: would be kept in Parameter Store under {path}");
        } else {
            let change = certificates::store(&self.clients, &path, tls).await?;
            println!("server certificates: Parameter Store {path} ({change})");
        }
        plan.values.set("CertificateParameterPath", path);
        Ok(())
    }

    /// ECS's service-linked role, which a brand-new account lacks.
    async fn ensure_service_linked_role(&self) -> Result<(), Error> {
        if self.args.dry_run {
            println!("ECS service-linked role: would be created if the account lacks it");
        } else if iam::ensure_ecs_role(&self.clients).await? == iam::RoleState::Created {
            println!("ECS service-linked role: created (a new account has none, and ECS needs it)");
        }
        Ok(())
    }

    /// Reads what exists and sets the parameters that depend on it.
    async fn survey(&self, plan: &mut Plan) -> Result<Found, Error> {
        let cfn = &self.clients.cloudformation;
        let fargate = stack::find(cfn, &self.stacks.fargate).await?;
        let previous_certificates = fargate.as_ref().and_then(|f| stack::parameter(f, "CertificateParameterPath"));
        let previous = match fargate.as_ref().filter(|f| stack::is_live(f)) {
            Some(live) => Some(PreviousFargate {
                template: stack::template(cfn, &self.stacks.fargate).await?,
                parameters: live
                    .parameters()
                    .iter()
                    .filter_map(|p| Some((p.parameter_key()?.to_owned(), p.parameter_value()?.to_owned())))
                    .collect(),
            }),
            None => None,
        };
        // An update leaves the service's desired count alone (unless asked):
        // sending a value would reset it, waking a sleeping server or stopping
        // a running one.
        if fargate.as_ref().is_some_and(stack::is_live) && !self.args.params.iter().any(|(k, _)| k == "DesiredCount") {
            plan.values.set("DesiredCount", KEEP_DESIRED_COUNT);
        }
        let shared = logging::shared(&self.clients, plan.values.get("ApiGatewayAccountStackName"), self.env).await?;
        if shared.is_none() {
            plan.values.set("ApiGatewayAccountStackName", logging::NO_SHARED_STACK);
        }
        let lambda = stack::find(cfn, &self.stacks.lambda).await?;
        let mut retiring = Vec::new();
        if lambda.as_ref().is_some_and(stack::is_live) {
            for (logical_id, why) in RETIRED {
                if stack::resource(cfn, &self.stacks.lambda, logical_id).await?.is_some() {
                    retiring.push((*logical_id, *why));
                }
            }
        }
        let previous_key = lambda.as_ref().and_then(|l| stack::parameter(l, "CodeKey"));
        Ok(Found { shared, retiring, previous_key, previous_certificates, previous })
    }

    /// This environment's server: cluster, service, task definition.
    async fn deploy_fargate(&self, plan: &Plan) -> Result<(), Error> {
        self.deploy_stack(&self.stacks.fargate, &plan.fargate, "this environment's server", plan, None).await
    }

    /// The region's shared logging stack (unless the region's setting is
    /// someone else's), replacing a failed one, then the region's setting
    /// pointed at its role.
    async fn deploy_shared_logging(&self, plan: &Plan, found: &Found) -> Result<(), Error> {
        let Some(shared) = &found.shared else { return Ok(()) };
        let (poll, dry_run) = (self.cli.poll_interval, self.args.dry_run);
        if !dry_run && logging::remove_failed(&self.clients, &shared.name, poll).await? {
            println!("stack {}: its creation had failed (nothing imports it); deleted, creating it again", shared.name);
        }
        let role = "API Gateway's logging role, shared by every environment in the region";
        self.deploy_stack(&shared.name, &plan.account, role, plan, None).await?;
        if !dry_run && let Some(before) = logging::point_region_at(&self.clients, &shared.name, poll).await? {
            println!("API Gateway logging: this region now logs with {}'s role (it used {before})", shared.name);
        }
        Ok(())
    }

    /// This environment's control plane (it imports both stacks above);
    /// resources of an older layout leave it under a stack policy that allows
    /// exactly their removal, for this update only.
    async fn deploy_lambda(&self, plan: &Plan, found: &Found) -> Result<(), Error> {
        let lambda = &self.stacks.lambda;
        if self.args.dry_run && (found.previous.is_none() || found.shared.as_ref().is_some_and(|s| !s.exists)) {
            println!(
                "stack {lambda}: not shown in this dry run (it imports the outputs of stacks that do not exist yet)"
            );
            return Ok(());
        }
        let relaxed = if found.retiring.is_empty() {
            None
        } else {
            for (logical_id, why) in &found.retiring {
                println!("stack {lambda}: removes its {logical_id} ({why})");
            }
            println!("stack {lambda}: the stack policy allows exactly those removals, for this update only");
            let removed: Vec<&str> = found.retiring.iter().map(|(id, _)| *id).collect();
            Some(stack::policy_allowing_removal(&plan.policy, &removed)?)
        };
        self.deploy_stack(lambda, &plan.lambda, "this environment's control plane", plan, relaxed).await
    }

    /// Runs the Fargate stack's task definition once if it is new (see
    /// [`verify`]); one that fails puts the stack back as it was.
    async fn check_task_definition(&self, plan: &Plan, found: &Found) -> Result<(), Error> {
        if self.args.dry_run {
            return Ok(());
        }
        let fargate = &self.stacks.fargate;
        let described =
            stack::find(&self.clients.cloudformation, fargate).await?.context("the Fargate stack is gone")?;
        let output = |key| stack::output(&described, key).with_context(|| format!("{fargate} has no {key} output"));
        let (cluster, service, definition) =
            (output("ClusterName")?, output("ServiceName")?, output("TaskDefinitionArn")?);
        if verify::is_checked(&self.clients, &definition).await? {
            return Ok(());
        }
        let poll = self.cli.poll_interval;
        // A check that cannot finish is no pass: the stack goes back too.
        let verdict = verify::task_definition(&self.clients, &cluster, &service, &definition, poll)
            .await
            .unwrap_or_else(|e| verify::Verdict::Failed(format!("the check could not finish: {e:#}")));
        match verdict {
            verify::Verdict::Healthy => {
                verify::mark_checked(&self.clients, &definition).await?;
                println!("stack {fargate}: the new task definition ran and was healthy (one task, stopped again)");
                Ok(())
            }
            verify::Verdict::JudgedByTheService => {
                println!("stack {fargate}: the running service's deployment judges the new task definition");
                Ok(())
            }
            verify::Verdict::Failed(reason) => {
                let Some(previous) = &found.previous else {
                    return Err(anyhow::anyhow!(
                        "the new task definition failed its check: {reason}; the server stays asleep; fix the image or the certificates and deploy again"
                    )
                    .into());
                };
                println!(
                    "stack {fargate}: the new task definition failed its check ({reason}); putting the stack back"
                );
                // The service's desired count is left as it is now (the
                // user may have woken the server meanwhile).
                let keep = previous.template.contains(KEEP_DESIRED_COUNT);
                let parameters = previous
                    .parameters
                    .iter()
                    .map(|(k, v)| match k.as_str() {
                        "DesiredCount" if keep => (k.clone(), KEEP_DESIRED_COUNT.to_owned()),
                        _ => (k.clone(), v.clone()),
                    })
                    .collect();
                let request = stack::Request {
                    name: fargate,
                    template_body: &previous.template,
                    parameters,
                    stack_policy: &plan.policy,
                    policy_during_update: None,
                    dry_run: false,
                    poll,
                };
                stack::deploy(&self.clients.cloudformation, &request).await?;
                Err(anyhow::anyhow!(
                    "the new task definition failed its check: {reason}; {fargate} is back on the previous one and nothing else was changed"
                )
                .into())
            }
        }
    }

    async fn deploy_stack(
        &self,
        name: &str,
        template: &Template,
        role: &str,
        plan: &Plan,
        policy_during_update: Option<String>,
    ) -> Result<(), Error> {
        println!("stack {name} ({role}):");
        let request = stack::Request {
            name,
            template_body: &template.body,
            parameters: plan.values.for_template(template)?,
            stack_policy: &plan.policy,
            policy_during_update,
            dry_run: self.args.dry_run,
            poll: self.cli.poll_interval,
        };
        let outcome = stack::deploy(&self.clients.cloudformation, &request).await?;
        let said = match outcome {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::NoChanges => "no changes",
            Outcome::DryRun => "dry run, nothing changed",
        };
        println!("stack {name}: {said}");
        // Production stacks cannot be deleted by accident (`delete --force`
        // lifts it); the region's shared stack is not an environment's.
        let shared = [&self.stacks.fargate, &self.stacks.lambda].into_iter().all(|s| s != name);
        if self.cli.env == Env::Prod && !shared && !self.args.dry_run {
            stack::protect(&self.clients.cloudformation, name, true).await?;
            println!("stack {name}: termination protection on");
        }
        Ok(())
    }

    /// Removes Lambda packages and certificate paths older than the current
    /// and the previous one (a rollback's target), and the secret an earlier
    /// version kept the certificates in, which the stack no longer reads.
    async fn prune(&self, plan: &Plan, found: &Found) -> Result<(), Error> {
        if plan.zip.is_some()
            && let (Some(bucket), Some(key)) = (plan.values.get("CodeBucket"), plan.values.get("CodeKey"))
        {
            let removed =
                publish::prune_packages(&self.clients, bucket, &kept(Some(key), found.previous_key.as_deref())).await?;
            if removed > 0 {
                println!("lambda package: removed {removed} older package(s) (kept the current and the previous one)");
            }
        }
        if plan.tls.is_some() {
            let current = plan.values.get("CertificateParameterPath");
            let keep = kept(current, found.previous_certificates.as_deref());
            let removed = certificates::prune(&self.clients, self.env, &keep).await?;
            if removed > 0 {
                println!("server certificates: removed {removed} older set(s) (kept the current and the previous one)");
            }
            let legacy = secret::name(self.env);
            if secret::delete(&self.clients, &legacy).await? {
                println!(
                    "server certificates: deleted the Secrets Manager secret {legacy} an earlier version kept them in \
                     (it cost $0.40 a month; Parameter Store costs nothing)"
                );
            }
        }
        Ok(())
    }
}

/// The current and the previous value, those there are.
fn kept<'v>(current: Option<&'v str>, previous: Option<&'v str>) -> Vec<&'v str> {
    [current, previous].into_iter().flatten().filter(|v| !v.is_empty()).collect()
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
    let fargate = stack::find(&clients.cloudformation, &stacks.fargate).await?;
    let port = server_port(fargate.as_ref(), &stacks.fargate)?;
    // Both set, or the functions keep no record (lambda.yaml's HasServerName).
    let name = stack::parameter(&lambda, "HostedZoneId").and(stack::parameter(&lambda, "ServerDomainName"));
    let server = agent_config::Server { api_url: &api_url, port, name: name.as_deref() };
    let path = args.agent_config.clone().unwrap_or_else(|| agent_config::default_path(env));
    let written = agent_config::write(&path, env, &server, key.as_deref(), &args.certs_dir)?;
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

/// The port a stack from before `ServerPort` runs the server on.
const PORT_BEFORE_SERVER_PORT: u16 = 8443;

/// The port the server listens on: the Fargate stack's `ServerPort` output
/// (or parameter).
fn server_port(fargate: Option<&aws_sdk_cloudformation::types::Stack>, name: &str) -> anyhow::Result<u16> {
    let Some(text) = fargate.and_then(|f| stack::output(f, "ServerPort").or_else(|| stack::parameter(f, "ServerPort")))
    else {
        return Ok(PORT_BEFORE_SERVER_PORT);
    };
    text.trim().parse().with_context(|| format!("{name}'s ServerPort {text:?} is not a port number"))
}
