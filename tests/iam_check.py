#!/usr/bin/env python3
"""Judges the code's real AWS traffic against the templates' role policies.

  iam_check.py ENDPOINT RECORDING ROLES GROUP ZONE NAME

RECORDING is the JSON-lines file moto_launcher.py --record wrote while the
test ran each component with its own access key id; ROLES maps each access
key id to the role it stands for ({"fluidity-wake": "fluidity-dev-lambda-WakeRole-…"}).
Each role's policies are read back from the emulator's IAM, as moto resolved
them from the templates. GROUP, ZONE and NAME are the stack's security group,
hosted zone and server name (the forbidden calls are asked about others). Every recorded call becomes (action, resource,
context) the way AWS authorises it (sources next to each rule below) and is
evaluated by tests/iam_eval.py. Then each role is asked for calls it must not
be able to make, and the ListTasks calls are asked again against the policy
as it was before ListTasks was granted on "*".

Prints one JSON report: {"calls": [...], "denied": [...], "forbidden": [...],
"old_list_tasks": [...], "actions": {key: [action, ...]}}; exits 0 (the test
asserts on the report).
"""
import json
import re
import sys
import urllib.parse
import xml.etree.ElementTree as ET

import boto3

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import iam_eval  # noqa: E402
from cfn_stacks import document  # noqa: E402

REGION, ACCOUNT = "us-east-1", "123456789012"
ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
# The Query APIs the components call, by their API version.
QUERY_VERSIONS = {"2016-11-15": "ec2", "2010-08-01": "cloudwatch"}


def ecs_arn(kind, cluster, name):
    if name.startswith("arn:"):
        return name
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:{kind}/{cluster}/{name}"


def cluster_arn(cluster):
    return cluster if cluster.startswith("arn:") else f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}"


def cluster_name(cluster):
    return cluster.rsplit("/", 1)[-1]


def ecs_requests(action, body):
    """ECS: resource ARNs and the ecs:cluster key, per the Service Authorization
    Reference (Amazon ECS: "Actions defined by Amazon Elastic Container
    Service") with new-format ARNs task/CLUSTER/ID and service/CLUSTER/NAME."""
    cluster = body.get("cluster", "default")
    context = {"ecs:cluster": cluster_arn(cluster), "aws:RequestedRegion": REGION}
    name = cluster_name(cluster)
    if action in ("DescribeServices",):
        return [(ecs_arn("service", name, s), context) for s in body["services"]]
    if action == "UpdateService":
        return [(ecs_arn("service", name, body["service"]), context)]
    if action == "DescribeTasks":
        return [(ecs_arn("task", name, t), context) for t in body["tasks"]]
    if action == "ListTasks":
        # Without containerInstance (always, on Fargate) AWS authorises
        # ListTasks against "*" with ecs:cluster ("Amazon ECS identity-based
        # policy examples": List and describe task examples).
        if "containerInstance" in body:
            return [(ecs_arn("container-instance", name, body["containerInstance"]), context)]
        return [("*", context)]
    raise SystemExit(f"iam_check.py has no rule for ecs:{action}: add one with its source")


