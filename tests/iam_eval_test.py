#!/usr/bin/env python3
"""Unit tests for tests/iam_eval.py. Run: python3 tests/iam_eval_test.py"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from iam_eval import evaluate, explain  # noqa: E402

ALLOW, IMPLICIT, EXPLICIT = "Allow", "ImplicitDeny", "ExplicitDeny"

ACCOUNT = "123456789012"
CLUSTER = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/fluidity-dev"
OTHER_CLUSTER = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/other"
BUCKET_OBJECT = "arn:aws:s3:::fluidity-code/lambda.zip"


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action="*", resource="*", **extra):
    return dict(Effect="Allow", Action=action, Resource=resource, **extra)


def deny(action="*", resource="*", **extra):
    return dict(Effect="Deny", Action=action, Resource=resource, **extra)


def when(condition, action="ecs:ListTasks"):
    """One policy allowing `action` on "*" under `condition`."""
    return [policy(allow(action, Condition=condition))]


class Case(unittest.TestCase):
    def assertDecision(self, expected, policies, action, resource="*", context=None):
        got = evaluate(policies, action, resource, context)
        self.assertEqual(expected, got, explain(policies, action, resource, context))

    def allowed(self, condition, context):
        return evaluate(when(condition), "ecs:ListTasks", "*", context) == ALLOW


class ActionTest(Case):
    def test_exact_action(self):
        policies = [policy(allow("ecs:ListTasks"))]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")
        self.assertDecision(IMPLICIT, policies, "ecs:ListClusters")

    def test_service_wildcard(self):
        policies = [policy(allow("ecs:*"))]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")
        self.assertDecision(ALLOW, policies, "ecs:RunTask")
        self.assertDecision(IMPLICIT, policies, "ec2:DescribeInstances")
        self.assertDecision(IMPLICIT, policies, "ecsx:ListTasks")

    def test_prefix_wildcard(self):
        policies = [policy(allow("ecs:Describe*"))]
        self.assertDecision(ALLOW, policies, "ecs:DescribeClusters")
        self.assertDecision(ALLOW, policies, "ecs:Describe")
        self.assertDecision(IMPLICIT, policies, "ecs:ListTasks")
        self.assertDecision(IMPLICIT, policies, "ec2:DescribeInstances")

    def test_question_mark_is_one_character(self):
        policies = [policy(allow("ecs:ListTask?"))]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")
        self.assertDecision(IMPLICIT, policies, "ecs:ListTask")
        self.assertDecision(IMPLICIT, policies, "ecs:ListTasksX")

    def test_star_matches_every_action(self):
        policies = [policy(allow("*"))]
        self.assertDecision(ALLOW, policies, "iam:CreateUser")

    def test_actions_are_case_insensitive(self):
        policies = [policy(allow("ECS:listtasks"))]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")
        self.assertDecision(ALLOW, policies, "Ecs:LISTTASKS")
        self.assertDecision(ALLOW, [policy(allow("EcS:list*"))], "ecs:ListTasks")

    def test_action_list_is_or(self):
        policies = [policy(allow(["ecs:ListTasks", "logs:Get*"]))]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")
        self.assertDecision(ALLOW, policies, "logs:GetLogEvents")
        self.assertDecision(IMPLICIT, policies, "logs:PutLogEvents")

    def test_not_action_allow(self):
        policies = [policy({"Effect": "Allow", "NotAction": ["iam:*", "ecs:Delete*"],
                            "Resource": "*"})]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")
        self.assertDecision(IMPLICIT, policies, "iam:CreateUser")
        self.assertDecision(IMPLICIT, policies, "ECS:DeleteCluster")

    def test_not_action_deny(self):
        policies = [policy(allow("*"),
                           {"Effect": "Deny", "NotAction": "ecs:*", "Resource": "*"})]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")
        self.assertDecision(EXPLICIT, policies, "s3:GetObject")

    def test_statement_without_action_does_not_match(self):
        policies = [policy({"Effect": "Allow", "Resource": "*"})]
        self.assertDecision(IMPLICIT, policies, "ecs:ListTasks")
        self.assertIn("no Action", explain(policies, "ecs:ListTasks", "*"))


class ResourceTest(Case):
    def test_resource_wildcards(self):
        policies = [policy(allow("s3:GetObject", "arn:aws:s3:::fluidity-code/*"))]
        self.assertDecision(ALLOW, policies, "s3:GetObject", BUCKET_OBJECT)
        self.assertDecision(IMPLICIT, policies, "s3:GetObject", "arn:aws:s3:::other/lambda.zip")
        self.assertDecision(IMPLICIT, policies, "s3:GetObject", "arn:aws:s3:::fluidity-code")

    def test_resource_question_mark(self):
        policies = [policy(allow("s3:GetObject", "arn:aws:s3:::bucket-?/key"))]
        self.assertDecision(ALLOW, policies, "s3:GetObject", "arn:aws:s3:::bucket-a/key")
        self.assertDecision(IMPLICIT, policies, "s3:GetObject", "arn:aws:s3:::bucket-ab/key")

    def test_resource_is_case_sensitive(self):
        policies = [policy(allow("s3:GetObject", "arn:aws:s3:::fluidity-code/*"))]
        self.assertDecision(IMPLICIT, policies, "s3:GetObject",
                            "arn:aws:s3:::Fluidity-Code/lambda.zip")

    def test_resource_list_is_or(self):
        policies = [policy(allow("ecs:DescribeClusters", [OTHER_CLUSTER, CLUSTER]))]
        self.assertDecision(ALLOW, policies, "ecs:DescribeClusters", CLUSTER)
        self.assertDecision(IMPLICIT, policies, "ecs:DescribeClusters",
                            f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/third")

    def test_star_resource_covers_any_arn(self):
        self.assertDecision(ALLOW, [policy(allow("s3:GetObject", "*"))],
                            "s3:GetObject", BUCKET_OBJECT)

    def test_request_resource_star_needs_star_pattern(self):
        for pattern in ("arn:aws:s3:::*", "arn:*", "?"):
            with self.subTest(pattern=pattern):
                self.assertDecision(IMPLICIT, [policy(allow("s3:ListAllMyBuckets", pattern))],
                                    "s3:ListAllMyBuckets", "*")

    def test_not_resource(self):
        policies = [policy({"Effect": "Allow", "Action": "s3:*",
                            "NotResource": ["arn:aws:s3:::secret/*", "arn:aws:s3:::secret"]})]
        self.assertDecision(ALLOW, policies, "s3:GetObject", BUCKET_OBJECT)
        self.assertDecision(IMPLICIT, policies, "s3:GetObject", "arn:aws:s3:::secret/key")
        self.assertDecision(IMPLICIT, policies, "s3:ListBucket", "arn:aws:s3:::secret")
        self.assertDecision(ALLOW, policies, "s3:ListAllMyBuckets", "*")

    def test_deny_not_resource(self):
        policies = [policy(allow("s3:*"),
                           {"Effect": "Deny", "Action": "s3:*",
                            "NotResource": "arn:aws:s3:::fluidity-code/*"})]
        self.assertDecision(ALLOW, policies, "s3:GetObject", BUCKET_OBJECT)
        self.assertDecision(EXPLICIT, policies, "s3:GetObject", "arn:aws:s3:::other/x")

    def test_statement_without_resource_does_not_match(self):
        policies = [policy({"Effect": "Allow", "Action": "ecs:ListTasks"})]
        self.assertDecision(IMPLICIT, policies, "ecs:ListTasks", "*")
        self.assertIn("no Resource", explain(policies, "ecs:ListTasks", "*"))


class DecisionTest(Case):
    def test_explicit_deny_overrides_allow(self):
        policies = [policy(allow("ecs:*")), policy(deny("ecs:RunTask"))]
        self.assertDecision(EXPLICIT, policies, "ecs:RunTask")
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")

    def test_deny_before_allow_in_one_policy(self):
        policies = [policy(deny("ecs:RunTask"), allow("ecs:*"))]
        self.assertDecision(EXPLICIT, policies, "ecs:RunTask")

    def test_deny_with_unmet_condition_does_not_apply(self):
        policies = [policy(allow("ecs:*"),
                           deny("ecs:*", Condition={"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}))]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks", "*",
                            {"aws:RequestedRegion": "us-east-1"})
        self.assertDecision(EXPLICIT, policies, "ecs:ListTasks", "*",
                            {"aws:RequestedRegion": "eu-west-1"})

    def test_implicit_deny(self):
        self.assertDecision(IMPLICIT, [], "ecs:ListTasks")
        self.assertDecision(IMPLICIT, [policy(allow("s3:*"))], "ecs:ListTasks")
        self.assertDecision(IMPLICIT, [policy(deny("s3:*"))], "ecs:ListTasks")

    def test_statement_may_be_a_single_dict(self):
        policies = [{"Version": "2012-10-17", "Statement": allow("ecs:ListTasks")}]
        self.assertDecision(ALLOW, policies, "ecs:ListTasks")


class StringConditionTest(Case):
    def test_string_equals(self):
        cond = {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}
        self.assertTrue(self.allowed(cond, {"aws:RequestedRegion": "us-east-1"}))
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "US-EAST-1"}))
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "eu-west-1"}))
        self.assertFalse(self.allowed(cond, {}))

    def test_multiple_values_are_or(self):
        cond = {"StringEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]}}
        self.assertTrue(self.allowed(cond, {"aws:RequestedRegion": "eu-west-1"}))
        self.assertTrue(self.allowed(cond, {"aws:RequestedRegion": "us-east-1"}))
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "ap-south-1"}))

    def test_string_not_equals(self):
        cond = {"StringNotEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]}}
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "us-east-1"}))
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "eu-west-1"}))
        self.assertTrue(self.allowed(cond, {"aws:RequestedRegion": "ap-south-1"}))
        self.assertTrue(self.allowed(cond, {}), "negated operator with a missing key is true")

    def test_string_equals_ignore_case(self):
        cond = {"StringEqualsIgnoreCase": {"aws:RequestedRegion": "US-East-1"}}
        self.assertTrue(self.allowed(cond, {"aws:RequestedRegion": "us-east-1"}))
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "us-east-2"}))
        self.assertFalse(self.allowed(cond, {}))

    def test_string_not_equals_ignore_case(self):
        cond = {"StringNotEqualsIgnoreCase": {"aws:RequestedRegion": "US-East-1"}}
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "us-east-1"}))
        self.assertTrue(self.allowed(cond, {"aws:RequestedRegion": "us-east-2"}))
        self.assertTrue(self.allowed(cond, {}))

    def test_string_like(self):
        cond = {"StringLike": {"cloudwatch:namespace": ["Fluidity/*", "AWS/EC?"]}}
        self.assertTrue(self.allowed(cond, {"cloudwatch:namespace": "Fluidity/Tunnel"}))
        self.assertTrue(self.allowed(cond, {"cloudwatch:namespace": "AWS/ECS"}))
        self.assertFalse(self.allowed(cond, {"cloudwatch:namespace": "AWS/ECSX"}))
        self.assertFalse(self.allowed(cond, {"cloudwatch:namespace": "fluidity/Tunnel"}))
        self.assertFalse(self.allowed(cond, {}))

    def test_string_not_like(self):
        cond = {"StringNotLike": {"cloudwatch:namespace": ["AWS/*", "Other*"]}}
        self.assertTrue(self.allowed(cond, {"cloudwatch:namespace": "Fluidity"}))
        self.assertFalse(self.allowed(cond, {"cloudwatch:namespace": "AWS/ECS"}))
        self.assertFalse(self.allowed(cond, {"cloudwatch:namespace": "OtherThing"}))
        self.assertTrue(self.allowed(cond, {}))

    def test_keys_and_operators_are_and(self):
        cond = {"StringEquals": {"aws:RequestedRegion": "us-east-1", "ecs:cluster": CLUSTER},
                "StringLike": {"cloudwatch:namespace": "Fluidity*"}}
        full = {"aws:RequestedRegion": "us-east-1", "ecs:cluster": CLUSTER,
                "cloudwatch:namespace": "Fluidity"}
        self.assertTrue(self.allowed(cond, full))
        for key in full:
            with self.subTest(missing=key):
                partial = {k: v for k, v in full.items() if k != key}
                self.assertFalse(self.allowed(cond, partial))
        self.assertFalse(self.allowed(cond, dict(full, **{"cloudwatch:namespace": "AWS/ECS"})))

    def test_condition_key_names_are_case_insensitive(self):
        cond = {"StringEquals": {"AWS:RequestedRegion": "us-east-1"}}
        self.assertTrue(self.allowed(cond, {"aws:requestedregion": "us-east-1"}))
        self.assertTrue(self.allowed(cond, {"Aws:RequestedREGION": "us-east-1"}))
        negated = {"StringNotEquals": {"aws:requestedregion": "us-east-1"}}
        self.assertFalse(self.allowed(negated, {"AWS:RequestedRegion": "us-east-1"}))

    def test_numbers_and_bools_in_policy_are_strings(self):
        self.assertTrue(self.allowed({"StringEquals": {"s3:max-keys": 10}}, {"s3:max-keys": "10"}))


class IfExistsTest(Case):
    def test_positive_if_exists(self):
        cond = {"StringEqualsIfExists": {"aws:RequestedRegion": "us-east-1"}}
        self.assertTrue(self.allowed(cond, {}))
        self.assertTrue(self.allowed(cond, {"aws:RequestedRegion": "us-east-1"}))
        self.assertFalse(self.allowed(cond, {"aws:RequestedRegion": "eu-west-1"}))

    def test_negated_if_exists(self):
        cond = {"StringNotLikeIfExists": {"cloudwatch:namespace": "AWS/*"}}
        self.assertTrue(self.allowed(cond, {}))
        self.assertTrue(self.allowed(cond, {"cloudwatch:namespace": "Fluidity"}))
        self.assertFalse(self.allowed(cond, {"cloudwatch:namespace": "AWS/ECS"}))

    def test_arn_and_numeric_if_exists(self):
        self.assertTrue(self.allowed({"ArnLikeIfExists": {"ecs:cluster": CLUSTER}}, {}))
        self.assertFalse(self.allowed({"ArnLikeIfExists": {"ecs:cluster": CLUSTER}},
                                      {"ecs:cluster": OTHER_CLUSTER}))
        self.assertTrue(self.allowed({"NumericLessThanIfExists": {"s3:max-keys": "5"}}, {}))
        self.assertFalse(self.allowed({"NumericLessThanIfExists": {"s3:max-keys": "5"}},
                                      {"s3:max-keys": "7"}))


class ArnConditionTest(Case):
    def test_arn_equals_exact(self):
        cond = {"ArnEquals": {"ecs:cluster": CLUSTER}}
        self.assertTrue(self.allowed(cond, {"ecs:cluster": CLUSTER}))
        self.assertFalse(self.allowed(cond, {"ecs:cluster": OTHER_CLUSTER}))
        self.assertFalse(self.allowed(cond, {"ecs:cluster": CLUSTER.upper()}))
        self.assertFalse(self.allowed(cond, {}))

    def test_arn_equals_wildcard_in_one_component(self):
        cond = {"ArnEquals": {"ecs:cluster": f"arn:aws:ecs:*:{ACCOUNT}:cluster/fluidity-dev"}}
        self.assertTrue(self.allowed(cond, {"ecs:cluster": CLUSTER}))
        self.assertTrue(self.allowed(
            cond, {"ecs:cluster": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/fluidity-dev"}))
        self.assertFalse(self.allowed(
            cond, {"ecs:cluster": "arn:aws:ecs:eu-west-1:999999999999:cluster/fluidity-dev"}))
        self.assertFalse(self.allowed(
            cond, {"ecs:cluster": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/fluidity-prod"}))

    def test_arn_wildcard_stays_inside_its_component(self):
        # A whole-string glob would let "us-*" swallow "us-east-1:999999999999".
        cond = {"ArnLike": {"ecs:cluster": f"arn:aws:ecs:us-*:{ACCOUNT}:cluster/x"}}
        sneaky = f"arn:aws:ecs:us-east-1:999999999999:{ACCOUNT}:cluster/x"
        self.assertFalse(self.allowed(cond, {"ecs:cluster": sneaky}))
        self.assertTrue(self.allowed(cond, {"ecs:cluster": f"arn:aws:ecs:us-west-2:{ACCOUNT}:cluster/x"}))

    def test_arn_like_resource_component_wildcards(self):
        cond = {"ArnLike": {"ecs:cluster": f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/fluidity-???"}}
        self.assertTrue(self.allowed(cond, {"ecs:cluster": CLUSTER}))
        self.assertFalse(self.allowed(cond, {"ecs:cluster": f"{CLUSTER}x"}))
        resource_star = {"ArnLike": {"aws:SourceArn": f"arn:aws:logs:us-east-1:{ACCOUNT}:*"}}
        self.assertTrue(self.allowed(
            resource_star, {"aws:SourceArn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:g:*"}))

    def test_arn_like_rejects_non_arn_request_value(self):
        self.assertFalse(self.allowed({"ArnLike": {"ecs:cluster": "arn:aws:ecs:*:*:*"}},
                                      {"ecs:cluster": "fluidity-dev"}))

    def test_arn_not_equals_and_not_like(self):
        for op in ("ArnNotEquals", "ArnNotLike"):
            with self.subTest(op=op):
                cond = {op: {"ecs:cluster": f"arn:aws:ecs:*:{ACCOUNT}:cluster/fluidity-*"}}
                self.assertFalse(self.allowed(cond, {"ecs:cluster": CLUSTER}))
                self.assertTrue(self.allowed(cond, {"ecs:cluster": OTHER_CLUSTER}))
                self.assertTrue(self.allowed(cond, {}))

    def test_malformed_arn_pattern_raises(self):
        with self.assertRaises(ValueError):
            self.allowed({"ArnNotLike": {"ecs:cluster": "cluster/fluidity-dev"}},
                         {"ecs:cluster": CLUSTER})


class BoolNumericNullTest(Case):
    def test_bool(self):
        for value in ("true", True, "TRUE"):
            with self.subTest(value=value):
                cond = {"Bool": {"aws:SecureTransport": value}}
                self.assertTrue(self.allowed(cond, {"aws:SecureTransport": "true"}))
                self.assertFalse(self.allowed(cond, {"aws:SecureTransport": "false"}))
                self.assertFalse(self.allowed(cond, {}))
        self.assertTrue(self.allowed({"BoolIfExists": {"aws:SecureTransport": "true"}}, {}))

    def test_bool_rejects_non_boolean_policy_value(self):
        with self.assertRaises(ValueError):
            self.allowed({"Bool": {"aws:SecureTransport": "yes"}}, {})

    def test_numeric_operators(self):
        cases = {  # operator: (true for 5, true for 10, true for 20) against 10
            "NumericEquals": (False, True, False),
            "NumericNotEquals": (True, False, True),
            "NumericLessThan": (True, False, False),
            "NumericLessThanEquals": (True, True, False),
            "NumericGreaterThan": (False, False, True),
            "NumericGreaterThanEquals": (False, True, True),
        }
        for op, expected in cases.items():
            for value, want in zip(("5", "10.0", "20"), expected):
                with self.subTest(op=op, value=value):
                    cond = {op: {"s3:max-keys": "10"}}
                    self.assertEqual(want, self.allowed(cond, {"s3:max-keys": value}))

    def test_numeric_missing_and_non_numeric_request_values(self):
        self.assertFalse(self.allowed({"NumericLessThan": {"s3:max-keys": "10"}}, {}))
        self.assertTrue(self.allowed({"NumericNotEquals": {"s3:max-keys": "10"}}, {}))
        self.assertFalse(self.allowed({"NumericLessThan": {"s3:max-keys": "10"}},
                                      {"s3:max-keys": "five"}))

    def test_numeric_rejects_non_numeric_policy_value(self):
        with self.assertRaises(ValueError):
            self.allowed({"NumericEquals": {"s3:max-keys": "ten"}}, {"s3:max-keys": "10"})

    def test_null(self):
        absent = {"Null": {"aws:TokenIssueTime": "true"}}
        self.assertTrue(self.allowed(absent, {}))
        self.assertFalse(self.allowed(absent, {"aws:TokenIssueTime": "2024-01-01T00:00:00Z"}))
        present = {"Null": {"aws:TokenIssueTime": False}}
        self.assertFalse(self.allowed(present, {}))
        self.assertTrue(self.allowed(present, {"AWS:TokenIssueTime": "2024-01-01T00:00:00Z"}))


class SetOperatorTest(Case):
    def test_for_any_value(self):
        cond = {"ForAnyValue:StringEquals": {"aws:TagKeys": ["env", "team"]}}
        self.assertTrue(self.allowed(cond, {"aws:TagKeys": ["owner", "env"]}))
        self.assertTrue(self.allowed(cond, {"aws:TagKeys": "team"}))
        self.assertFalse(self.allowed(cond, {"aws:TagKeys": ["owner", "cost"]}))
        self.assertFalse(self.allowed(cond, {}), "ForAnyValue with a missing key is false")
        self.assertFalse(self.allowed(cond, {"aws:TagKeys": []}))

    def test_for_all_values(self):
        cond = {"ForAllValues:StringLike": {"aws:TagKeys": ["env", "team-*"]}}
        self.assertTrue(self.allowed(cond, {"aws:TagKeys": ["env", "team-a"]}))
        self.assertFalse(self.allowed(cond, {"aws:TagKeys": ["env", "owner"]}))
        self.assertTrue(self.allowed(cond, {}), "ForAllValues with a missing key is true")
        self.assertTrue(self.allowed(cond, {"aws:TagKeys": []}))

    def test_negated_operators_with_set_prefixes(self):
        all_not = {"ForAllValues:StringNotEquals": {"aws:TagKeys": ["secret", "admin"]}}
        self.assertTrue(self.allowed(all_not, {"aws:TagKeys": ["env", "team"]}))
        self.assertFalse(self.allowed(all_not, {"aws:TagKeys": ["env", "admin"]}))
        any_not = {"ForAnyValue:StringNotEquals": {"aws:TagKeys": ["secret", "admin"]}}
        self.assertTrue(self.allowed(any_not, {"aws:TagKeys": ["secret", "env"]}))
        self.assertFalse(self.allowed(any_not, {"aws:TagKeys": ["secret", "admin"]}))
        self.assertFalse(self.allowed(any_not, {}))

    def test_set_prefix_with_if_exists(self):
        cond = {"ForAnyValue:StringEqualsIfExists": {"aws:TagKeys": "env"}}
        self.assertTrue(self.allowed(cond, {}))
        self.assertFalse(self.allowed(cond, {"aws:TagKeys": ["team"]}))

    def test_multivalued_context_needs_set_operator(self):
        with self.assertRaises(ValueError):
            self.allowed({"StringEquals": {"aws:TagKeys": "env"}},
                         {"aws:TagKeys": ["env", "team"]})
        self.assertTrue(self.allowed({"StringEquals": {"aws:TagKeys": "env"}},
                                     {"aws:TagKeys": ["env"]}))


class FailLoudlyTest(Case):
    def test_unknown_operator_raises_naming_it(self):
        for op in ("StringEqualz", "DateEquals", "IpAddress", "ForSomeValues:StringEquals",
                   "NullIfExists", "stringequals"):
            with self.subTest(op=op):
                with self.assertRaises(ValueError) as caught:
                    self.allowed({op: {"aws:RequestedRegion": "us-east-1"}}, {})
                self.assertIn(op, str(caught.exception))

    def test_unknown_operator_raises_even_when_action_does_not_match(self):
        with self.assertRaises(ValueError):
            evaluate([policy(deny("s3:*", Condition={"Bogus": {"k": "v"}}))],
                     "ecs:ListTasks", "*")

    def test_policy_variables_raise(self):
        with self.assertRaises(ValueError):
            evaluate([policy(allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"))],
                     "s3:GetObject", BUCKET_OBJECT)
        with self.assertRaises(ValueError):
            evaluate([policy(allow("s3:*", "arn:aws:s3:::home/${aws:username}"))],
                     "s3:ListAllMyBuckets", "*")
        with self.assertRaises(ValueError):
            self.allowed({"StringLike": {"s3:prefix": "${aws:username}/*"}}, {})

    def test_malformed_statements_raise(self):
        bad = [
            {"Effect": "allow", "Action": "*", "Resource": "*"},
            {"Effect": "Allow", "Action": "*", "Resource": "*", "Condtion": {}},
            {"Effect": "Allow", "Action": "*", "NotAction": "s3:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "*", "Resource": "*", "NotResource": "*"},
            {"Effect": "Allow", "Action": "ListTasks", "Resource": "*"},
        ]
        for statement in bad:
            with self.subTest(statement=statement):
                with self.assertRaises(ValueError):
                    evaluate([policy(statement)], "ecs:ListTasks", "*")
        with self.assertRaises(ValueError):
            evaluate([{"Version": "2012-10-18", "Statement": []}], "ecs:ListTasks", "*")


class ExplainTest(Case):
    def test_explain_names_matching_statements(self):
        policies = [policy(dict(allow("ecs:*"), Sid="EcsAll")), policy(deny("ecs:RunTask"))]
        line = explain(policies, "ecs:RunTask", "*")
        self.assertTrue(line.startswith("ExplicitDeny"), line)
        self.assertIn("EcsAll", line)
        self.assertIn("policy 1 statement 0", line)
        self.assertNotIn("\n", line)

    def test_explain_says_why_nothing_matched(self):
        policies = [policy(dict(allow("ecs:ListTasks", Condition={
            "ArnEquals": {"ecs:cluster": CLUSTER}}), Sid="List"), allow("s3:*"))]
        line = explain(policies, "ecs:ListTasks", "*", {"ecs:cluster": OTHER_CLUSTER})
        self.assertTrue(line.startswith("ImplicitDeny"), line)
        self.assertIn("'List'", line)
        self.assertIn("ArnEquals ecs:cluster", line)
        self.assertIn("action not matched", line)


class FluidityListTasksTest(Case):
    """The realistic case: ecs:ListTasks is authorised by the ecs:cluster
    condition key, not by a resource ARN."""

    STATEMENT = {"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*",
                 "Condition": {"ArnEquals": {"ecs:cluster": CLUSTER}}}

    def test_allows_list_tasks_on_its_cluster(self):
        self.assertDecision(ALLOW, [policy(self.STATEMENT)], "ecs:ListTasks", "*",
                            {"ecs:cluster": CLUSTER})

    def test_denies_list_tasks_on_another_cluster(self):
        self.assertDecision(IMPLICIT, [policy(self.STATEMENT)], "ecs:ListTasks", "*",
                            {"ecs:cluster": OTHER_CLUSTER})
        self.assertDecision(IMPLICIT, [policy(self.STATEMENT)], "ecs:ListTasks", "*")

    def test_container_instance_scope_does_not_cover_list_tasks(self):
        scoped = allow("ecs:ListTasks",
                       f"arn:aws:ecs:us-east-1:{ACCOUNT}:container-instance/*")
        self.assertDecision(IMPLICIT, [policy(scoped)], "ecs:ListTasks", "*",
                            {"ecs:cluster": CLUSTER})


if __name__ == "__main__":
    unittest.main()
