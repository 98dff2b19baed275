//! The network the server runs in. `VpcId` and `PublicSubnets` given: used
//! as they are. Neither given: what the deployed Fargate stack uses, or, on
//! a first deploy, the region's default VPC and those of its subnets that
//! give what starts in them a public IP (`MapPublicIpOnLaunch`: the task
//! needs one to be reached and to pull its image). `VpcId` alone: that
//! VPC's such subnets. A region without them is refused in one line before
//! anything is made.
//!
//! Two EC2 Query calls, DescribeVpcs and DescribeSubnets, signed by hand
//! ([`super::aws::query`]) as the Lambda's DescribeNetworkInterfaces is:
//! aws-sdk-ec2 would add minutes to every clean build for them.

use anyhow::Context;

use super::Error;
use super::aws::Clients;
use super::params::Values;
use crate::config::ConfigError;
use crate::sigv4::{urlencode, xml_text};

/// The version of EC2's Query API.
const VERSION: &str = "2016-11-15";

/// A network chosen for the user, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub vpc: String,
    pub subnets: Vec<String>,
    pub source: Source,
}

/// Where a [`Network`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The region's default VPC and its public subnets.
    DefaultVpc,
    /// The public subnets of the VPC given.
    GivenVpc,
    /// What the deployed Fargate stack uses (an update moves nothing).
    Deployed,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (vpc, subnets) = (&self.vpc, self.subnets.join(","));
        match self.source {
            Source::DefaultVpc => write!(
                f,
                "network: the region's default VPC {vpc} and its subnets that give a public IP, {subnets} \
                 (--param VpcId=… --param PublicSubnets=… to choose others)"
            ),
            Source::GivenVpc => write!(f, "network: VPC {vpc} and its subnets that give a public IP, {subnets}"),
            Source::Deployed => write!(f, "network: VPC {vpc} and subnets {subnets}, as deployed"),
        }
    }
}

/// Refuses subnets without their VPC, before any AWS call.
pub fn check(values: &Values) -> Result<(), ConfigError> {
    if values.get("PublicSubnets").is_some() && values.get("VpcId").is_none() {
        return Err(ConfigError::new(
            "VpcId",
            "not given, but PublicSubnets is",
            "pass --param VpcId=vpc-… (the subnets' VPC), or neither for the region's default VPC",
        ));
    }
    Ok(())
}

/// The network to deploy into when `values` do not name one (`None` when
/// they do). `deployed`: the VpcId and PublicSubnets of the live Fargate stack.
pub async fn choose(
    clients: &Clients,
    values: &Values,
    deployed: Option<(String, String)>,
) -> Result<Option<Network>, Error> {
    if values.get("PublicSubnets").is_some() {
        return Ok(None);
    }
    let (vpc, source) = match (values.get("VpcId"), deployed) {
        (Some(vpc), _) => (vpc.to_owned(), Source::GivenVpc),
        (None, Some((vpc, subnets))) => {
            return Ok(Some(Network { vpc, subnets: deployed_list(&subnets), source: Source::Deployed }));
        }
        (None, None) => (default_vpc(clients).await?, Source::DefaultVpc),
    };
    let subnets = public_subnets(&describe(clients, "DescribeSubnets", "vpc-id", &vpc).await?, &vpc);
    if subnets.is_empty() {
        let which = match source {
            Source::DefaultVpc => format!("the default VPC {vpc} of {}", clients.region),
            _ => format!("VPC {vpc}"),
        };
        return Err(ConfigError::new(
            "PublicSubnets",
            format!("not given, and {which} has no subnet that gives a public IP on launch"),
            "pass --param PublicSubnets=subnet-…,subnet-… naming subnets with a route to an internet gateway",
        )
        .into());
    }
    Ok(Some(Network { vpc, subnets, source }))
}

/// The region's default VPC, or the one-line refusal.
async fn default_vpc(clients: &Clients) -> Result<String, Error> {
    let xml = describe(clients, "DescribeVpcs", "isDefault", "true").await?;
    let Some(vpc) = default_vpc_of(&xml) else {
        return Err(ConfigError::new(
            "VpcId",
            format!("not given, and {} has no default VPC", clients.region),
            "pass --param VpcId=vpc-… --param PublicSubnets=subnet-…,subnet-…, subnets of it that give a public IP on launch",
        )
        .into());
    };
    Ok(vpc)
}

/// One EC2 Describe call with one filter: the XML of its answer.
async fn describe(clients: &Clients, action: &str, filter: &str, value: &str) -> anyhow::Result<String> {
    let body = format!(
        "Action={action}&Version={VERSION}&Filter.1.Name={}&Filter.1.Value.1={}",
        urlencode(filter),
        urlencode(value)
    );
    super::aws::query(clients, "ec2", &format!("EC2 {action}"), body)
        .await
        .context("cannot choose the network (pass --param VpcId=… --param PublicSubnets=… to name it)")
}

/// The ids in a deployed `List<…>` parameter's value: `a,b` from AWS (the
/// local emulator shows `['a', 'b']`; ids have neither brackets nor quotes).
fn deployed_list(value: &str) -> Vec<String> {
    let id = |s: &str| s.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).to_owned();
    value.split(',').map(id).filter(|s| !s.is_empty()).collect()
}

