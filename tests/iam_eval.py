#!/usr/bin/env python3
"""A small evaluator for AWS IAM identity-based policies (standard library only).

It follows the logic in the AWS IAM User Guide ("Policy evaluation logic" and
"IAM JSON policy elements: Condition operators") for one request, made of an
action, a resource and a request context, against a list of identity
policies:

  * If any statement that matches the request has Effect "Deny", the result is
    "ExplicitDeny".
  * Otherwise, if any matching statement has Effect "Allow", it is "Allow".
  * Otherwise it is "ImplicitDeny".

A statement matches when its Action/NotAction, its Resource/NotResource and
all of its Condition block match.

  * Actions are matched case-insensitively; `*` and `?` are wildcards.
  * Resources are matched case-sensitively against the whole string; `*` and
    `?` are wildcards. The request resource "*" (an action without
    resource-level permissions) is covered only by the pattern "*".
  * Condition operators: StringEquals, StringNotEquals,
    StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike,
    StringNotLike, ArnEquals, ArnLike, ArnNotEquals, ArnNotLike, Bool,
    NumericEquals, NumericNotEquals, NumericLessThan, NumericLessThanEquals,
    NumericGreaterThan, NumericGreaterThanEquals and Null; each (except Null)
    with an optional "IfExists" suffix and an optional "ForAnyValue:" or
    "ForAllValues:" prefix. Condition key names are case-insensitive.

Limits: this is a test helper, not a full policy engine. It does not model
resource-based policies, permissions boundaries, SCPs, session policies or
principals. It does not support policy variables (`${...}`), the Date, IP
address and Binary operator families; anything it does not support, and any
malformed policy, raises ValueError rather than quietly allowing or denying.
A context value that is a list of more than one string needs a
ForAnyValue:/ForAllValues: operator (AWS requires a set operator for
multivalued keys), otherwise ValueError is raised; an empty list counts as
an absent key.
"""
import math
import re

ALLOW = "Allow"
IMPLICIT_DENY = "ImplicitDeny"
EXPLICIT_DENY = "ExplicitDeny"

_POLICY_KEYS = {"Version", "Id", "Statement"}
_VERSIONS = {"2012-10-17", "2008-10-17"}
_STATEMENT_KEYS = {
    "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource",
    "Condition",
}
_SET_PREFIXES = ("ForAnyValue:", "ForAllValues:")


# ---------------------------------------------------------------- public API


def evaluate(policies, action, resource, context=None):
    """Returns "Allow", "ImplicitDeny" or "ExplicitDeny" for the request."""
    return _decide(policies, action, resource, context)[0]


def explain(policies, action, resource, context=None):
    """Returns one line saying the decision and which statements matched,
    or, when none did, why each statement did not."""
    decision, results = _decide(policies, action, resource, context)
    head = f"{decision} for {action} on {resource}"
    matched = [f"{r.effect} {r.label}" for r in results if r.matched]
    if matched:
        return f"{head}: matched " + "; ".join(matched)
    if not results:
        return f"{head}: no statements"
    missed = [f"{r.label}: {r.reason}" for r in results]
    return f"{head}: no statement matched (" + "; ".join(missed) + ")"


# ---------------------------------------------------------------- decision


class _Result:
    """How one statement fared against the request."""

    def __init__(self, label, effect, matched, reason):
        self.label = label
        self.effect = effect
        self.matched = matched
        self.reason = reason


def _decide(policies, action, resource, context):
    _check_request(action, resource)
    ctx = _normalise_context(context)
    results = []
    if not isinstance(policies, list):
        raise ValueError(f"policies must be a list of policy documents: {policies!r}")
    for p_index, policy in enumerate(policies):
        for s_index, statement in enumerate(_statements(policy)):
            results.append(
                _evaluate_statement(statement, p_index, s_index,
                                    action, resource, ctx))
    effects = {r.effect for r in results if r.matched}
    if "Deny" in effects:
        return EXPLICIT_DENY, results
    if "Allow" in effects:
        return ALLOW, results
    return IMPLICIT_DENY, results


def _check_request(action, resource):
    if not isinstance(action, str) or ":" not in action:
        raise ValueError(f"request action must be 'service:Name': {action!r}")
    if not isinstance(resource, str) or not resource:
        raise ValueError(f"request resource must be a string: {resource!r}")


def _normalise_context(context):
    """Lower-cases key names; values become lists of strings."""
    ctx = {}
    for key, value in (context or {}).items():
        lowered = key.lower()
        if lowered in ctx:
            raise ValueError(f"context key given twice (case-insensitively): {key}")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, str):
                raise ValueError(f"context value for {key} must be a string: {item!r}")
        ctx[lowered] = values
    return ctx


