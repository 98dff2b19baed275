//! The few EC2 calls the functions make, directly: a SigV4-signed Query
//! request each and a few lines of XML reading. Status reads the task's
//! public IP (DescribeNetworkInterfaces); in `caller` mode Wake admits the
//! waking address to the server's security group and Sleep and Kill revoke
//! it (DescribeSecurityGroups, AuthorizeSecurityGroupIngress,
//! RevokeSecurityGroupIngress). aws-sdk-ec2 would cost minutes of compile
//! time on every clean build for these alone (docs/architecture.md); the
//! calls are tested against the same emulator and checked against
//! botocore's EC2 model.

use std::net::IpAddr;

use crate::http_client::OneShot;
use crate::sigv4::{urlencode, xml_text};

/// Why a hand-signed call (EC2, Route 53) failed; the caller names the service.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error("no AWS credentials: {0}")]
    Credentials(String),
    #[error("endpoint {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("{0}")]
    Call(#[from] crate::sigv4::QueryError),
}

/// Where and how the hand-signed calls go: an endpoint (the SDK
/// configuration's override, as `AWS_ENDPOINT_URL` sets it, wins), the
/// signing region and the Lambda role's credentials.
#[derive(Clone)]
pub struct Signer {
    endpoint: http::Uri,
    region: String,
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
    client: OneShot,
}

impl Signer {
    /// For `endpoint` (unless `config` overrides it), signed in `region`.
    pub fn new(config: &aws_config::SdkConfig, endpoint: String, region: String) -> Result<Self, Ec2Error> {
        let endpoint = config.endpoint_url().map(str::to_string).unwrap_or(endpoint);
        let endpoint: http::Uri =
            endpoint.parse().map_err(|e| Ec2Error::Transport { endpoint: endpoint.clone(), reason: format!("{e}") })?;
        let credentials =
            config.credentials_provider().ok_or_else(|| Ec2Error::Credentials("no provider configured".into()))?;
        let client = OneShot::new()
            .map_err(|e| Ec2Error::Transport { endpoint: endpoint.to_string(), reason: e.to_string() })?;
        Ok(Self { endpoint, region, credentials, client })
    }

    /// One Query call of `service`: the XML of its 200 answer.
    async fn query(&self, service: &str, body: String) -> Result<String, Ec2Error> {
        let (endpoint, region) = (&self.endpoint, &self.region);
        Ok(crate::sigv4::query(&self.client, endpoint, region, service, &self.credentials, body).await?)
    }

    /// One REST call of `service`: the answer, whatever its status.
    pub async fn send(
        &self,
        service: &str,
        method: &str,
        path: &str,
        content_type: &str,
        body: String,
    ) -> Result<crate::http_client::Answer, Ec2Error> {
        let transport = |reason: String| Ec2Error::Transport { endpoint: self.endpoint.to_string(), reason };
        let host = self.endpoint.authority().ok_or_else(|| transport("no host".into()))?.clone();
        let scheme = self.endpoint.scheme_str().unwrap_or("https");
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{scheme}://{host}{path}"))
            .header("host", host.as_str())
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| transport(e.to_string()))?;
        let (credentials, region) = (&self.credentials, &self.region);
        crate::sigv4::send(&self.client, credentials, region, service, request)
            .await
            .map_err(|e| transport(e.to_string()))
    }
}

/// A minimal EC2 client.
#[derive(Clone)]
pub struct Ec2 {
    signer: Signer,
}

impl Ec2 {
    /// Uses the region, credentials and endpoint override of `config`.
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> Result<Self, Ec2Error> {
        let region = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        Ok(Self { signer: Signer::new(config, crate::sigv4::endpoint("ec2", &region), region)? })
    }

    /// The public IPv4 address associated with network interface `eni`, if any.
    pub async fn public_ip(&self, eni: &str) -> Result<Option<String>, Ec2Error> {
        let body =
            format!("Action=DescribeNetworkInterfaces&Version=2016-11-15&NetworkInterfaceId.1={}", urlencode(eni));
        let xml = self.call(body).await?;
        Ok(association_public_ip(&xml))
    }

    /// The entries Fluidity added to `group` (by their description), on any port.
    pub async fn caller_rules(&self, group: &str) -> Result<Vec<CallerRule>, Ec2Error> {
        let body = format!("Action=DescribeSecurityGroups&Version=2016-11-15&GroupId.1={}", urlencode(group));
        let xml = self.call(body).await?;
        Ok(caller_rules_in(&xml))
    }

