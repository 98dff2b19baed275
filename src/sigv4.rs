//! SigV4 signing of a hand-built request, for the few AWS calls made without
//! an SDK crate (EC2 DescribeNetworkInterfaces in the Lambda, API Gateway's
//! GetApiKey in the deploy tool): each would otherwise add a whole SDK crate
//! to the build for one call.

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use http_body_util::Full;

/// Signs `request` (headers and body as they will be sent) for `service` in `region`.
pub async fn sign(
    credentials: &SharedCredentialsProvider,
    region: &str,
    service: &str,
    request: &mut http::Request<Full<Bytes>>,
    body: &[u8],
) -> Result<(), String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let credentials = credentials.provide_credentials().await.map_err(|e| format!("no AWS credentials: {e}"))?;
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let url = request.uri().to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}