def _statements(policy):
    if not isinstance(policy, dict):
        raise ValueError(f"policy must be a dict: {policy!r}")
    unknown = set(policy) - _POLICY_KEYS
    if unknown:
        raise ValueError(f"unknown policy element(s): {sorted(unknown)}")
    version = policy.get("Version", "2008-10-17")
    if version not in _VERSIONS:
        raise ValueError(f"unknown policy Version: {version!r}")
    if "Statement" not in policy:
        raise ValueError("policy has no Statement")
    return _as_list(policy["Statement"], "Statement")


def _evaluate_statement(statement, p_index, s_index, action, resource, ctx):
    if not isinstance(statement, dict):
        raise ValueError(f"statement must be a dict: {statement!r}")
    label = _label(statement, p_index, s_index)
    unknown = set(statement) - _STATEMENT_KEYS
    if unknown:
        raise ValueError(f"{label}: unknown statement element(s): {sorted(unknown)}")
    effect = statement.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise ValueError(f"{label}: Effect must be Allow or Deny: {effect!r}")
    # Every part is evaluated, so a malformed part raises even when another
    # part already fails to match.
    reasons = [
        _action_reason(statement, label, action),
        _resource_reason(statement, label, resource),
        _condition_reason(statement.get("Condition"), label, ctx),
    ]
    reasons = [r for r in reasons if r]
    return _Result(label, effect, not reasons, ", ".join(reasons))


def _label(statement, p_index, s_index):
    place = f"policy {p_index} statement {s_index}"
    sid = statement.get("Sid")
    return f"{sid!r} ({place})" if sid else place


def _as_list(value, what):
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise ValueError(f"{what} must be a non-empty string, dict or list: {value!r}")


def _pair(statement, label, name):
    """Returns (patterns, negated) for Action/NotAction or
    Resource/NotResource; (None, False) when neither is present."""
    negative = "Not" + name
    if name in statement and negative in statement:
        raise ValueError(f"{label}: has both {name} and {negative}")
    key = name if name in statement else negative
    if key not in statement:
        return None, False
    patterns = _as_list(statement[key], key)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"{label}: {key} entries must be strings: {pattern!r}")
    return patterns, key == negative


# ---------------------------------------------------------------- action and resource


def _action_reason(statement, label, action):
    patterns, negated = _pair(statement, label, "Action")
    if patterns is None:
        return "no Action or NotAction"
    for pattern in patterns:
        if pattern != "*" and ":" not in pattern:
            raise ValueError(f"{label}: action must be 'service:Name' or '*': {pattern!r}")
    hit = any(_glob(p, action, ignore_case=True) for p in patterns)
    if negated:
        return "action is listed in NotAction" if hit else ""
    return "" if hit else "action not matched"


def _resource_reason(statement, label, resource):
    patterns, negated = _pair(statement, label, "Resource")
    if patterns is None:
        return "no Resource or NotResource"
    hit = any(_resource_matches(p, resource) for p in patterns)
    if negated:
        return "resource is listed in NotResource" if hit else ""
    return "" if hit else "resource not matched"


def _resource_matches(pattern, resource):
    if resource == "*":
        _reject_variables(pattern)
        return set(pattern) == {"*"}
    return _glob(pattern, resource, ignore_case=False)


def _reject_variables(pattern):
    if "${" in pattern:
        raise ValueError(f"policy variables are not supported: {pattern!r}")


def _glob(pattern, text, ignore_case):
    """IAM-style wildcard match of the whole text: `*` is any run of
    characters, `?` any one character; nothing else is special."""
    _reject_variables(pattern)
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, text, flags) is not None


# ---------------------------------------------------------------- conditions


def _condition_reason(block, label, ctx):
    """Returns "" when every operator/key in the block holds, else which
    failed. Every entry is evaluated so malformed ones always raise."""
    if block is None:
        return ""
    if not isinstance(block, dict):
        raise ValueError(f"{label}: Condition must be a dict: {block!r}")
    failed = []
    for operator, keys in block.items():
        if not isinstance(keys, dict) or not keys:
            raise ValueError(f"{label}: {operator} needs a non-empty dict of keys")
        for key, policy_values in keys.items():
            if not _condition_holds(operator, key, policy_values, ctx):
                failed.append(f"{operator} {key}")
    return "condition failed: " + ", ".join(failed) if failed else ""


def _condition_holds(operator, key, policy_values, ctx):
    set_op, base, if_exists = _parse_operator(operator)
    policy_values = _policy_values(operator, policy_values)
    values = ctx.get(key.lower(), [])
    if base == "Null":
        return _null_holds(policy_values, bool(values))
    matcher, negated = _OPERATORS[base]
    check = _value_check(operator, matcher, negated, policy_values)
    if not values:
        if if_exists:
            return True
        if set_op:
            return set_op == "ForAllValues:"
        return negated
    if set_op == "ForAllValues:":
        return all(check(v) for v in values)
    if set_op == "ForAnyValue:":
        return any(check(v) for v in values)
    if len(values) > 1:
        raise ValueError(
            f"{operator} on multivalued context key {key} needs "
            "ForAnyValue: or ForAllValues:")
    return check(values[0])


