#!/usr/bin/env python3
"""Checks the AWS requests we sign by hand against AWS's published models.

moto accepts requests AWS refuses: it invents a missing idempotency token and
checks no required member, type, length or enum. botocore (installed with
boto3) ships each service's model, the same JSON the SDKs are generated from;
this reads a recording made by tests/moto_launcher.py --record and checks
every request signed for a service whose requests our code builds itself —
SSM Parameter Store and Secrets Manager (JSON 1.1, deploy), API Gateway (REST-JSON, deploy), IAM
(Query, deploy), CloudWatch (Query, server), EC2 (EC2 Query, Lambda) and
Route 53 (REST-XML, Lambda) — for:

- the signing scope naming the model's signing name;
- a known operation (X-Amz-Target, Action, or method and path) and, for the
  Query protocols, the model's API version;
- every required member, and every `idempotencyToken` member (the SDKs fill
  these for their callers; a raw request must carry them: "You must provide
  a ClientRequestToken value");
- no member the model does not know, and each value's type, string length
  and enum (JSON bodies, recursively);
- its SigV4 signature, recomputed with botocore's signer from the same
  credentials, X-Amz-Date, signed headers, path and body hash: moto checks
  no signature, so a header changed after signing, a header left out of
  the signature that AWS requires in it, or a body other than the one
  signed would pass here and fail on AWS ("The request signature we
  calculated does not match the signature you provided"). The tests sign
  with the secret key "test" (`--secret` to change it).

Usage: model_check.py RECORDING.jsonl [--secret KEY]
Prints {"checked": {"service.Operation": n, ...}, "signatures": n, "problems": [...]}.
"""
import json
import re
import sys
import urllib.parse
import xml.etree.ElementTree as ET

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SESSION = botocore.session.get_session()
# Signing name in the recorded scope -> botocore service name.
SERVICES = {"secretsmanager": "secretsmanager", "apigateway": "apigateway", "monitoring": "cloudwatch", "ec2": "ec2",
            "iam": "iam", "ssm": "ssm", "route53": "route53"}
TYPES = {"string": str, "integer": int, "long": int, "boolean": bool, "list": list, "map": dict, "structure": dict,
         "timestamp": (str, int, float), "double": (int, float), "float": (int, float), "blob": str}


def check_value(shape, value, where, problems):
    """Type, length, enum and members of one JSON value against its shape."""
    expected = TYPES.get(shape.type_name)
    if expected and (not isinstance(value, expected) or (shape.type_name != "boolean" and isinstance(value, bool))):
        problems.append(f"{where}: {type(value).__name__} where the model wants {shape.type_name}")
        return
    if shape.type_name == "string":
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and len(value) < low or high is not None and len(value) > high:
            problems.append(f"{where}: length {len(value)} outside {low}..{high}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} is not one of {shape.enum}")
    elif shape.type_name == "structure":
        check_members(shape, value, where, problems)
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            check_value(shape.member, item, f"{where}[{i}]", problems)
    elif shape.type_name == "map":
        for key, item in value.items():
            check_value(shape.value, item, f"{where}.{key}", problems)


def check_members(shape, value, where, problems):
    for name in shape.members:
        member = shape.members[name]
        if name not in value and (name in shape.required_members or member.metadata.get("idempotencyToken")):
            why = "an idempotency token the SDKs fill and a raw request must send" if name not in \
                shape.required_members else "required"
            problems.append(f"{where}: missing {name} ({why})")
    for name, item in value.items():
        if name not in shape.members:
            problems.append(f"{where}: {name} is not a member of {shape.name}")
        else:
            check_value(shape.members[name], item, f"{where}.{name}", problems)


def query_names(shape, ec2):
    """Top-level parameter name -> member name, as the (EC2) Query protocol spells them."""
    names = {}
    for name, member in shape.members.items():
        if ec2:
            spelled = member.serialization.get("queryName") or (member.serialization.get("name") or name)
            spelled = spelled[0].upper() + spelled[1:]
        else:
            spelled = member.serialization.get("name", name)
        names[spelled] = name
    return names


