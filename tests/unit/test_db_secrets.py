"""Credentials from AWS Secrets Manager (DATABASE_SECRET_ARN), with moto: fetched once per process
and cached, boto3 imported only when first needed, asked again once when a login is refused as
access denied (a rotated password), and never printed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pymysql
import pytest
from moto import mock_aws

from chalicelib.db.database import MySQLDatabase, open_master, open_reader
from chalicelib.db.secrets import Credentials, SecretCredentials, parse_secret, secret_credentials
from chalicelib.db.urls import parse_db_url
from chalicelib.errors import DatabaseUnavailable
from tests.unit.test_db_urls import FakeConnection, Recorder

REGION = "us-east-1"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def make_secret(client: Any, **value: Any) -> str:
    body = {"engine": "mysql", "username": "app", "password": "pw-1", **value}
    return str(client.create_secret(Name="sluice/db", SecretString=json.dumps(body))["ARN"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_secret_is_fetched_once_and_cached(secrets):
    arn = make_secret(secrets, host="db.internal", port=3310, dbname="sluice")
    source = SecretCredentials(arn, client=secrets)
    assert source.get() == Credentials("app", "pw-1", "db.internal", 3310, "sluice")
    assert source.get() is source.get()
    assert source.fetches == 1


def test_connections_use_the_secrets_login_and_the_urls_host(secrets):
    arn = make_secret(secrets, host="from-secret.internal", port=3310, dbname="secretdb")
    recorder = Recorder()
    source = SecretCredentials(arn, client=secrets)
    master = open_master(
        "mysql://ignored:ignored@db.internal/sluice?ssl=disabled", credentials=source, connect=recorder
    )
    master.query("SELECT 1")
    call = recorder.calls[0]
    assert (call["user"], call["password"], call["host"], call["port"], call["database"]) == (
        "app",
        "pw-1",
        "db.internal",
        3306,
        "sluice",
    )


def test_a_url_without_host_takes_host_port_and_dbname_from_the_secret(secrets):
    arn = make_secret(secrets, host="from-secret.internal", port=3310, dbname="secretdb")
    recorder = Recorder()
    db = open_reader("mysql:///?ssl=disabled", credentials=SecretCredentials(arn, client=secrets), connect=recorder)
    db.query("SELECT 1")
    call = recorder.calls[0]
    assert (call["host"], call["port"], call["database"]) == ("from-secret.internal", 3310, "secretdb")


def test_access_denied_refetches_once_and_connects_with_the_rotated_password(secrets):
    arn = make_secret(secrets)
    clock = Clock()
    source = SecretCredentials(arn, client=secrets, clock=clock)
    recorder = Recorder()

    def connect(**kwargs: Any) -> FakeConnection:
        recorder.calls.append(kwargs)
        if kwargs["password"] != current["password"]:
            raise pymysql.err.OperationalError(1045, "Access denied for user 'app'@'10.0.0.1' (using password: YES)")
        return FakeConnection(kwargs)

    current = {"password": "pw-1"}
    db = MySQLDatabase(parse_db_url("mysql://h/db?ssl=disabled"), credentials=source, connect=connect)
    db.query("SELECT 1")
    assert source.fetches == 1
    # the secret rotates; the kept connection dies; the next connect is refused with the old password
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": "app", "password": "pw-2"}))
    current["password"] = "pw-2"
    db.discard()
    clock.now += 3600
    db.query("SELECT 1")
    assert source.fetches == 2
    assert [c["password"] for c in recorder.calls] == ["pw-1", "pw-1", "pw-2"]


def test_a_wrong_password_does_not_hammer_secrets_manager(secrets):
    arn = make_secret(secrets)
    clock = Clock()
    source = SecretCredentials(arn, client=secrets, clock=clock, min_refresh_seconds=30)

    def connect(**kwargs: Any) -> FakeConnection:
        raise pymysql.err.OperationalError(1045, "Access denied")

    db = open_master("mysql://h/db?ssl=disabled", credentials=source, connect=connect)
    for _ in range(5):
        with pytest.raises(DatabaseUnavailable):
            db.query("SELECT 1")
    assert source.fetches == 1  # a refetch within 30 s of the last one is not made
    clock.now += 31
    with pytest.raises(DatabaseUnavailable):
        db.query("SELECT 1")
    assert source.fetches == 2  # one more, and it brought nothing new: no second login attempt


def test_other_login_errors_do_not_refetch(secrets):
    arn = make_secret(secrets)
    source = SecretCredentials(arn, client=secrets, min_refresh_seconds=0)

    def connect(**kwargs: Any) -> FakeConnection:
        raise pymysql.err.OperationalError(2003, "Can't connect")

    with pytest.raises(DatabaseUnavailable):
        open_master("mysql://h/db?ssl=disabled", credentials=source, connect=connect).query("SELECT 1")
    assert source.fetches == 1


def test_an_unreadable_secret_is_database_unavailable(secrets):
    source = SecretCredentials("arn:aws:secretsmanager:us-east-1:123456789012:secret:missing", client=secrets)
    with pytest.raises(DatabaseUnavailable, match="cannot read the database secret"):
        source.get()


@pytest.mark.parametrize(
    "text",
    [
        '{"password": "s3cret-value"}',
        '{"username": "app"}',
        "not json s3cret-value",
        "[]",
        '{"username": "a", "password": "s3cret-value", "port": "x"}',
    ],
)
def test_a_malformed_secret_is_a_value_error_that_does_not_echo_it(text):
    with pytest.raises(ValueError) as caught:
        parse_secret(text)
    assert "s3cret-value" not in str(caught.value)


def test_credentials_never_print_the_password():
    assert "pw-1" not in repr(Credentials("app", "pw-1", "h"))


def test_one_source_per_secret_per_process():
    assert secret_credentials("arn:x") is secret_credentials("arn:x")
    assert secret_credentials("arn:x") is not secret_credentials("arn:y")


def test_boto3_is_imported_only_when_the_secret_is_first_needed():
    code = (
        "import sys\n"
        "from chalicelib.db.database import open_master\n"
        "db = open_master('mysql://h/db', 'arn:aws:secretsmanager:us-east-1:1:secret:x')\n"
        "print('boto3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_build_shares_one_secret_source_between_the_master_and_every_reader(tmp_path):
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    settings = Settings.from_env(
        {
            "DATABASE_URL": "mysql://master.internal/sluice",
            "REPLICA_URLS": "mysql://r1.internal/sluice,mysql://r2.internal/sluice",
            "DATABASE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:shared",
            "LOCAL_DATA_DIR": str(tmp_path),
        }
    )
    services = bootstrap.build(settings)
    databases = [services.master] + [reader.db for reader in services.reader.readers]  # type: ignore[attr-defined]
    assert len(databases) == 4  # master (loader), r1, r2, master (last-resort reader)
    assert len({id(db.credentials) for db in databases}) == 1  # type: ignore[attr-defined]
    assert services.master.local_infile and not databases[1].local_infile  # type: ignore[attr-defined]
