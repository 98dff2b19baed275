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


class Scope(unittest.TestCase):
    def test_other_services_are_not_checked(self):
        self.assertEqual(problems_of(entry("ecs", "{}", "AmazonEC2ContainerServiceV20141113.ListTasks")), (None, []))


if __name__ == "__main__":
    unittest.main()
