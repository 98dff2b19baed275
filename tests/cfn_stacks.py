#!/usr/bin/env python3
"""Fluidity's stacks in the local AWS emulator, from the real templates.

  cfn_stacks.py ENDPOINT lifecycle ENV   create, update, delete one environment
  cfn_stacks.py ENDPOINT two-envs        dev and prod in one region: access logs
  cfn_stacks.py ENDPOINT create ENV      create one environment and describe it

Each environment loads cloudformation/params-ENV.json and fills the values a
user or the deploy tool supplies (VPC, subnet, ingress mode, server name, image, code
bucket/key) with objects made here in the emulator. The region's shared stack
(apigateway-account.yaml) is created first, as the deploy tool does.

lifecycle: creates the Fargate stack and the Lambda stack (which imports the
Fargate stack's exports); updates both with changed parameters; deletes the
Lambda stack, then the Fargate stack. Prints per phase each stack's status and
outputs, and each function's environment variables.

two-envs: creates dev and prod, then asks, with our IAM evaluator
(tests/iam_eval.py) over the policies moto resolved, whether the role the
region's API Gateway setting uses may write each environment's access log
group; deletes dev and asks again. moto does not model AWS::ApiGateway::Account
(it skips the type), so the role the setting points at is the shared stack's
LogsRoleArn export, which the Lambda stack's stage waits for.

create: prints the stacks' outputs, each role's physical name by logical id,
the subnet and the security group (for tests/iam.rs).

The tests (tests/cloudformation.rs, tests/iam.rs) assert on the JSON printed.
"""
import ast
import io
import json
import os
import re
import sys
import urllib.request
import zipfile

