"""The SQL and Lua that restate last-writer-wins agree with `chalicelib.ordering.newer`.

On drawn pairs of (version, op_id), ties included: the loader's guarded upsert on SQLite and on
MariaDB, the whole loader on MariaDB (its LOAD DATA path decides new, newer and stale in SQL),
and the Lua of the read cache (GUARDED_SET) and of the pending writes (RECORD) on Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.database import Database, open_master
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.loader.apply import SqlApplier
from chalicelib.ordering import Order, newer
from chalicelib.readers.cache import PRESENT, guarded_set, parse_entry
from chalicelib.readers.pending import RECORD, parse_pending, run_script
from chalicelib.readers.resp import RespClient
from chalicelib.rows import table as table_of

OWNER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
# op_ids that differ first in their last, first and middle characters, so ties on version are
# decided at every position.
OP_IDS = (
    "00000000-0000-4000-8000-000000000000",
    "00000000-0000-4000-8000-000000000001",
    "10000000-0000-4000-8000-000000000000",
    "00000000-0000-4000-9000-000000000000",
    "ffffffff-ffff-4fff-bfff-ffffffffffff",
)
orders = st.tuples(st.integers(1, 3), st.sampled_from(OP_IDS))
pairs = st.lists(st.tuples(orders, orders), min_size=1, max_size=30)
EXAMPLES = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1, version=4)) for i in range(n)]


def _command(id_: str, order: Order, side: int) -> WriteCommand:
    data = {
        "title": f"side {side}",
        "notes": "",
        "state": "open",
        "tags": [],
        "due_at": None,
        "priority": 3,
        "list_id": None,
    }
    return make_command("put", "todos", OWNER, id_, order[0], order[1], data)


def _expected(drawn: list[tuple[Order, Order]]) -> list[int]:
    """Which side each key holds after side 0, then side 1: side 1 only when newer (on equal
    orders the stored one stays)."""
    return [1 if newer(incoming, stored) else 0 for stored, incoming in drawn]


def _held(db: Database, ids: list[str]) -> list[int]:
    rows = dict(db.query("SELECT id, title FROM todos"))
    return [int(rows[i].removeprefix("side ")) for i in ids]


def _upsert_twice(db: Database, drawn: list[tuple[Order, Order]]) -> list[int]:
    table = table_of("todos")
    applier = SqlApplier(db)
    ids = _ids(len(drawn))
    with db.transaction() as cur:
        cur.execute("DELETE FROM todos")
    for side in (0, 1):
        with db.transaction() as cur:
            commands = [_command(i, p[side], side) for i, p in zip(ids, drawn, strict=True)]
            cur.executemany(applier.upsert_sql(table), [table.row(c, c.stored_at) for c in commands])
    return _held(db, ids)


@pytest.fixture(params=["sqlite", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'order.db'}" if request.param == "sqlite" else request.getfixturevalue("mysql_url")
    database = open_master(url)
    database.migrate()
    yield database
    database.discard()


@EXAMPLES
@given(drawn=pairs)
def test_the_upsert_guard_is_newer(db: Database, drawn: list[tuple[Order, Order]]) -> None:
    assert _upsert_twice(db, drawn) == _expected(drawn)


@EXAMPLES
@given(drawn=pairs)
def test_the_loader_decides_with_newer(db: Database, drawn: list[tuple[Order, Order]]) -> None:
    # GIVEN every key stored at its first order, WHEN an object brings the second, THEN each
    # key holds what newer() says (on MariaDB: the LOAD DATA path's DECIDE or the upsert's guard).
    ids = _ids(len(drawn))
    with db.transaction() as cur:
        cur.execute("DELETE FROM todos")
        cur.execute("DELETE FROM ingest_batches")
    loader = BatchLoader(db)
    for side in (0, 1):
        body = b"".join(_command(i, p[side], side).to_line() for i, p in zip(ids, drawn, strict=True))
        loader.load("test", f"writes/2026/01/01/00/order-{side}", local_etag(body), body)
    assert _held(db, ids) == _expected(drawn)


@pytest.mark.redis
@EXAMPLES
@given(drawn=pairs)
def test_the_cache_script_is_newer(redis: RespClient, drawn: list[tuple[Order, Order]]) -> None:
    prefix = f"sluice-test-{uuid.uuid4().hex[:12]}:order:"
    keys = [prefix + str(n) for n in range(len(drawn))]
    try:
        for side in (0, 1):
            entries = [(k, PRESENT, p[side][0], p[side][1], b"%d" % side) for k, p in zip(keys, drawn, strict=True)]
            guarded_set(redis, "load", 60_000, entries)
        held: list[Any] = []
        for key in keys:
            entry = parse_entry(redis.execute_command("GET", key))
            assert entry is not None
            held.append(entry[3])
        assert held == _expected(drawn)
    finally:
        redis.execute_command("DEL", *keys)


@pytest.mark.redis
@EXAMPLES
@given(drawn=pairs)
def test_the_pending_script_is_newer(redis: RespClient, drawn: list[tuple[Order, Order]]) -> None:
    hash_key = f"sluice-test-{uuid.uuid4().hex[:12]}:pending"
    fields = [f"t:{n}" for n in range(len(drawn))]
    try:
        for side in (0, 1):
            args: list[Any] = [60_000]
            for field, pair in zip(fields, drawn, strict=True):
                args += [field, PRESENT, pair[side][0], pair[side][1], b"%d" % side]
            run_script(redis, RECORD, [hash_key], args)
        held = []
        for field in fields:
            entry = parse_pending(field, redis.execute_command("HGET", hash_key, field))
            assert entry is not None
            held.append(int(bytes(entry.data or b"")))
        assert held == _expected(drawn)
    finally:
        redis.execute_command("DEL", hash_key)
