//! SigV4 signing of a hand-built request, for the few AWS calls made without
//! an SDK crate (EC2 DescribeNetworkInterfaces in the Lambda, CloudWatch
//! PutMetricData in the server; API Gateway, Parameter Store, IAM, Secrets
//! Manager and EC2 DescribeVpcs/DescribeSubnets in the deploy tool): each
//! would otherwise add a whole SDK crate to the build for one or two calls.
//! [`query`] makes one call of the AWS Query protocol (a signed form POST
//! answered in XML).
//!
//! [`send`] signs and sends one request as the SDKs' standard retry mode
//! would for a single retry ("Retry behavior", AWS SDKs and Tools Reference
//! Guide): a throttling error or a transient 5xx is tried once more after a
//! jittered wait, and a clock-skew error is signed again with the time the
//! service's `Date` header gives, then sent once more.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use http_body_util::Full;

use crate::http_client::{Answer, OneShot};
use http_body_util::BodyExt;

/// Signs `request` (headers and body as they will be sent) for `service` in `region`.
pub async fn sign(
    credentials: &SharedCredentialsProvider,
    region: &str,
    service: &str,
    request: &mut http::Request<Full<Bytes>>,
    body: &[u8],
) -> Result<(), String> {
    sign_at(credentials, region, service, request, body, SystemTime::now()).await
}

async fn sign_at(
    credentials: &SharedCredentialsProvider,
    region: &str,
    service: &str,
    request: &mut http::Request<Full<Bytes>>,
    body: &[u8],
    time: SystemTime,
) -> Result<(), String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let credentials = credentials.provide_credentials().await.map_err(|e| format!("no AWS credentials: {e}"))?;
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
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
/// `endpoint`, signed for `service` (see [`send`]); the XML of a 200 answer.
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
    let request = http::Request::post(&url)
        .header("host", host.as_str())
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| transport(e.to_string()))?;
    let answer = send(client, credentials, region, service, request).await.map_err(|e| match e {
        SendError::Signing(e) => QueryError::Signing(e),
        SendError::Transport(e) => transport(e),
    })?;
    if answer.status != 200 {
        let code = xml_text(&answer.body, "Code").unwrap_or("error").to_string();
        let message = xml_text(&answer.body, "Message").unwrap_or(answer.body.trim()).to_string();
        return Err(QueryError::Api { status: answer.status, code, message });
    }
    Ok(answer.body)
}

/// Why [`send`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("signing the request failed: {0}")]
    Signing(String),
    #[error("{0}")]
    Transport(String),
}

/// The wait before the retry of a throttled or failed call: 0.5–1 s.
const RETRY_BASE: Duration = Duration::from_secs(1);

/// Signs `request` for `service` in `region` and sends it; retried once on
/// throttling, a transient 5xx or clock skew (see the module's doc). The
/// answer may still be an error, for the caller to read.
pub async fn send(
    client: &OneShot,
    credentials: &SharedCredentialsProvider,
    region: &str,
    service: &str,
    request: http::Request<Full<Bytes>>,
) -> Result<Answer, SendError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let attempt = |time: SystemTime| {
        let mut request = http::Request::from_parts(parts.clone(), Full::new(body.clone()));
        let body = &body;
        async move {
            sign_at(credentials, region, service, &mut request, body, time).await.map_err(SendError::Signing)?;
            client.exchange(request).await.map_err(|e| SendError::Transport(e.to_string()))
        }
    };
    let first = attempt(SystemTime::now()).await?;
    match retry_of(&first, SystemTime::now()) {
        Retry::No => Ok(first),
        Retry::After(wait) => {
            tokio::time::sleep(wait).await;
            attempt(SystemTime::now()).await
        }
        Retry::SignedAt(time) => attempt(time).await,
    }
}

/// What to do after an answer.
#[derive(Debug, PartialEq)]
enum Retry {
    No,
    /// Throttled or a transient server error: once more after this wait.
    After(Duration),
    /// Clock skew: signed again with the service's time.
    SignedAt(SystemTime),
}

/// Error codes the SDKs treat as throttling ("Retry behavior", AWS SDKs
/// and Tools Reference Guide; the standard retry mode's list).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes that mean the request's time is off from the service's.
const CLOCK_SKEW: &[&str] = &[
    "RequestTimeTooSkewed",
    "RequestExpired",
    "RequestInTheFuture",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
];

