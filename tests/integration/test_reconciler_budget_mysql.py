"""The reconciler's time budget on MariaDB: a load still running when only the margin is left is
cut (its connection killed from another one), its attempt is given back without counting, and the
server holds nothing of it (no row lock, no attempt lock), as a Lambda timeout would have left."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from chalicelib.db.database import Database
from chalicelib.loader import BatchLoader, batch_id, local_etag
from chalicelib.loader.attempts import GIVEN_BACK
from chalicelib.loader.budget import Budget
from chalicelib.loader.reconcile_report import ReconcileReport
from chalicelib.loader.reconciler import reconcile
from chalicelib.loader.sources import LocalObjectStore
from tests.functional.aws_fakes import command_line

pytestmark = pytest.mark.mariadb

KEY = "writes/2024/05/01/10/sluice-writes-1"


class Deadline:
    """A Lambda context with `seconds` left from now, running down with the clock."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.end - time.monotonic()) * 1000)


class QuickBudget(Budget):
    LOAD_SECONDS = 1.0  # a load starts with 1 s before the margin (the production minimum is 60 s)


def blocker(mysql_url: str, bid: str) -> Any:
    """Another session holding the ledger row of the object, uncommitted: a load of it waits."""
    from chalicelib.db.urls import parse_db_url

    url = parse_db_url(mysql_url)
    conn = pymysql.connect(host=url.host, port=url.port, user=url.user, password="", database=url.database)
    with conn.cursor() as cur:
        cur.execute("START TRANSACTION")
        cur.execute(
            "INSERT INTO ingest_batches (batch_id, bucket, object_key, etag, applied, stale, rejected, loads, "
            "first_loaded_at, last_loaded_at) VALUES (%s, 'local', %s, 'x', 0, 0, 0, 1, NOW(6), NOW(6))",
            (bid, KEY),
        )
    return conn


def sessions_but_this_one(db: Database, until: list[tuple[int]]) -> list[tuple[Any, ...]]:
    """The other sessions on this database, asked again for a few seconds until they are `until`
    (a killed session leaves the process list once the server has cleaned it up)."""
    for _ in range(50):
        found = db.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        )
        if found == until:
            break
        time.sleep(0.1)
    return found


def test_a_load_still_running_at_the_margin_is_cut_and_its_attempt_does_not_count(
    mysql_db: Database, mysql_url: str, tmp_path: Path
) -> None:
    # GIVEN an object whose load will wait on a lock another session holds
    _, line = command_line("waits for the ledger row")
    path = tmp_path / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(line)
    bid = batch_id(KEY, local_etag(line))
    held = blocker(mysql_url, bid)
    loader = BatchLoader(mysql_db)
    report = ReconcileReport()
    try:
        # WHEN the run has 2 s before its margin
        started = time.monotonic()
        reconcile(
            LocalObjectStore(str(tmp_path)),
            loader,
            ["writes/2024/05/01/10/"],
            budget=QuickBudget(Deadline(Budget.MARGIN_SECONDS + 2).get_remaining_time_in_millis),
            report=report,
            count_on=True,
        )
        cut_after = time.monotonic() - started

        # THEN the load was cut at the margin (the lock wait itself would have lasted 30 s), and the
        # run reports it stopped for time with the object left
        assert cut_after < 20
        assert (report.stopped, report.left, report.backlog, report.result.objects) == ("time", 1, 1, 0)
        # AND its attempt was given back: nothing counts toward poisoning, nothing runs
        rows = mysql_db.query(
            "SELECT attempts, running, last_error, poisoned_at FROM ingest_attempts WHERE batch_id = %s", (bid,)
        )
        assert rows == [(0, "", GIVEN_BACK, None)]
        # AND the server holds nothing of it: no session on this database but the blocker's and
        # the loader's new one (the cut session and the watchdog's are gone)
        assert sessions_but_this_one(mysql_db, until=[(held.thread_id(),)]) == [(held.thread_id(),)]
    finally:
        held.rollback()
        held.close()

    # WHEN the next run has its time: the object loads, and its attempts are forgotten
    again = reconcile(LocalObjectStore(str(tmp_path)), loader, ["writes/2024/05/01/10/"])
    assert (again.result.objects, again.result.applied, again.left) == (1, 1, 0)
    assert mysql_db.query("SELECT COUNT(*) FROM ingest_attempts") == [(0,)]


def test_a_load_that_ends_before_the_margin_is_not_cut(mysql_db: Database, tmp_path: Path) -> None:
    _, line = command_line("quick")
    path = tmp_path / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(line)
    report = reconcile(
        LocalObjectStore(str(tmp_path)),
        BatchLoader(mysql_db),
        ["writes/2024/05/01/10/"],
        budget=QuickBudget(Deadline(Budget.MARGIN_SECONDS + 30).get_remaining_time_in_millis),
    )
    assert (report.stopped, report.result.applied, report.left) == ("", 1, 0)
    # the connection the load used is still the loader's, alive (the watchdog was cancelled)
    time.sleep(0.1)
    assert mysql_db.query("SELECT 1") == [(1,)]
