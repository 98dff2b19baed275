//! The Lambda control plane: Wake, Status, Sleep and Kill in one binary that
//! dispatches on the handler name Lambda passes in `_HANDLER` (see
//! docs/architecture.md for why one binary).
//!
//! - [`env`]: configuration from environment variables (names defined once).
//! - [`control`]: the ECS/CloudWatch operations.
//! - [`sleep`]: the idle decision, a pure function.
//! - [`ec2`]: the EC2 calls: the task's public IP, the caller's ingress.
//! - [`route53`]: the optional server name's A record.
//!
//! API Gateway invocations get proxy-integration responses (200 JSON, 400 for
//! a bad request, 502 with an `errorType` for AWS failures); scheduled
//! invocations (EventBridge) get plain JSON, or an error so the invocation
//! counts as failed and the alarm fires.

pub mod control;
pub mod ec2;
pub mod env;
pub mod route53;
pub mod sleep;

use serde_json::{Value, json};
use tracing::{error, info, warn};

use control::{Control, ControlError};
use sleep::Decision;

use crate::protocol::Change;

/// Which function this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Wake,
    Status,
    Sleep,
    Kill,
}

impl Function {
    /// From the handler name (`wake`, `status`, `sleep`, `kill`; a `bootstrap.` prefix is ignored).
    pub fn from_handler(handler: &str) -> Option<Self> {
        match handler.trim().rsplit('.').next().unwrap_or_default().to_ascii_lowercase().as_str() {
            "wake" => Some(Self::Wake),
            "status" => Some(Self::Status),
            "sleep" => Some(Self::Sleep),
            "kill" => Some(Self::Kill),
            _ => None,
        }
    }

    fn api_method(self) -> Option<&'static str> {
        match self {
            Self::Wake | Self::Kill => Some("POST"),
            Self::Status => Some("GET"),
            Self::Sleep => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Wake => "wake",
            Self::Status => "status",
            Self::Sleep => "sleep",
            Self::Kill => "kill",
        }
    }
}

/// What invoked the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// API Gateway proxy integration, with the caller's address
    /// (`requestContext.identity.sourceIp`).
    Api { method: String, path: String, source: Option<std::net::IpAddr> },
    /// EventBridge schedule.
    Schedule,
}

/// Recognises an event, or says why it is not one we take.
pub fn classify(event: &Value) -> Result<Invocation, String> {
    if event.get("httpMethod").is_some() || event.get("requestContext").is_some() {
        let request: aws_lambda_events::apigw::ApiGatewayProxyRequest =
            serde_json::from_value(event.clone()).map_err(|e| format!("malformed API Gateway event: {e}"))?;
        let source = request.request_context.identity.source_ip.as_deref().and_then(|ip| ip.trim().parse().ok());
        let (method, path) = (request.http_method.to_string(), request.path.unwrap_or_default());
        return Ok(Invocation::Api { method, path, source });
    }
    // EventBridge rules send `source: aws.events`; the nightly stop's
    // Scheduler target sends the Input lambda.yaml gives it (aws.scheduler).
    let scheduled = event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || matches!(event.get("source").and_then(Value::as_str), Some("aws.events" | "aws.scheduler"));
    if scheduled {
        return Ok(Invocation::Schedule);
    }
    Err("expected an API Gateway proxy request or an EventBridge scheduled event".into())
}

/// An API Gateway proxy-integration response.
pub fn api_response(status: u16, body: &Value) -> Value {
    json!({
        "statusCode": status,
        "headers": { "content-type": "application/json" },
        "isBase64Encoded": false,
        "body": body.to_string(),
    })
}

/// Why a scheduled invocation failed (reported to Lambda as the error type).
#[derive(Debug, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct InvocationError {
    pub error_type: &'static str,
    pub message: String,
}

/// Handles one event for `function`.
pub async fn handle(function: Function, control: &Control, event: &Value) -> Result<Value, InvocationError> {
    match classify(event) {
        Err(message) => {
            warn!(function = function.name(), %message, "bad event");
            Ok(api_response(400, &json!({ "error": "BadRequest", "message": message })))
        }
        Ok(Invocation::Api { method, path, source }) => Ok(api(function, control, &method, &path, source).await),
        Ok(Invocation::Schedule) => scheduled(function, control).await,
    }
}