/// A skew smaller than this is not what failed a signature.
const SKEW_THRESHOLD: Duration = Duration::from_secs(4 * 60);

fn retry_of(answer: &Answer, now: SystemTime) -> Retry {
    if answer.status < 400 {
        return Retry::No;
    }
    let code = error_code(answer);
    if answer.status == 429 || code.as_deref().is_some_and(|c| THROTTLING.contains(&c)) || transient(answer.status) {
        return Retry::After(RETRY_BASE / 2 + (RETRY_BASE / 2).mul_f64(crate::http_util::jitter()));
    }
    if code.as_deref().is_some_and(|c| CLOCK_SKEW.contains(&c))
        && let Some(server) = answer.headers.get(http::header::DATE).and_then(|d| d.to_str().ok())
        && let Ok(server) = httpdate::parse_http_date(server)
    {
        let skew = server.duration_since(now).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
        if skew > SKEW_THRESHOLD {
            return Retry::SignedAt(server);
        }
    }
    Retry::No
}

fn transient(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// The error code of an AWS answer: the `x-amzn-ErrorType` header, a JSON
/// `__type` or `code` (without its namespace), or an XML `<Code>`.
fn error_code(answer: &Answer) -> Option<String> {
    let strip = |code: &str| code.rsplit('#').next().unwrap_or(code).split(':').next().unwrap_or(code).to_owned();
    if let Some(header) = answer.headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok()) {
        return Some(strip(header));
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&answer.body)
        && let Some(code) = json["__type"].as_str().or(json["code"].as_str()).or(json["Code"].as_str())
    {
        return Some(strip(code));
    }
    xml_text(&answer.body, "Code").map(str::to_owned)
}

/// The DNS suffix of `region`'s partition: `amazonaws.com.cn` in China
/// (aws-cn), `amazonaws.com` elsewhere (aws, aws-us-gov).
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" }
}

/// `https://<service>.<region>.<suffix>`: a regional service's endpoint.
pub fn endpoint(service: &str, region: &str) -> String {
    format!("https://{service}.{region}.{}", dns_suffix(region))
}

