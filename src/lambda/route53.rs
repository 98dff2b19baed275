//! The optional server name: one Route 53 ChangeResourceRecordSets call
//! (REST-XML, signed here like the EC2 calls) that UPSERTs an A record, TTL
//! 60, to the running task's public IP. Made only when the stack sets
//! `HostedZoneId` and `ServerDomainName`.

use std::net::Ipv4Addr;

use super::ec2::{Ec2Error, Signer};
use super::env::ServerName;
use crate::sigv4::xml_text;

/// Seconds resolvers may keep the address: short, as a task's IP changes on every wake.
pub const TTL: u32 = 60;

/// A minimal Route 53 client.
#[derive(Clone)]
pub struct Route53 {
    signer: Signer,
}

impl Route53 {
    /// Uses the credentials and endpoint override of `config`; Route 53 is
    /// global, signed in its partition's home region.
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> Result<Self, Ec2Error> {
        let region = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        let (endpoint, signing_region) = global_endpoint(&region);
        Ok(Self { signer: Signer::new(config, endpoint, signing_region)? })
    }

    /// Points `name` at `ip`.
    pub async fn point(&self, name: &ServerName, ip: Ipv4Addr) -> Result<(), Ec2Error> {
        let path = format!("/2013-04-01/hostedzone/{}/rrset/", name.zone_id.trim_start_matches("/hostedzone/"));
        let answer =
            self.signer.send("route53", "POST", &path, "application/xml", change_batch(&name.name, ip)).await?;
        if answer.status != 200 {
            let code = xml_text(&answer.body, "Code").unwrap_or("error").to_string();
            let message = xml_text(&answer.body, "Message").unwrap_or(answer.body.trim()).to_string();
            return Err(Ec2Error::Call(crate::sigv4::QueryError::Api { status: answer.status, code, message }));
        }
        Ok(())
    }
}

/// Route 53's endpoint and signing region for `region`'s partition
/// ("Amazon Route 53 endpoints and quotas", AWS General Reference).
fn global_endpoint(region: &str) -> (String, String) {
    if region.starts_with("cn-") {
        ("https://route53.amazonaws.com.cn".into(), "cn-northwest-1".into())
    } else if region.starts_with("us-gov-") {
        ("https://route53.us-gov.amazonaws.com".into(), "us-gov-west-1".into())
    } else {
        ("https://route53.amazonaws.com".into(), "us-east-1".into())
    }
}

/// The request body: one UPSERT of an A record.
fn change_batch(name: &str, ip: Ipv4Addr) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <ChangeBatch><Comment>fluidity: the running server</Comment><Changes><Change><Action>UPSERT</Action>\
         <ResourceRecordSet><Name>{name}</Name><Type>A</Type><TTL>{TTL}</TTL>\
         <ResourceRecords><ResourceRecord><Value>{ip}</Value></ResourceRecord></ResourceRecords>\
         </ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upsert_of_an_a_record() {
        let body = change_batch("tunnel.example.com", Ipv4Addr::new(203, 0, 113, 7));
        for part in ["<Action>UPSERT</Action>", "<Name>tunnel.example.com</Name>", "<Type>A</Type>", "<TTL>60</TTL>"] {
            assert!(body.contains(part), "{part} in {body}");
        }
        assert_eq!(xml_text(&body, "Value"), Some("203.0.113.7"));
        assert_eq!(global_endpoint("eu-west-1").1, "us-east-1");
        assert_eq!(global_endpoint("cn-north-1").0, "https://route53.amazonaws.com.cn");
    }
}
