#!/usr/bin/env python3
"""Creates, updates and deletes both Fluidity stacks in the local AWS emulator.

  cfn_stacks.py ENDPOINT ENV

Loads cloudformation/params-ENV.json, fills the values a user or the deploy
tool supplies (VPC, subnet, ingress CIDR, image, code bucket/key) with objects
made here in the emulator, then: creates the Fargate stack and the Lambda
stack (which imports the Fargate stack's exports); updates both with changed
parameters; deletes the Lambda stack, then the Fargate stack. Prints one JSON
report: per phase, each stack's status and outputs, and each function's
environment variables. The test (tests/cloudformation.rs) asserts on it.
"""
import io
import json
import os
import sys
import zipfile

import boto3
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML; short-form tags (!Ref, !Sub…) are ignored."""


CfnLoader.add_multi_constructor("!", lambda loader, tag, node: None)


def template(name):
    body = open(os.path.join(ROOT, "cloudformation", name)).read()
    return body, list(yaml.load(body, Loader=CfnLoader)["Parameters"])


def main(endpoint, env):
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    ec2, cfn, s3, lam = (boto3.client(s, **kw) for s in ("ec2", "cloudformation", "s3", "lambda"))

    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    s3.create_bucket(Bucket="fluidity-artifacts")
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    s3.put_object(Bucket="fluidity-artifacts", Key="lambda/0123abcd.zip", Body=package.getvalue())

    params = json.load(open(os.path.join(ROOT, "cloudformation", f"params-{env}.json")))
    params.update(VpcId=vpc, PublicSubnets=subnet, AllowedIngressCidr="203.0.113.7/32",
                  ContainerImage=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/fluidity-server-{env}:0123abcd",
                  CodeBucket="fluidity-artifacts", CodeKey="lambda/0123abcd.zip")
    stacks = [(f"fluidity-{env}-fargate", "fargate.yaml"), (f"fluidity-{env}-lambda", "lambda.yaml")]

    def parameters(names):
        missing = [n for n in names if n not in params]
        if missing:
            sys.exit(f"params-{env}.json lacks {missing}")
        return [{"ParameterKey": n, "ParameterValue": str(params[n])} for n in names]

    def snapshot():
        report = {}
        for name, _ in stacks:
            found = cfn.describe_stacks(StackName=name)["Stacks"][0]
            report[name] = {"status": found["StackStatus"],
                            "outputs": {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}}
        functions = {}
        for fn in lam.list_functions()["Functions"]:
            functions[fn["FunctionName"]] = {"env": fn.get("Environment", {}).get("Variables", {}),
                                             "architectures": fn.get("Architectures"), "runtime": fn.get("Runtime"),
                                             "handler": fn.get("Handler")}
        report["functions"] = functions
        return report

    out = {}
    for name, file in stacks:
        body, names = template(file)
        cfn.create_stack(StackName=name, TemplateBody=body, Parameters=parameters(names),
                         Capabilities=["CAPABILITY_IAM"])
    out["created"] = snapshot()

    params.update(IdleThresholdMinutes="9", StopTimeout="60", ContainerImage=params["ContainerImage"][:-8] + "4567cdef")
    for name, file in stacks:
        body, names = template(file)
        cfn.update_stack(StackName=name, TemplateBody=body, Parameters=parameters(names),
                         Capabilities=["CAPABILITY_IAM"])
    out["updated"] = snapshot()

    for name, _ in reversed(stacks):
        cfn.delete_stack(StackName=name)
    summaries = cfn.list_stacks()["StackSummaries"]
    out["deleted"] = {name: [s["StackStatus"] for s in summaries if s["StackName"] == name] for name, _ in stacks}
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
