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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.loader.reconciler import RECONCILE_DEFERRED
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


# migrate runs inside the VPC, synchronously: a long ALTER TABLE of a big table may take most of
# the function's 15 minutes. The deploy step's client waits that long and then some (botocore's
# 60 s read timeout cut it short before), and never sends it again (botocore's retries invoked a
# migration that was still running a second time): one attempt, an answer or a clear error.
INVOKE_READ_MARGIN_SECONDS = 60


def function_timeout(lambda_client: Any, function_name: str) -> int:
    """The function's configured timeout in seconds."""
    return int(lambda_client.get_function_configuration(FunctionName=function_name)["Timeout"])


def migrate_client(session: Any, timeout_seconds: int) -> Any:
    """A Lambda client that waits for a migrate function of `timeout_seconds`, and does not retry.
    TCP keep-alives keep a long wait from being cut by a middlebox in between."""
    from botocore.config import Config

    config = Config(
        connect_timeout=10,
        read_timeout=timeout_seconds + INVOKE_READ_MARGIN_SECONDS,
        retries={"total_max_attempts": 1, "mode": "standard"},
        tcp_keepalive=True,
    )
    return session.client("lambda", config=config)


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


# The last step of a deploy: the reconciler, asked at once rather than at its next scheduled run.
# Objects the loader left unloaded because this release's schema or command version was not there
# yet (deferred) load as soon as migrate has run. The event is shaped like the EventBridge event
# of the schedule (chalice's CloudWatchEvent reads every one of these keys), from source
# `sluice.deploy`, with its request in `detail`.
RECONCILE_FUNCTION = "reconcile_writes"
DEPLOY_EVENT_SOURCE = "sluice.deploy"


def reconcile_event(account_id: str, region: str, now: datetime) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Reconcile deferred objects",
        "source": DEPLOY_EVENT_SOURCE,
        "account": account_id,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [],
        "detail": dict(RECONCILE_DEFERRED),  # the request reconcile_writes answers with reconcile_deferred
    }


def reconcile_call(function_name: str, event: Mapping[str, Any]) -> Call:
    """An asynchronous invocation: the deploy does not wait for the reconciler's run."""
    return Call(
        "invoke",
        {"FunctionName": function_name, "InvocationType": "Event", "Payload": json.dumps(event).encode("utf-8")},
    )
