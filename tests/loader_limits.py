"""Objects refused for their size, and poisoned objects (CONTRACT section 5): shared by the SQLite
(functional) and MariaDB (integration) tiers. `applier` None is the database's own applier."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.db.database import Database
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.loader.apply import Applier
from chalicelib.loader.attempts import MAX_FAILED, POISONED_QUERY, UNFINISHED
from chalicelib.loader.reconciler import reconcile
from chalicelib.loader.sources import LocalObjectStore

ROOT = Path(__file__).resolve().parent.parent
KEY = "writes/2027/01/15/08/object"
BASE = 1_800_000_000_000_000


def commands_body(count: int, version: int = BASE) -> bytes:
    return b"".join(
        make_command(
            "put",
            "todos",
            "alice",
            f"0190b2a0-0000-7000-8000-{n:012d}",
            version + n,
            f"0190b2a0-0000-7000-8001-{n:012d}",
            {"title": f"title {n}", "notes": "x" * 200},
        ).to_line()
        for n in range(count)
    )


def count(db: Database, table: str) -> int:
    return int(db.query(f"SELECT COUNT(*) FROM {table}")[0][0])


def load(loader: BatchLoader, body: bytes, force: bool = False) -> Any:
    return loader.load("bucket", KEY, local_etag(body), body, force=force)


# -- LOADER_MAX_OBJECT_BYTES -----------------------------------------------------------------------
def assert_an_object_over_the_limit_is_refused_whole(db: Database, applier: Applier | None, gzipped: bool) -> None:
    # GIVEN an object of 4,000 commands (1.1 MB inflated) and a limit of 600 kB: more than the
    # first pieces (256 KiB each) of it are read, and applied on the fast path, before the limit
    raw = commands_body(4000)
    body = gzip.compress(raw) if gzipped else raw
    loader = BatchLoader(db, applier, max_object_bytes=600_000)
    # WHEN it is loaded
    result = load(loader, body)
    # THEN nothing of it is applied; it is in the ledger with one reject (line 0, the reason)
    assert (result.applied, result.stale, result.rejected, result.skipped, result.too_large) == (0, 0, 1, 0, 1)
    assert count(db, "todos") == 0
    assert db.query("SELECT applied, stale, rejected FROM ingest_batches") == [(0, 0, 1)]
    ((line_no, reason, line),) = db.query("SELECT line_no, reason, line FROM ingest_rejects")
    assert (line_no, line) == (0, "") and "LOADER_MAX_OBJECT_BYTES" in reason and "600000" in reason
    assert count(db, "ingest_attempts") == 0  # not a failure: nothing left to retry
    # AND it is not retried for ever: the ledger skips it; --force refuses it again
    assert load(loader, body).skipped == 1
    assert load(loader, body, force=True).too_large == 1
    assert count(db, "ingest_rejects") == 1
    # AND under a larger limit (an operator's decision) it loads
    assert load(BatchLoader(db, applier, max_object_bytes=2_000_000), body, force=True).applied == 4000


def assert_many_rejects_and_a_limit_in_the_middle(db: Database, applier: Applier | None) -> None:
    # GIVEN commands and junk lines alternating, more junk than the fast path keeps in memory
    lines = commands_body(3000).splitlines(keepends=True)
    body = b"".join(line + b'{"v": 2, "n": %d}\n' % n for n, line in enumerate(lines))
    # WHEN it is loaded THEN every command applies and every junk line is a reject, in place
    result = load(BatchLoader(db, applier), body)
    assert (result.applied, result.rejected) == (3000, 3000)
    numbers = sorted(int(r[0]) for r in db.query("SELECT line_no FROM ingest_rejects"))
    assert numbers == list(range(2, 6001, 2))


# -- poisoned objects ------------------------------------------------------------------------------
class Failing(Applier):
    """An applier with a bug: every object fails."""

    def __init__(self) -> None:
        self.calls = 0

    def apply(self, cur: Any, commands: Any, changes: Any = None) -> tuple[int, int]:
        self.calls += 1
        raise RuntimeError("applier bug: cannot apply")


class Unreachable(Failing):
    def apply(self, cur: Any, commands: Any, changes: Any = None) -> tuple[int, int]:
        self.calls += 1
        raise DatabaseUnavailable("database down")


def poisoned(db: Database) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.query(POISONED_QUERY)]


def assert_a_failing_object_is_poisoned_after_three_attempts(db: Database, tmp_path: Path) -> None:
    body = commands_body(3)
    (tmp_path / "store" / KEY).parent.mkdir(parents=True)
    (tmp_path / "store" / KEY).write_bytes(body)
    store = LocalObjectStore(str(tmp_path / "store"), bucket="bucket")
    failing = Failing()
    loader = BatchLoader(db, failing)
    # GIVEN an object whose loads fail (a bug), by S3 events, the reconciler or by hand
    for attempt in range(1, MAX_FAILED + 1):
        assert poisoned(db) == []
        with pytest.raises(RuntimeError):
            load(loader, body)
        (attempts, last_error) = db.query("SELECT attempts, last_error FROM ingest_attempts")[0]
        assert (attempts, last_error) == (attempt, "RuntimeError: applier bug: cannot apply")
    # THEN after the third it is poisoned, with its last error, and loads leave it alone
    ((bucket, key, etag, attempts, last_error, _, poisoned_at),) = poisoned(db)
    assert (bucket, key, etag, attempts) == ("bucket", KEY, local_etag(body), MAX_FAILED)
    assert "applier bug" in last_error and poisoned_at is not None
    result = load(loader, body)
    assert (result.poisoned, result.applied, failing.calls) == (1, 0, MAX_FAILED)
    # AND the reconciler leaves it (not a failure, not a backlog), even once the bug is fixed
    report = reconcile(store, loader, ["writes/"], source=None)
    assert (report.poisoned, report.failed, report.left, failing.calls) == (1, 0, 0, MAX_FAILED)
    fixed = BatchLoader(db)
    assert reconcile(store, fixed, ["writes/"], source=None).poisoned == 1
    assert count(db, "todos") == 0
    # AND a forced replay after the fix loads it and clears the mark
    report = reconcile(store, fixed, ["writes/"], force=True, source=None)
    assert (report.poisoned, report.result.applied) == (0, 3)
    assert poisoned(db) == [] and count(db, "ingest_attempts") == 0


def assert_a_database_outage_does_not_poison(db: Database) -> None:
    body = commands_body(2)
    down = Unreachable()
    for _ in range(MAX_FAILED + 2):
        with pytest.raises(DatabaseUnavailable):
            load(BatchLoader(db, down), body)
    assert down.calls == MAX_FAILED + 2
    assert poisoned(db) == [] and db.query("SELECT attempts FROM ingest_attempts") == [(0,)]
    assert load(BatchLoader(db), body).applied == 2
    assert count(db, "ingest_attempts") == 0


def assert_the_runbook_query_lists_poisoned_objects(db: Database) -> None:
    runbook = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    assert " ".join(POISONED_QUERY.split()) in runbook, "docs/operations.md gives the query"
    assert re.search(r"python -m chalicelib\.cli replay .*--force", runbook)
    assert poisoned(db) == []


# -- loads killed part-way count -------------------------------------------------------------------
KILLED = """
import os, signal, sys
from chalicelib.loader import apply
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
apply.SqlApplier.apply_folded = killed
from chalicelib.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(database_url: str, tmp: Path, *args: str, killed: bool = False) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOCAL_DATA_DIR": str(tmp / "data"),
        "SLUICE_LOG": "0",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-c", KILLED, *args] if killed else [sys.executable, "-m", "chalicelib.cli", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_killed_loads_count_and_the_cli_reports_poisoned_objects(database_url: str, tmp: Path) -> None:
    path = tmp / "writes" / "2027" / "01" / "15" / "08" / "object"
    path.parent.mkdir(parents=True)
    path.write_bytes(commands_body(2))
    assert cli(database_url, tmp, "migrate").returncode == 0
    # GIVEN three loads of an object killed part-way (out of memory, a timeout)
    for _ in range(MAX_FAILED):
        assert cli(database_url, tmp, "load", str(path), killed=True).returncode == -9
    # WHEN it is loaded again THEN it is poisoned: left alone, and the CLI says so
    done = cli(database_url, tmp, "load", str(path))
    assert done.returncode == 1 and "poisoned" in done.stderr and "--force" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    from chalicelib.db.database import open_database

    db = open_database(database_url)
    try:
        ((_, key, _, attempts, last_error, _, _),) = poisoned(db)
        assert (key, attempts, last_error) == ("writes/2027/01/15/08/object", MAX_FAILED, UNFINISHED)
        # AND `load --force` (after the fix) loads it and clears the mark
        done = cli(database_url, tmp, "load", "--force", str(path))
        assert (done.returncode, done.stdout.strip()) == (0, "applied=2 stale=0 rejected=0 skipped=0 deferred=0"), (
            done.stderr
        )
        assert poisoned(db) == []
    finally:
        db.discard()
