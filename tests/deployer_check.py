#!/usr/bin/env python3
"""Judges the deploy tool's real AWS traffic against the deployer's policy.

  deployer_check.py RECORDING POLICY ACCESS_KEY

RECORDING is the JSON-lines file moto_launcher.py --record wrote while the
tool ran with ACCESS_KEY; POLICY is cloudformation/deployer-policy.json.
Each of the tool's requests becomes (action, resource, context) the way AWS
authorises it (sources next to each rule) and is evaluated by
tests/iam_eval.py. What CloudFormation then does with the same credentials
(roles, functions, the API, schedules, alarms, the cluster) happens inside
the emulator and is not recorded: FOR_THE_STACKS lists those calls for the
templates' resources, and FORBIDDEN what the policy must refuse.

Prints {"calls": n, "actions": [...], "denied": [...], "forbidden": [...],
"for_the_stacks": [...], "size": n}; exits 0 (the test asserts on it).
"""
import json
import sys
import urllib.parse

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import iam_eval  # noqa: E402

REGION, ACCOUNT = "us-east-1", "123456789012"
ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921."
ECS_TARGET = "AmazonEC2ContainerServiceV20141113."


def stack_arn(name):
    return name if name.startswith("arn:") else f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{name}/0"


def cloudformation(form):
    """Service Authorization Reference, "AWS CloudFormation": stack actions
    are authorised on the stack's ARN (change-set actions too);
    DescribeStackDriftDetectionStatus, ListStacks and ValidateTemplate on "*"."""
    action = form["Action"]
    name = form.get("StackName")
    return [(f"cloudformation:{action}", stack_arn(name) if name else "*")]


