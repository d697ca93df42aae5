"""Helpers for the functional tests of the AWS adapters: moto with fake credentials, the
process-wide boto3 clients forgotten between tests, and services on SQLite wired to them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REGION = "us-east-1"
BUCKET = "sluice-writes-test"
STREAM = "sluice-writes-test"

FAKE_AWS_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def reset_aws_clients() -> None:
    from chalicelib import aws

    aws.reset_aws_clients()


def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region; nothing read from the machine's AWS configuration."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@contextmanager
def moto_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    from moto import mock_aws

    fake_aws_env(monkeypatch, tmp_path)
    reset_aws_clients()
    try:
        with mock_aws():
            yield
    finally:
        reset_aws_clients()


def boto_client(service: str) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION)


def make_bucket(s3: Any, bucket: str = BUCKET) -> None:
    s3.create_bucket(Bucket=bucket)


def make_stream(firehose: Any, bucket: str = BUCKET, stream: str = STREAM) -> None:
    """A Direct PUT delivery stream writing into `bucket` under writes/ (the layout we load)."""
    firehose.create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/sluice-firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "writes/",
            "ErrorOutputPrefix": "errors/",
            "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 60},
        },
    )


def put_object(s3: Any, key: str, body: bytes, bucket: str = BUCKET) -> str:
    """Store an object; returns its ETag without quotes."""
    return str(s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"'))


def command_line(
    title: str = "a todo", owner: str = "alice", todo_id: str | None = None, version: int = 1_700_000_000_000_000
) -> tuple[str, bytes]:
    """(id, one valid put command as it travels: JSON ending in a newline)."""
    from chalicelib.commands import make_command
    from chalicelib.models import validate_todo

    todo_id = todo_id or str(uuid.uuid4())
    command = make_command("put", "todos", owner, todo_id, version, str(uuid.uuid4()), validate_todo({"title": title}))
    return todo_id, command.to_line()


def build_services(env: Mapping[str, str], writer: Any = None) -> Any:
    """Services on SQLite from `env`, made current for the app (undo with bootstrap.reset())."""
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    built = bootstrap.build(Settings.from_env(dict(env)), writer=writer)
    bootstrap.use(built)
    return built


def stored_todo(services: Any, owner: str, todo_id: str) -> dict[str, Any] | None:
    row = services.reader.get_todo(owner, todo_id)
    return dict(row) if row is not None else None


def ledger_keys(services: Any) -> list[str]:
    return sorted(r[0] for r in services.master.query("SELECT object_key FROM ingest_batches"))


def lines_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(r["Data"]) for r in records]
