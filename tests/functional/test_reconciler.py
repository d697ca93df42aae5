"""The scheduled reconciler and the CLI's `replay --bucket` / `load s3://...` over a moto bucket:
every object under writes/ missing from the ledger is loaded, by hour, bounded per run and
resumable; the CLI prints one summary line and exits 0, 2 or 1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.cli import main
from chalicelib.errors import DatabaseUnavailable, ObjectUnavailable
from chalicelib.loader.hours import covering_prefixes
from chalicelib.loader.reconciler import reconcile
from chalicelib.loader.sources import S3ObjectStore
from tests.functional.aws_fakes import (
    BUCKET,
    boto_client,
    build_services,
    command_line,
    ledger_keys,
    put_object,
    stored_todo,
)


def make_services(local_dir: Path, **env: str) -> Any:
    return build_services({"LOCAL_DATA_DIR": str(local_dir), "WRITES_BUCKET": BUCKET, **env})


def hour_key(hour: datetime, name: str) -> str:
    return f"writes/{hour:%Y/%m/%d/%H}/{name}"


def add_object(s3: Any, key: str, title: str) -> tuple[str, str, bytes]:
    """(todo id, etag, body) of a one-command object stored at key."""
    todo_id, line = command_line(title)
    return todo_id, put_object(s3, key, line), line


def preload(services: Any, key: str, etag: str, body: bytes) -> None:
    result = services.loader.load(BUCKET, key, etag, body)
    assert result.applied == 1


def loads_of(services: Any) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in services.master.query("SELECT object_key, loads FROM ingest_batches")}


def emf_records(captured: str, metric: str) -> list[dict[str, Any]]:
    out = []
    for line in captured.splitlines():
        if line.startswith("{") and metric in line:
            record = json.loads(line)
            if metric in record:
                out.append(record)
    return out


# -- the scheduled run ----------------------------------------------------------------------------
def test_scheduled_run_loads_exactly_the_objects_missing_from_the_ledger(
    s3, bucket_services, monkeypatch, capsys, lambda_timeouts
):
    from chalice.test import Client

    import app as app_module

    now = datetime.now(UTC)
    # GIVEN objects in four hours, two of them already loaded, and one outside writes/
    objects = {
        hour_key(now - timedelta(hours=offset), f"obj-{offset}-{n}"): f"todo {offset}/{n}"
        for offset in (5, 3, 1, 0)
        for n in (1, 2)
    }
    stored = {key: add_object(s3, key, title) for key, title in objects.items()}
    already = sorted(objects)[1:3]
    for key in already:
        preload(bucket_services, key, *stored[key][1:])
    put_object(s3, "errors/2024/05/01/10/not-ours", command_line("error output")[1])
    monkeypatch.setenv("SLUICE_LOG", "1")

    with Client(app_module.app) as client:
        event = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
        counts = client.lambda_.invoke("reconcile_writes", event).payload

    # THEN the six missing ones are loaded, once each, and the two known ones are not read again
    assert counts["applied"] == 6 and counts["objects"] == 6
    assert counts["skipped"] == 2 and counts["left"] == 0 and counts["failed"] == 0
    assert ledger_keys(bucket_services) == sorted(objects)
    assert set(loads_of(bucket_services).values()) == {1}
    for key, title in objects.items():
        assert stored_todo(bucket_services, "alice", stored[key][0])["title"] == title
    out = capsys.readouterr().out
    backlog = emf_records(out, "ReconcilerBacklog")
    assert [r["ReconcilerBacklog"] for r in backlog] == [0]
    assert backlog[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Sluice"
    # AND one load line with the loader's metrics per object loaded, marked as the reconciler's
    loads = emf_records(out, "RecordsApplied")
    assert sorted(r["key"] for r in loads) == sorted(set(objects) - set(already))
    assert {(r["type"], r["source"], r["RecordsApplied"]) for r in loads} == {("load", "reconcile", 1)}
    assert all(r["ObjectLagSeconds"] >= 0 for r in loads)


def test_the_bound_leaves_the_rest_for_the_next_run_oldest_first(s3, local_dir, monkeypatch, capsys):
    from chalicelib import bootstrap
    from chalicelib.loader.reconciler import reconcile_recent

    services = make_services(local_dir, RECONCILE_MAX_OBJECTS="2")
    now = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    keys = [hour_key(now - timedelta(hours=h), f"obj-{n}") for n, h in enumerate((6, 6, 4, 2, 0))]
    for n, key in enumerate(keys):
        add_object(s3, key, f"todo {n}")
    monkeypatch.setenv("SLUICE_LOG", "1")
    try:
        runs = [reconcile_recent(services, now=now) for _ in range(4)]
    finally:
        bootstrap.reset()

    assert [r["objects"] for r in runs] == [2, 2, 1, 0]
    assert [r["left"] for r in runs] == [3, 1, 0, 0]
    assert [r["skipped"] for r in runs] == [0, 2, 4, 5]
    backlog = [r["ReconcilerBacklog"] for r in emf_records(capsys.readouterr().out, "ReconcilerBacklog")]
    assert backlog == [3, 1, 0, 0]
    assert set(loads_of(services)) == set(keys)
    assert set(loads_of(services).values()) == {1}


def test_oldest_objects_are_loaded_first(s3, local_dir):
    from chalicelib import bootstrap
    from chalicelib.loader.reconciler import reconcile_recent

    services = make_services(local_dir, RECONCILE_MAX_OBJECTS="2")
    now = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    keys = [hour_key(now - timedelta(hours=h), "obj") for h in (20, 7, 1)]
    for key in keys:
        add_object(s3, key, "t")
    try:
        reconcile_recent(services, now=now)
    finally:
        bootstrap.reset()
    assert ledger_keys(services) == keys[:2]


def test_an_unreadable_object_does_not_stop_the_run(s3, bucket_services):
    hour = datetime(2024, 5, 1, 10, tzinfo=UTC)
    keys = [hour_key(hour, name) for name in ("a", "b-unreadable", "c")]
    for key in keys:
        add_object(s3, key, key)

    class Flaky(S3ObjectStore):
        def open(self, key: str) -> Any:
            if "unreadable" in key:
                raise ObjectUnavailable(f"cannot read {key}")
            return super().open(key)

    report = reconcile(Flaky(boto_client("s3"), BUCKET), bucket_services.loader, [hour_key(hour, "")])
    assert (report.result.objects, report.failed, report.left) == (2, 1, 1)
    assert ledger_keys(bucket_services) == [keys[0], keys[2]]

    # the next run, with S3 answering, loads what was left
    again = reconcile(S3ObjectStore(boto_client("s3"), BUCKET), bucket_services.loader, [hour_key(hour, "")])
    assert (again.result.objects, again.result.skipped, again.failed) == (1, 2, 0)


def test_an_unreachable_bucket_fails_the_scheduled_run(s3, local_dir, monkeypatch, capsys):
    from chalicelib import bootstrap
    from chalicelib.loader.reconciler import reconcile_recent

    services = make_services(local_dir, WRITES_BUCKET="no-such-bucket")
    monkeypatch.setenv("SLUICE_LOG", "1")
    try:
        with pytest.raises(ObjectUnavailable, match="no-such-bucket"):
            reconcile_recent(services, now=datetime(2024, 5, 1, 12, tzinfo=UTC))
    finally:
        bootstrap.reset()
    assert [r["ReconcilerFailures"] for r in emf_records(capsys.readouterr().out, "ReconcilerFailures")] == [1]


# -- replay and load through the CLI --------------------------------------------------------------
@pytest.fixture
def cli_env(s3, local_dir, monkeypatch) -> Path:
    """The CLI reads its settings from the environment: the same SQLite file as `bucket_services`."""
    monkeypatch.setenv("LOCAL_DATA_DIR", str(local_dir))
    for name in ("DATABASE_URL", "REPLICA_URLS", "WRITE_TRANSPORT", "FIREHOSE_STREAM", "WRITES_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    return local_dir


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_loads_an_hour_range(s3, cli_env, bucket_services, capsys):
    base = datetime(2024, 5, 1, 8, tzinfo=UTC)
    keys = {h: hour_key(base + timedelta(hours=h), f"obj-{h}") for h in range(5)}  # 08:00 to 12:00
    stored = {h: add_object(s3, key, f"hour {h}") for h, key in keys.items()}
    preload(bucket_services, keys[2], *stored[2][1:])  # 10:00 is already in the ledger
    put_object(s3, hour_key(base + timedelta(hours=3), "bad-line"), b"this is not a command\n")

    code, out, err = run(["replay", "--bucket", BUCKET, "--since", "2024-05-01T09", "--until", "2024-05-01T11"], capsys)

    assert (code, err) == (0, "")
    assert out == "applied=2 stale=0 rejected=1 skipped=1 deferred=0\n"
    assert stored_todo(bucket_services, "alice", stored[0][0]) is None  # 08:00: before the range
    assert stored_todo(bucket_services, "alice", stored[4][0]) is None  # 12:00: after it
    for h in (1, 2, 3):
        assert stored_todo(bucket_services, "alice", stored[h][0])["title"] == f"hour {h}"

    # a second replay finds everything in the ledger; --force applies again and changes nothing newer
    assert run(["replay", "--bucket", BUCKET, "--since", "2024-05-01T09", "--until", "2024-05-01T11"], capsys)[1] == (
        "applied=0 stale=0 rejected=0 skipped=4 deferred=0\n"
    )
    forced = run(
        ["replay", "--bucket", BUCKET, "--since", "2024-05-01T09", "--until", "2024-05-01T11", "--force"], capsys
    )
    assert forced[:2] == (0, "applied=0 stale=3 rejected=1 skipped=0 deferred=0\n")


def test_replay_prints_only_its_summary_line_even_with_the_json_log_on(
    s3, cli_env, bucket_services, capsys, monkeypatch
):
    add_object(s3, "writes/2024/05/01/10/one", "one")
    monkeypatch.setenv("SLUICE_LOG", "1")
    code, out, err = run(["replay", "--bucket", BUCKET, "--since", "2024-05-01T10", "--until", "2024-05-01T10"], capsys)
    assert (code, out, err) == (0, "applied=1 stale=0 rejected=0 skipped=0 deferred=0\n", "")


def test_replay_with_another_prefix(s3, cli_env, bucket_services, capsys):
    todo_id, _, _ = add_object(s3, "archive/writes/2024/05/01/10/moved", "moved")
    code, out, _ = run(["replay", "--bucket", BUCKET, "--prefix", "archive/writes", "--since", "2024-05-01T10"], capsys)
    assert (code, out) == (0, "applied=1 stale=0 rejected=0 skipped=0 deferred=0\n")
    assert stored_todo(bucket_services, "alice", todo_id)["title"] == "moved"


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--bucket", BUCKET, "--since", "2024-05-01"],
        ["replay", "--bucket", BUCKET, "--since", "2024-05-01T25"],
        ["replay", "--bucket", BUCKET, "--since", "2024-05-01T12", "--until", "2024-05-01T11"],
        ["replay", "--bucket", BUCKET, "--until", "2024-05-01T11"],
        ["replay", "--since", "2024-05-01T11"],
        ["replay", "--bucket", BUCKET, "--local", "--since", "2024-05-01T11"],
        ["replay", "--bucket", "", "--since", "2024-05-01T11"],
        ["load", "s3://only-a-bucket"],
        ["load"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(cli_env, capsys, argv):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")


def test_an_unreachable_bucket_exits_1_with_one_line(cli_env, bucket_services, capsys):
    code, out, err = run(["replay", "--bucket", "no-such-bucket", "--since", "2024-05-01T10"], capsys)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("error: ") and "no-such-bucket" in err
    assert "Traceback" not in err


def test_load_an_s3_object(s3, cli_env, bucket_services, capsys):
    key = hour_key(datetime(2024, 5, 1, 10, tzinfo=UTC), "a b+c")
    todo_id, etag, _ = add_object(s3, key, "loaded by hand")

    assert run(["load", f"s3://{BUCKET}/{key}"], capsys)[:2] == (
        0,
        "applied=1 stale=0 rejected=0 skipped=0 deferred=0\n",
    )
    assert stored_todo(bucket_services, "alice", todo_id)["title"] == "loaded by hand"
    assert ledger_keys(bucket_services) == [key]
    assert run(["load", f"s3://{BUCKET}/{key}"], capsys)[:2] == (
        0,
        "applied=0 stale=0 rejected=0 skipped=1 deferred=0\n",
    )
    assert run(["load", "--force", f"s3://{BUCKET}/{key}"], capsys)[:2] == (
        0,
        "applied=0 stale=1 rejected=0 skipped=0 deferred=0\n",
    )


def test_load_a_missing_s3_object_exits_1(s3, cli_env, bucket_services, capsys):
    code, out, err = run(["load", f"s3://{BUCKET}/writes/2024/05/01/10/absent"], capsys)
    assert (code, out) == (1, "")
    assert err == f"error: no such object: s3://{BUCKET}/writes/2024/05/01/10/absent\n"


# -- the prefixes a replay lists --------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    since=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    span=st.integers(min_value=0, max_value=30_000),
    probe=st.integers(min_value=-200, max_value=30_200),
)
def test_covering_prefixes_hold_exactly_the_hours_of_the_range(since, span, probe):
    since = since.replace(tzinfo=UTC)
    until = since + timedelta(hours=span)
    prefixes = list(covering_prefixes("writes/", since, until))
    assert prefixes == sorted(set(prefixes))  # oldest first, none twice
    hour = since.replace(minute=0, second=0, microsecond=0) + timedelta(hours=probe)
    key = f"writes/{hour:%Y/%m/%d/%H}/object"
    covered = sum(key.startswith(p) for p in prefixes)
    assert covered == (1 if 0 <= probe <= span else 0)


def test_a_poisoned_object_is_left_by_the_scheduled_run_and_counted_in_its_metric(s3, local_dir, monkeypatch, capsys):
    from chalicelib import bootstrap
    from chalicelib.loader.attempts import MAX_FAILED
    from chalicelib.loader.reconciler import reconcile_recent

    services = make_services(local_dir)
    now = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    keys = [hour_key(now, "good"), hour_key(now, "poison")]
    for key in keys:
        add_object(s3, key, key)
    applier = services.loader.applier
    real = applier.apply_folded

    def buggy_on_poison(cur: Any, folded: Any, changes: Any = None) -> Any:  # a bug only one object meets
        if any("poison" in str(c.data) for c in folded.winners.values()):
            raise RuntimeError("applier bug")
        return real(cur, folded, changes)

    monkeypatch.setattr(applier, "apply_folded", buggy_on_poison)
    monkeypatch.setenv("SLUICE_LOG", "1")
    try:
        runs = [reconcile_recent(services, now=now) for _ in range(MAX_FAILED + 1)]
    finally:
        bootstrap.reset()
    assert [(r["objects"], r["failed"], r["poisoned"]) for r in runs] == [(1, 1, 0), (0, 1, 0), (0, 1, 0), (0, 0, 1)]
    assert [r["left"] for r in runs] == [1, 1, 1, 0]  # a poisoned object is not backlog: it has its own alarm
    out = capsys.readouterr().out
    assert [r["PoisonedObjects"] for r in emf_records(out, "PoisonedObjects")] == [0, 0, 1, 1]
    assert ledger_keys(services) == [keys[0]]


# -- the backlog, whatever happens; the time budget ---------------------------------------------
class FakeContext:
    """A Lambda context whose remaining time the test sets (`left`, in seconds)."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.left * 1000)


