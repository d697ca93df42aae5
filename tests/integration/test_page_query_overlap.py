"""The merged page's query runs while the HGETALL is answered (PendingWrites.list_todos): a query
in two halves (`Database.send_query`, `start_list_seen`) on SQLite and MariaDB, what a failure
on either side does, ids that are not UUIDs, and the pages a stale guess of the pending ids gives
over MariaDB and the real Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.db.database import open_master, open_reader
from chalicelib.errors import DatabaseUnavailable
from chalicelib.ids import new_op_id, version_to_ts
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.models import validate_todo
from chalicelib.readers import Filters, Reader, Row, Seen, SeenLater, state_filter
from chalicelib.readers.cache import CachedReader
from chalicelib.readers.pending import PendingWrites, pending_key
from chalicelib.readers.replicas import ReplicaReader
from chalicelib.readers.resp import RespClient
from chalicelib.readers.sql import SqlReader, list_seen_statement, statements
from tests.integration import test_seen_readers
from tests.integration.test_seen_readers import IDS, OPS, OWNER

reader = test_seen_readers.reader  # the same loaded rows, on SQLite and MariaDB

HOSTILE = "x') OR 1=1 OR id IN ('"


def test_a_page_query_in_two_halves_gives_what_the_general_list_seen_gives(reader):
    """SqlReader's one statement against Reader's definition (live rows, then each named id)."""
    cases: list[tuple[str | None, int, str | None, list[str]]] = [
        (None, 10, None, []),
        (None, 10, None, [IDS[2], IDS[4]]),
        (None, 3, "open", [IDS[1], IDS[2], IDS[4]]),
        (IDS[1], 2, "done", [IDS[2]]),
        (IDS[0], 10, None, [IDS[0], IDS[4], "00000000-0000-4000-8000-999999999999"]),
    ]

    def without_op_ids(rows: Sequence[Seen]) -> list[Seen]:
        return [s._replace(op_id="") for s in rows]  # a page's rows need not carry them

    for after, limit, state, ids in cases:
        sent = reader.start_list_seen("todos", OWNER, after, limit, state_filter(state), ids)()
        definition = Reader.list_seen(reader, "todos", OWNER, after, limit, state_filter(state), ids)
        assert without_op_ids(sent) == without_op_ids(definition), (after, limit, state)


def test_seen_todos_reads_the_stored_state_of_several_keys_with_their_op_ids(reader):
    named = [IDS[0], IDS[2], IDS[4], "00000000-0000-4000-8000-999999999999"]
    found = reader.seen_todos(OWNER, named)
    assert found == {i: reader.seen_todo(OWNER, i) for i in named[:3]}  # nothing stored: left out
    assert [found[i].op_id for i in named[:3]] == [OPS[i] for i in named[:3]]
    assert found == Reader.seen_many(reader, "todos", OWNER, named) and reader.seen_todos(OWNER, []) == {}


def test_rows_a_newer_write_replaces_come_with_only_their_created_at(reader):
    full = {s.id: s for s in reader.list_seen("todos", OWNER, None, 10, state_filter(None), [IDS[2]])}
    replaced = {IDS[0]: 5000, IDS[1]: 1002, IDS[2]: 9999}  # newer; the same version; over a tombstone
    rows = {s.id: s for s in reader.start_list_seen("todos", OWNER, None, 10, state_filter(None), [IDS[2]])(replaced)}
    assert rows[IDS[0]] == Seen(IDS[0], {"created_at": full[IDS[0]].row["created_at"]}, 1001)
    assert rows[IDS[1]] == full[IDS[1]] and rows[IDS[1]].row["title"] == "t1"  # a tie: all of it
    assert rows[IDS[2]] == Seen(IDS[2], None, 2000, created_at=version_to_ts(1003))  # with its created_at
    assert rows[IDS[3]] == full[IDS[3]]


def test_ids_that_are_not_uuids_are_sent_as_parameters_never_as_sql_text(reader):
    for _ in range(2):  # made, then kept (Statements.texts): the same either way
        text, params = list_seen_statement(statements("todos"), OWNER, None, 10, {}, [IDS[2], HOSTILE])
        assert HOSTILE not in text and params == [OWNER, "", IDS[2], HOSTILE, 10]
    text, params = list_seen_statement(statements("todos"), OWNER, None, 10, {}, [IDS[2], IDS[4]])
    assert f"'{IDS[2]}', '{IDS[4]}'" in text and IDS[2] not in params  # canonical ids: written out
    shown = reader.list_seen("todos", OWNER, None, 10, state_filter(None), [IDS[2], HOSTILE])
    assert shown == reader.list_seen("todos", OWNER, None, 10, state_filter(None), [IDS[2]])
    assert len(reader.list_todos(OWNER, None, 10, None)) == 4  # and the table is as it was


@pytest.mark.mariadb
def test_send_query_reads_what_query_reads_and_a_dropped_kept_connection_is_replaced(mysql_url):
    import pymysql

    open_master(mysql_url).migrate()
    db = open_reader(mysql_url)
    first = db.query("SELECT CONNECTION_ID()")[0][0]
    assert (
        db.send_query("SELECT %s + 1, %s", (41, "a'b"))() == db.query("SELECT %s + 1, %s", (41, "a'b")) == [(42, "a'b")]
    )
    admin = pymysql.connect(**_admin(mysql_url))
    with admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {int(first)}")
    # The kept connection is gone: sent on it, read on a new one, answered all the same.
    assert db.send_query("SELECT 6 * 7")() == [(42,)]
    assert db.query("SELECT CONNECTION_ID()")[0][0] != first
    with pytest.raises(pymysql.err.ProgrammingError):
        db.send_query("SELECT * FROM no_such_table")()
    assert db.query("SELECT 1") == [(1,)]  # the connection after a failed statement is usable
    admin.close()
    db.discard()


@pytest.mark.mariadb
def test_send_query_to_a_server_that_is_not_there_is_unavailable(mysql_url):
    port = _closed_port()
    dead = open_reader(f"mysql://root@127.0.0.1:{port}/test", connect_timeout=1)
    with pytest.raises(DatabaseUnavailable):
        dead.send_query("SELECT 1")()


class Sent(Reader):
    """A reader whose page query fails where it is told to (sending or reading), or answers."""

    def __init__(self, fail: str | None, rows: Sequence[Seen] = ()) -> None:
        self.fail = fail
        self.rows = list(rows)
        self.sent = 0

    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        raise AssertionError("not asked")

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        raise AssertionError("not asked")

    def list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> list[Seen]:
        if self.fail:
            raise DatabaseUnavailable("down")
        return self.rows

    def start_list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> SeenLater:
        self.sent += 1
        if self.fail == "send":
            raise DatabaseUnavailable("refused")

        def rows(replaced: Any = None) -> list[Seen]:
            if self.fail == "read":
                raise DatabaseUnavailable("gone while reading")
            return self.rows

        return rows


@pytest.mark.parametrize("fail", ["send", "read"])
def test_a_replica_failing_either_half_is_skipped_and_the_master_answers_unsettled(fail):
    master_rows = [Seen(IDS[0], {"id": IDS[0]}, 7)]
    replica, master = Sent(fail), Sent(None, master_rows)
    replicas = ReplicaReader([replica, master])
    got = replicas.start_list_seen("todos", OWNER, None, 5, {}, [IDS[0]])()
    assert got == [Seen(IDS[0], {"id": IDS[0]}, 7, settled=False)]  # from the master while a replica exists
    assert replica.sent == 1 and not replicas.breakers[0].allows() and replicas.breakers[1].allows()
    assert replicas.start_list_seen("todos", OWNER, None, 5, {}, [])() == got and replica.sent == 1  # skipped now


# -- the merged page over MariaDB and Redis --------------------------------------------------------
ME = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"


def loaded_ids(n: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{2 * k:012d}" for k in range(n)]  # odd ids stay free


class Counting:
    """Counts the page queries PendingWrites sends through its inner reader."""

    def __init__(self, inner: SqlReader) -> None:
        self.inner = inner
        self.queries = 0
        self.tied: list[list[str]] = []  # the ids seen_todos was asked for (version ties)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start_list_seen(self, *args: Any) -> Any:
        self.queries += 1
        return self.inner.start_list_seen(*args)

    def list_seen(self, *args: Any) -> Any:
        self.queries += 1
        return self.inner.list_seen(*args)

    def seen_many(self, resource: str, owner: str, ids: Any) -> Any:
        self.tied.append(sorted(ids))
        return self.inner.seen_many(resource, owner, ids)


@pytest.fixture
def merged(mysql_url: str, redis_server: str) -> Iterator[tuple[PendingWrites, Counting, Any, dict[str, Any]]]:
    master = open_master(mysql_url)
    master.migrate()
    model: dict[str, Any] = {}
    lines = []
    for n, todo_id in enumerate(loaded_ids(30)):
        data = validate_todo({"title": f"loaded {n}"})
        lines.append(make_command("put", "todos", ME, todo_id, 1000 + n, new_op_id(), data).to_line())
        model[todo_id] = f"loaded {n}"
    body = b"".join(lines)
    BatchLoader(master).load("local", "writes/2026/01/01/00/page-overlap", local_etag(body), body)
    counting = Counting(SqlReader(open_reader(mysql_url)))
    client = RespClient.from_url(redis_server)
    prefix = f"sluice-test-{uuid.uuid4().hex[:8]}:v1"
    cache = CachedReader(counting, client, 300, prefix=prefix)  # type: ignore[arg-type]
    pending = PendingWrites(cache, 900)
    try:
        yield pending, counting, master, model
    finally:
        client.execute_command("DEL", pending_key(ME, prefix))
        client.close()
        counting.inner.db.discard()
        master.discard()


def page(pending: PendingWrites, limit: int = 11) -> list[str]:
    return [row["title"] for row in pending.list_todos(ME, None, limit, None)]


def expected(model: dict[str, Any], limit: int = 11) -> list[str]:
    return [model[i] for i in sorted(model) if model[i] is not None][:limit]


@pytest.mark.mariadb
@pytest.mark.redis
def test_a_stale_guess_costs_a_query_never_a_wrong_page(merged):
    pending, counting, master, model = merged
    ids = loaded_ids(30)
    now = time.time_ns() // 1000  # pending versions: recent, or they expire at once
    new = [ids[k][:-1] + "1" for k in (3, 5, 7)]  # between loaded ids, inside the first page
    commands = [
        make_command("put", "todos", ME, i, now + k, new_op_id(), validate_todo({"title": f"new {k}"}))
        for k, i in enumerate(new)
    ]
    commands.append(
        make_command("put", "todos", ME, ids[1], now + 10, new_op_id(), validate_todo({"title": "changed"}))
    )
    commands.append(make_command("delete", "todos", ME, ids[2], now + 11, new_op_id(), None))
    assert pending.record(commands)
    model.update({i: f"new {k}" for k, i in enumerate(new)})
    model[ids[1]], model[ids[2]] = "changed", None
    want = expected(model)

    assert page(pending) == want  # the guess came from record(): one query
    assert counting.queries == 1 and counting.tied == []  # no version ties: no op_id read
    counting.queries = 0
    for _ in range(3):  # the page it learnt: three new todos take places, one query each time
        assert page(pending) == want
    assert counting.queries == 3

    # Another process loads the three new todos: the guess that they take places is now wrong.
    body = b"".join(c.to_line() for c in commands[:3])
    BatchLoader(master).load("local", "writes/2026/01/01/00/page-overlap-new", local_etag(body), body)
    counting.queries = 0
    assert page(pending) == want  # short by three rows: merge_page asked once more
    assert counting.queries == 2
    # the loaded ones tie their pending writes' versions: their op_ids read once, then dropped
    assert counting.tied == [sorted(set(new))]
    counting.queries = 0
    assert page(pending) == want and counting.queries == 1  # learnt again (and the loaded ones dropped)
    assert counting.tied == [sorted(set(new))]
    assert pending.list_todos(ME, ids[10], 50, None) == pending.list_todos(ME, ids[10], 50, None)


@pytest.mark.mariadb
@pytest.mark.redis
def test_redis_failing_after_the_page_query_was_sent_gives_the_loaded_page(merged):
    pending, counting, _, model = merged
    now = time.time_ns() // 1000
    assert pending.record(
        [
            make_command(
                "put", "todos", ME, loaded_ids(30)[0][:-1] + "1", now, new_op_id(), validate_todo({"title": "pending"})
            )
        ]
    )
    assert page(pending)[1] == "pending"  # while Redis answers
    pending.client = RespClient.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    counting.queries = 0
    assert page(pending) == expected(model)  # what is loaded: reads fall back to eventual
    assert counting.queries == 1  # the page query went first; the HGETALL then failed to send
    assert not pending.breaker.allows()
    assert counting.inner.list_todos(ME, None, 3, None)[0]["title"] == "loaded 0"  # the connection is clear


def _admin(url: str) -> dict[str, Any]:
    from chalicelib.db.urls import parse_db_url

    parsed = parse_db_url(url)
    return {"host": parsed.host, "port": parsed.port, "user": parsed.user or "root", "password": "", "autocommit": True}


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- issue 17, defect 3: ids that are not UUIDs, and collation errors, on MariaDB ---------------------
NON_ASCII_ID = "\u00e9" * 36


@pytest.mark.mariadb
@pytest.mark.redis
def test_a_non_ascii_pending_id_is_ignored_before_sql_and_nothing_trips(mysql_url, redis_server):
    """A pending field `t:{id}` whose id is not ASCII used to reach MariaDB in the page query's
    IN list as 1267 "Illegal mix of collations", answered as an outage (503) with the reader's
    breaker open. Its id is checked first now: the page is what is loaded, nothing fails."""
    master = open_master(mysql_url)
    master.migrate()
    body = b"".join(
        make_command("put", "todos", ME, i, 1000 + n, new_op_id(), validate_todo({"title": f"loaded {n}"})).to_line()
        for n, i in enumerate(loaded_ids(5))
    )
    BatchLoader(master).load("local", "writes/2026/01/01/00/non-ascii", local_etag(body), body)
    replicas = ReplicaReader([SqlReader(open_reader(mysql_url))])
    client = RespClient.from_url(redis_server)
    prefix = f"sluice-test-{uuid.uuid4().hex[:8]}:v1"
    pending = PendingWrites(CachedReader(replicas, client, 300, prefix=prefix), 900)
    try:
        now = time.time_ns() // 1000
        good = make_command(
            "put", "todos", ME, loaded_ids(5)[0][:-1] + "1", now, new_op_id(), validate_todo({"title": "p"})
        )
        assert pending.record([good])
        value = client.execute_command("HGET", pending_key(ME, prefix), f"t:{good.id}")
        client.execute_command("HSET", pending_key(ME, prefix), f"t:{NON_ASCII_ID}".encode(), value)
        for _ in range(2):  # the process's guess names the ids it saw: the bad one never
            titles = [r["title"] for r in pending.list_todos(ME, None, 10, None)]
            assert titles == ["loaded 0", "p", "loaded 1", "loaded 2", "loaded 3", "loaded 4"]
        assert all(breaker.allows() for breaker in replicas.breakers) and pending.breaker.allows()
    finally:
        client.execute_command("DEL", pending_key(ME, prefix))
        client.close()
        replicas.readers[0].db.discard()  # type: ignore[attr-defined]
        master.discard()


@pytest.mark.mariadb
def test_a_collation_error_that_reaches_the_database_is_a_bug_never_an_outage(mysql_url):
    """Should an id that is not ASCII reach SQL anyway, MariaDB answers 1267/1271: the server
    answered, so it is raised as the bug it is (a 500 at the HTTP edge), not DatabaseUnavailable
    (503), and the reader's breaker stays closed. Failed before: DatabaseUnavailable, breaker open."""
    import pymysql

    master = open_master(mysql_url)
    master.migrate()
    replicas = ReplicaReader([SqlReader(open_reader(mysql_url))])
    try:
        for read in (
            lambda: replicas.list_seen("todos", OWNER, None, 10, state_filter(None), [NON_ASCII_ID]),
            lambda: replicas.start_list_seen("todos", OWNER, None, 10, state_filter(None), [IDS[0], NON_ASCII_ID])(),
            lambda: replicas.seen_todo(OWNER, NON_ASCII_ID),
        ):
            with pytest.raises(pymysql.err.OperationalError) as raised:
                read()
            assert not isinstance(raised.value, DatabaseUnavailable)
            assert raised.value.args[0] in (1267, 1270, 1271)  # "Illegal mix of collations"
            assert all(breaker.allows() for breaker in replicas.breakers)
        assert replicas.list_seen("todos", OWNER, None, 10, state_filter(None), [IDS[0]]) == []  # the reader goes on
    finally:
        replicas.readers[0].db.discard()  # type: ignore[attr-defined]
        master.discard()


