#!/usr/bin/env python3
"""Stands in for skopeo in tests/deploy.rs (the emulator has no registry).

Records how the deploy tool called it (arguments, the auth file's mode and
content) as one JSON line in $FAKE_SKOPEO_LOG, then registers the image in
the emulator's ECR with PutImage, so that a later deploy finds the tag there.
Only `skopeo copy ... docker://REGISTRY/REPOSITORY:TAG` is understood.
"""
import json
import os
import stat
import sys

import boto3

args = sys.argv[1:]
if not args or args[0] != "copy" or "--dest-authfile" not in args:
    sys.exit(f"fake skopeo: unexpected arguments {args}")
auth_file = args[args.index("--dest-authfile") + 1]
record = {
    "args": args,
    "auth_file": auth_file,
    "auth_file_mode": stat.S_IMODE(os.stat(auth_file).st_mode),
    "auth": json.load(open(auth_file)),
}
destination = args[-1]
if not destination.startswith("docker://"):
    sys.exit(f"fake skopeo: destination {destination} is not docker://")
repository_path, tag = destination[len("docker://"):].rsplit(":", 1)
repository = repository_path.split("/", 1)[1]
ecr = boto3.client("ecr", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"],
                   aws_access_key_id="test", aws_secret_access_key="test")
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
               "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
    "layers": [],
}
ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
with open(os.environ["FAKE_SKOPEO_LOG"], "a") as log:
    log.write(json.dumps(record) + "\n")