def test_a_run_whose_database_is_down_fails_and_still_reports_its_backlog(s3, local_dir, tmp_path, monkeypatch, capsys):
    from chalicelib import bootstrap
    from chalicelib.loader.reconciler import reconcile_recent

    # GIVEN three objects under writes/ in the lookback, and a database that cannot be opened
    now = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    for hours, name in ((30, "a"), (2, "b"), (0, "c")):
        add_object(s3, hour_key(now - timedelta(hours=hours), name), name)
    add_object(s3, hour_key(now - timedelta(hours=49), "before-the-lookback"), "old")
    down = tmp_path / "down.sqlite3"
    down.mkdir()
    services = make_services(local_dir, DATABASE_URL=f"sqlite:///{down}")
    monkeypatch.setenv("SLUICE_LOG", "1")

    # WHEN the scheduled run finds the ledger unreadable
    try:
        with pytest.raises(DatabaseUnavailable):
            reconcile_recent(services, now=now)
    finally:
        bootstrap.reset()

    # THEN it fails (the Errors alarm) and still reports every object it could not check as
    # backlog: an upper bound, the ledger being unreadable
    [record] = emf_records(capsys.readouterr().out, "ReconcilerBacklog")
    assert record["ReconcilerBacklog"] == 3 and record["unchecked"] == 3
    assert record["ReconcilerFailures"] == 1 and record["ReconcilerStopped"] == 1
    assert record["stopped"] == "database"
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Stage"]]


