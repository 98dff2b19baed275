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
  aws_fixture.py ENDPOINT default-vpc [add-private-subnet|no-public-subnets|delete]
      The region's default VPC (moto makes one per region, with a subnet per
      zone that maps public IPs on launch): as it is, with one more subnet
      that maps none, with none of its subnets mapping one, or deleted (its
      subnets first). Prints {"vpc","public","private"}: the subnets that map
      public IPs in zone order, and the others (vpc null once deleted).
  aws_fixture.py ENDPOINT api-key VALUE [NAME]
      An API Gateway key with this value (named fluidity-test unless NAME). Prints {"id"}.
  aws_fixture.py ENDPOINT account-role ROLE_ARN
      Sets the region's API Gateway CloudWatch role (as another stack would). Prints {"role"}.
  aws_fixture.py ENDPOINT account-role
      The region's API Gateway CloudWatch role. Prints {"role"} (null if unset).
  aws_fixture.py ENDPOINT ingress SG
      The group's ingress entries. Prints [{"cidr","port","description"}], in order.
  aws_fixture.py ENDPOINT allow SG CIDR PORT DESCRIPTION
      Adds an entry by hand (as a user or a fixed-CIDR stack would). Prints {"allowed"}.
  aws_fixture.py ENDPOINT zone NAME
      A Route 53 hosted zone. Prints {"id"} (without /hostedzone/).
  aws_fixture.py ENDPOINT records ZONE_ID
      The zone's A records. Prints {NAME: {"ttl", "values"}} (names without the final dot).
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


def default_vpc(endpoint, change=None):
    ec2, _ = clients(endpoint)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = lambda: ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]  # noqa: E731
    if change == "add-private-subnet":
        ec2.create_subnet(VpcId=vpc, CidrBlock="172.31.240.0/24", AvailabilityZone="us-east-1a")
    elif change == "no-public-subnets":
        for subnet in subnets():
            ec2.modify_subnet_attribute(SubnetId=subnet["SubnetId"], MapPublicIpOnLaunch={"Value": False})
    elif change == "delete":
        for subnet in subnets():
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        ec2.delete_vpc(VpcId=vpc)
        return {"vpc": None, "public": [], "private": []}
    elif change is not None:
        sys.exit(f"unknown default-vpc change {change}")
    found = sorted(subnets(), key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))
    return {"vpc": vpc, "public": [s["SubnetId"] for s in found if s["MapPublicIpOnLaunch"]],
            "private": [s["SubnetId"] for s in found if not s["MapPublicIpOnLaunch"]]}


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
    elif command == "default-vpc":
        result = default_vpc(endpoint, *args)
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
    elif command == "ingress":
        ec2, _ = clients(endpoint)
        group = ec2.describe_security_groups(GroupIds=[args[0]])["SecurityGroups"][0]
        result = [{"cidr": r.get("CidrIp") or r.get("CidrIpv6"), "port": p.get("FromPort"),
                   "description": r.get("Description")}
                  for p in group["IpPermissions"] for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])]
    elif command == "allow":
        ec2, _ = clients(endpoint)
        ec2.authorize_security_group_ingress(GroupId=args[0], IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": int(args[2]), "ToPort": int(args[2]),
            "IpRanges": [{"CidrIp": args[1], "Description": args[3]}]}])
        result = {"allowed": args[1]}
    elif command in ("zone", "records"):
        route53 = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
        if command == "zone":
            zone = route53.create_hosted_zone(Name=args[0], CallerReference=args[0])["HostedZone"]
            result = {"id": zone["Id"].rsplit("/", 1)[-1]}
        else:
            sets = route53.list_resource_record_sets(HostedZoneId=args[0])["ResourceRecordSets"]
            result = {r["Name"].rstrip("."): {"ttl": r.get("TTL"), "values": [v["Value"] for v in r["ResourceRecords"]]}
                      for r in sets if r["Type"] == "A"}
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
