"""What the deploy step's last two steps invoke, run for real on the embedded database: the app's
`migrate` function (on a connection that waits for a long ALTER as long as the function may run)
and `reconcile_writes` with the event the deploy sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.config import Settings
from deploy import functions
from tests.functional.aws_fakes import build_services, command_line, stored_todo


@pytest.fixture
def local_services(tmp_path: Path) -> Iterator[Any]:
    yield build_services({"LOCAL_DATA_DIR": str(tmp_path)})
    bootstrap.reset()


def test_the_migrate_connection_waits_as_long_as_the_function_may_run():
    settings = Settings.from_env({"DATABASE_URL": "mysql://master.example:3306/sluice"})
    # 15 minutes left: each statement may take all but the margin (the loader's master waits 60 s)
    db = bootstrap.migration_master(settings, 900.0)
    assert db.read_timeout == 900.0 - bootstrap.MIGRATE_MARGIN_SECONDS  # type: ignore[attr-defined]
    assert bootstrap.migration_master(settings, 30.0).read_timeout == 60.0  # type: ignore[attr-defined]
    assert db.url.host == "master.example" and db.local_infile  # type: ignore[attr-defined]


def test_the_cli_migrate_waits_hours(monkeypatch, tmp_path, capsys):
    from chalicelib.cli import main

    opened: list[float] = []
    real = bootstrap.migration_master

    def watched(settings: Settings, seconds: float) -> Any:
        db = real(settings, seconds)
        opened.append(seconds)
        return db

    monkeypatch.setattr(bootstrap, "migration_master", watched)
    monkeypatch.setenv("LOCAL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["migrate"]) == 0  # the embedded SQLite database, really migrated
    assert opened == [bootstrap.MIGRATE_CLI_SECONDS] and bootstrap.MIGRATE_CLI_SECONDS >= 3600
    assert "migrated" in capsys.readouterr().out


def test_the_migrate_function_migrates_within_the_time_it_has(local_services, tmp_path, monkeypatch):
    from chalice.test import Client

    import app as app_module

    monkeypatch.setenv("LOCAL_DATA_DIR", str(tmp_path))
    with Client(app_module.app) as client:
        answer = client.lambda_.invoke("migrate", {}).payload
    assert answer == {"applied": []}  # the embedded schema is made on first use: nothing left to apply


def test_the_reconcile_the_deploy_asks_for_loads_what_is_missing(local_services, tmp_path):
    from chalice.test import Client

    import app as app_module

    # GIVEN an object left unloaded under writes/ (deferred, or its event lost)
    now = datetime.now(UTC)
    todo_id, line = command_line("left for the new release")
    folder = tmp_path / "writes" / f"{now:%Y/%m/%d/%H}"
    folder.mkdir(parents=True)
    (folder / "sluice-writes-1").write_bytes(line)

    # WHEN the reconciler gets the event the deploy's last step sends
    event = functions.reconcile_event("123456789012", "eu-west-1", now)
    call = functions.reconcile_call(
        "arn:aws:lambda:eu-west-1:123456789012:function:sluice-prod-reconcile_writes", event
    )
    assert call.params["InvocationType"] == "Event"
    with Client(app_module.app) as client:
        counts = client.lambda_.invoke("reconcile_writes", json.loads(call.params["Payload"])).payload

    # THEN it runs as on its schedule: the object is loaded
    assert counts["applied"] == 1 and counts["objects"] == 1
    assert stored_todo(local_services, "alice", todo_id)["title"] == "left for the new release"
