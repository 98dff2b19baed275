//! Everything a deploy needs from disk — templates, the stack policy and
//! parameters (built in, or from `--templates DIR`), the artifacts' hashes
//! and architecture, the certificates — read and checked before any AWS
//! call: a mistake is one line and exit 2, and nothing has changed.

use std::path::{Path, PathBuf};

use super::params::{Template, Values};
use super::{Certificates, Cli, DeployArgs, Stacks, certificates, image, network, publish, templates};
use crate::config::ConfigError;

/// Everything a deploy needs from disk, read and checked before any AWS call.
pub struct Plan {
    pub fargate: Template,
    /// The region's shared API Gateway logging setting (apigateway-account.yaml).
    pub account: Template,
    pub lambda: Template,
    pub policy: String,
    pub values: Values,
    /// (path, sha256) of the Lambda package, unless CodeBucket/CodeKey are given.
    pub zip: Option<(PathBuf, String)>,
    /// (path, sha256) of the image archive, unless ContainerImage is given.
    pub image: Option<(PathBuf, String)>,
    /// The server's certificates, to be kept in Parameter Store.
    pub tls: Option<certificates::ServerTls>,
}

pub fn plan(cli: &Cli, args: &DeployArgs, stacks: &Stacks) -> Result<Plan, ConfigError> {
    let dir = cli.templates.as_deref();
    let template = |name| templates::read(dir, name).and_then(|f| Template::parse(&f.path, f.text));
    let (fargate, lambda, account) =
        (template("fargate.yaml")?, template("lambda.yaml")?, template("apigateway-account.yaml")?);
    let policy = templates::read(dir, "stack-policy.json")?;
    serde_json::from_str::<serde_json::Value>(&policy.text).map_err(|e| {
        ConfigError::new(policy.path.display().to_string(), format!("not valid JSON: {e}"), "fix the stack policy")
    })?;
    let mut values = match &args.params_file {
        Some(path) => Values::load(path)?,
        None => {
            let file = templates::read(dir, &format!("params-{}.json", cli.env.as_str()))?;
            Values::from_text(&file.path, &file.text)?
        }
    };
    values.apply(&args.params);
    values.set("FargateStackName", &stacks.fargate);
    // The tool makes the region's logging setting itself, with retries
    // (logging::point_region_at); the shared stack only holds the role.
    if values.get("SetAccountSetting").is_none() {
        values.set("SetAccountSetting", "false");
    }
    values.check(&[&fargate, &lambda, &account])?;
    network::check(&values)?;
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
        let baked = args.certificates == Certificates::Image;
        check_image(path, values.get("CpuArchitecture").unwrap_or("ARM64"), baked)?;
    }
    let own = values.get("CertificateSecretArn").is_some() || values.get("CertificateParameterPath").is_some();
    let tls = match args.certificates {
        Certificates::ParameterStore if !own => Some(certificates::ServerTls::load(&args.certs_dir)?),
        _ => None,
    };
    Ok(Plan { fargate, account, lambda, policy: policy.text, values, zip, image, tls })
}

/// What `--certificates image` needs in the image (nix/image.nix bakes them there).
const BAKED: [&str; 3] =
    ["etc/fluidity/certs/ca.crt", "etc/fluidity/certs/server.crt", "etc/fluidity/certs/server.key"];

/// Refuses an image archive built for another CPU than the task's, and,
/// when the certificates are to come from the image (`baked`), one without them.
fn check_image(path: &Path, cpu_architecture: &str, baked: bool) -> Result<(), ConfigError> {
    let Some(wanted) = image::docker_architecture(cpu_architecture) else {
        return Err(ConfigError::new(
            "CpuArchitecture",
            format!("unknown value {cpu_architecture}"),
            "use ARM64 or X86_64",
        ));
    };
    let package = if wanted == "arm64" { "server-image-aarch64" } else { "server-image-x86_64" };
    let inventory = image::inventory(path).map_err(|e| {
        ConfigError::new("--image", e.to_string(), format!("pass the archive `nix build .#{package}` writes"))
    })?;
    let missing: Vec<&str> = BAKED.into_iter().filter(|f| baked && !inventory.has(f)).collect();
    if !missing.is_empty() {
        return Err(ConfigError::new(
            "--certificates image",
            format!("{} has no /{} (a certificate-free image)", path.display(), missing.join(", /")),
            format!(
                "bake them in with FLUIDITY_IMAGE_CERTS_DIR=certs nix build .#{package} --impure, or let the tool keep them in Parameter Store (leave out --certificates image)"
            ),
        ));
    }
    let found = inventory.architecture;
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