def test_a_database_lost_mid_run_counts_the_checked_hour_as_left_and_the_rest_as_unchecked(
    s3, bucket_services, monkeypatch
):
    from chalicelib.loader.reconcile_report import ReconcileReport

    hour = datetime(2024, 5, 1, 10, tzinfo=UTC)
    first = [hour_key(hour, name) for name in ("a", "b", "c")]
    later = [hour_key(hour + timedelta(hours=1), name) for name in ("d", "e")]
    for key in first + later:
        add_object(s3, key, key)
    real = bucket_services.loader.load
    loads: list[str] = []

    def load_then_lose_the_database(bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        loads.append(key)
        if len(loads) > 1:
            raise DatabaseUnavailable("lost connection")
        return real(bucket, key, *args, **kwargs)

    monkeypatch.setattr(bucket_services.loader, "load", load_then_lose_the_database)
    report = ReconcileReport()
    with pytest.raises(DatabaseUnavailable):
        reconcile(
            S3ObjectStore(boto_client("s3"), BUCKET),
            bucket_services.loader,
            [hour_key(hour, ""), hour_key(hour + timedelta(hours=1), "")],
            report=report,
            count_on=True,
        )
    # one loaded; the one that failed and the one after it were found missing; the next hour was
    # listed but could not be checked
    assert loads == first[:2]
    assert (report.result.objects, report.left, report.unchecked, report.backlog) == (1, 2, 2, 4)
    assert report.stopped == "database"


def test_the_cli_walk_still_stops_at_once_when_the_database_fails(s3, bucket_services, monkeypatch):
    hour = datetime(2024, 5, 1, 10, tzinfo=UTC)
    for name in ("a", "b"):
        add_object(s3, hour_key(hour, name), name)
    listed: list[str] = []
    store = S3ObjectStore(boto_client("s3"), BUCKET)
    real_list = store.list

    def listing(prefix: str) -> Any:
        listed.append(prefix)
        return real_list(prefix)

    monkeypatch.setattr(store, "list", listing)
    monkeypatch.setattr(
        bucket_services.loader, "load", lambda *a, **k: (_ for _ in ()).throw(DatabaseUnavailable("down"))
    )
    with pytest.raises(DatabaseUnavailable):
        reconcile(store, bucket_services.loader, [hour_key(hour, ""), hour_key(hour + timedelta(hours=1), "")])
    assert listed == [hour_key(hour, "")]  # a replay of months does not list them all before it fails


def test_the_run_stops_loading_with_its_margin_and_leaves_the_rest_untouched(s3, local_dir, monkeypatch, capsys):
    from chalicelib import bootstrap
    from chalicelib.loader.budget import Budget
    from chalicelib.loader.reconciler import reconcile_recent

    # GIVEN ten missing objects, and an invocation with 840 s whose loads take 100 s each
    now = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    keys = [hour_key(now - timedelta(hours=2), f"obj-{n:02d}") for n in range(10)]
    for key in keys:
        add_object(s3, key, key)
    services = make_services(local_dir)
    context = FakeContext(840.0)
    real = services.loader.load

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        context.left -= 100.0
        return real(*args, **kwargs)

    monkeypatch.setattr(services.loader, "load", slow_load)
    monkeypatch.setenv("SLUICE_LOG", "1")
    try:
        counts = reconcile_recent(services, now=now, context=context)
        # THEN a load starts only with twice the longest load (200 s) left before the margin:
        # six loads (840 - 6 x 100 = 240 s left, 180 s before the margin)
        assert (counts["objects"], counts["left"], counts["unchecked"]) == (6, 4, 0)
        assert context.left == 840.0 - 6 * 100.0 >= Budget.MARGIN_SECONDS
        [record] = emf_records(capsys.readouterr().out, "ReconcilerBacklog")
        assert (record["ReconcilerBacklog"], record["ReconcilerStopped"], record["stopped"]) == (4, 1, "time")
        assert record["remaining_seconds"] == 240.0
        # AND the objects it left were never begun: no attempt recorded, nothing toward poisoning
        assert services.master.query("SELECT COUNT(*) FROM ingest_attempts") == [(0,)]
        assert ledger_keys(services) == keys[:6]

        # WHEN the next run has its whole time again, it loads the rest
        again = reconcile_recent(services, now=now, context=FakeContext(840.0))
        assert (again["objects"], again["skipped"], again["left"]) == (4, 6, 0)
    finally:
        bootstrap.reset()
    assert ledger_keys(services) == keys


def test_with_only_its_margin_left_the_run_reads_no_more_ledger(s3, bucket_services, monkeypatch):
    from chalicelib.loader.budget import Budget
    from chalicelib.loader.reconcile_report import ReconcileReport

    hour = datetime(2024, 5, 1, 10, tzinfo=UTC)
    for n in range(3):
        add_object(s3, hour_key(hour + timedelta(hours=n), "obj"), f"todo {n}")
    reads: list[int] = []
    real = bucket_services.loader.loaded_ids
    monkeypatch.setattr(bucket_services.loader, "loaded_ids", lambda ids: reads.append(len(ids)) or real(ids))
    report = ReconcileReport()
    reconcile(
        S3ObjectStore(boto_client("s3"), BUCKET),
        bucket_services.loader,
        [hour_key(hour + timedelta(hours=n), "") for n in range(3)],
        budget=Budget(lambda: int(Budget.MARGIN_SECONDS * 1000)),
        report=report,
    )
    assert reads == [] and report.result.objects == 0
    assert (report.unchecked, report.backlog, report.stopped) == (3, 3, "time")


def test_the_budget_of_a_lambda_context():
    from chalicelib.loader.budget import Budget

    assert Budget.of(None) is None and Budget.of(object()) is None
    budget = Budget.of(FakeContext(300.0))
    assert budget is not None and budget.remaining() == 300.0
    assert budget.for_loads() == 300.0 - Budget.MARGIN_SECONDS and budget.may_start_load()
    budget.loaded(130.0)  # a load of 130 s: the next needs 260 s before the margin
    assert not budget.may_start_load() and not budget.spent()
    assert Budget(lambda: 59_000).spent()
