#!/usr/bin/env python3
"""Starts moto's server (the local AWS emulator used by the tests) with fixes where it differs from AWS.

1. moto returns the container-level `cpu` and `memory` of ECS tasks as JSON
   numbers where the ECS API model says strings, so strict clients (the Rust
   SDK) fail to read DescribeTasks and RunTask. This wraps moto's WSGI app and
   turns those two fields into strings in ECS responses; so too a container's
   `systemControls` values (a template's `!Ref` of a Number parameter is text
   in AWS; moto keeps the number, and DescribeTaskDefinition fails to read).
2. moto does arithmetic on a service's DesiredCount and (in RunTask) on a
   task's container memory and cpu, which CloudFormation passes on as text
   from String parameters (AWS accepts it); they are made numbers. moto 5.2's RunTask with awsvpc networking reads `private_dns_name` from a
   network interface class that lacks it; a property is added when missing.
3. moto's ExecuteChangeSet only records the new template: it creates no
   resources, outputs or exports. Executing a change set here does what
   CreateStack / UpdateStack do (the stack keeps its id); a creation moto
   cannot complete ends, as in AWS, in CREATE_FAILED and ROLLBACK_COMPLETE
   events with the stack left in ROLLBACK_COMPLETE. A Create change set on a
   stack left in REVIEW_IN_PROGRESS by an earlier one replaces it, as in AWS
   (moto keeps both, and the creation then finds the name taken).
4. With --recorded-drift DIR, the three drift-detection calls moto lacks
   (DetectStackDrift, DescribeStackDriftDetectionStatus,
   DescribeStackResourceDrifts) are answered from recorded responses in DIR;
   see tests/recorded/drift/README.
5. moto has no UpdateTerminationProtection and deletes protected stacks.
   Here the call sets the flag DescribeStacks reports, and DeleteStack of a
   protected stack fails as in AWS ("Stack [NAME] cannot be deleted while
   TerminationProtection is enabled", ValidationError; "Protect a stack from
   being deleted", CloudFormation User Guide).
6. With --record FILE, every request is appended to FILE as one JSON line
   (method, path, query, the signing access key id and service, X-Amz-Target,
   body, and what its signature is recomputed from): the code's real AWS traffic, which tests/iam_check.py evaluates
   against the templates' role policies and tests/model_check.py against
   AWS's published service models.
7. A second CreateServiceLinkedRole answers InvalidInput "has been taken", as
   AWS does (moto: EntityAlreadyExists).
8. Stack policies are enforced on updates (UpdateStack and executed Update
   change sets), as tests/stack_policy.py evaluates them: an update that
   removes or modifies a resource the stack's policy protects fails with
   that resource's UPDATE_FAILED event ("Action denied by stack policy")
   and ends in UPDATE_ROLLBACK_COMPLETE, with nothing changed. moto's diff
   of templates decides the actions: a removed resource is Update:Delete, a
   changed one Update:Modify (moto cannot tell which changes replace a
   resource, so Update:Replace is never derived); UpdateStack's
   StackPolicyDuringUpdateBody is not read.
10. IAM is eventually consistent ("Changes that I make are not always
   immediately visible", IAM User Guide, Troubleshooting IAM): API Gateway
   refuses a role created moments before for its account setting. After
   `POST /fluidity-test/role-not-usable-yet?times=N`, the next N
   UpdateAccount calls answer as it does then (400 BadRequestException,
   "The role ARN does not have required permissions set to API Gateway").
11. CloudFormation drops a list item that is `!If [..., ..., !Ref
   AWS::NoValue]` when the condition is false (the execution role's
   conditional inline policies); moto leaves a null in the role's
   Policies list and fails the creation (HTTP 500). Nulls are dropped.
12. moto runs every task it is given. After
   `POST /fluidity-test/crash-next-tasks?times=N`, the next N tasks RunTask
   starts stop at once as a task whose essential container exits does on
   AWS (lastStatus STOPPED, stopCode EssentialContainerExited, stoppedReason
   "Essential container in task exited", the container's exit code 1): a
   bad image or unreadable certificates, for the deploy tool's check of a
   new task definition.
9. moto's DescribeStackResource fails (HTTP 500) on a stack that holds a
   resource of a type moto skips (an API Gateway stage, an alarm), which
   has no logical id there; it now looks past those.

Usage: moto_launcher.py -H 127.0.0.1 -p PORT [--recorded-drift DIR] [--record FILE]
"""
import argparse
import hashlib
import io
import json
import os
import sys
import urllib.parse

