"""Objects refused for their size, and poisoned objects (CONTRACT section 5): shared by the SQLite
(functional) and MariaDB (integration) tiers. `applier` None is the database's own applier."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import sys
import threading
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
OP = "0190b2a0-0000-7000-8001-ffffffffffff"


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


def profiles_body(count: int, version: int = BASE) -> bytes:
    """`count` profile puts, one owner each: a resource every schema level holds (todos need
    migration 5: a loader defers them on an older schema)."""
    return b"".join(
        make_command(
            "put",
            "profiles",
            f"owner-{n}",
            f"owner-{n}",
            version + n,
            f"0190b2a0-0000-7000-8001-{n:012d}",
            {"display_name": f"name {n}"},
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


# -- an object that does not inflate cleanly ---------------------------------------------------------
def assert_an_inflate_problem_is_one_reject_after_the_last_line(
    db: Database, applier: Applier | None, lines: int
) -> None:
    """Trailing bytes after the GZIP stream, or the stream cut short: one reject for the problem, at
    the line after the last line the object holds (not counting the empty "line" after its final
    newline), on every path of the loader."""
    raw = commands_body(lines)
    whole = gzip.compress(raw)
    # one more line, of text that does not compress (so cutting 60 bytes off the end cuts inside it)
    noise = "".join(hashlib.sha256(b"%d" % n).hexdigest() for n in range(20))
    last = make_command(
        "put",
        "todos",
        "alice",
        f"0190b2a0-0000-7000-8000-{lines:012d}",
        BASE,
        OP,
        {"title": noise[:200], "notes": noise},
    )
    cut = gzip.compress(raw + last.to_line())
    loader = BatchLoader(db, applier)
    cases = {
        "trailing": (whole + b"junk", "trailing bytes after the gzip stream", lines + 1),
        "truncated": (whole[:-4], "truncated gzip stream", lines + 1),  # the whole content, no end marker
        "cut in a line": (cut[: len(cut) - 60], "gzip stream", lines + 2),
    }
    for name, (body, reason, line_no) in cases.items():
        key = f"writes/2027/01/15/08/{name.replace(' ', '-')}"
        result = loader.load("bucket", key, local_etag(body), body)
        rows = db.query(
            "SELECT line_no, part, reason FROM ingest_rejects WHERE object_key = %s ORDER BY line_no, part", (key,)
        )
        problems = [row for row in rows if "gzip" in row[2]]
        assert [(int(n), int(p)) for n, p, _ in problems] == [(line_no, 0)], (name, rows)
        assert reason in problems[0][2], (name, rows)
        # the line cut short (if any) is a reject of its own, at its own line
        others = [(int(n), int(p)) for n, p, r in rows if "gzip" not in r]
        assert others == ([(lines + 1, 0)] if name == "cut in a line" else []), (name, rows)
        assert result.rejected == len(rows) and result.applied + result.stale == lines, (name, result)
        assert db.query("SELECT rejected FROM ingest_batches WHERE object_key = %s", (key,)) == [(len(rows),)]


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


class PausedAfterBegin(BatchLoader):
    """A loader whose load, once its attempt is recorded, waits for `go` before it goes on."""

    def __init__(self, db: Database, begun: threading.Semaphore, go: threading.Event) -> None:
        super().__init__(db)
        self.begun, self.go = begun, go

    def _load_stream(self, *args: Any, **kwargs: Any) -> Any:
        self.begun.release()
        assert self.go.wait(120), "never released"
        return super()._load_stream(*args, **kwargs)


def assert_deliveries_in_flight_are_not_unfinished_attempts(db: Database) -> None:
    """S3 delivers an object again (and again) while its first load still runs: those loads are
    alive, so none of them counts toward poisoning, and the fourth is loaded like the others."""
    body = commands_body(5)
    begun, go = threading.Semaphore(0), threading.Event()
    results: list[Any] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            results.append(load(PausedAfterBegin(db, begun, go), body))
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    threads = []
    try:
        for _ in range(MAX_FAILED + 1):  # each begins before any of them commits
            thread = threading.Thread(target=deliver)
            thread.start()
            threads.append(thread)
            while not begun.acquire(timeout=0.05) and thread.is_alive():
                pass
    finally:
        go.set()
        for thread in threads:
            thread.join(120)
    assert not errors, errors
    outcomes = sorted((r.applied, r.skipped, r.poisoned) for r in results)
    assert outcomes == [(0, 1, 0)] * MAX_FAILED + [(5, 0, 0)], outcomes
    assert poisoned(db) == [] and count(db, "ingest_attempts") == 0


def assert_migration_4_runs_again_cleanly_and_a_loader_before_it_counts_failures(db: Database) -> None:
    """Migration 4 adds `ingest_attempts.running` with an ALTER guarded by the column's existence
    (MySQL 8.4 has no ADD COLUMN IF NOT EXISTS): cut short after its ALTER (not recorded), it runs
    again cleanly. A loader on a schema without it (the loader deployed before `migrate`) loads,
    and counts the loads that fail (of a resource that schema holds: profiles; todos wait for
    migration 5, deferral.py)."""
    assert db.migrate() == []
    db.query("DELETE FROM schema_migrations WHERE version >= 4")
    assert db.migrate() == [4, 5, 6]  # every column was there: the ALTERs are skipped, the versions recorded
    # GIVEN the schema before migration 4
    with db.transaction() as cur:
        cur.execute("ALTER TABLE ingest_attempts DROP COLUMN running")
        cur.execute("DELETE FROM schema_migrations WHERE version >= 4")
    body = profiles_body(2)
    # WHEN a loader fails on an object THEN it counts; and it loads the object once fixed
    with pytest.raises(RuntimeError):
        load(BatchLoader(db, Failing()), body)
    assert db.query("SELECT attempts, last_error FROM ingest_attempts") == [
        (1, "RuntimeError: applier bug: cannot apply")
    ]
    assert load(BatchLoader(db), body).applied == 2
    # AND migrate adds the column (the ALTER runs this time); a new loader records its loads there
    assert db.migrate() == [4, 5, 6]
    loader = BatchLoader(db, Failing())
    state, attempt = loader.attempts.begin("b" * 64, "bucket", "writes/x", "e", False)
    assert state == "go" and attempt.token
    assert db.query("SELECT running FROM ingest_attempts WHERE batch_id = %s", ("b" * 64,)) == [(attempt.token,)]
    loader.attempts.failed(attempt, "RuntimeError: x")
    loader.attempts.end(attempt)
    assert db.query("SELECT attempts, running FROM ingest_attempts WHERE batch_id = %s", ("b" * 64,)) == [(1, "")]


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


def cli(
    database_url: str, tmp: Path, *args: str, killed: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOCAL_DATA_DIR": str(tmp / "data"),
        "SLUICE_LOG": "0",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-c", KILLED, *args] if killed else [sys.executable, "-m", "chalicelib.cli", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


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
