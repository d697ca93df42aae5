"""CloudFormation: create or update a stack and wait, read its outputs.

Parameters: the deploy step passes the ones it owns (Stage, ApiId, ...) and any the operator gives
(`--parameter KEY=VALUE`); every other parameter the stack already has keeps its previous value,
so a choice made once (AlarmEmail, EnableCache) survives later runs. A new stack takes the
template's defaults.

Templates: every create and update names its template by URL, uploaded first to the step's own
bucket (`upload_template`), whatever its size; `plan` refuses a template over CloudFormation's
inline limit that was not uploaded, so no path can send a large one inline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

TEMPLATE_BODY_LIMIT = 51_200  # bytes; a larger template must go through S3 (TemplateURL)
# RDS Multi-AZ with two replicas and a proxy takes the better part of an hour to create.
WAITER_CONFIG = {"Delay": 30, "MaxAttempts": 240}
NO_UPDATES = "No updates are to be performed"
FAILED_CREATE_STATES = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"})


class StackError(RuntimeError):
    """A stack could not be deployed; the message says why and what to do."""


@dataclass(frozen=True)
class StackSpec:
    name: str
    template_body: str
    parameters: Mapping[str, str]
    capabilities: tuple[str, ...] = ()
    termination_protection: bool = False
    tags: Mapping[str, str] | None = None
    template_url: str | None = None  # set by upload_template: every stack is deployed from S3

    @property
    def too_large(self) -> bool:
        return len(self.template_body.encode("utf-8")) > TEMPLATE_BODY_LIMIT


def describe(cfn: Any, name: str) -> dict[str, Any] | None:
    """The stack's description, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationError" and "does not exist" in str(exc):
            return None
        raise
    return stacks[0] if stacks else None


