"""Lambda settings Chalice cannot make: log retention, the loader's asynchronous invocation config.

Lambda creates a function's log group on first use with no expiry; the deploy step creates each
function's group first (or finds it) and sets `LOG_RETENTION_DAYS`.

S3 invokes `load_writes` asynchronously. Lambda retries a failed invocation (at most twice) and
keeps a throttled one queued up to the maximum event age; after that the event goes to the
on-failure destination, the stage's SQS queue (data stack output `LoaderFailureQueueArn`). The
object itself stays in S3, so the reconciler or a replay loads it whatever happens to the event.
Lambda sends to the destination with the function's own role: policy-<stage>-loader.json allows
`sqs:SendMessage` on that queue and nothing else of SQS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deploy.apigateway import Call


@dataclass(frozen=True)
class AsyncInvokeConfig:
    function: str  # the Chalice function name (lambda_functions key), e.g. load_writes
    destination_output: str  # the data stack output naming the on-failure destination
    maximum_retry_attempts: int = 2  # Lambda's maximum
    maximum_event_age_seconds: int = 6 * 3600  # Lambda's maximum: throttled events wait, not drop

    def request(self, function_name: str, destination_arn: str) -> dict[str, Any]:
        return {
            "FunctionName": function_name,
            "MaximumRetryAttempts": self.maximum_retry_attempts,
            "MaximumEventAgeInSeconds": self.maximum_event_age_seconds,
            "DestinationConfig": {"OnFailure": {"Destination": destination_arn}},
        }


LOADER_ASYNC = AsyncInvokeConfig(function="load_writes", destination_output="LoaderFailureQueueArn")
ASYNC_CONFIGS: tuple[AsyncInvokeConfig, ...] = (LOADER_ASYNC,)


def current_async_config(lambda_client: Any, function_name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(lambda_client.get_function_event_invoke_config(FunctionName=function_name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise


def async_invoke_calls(
    lambda_client: Any, config: AsyncInvokeConfig, function_name: str, destination_arn: str
) -> list[Call]:
    """A put_function_event_invoke_config call (absolute values) when the function's differs."""
    wanted = config.request(function_name, destination_arn)
    have = current_async_config(lambda_client, function_name) or {}
    destinations = have.get("DestinationConfig") or {}
    same = (
        have.get("MaximumRetryAttempts") == wanted["MaximumRetryAttempts"]
        and have.get("MaximumEventAgeInSeconds") == wanted["MaximumEventAgeInSeconds"]
        and (destinations.get("OnFailure") or {}).get("Destination") == destination_arn
        and not (destinations.get("OnSuccess") or {}).get("Destination")
    )
    return [] if same else [Call("put_function_event_invoke_config", wanted)]


LOG_RETENTION_DAYS = 90


def log_group_name(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def log_retention_calls(logs: Any, function_names: list[str], days: int = LOG_RETENTION_DAYS) -> list[Call]:
    """create_log_group for a function without one, put_retention_policy where it differs."""
    existing: dict[str, Any] = {}
    for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix="/aws/lambda/"):
        for group in page.get("logGroups", []):
            existing[group["logGroupName"]] = group.get("retentionInDays")
    calls = []
    for function_name in function_names:
        name = log_group_name(function_name)
        if name not in existing:
            calls.append(Call("create_log_group", {"logGroupName": name}))
        if existing.get(name) != days:
            calls.append(Call("put_retention_policy", {"logGroupName": name, "retentionInDays": days}))
    return calls


class MigrationFailed(RuntimeError):
    """The migrate function answered with an error."""


def migrate_call(function_name: str) -> Call:
    return Call("invoke", {"FunctionName": function_name, "InvocationType": "RequestResponse", "Payload": b"{}"})


def run_migration(lambda_client: Any, function_name: str) -> Any:
    """Invoke the app's `migrate` function (inside the VPC) and return what it answered."""
    response = lambda_client.invoke(**migrate_call(function_name).params)
    payload = response["Payload"].read().decode("utf-8", "replace")
    if response.get("FunctionError"):
        raise MigrationFailed(f"{function_name} failed: {payload[:500]}")
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        return payload