from moto.cloudformation.exceptions import ValidationError as CfnValidationError
from moto.cloudformation.models import CloudFormationBackend, Event, Stack
from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ecs.models import EC2ContainerServiceBackend, Service as EcsService
from moto.iam.exceptions import InvalidInput
from moto.iam.models import IAMBackend, Role as IamRole
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack_policy  # noqa: E402  (beside this file)

def _numeric_desired_count(original):
    """CloudFormation passes String parameters on as text and AWS accepts
    "0" for a service's DesiredCount; moto does arithmetic on it. A number in."""
    def wrapped(cls, *args, **kwargs):
        json_arg = kwargs.get("cloudformation_json") or next(a for a in args if isinstance(a, dict))
        properties = json_arg.get("Properties", {})
        if isinstance(properties.get("DesiredCount"), str) and properties["DesiredCount"].isdigit():
            properties["DesiredCount"] = int(properties["DesiredCount"])
        return original.__func__(cls, *args, **kwargs)
    return classmethod(wrapped)


EcsService.create_from_cloudformation_json = _numeric_desired_count(EcsService.create_from_cloudformation_json)
EcsService.update_from_cloudformation_json = _numeric_desired_count(EcsService.update_from_cloudformation_json)

if not hasattr(NetworkInterface, "private_dns_name"):
    NetworkInterface.private_dns_name = property(
        lambda self: "ip-" + str(self.private_ip_address).replace(".", "-") + ".ec2.internal"
    )



def execute_change_set(self, change_set_name, stack_name=None):
    change_set = self.describe_change_set(change_set_name)
    stack = self.stacks[change_set.stack_id]
    if change_set.change_set_type == "CREATE":
        del self.stacks[stack.stack_id]
        # A stack left in REVIEW_IN_PROGRESS by an earlier, never executed
        # change set is the same stack in AWS (a new Create change set reuses
        # it); moto made a second one of the same name.
        for other in [s for s in self.stacks.values() if s.name == stack.name and s.status == "REVIEW_IN_PROGRESS"]:
            del self.stacks[other.stack_id]
        try:
            created = self.create_stack(name=stack.name, template=change_set.template,
                                        parameters=change_set.parameters, tags=change_set.tags)
        except Exception as error:  # a resource moto could not create: roll back, as AWS does
            for other in [s for s in self.stacks.values() if s.name == stack.name]:
                del self.stacks[other.stack_id]
                try:
                    other.delete()  # the rollback removes what was created
                except Exception:
                    pass
                for export in other.exports:
                    self.exports.pop(export.name, None)
            self.stacks[stack.stack_id] = stack
            stack._add_stack_event("CREATE_IN_PROGRESS", resource_status_reason="User Initiated")
            stack._add_stack_event("CREATE_FAILED", resource_status_reason=f"{type(error).__name__}: {error}")
            stack._add_stack_event("ROLLBACK_IN_PROGRESS", resource_status_reason="The following resource(s) failed to create.")
            stack._add_stack_event("ROLLBACK_COMPLETE")
            stack.status = "ROLLBACK_COMPLETE"
            change_set.execution_status = "EXECUTE_FAILED"
            return
        del self.stacks[created.stack_id]
        created.stack_id = stack.stack_id
        created.events = stack.events + created.events
        for event in created.events:
            event.stack_id = stack.stack_id
        self.stacks[stack.stack_id] = created
    else:
        incoming = [{"ParameterKey": k, "ParameterValue": v} for k, v in change_set.parameters.items()]
        updated = self.update_stack(name=stack.name, template=change_set.template, role_arn=None,
                                    parameters=incoming, tags=None)
        for export in updated.exports:
            self.exports[export.name] = export
    change_set.execution_status = "EXECUTE_COMPLETE"


CloudFormationBackend.execute_change_set = execute_change_set