def outputs(stack: Mapping[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def template_section(body: str, section: str) -> dict[str, Any]:
    """One top-level section of a template (`Parameters`, `Outputs`), short intrinsic tags
    tolerated (a SafeLoader: no arbitrary objects)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", any_tag)
    document = yaml.load(body, Loader=Loader) or {}
    return dict(document.get(section) or {})


def stack_parameters(spec: StackSpec, existing: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The Parameters argument: ours and the operator's; the rest keep their previous values, as
    long as the template still declares them (a parameter a newer template dropped is not passed:
    CloudFormation refuses a parameter the template does not have)."""
    given = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(spec.parameters.items())]
    if existing is None:
        return given
    declared = set(template_section(spec.template_body, "Parameters"))
    previous = sorted(p["ParameterKey"] for p in existing.get("Parameters", []))
    kept = [
        {"ParameterKey": k, "UsePreviousValue": True} for k in previous if k not in spec.parameters and k in declared
    ]
    return given + kept


def plan(cfn: Any, spec: StackSpec) -> tuple[str, dict[str, Any] | None]:
    """("create" | "update", the existing stack or None). Raises StackError for a stuck stack."""
    if spec.too_large and not spec.template_url:
        raise StackError(
            f"{spec.name}: the template is over {TEMPLATE_BODY_LIMIT} bytes; deploy it from S3 (TemplateURL)"
        )
    existing = describe(cfn, spec.name)
    if existing is None:
        return "create", None
    status = existing["StackStatus"]
    if status in FAILED_CREATE_STATES:
        raise StackError(
            f"{spec.name} is {status}: its first creation failed; nothing it made is kept "
            f"(DeletionPolicy RetainExceptOnCreate, no protection yet). Recover: {recovery_commands(spec.name)}"
        )
    if status.endswith("_IN_PROGRESS"):
        raise StackError(f"{spec.name} is {status}; wait for it to finish and run the deploy again")
    return "update", existing


def deploy(cfn: Any, spec: StackSpec, log: Any = print) -> dict[str, str]:
    """Create or update the stack, wait for it, and return its outputs."""
    from botocore.exceptions import ClientError, WaiterError

    action, existing = plan(cfn, spec)
    source = {"TemplateURL": spec.template_url} if spec.template_url else {"TemplateBody": spec.template_body}
    request: dict[str, Any] = {
        "StackName": spec.name,
        **source,
        "Parameters": stack_parameters(spec, existing),
        "Capabilities": list(spec.capabilities),
        "Tags": [{"Key": k, "Value": v} for k, v in sorted((spec.tags or {}).items())],
    }
    if action == "create":
        # Protection comes after CREATE_COMPLETE: a protected stack cannot roll back and be
        # deleted, so a failed first creation could not simply be run again.
        log(f"creating stack {spec.name}")
        cfn.create_stack(**request, EnableTerminationProtection=False, OnFailure="ROLLBACK")
        waiter = "stack_create_complete"
    else:
        if spec.termination_protection and not (existing or {}).get("EnableTerminationProtection"):
            cfn.update_termination_protection(StackName=spec.name, EnableTerminationProtection=True)
        try:
            cfn.update_stack(**request)
        except ClientError as exc:
            if NO_UPDATES not in str(exc):
                raise
            log(f"stack {spec.name}: no changes")
            return outputs(existing or {})
        log(f"updating stack {spec.name}")
        waiter = "stack_update_complete"
    try:
        cfn.get_waiter(waiter).wait(StackName=spec.name, WaiterConfig=WAITER_CONFIG)
    except WaiterError as exc:
        reason = f"{spec.name}: {action} did not complete: {failure_reason(cfn, spec.name)}"
        if action == "create":
            reason += f". Nothing is protected yet and nothing is retained; recover: {recovery_commands(spec.name)}"
        raise StackError(reason) from exc
    if action == "create" and spec.termination_protection:
        cfn.update_termination_protection(StackName=spec.name, EnableTerminationProtection=True)
        log(f"stack {spec.name}: termination protection on")
    stack = describe(cfn, spec.name)
    return outputs(stack or {})


def recovery_commands(name: str, region: str | None = None) -> str:
    """What to run after a failed first creation (the stack is not protected yet)."""
    where = f" --region {region}" if region else ""
    return (
        f"aws cloudformation describe-stack-events --stack-name {name}{where} "
        f"--query \"StackEvents[?ends_with(ResourceStatus, 'FAILED')]\"; "
        f"aws cloudformation delete-stack --stack-name {name}{where}; "
        f"aws cloudformation wait stack-delete-complete --stack-name {name}{where}; "
        "then run the same make target again"
    )


def template_bucket(app_name: str, stage: str, account_id: str, region: str) -> str:
    return f"{app_name}-{stage}-templates-{account_id}-{region}"


def upload_template(s3: Any, bucket: str, region: str, spec: StackSpec, account_id: str) -> StackSpec:
    """The spec with its template in S3 (`TemplateURL`): every stack is deployed that way, whatever
    its size (CloudFormation takes at most TEMPLATE_BODY_LIMIT bytes inline). The bucket is the
    step's own, made on first use: private, objects expire after 30 days (CloudFormation keeps its
    own copy of a stack's template), and only this account's bucket is used (`ExpectedBucketOwner`:
    a bucket of that name in another account is refused, never written to). The key is the
    template's SHA-256, so an unchanged template is the same object."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account_id)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        if status != 404 and code not in ("404", "NoSuchBucket", "NotFound"):
            raise StackError(
                f"the template bucket {bucket} exists but is not this account's, or cannot be read ({code})"
            ) from exc
        _create_template_bucket(s3, bucket, region)
    body = spec.template_body.encode("utf-8")
    key = f"{spec.name}/{hashlib.sha256(body).hexdigest()}.yaml"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/yaml", ExpectedBucketOwner=account_id)
    return replace(spec, template_url=f"https://{bucket}.s3.{region}.amazonaws.com/{key}")


def _create_template_bucket(s3: Any, bucket: str, region: str) -> None:
    where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **where)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [{"ID": "expire", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 30}}]
        },
    )


def failure_reason(cfn: Any, name: str) -> str:
    """The first resource failure in the stack's recent events, for the error message."""
    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except Exception:  # noqa: BLE001 - the message is a courtesy; the failure is reported anyway
        return "see the stack's events"
    for event in reversed(events):
        if event.get("ResourceStatus", "").endswith("_FAILED"):
            return f"{event.get('LogicalResourceId')}: {event.get('ResourceStatusReason', '')}"
    return "see the stack's events"