def query_requests(service, action, form):
    """Query-protocol calls the code makes. EC2 Describe* and CloudWatch
    GetMetricData/PutMetricData have no resource type (Service Authorization
    Reference: Amazon EC2; Amazon CloudWatch), so they are authorised on "*";
    PutMetricData carries cloudwatch:namespace ("Using condition keys to limit
    access to CloudWatch namespaces", CloudWatch User Guide)."""
    context = {"aws:RequestedRegion": REGION}
    if (service, action) in (("ec2", "DescribeNetworkInterfaces"), ("ec2", "DescribeSecurityGroups")):
        return [("*", context)]
    if service == "ec2" and action in ("AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress",
                                       "UpdateSecurityGroupRuleDescriptionsIngress"):
        # The group is the action's required resource ("Actions defined by
        # Amazon EC2": security-group*), named by GroupId.
        return [(f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{form['GroupId']}", context)]
    if (service, action) == ("cloudwatch", "GetMetricData"):
        return [("*", context)]
    if (service, action) == ("cloudwatch", "PutMetricData"):
        return [("*", dict(context, **{"cloudwatch:namespace": form["Namespace"]}))]
    raise SystemExit(f"iam_check.py has no rule for {service}:{action}: add one with its source")


def route53_requests(path, body):
    """ChangeResourceRecordSets: the hosted zone, and the condition keys
    Route 53 fills from the change batch: the record names normalised
    (lowercase, no trailing dot), types and actions ("Using IAM policy
    conditions for fine-grained access control to manage resource record
    sets", Route 53 Developer Guide)."""
    zone = re.fullmatch(r"/2013-04-01/hostedzone/([^/]+)/rrset/?", path)
    if zone is None:
        raise SystemExit(f"iam_check.py has no rule for the Route 53 request {path}")
    ns = {"r": "https://route53.amazonaws.com/doc/2013-04-01/"}
    changes = ET.fromstring(body).findall(".//r:Change", ns)
    names = [c.findtext("r:ResourceRecordSet/r:Name", "", ns).lower().rstrip(".") for c in changes]
    types = [c.findtext("r:ResourceRecordSet/r:Type", "", ns) for c in changes]
    actions = [c.findtext("r:Action", "", ns) for c in changes]
    context = {"route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
               "route53:ChangeResourceRecordSetsRecordTypes": types,
               "route53:ChangeResourceRecordSetsActions": actions}
    return [(f"arn:aws:route53:::hostedzone/{zone.group(1)}", context)]


def calls_of(entry):
    """(action, resource, context) for one recorded request."""
    if entry["path"].startswith("/2013-04-01/"):
        return [("route53:ChangeResourceRecordSets", r, c) for r, c in route53_requests(entry["path"], entry["body"])]
    if entry["target"].startswith(ECS_TARGET):
        action = entry["target"][len(ECS_TARGET):]
        return [(f"ecs:{action}", r, c) for r, c in ecs_requests(action, json.loads(entry["body"] or "{}"))]
    if entry["content_type"].startswith("application/x-www-form-urlencoded"):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(entry["body"]).items()}
        action = form["Action"]
        service = QUERY_VERSIONS.get(form.get("Version"))
        if service is None:
            raise SystemExit(f"iam_check.py does not know the Query API version of {form}")
        return [(f"{service}:{action}", r, c) for r, c in query_requests(service, action, form)]
    raise SystemExit(f"iam_check.py cannot read the request {entry['method']} {entry['path']}")


def main(endpoint, recording, roles_file, *scope):
    roles = json.load(open(roles_file))
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test",
                       aws_secret_access_key="test")

    def policies_of(role):
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        return [document(iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"]) for p in names]

    policies = {key: policies_of(role) for key, role in roles.items()}
    report = {"calls": [], "denied": [], "forbidden": [], "old_list_tasks": [], "actions": {}}
    for line in open(recording):
        entry = json.loads(line)
        key = entry["access_key"]
        if key not in roles:
            continue  # the test's own setup, not a component's traffic
        for action, resource, context in calls_of(entry):
            decision = iam_eval.evaluate(policies[key], action, resource, context)
            call = {"key": key, "action": action, "resource": resource, "decision": decision}
            report["calls"].append(call)
            report["actions"].setdefault(key, [])
            if action not in report["actions"][key]:
                report["actions"][key].append(action)
            if decision != "Allow":
                call["why"] = iam_eval.explain(policies[key], action, resource, context)
                report["denied"].append(call)
            if action == "ecs:ListTasks":
                report["old_list_tasks"].append(
                    iam_eval.evaluate(before_the_fix(policies[key]), action, resource, context))
    report["forbidden"] = forbidden(policies, *scope)
    print(json.dumps(report))


def before_the_fix(policies):
    """The policies with ListTasks scoped to container-instance/*, as it was."""
    old = json.loads(json.dumps(policies))
    for policy in old:
        for statement in policy["Statement"]:
            if statement.get("Action") == "ecs:ListTasks":
                statement["Resource"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/*"
    return old


def forbidden(policies, group, zone, name):
    """Calls each role must not be able to make, with their decisions."""
    other_group = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-0123456789abcdef0"
    group = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{group}"
    other_zone, zone = "arn:aws:route53:::hostedzone/ZOTHER", f"arn:aws:route53:::hostedzone/{zone}"

    def record(record_name, kind="A", action="UPSERT"):
        return {"route53:ChangeResourceRecordSetsNormalizedRecordNames": [record_name],
                "route53:ChangeResourceRecordSetsRecordTypes": [kind],
                "route53:ChangeResourceRecordSetsActions": [action]}

    service = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/fluidity-dev/fluidity-server-dev"
    other_service = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/fluidity-dev/someone-else"
    dev = {"ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/fluidity-dev", "aws:RequestedRegion": REGION}
    other_cluster = {"ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/other", "aws:RequestedRegion": REGION}
    region = {"aws:RequestedRegion": REGION}
    cases = [
        ("fluidity-status", "ecs:UpdateService", service, dev),
        ("fluidity-status", "cloudwatch:GetMetricData", "*", region),
        ("fluidity-sleep", "ec2:DescribeNetworkInterfaces", "*", region),
        ("fluidity-wake", "ec2:AuthorizeSecurityGroupIngress", other_group, region),
        ("fluidity-wake", "ec2:RevokeSecurityGroupIngress", other_group, region),
        ("fluidity-kill", "ec2:RevokeSecurityGroupIngress", other_group, region),
        ("fluidity-sleep", "ec2:AuthorizeSecurityGroupIngress", group, region),
        ("fluidity-status", "ec2:AuthorizeSecurityGroupIngress", group, region),
        ("fluidity-wake", "route53:ChangeResourceRecordSets", zone, record("other.fluidity.test")),
        ("fluidity-wake", "route53:ChangeResourceRecordSets", other_zone, record(name)),
        ("fluidity-status", "route53:ChangeResourceRecordSets", zone, record(name, "TXT")),
        ("fluidity-status", "route53:ChangeResourceRecordSets", zone, record(name, "A", "DELETE")),
        ("fluidity-kill", "route53:ChangeResourceRecordSets", zone, record("other.fluidity.test")),
        ("fluidity-sleep", "route53:ChangeResourceRecordSets", other_zone, record(name)),
        ("fluidity-wake", "ecs:UpdateService", other_service, dev),
        ("fluidity-wake", "ecs:ListTasks", "*", other_cluster),
        ("fluidity-wake", "cloudwatch:PutMetricData", "*", dict(region, **{"cloudwatch:namespace": "Fluidity"})),
        ("fluidity-kill", "ecs:DeleteService", service, dev),
        ("fluidity-kill", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/x", {}),
        ("fluidity-server", "cloudwatch:PutMetricData", "*", dict(region, **{"cloudwatch:namespace": "Other"})),
        ("fluidity-server", "ecs:UpdateService", service, dev),
        ("fluidity-server", "cloudwatch:GetMetricData", "*", region),
    ]
    return [
        {"key": key, "action": action, "resource": resource,
         "decision": iam_eval.evaluate(policies[key], action, resource, context)}
        for key, action, resource, context in cases if key in policies
    ]


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
