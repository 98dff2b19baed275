"""CloudFormation stack policies, evaluated as AWS does on a stack update
(moto stores a stack's policy and never reads it).

The rules, from "Prevent updates to stack resources" (CloudFormation User
Guide):
- a stack with a policy protects all its resources: an update action on a
  resource is denied unless a statement allows it;
- an explicit Deny overrides any Allow;
- actions are Update:Modify, Update:Replace, Update:Delete (Update:* and
  other wildcards match them); Action or NotAction;
- resources are "LogicalResourceId/<id>" (wildcards allowed) or "*";
  Resource or NotResource;
- Condition keys: ResourceType with StringEquals or StringLike;
- resources the update adds are not subject to the policy.

`denied(policy, changes)` lists the changes a policy refuses, each with the
message the failed update carries.
"""
import fnmatch
import json


def _listed(value):
    if value is None:
        return None
    return value if isinstance(value, list) else [value]


def _matches_any(patterns, value):
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def _applies(statement, action, logical_id, resource_type):
    actions, not_actions = _listed(statement.get("Action")), _listed(statement.get("NotAction"))
    if actions is not None and not _matches_any(actions, action):
        return False
    if not_actions is not None and _matches_any(not_actions, action):
        return False
    resource = f"LogicalResourceId/{logical_id}"
    resources, not_resources = _listed(statement.get("Resource")), _listed(statement.get("NotResource"))
    if resources is not None and not _matches_any(resources, resource):
        return False
    if not_resources is not None and _matches_any(not_resources, resource):
        return False
    for operator, conditions in (statement.get("Condition") or {}).items():
        for key, wanted in conditions.items():
            if key != "ResourceType":
                raise ValueError(f"unknown stack policy condition key {key}")
            wanted = _listed(wanted)
            if operator == "StringEquals" and resource_type not in wanted:
                return False
            if operator == "StringLike" and not _matches_any(wanted, resource_type):
                return False
            if operator not in ("StringEquals", "StringLike"):
                raise ValueError(f"unknown stack policy condition operator {operator}")
    return True


def decide(policy, action, logical_id, resource_type):
    """(allowed, index of the deciding statement or None)."""
    allowed_by = None
    for index, statement in enumerate(policy.get("Statement", [])):
        if not _applies(statement, action, logical_id, resource_type):
            continue
        if statement.get("Effect") == "Deny":
            return False, index
        if statement.get("Effect") == "Allow" and allowed_by is None:
            allowed_by = index
    return allowed_by is not None, allowed_by


def denied(policy_text, changes):
    """The changes `policy_text` refuses: [(logical_id, message)]. `changes`
    is [(action, logical_id, resource_type)]; no policy allows everything."""
    if not policy_text:
        return []
    policy = json.loads(policy_text)
    refused = []
    for action, logical_id, resource_type in changes:
        allowed, statement = decide(policy, action, logical_id, resource_type)
        if not allowed:
            why = f"Statement [#{statement}] denies" if statement is not None else "No statement allows"
            refused.append((logical_id, f"Action denied by stack policy: {why} [{action}] "
                                        f"for resource [LogicalResourceId/{logical_id}]"))
    return refused