    /// Admits `address` (as /32 or /128) to `group` on `port`, described as
    /// Fluidity's with `since` (RFC 3339).
    pub async fn admit(&self, group: &str, port: u16, address: IpAddr, since: &str) -> Result<(), Ec2Error> {
        let rule = CallerRule::of(address, port, format!("{CALLER_RULE_PREFIX}{since}"));
        let body = ingress_form("AuthorizeSecurityGroupIngress", group, port, &[&rule]);
        // A wake racing another from the same address finds it admitted.
        tolerate(self.call(body).await, "InvalidPermission.Duplicate")
    }

    /// Sets the time of `address`'s entry on `port` to `since`.
    pub async fn refresh(&self, group: &str, port: u16, address: IpAddr, since: &str) -> Result<(), Ec2Error> {
        let rule = CallerRule::of(address, port, format!("{CALLER_RULE_PREFIX}{since}"));
        let body = ingress_form("UpdateSecurityGroupRuleDescriptionsIngress", group, port, &[&rule]);
        self.call(body).await.map(drop)
    }

    /// Revokes `rules` from `group`: one call per port (none for no rules).
    pub async fn revoke(&self, group: &str, rules: &[CallerRule]) -> Result<(), Ec2Error> {
        let mut ports: Vec<u16> = rules.iter().map(|r| r.port).collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            let on_port: Vec<&CallerRule> = rules.iter().filter(|r| r.port == port).collect();
            let body = ingress_form("RevokeSecurityGroupIngress", group, port, &on_port);
            // A sleep racing a kill finds them revoked.
            tolerate(self.call(body).await, "InvalidPermission.NotFound")?;
        }
        Ok(())
    }

    async fn call(&self, body: String) -> Result<String, Ec2Error> {
        self.signer.query("ec2", body).await
    }
}

/// Success, or the one error `code` that means the change is already made
/// ("Error codes for the Amazon EC2 API", EC2 API Reference).
fn tolerate(outcome: Result<String, Ec2Error>, code: &str) -> Result<(), Ec2Error> {
    match outcome {
        Err(Ec2Error::Call(crate::sigv4::QueryError::Api { code: found, .. })) if found == code => Ok(()),
        other => other.map(drop),
    }
}

/// What marks an ingress entry as added by Wake; the time it was added follows.
pub const CALLER_RULE_PREFIX: &str = "fluidity wake ";

/// One address Wake admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerRule {
    /// `203.0.113.7/32` or `2001:db8::7/128`.
    pub cidr: String,
    /// The TCP port it opens (the server's, unless ServerPort changed since).
    pub port: u16,
    /// The entry's description: [`CALLER_RULE_PREFIX`] and the time.
    pub description: String,
}

impl CallerRule {
    fn of(address: IpAddr, port: u16, description: String) -> Self {
        let bits = if address.is_ipv4() { 32 } else { 128 };
        Self { cidr: format!("{address}/{bits}"), port, description }
    }

    /// When it was added (RFC 3339, so the text sorts by time).
    pub fn since(&self) -> &str {
        self.description.strip_prefix(CALLER_RULE_PREFIX).unwrap_or_default()
    }

    /// Whether it admits exactly `address`.
    pub fn admits(&self, address: IpAddr) -> bool {
        self.cidr.split_once('/').and_then(|(ip, _)| ip.parse::<IpAddr>().ok()) == Some(address)
    }

    fn is_ipv6(&self) -> bool {
        self.cidr.contains(':')
    }
}

/// The Query form of an ingress change: one TCP permission on `port` with
/// each rule's range ("AuthorizeSecurityGroupIngress", EC2 API Reference;
/// a revoke matches ranges without their descriptions).
fn ingress_form(action: &str, group: &str, port: u16, rules: &[&CallerRule]) -> String {
    let mut form = format!(
        "Action={action}&Version=2016-11-15&GroupId={}&IpPermissions.1.IpProtocol=tcp\
         &IpPermissions.1.FromPort={port}&IpPermissions.1.ToPort={port}",
        urlencode(group)
    );
    let revoking = action.starts_with("Revoke");
    let (v4, v6): (Vec<&CallerRule>, Vec<&CallerRule>) = rules.iter().copied().partition(|r| !r.is_ipv6());
    for (list, field, ranges) in [(v4, "CidrIp", "IpRanges"), (v6, "CidrIpv6", "Ipv6Ranges")] {
        for (i, rule) in list.iter().enumerate() {
            let at = format!("IpPermissions.1.{ranges}.{}", i + 1);
            form.push_str(&format!("&{at}.{field}={}", urlencode(&rule.cidr)));
            if !revoking {
                form.push_str(&format!("&{at}.Description={}", urlencode(&rule.description)));
            }
        }
    }
    form
}

