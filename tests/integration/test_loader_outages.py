"""Database outages during loads never poison a good object (CONTRACT section 5): an attempt
counts when it failed while the database answered, or when its process died while the server
stayed up; one that failed because the database was unreachable, or whose server restarted after
it began, does not.

- The network between the loader and a server that stays up is cut for two seconds, part-way
  through a load, three times (tests/integration/outage_proxy.py): each load fails, and its
  attempt is given back once the database answers again.
- The master is SIGKILLed part-way through a load and started again, three times (the MariaDB
  pair): each load fails and cannot give its attempt back (nothing listens); its server's start
  time, recorded with the attempt, shows it restarted.
Then the object loads. Before, the third such outage poisoned it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.db.database import Database, open_master
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader import BatchLoader
from chalicelib.loader.apply import SqlApplier
from tests.integration.outage_proxy import outage_proxy
from tests.integration.test_replica_pair import Pair
from tests.loader_limits import MAX_FAILED, commands_body, load, poisoned


class CutMidLoad(SqlApplier):
    """The applier of a load whose database goes away part-way: `fault()` runs in the load's
    transaction, after the ledger claim and before the rows are written."""

    def __init__(self, db: Database, fault: Callable[[], None]) -> None:
        super().__init__(db)
        self.fault = fault
        self.faults = 0

    def apply_folded(self, cur: Any, folded: Any, changes: Any = None) -> tuple[int, int]:
        self.faults += 1
        self.fault()
        return super().apply_folded(cur, folded, changes)


def assert_outages_did_not_count(db: Database, body: bytes) -> None:
    assert poisoned(db) == []
    assert db.query("SELECT attempts FROM ingest_attempts") == [(0,)]
    result = load(BatchLoader(db), body)
    assert (result.applied, result.poisoned) == (len(body.splitlines()), 0)
    assert db.query("SELECT COUNT(*) FROM ingest_attempts") == [(0,)]


@pytest.mark.mariadb
def test_network_outages_during_loads_do_not_poison_a_good_object(
    mysql_db: Database, mysql_url: str, mariadb_server: dict[str, Any]
) -> None:
    body = commands_body(3)
    with outage_proxy(mariadb_server["host"], mariadb_server["port"]) as proxy:
        db = open_master(proxy.url(mysql_url.rsplit("/", 1)[1]))
        try:
            for cut in range(1, MAX_FAILED + 1):
                applier = CutMidLoad(db, lambda: proxy.cut(2.0))
                with pytest.raises(DatabaseUnavailable):
                    load(BatchLoader(db, applier), body)
                assert (applier.faults, proxy.cuts) == (1, cut)
                proxy.wait_until_up()
            assert proxy.refused >= MAX_FAILED  # the database was still unreachable when each load failed
        finally:
            db.discard()
    assert_outages_did_not_count(mysql_db, body)


@pytest.fixture(scope="module")
def pair(db_pair: dict[str, str]) -> Pair:
    return Pair(db_pair)


@pytest.fixture
def pair_db(pair: Pair) -> Iterator[Database]:
    """A fresh, migrated database on the pair's master."""
    name = f"sluice_o_{uuid.uuid4().hex[:10]}"
    admin = pair.admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    admin.close()
    db = open_master(f"mysql://root@{pair.master.host}:{pair.master.port}/{name}")
    db.migrate()
    try:
        yield db
    finally:
        db.discard()
        pair.run("start-master")  # (if a test left it down)
        admin = pair.admin()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.mark.pair
def test_master_restarts_during_loads_do_not_poison_a_good_object(pair: Pair, pair_db: Database) -> None:
    body = commands_body(3)
    for _ in range(MAX_FAILED):
        applier = CutMidLoad(pair_db, lambda: pair.run("kill-master"))
        with pytest.raises(DatabaseUnavailable):
            load(BatchLoader(pair_db, applier), body)
        assert applier.faults == 1
        pair.run("start-master")
    assert_outages_did_not_count(pair_db, body)