def check_query(model, entry, problems):
    params = urllib.parse.parse_qs(entry["body"] or entry["query"], keep_blank_values=True)
    action, version = params.pop("Action", [None])[0], params.pop("Version", [None])[0]
    if action not in model.operation_names:
        problems.append(f"{model.service_name}: unknown Action {action!r}")
        return None
    if version != model.api_version:
        problems.append(f"{model.service_name}.{action}: Version {version!r}, the model's is {model.api_version}")
    shape = model.operation_model(action).input_shape
    if shape is None:
        return action
    names = query_names(shape, model.protocol == "ec2")
    given = {key.split(".", 1)[0] for key in params}
    for top in given - set(names):
        problems.append(f"{model.service_name}.{action}: {top} is not a member of {shape.name}")
    present = {names[top] for top in given if top in names}
    for name in shape.members:
        member = shape.members[name]
        if name not in present and (name in shape.required_members or member.metadata.get("idempotencyToken")):
            problems.append(f"{model.service_name}.{action}: missing {name}")
    return action


def rest_operation(model, entry):
    """The REST operation whose method and URI template match the request."""
    for name in model.operation_names:
        http = model.operation_model(name).http
        if http.get("method") != entry["method"]:
            continue
        template = http["requestUri"].split("?", 1)[0]
        pattern = re.sub(r"\\\{[^}+]+\\\+\\\}", "(.+)", re.escape(template))
        pattern = re.sub(r"\\\{[^}]+\\\}", "([^/]+)", pattern)
        if re.fullmatch(pattern, entry["path"]):
            return name
    return None


def check_rest(model, entry, problems):
    name = rest_operation(model, entry)
    if name is None:
        problems.append(f"{model.service_name}: no operation for {entry['method']} {entry['path']}")
        return None
    shape = model.operation_model(name).input_shape
    if shape is None:
        return name
    in_query = {m.serialization.get("name", n): n for n, m in shape.members.items()
                if m.serialization.get("location") == "querystring"}
    for key in urllib.parse.parse_qs(entry["query"], keep_blank_values=True):
        if key not in in_query:
            problems.append(f"{model.service_name}.{name}: query parameter {key} is not in the model")
    if entry["body"] and model.protocol == "rest-xml":
        root = ET.fromstring(entry["body"])
        wanted = shape.serialization.get("name", shape.name)
        namespace = shape.serialization.get("xmlNamespace", {}).get("uri")
        if root.tag != (f"{{{namespace}}}{wanted}" if namespace else wanted):
            problems.append(f"{model.service_name}.{name}: the body's root is {root.tag}, the model's {wanted} in {namespace}")
        value = xml_value(shape, root)
        # Members bound to the URI came with the path that matched the operation.
        value.update({n: "uri" for n, m in shape.members.items() if m.serialization.get("location") == "uri"})
        check_members(shape, value, f"{model.service_name}.{name}", problems)
    elif entry["body"]:
        body = {k: v for k, v in json.loads(entry["body"]).items()}
        check_members(shape, body, f"{model.service_name}.{name}", problems)
    return name


def xml_value(shape, element):
    """A REST-XML element read as the JSON value the shape describes: a
    structure's children by their members' XML names, a list's items, and
    numbers and booleans from their text (text the type cannot take stays
    text, for check_value to report)."""
    local = lambda e: e.tag.rsplit("}", 1)[-1]  # noqa: E731
    if shape.type_name == "structure":
        names = {m.serialization.get("name", n): n for n, m in shape.members.items()}
        value = {}
        for child in element:
            name = names.get(local(child), local(child))
            member = shape.members.get(name)
            value[name] = xml_value(member, child) if member is not None else child.text
        return value
    if shape.type_name == "list":
        return [xml_value(shape.member, child) for child in element]
    text = element.text or ""
    if shape.type_name in ("integer", "long"):
        return int(text) if text.lstrip("-").isdigit() else text
    if shape.type_name == "boolean":
        return {"true": True, "false": False}.get(text, text)
    return text