async fn api(
    function: Function,
    control: &Control,
    method: &str,
    path: &str,
    source: Option<std::net::IpAddr>,
) -> Value {
    let Some(expected) = function.api_method() else {
        return api_response(
            400,
            &json!({ "error": "BadRequest", "message": "sleep runs on a schedule, not through the API" }),
        );
    };
    if !method.eq_ignore_ascii_case(expected) {
        let message = format!("{} expects {expected} /{}, got {method} {path}", function.name(), function.name());
        return api_response(400, &json!({ "error": "BadRequest", "message": message }));
    }
    let work = async {
        match function {
            Function::Wake => control
                .wake(source)
                .await
                .map(|(changed, status)| json!(Change { action: "wake".into(), changed, status })),
            Function::Kill => {
                control.kill().await.map(|(changed, status)| json!(Change { action: "kill".into(), changed, status }))
            }
            Function::Status | Function::Sleep => control.status().await.map(|status| json!(status)),
        }
    };
    // Every call, not only Wake's wait, ends before API Gateway's limit.
    let budget = control.settings.api_budget;
    let Ok(outcome) = tokio::time::timeout(budget, work).await else {
        let message =
            format!("AWS did not answer within {} s; a wake may still be under way: ask /status", budget.as_secs_f32());
        error!(function = function.name(), %message, "out of time");
        return api_response(504, &json!({ "error": "Timeout", "message": message }));
    };
    match outcome {
        Ok(body) => {
            info!(function = function.name(), %body, "answered");
            api_response(200, &body)
        }
        Err(e) => {
            error!(function = function.name(), error_type = e.error_type(), error = %e, "AWS call failed");
            api_response(502, &json!({ "error": e.error_type(), "message": e.to_string() }))
        }
    }
}

async fn scheduled(function: Function, control: &Control) -> Result<Value, InvocationError> {
    let failed = |e: ControlError| {
        error!(function = function.name(), error_type = e.error_type(), error = %e, "AWS call failed");
        InvocationError { error_type: e.error_type(), message: e.to_string() }
    };
    match function {
        Function::Sleep => {
            let decision = control.sleep().await.map_err(failed)?;
            let (action, reason) = match decision {
                Decision::Sleep(reason) => ("scaled to 0", reason),
                Decision::Stay(reason) => ("left running", reason),
                Decision::AlreadyStopped => ("already stopped", String::new()),
            };
            Ok(json!({ "action": action, "reason": reason }))
        }
        Function::Kill => {
            let (changed, status) = control.kill().await.map_err(failed)?;
            Ok(json!(Change { action: "kill".into(), changed, status }))
        }
        Function::Wake | Function::Status => Err(InvocationError {
            error_type: "BadRequest",
            message: format!("{} is not a scheduled function", function.name()),
        }),
    }
}

/// Builds the AWS clients from the Lambda environment (region, role
/// credentials, optional `AWS_ENDPOINT_URL`), HTTPS through rustls + ring.
pub async fn control_from_environment(settings: env::Settings) -> Result<Control, ec2::Ec2Error> {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    Ok(Control {
        ecs: aws_sdk_ecs::Client::new(&config),
        cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
        ec2: ec2::Ec2::from_sdk_config(&config)?,
        route53: route53::Route53::from_sdk_config(&config)?,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_names() {
        assert_eq!(Function::from_handler("wake"), Some(Function::Wake));
        assert_eq!(Function::from_handler("bootstrap.Kill"), Some(Function::Kill));
        assert_eq!(Function::from_handler("nope"), None);
    }

    #[test]
    fn event_shapes() {
        let schedule = json!({ "source": "aws.events", "detail-type": "Scheduled Event", "detail": {} });
        assert_eq!(classify(&schedule), Ok(Invocation::Schedule));
        assert!(classify(&json!({ "hello": 1 })).is_err());
        assert!(classify(&json!({ "httpMethod": 42 })).unwrap_err().contains("malformed"));
        assert!(classify(&json!("text")).is_err());
    }

    /// The nightly stop's EventBridge Scheduler target sends the Input that
    /// lambda.yaml gives it: a scheduled call, not a malformed one.
    #[test]
    fn the_nightly_stops_input_is_a_scheduled_call() {
        let template = include_str!("../cloudformation/lambda.yaml");
        let input = template.lines().find_map(|l| l.trim().strip_prefix("Input: '")?.strip_suffix('\''));
        let input: Value = serde_json::from_str(input.expect("the schedule's Input")).unwrap();
        assert_eq!(input["source"], "aws.scheduler");
        assert_eq!(classify(&input), Ok(Invocation::Schedule));
    }
}