/// The id of the default VPC in a DescribeVpcs answer.
fn default_vpc_of(xml: &str) -> Option<String> {
    let vpc = items(xml, "vpcSet").into_iter().find(|vpc| xml_text(vpc, "isDefault") == Some("true"))?;
    xml_text(vpc, "vpcId").map(|id| id.trim().to_owned())
}

/// The subnets of `vpc` in a DescribeSubnets answer that give a public IP
/// on launch, in the order of their availability zones.
fn public_subnets(xml: &str, vpc: &str) -> Vec<String> {
    let mut found: Vec<(&str, &str)> = items(xml, "subnetSet")
        .into_iter()
        .filter(|s| xml_text(s, "vpcId") == Some(vpc) && xml_text(s, "mapPublicIpOnLaunch") == Some("true"))
        .filter_map(|s| Some((xml_text(s, "availabilityZone").unwrap_or_default(), xml_text(s, "subnetId")?)))
        .collect();
    found.sort_unstable();
    found.into_iter().map(|(_, id)| id.trim().to_owned()).collect()
}

/// The top-level `<item>`s of the first `<{set}>` in `xml` (items nest: a
/// VPC's CIDR blocks are items of a set inside it).
fn items<'a>(xml: &'a str, set: &str) -> Vec<&'a str> {
    let Some(body) = xml_text(xml, set) else { return Vec::new() };
    let (mut found, mut depth, mut start, mut at) = (Vec::new(), 0usize, 0, 0);
    while let Some(offset) = body[at..].find("item>") {
        let tag = at + offset;
        at = tag + "item>".len();
        if body[..tag].ends_with("</") {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                found.push(&body[start..tag - 2]);
            }
        } else if body[..tag].ends_with('<') {
            if depth == 0 {
                start = at;
            }
            depth += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of EC2's answers (as moto gives them), nested sets included.
    const VPCS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><vpcSet><item><ownerId>123456789012</ownerId><cidrBlockAssociationSet><item><associationId>vpc-cidr-assoc-1</associationId><cidrBlock>172.31.0.0/16</cidrBlock></item></cidrBlockAssociationSet><isDefault>true</isDefault><tagSet/><vpcId>vpc-7dad</vpcId><state>available</state></item></vpcSet><requestId>r</requestId></DescribeVpcsResponse>"#;

    fn subnet(id: &str, vpc: &str, zone: &str, public: bool) -> String {
        format!(
            "<item><availabilityZoneId>use1-az6</availabilityZoneId><ipv6CidrBlockAssociationSet><item><ipv6CidrBlock>2600::/64</ipv6CidrBlock></item></ipv6CidrBlockAssociationSet>\
             <tagSet><item><key>Name</key><value>x</value></item></tagSet><subnetId>{id}</subnetId><vpcId>{vpc}</vpcId>\
             <availabilityZone>{zone}</availabilityZone><mapPublicIpOnLaunch>{public}</mapPublicIpOnLaunch></item>"
        )
    }

    #[test]
    fn finds_the_default_vpc_and_its_public_subnets() {
        assert_eq!(default_vpc_of(VPCS).as_deref(), Some("vpc-7dad"));
        assert_eq!(default_vpc_of(&VPCS.replace("<isDefault>true", "<isDefault>false")), None);
        assert_eq!(default_vpc_of("<DescribeVpcsResponse><vpcSet/></DescribeVpcsResponse>"), None);

        let xml = format!(
            "<DescribeSubnetsResponse><subnetSet>{}{}{}{}</subnetSet></DescribeSubnetsResponse>",
            subnet("subnet-b", "vpc-7dad", "us-east-1b", true),
            subnet("subnet-private", "vpc-7dad", "us-east-1a", false),
            subnet("subnet-a", "vpc-7dad", "us-east-1a", true),
            subnet("subnet-other", "vpc-other", "us-east-1a", true),
        );
        assert_eq!(items(&xml, "subnetSet").len(), 4, "nested items are not subnets");
        assert_eq!(public_subnets(&xml, "vpc-7dad"), ["subnet-a", "subnet-b"]);
        assert!(
            public_subnets("<DescribeSubnetsResponse><subnetSet/></DescribeSubnetsResponse>", "vpc-7dad").is_empty()
        );
        assert_eq!(deployed_list("subnet-a,subnet-b"), ["subnet-a", "subnet-b"]);
        assert_eq!(deployed_list("['subnet-a', 'subnet-b']"), ["subnet-a", "subnet-b"]);
    }

    #[test]
    fn subnets_need_their_vpc_and_the_choice_is_one_line() {
        let values = |json: &str| Values::from_text(std::path::Path::new("params.json"), json).unwrap();
        assert_eq!(check(&values(r#"{"PublicSubnets": "subnet-1"}"#)).unwrap_err().key, "VpcId");
        check(&values(r#"{"VpcId": "vpc-1"}"#)).unwrap();
        check(&values(r#"{"VpcId": "", "PublicSubnets": ""}"#)).unwrap();
        let chosen = Network {
            vpc: "vpc-1".into(),
            subnets: vec!["subnet-a".into(), "subnet-b".into()],
            source: Source::DefaultVpc,
        };
        let line = chosen.to_string();
        assert!(
            !line.contains('\n') && line.contains("default VPC vpc-1") && line.contains("subnet-a,subnet-b"),
            "{line}"
        );
    }
}