# Headers SigV4 must cover whenever they are sent (SigV4 signing steps:
# "host" always; the date and session token of a temporary credential).
MUST_SIGN = ("host", "x-amz-date")


def check_signature(entry, secret, problems):
    """Recomputes the request's SigV4 signature with botocore's signer."""
    authorization = entry.get("authorization", "")
    fields = dict(part.strip().split("=", 1) for part in authorization.split(" ", 1)[-1].split(",") if "=" in part)
    credential = fields.get("Credential", "").split("/")
    if not authorization.startswith("AWS4-HMAC-SHA256 ") or len(credential) != 5:
        problems.append(f"{entry.get('scope')}: no SigV4 Authorization header")
        return
    access_key, date, region, service, _ = credential
    headers = entry.get("signed_headers", {})
    for name in MUST_SIGN:
        if name not in headers:
            problems.append(f"{service}: {name} is not signed")
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(date):
        problems.append(f"{service}: X-Amz-Date {amz_date!r} is not of the credential's day {date}")
    sent_hash = headers.get("x-amz-content-sha256")
    if sent_hash not in (None, "UNSIGNED-PAYLOAD", entry["payload_sha256"]):
        problems.append(f"{service}: X-Amz-Content-SHA256 is not the hash of the body sent")
    query = f"?{entry['query']}" if entry.get("query") else ""
    request = AWSRequest(method=entry["method"], url=f"http://{headers.get('host', 'localhost')}{entry['raw_path']}{query}",
                         headers=dict(headers))
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(access_key, secret), service, region)
    auth.payload = lambda _request: entry["payload_sha256"]
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if fields.get("SignedHeaders") != auth.signed_headers(auth.headers_to_sign(request)):
        problems.append(f"{service}: SignedHeaders {fields.get('SignedHeaders')!r} is not what botocore signs "
                        f"from the same headers")
    elif fields.get("Signature") != expected:
        problems.append(f"{service} {entry['method']} {entry['raw_path']}: the signature does not match the one "
                        f"botocore computes for the request as sent (a header or the body changed after signing?)")


SIGNATURES = [0]


def check(entry, problems, secret="test"):
    scope = entry.get("scope", "")
    service = SERVICES.get(scope)
    if service is None:
        return None
    if "authorization" in entry:
        check_signature(entry, secret, problems)
        SIGNATURES[0] += 1
    model = SESSION.get_service_model(service)
    if model.signing_name != scope:
        problems.append(f"{service}: signed for {scope!r}, the model signs as {model.signing_name!r}")
    target = entry.get("target", "")
    if model.protocol == "json" or target:
        prefix, _, operation = target.partition(".")
        if prefix != model.metadata.get("targetPrefix") or operation not in model.operation_names:
            problems.append(f"{service}: unknown X-Amz-Target {target!r}")
            return None
        shape = model.operation_model(operation).input_shape
        check_members(shape, json.loads(entry["body"] or "{}"), f"{service}.{operation}", problems)
        return f"{service}.{operation}"
    if model.protocol in ("rest-json", "rest-xml"):
        name = check_rest(model, entry, problems)
    else:
        name = check_query(model, entry, problems)
    return f"{service}.{name}" if name else None


def main():
    checked, problems = {}, []
    secret = sys.argv[sys.argv.index("--secret") + 1] if "--secret" in sys.argv else "test"
    with open(sys.argv[1]) as f:
        for line in f:
            name = check(json.loads(line), problems, secret)
            if name:
                checked[name] = checked.get(name, 0) + 1
    print(json.dumps({"checked": checked, "signatures": SIGNATURES[0], "problems": problems}))


if __name__ == "__main__":
    main()
