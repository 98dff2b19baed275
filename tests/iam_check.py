#!/usr/bin/env python3
"""Judges the code's real AWS traffic against the templates' role policies.

  iam_check.py ENDPOINT RECORDING ROLES

RECORDING is the JSON-lines file moto_launcher.py --record wrote while the
test ran each component with its own access key id; ROLES maps each access
key id to the role it stands for ({"fluidity-wake": "fluidity-dev-lambda-WakeRole-…"}).
Each role's policies are read back from the emulator's IAM, as moto resolved
them from the templates. Every recorded call becomes (action, resource,
context) the way AWS authorises it (sources next to each rule below) and is
evaluated by tests/iam_eval.py. Then each role is asked for calls it must not
be able to make, and the ListTasks calls are asked again against the policy
as it was before ListTasks was granted on "*".

Prints one JSON report: {"calls": [...], "denied": [...], "forbidden": [...],
"old_list_tasks": [...], "actions": {key: [action, ...]}}; exits 0 (the test
asserts on the report).
"""
import json
import sys
import urllib.parse

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
    if (service, action) == ("ec2", "DescribeNetworkInterfaces"):
        return [("*", context)]
    if (service, action) == ("cloudwatch", "GetMetricData"):
        return [("*", context)]
    if (service, action) == ("cloudwatch", "PutMetricData"):
        return [("*", dict(context, **{"cloudwatch:namespace": form["Namespace"]}))]
    raise SystemExit(f"iam_check.py has no rule for {service}:{action}: add one with its source")


def calls_of(entry):
    """(action, resource, context) for one recorded request."""
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


def main(endpoint, recording, roles_file):
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
    report["forbidden"] = forbidden(policies)
    print(json.dumps(report))


def before_the_fix(policies):
    """The policies with ListTasks scoped to container-instance/*, as it was."""
    old = json.loads(json.dumps(policies))
    for policy in old:
        for statement in policy["Statement"]:
            if statement.get("Action") == "ecs:ListTasks":
                statement["Resource"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/*"
    return old


def forbidden(policies):
    """Calls each role must not be able to make, with their decisions."""
    service = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/fluidity-dev/fluidity-server-dev"
    other_service = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/fluidity-dev/someone-else"
    dev = {"ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/fluidity-dev", "aws:RequestedRegion": REGION}
    other_cluster = {"ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/other", "aws:RequestedRegion": REGION}
    region = {"aws:RequestedRegion": REGION}
    cases = [
        ("fluidity-status", "ecs:UpdateService", service, dev),
        ("fluidity-status", "cloudwatch:GetMetricData", "*", region),
        ("fluidity-sleep", "ec2:DescribeNetworkInterfaces", "*", region),
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
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