def _parse_operator(operator):
    """Splits e.g. "ForAnyValue:StringLikeIfExists" into
    ("ForAnyValue:", "StringLike", True)."""
    if not isinstance(operator, str):
        raise ValueError(f"condition operator must be a string: {operator!r}")
    set_op = next((p for p in _SET_PREFIXES if operator.startswith(p)), "")
    base = operator[len(set_op):]
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    if base not in _OPERATORS and base != "Null":
        raise ValueError(f"unknown or unsupported condition operator: {operator}")
    if base == "Null" and (set_op or if_exists):
        raise ValueError(f"unsupported condition operator: {operator}")
    return set_op, base, if_exists


def _policy_values(operator, raw):
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise ValueError(f"{operator}: empty list of values")
    out = []
    for value in values:
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise ValueError(f"{operator}: unsupported condition value {value!r}")
        _reject_variables(value)
        out.append(value)
    return out


def _value_check(operator, matcher, negated, policy_values):
    """Returns a test of one request value: it matches any policy value
    (OR), or, for a negated operator, none of them."""
    for pattern in policy_values:
        matcher.validate(operator, pattern)

    def check(value):
        hit = any(matcher(value, pattern) for pattern in policy_values)
        return not hit if negated else hit

    return check


def _null_holds(policy_values, present):
    wanted = set()
    for value in policy_values:
        if value.lower() not in ("true", "false"):
            raise ValueError(f"Null: value must be true or false: {value!r}")
        wanted.add(value.lower() == "true")
    # "true": the key must be absent; "false": it must be present.
    return (not present) in wanted


# ---------------------------------------------------------------- value matchers


class _Matcher:
    """A comparison of one request value with one policy value, plus a check
    that the policy value is well-formed for the operator family."""

    def __init__(self, compare, validate=None):
        self.compare = compare
        self.validate = validate or (lambda operator, pattern: None)

    def __call__(self, value, pattern):
        return self.compare(value, pattern)


def _validate_bool(operator, pattern):
    if pattern.lower() not in ("true", "false"):
        raise ValueError(f"{operator}: value must be true or false: {pattern!r}")


def _validate_number(operator, pattern):
    if _number(pattern) is None:
        raise ValueError(f"{operator}: value must be a number: {pattern!r}")


def _validate_arn(operator, pattern):
    if pattern != "*" and len(pattern.split(":", 5)) != 6:
        raise ValueError(f"{operator}: value must be an ARN: {pattern!r}")


def _number(text):
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _numeric(compare):
    def match(value, pattern):
        number = _number(value)
        return number is not None and compare(number, float(pattern))
    return _Matcher(match, _validate_number)


def _arn_matches(value, pattern):
    """Compares the six colon-separated ARN components one by one, each
    with `*`/`?` wildcards. A request value that is not an ARN never matches."""
    if pattern == "*":
        return True
    parts = value.split(":", 5)
    if len(parts) != 6:
        return False
    return all(_glob(p, v, ignore_case=False)
               for p, v in zip(pattern.split(":", 5), parts))


_STRING = _Matcher(lambda v, p: v == p)
_STRING_IGNORE_CASE = _Matcher(lambda v, p: v.casefold() == p.casefold())
_STRING_LIKE = _Matcher(lambda v, p: _glob(p, v, ignore_case=False))
_ARN = _Matcher(_arn_matches, _validate_arn)
_BOOL = _Matcher(lambda v, p: v.lower() == p.lower(), _validate_bool)

# base operator name -> (matcher, negated)
_OPERATORS = {
    "StringEquals": (_STRING, False),
    "StringNotEquals": (_STRING, True),
    "StringEqualsIgnoreCase": (_STRING_IGNORE_CASE, False),
    "StringNotEqualsIgnoreCase": (_STRING_IGNORE_CASE, True),
    "StringLike": (_STRING_LIKE, False),
    "StringNotLike": (_STRING_LIKE, True),
    "ArnEquals": (_ARN, False),
    "ArnLike": (_ARN, False),
    "ArnNotEquals": (_ARN, True),
    "ArnNotLike": (_ARN, True),
    "Bool": (_BOOL, False),
    "NumericEquals": (_numeric(lambda a, b: a == b), False),
    "NumericNotEquals": (_numeric(lambda a, b: a == b), True),
    "NumericLessThan": (_numeric(lambda a, b: a < b), False),
    "NumericLessThanEquals": (_numeric(lambda a, b: a <= b), False),
    "NumericGreaterThan": (_numeric(lambda a, b: a > b), False),
    "NumericGreaterThanEquals": (_numeric(lambda a, b: a >= b), False),
}
