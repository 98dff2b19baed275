#!/usr/bin/env python3
"""Creates what the Lambda tests act on, in the local AWS emulator (moto).

  aws_fixture.py ENDPOINT setup CLUSTER SERVICE
      VPC, subnet, security group, cluster, task definition (256 CPU / 512 MB,
      awsvpc, Fargate) and a service with desired count 0; pins ECS task
      status progression so tasks stay RUNNING. Prints {"subnet","sg"}.
  aws_fixture.py ENDPOINT run-task CLUSTER SERVICE SUBNET SG [--public-ip[=ADDR]]
      Starts a task in the service's group (moto's UpdateService starts none),
      optionally with an Elastic IP on its network interface (at ADDR if given,
      e.g. 127.0.0.1 to point agents at a local server).
      Prints {"task_arn","eni","public_ip"}.
  aws_fixture.py ENDPOINT network
      A VPC and one subnet (what a deploy needs from the user). Prints {"vpc","subnet"}.
  aws_fixture.py ENDPOINT api-key VALUE [NAME]
      An API Gateway key with this value (named fluidity-test unless NAME). Prints {"id"}.
  aws_fixture.py ENDPOINT account-role ROLE_ARN
      Sets the region's API Gateway CloudWatch role (as another stack would). Prints {"role"}.
  aws_fixture.py ENDPOINT account-role
      The region's API Gateway CloudWatch role. Prints {"role"} (null if unset).
  aws_fixture.py ENDPOINT stop-task CLUSTER TASK_ARN
      Stops the task (its service's server went away). Prints {"stopped"}.
  aws_fixture.py ENDPOINT parameters PATH
      Every parameter under PATH, decrypted. Prints {NAME: {"value", "type", "tier"}}.
  aws_fixture.py ENDPOINT put-secret NAME VALUE
      Creates a Secrets Manager secret (as an earlier version did). Prints {"arn"}.
  aws_fixture.py ENDPOINT secret NAME
      The secret's ARN, current version and value (all null if there is none).
      Prints {"arn","version","value"}.
"""
import json
import sys
import urllib.request

import boto3


def clients(endpoint):
    kwargs = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    return boto3.client("ec2", **kwargs), boto3.client("ecs", **kwargs)


def network(subnet, sg, assign_public_ip=True):
    assign = "ENABLED" if assign_public_ip else "DISABLED"
    return {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg], "assignPublicIp": assign}}


def setup(endpoint, cluster, service):
    ec2, ecs = clients(endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=f"{service}-sg", Description="fluidity test", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=service, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "server", "image": "fluidity-server:test", "memory": 512}],
    )
    ecs.create_service(
        cluster=cluster, serviceName=service, taskDefinition=service, desiredCount=0, launchType="FARGATE",
        networkConfiguration=network(subnet, sg),
    )
    transition = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 100000}}
    request = urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/set-transition", data=json.dumps(transition).encode(), method="POST"
    )
    urllib.request.urlopen(request).read()
    return {"subnet": subnet, "sg": sg}


def run_task(endpoint, cluster, service, subnet, sg, public_ip, address=None):
    ec2, ecs = clients(endpoint)
    task = ecs.run_task(
        cluster=cluster, taskDefinition=service, launchType="FARGATE", group=f"service:{service}",
        # With a chosen address, no automatic one: the task must never be seen
        # running at any other address while the Elastic IP is associated.
        networkConfiguration=network(subnet, sg, assign_public_ip=address is None),
    )["tasks"][0]
    details = {d["name"]: d["value"] for a in task["attachments"] for d in a["details"]}
    eni = details["networkInterfaceId"]
    public = None
    if public_ip:
        allocation = ec2.allocate_address(Domain="vpc", **({"Address": address} if address else {}))
        ec2.associate_address(AllocationId=allocation["AllocationId"], NetworkInterfaceId=eni)
        public = allocation["PublicIp"]
    return {"task_arn": task["taskArn"], "eni": eni, "public_ip": public}


def main():
    endpoint, command, *args = sys.argv[1:]
    if command == "setup":
        result = setup(endpoint, *args)
    elif command == "run-task":
        flags = [a for a in args[4:] if a.startswith("--public-ip")]
        address = flags[0].partition("=")[2] if flags else None
        result = run_task(endpoint, *args[:4], public_ip=bool(flags), address=address or None)
    elif command == "network":
        ec2, _ = clients(endpoint)
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
        # A task stays in its state until something stops it, as on AWS
        # (moto's default moves it one state on with every describe).
        transition = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 100000}}
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/moto-api/state-manager/set-transition", data=json.dumps(transition).encode(),
            method="POST")).read()
        result = {"vpc": vpc, "subnet": subnet}
    elif command == "api-key":
        apigateway = boto3.client("apigateway", endpoint_url=endpoint, region_name="us-east-1",
                                  aws_access_key_id="test", aws_secret_access_key="test")
        name = args[1] if len(args) > 1 else "fluidity-test"
        result = {"id": apigateway.create_api_key(name=name, value=args[0], enabled=True)["id"]}
    elif command == "account-role":
        apigateway = boto3.client("apigateway", endpoint_url=endpoint, region_name="us-east-1",
                                  aws_access_key_id="test", aws_secret_access_key="test")
        if args:
            apigateway.update_account(patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn",
                                                        "value": args[0]}])
        result = {"role": apigateway.get_account().get("cloudwatchRoleArn")}
    elif command == "stop-task":
        _, ecs = clients(endpoint)
        ecs.stop_task(cluster=args[0], task=args[1], reason="replaced")
        result = {"stopped": args[1]}
    elif command == "parameters":
        ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        found = ssm.get_parameters_by_path(Path=args[0], Recursive=True, WithDecryption=True)["Parameters"]
        described = {p["Name"]: p for p in ssm.describe_parameters()["Parameters"]}
        result = {p["Name"]: {"value": p["Value"], "type": p["Type"],
                              "tier": described.get(p["Name"], {}).get("Tier", "Standard")} for p in found}
    elif command == "put-secret":
        secrets = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
        result = {"arn": secrets.create_secret(Name=args[0], SecretString=args[1])["ARN"]}
    elif command == "secret":
        secrets = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
        try:
            found = secrets.get_secret_value(SecretId=args[0])
            result = {"arn": found["ARN"], "version": found["VersionId"], "value": found["SecretString"]}
        except secrets.exceptions.ResourceNotFoundException:
            result = {"arn": None, "version": None, "value": None}
    else:
        sys.exit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