def s3(entry):
    """Service Authorization Reference, "Amazon S3": HeadBucket and
    ListObjectsV2 are s3:ListBucket, HeadObject is s3:GetObject, a bucket's
    public access block is s3:PutBucketPublicAccessBlock (path-style URLs:
    the tool's client uses them with an endpoint URL)."""
    method = entry["method"]
    bucket, _, key = entry["path"].lstrip("/").partition("/")
    query = urllib.parse.parse_qs(entry["query"], keep_blank_values=True)
    if key:
        action = {"GET": "GetObject", "HEAD": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}[method]
        return [(f"s3:{action}", f"arn:aws:s3:::{bucket}/{key}")]
    if "publicAccessBlock" in query:
        action = {"PUT": "PutBucketPublicAccessBlock", "GET": "GetBucketPublicAccessBlock"}[method]
    else:
        action = {"HEAD": "ListBucket", "GET": "ListBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}[method]
    return [(f"s3:{action}", f"arn:aws:s3:::{bucket}")]


def ecr(action, body):
    """GetAuthorizationToken has no resource type; the rest act on the repository."""
    if action == "GetAuthorizationToken":
        return [("ecr:GetAuthorizationToken", "*")]
    name = body.get("repositoryName")
    names = [name] if name else body.get("repositoryNames", ["*"])
    return [(f"ecr:{action}", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{n}") for n in names]


def secretsmanager(action, body):
    """Secrets act on the secret's ARN (a 6-character suffix follows the name)."""
    name = body.get("SecretId") or body.get("Name")
    arn = name if name.startswith("arn:") else f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"
    return [(f"secretsmanager:{action}", arn)]


def ssm(action, body):
    """Parameters act on their ARN (`parameter` + the name, which starts with
    a slash); GetParametersByPath on the path's."""
    names = body.get("Names") or [body.get("Name") or body.get("Path")]
    return [(f"ssm:{action}", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{n}") for n in names]


def iam(form):
    """CreateServiceLinkedRole acts on the role it makes, with iam:AWSServiceName."""
    action = form["Action"]
    if action != "CreateServiceLinkedRole":
        raise SystemExit(f"deployer_check.py does not know IAM {action}")
    service = form["AWSServiceName"]
    role = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{service}/AWSServiceRoleForECS"
    return [("iam:CreateServiceLinkedRole", role, {"iam:AWSServiceName": service})]


def ec2(form):
    """Service Authorization Reference, "Amazon EC2": the Describe actions
    (the default VPC and its subnets) have no resource type: "*"."""
    action = form["Action"]
    if not action.startswith("Describe"):
        raise SystemExit(f"deployer_check.py does not know EC2 {action}")
    return [(f"ec2:{action}", "*")]


def apigateway(entry):
    """API Gateway authorises the HTTP method on the resource path
    ("Control access for managing an API", API Gateway Developer Guide).
    UpdateAccount also passes the logging role to API Gateway."""
    path = entry["path"]
    calls = [(f"apigateway:{entry['method']}", f"arn:aws:apigateway:{REGION}::{path}")]
    if entry["method"] == "PATCH" and path == "/account":
        for op in json.loads(entry["body"] or "{}").get("patchOperations", []):
            if op.get("path") == "/cloudwatchRoleArn":
                calls.append(("iam:PassRole", op["value"], {"iam:PassedToService": "apigateway.amazonaws.com"}))
    return calls


def ecs(action, body):
    """Service Authorization Reference, "Amazon ECS": services and tasks act
    on their ARNs, RunTask on the task definition's, each with ecs:cluster."""
    cluster = body.get("cluster", "default").rsplit("/", 1)[-1]
    context = {"ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}"}
    if action == "DescribeServices":
        return [(f"ecs:{action}", f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{s}", context)
                for s in body["services"]]
    if action == "RunTask":
        return [("ecs:RunTask", body["taskDefinition"], context)]
    if "resourceArn" in body:  # tags of the checked task definition
        return [(f"ecs:{action}", body["resourceArn"], {})]
    tasks = body.get("tasks") or [body["task"]]
    arn = lambda t: t if t.startswith("arn:") else f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{t}"  # noqa: E731
    return [(f"ecs:{action}", arn(t), context) for t in tasks]


def calls_of(entry):
    """(action, resource, context) for one recorded request of the tool."""
    scope, target = entry["scope"], entry["target"]
    body = json.loads(entry["body"]) if entry["body"].startswith("{") else {}
    form = {k: v[0] for k, v in urllib.parse.parse_qs(entry["body"]).items()} \
        if entry["content_type"].startswith("application/x-www-form-urlencoded") else {}
    if scope == "sts":
        return []  # GetCallerIdentity needs no permission
    if scope == "cloudformation":
        found = cloudformation(form)
    elif scope == "s3":
        found = s3(entry)
    elif scope == "ecr" and target.startswith(ECR_TARGET):
        found = ecr(target[len(ECR_TARGET):], body)
    elif scope == "secretsmanager":
        found = secretsmanager(target.split(".", 1)[1], body)
    elif scope == "ssm":
        found = ssm(target.split(".", 1)[1], body)
    elif scope == "iam":
        found = iam(form)
    elif scope == "apigateway":
        found = apigateway(entry)
    elif scope == "ec2":
        found = ec2(form)
    elif scope == "ecs" and target.startswith(ECS_TARGET):
        found = ecs(target[len(ECS_TARGET):], body)
    else:
        raise SystemExit(f"deployer_check.py cannot read {scope} {entry['method']} {entry['path']} {target}")
    return [call if len(call) == 3 else (*call, {}) for call in found]


# What the policy must refuse, whatever the tool does: other people's
# resources and ways to escalate.
FORBIDDEN = [
    ("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/anyone", {}),
    ("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {}),
    ("iam:AttachRolePolicy", f"arn:aws:iam::{ACCOUNT}:role/admin", {}),
    ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/fluidity-dev-fargate-TaskRole-X",
     {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PassedToService": "lambda.amazonaws.com"}),
    ("iam:CreateServiceLinkedRole", f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/rds.amazonaws.com/X",
     {"iam:AWSServiceName": "rds.amazonaws.com"}),
    ("s3:DeleteBucket", "arn:aws:s3:::someone-elses-bucket", {}),
    ("s3:GetObject", "arn:aws:s3:::someone-elses-bucket/secret", {}),
    ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod-db-AbCdEf", {}),
    ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:fluidity-dev-server-tls-AbCdEf", {}),
    ("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/fluidity/dev/server-tls/0123/server.key", {}),
    ("ssm:PutParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/prod/db-password", {}),
    ("secretsmanager:DeleteSecret", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod-db-AbCdEf", {}),
    ("lambda:UpdateFunctionCode", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:payments", {}),
    ("ecs:UpdateService", f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/prod/api", {}),
    ("ecs:RunTask", f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/fluidity-server-dev:3",
     {"ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod"}),
    ("ecs:StopTask", f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/prod/0123", {}),
    ("ecr:PutImage", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/app", {}),
    ("cloudformation:DeleteStack", f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/network/1", {}),
    ("ec2:RunInstances", "*", {}),
    ("kms:Decrypt", "*", {}),
]


# What CloudFormation does with the deployer's credentials for the stacks'
# resources (named as the templates name them): not recorded, so listed.
ROLE = f"arn:aws:iam::{ACCOUNT}:role/fluidity-dev-fargate-ExecutionRole-ABC"
FOR_THE_STACKS = [
    ("iam:CreateRole", ROLE, {}),
    ("iam:PutRolePolicy", ROLE, {}),
    ("iam:AttachRolePolicy", f"arn:aws:iam::{ACCOUNT}:role/fluidity-apigateway-account-ApiGatewayLogsRole-ABC", {}),
    ("iam:PassRole", ROLE, {"iam:PassedToService": "ecs-tasks.amazonaws.com"}),
    ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/fluidity-dev-lambda-WakeRole-ABC",
     {"iam:PassedToService": "lambda.amazonaws.com"}),
    ("iam:DeleteRole", ROLE, {}),
    ("lambda:CreateFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fluidity-dev-wake", {}),
    ("lambda:AddPermission", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fluidity-dev-sleep", {}),
    ("lambda:UpdateFunctionCode", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fluidity-dev-kill", {}),
    ("apigateway:POST", f"arn:aws:apigateway:{REGION}::/restapis", {}),
    ("apigateway:POST", f"arn:aws:apigateway:{REGION}::/apikeys", {}),
    ("apigateway:POST", f"arn:aws:apigateway:{REGION}::/usageplans", {}),
    ("apigateway:PATCH", f"arn:aws:apigateway:{REGION}::/restapis/abc123/stages/api", {}),
    ("events:PutRule", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/fluidity-dev-sleep", {}),
    ("events:DeleteRule", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/fluidity-dev-nightly-kill", {}),
    ("scheduler:CreateSchedule", f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/fluidity-dev-nightly-stop", {}),
    ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/fluidity-dev-lambda-NightlyStopRole-ABC",
     {"iam:PassedToService": "scheduler.amazonaws.com"}),
    ("events:PutTargets", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/fluidity-dev-sleep", {}),
    ("sns:CreateTopic", f"arn:aws:sns:{REGION}:{ACCOUNT}:fluidity-dev-alarms", {}),
    ("cloudwatch:PutMetricAlarm", f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:fluidity-dev-api-4xx", {}),
    ("cloudwatch:PutDashboard", f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/fluidity-dev", {}),
    ("logs:CreateLogGroup", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/fluidity-dev-wake", {}),
    ("logs:CreateLogGroup", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/ecs/fluidity-dev/fluidity-server-dev", {}),
    ("logs:PutRetentionPolicy", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/apigateway/fluidity-dev-access", {}),
    ("ecs:CreateCluster", f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/fluidity-dev", {}),
    ("ecs:CreateService", f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/fluidity-dev/fluidity-server-dev", {}),
    ("ecs:RegisterTaskDefinition", "*", {}),
    ("ec2:CreateSecurityGroup", f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/*", {}),
    ("ec2:AuthorizeSecurityGroupIngress", f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-0abc", {}),
    ("ec2:DescribeSecurityGroups", "*", {}),
]


def main(recording, policy_file, access_key):
    with open(policy_file) as f:
        policy = json.load(f)
    report = {"calls": 0, "actions": [], "denied": [], "forbidden": [], "for_the_stacks": [],
              "size": len(json.dumps(policy, separators=(",", ":")))}
    with open(recording) as f:
        for line in f:
            entry = json.loads(line)
            if entry["access_key"] != access_key:
                continue  # the test's own setup
            for action, resource, context in calls_of(entry):
                report["calls"] += 1
                if action not in report["actions"]:
                    report["actions"].append(action)
                if iam_eval.evaluate([policy], action, resource, context) != "Allow":
                    report["denied"].append(iam_eval.explain([policy], action, resource, context))
    def listed(calls, allowed):
        """The calls of `calls` whose decision is not `allowed`, one line each."""
        return [f"{a} on {r} {c}" for a, r, c in calls
                if (iam_eval.evaluate([policy], a, r, c) == "Allow") != allowed]
    report["forbidden"] = listed(FORBIDDEN, allowed=False)
    report["for_the_stacks"] = listed(FOR_THE_STACKS, allowed=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:4])