def _stack_policy_enforced(original):
    """An update the stack's policy refuses fails, changing nothing (see 8. above)."""
    def wrapped(self, name, template, role_arn, parameters, tags):
        stack = self.get_stack(name)
        if stack.policy:
            new = Stack.parse_template(template)
            resolved = self._resolve_update_parameters(instance=stack, incoming_params=parameters)
            diff = stack.resource_map.build_resource_diff(new, resolved)
            old_types = {k: v.get("Type", "") for k, v in stack.template_dict.get("Resources", {}).items()}
            new_types = {k: v.get("Type", "") for k, v in new.get("Resources", {}).items()}
            changes = [("Update:Delete", n, old_types.get(n, "")) for n in diff["Remove"]]
            changes += [("Update:Modify", n, new_types.get(n, "")) for n in diff["Modify"]]
            refused = stack_policy.denied(stack.policy, changes)
            if refused:
                stack._add_stack_event("UPDATE_IN_PROGRESS", resource_status_reason="User Initiated")
                for logical_id, message in refused:
                    stack.events.append(Event(
                        stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id,
                        physical_resource_id=getattr(stack.resource_map._parsed_resources.get(logical_id),
                                                     "physical_resource_id", "") or "",
                        resource_type=old_types.get(logical_id) or new_types.get(logical_id, ""),
                        resource_status="UPDATE_FAILED", resource_status_reason=message,
                        resource_properties=None))
                names = ", ".join(logical_id for logical_id, _ in refused)
                stack._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS",
                                       resource_status_reason=f"The following resource(s) failed to update: [{names}].")
                stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE")
                stack.status = "UPDATE_ROLLBACK_COMPLETE"
                return stack
        return original(self, name, template, role_arn, parameters, tags)
    return wrapped


CloudFormationBackend.update_stack = _stack_policy_enforced(CloudFormationBackend.update_stack)


def describe_stack_resource(self, stack_name, logical_resource_id):
    stack = self.get_stack(stack_name)
    for resource in stack.stack_resources:
        if getattr(resource, "logical_resource_id", None) == logical_resource_id:
            return stack, resource
    raise CfnValidationError(stack_name, f"Resource {logical_resource_id} does not exist for stack {stack_name}")


CloudFormationBackend.describe_stack_resource = describe_stack_resource


def _without_absent_policies(original):
    """A role's Policies without the items AWS::NoValue removed (see 11. above)."""
    def wrapped(cls, *args, **kwargs):
        json_arg = kwargs.get("cloudformation_json") or next(a for a in args if isinstance(a, dict))
        properties = json_arg.get("Properties", {})
        if isinstance(properties.get("Policies"), list):
            properties["Policies"] = [p for p in properties["Policies"] if p is not None]
        return original.__func__(cls, *args, **kwargs)
    return classmethod(wrapped)


IamRole.create_from_cloudformation_json = _without_absent_policies(IamRole.create_from_cloudformation_json)
if hasattr(IamRole, "update_from_cloudformation_json"):
    IamRole.update_from_cloudformation_json = _without_absent_policies(IamRole.update_from_cloudformation_json)


CRASH_NEXT_TASKS = [0]


def _crashing_tasks(original):
    """Tasks that stop at once while CRASH_NEXT_TASKS counts down (see 12. above)."""
    def wrapped(self, *args, **kwargs):
        tasks = original(self, *args, **kwargs)
        for task in tasks:
            if CRASH_NEXT_TASKS[0] > 0:
                CRASH_NEXT_TASKS[0] -= 1
                task.last_status = "STOPPED"
                task.desired_status = "STOPPED"
                task.stopped_reason = "Essential container in task exited"
                task.stop_code = "EssentialContainerExited"
                for container in task.containers:
                    container.last_status = "STOPPED"
                    container.exitCode = 1
                    container.health_status = "UNKNOWN"
        return tasks
    return wrapped


EC2ContainerServiceBackend.run_task = _crashing_tasks(EC2ContainerServiceBackend.run_task)


