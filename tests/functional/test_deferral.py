"""Objects a loader cannot load yet are deferred whole, not rejected (CONTRACT sections 4 and 5).

A command whose `v` is newer than this release's leaves its whole object unloaded: nothing of it
applied, no ledger entry, no rejects, no attempt counted toward poisoning; it is counted
(`deferred=N`, the EMF metric `DeferredObjects`) and recorded with what it waits for, and the
reconciler leaves it alone until this release knows that version (here: SQLite, where the
embedded schema is always migrated; the schema side is tests/integration/test_upgrade.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.cli import main
from chalicelib.loader import deferral
from chalicelib.loader.attempts import MAX_FAILED
from chalicelib.loader.reconciler import reconcile_deferred, reconcile_recent
from chalicelib.resources import SCHEMA_VERSION
from tests.functional.aws_fakes import BUCKET, build_services, command_line, put_object

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
KEY = "writes/2026/01/01/12/newer-object"


def newer(line: bytes, v: int = SCHEMA_VERSION + 1) -> bytes:
    raw = json.loads(line)
    raw["v"] = v
    raw["data"]["colour"] = "a field this release does not know"
    return json.dumps(raw).encode() + b"\n"


def body_with_a_newer_line() -> bytes:
    _, first = command_line("applied if the object were loaded", todo_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a51")
    _, second = command_line("from a newer release", todo_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a52")
    return first + b"not json: a reject if the object were loaded\n" + newer(second)


def tables(services: Any) -> dict[str, int]:
    names = ("todos", "ingest_batches", "ingest_rejects", "ingest_deferrals")
    return {name: int(services.master.query(f"SELECT COUNT(*) FROM {name}")[0][0]) for name in names}


@pytest.fixture
def services(local_dir: Path) -> Any:
    from chalicelib import bootstrap

    yield build_services({"LOCAL_DATA_DIR": str(local_dir), "WRITES_BUCKET": BUCKET})
    bootstrap.reset()


def test_an_object_with_a_newer_version_is_left_whole_and_recorded(services: Any) -> None:
    body = body_with_a_newer_line()
    for _ in range(MAX_FAILED + 1):  # as often as an event is retried: never poisoned
        result = services.loader.load(BUCKET, KEY, "etag-1", body)
        assert (result.deferred, result.applied, result.rejected, result.skipped) == (1, 0, 0, 0)
    assert tables(services) == {"todos": 0, "ingest_batches": 0, "ingest_rejects": 0, "ingest_deferrals": 1}
    attempts, poisoned, error = services.master.query("SELECT attempts, poisoned_at, last_error FROM ingest_attempts")[
        0
    ]
    assert (attempts, poisoned) == (0, None) and error.startswith("deferred:")
    needs = services.master.query("SELECT object_key, needs_version, needs_level FROM ingest_deferrals")
    assert needs == [(KEY, SCHEMA_VERSION + 1, 0)]


def test_a_line_that_names_a_newer_version_is_deferred_whatever_else_it_holds(services: Any) -> None:
    odd = json.dumps({"v": SCHEMA_VERSION + 1, "op": "frobnicate", "colour": 1}).encode() + b"\n"
    result = services.loader.load(BUCKET, KEY, "etag-2", command_line()[1] + odd)
    assert result.deferred == 1 and tables(services)["todos"] == 0


@pytest.mark.parametrize("v", [0, -1, "2", 2.0, True, None])
def test_a_v_that_is_not_a_positive_integer_is_a_reject_not_a_deferral(services: Any, v: Any) -> None:
    raw = json.loads(command_line(todo_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a53")[1])
    raw["v"] = v
    result = services.loader.load(BUCKET, KEY, f"etag-{v!r}", command_line()[1] + json.dumps(raw).encode() + b"\n")
    assert (result.deferred, result.applied, result.rejected) == (0, 1, 1)
    (reason,) = [r[0] for r in services.master.query("SELECT reason FROM ingest_rejects")]
    assert reason.startswith("v must be a positive integer")


def test_load_prints_the_deferred_objects_and_exits_0(
    services: Any, local_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    path = tmp_path / "writes" / "2026" / "01" / "01" / "12" / "newer"
    path.parent.mkdir(parents=True)
    path.write_bytes(body_with_a_newer_line())
    ok = tmp_path / "writes" / "2026" / "01" / "01" / "12" / "ok"
    ok.write_bytes(command_line()[1])
    env = {"LOCAL_DATA_DIR": str(local_dir)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["load", str(path), str(ok)]) == 0
    assert capsys.readouterr().out.strip() == "applied=1 stale=0 rejected=0 skipped=0 deferred=1"


def test_the_reconciler_leaves_a_deferred_object_until_this_release_knows_its_version(
    s3: Any, services: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # GIVEN a deferred object in the bucket, and one more that loads
    etag = put_object(s3, KEY, body_with_a_newer_line())
    put_object(s3, "writes/2026/01/01/12/ordinary", command_line()[1])
    assert services.loader.load(BUCKET, KEY, etag, body_with_a_newer_line()).deferred == 1
    monkeypatch.setenv("SLUICE_LOG", "1")
    # WHEN the scheduled run comes, again and again THEN the deferred object is not read again
    opened: list[str] = []
    real_open = services.loader.load

    def counting_load(bucket: str, key: str, *rest: Any, **kw: Any) -> Any:
        opened.append(key)
        return real_open(bucket, key, *rest, **kw)

    monkeypatch.setattr(services.loader, "load", counting_load)
    runs = [reconcile_recent(services, hours=1, now=NOW) for _ in range(3)]
    assert [(r["applied"], r["waiting"], r["deferred"]) for r in runs] == [(1, 1, 0), (0, 1, 0), (0, 1, 0)]
    assert KEY not in opened
    assert reconcile_deferred(services, now=NOW)["deferred_objects"] == 0  # nothing it can load yet
    # AND once this release knows that version (as a newer loader would), the reconciler tries it
    monkeypatch.setattr(deferral, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    assert services.loader.deferrals.ready() == [(BUCKET, KEY, etag)]
    done = reconcile_deferred(services, now=NOW)
    assert done["deferred_objects"] == 1 and KEY in opened
    metrics = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"DeferredObjects"' in x]
    assert any(m["DeferredObjects"] == 1 and m["key"] == KEY for m in metrics)


def test_the_deploys_request_runs_the_deferred_objects_first(services: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalice.test import Client

    import app as app_module
    from chalicelib.loader import reconciler

    called: list[str] = []
    contexts: list[Any] = []

    def recorded(name: str) -> Any:
        def run(built: Any, context: Any = None) -> dict[str, int]:
            called.append(name)
            contexts.append(context)
            return {}

        return run

    monkeypatch.setattr(reconciler, "reconcile_deferred", recorded("deferred"))
    monkeypatch.setattr(reconciler, "reconcile_recent", recorded("recent"))
    with Client(app_module.app) as client:
        scheduled = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
        client.lambda_.invoke("reconcile_writes", scheduled)
        asked = client.events.generate_cw_event(
            "sluice.deploy", "Reconcile deferred objects", {"reconcile": "deferred"}, []
        )
        client.lambda_.invoke("reconcile_writes", asked)
    assert called == ["recent", "deferred"]
    # both runs get the invocation's Lambda context: one time budget for the whole invocation
    assert all(c is not None and c.get_remaining_time_in_millis() > 0 for c in contexts)


def test_the_oldest_deferred_object_is_reported_from_its_first_deferral(
    s3: Any, services: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    log = services.loader.deferrals
    assert log.oldest_age(NOW) == 0.0  # none deferred
    body = body_with_a_newer_line()
    etag = put_object(s3, KEY, body)
    # GIVEN an object first deferred at 10:00, and deferred again at 11:30 (an event's retry)
    for stamp in ("2026-01-01 10:00:00.000000", "2026-01-01 11:30:00.000000"):
        monkeypatch.setattr(deferral, "utc_now_stored", lambda stamp=stamp: stamp)
        assert services.loader.load(BUCKET, KEY, etag, body).deferred == 1
    # THEN at 12:00 it has waited two hours, since its first deferral
    assert log.oldest_age(NOW) == 7200.0
    # AND the scheduled run reports that age (the alarm's metric), with the stage
    monkeypatch.setenv("SLUICE_LOG", "1")
    reconcile_recent(services, hours=1, now=NOW)
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if "OldestDeferredObjectAgeSeconds" in x]
    assert line["OldestDeferredObjectAgeSeconds"] == 7200.0
    assert {"Stage"} == {d for ds in line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] for d in ds}
