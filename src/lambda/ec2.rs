//! The one EC2 call Status needs, DescribeNetworkInterfaces, made directly:
//! a SigV4-signed Query request and a few lines of XML reading. aws-sdk-ec2
//! would cost minutes of compile time on every clean build for this alone
//! (docs/architecture.md); the call is tested against the same emulator.

use crate::http_client::OneShot;
use crate::sigv4::{urlencode, xml_text};

/// Why the public IP could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error("no AWS credentials: {0}")]
    Credentials(String),
    #[error("EC2 endpoint {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("EC2 {0}")]
    Call(#[from] crate::sigv4::QueryError),
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
            config.endpoint_url().map(str::to_string).unwrap_or_else(|| crate::sigv4::endpoint("ec2", &region));
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
        let (endpoint, region) = (&self.endpoint, &self.region);
        Ok(crate::sigv4::query(&self.client, endpoint, region, "ec2", &self.credentials, body).await?)
    }
}

/// `<association>…<publicIp>X</publicIp>…</association>` → X.
pub fn association_public_ip(xml: &str) -> Option<String> {
    let association = xml_text(xml, "association")?;
    xml_text(association, "publicIp").map(|ip| ip.trim().to_string()).filter(|ip| !ip.is_empty())
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
    }
}