def _numeric_container_sizes(original):
    """RunTask sums the containers' memory and cpu, which CloudFormation
    passes on as text from String parameters (AWS takes "512"); moto fails
    adding them (HTTP 500). They are made numbers first."""
    def wrapped(task_definition):
        for container in task_definition.container_definitions:
            for key in ("cpu", "memory", "memoryReservation", "Cpu", "Memory", "MemoryReservation"):
                if isinstance(container.get(key), str) and container[key].isdigit():
                    container[key] = int(container[key])
        return original(task_definition)
    return staticmethod(wrapped)


EC2ContainerServiceBackend._calculate_task_resource_requirements = _numeric_container_sizes(
    EC2ContainerServiceBackend._calculate_task_resource_requirements)


def _service_linked_role_taken(original):
    """A second CreateServiceLinkedRole answers as AWS does: InvalidInput,
    "Service role name AWSServiceRoleForECS has been taken in this account,
    please try a different suffix." (moto: EntityAlreadyExists, and a
    lower-case "AWSServiceRoleForecs")."""
    def wrapped(self, service_name, description, suffix):
        path = f"/aws-service-role/{service_name}/"
        taken = [r for r in self.roles.values() if r.path == path]
        if taken and not suffix:
            name = "AWSServiceRoleForECS" if service_name == "ecs.amazonaws.com" else taken[0].name
            raise InvalidInput(f"Service role name {name} has been taken in this account, please try a different suffix.")
        return original(self, service_name, description, suffix)
    return wrapped


IAMBackend.create_service_linked_role = _service_linked_role_taken(IAMBackend.create_service_linked_role)

def query_form(environ):
    """The form of a Query-protocol request (left readable for moto), or None."""
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}


DRIFT_ACTIONS = ("DetectStackDrift", "DescribeStackDriftDetectionStatus", "DescribeStackResourceDrifts")


class RecordedDrift:
    """Answers moto's missing drift-detection calls from recorded XML files."""

    def __init__(self, app, directory):
        self.app, self.directory, self.polls = app, directory, {}

    def __call__(self, environ, start_response):
        form = query_form(environ)
        if form is None:
            return self.app(environ, start_response)
        action = form.get("Action")
        if action not in DRIFT_ACTIONS:
            return self.app(environ, start_response)
        detection = form.get("StackDriftDetectionId", "")
        stack = form.get("StackName") or detection.rsplit("-b78ac9b0", 1)[0]
        if action == "DetectStackDrift":
            number = 1
            self.polls[stack] = 0
        elif action == "DescribeStackDriftDetectionStatus":
            self.polls[stack] = self.polls.get(stack, 0) + 1
            number = self.polls[stack]
        else:
            number = 2 if form.get("NextToken") else 1
        directory = os.path.join(self.directory, stack.rsplit("-", 1)[-1])
        while number > 1 and not os.path.exists(os.path.join(directory, f"{action}.{number}.xml")):
            number -= 1
        with open(os.path.join(directory, f"{action}.{number}.xml")) as f:
            answer = f.read().replace("{StackName}", stack).encode()
        start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(answer)))])
        return [answer]


ECS_TARGET = "AmazonEC2ContainerServiceV20141113."


class TerminationProtection:
    """UpdateTerminationProtection, and DeleteStack refused while it is on."""

    def __init__(self, app):
        self.app = app

    @staticmethod
    def backend():
        from moto.cloudformation.models import cloudformation_backends
        return cloudformation_backends["123456789012"]["us-east-1"]

    def stack(self, name):
        return next((s for s in self.backend().stacks.values()
                     if name in (s.name, s.stack_id) and s.status != "DELETE_COMPLETE"), None)

    def __call__(self, environ, start_response):
        form = query_form(environ)
        if form is None:
            return self.app(environ, start_response)
        action, name = form.get("Action"), form.get("StackName", "")
        if action == "UpdateTerminationProtection":
            stack = self.stack(name)
            if stack is None:
                return self.error(start_response, f"Stack [{name}] does not exist")
            stack.enable_termination_protection = form.get("EnableTerminationProtection") == "true"
            answer = ("<UpdateTerminationProtectionResponse><UpdateTerminationProtectionResult>"
                      f"<StackId>{stack.stack_id}</StackId></UpdateTerminationProtectionResult>"
                      "</UpdateTerminationProtectionResponse>").encode()
            start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(answer)))])
            return [answer]
        if action == "DeleteStack":
            stack = self.stack(name)
            if stack is not None and stack.enable_termination_protection:
                return self.error(start_response, f"Stack [{name}] cannot be deleted while TerminationProtection is enabled")
        return self.app(environ, start_response)

    @staticmethod
    def error(start_response, message):
        answer = ("<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
                  f"<Message>{message}</Message></Error></ErrorResponse>").encode()
        start_response("400 Bad Request", [("Content-Type", "text/xml"), ("Content-Length", str(len(answer)))])
        return [answer]