/// Fluidity's entries in a DescribeSecurityGroups answer (one TCP port
/// each): each `<ipPermissions>` item is split at its `<ipProtocol>`, and
/// within it each `<cidrIp>`/`<cidrIpv6>` is read with the `<description>`
/// of its item.
pub fn caller_rules_in(xml: &str) -> Vec<CallerRule> {
    let Some(ingress) = xml_text(xml, "ipPermissions") else { return vec![] };
    let mut rules = vec![];
    for permission in ingress.split("<ipProtocol>").skip(1) {
        let port = |tag| xml_text(permission, tag).and_then(|p| p.trim().parse::<u16>().ok());
        let Some(port) =
            port("fromPort").filter(|from| permission.starts_with("tcp<") && port("toPort") == Some(*from))
        else {
            continue;
        };
        for range in permission.split("<item>").skip(1) {
            let range = range.split("</item>").next().unwrap_or_default();
            let cidr = xml_text(range, "cidrIp").or_else(|| xml_text(range, "cidrIpv6"));
            let description = xml_text(range, "description").unwrap_or_default();
            if let Some(cidr) = cidr
                && description.starts_with(CALLER_RULE_PREFIX)
            {
                rules.push(CallerRule { cidr: cidr.trim().into(), port, description: description.trim().into() });
            }
        }
    }
    rules
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

    #[test]
    fn reads_only_fluiditys_entries_on_the_port() {
        let xml = "<DescribeSecurityGroupsResponse><securityGroupInfo><item><groupId>sg-1</groupId><ipPermissions>\
            <item><ipProtocol>tcp</ipProtocol><fromPort>443</fromPort><toPort>443</toPort><groups/>\
            <ipRanges><item><cidrIp>198.51.100.1/32</cidrIp><description>fluidity wake 2026-12-07T00:00:00Z</description></item>\
            <item><cidrIp>198.51.100.2/32</cidrIp><description>office, by hand</description></item>\
            <item><cidrIp>198.51.100.3/32</cidrIp></item></ipRanges>\
            <ipv6Ranges><item><cidrIpv6>2001:db8::7/128</cidrIpv6><description>fluidity wake 2026-12-07T01:00:00Z</description></item></ipv6Ranges></item>\
            <item><ipProtocol>tcp</ipProtocol><fromPort>22</fromPort><toPort>22</toPort>\
            <ipRanges><item><cidrIp>198.51.100.9/32</cidrIp><description>fluidity wake 2026-12-07T00:00:00Z</description></item></ipRanges></item>\
            </ipPermissions><ipPermissionsEgress><item><ipProtocol>-1</ipProtocol></item></ipPermissionsEgress></item>\
            </securityGroupInfo></DescribeSecurityGroupsResponse>";
        let rules = caller_rules_in(xml);
        let found: Vec<(&str, u16)> = rules.iter().map(|r| (r.cidr.as_str(), r.port)).collect();
        assert_eq!(found, [("198.51.100.1/32", 443), ("2001:db8::7/128", 443), ("198.51.100.9/32", 22)]);
        assert_eq!(rules[1].since(), "2026-12-07T01:00:00Z");
        assert!(rules[1].admits("2001:db8::7".parse().unwrap()));
        assert!(!rules[0].admits("198.51.100.10".parse().unwrap()));
    }

    #[test]
    fn ingress_forms() {
        let rules = [
            CallerRule::of("198.51.100.1".parse().unwrap(), 443, "fluidity wake T".into()),
            CallerRule::of("2001:db8::7".parse().unwrap(), 443, "fluidity wake T".into()),
        ];
        let rules: Vec<&CallerRule> = rules.iter().collect();
        let admit = ingress_form("AuthorizeSecurityGroupIngress", "sg-1", 443, &rules[..1]);
        assert!(admit.contains("&IpPermissions.1.IpRanges.1.CidrIp=198.51.100.1%2F32"), "{admit}");
        assert!(admit.contains("&IpPermissions.1.IpRanges.1.Description=fluidity%20wake%20T"), "{admit}");
        let revoke = ingress_form("RevokeSecurityGroupIngress", "sg-1", 443, &rules);
        assert!(revoke.contains("&IpPermissions.1.Ipv6Ranges.1.CidrIpv6=2001%3Adb8%3A%3A7%2F128"), "{revoke}");
        assert!(!revoke.contains("Description"), "{revoke}");
    }
}
