//! The one EC2 call Status needs, DescribeNetworkInterfaces, made directly:
//! a SigV4-signed Query request and a few lines of XML reading. aws-sdk-ec2
//! would cost minutes of compile time on every clean build for this alone
//! (docs/architecture.md); the call is tested against the same emulator.

use bytes::Bytes;
use http_body_util::Full;

use crate::http_client::OneShot;

/// Why the public IP could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error("no AWS credentials: {0}")]
    Credentials(String),
    #[error("signing the EC2 request failed: {0}")]
    Signing(String),
    #[error("EC2 endpoint {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("EC2 answered {status}: {message}")]
    Api { status: u16, message: String },
}

/// A minimal EC2 client.
#[derive(Clone)]
pub struct Ec2 {
    endpoint: http::Uri,
    region: String,
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
    client: OneShot,
}

impl Ec2 {
    /// Uses the region, credentials and endpoint override of `config`.
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> Result<Self, Ec2Error> {
        let region = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        let endpoint =
            config.endpoint_url().map(str::to_string).unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let endpoint: http::Uri =
            endpoint.parse().map_err(|e| Ec2Error::Transport { endpoint: endpoint.clone(), reason: format!("{e}") })?;
        let credentials =
            config.credentials_provider().ok_or_else(|| Ec2Error::Credentials("no provider configured".into()))?;
        let client = OneShot::new()
            .map_err(|e| Ec2Error::Transport { endpoint: endpoint.to_string(), reason: e.to_string() })?;
        Ok(Self { endpoint, region, credentials, client })
    }

    /// The public IPv4 address associated with network interface `eni`, if any.
    pub async fn public_ip(&self, eni: &str) -> Result<Option<String>, Ec2Error> {
        let body =
            format!("Action=DescribeNetworkInterfaces&Version=2016-11-15&NetworkInterfaceId.1={}", urlencode(eni));
        let xml = self.call(body).await?;
        Ok(association_public_ip(&xml))
    }

    async fn call(&self, body: String) -> Result<String, Ec2Error> {
        let transport = |reason: String| Ec2Error::Transport { endpoint: self.endpoint.to_string(), reason };
        let host = self.endpoint.authority().ok_or_else(|| transport("no host".into()))?.clone();
        let https = self.endpoint.scheme_str() == Some("https");
        let url = format!("{}://{host}/", if https { "https" } else { "http" });
        let mut request = http::Request::post(&url)
            .header("host", host.as_str())
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| transport(e.to_string()))?;
        crate::sigv4::sign(&self.credentials, &self.region, "ec2", &mut request, body.as_bytes())
            .await
            .map_err(Ec2Error::Signing)?;
        let (status, text) = self.client.send(request).await.map_err(|e| transport(e.to_string()))?;
        if status != 200 {
            let message = between(&text, "<Message>", "</Message>").unwrap_or(text.trim()).to_string();
            return Err(Ec2Error::Api { status, message });
        }
        Ok(text)
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// `<association>…<publicIp>X</publicIp>…</association>` → X.
pub fn association_public_ip(xml: &str) -> Option<String> {
    let association = between(xml, "<association>", "</association>")?;
    between(association, "<publicIp>", "</publicIp>").map(|ip| ip.trim().to_string()).filter(|ip| !ip.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_public_ip() {
        let xml = "<DescribeNetworkInterfacesResponse><networkInterfaceSet><item><privateIpAddress>10.0.0.5</privateIpAddress>\
                   <association><publicIp>203.0.113.7</publicIp><ipOwnerId>amazon</ipOwnerId></association></item>\
                   </networkInterfaceSet></DescribeNetworkInterfacesResponse>";
        assert_eq!(association_public_ip(xml).as_deref(), Some("203.0.113.7"));
        assert_eq!(association_public_ip("<item><privateIpAddress>10.0.0.5</privateIpAddress></item>"), None);
        assert_eq!(urlencode("eni-0a b/c"), "eni-0a%20b%2Fc");
    }
}
