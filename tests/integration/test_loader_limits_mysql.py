"""Objects refused for their size, and poisoned objects, on MariaDB (see tests/loader_limits.py):
through the fast path (LOAD DATA in small chunks, a worker thread) and the multi-row upsert."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from chalicelib.db.database import Database, open_master
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader import BatchLoader
from chalicelib.loader.mysql_fast import MySQLFastApplier
from tests import loader_limits

pytestmark = pytest.mark.mariadb


@pytest.fixture
def db(mysql_db: Database) -> Database:
    return mysql_db


def fast(db: Database, path: str) -> MySQLFastApplier:
    return MySQLFastApplier(db, min_rows=1, chunk_lines=100, prefers_keys=path == "keys")


@pytest.mark.parametrize("path", ["fresh", "keys"])
@pytest.mark.parametrize("gzipped", [False, True])
def test_an_object_over_the_limit_is_refused_whole(db: Database, path: str, gzipped: bool) -> None:
    loader_limits.assert_an_object_over_the_limit_is_refused_whole(db, fast(db, path), gzipped)


@pytest.mark.parametrize("path", ["fresh", "keys"])
def test_many_rejects_leave_the_fast_path_and_lose_nothing(db: Database, path: str) -> None:
    applier = fast(db, path)
    loader_limits.assert_many_rejects_and_a_limit_in_the_middle(db, applier)
    assert applier.paths["rejects"] == 1


def test_a_failing_object_is_poisoned_after_three_attempts(db: Database, tmp_path: Path) -> None:
    loader_limits.assert_a_failing_object_is_poisoned_after_three_attempts(db, tmp_path)


def test_a_database_outage_does_not_poison(db: Database) -> None:
    loader_limits.assert_a_database_outage_does_not_poison(db)


def test_the_runbook_query_lists_poisoned_objects(db: Database) -> None:
    loader_limits.assert_the_runbook_query_lists_poisoned_objects(db)


def test_killed_loads_count_and_the_cli_reports_poisoned_objects(mysql_url: str, tmp_path: Path) -> None:
    loader_limits.assert_killed_loads_count_and_the_cli_reports_poisoned_objects(mysql_url, tmp_path)


@pytest.mark.parametrize("path", ["small", "fresh", "keys"])
def test_an_inflate_problem_is_one_reject_after_the_last_line(db: Database, path: str) -> None:
    applier = MySQLFastApplier(db, min_rows=1000) if path == "small" else fast(db, path)
    loader_limits.assert_an_inflate_problem_is_one_reject_after_the_last_line(db, applier, 300)
    assert applier.paths[path] >= 1  # (fresh: the first object; its keys are stored for the others)


def gone(admin: Database, thread_id: int, timeout: float = 30.0) -> None:
    """Wait until the server has ended the connection `thread_id` (and released what it held)."""
    deadline = time.monotonic() + timeout
    while admin.query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (thread_id,)) != [(0,)]:
        assert time.monotonic() < deadline, f"connection {thread_id} still there {timeout} s after KILL"
        time.sleep(0.01)


def test_a_connection_lost_while_load_data_sends_its_file_is_an_outage_that_does_not_count(
    db: Database, mysql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the server drops the connection while LOAD DATA LOCAL sends its file, PyMySQL raises
    from a `finally` that writes to the socket it has just closed: AttributeError 'NoneType'
    object has no attribute 'sendall'. That escaped as a failed load, counted toward poisoning
    (and as the CLI's error line) instead of the database being unavailable."""
    from pymysql import connections

    admin = open_master(mysql_url)
    original = connections._send_local_file
    killed: list[int] = []

    def connection_killed_first(filename: Any, conn: Any) -> Any:
        if not killed:  # the server ends this connection (a failover, a restart, an operator's KILL)
            killed.append(conn.thread_id())
            admin.query(f"KILL {killed[0]}")
            gone(admin, killed[0])
        return original(filename, conn)

    monkeypatch.setattr(connections, "_send_local_file", connection_killed_first)
    try:
        for _ in range(loader_limits.MAX_FAILED + 1):
            killed.clear()
            # A new process each time (an event's retry may run anywhere), so each load sends LOAD
            # DATA; one process that loses it twice in a row takes the upsert for a while instead
            # (tests/integration/test_load_data_dropped.py).
            applier = MySQLFastApplier(db, min_rows=1, chunk_lines=4000, threaded=False)
            with pytest.raises(DatabaseUnavailable):
                loader_limits.load(BatchLoader(db, applier), loader_limits.commands_body(3000))
            assert killed
    finally:
        admin.discard()
    assert loader_limits.poisoned(db) == []
    assert db.query("SELECT attempts FROM ingest_attempts") == [(0,)]


def test_deliveries_in_flight_are_not_unfinished_attempts(db: Database) -> None:
    loader_limits.assert_deliveries_in_flight_are_not_unfinished_attempts(db)


def test_migration_4_runs_again_cleanly_and_a_loader_before_it_counts_failures(db: Database) -> None:
    loader_limits.assert_migration_4_runs_again_cleanly_and_a_loader_before_it_counts_failures(db)


def test_a_load_judged_dead_while_its_connection_was_lost_gives_its_count_back(db: Database, mysql_url: str) -> None:
    """A load loses its connection (and with it the lock that shows it alive); another delivery
    of the object begins meanwhile and counts it as dead. Once the first can give its attempt back,
    that count is undone: it failed because the database was unreachable."""
    from chalicelib.loader.attempts import Attempts

    bid = "c" * 64
    first, other_db, admin = Attempts(db), open_master(mysql_url), open_master(mysql_url)
    try:
        state, attempt = first.begin(bid, "bucket", "writes/k", "e", False)
        assert state == "go"
        holder = attempt.holder.thread_id()
        admin.query(f"KILL {holder}")  # the connection is lost, the server stays up
        gone(admin, holder)  # KILL returns before the killed thread has ended and let its lock go
        state, other = Attempts(other_db).begin(bid, "bucket", "writes/k", "e", False)
        assert state == "go"
        assert db.query("SELECT attempts, running FROM ingest_attempts") == [(1, other.token)]  # judged dead
        first.given_back(attempt)  # on a new connection
        assert db.query("SELECT attempts, running FROM ingest_attempts") == [(0, other.token)]
    finally:
        other_db.discard()
        admin.discard()


def test_the_loaders_statements_wait_read_timeout_and_its_lock_waits_end_before(db: Database) -> None:
    from chalicelib.db.database import MASTER_OPTIONS

    conn = db.connection()  # connected with connect_timeout for the handshake (test_loader_limits.py)
    assert (conn._read_timeout, conn._write_timeout) == (MASTER_OPTIONS["read_timeout"],) * 2
    assert db.query("SELECT @@SESSION.innodb_lock_wait_timeout") == [(MASTER_OPTIONS["lock_wait_timeout"],)]
