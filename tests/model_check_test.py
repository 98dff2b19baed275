#!/usr/bin/env python3
"""tests/model_check.py's own tests: what AWS refuses and moto accepts is
caught, and well-formed requests pass."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import model_check  # noqa: E402

TOKEN = "0123456789abcdef0123456789abcdef"


def entry(scope, body="", target="", method="POST", path="/", query=""):
    return {"scope": scope, "target": target, "body": body, "method": method, "path": path, "query": query}


def problems_of(e):
    problems = []
    name = model_check.check(e, problems)
    return name, problems


class SecretsManager(unittest.TestCase):
    def create(self, **extra):
        body = json.dumps({"Name": "fluidity-dev-server-tls", "SecretString": "{}", **extra})
        return problems_of(entry("secretsmanager", body, "secretsmanager.CreateSecret"))

    def test_create_secret_without_a_token_is_refused(self):
        name, problems = self.create()
        self.assertEqual(name, "secretsmanager.CreateSecret")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("missing ClientRequestToken", problems[0])

    def test_create_secret_with_a_token_passes(self):
        self.assertEqual(self.create(ClientRequestToken=TOKEN)[1], [])

    def test_types_lengths_and_unknown_members(self):
        _, problems = self.create(ClientRequestToken="short", Tags="x", Colour="blue")
        text = "\n".join(problems)
        self.assertIn("ClientRequestToken: length 5", text)
        self.assertIn("Tags: str where the model wants list", text)
        self.assertIn("Colour is not a member", text)

    def test_put_secret_value_needs_its_secret_id_and_token(self):
        _, problems = problems_of(entry("secretsmanager", '{"SecretString": "x"}', "secretsmanager.PutSecretValue"))
        self.assertTrue(any("missing SecretId (required)" in p for p in problems), problems)
        self.assertTrue(any("missing ClientRequestToken" in p for p in problems), problems)

    def test_wrong_signing_name_and_unknown_target(self):
        e = entry("secretsmanager", json.dumps({"SecretId": "x"}), "secretsmanager.Describe")
        self.assertTrue(any("unknown X-Amz-Target" in p for p in problems_of(e)[1]))


class QueryProtocols(unittest.TestCase):
    def test_put_metric_data(self):
        body = "Action=PutMetricData&Version=2010-08-01&Namespace=Fluidity&MetricData.member.1.MetricName=X"
        self.assertEqual(problems_of(entry("monitoring", body)), ("cloudwatch.PutMetricData", []))
        _, problems = problems_of(entry("monitoring", body.replace("2010-08-01", "2011-01-01")))
        self.assertTrue(any("Version" in p for p in problems), problems)
        _, problems = problems_of(entry("monitoring", "Action=PutMetricData&Version=2010-08-01&MetricData.member.1.MetricName=X"))
        self.assertTrue(any("missing Namespace" in p for p in problems), problems)

    def test_ec2_spelling(self):
        body = "Action=DescribeNetworkInterfaces&Version=2016-11-15&NetworkInterfaceId.1=eni-1"
        self.assertEqual(problems_of(entry("ec2", body)), ("ec2.DescribeNetworkInterfaces", []))
        _, problems = problems_of(entry("ec2", body.replace("NetworkInterfaceId.1", "InterfaceId.1")))
        self.assertTrue(any("InterfaceId is not a member" in p for p in problems), problems)


class RestJson(unittest.TestCase):
    def test_get_api_key(self):
        e = entry("apigateway", method="GET", path="/apikeys/abc123", query="includeValue=true")
        self.assertEqual(problems_of(e), ("apigateway.GetApiKey", []))
        e["query"] = "includeSecret=true"
        self.assertTrue(any("includeSecret" in p for p in problems_of(e)[1]))


def signed_entry(body, tamper=None):
    """A Secrets Manager request signed by botocore, recorded as the launcher does."""
    import hashlib
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.CreateSecret"}
    request = AWSRequest(method="POST", url="http://127.0.0.1:5000/", data=body.encode(), headers=headers)
    SigV4Auth(Credentials("AKIDEXAMPLE", "test"), "secretsmanager", "us-east-1").add_auth(request)
    authorization = request.headers["Authorization"]
    names = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    signed = {n: request.headers.get(n, "127.0.0.1:5000" if n == "host" else "") for n in names}
    sent = body if tamper is None else tamper(signed, body)
    e = entry("secretsmanager", sent, "secretsmanager.CreateSecret")
    e.update(raw_path="/", authorization=authorization, signed_headers=signed,
             payload_sha256=hashlib.sha256(sent.encode()).hexdigest())
    return e


class Signature(unittest.TestCase):
    BODY = json.dumps({"Name": "n", "SecretString": "{}", "ClientRequestToken": TOKEN})

    def test_a_request_as_signed_passes(self):
        self.assertEqual(problems_of(signed_entry(self.BODY))[1], [])

    def test_a_header_changed_after_signing_is_caught(self):
        def retarget(headers, body):
            headers["x-amz-target"] = "secretsmanager.PutSecretValue"
            return body
        problems = problems_of(signed_entry(self.BODY, retarget))[1]
        self.assertTrue(any("signature does not match" in p for p in problems), problems)

    def test_a_body_other_than_the_one_signed_is_caught(self):
        problems = problems_of(signed_entry(self.BODY, lambda _h, b: b.replace('"n"', '"m"')))[1]
        self.assertTrue(any("signature does not match" in p for p in problems), problems)

    def test_an_unsigned_host_is_caught(self):
        e = signed_entry(self.BODY)
        del e["signed_headers"]["host"]
        problems = problems_of(e)[1]
        self.assertTrue(any("host is not signed" in p for p in problems), problems)

    def test_a_wrong_secret_does_not_verify(self):
        e = signed_entry(self.BODY)
        problems = []
        model_check.check(e, problems, secret="other")
        self.assertTrue(any("signature does not match" in p for p in problems), problems)


class Scope(unittest.TestCase):
    def test_other_services_are_not_checked(self):
        self.assertEqual(problems_of(entry("ecs", "{}", "AmazonEC2ContainerServiceV20141113.ListTasks")), (None, []))


class Route53(unittest.TestCase):
    PATH = "/2013-04-01/hostedzone/Z0123456789ABC/rrset/"

    def change(self, record, action="UPSERT"):
        body = ('<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest '
                'xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change>'
                f'<Action>{action}</Action><ResourceRecordSet>{record}</ResourceRecordSet>'
                '</Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>')
        return problems_of(entry("route53", body, method="POST", path=self.PATH))

    def test_an_upsert_of_an_a_record_passes(self):
        record = ("<Name>t.example.com</Name><Type>A</Type><TTL>60</TTL>"
                  "<ResourceRecords><ResourceRecord><Value>203.0.113.7</Value></ResourceRecord></ResourceRecords>")
        self.assertEqual(self.change(record), ("route53.ChangeResourceRecordSets", []))

    def test_a_missing_type_a_bad_action_and_a_stray_member_are_caught(self):
        record = "<Name>t.example.com</Name><Colour>blue</Colour><TTL>soon</TTL>"
        _, problems = self.change(record, action="REPLACE")
        text = "\n".join(problems)
        for needle in ("missing Type", "Colour is not a member", "'REPLACE' is not one of", "TTL: str"):
            self.assertIn(needle, text)


if __name__ == "__main__":
    unittest.main()