import boto3
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import iam_eval  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ACCOUNT_STACK = "fluidity-apigateway-account"


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML; short-form tags (!Ref, !Sub…) are ignored."""


CfnLoader.add_multi_constructor("!", lambda loader, tag, node: None)


def template(name):
    body = open(os.path.join(ROOT, "cloudformation", name)).read()
    return body, list(yaml.load(body, Loader=CfnLoader).get("Parameters") or {})


class World:
    def __init__(self, endpoint):
        kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
        self.ec2, self.cfn, self.s3, self.lam, self.iam, self.logs = (
            boto3.client(s, **kw) for s in ("ec2", "cloudformation", "s3", "lambda", "iam", "logs"))
        vpc = self.ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
        self.vpc = vpc
        route53 = boto3.client("route53", **kw)
        zone = route53.create_hosted_zone(Name="fluidity.test", CallerReference="cfn_stacks")["HostedZone"]
        self.zone = zone["Id"].rsplit("/", 1)[-1]
        self.s3.create_bucket(Bucket="fluidity-artifacts")
        package = io.BytesIO()
        with zipfile.ZipFile(package, "w") as z:
            z.writestr("bootstrap", "#!/bin/sh\n")
        self.s3.put_object(Bucket="fluidity-artifacts", Key="lambda/0123abcd.zip", Body=package.getvalue())

    def params(self, env):
        params = json.load(open(os.path.join(ROOT, "cloudformation", f"params-{env}.json")))
        # The defaults a newcomer gets (the address that woke it), and the
        # optional name, so that every conditional grant is exercised.
        params.update(VpcId=self.vpc, PublicSubnets=self.subnet, AllowedIngressCidr="caller", ServerPort="443",
                      HostedZoneId=self.zone, ServerDomainName=f"{env}.fluidity.test",
                      ContainerImage=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/fluidity-server-{env}:0123abcd",
                      CodeBucket="fluidity-artifacts", CodeKey="lambda/0123abcd.zip")
        return params

    def apply(self, verb, name, file, params):
        body, names = template(file)
        missing = [n for n in names if n not in params]
        if missing:
            sys.exit(f"the parameters lack {missing}")
        call = self.cfn.create_stack if verb == "create" else self.cfn.update_stack
        call(StackName=name, TemplateBody=body, Capabilities=["CAPABILITY_IAM"],
             Parameters=[{"ParameterKey": n, "ParameterValue": str(params[n])} for n in names])

    def create_env(self, env):
        params = self.params(env)
        for name, file in env_stacks(env):
            self.apply("create", name, file, params)
            if file == "fargate.yaml":
                # As the deploy tool does: the Lambda stack gets the group's id.
                params["ServerSecurityGroupId"] = self.outputs(name)[1]["SecurityGroupId"]
        return params

    def outputs(self, name):
        found = self.cfn.describe_stacks(StackName=name)["Stacks"][0]
        return found["StackStatus"], {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}

    def role_policies(self, role_arn, template_file=None):
        """The role's inline policies as moto resolved them, plus the AWS
        managed policies the template attaches: moto's CloudFormation ignores
        ManagedPolicyArns, so their documents come from the copy of AWS's
        managed policies moto ships."""
        name = role_arn.rsplit("/", 1)[-1]
        names = self.iam.list_role_policies(RoleName=name)["PolicyNames"]
        inline = [document(self.iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]) for p in names]
        return inline + managed_policies(template_file)


def document(value):
    """A policy document as moto returns it: a dict, JSON text, or (for
    policies it created from a template) the text of a Python dict."""
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return ast.literal_eval(value)


def managed_policies(template_file):
    """The documents of the AWS managed policies a template names."""
    if template_file is None:
        return []
    from moto.iam.aws_managed_policies import aws_managed_policies_data
    known = json.loads(aws_managed_policies_data)
    text = open(os.path.join(ROOT, "cloudformation", template_file)).read()
    names = re.findall(r"iam::aws:policy/(?:[\w-]+/)*([\w-]+)", text)
    return [known[n]["Document"] for n in names]


def env_stacks(env):
    return [(f"fluidity-{env}-fargate", "fargate.yaml"), (f"fluidity-{env}-lambda", "lambda.yaml")]


def lifecycle(world, env):
    stacks = env_stacks(env)

    def snapshot():
        report = {}
        for name, _ in stacks:
            status, outputs = world.outputs(name)
            report[name] = {"status": status, "outputs": outputs}
        functions = {}
        for fn in world.lam.list_functions()["Functions"]:
            functions[fn["FunctionName"]] = {"env": fn.get("Environment", {}).get("Variables", {}),
                                             "architectures": fn.get("Architectures"), "runtime": fn.get("Runtime"),
                                             "handler": fn.get("Handler")}
        report["functions"] = functions
        return report

    out = {}
    params = world.create_env(env)
    out["created"] = snapshot()
    params.update(IdleThresholdMinutes="9", StopTimeout="60", ContainerImage=params["ContainerImage"][:-8] + "4567cdef")
    for name, file in stacks:
        world.apply("update", name, file, params)
    out["updated"] = snapshot()
    for name, _ in reversed(stacks):
        world.cfn.delete_stack(StackName=name)
    summaries = world.cfn.list_stacks()["StackSummaries"]
    out["deleted"] = {name: [s["StackStatus"] for s in summaries if s["StackName"] == name] for name, _ in stacks}
    out["shared"] = world.outputs(ACCOUNT_STACK)[0]
    return out


def two_envs(world):
    envs = ["dev", "prod"]
    for env in envs:
        world.create_env(env)

    def access(env_names):
        role_arn = world.outputs(ACCOUNT_STACK)[1]["LogsRoleArn"]
        policies = world.role_policies(role_arn, "apigateway-account.yaml")
        answer = {}
        for env in env_names:
            group = f"/aws/apigateway/fluidity-{env}-access"
            if not world.logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
                sys.exit(f"the {env} stack made no log group {group}")
            arn = f"arn:aws:logs:us-east-1:123456789012:log-group:{group}"
            stream = f"{arn}:log-stream:access"
            answer[env] = {"group": group}
            for action in ("logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"):
                answer[env][action] = iam_eval.evaluate(policies, action, stream if action == "logs:PutLogEvents" else arn)
        return answer

    out = {"both": access(envs)}
    for name, _ in reversed(env_stacks("dev")):
        world.cfn.delete_stack(StackName=name)
    out["after-deleting-dev"] = access(["prod"])
    out["shared"] = world.outputs(ACCOUNT_STACK)[0]
    return out


def create(world, env, endpoint):
    world.create_env(env)
    # Tasks stay RUNNING however often they are described.
    transition = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 100000}}
    request = urllib.request.Request(f"{endpoint}/moto-api/state-manager/set-transition",
                                     data=json.dumps(transition).encode(), method="POST")
    urllib.request.urlopen(request).read()
    # moto's CloudFormation drops the task definition's NetworkMode (its
    # tasks get no network interface, so no public IP): a revision as the
    # template describes it, awsvpc, is what RunTask starts.
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                       aws_secret_access_key="test")
    ecs.register_task_definition(
        family=f"fluidity-server-{env}", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
        memory="512", containerDefinitions=[{"name": "server", "image": "fluidity-server:test", "memory": 512}])
    out = {"subnet": world.subnet, "zone": world.zone, "stacks": {}, "roles": {}}
    for name, _ in env_stacks(env):
        out["stacks"][name] = world.outputs(name)[1]
        for resource in world.cfn.describe_stack_resources(StackName=name)["StackResources"]:
            if resource.get("ResourceType") == "AWS::IAM::Role":
                out["roles"][resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
    return out


def main(endpoint, mode, env=None):
    world = World(endpoint)
    body, _ = template("apigateway-account.yaml")
    world.cfn.create_stack(StackName=ACCOUNT_STACK, TemplateBody=body, Capabilities=["CAPABILITY_IAM"])
    if mode == "lifecycle":
        out = lifecycle(world, env)
    elif mode == "two-envs":
        out = two_envs(world)
    elif mode == "create":
        out = create(world, env, endpoint)
    else:
        sys.exit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
