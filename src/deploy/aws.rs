//! The AWS clients the deploy tool uses, built from `--region`, `--profile`
//! and `--endpoint-url` on top of the standard credential chain, with HTTPS
//! through rustls + ring.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// Where to reach AWS.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsArgs {
    /// AWS region (default: from AWS_REGION or the profile).
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config (default: AWS_PROFILE or "default").
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Send every AWS call to this endpoint instead (a local emulator);
    /// S3 then uses path-style addressing.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,
}

/// One client per service, sharing credentials and region.
#[derive(Debug, Clone)]
pub struct Clients {
    pub region: String,
    pub shared: aws_config::SdkConfig,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub s3: aws_sdk_s3::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub sts: aws_sdk_sts::Client,
}

impl Clients {
    /// Loads the shared configuration; fails if no region can be found.
    pub async fn load(args: &AwsArgs) -> anyhow::Result<Self> {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &args.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &args.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &args.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        let Some(region) = shared.region().map(ToString::to_string) else {
            anyhow::bail!("no AWS region: pass --region, set AWS_REGION or give the profile a region");
        };
        let s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(args.endpoint_url.is_some()).build();
        Ok(Self {
            region,
            shared: shared.clone(),
            cloudformation: aws_sdk_cloudformation::Client::new(&shared),
            s3: aws_sdk_s3::Client::from_conf(s3),
            ecr: aws_sdk_ecr::Client::new(&shared),
            ecs: aws_sdk_ecs::Client::new(&shared),
            sts: aws_sdk_sts::Client::new(&shared),
        })
    }
}

/// One line for an SDK error: the service's code and message when there is
/// one, otherwise the error chain (timeouts, DNS, credentials).
pub fn describe<E>(error: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// The base URL of `service` (e.g. `apigateway`): the endpoint override, or
/// the service's regional endpoint.
pub fn endpoint(clients: &Clients, service: &str) -> String {
    match clients.shared.endpoint_url() {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => crate::sigv4::endpoint(service, &clients.region),
    }
}

/// Signs `request` for `service`, sends it with a
/// 30 s deadline and reads the answer as JSON (`null` if it is not).
/// `what` names the service in errors, e.g. "API Gateway".
pub async fn signed_json(
    clients: &Clients,
    service: &str,
    what: &str,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, answer) = signed_text(clients, service, &clients.region, what, request).await?;
    Ok((status, serde_json::from_str(&answer).unwrap_or_default()))
}

/// As [`signed_json`], signed for `region` (a global service's), the answer
/// as text; throttling, a transient 5xx or clock skew is retried once
/// ([`crate::sigv4::send`]).
pub async fn signed_text(
    clients: &Clients,
    service: &str,
    region: &str,
    what: &str,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    let credentials = clients.shared.credentials_provider().context("no AWS credentials configured")?;
    let client = crate::http_client::OneShot::new().map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?;
    let sent = crate::sigv4::send(&client, &credentials, region, service, request);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), sent)
        .await
        .with_context(|| format!("{what} did not answer within 30 s"))?
        .map_err(|e| match e {
            crate::sigv4::SendError::Signing(e) => anyhow::anyhow!("cannot sign the {what} request: {e}"),
            crate::sigv4::SendError::Transport(e) => anyhow::anyhow!("cannot reach {what}: {e}"),
        })?;
    Ok((answer.status, answer.body))
}

/// One signed call of an AWS JSON 1.1 service (`X-Amz-Target:
/// <target_prefix>.<action>`): its JSON answer, or one line naming `what`,
/// the action, the service's error code and its message.
pub async fn json_call(
    clients: &Clients,
    service: &str,
    target_prefix: &str,
    what: &str,
    action: &str,
    input: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let base = endpoint(clients, service);
    let uri: http::Uri = format!("{base}/").parse().with_context(|| format!("bad {what} URL {base}"))?;
    let host = uri.authority().with_context(|| format!("the {what} URL has no host"))?.to_string();
    let request = http::Request::post(uri)
        .header("host", host)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("{target_prefix}.{action}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(input.to_string())))
        .with_context(|| format!("cannot build the {what} request"))?;
    let (status, json) = signed_json(clients, service, what, request).await?;
    if status != 200 {
        let code = json["__type"].as_str().unwrap_or("error").rsplit('#').next().unwrap_or("error");
        anyhow::bail!("{what} {action} answered {status}: {code}: {}", json_message(&json));
    }
    Ok(json)
}

/// The `message` (or `Message`) of a JSON error answer.
pub fn json_message(json: &serde_json::Value) -> &str {
    json["message"].as_str().or(json["Message"].as_str()).unwrap_or("no message")
}

/// One signed call of an AWS Query service ([`crate::sigv4::query`]: a form
/// `body` of `Action=…&Version=…&…`, retried once as [`crate::sigv4::send`]
/// says) with a 30 s deadline: the XML of its answer, or one line naming
/// `what` (e.g. "EC2 DescribeVpcs"), the service's error code and message.
pub async fn query(clients: &Clients, service: &str, what: &str, body: String) -> anyhow::Result<String> {
    use anyhow::Context;
    let base = endpoint(clients, service);
    let uri: http::Uri = format!("{base}/").parse().with_context(|| format!("bad {what} URL {base}"))?;
    let credentials = clients.shared.credentials_provider().context("no AWS credentials configured")?;
    let client = crate::http_client::OneShot::new().map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?;
    let call = crate::sigv4::query(&client, &uri, &clients.region, service, &credentials, body);
    tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .with_context(|| format!("{what} did not answer within 30 s"))?
        .map_err(|e| match e {
            crate::sigv4::QueryError::Api { .. } => anyhow::anyhow!("{what} {e}"),
            other => anyhow::anyhow!("{what}: {other}"),
        })
}