def signed_headers(environ, authorization):
    """{name: value} of the headers an Authorization header says were signed."""
    names = authorization.split("SignedHeaders=", 1)[-1].split(",", 1)[0].split(";") \
        if "SignedHeaders=" in authorization else []
    values = {}
    for name in names:
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        values[name] = environ.get(key, "")
    return values


class Recorder:
    """Appends each request (who signed it, what it asked) to a JSON-lines file."""

    def __init__(self, app, path):
        self.app, self.path = app, path

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(("/moto-api", "/fluidity-test")):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            authorization = environ.get("HTTP_AUTHORIZATION", "")
            credential = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/") \
                if "Credential=" in authorization else [""]
            access_key = credential[0]
            scope = credential[3] if len(credential) > 3 else ""  # KEY/DATE/REGION/SERVICE/aws4_request
            entry = {
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("PATH_INFO"),
                "query": environ.get("QUERY_STRING", ""),
                "access_key": access_key,
                "scope": scope,
                "target": environ.get("HTTP_X_AMZ_TARGET", ""),
                "content_type": environ.get("CONTENT_TYPE", ""),
                "body": body.decode("utf-8", "replace"),
                # What a signature is recomputed from (tests/model_check.py):
                # the path as sent, the headers the request says it signed,
                # and the hash of the body's exact bytes.
                "raw_path": (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "").split("?", 1)[0],
                "authorization": authorization,
                "signed_headers": signed_headers(environ, authorization),
                "payload_sha256": hashlib.sha256(body).hexdigest(),
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")
        return self.app(environ, start_response)


class RoleNotUsableYet:
    """Refuses the next N UpdateAccount calls as API Gateway does a role IAM
    has not propagated yet (see 10. above)."""

    def __init__(self, app):
        self.app, self.remaining = app, 0

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        if path == "/fluidity-test/crash-next-tasks":
            CRASH_NEXT_TASKS[0] = int(urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("times", ["1"])[0])
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        if path == "/fluidity-test/role-not-usable-yet":
            self.remaining = int(urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("times", ["1"])[0])
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        if path == "/account" and method == "PATCH" and self.remaining > 0:
            self.remaining -= 1
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            body = json.dumps({"message": "The role ARN does not have required permissions set to API Gateway"})
            start_response("400 Bad Request", [("Content-Type", "application/json"),
                                               ("x-amzn-ErrorType", "BadRequestException")])
            return [body.encode()]
        return self.app(environ, start_response)


def stringify_container_sizes(value, inside_container=False):
    if isinstance(value, dict):
        for key, item in value.items():
            if inside_container and key in ("cpu", "memory") and isinstance(item, (int, float)):
                value[key] = str(item)
            elif key == "systemControls" and isinstance(item, list):
                for control in item:
                    if isinstance(control, dict) and isinstance(control.get("value"), (int, float)):
                        control["value"] = str(control["value"])
            else:
                stringify_container_sizes(item, inside_container or key == "containers")
    elif isinstance(value, list):
        for item in value:
            stringify_container_sizes(item, inside_container)
    return value


class EcsSizesAsStrings:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(ECS_TARGET):
            return self.app(environ, start_response)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        try:
            body = json.dumps(stringify_container_sizes(json.loads(body))).encode()
        except ValueError:
            pass
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--recorded-drift", metavar="DIR")
    parser.add_argument("--record", metavar="FILE")
    args = parser.parse_args()
    app = RoleNotUsableYet(TerminationProtection(EcsSizesAsStrings(DomainDispatcherApplication(create_backend_app))))
    if args.recorded_drift:
        app = RecordedDrift(app, args.recorded_drift)
    if args.record:
        app = Recorder(app, args.record)
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