/// IAM's endpoint and signing region for `region`'s partition: IAM is one
/// global service per partition ("AWS Identity and Access Management
/// endpoints and quotas", AWS General Reference).
pub fn iam_endpoint(region: &str) -> (&'static str, &'static str) {
    if region.starts_with("cn-") {
        ("https://iam.cn-north-1.amazonaws.com.cn", "cn-north-1")
    } else if region.starts_with("us-gov-") {
        ("https://iam.us-gov.amazonaws.com", "us-gov-west-1")
    } else {
        ("https://iam.amazonaws.com", "us-east-1")
    }
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

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Answer { status, headers: map, body: body.to_owned() }
    }

    #[test]
    fn which_answers_are_retried_and_how() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ahead = httpdate::fmt_http_date(now + Duration::from_secs(600));
        let close = httpdate::fmt_http_date(now + Duration::from_secs(60));
        let skew_json = r#"{"__type":"InvalidSignatureException","message":"Signature expired"}"#;
        let after = |a: &Answer| matches!(retry_of(a, now), Retry::After(w) if w >= RETRY_BASE / 2 && w <= RETRY_BASE);
        assert!(after(&answer(429, &[], "")));
        assert!(after(&answer(503, &[], "")));
        assert!(after(&answer(500, &[], "<Error><Code>InternalError</Code></Error>")));
        assert!(after(&answer(400, &[], r#"{"__type":"com.amazonaws.secretsmanager#ThrottlingException"}"#)));
        assert!(after(&answer(
            400,
            &[],
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>"
        )));
        assert!(after(&answer(400, &[("x-amzn-ErrorType", "TooManyRequestsException:http://internal")], "{}")));
        assert_eq!(
            retry_of(&answer(400, &[("date", &ahead)], skew_json), now),
            Retry::SignedAt(now + Duration::from_secs(600))
        );
        assert_eq!(
            retry_of(
                &answer(
                    403,
                    &[("date", &httpdate::fmt_http_date(now - Duration::from_secs(900)))],
                    "<Code>RequestExpired</Code>"
                ),
                now
            ),
            Retry::SignedAt(now - Duration::from_secs(900))
        );
        // A signature refused with the clocks in step is not a skew: no retry.
        assert_eq!(retry_of(&answer(400, &[("date", &close)], skew_json), now), Retry::No);
        assert_eq!(retry_of(&answer(400, &[], skew_json), now), Retry::No);
        assert_eq!(retry_of(&answer(400, &[], r#"{"__type":"ValidationException"}"#), now), Retry::No);
        assert_eq!(retry_of(&answer(404, &[], ""), now), Retry::No);
        assert_eq!(retry_of(&answer(200, &[], ""), now), Retry::No);
    }

    /// Answers each connection in turn with the next of `answers`; returns
    /// each request head it read.
    async fn serve(answers: Vec<String>) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut heads = Vec::new();
            for answer in answers {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let text = crate::http_client::tests::read_head(&mut tcp).await;
                let length = text
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|n| n.parse().unwrap()))
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                tcp.read_exact(&mut body).await.unwrap();
                heads.push(text);
                tcp.write_all(answer.as_bytes()).await.unwrap();
            }
            heads
        });
        (addr, task)
    }

    fn http(status: &str, extra: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}", body.len())
    }

    fn credentials() -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(aws_credential_types::Credentials::new("AKID", "secret", None, None, "test"))
    }

    fn request(addr: std::net::SocketAddr) -> http::Request<Full<Bytes>> {
        http::Request::post(format!("http://{addr}/")).body(Full::new(Bytes::from_static(b"Action=Ping"))).unwrap()
    }

    fn amz_date(head: &str) -> &str {
        head.lines().find_map(|l| l.strip_prefix("x-amz-date: ")).unwrap()
    }

    #[tokio::test]
    async fn a_throttled_call_is_sent_once_more_and_a_second_failure_is_the_answer() {
        let throttled = http("400 Bad Request", "", "<Error><Code>Throttling</Code></Error>");
        let (addr, heads) = serve(vec![throttled.clone(), http("200 OK", "", "<ok/>")]).await;
        let client = OneShot::new().unwrap();
        let answer = send(&client, &credentials(), "us-east-1", "monitoring", request(addr)).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "<ok/>"));
        assert_eq!(heads.await.unwrap().len(), 2);

        let (addr, heads) = serve(vec![throttled.clone(), throttled]).await;
        let answer = send(&client, &credentials(), "us-east-1", "monitoring", request(addr)).await.unwrap();
        assert_eq!(answer.status, 400, "one retry only");
        assert_eq!(heads.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_clock_skew_is_signed_again_with_the_services_time() {
        let server_time = SystemTime::now() + Duration::from_secs(3600);
        let skewed = http(
            "403 Forbidden",
            &format!("date: {}\r\n", httpdate::fmt_http_date(server_time)),
            "<Error><Code>SignatureDoesNotMatch</Code><Message>Signature expired</Message></Error>",
        );
        let (addr, heads) = serve(vec![skewed, http("200 OK", "", "<ok/>")]).await;
        let client = OneShot::new().unwrap();
        let answer = send(&client, &credentials(), "us-east-1", "ec2", request(addr)).await.unwrap();
        assert_eq!(answer.status, 200);
        let heads = heads.await.unwrap();
        let expected = time::OffsetDateTime::from(server_time);
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}",
            expected.year(),
            u8::from(expected.month()),
            expected.day(),
            expected.hour()
        );
        assert!(amz_date(&heads[1]).starts_with(&stamp), "re-signed at the service's time: {}", amz_date(&heads[1]));
        assert_ne!(amz_date(&heads[0]), amz_date(&heads[1]));
    }

    #[test]
    fn endpoints_follow_the_partition() {
        assert_eq!(endpoint("monitoring", "eu-west-1"), "https://monitoring.eu-west-1.amazonaws.com");
        assert_eq!(endpoint("ec2", "cn-northwest-1"), "https://ec2.cn-northwest-1.amazonaws.com.cn");
        assert_eq!(endpoint("secretsmanager", "us-gov-west-1"), "https://secretsmanager.us-gov-west-1.amazonaws.com");
        assert_eq!(iam_endpoint("ap-northeast-1"), ("https://iam.amazonaws.com", "us-east-1"));
        assert_eq!(iam_endpoint("cn-northwest-1"), ("https://iam.cn-north-1.amazonaws.com.cn", "cn-north-1"));
        assert_eq!(iam_endpoint("us-gov-east-1"), ("https://iam.us-gov.amazonaws.com", "us-gov-west-1"));
    }

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
