"""The production data path on a real MariaDB master and read replica (scripts/db-pair):

- a write loaded into the master is read from the replica once replicated;
- with the replica stopped, reads fail over to the master and keep answering, without asking the
  dead replica on every request, and come back to it once it is up again;
- with the master killed in the middle of loading an object, nothing of the object is applied
  (one transaction with its ledger row), and a later load applies all of it.

Every server stopped here is started again in `finally`. Each test works in a database of its
own, created on the master (and so on the replica), dropped afterwards.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from chalicelib import bootstrap
from chalicelib.commands import make_command
from chalicelib.config import Settings
from chalicelib.db.database import Database, open_master
from chalicelib.db.urls import parse_db_url
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader import BatchLoader, fast_session, local_etag
from chalicelib.loader.mysql_fast import MySQLFastApplier
from chalicelib.readers.replicas import ReplicaReader
from tests.factories import make

pytestmark = pytest.mark.pair

V1 = 1_800_000_000_000_001


class Pair:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.master = parse_db_url(env["SLUICE_MASTER_URL"])
        self.replica = parse_db_url(env["SLUICE_REPLICA_URL"])

    def run(self, command: str) -> None:
        result = subprocess.run(
            [self.env["script"], command, self.env["dir"]], capture_output=True, text=True, timeout=90
        )
        assert result.returncode == 0, f"db-pair {command}: {result.stderr[-500:]}"

    def admin(self, role: str = "master") -> Any:
        url = self.master if role == "master" else self.replica
        return pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password, autocommit=True)

    def sync(self, timeout: int = 20) -> None:
        """Wait until the replica has applied everything the master has binlogged."""
        master, replica = self.admin("master"), self.admin("replica")
        try:
            with master.cursor() as cur:
                cur.execute("SELECT @@gtid_binlog_pos")
                position = cur.fetchone()[0]
            with replica.cursor() as cur:
                cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))
                assert cur.fetchone()[0] == 0, "the replica did not catch up"
        finally:
            master.close()
            replica.close()


@pytest.fixture(scope="module")
def pair(db_pair: dict[str, str]) -> Pair:
    return Pair(db_pair)


@pytest.fixture
def database(pair: Pair) -> Iterator[tuple[str, str]]:
    """(master URL, replica URL) of a fresh, migrated database."""
    name = f"sluice_p_{uuid.uuid4().hex[:10]}"
    conn = pair.admin()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    conn.close()
    master_url = f"mysql://root@{pair.master.host}:{pair.master.port}/{name}"
    replica_url = f"mysql://root@{pair.replica.host}:{pair.replica.port}/{name}"
    db = open_master(master_url)
    db.migrate()
    db.discard()
    pair.sync()
    try:
        yield master_url, replica_url
    finally:
        conn = pair.admin()
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def services(master_url: str, replica_url: str, local_dir: Path) -> bootstrap.Services:
    settings = Settings.from_env(
        {"DATABASE_URL": master_url, "REPLICA_URLS": replica_url, "LOCAL_DATA_DIR": str(local_dir)}
    )
    return bootstrap.build(settings)


def put(todo_id: str, title: str, version: int = V1) -> bytes:
    data = make("todos", title=title, notes="", state="open", tags=[])
    return make_command("put", "todos", "alice", todo_id, version, str(uuid.uuid4()), data).to_line()


def connected(db: Database) -> bool:
    return getattr(db._local, "conn", None) is not None


def count_connects(db: Database) -> list[int]:
    """Wrap db._connect to count attempts (successful or not)."""
    attempts = [0]
    real = db._connect

    def counting() -> Any:
        attempts[0] += 1
        return real()

    db._connect = counting  # type: ignore[method-assign]
    return attempts


def test_a_write_loaded_into_the_master_is_read_from_the_replica(pair, database, local_dir):
    master_url, replica_url = database
    built = services(master_url, replica_url, local_dir)
    reader = built.reader
    assert isinstance(reader, ReplicaReader)
    replica_db, master_reader_db = reader.readers[0].db, reader.readers[-1].db  # type: ignore[attr-defined]
    assert replica_db.url.port == pair.replica.port and master_reader_db.url.port == pair.master.port

    todo_id = str(uuid.uuid4())
    body = put(todo_id, "replicated")
    assert built.loader.load("bucket", "writes/2027/01/01/00/a", local_etag(body), body).applied == 1
    pair.sync()
    row = reader.get_todo("alice", todo_id)
    assert row is not None and row["title"] == "replicated"
    assert connected(replica_db) and not connected(master_reader_db)  # answered by the replica alone

    # the replica really is a copy: another write, read again after replication
    body = put(todo_id, "changed", V1 + 1)
    built.loader.load("bucket", "writes/2027/01/01/00/b", local_etag(body), body)
    pair.sync()
    assert reader.get_todo("alice", todo_id)["title"] == "changed"  # type: ignore[index]
    assert not connected(master_reader_db)


def test_with_the_replica_stopped_reads_fail_over_to_the_master_and_keep_answering(pair, database, local_dir):
    master_url, replica_url = database
    built = services(master_url, replica_url, local_dir)
    reader = built.reader
    assert isinstance(reader, ReplicaReader)
    reader.cooldown = 1.0
    replica_db, master_reader_db = reader.readers[0].db, reader.readers[-1].db  # type: ignore[attr-defined]
    todo_id = str(uuid.uuid4())
    body = put(todo_id, "still here")
    built.loader.load("bucket", "writes/2027/01/01/00/c", local_etag(body), body)
    pair.sync()
    assert reader.get_todo("alice", todo_id) is not None and connected(replica_db)
    attempts = count_connects(replica_db)

    pair.run("stop-replica")
    try:
        for _ in range(20):
            row = reader.get_todo("alice", todo_id)
            assert row is not None and row["title"] == "still here"
        assert reader.list_todos("alice", None, 10, None)[0]["id"] == todo_id
        assert connected(master_reader_db)
        # the dead replica was asked once (its kept connection failed, then one reconnect),
        # not once per request
        assert attempts[0] == 1
    finally:
        pair.run("start-replica")
    time.sleep(reader.cooldown + 0.1)
    pair.sync()
    assert reader.get_todo("alice", todo_id) is not None
    assert attempts[0] == 2 and connected(replica_db)  # back on the replica


@pytest.mark.parametrize("keys_way", [False, True])
def test_with_the_master_killed_mid_load_nothing_of_the_object_is_applied(
    pair, database, local_dir, monkeypatch, keys_way
):
    master_url, _ = database
    db = open_master(master_url)
    loader = BatchLoader(db, MySQLFastApplier(db, chunk_lines=300, prefers_keys=keys_way))
    ids = [str(uuid.uuid4()) for _ in range(1500)]
    body = b"".join(put(i, f"t{n}") for n, i in enumerate(ids))
    key = "writes/2027/01/01/00/killed"

    real = fast_session.load_file
    loads = [0]

    def kill_after_first_chunk(cur: Any, statement: str, text: str) -> int:
        loads[0] += 1
        result = real(cur, statement, text)
        if loads[0] == 2:
            pair.run("kill-master")
        return result

    monkeypatch.setattr(fast_session, "load_file", kill_after_first_chunk)
    try:
        with pytest.raises(DatabaseUnavailable):
            loader.load("bucket", key, local_etag(body), body)
    finally:
        pair.run("start-master")
    monkeypatch.setattr(fast_session, "load_file", real)

    check = open_master(master_url)
    assert check.query("SELECT COUNT(*) FROM todos") == [(0,)]
    assert check.query("SELECT COUNT(*) FROM ingest_batches") == [(0,)]
    # a later load (the event's retry, the reconciler, a replay) applies all of it, once
    result = loader.load("bucket", key, local_etag(body), body)
    assert (result.applied, result.stale, result.skipped) == (1500, 0, 0)
    assert loader.load("bucket", key, local_etag(body), body).skipped == 1
    assert check.query("SELECT COUNT(*) FROM todos") == [(1500,)]
    pair.sync()
    replica = open_master(master_url.replace(f":{pair.master.port}/", f":{pair.replica.port}/"))
    assert replica.query("SELECT COUNT(*) FROM todos") == [(1500,)]
