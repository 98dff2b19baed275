#!/usr/bin/env python3
"""tests/stack_policy.py's own tests (the rules of "Prevent updates to stack
resources", CloudFormation User Guide), and the moto launcher enforcing them
on UpdateStack and executed change sets."""
import json
import os
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack_policy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "cloudformation", "stack-policy.json")) as f:
    OURS = f.read()


def allowed(policy, action, logical_id, resource_type="AWS::IAM::Role"):
    return stack_policy.decide(policy, action, logical_id, resource_type)[0]


class Rules(unittest.TestCase):
    def test_a_policy_protects_everything_it_does_not_allow(self):
        policy = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "Update:Modify",
                                 "Resource": "LogicalResourceId/Web*"}]}
        self.assertTrue(allowed(policy, "Update:Modify", "WebServer"))
        self.assertFalse(allowed(policy, "Update:Delete", "WebServer"))
        self.assertFalse(allowed(policy, "Update:Modify", "Database"))

    def test_deny_overrides_allow_whatever_the_order(self):
        deny = {"Effect": "Deny", "Principal": "*", "Action": "Update:Delete", "Resource": "LogicalResourceId/Db"}
        allow = {"Effect": "Allow", "Principal": "*", "Action": "Update:*", "Resource": "*"}
        for statements in ([deny, allow], [allow, deny]):
            policy = {"Statement": statements}
            self.assertFalse(allowed(policy, "Update:Delete", "Db"))
            self.assertTrue(allowed(policy, "Update:Modify", "Db"))
            self.assertTrue(allowed(policy, "Update:Delete", "Other"))

    def test_not_action_not_resource_and_resource_type(self):
        policy = {"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "Update:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "NotAction": "Update:Modify", "NotResource": "LogicalResourceId/Free",
             "Condition": {"StringEquals": {"ResourceType": ["AWS::RDS::DBInstance"]}}},
        ]}
        self.assertFalse(allowed(policy, "Update:Replace", "Db", "AWS::RDS::DBInstance"))
        self.assertTrue(allowed(policy, "Update:Modify", "Db", "AWS::RDS::DBInstance"))
        self.assertTrue(allowed(policy, "Update:Replace", "Free", "AWS::RDS::DBInstance"))
        self.assertTrue(allowed(policy, "Update:Replace", "Db", "AWS::S3::Bucket"))

    def test_no_policy_allows_everything(self):
        self.assertEqual(stack_policy.denied("", [("Update:Delete", "X", "T")]), [])

    def test_our_policy_refuses_removing_the_old_logging_role_and_keeps_the_rest(self):
        policy = json.loads(OURS)
        self.assertFalse(allowed(policy, "Update:Delete", "ApiGatewayLogsRole"))
        self.assertFalse(allowed(policy, "Update:Replace", "Service", "AWS::ECS::Service"))
        self.assertTrue(allowed(policy, "Update:Modify", "Service", "AWS::ECS::Service"))
        self.assertTrue(allowed(policy, "Update:Replace", "TaskDefinition", "AWS::ECS::TaskDefinition"))
        self.assertFalse(allowed(policy, "Update:Delete", "TaskDefinition", "AWS::ECS::TaskDefinition"))
        refused = stack_policy.denied(OURS, [("Update:Delete", "ApiGatewayLogsRole", "AWS::IAM::Role")])
        self.assertEqual(len(refused), 1)
        self.assertTrue(refused[0][1].startswith("Action denied by stack policy"), refused)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launcher(unittest.TestCase):
    """The launcher refuses what the stack's policy protects, changes nothing
    then, and applies the update once the policy allows it."""

    @classmethod
    def setUpClass(cls):
        import boto3
        port = free_port()
        cls.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "moto_launcher.py"), "-H", "127.0.0.1",
                                     "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1)
                break
            except Exception:
                time.sleep(0.05)
        cls.cfn = boto3.client("cloudformation", endpoint_url=url, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")

    @classmethod
    def tearDownClass(cls):
        cls.proc.kill()
        cls.proc.wait()

    TWO = {"Resources": {"Keep": {"Type": "AWS::SNS::Topic"}, "Old": {"Type": "AWS::SNS::Topic"}}}
    ONE = {"Resources": {"Keep": {"Type": "AWS::SNS::Topic"}}}
    PROTECT_OLD = json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "Update:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": ["Update:Replace", "Update:Delete"],
         "Resource": "LogicalResourceId/Old"},
    ]})

    def resources(self, name):
        listed = self.cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
        return sorted(r["LogicalResourceId"] for r in listed)

    def status(self, name):
        return self.cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]

    def test_update_stack_is_refused_then_allowed(self):
        self.cfn.create_stack(StackName="direct", TemplateBody=json.dumps(self.TWO), StackPolicyBody=self.PROTECT_OLD)
        self.cfn.update_stack(StackName="direct", TemplateBody=json.dumps(self.ONE))
        self.assertEqual(self.status("direct"), "UPDATE_ROLLBACK_COMPLETE")
        self.assertEqual(self.resources("direct"), ["Keep", "Old"])
        events = self.cfn.describe_stack_events(StackName="direct")["StackEvents"]
        failed = [e for e in events if e["ResourceStatus"] == "UPDATE_FAILED"]
        self.assertEqual([e["LogicalResourceId"] for e in failed], ["Old"])
        self.assertIn("Action denied by stack policy", failed[0]["ResourceStatusReason"])

        self.cfn.set_stack_policy(StackName="direct", StackPolicyBody=json.dumps({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "Update:*", "Resource": "*"}]}))
        self.cfn.update_stack(StackName="direct", TemplateBody=json.dumps(self.ONE))
        self.assertEqual(self.status("direct"), "UPDATE_COMPLETE")
        self.assertEqual(self.resources("direct"), ["Keep"])

    def test_an_executed_change_set_is_held_to_the_policy(self):
        self.cfn.create_stack(StackName="changes", TemplateBody=json.dumps(self.TWO))
        self.cfn.set_stack_policy(StackName="changes", StackPolicyBody=self.PROTECT_OLD)
        self.cfn.create_change_set(StackName="changes", ChangeSetName="drop-old", ChangeSetType="UPDATE",
                                   TemplateBody=json.dumps(self.ONE))
        self.cfn.execute_change_set(StackName="changes", ChangeSetName="drop-old")
        self.assertEqual(self.status("changes"), "UPDATE_ROLLBACK_COMPLETE")
        self.assertEqual(self.resources("changes"), ["Keep", "Old"])


if __name__ == "__main__":
    unittest.main()
