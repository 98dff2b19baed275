//! SigV4 signing of a hand-built request, for the few AWS calls made without
//! an SDK crate (EC2 DescribeNetworkInterfaces in the Lambda, CloudWatch
//! PutMetricData in the server, API Gateway and Secrets Manager in the deploy
//! tool): each would otherwise add a whole SDK crate to the build for one or
//! two calls. [`query`] makes one call of the AWS Query protocol (a signed
//! form POST answered in XML).

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use http_body_util::Full;

use crate::http_client::OneShot;

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

/// Why a Query call failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("signing the request failed: {0}")]
    Signing(String),
    #[error("{endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("answered {status}: {code}: {message}")]
    Api { status: u16, code: String, message: String },
}

/// POSTs the form `body` (`Action=…&Version=…&…`, values [`urlencode`]d) to
/// `endpoint`, signed for `service`; the XML of a 200 answer.
pub async fn query(
    client: &OneShot,
    endpoint: &http::Uri,
    region: &str,
    service: &str,
    credentials: &SharedCredentialsProvider,
    body: String,
) -> Result<String, QueryError> {
    let transport = |reason: String| QueryError::Transport { endpoint: endpoint.to_string(), reason };
    let host = endpoint.authority().ok_or_else(|| transport("no host".into()))?.clone();
    let https = endpoint.scheme_str() == Some("https");
    let url = format!("{}://{host}/", if https { "https" } else { "http" });
    let mut request = http::Request::post(&url)
        .header("host", host.as_str())
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(Full::new(Bytes::from(body.clone())))
        .map_err(|e| transport(e.to_string()))?;
    sign(credentials, region, service, &mut request, body.as_bytes()).await.map_err(QueryError::Signing)?;
    let (status, text) = client.send(request).await.map_err(|e| transport(e.to_string()))?;
    if status != 200 {
        let code = xml_text(&text, "Code").unwrap_or("error").to_string();
        let message = xml_text(&text, "Message").unwrap_or(text.trim()).to_string();
        return Err(QueryError::Api { status, code, message });
    }
    Ok(text)
}

/// Percent-encodes `text` for a form value (RFC 3986 unreserved kept).
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The text of the first `<tag>…</tag>` in `xml`.
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_and_xml_text() {
        assert_eq!(urlencode("eni-0a b/c"), "eni-0a%20b%2Fc");
        let error =
            "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert_eq!(xml_text(error, "Code"), Some("Throttling"));
        assert_eq!(xml_text(error, "Message"), Some("Rate exceeded"));
        assert_eq!(xml_text(error, "RequestId"), None);
    }
}