@pytest.mark.mariadb
@pytest.mark.redis
def test_through_the_api_a_bad_pending_id_is_ignored_and_one_that_reached_sql_would_be_a_500(
    mysql_url, redis_server, local_dir, monkeypatch
):
    """GET /todos on MariaDB with a non-ASCII pending id: 200 and the page (the id is checked
    before any SQL). With that check taken away, the collation error it causes is a 500 with no
    internals, never the outage's 503, and no breaker opens."""
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap
    from chalicelib.config import Settings
    from chalicelib.readers import pending_entry
    from tests.conftest import auth, body

    settings = Settings.from_env(
        {"DATABASE_URL": mysql_url, "CACHE_URL": redis_server, "LOCAL_DATA_DIR": str(local_dir)}
    )
    built = bootstrap.build(settings)
    built.master.migrate()
    bootstrap.use(built)
    me = str(uuid.uuid4())
    hash_key = pending_key(me, "sluice:v1")
    client = RespClient.from_url(redis_server)
    try:
        with Client(app_module.app) as api:
            todo_id = api.http.post("/todos", headers=auth(me), body=body({"title": "mine"})).json_body["id"]
            head, row = client.execute_command("HGET", hash_key, f"t:{todo_id}").rsplit(b"|", 1)
            row = json.dumps(dict(json.loads(row), id=NON_ASCII_ID)).encode()  # a row of that id
            client.execute_command("HSET", hash_key, f"t:{NON_ASCII_ID}".encode(), head + b"|" + row)
            page = api.http.get("/todos", headers=auth(me))
            assert page.status_code == 200 and [t["id"] for t in page.json_body["todos"]] == [todo_id]

            monkeypatch.setattr(pending_entry, "id_of", lambda resource, name: bytes(name[2:]).decode())
            page = api.http.get("/todos", headers=auth(me))
            assert page.status_code == 500 and page.json_body["error"] == "internal_error"
            assert "collation" not in page.body.decode().lower()
            assert all(b.allows() for b in built.reader.inner.breakers)  # type: ignore[attr-defined]
            monkeypatch.undo()
            assert api.http.get("/todos", headers=auth(me)).status_code == 200
    finally:
        client.execute_command("DEL", hash_key)
        for key in client.execute_command("KEYS", f"sluice:v1:*:{me}*") or []:
            client.execute_command("DEL", key)
        client.close()
        bootstrap.reset()
        built.master.discard()
