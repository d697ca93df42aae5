"""The SQL and Lua that restate last-writer-wins agree with `chalicelib.ordering.newer`.

On drawn pairs of (version, op_id), ties included: the loader's guarded upsert on SQLite and on
MariaDB, the whole loader on MariaDB (its LOAD DATA path decides new, newer and stale in SQL),
the Lua of the read cache (GUARDED_SET, loads and fills over a fence) and of the pending writes
(RECORD, DROP) on Redis, and the reads that put a loaded state and a pending write side by side
(by key, from the cache or the database, and the merged page) on SQLite and MariaDB.
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
from chalicelib.readers.cache import (
    PRESENT,
    UNKNOWN,
    CachedReader,
    CacheInvalidator,
    entry_key,
    guarded_set,
    parse_entry,
)
from chalicelib.readers.pending import PendingWrites
from chalicelib.readers.pending_entry import parse_pending
from chalicelib.readers.resp import RespClient
from chalicelib.readers.scripts import DROP, RECORD, run_script
from chalicelib.readers.sql import SqlReader
from chalicelib.rows import table as table_of
from tests.factories import make

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
    return make_command("put", "todos", OWNER, id_, order[0], order[1], make("todos", title=f"side {side}"))


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


def _record(redis: RespClient, hash_key: str, fields: list[str], orders: list[Order], side: int) -> None:
    """RECORD one pending put per field at its order, its payload the side's number."""
    args: list[Any] = [60_000]
    for field, order in zip(fields, orders, strict=True):
        args += [field, PRESENT, order[0], order[1], b"%d" % side]
    run_script(redis, RECORD, [hash_key], args)


@pytest.mark.redis
@EXAMPLES
@given(drawn=pairs)
def test_the_pending_script_is_newer(redis: RespClient, drawn: list[tuple[Order, Order]]) -> None:
    hash_key = f"sluice-test-{uuid.uuid4().hex[:12]}:pending"
    fields = [f"t:{n}" for n in range(len(drawn))]
    try:
        for side in (0, 1):
            _record(redis, hash_key, fields, [pair[side] for pair in drawn], side)
        held = []
        for field in fields:
            entry = parse_pending(field, redis.execute_command("HGET", hash_key, field))
            assert entry is not None
            held.append(int(bytes(entry.data or b"")))
        assert held == _expected(drawn)
    finally:
        redis.execute_command("DEL", hash_key)


@pytest.mark.redis
@EXAMPLES
@given(drawn=pairs)
def test_the_drop_script_is_newer(redis: RespClient, drawn: list[tuple[Order, Order]]) -> None:
    # GIVEN a pending entry at the first order, WHEN a read that showed the second drops it,
    # THEN it is gone unless it is newer than what the read showed.
    hash_key = f"sluice-test-{uuid.uuid4().hex[:12]}:pending"
    fields = [f"t:{n}" for n in range(len(drawn))]
    try:
        _record(redis, hash_key, fields, [pair[0] for pair in drawn], 0)
        dropped: list[Any] = []
        for field, pair in zip(fields, drawn, strict=True):
            dropped += [field, pair[1][0], pair[1][1]]
        run_script(redis, DROP, [hash_key], dropped)
        kept = [redis.execute_command("HGET", hash_key, field) is not None for field in fields]
        assert kept == [newer(entry, shown) for entry, shown in drawn]
    finally:
        redis.execute_command("DEL", hash_key)


@pytest.mark.redis
@EXAMPLES
@given(drawn=pairs)
def test_a_fill_replaces_a_fence_it_is_at_least_as_new_as(redis: RespClient, drawn: list[tuple[Order, Order]]) -> None:
    # GIVEN the loader's fence (a change whose row it did not give) at the first order, WHEN a
    # read fills the second, THEN the fill is written unless the fence is newer; a fill that does
    # not know its op_id (CachedReader's) by its version alone.
    prefix = f"sluice-test-{uuid.uuid4().hex[:12]}:fence:"
    keys = [prefix + str(n) for n in range(len(drawn))]
    try:
        for unknown_op in (False, True):
            fences = [(k, UNKNOWN, p[0][0], p[0][1], b"") for k, p in zip(keys, drawn, strict=True)]
            redis.execute_command("DEL", *keys)
            guarded_set(redis, "load", 60_000, fences)
            fills = [
                (k, PRESENT, p[1][0], "" if unknown_op else p[1][1], b"1") for k, p in zip(keys, drawn, strict=True)
            ]
            guarded_set(redis, "fill", 60_000, fills)
            held = []
            for key in keys:
                entry = parse_entry(redis.execute_command("GET", key))
                assert entry is not None
                held.append(entry[0] == PRESENT)
            if unknown_op:
                assert held == [shown[0] >= fence[0] for fence, shown in drawn]
            else:
                assert held == [not newer(fence, shown) for fence, shown in drawn]
    finally:
        redis.execute_command("DEL", *keys)


@pytest.mark.redis
@EXAMPLES
@given(drawn=pairs)
def test_reads_show_a_pending_write_over_a_loaded_state_when_it_is_newer(
    db: Database, redis: RespClient, drawn: list[tuple[Order, Order]]
) -> None:
    # GIVEN every key loaded at its first order (the loader's cache entries written) and the
    # caller's pending write at the second, THEN every read shows the pending write exactly when
    # it is newer: by key from the cache entry, the merged page, by key from the database.
    ids = _ids(len(drawn))
    prefix = f"sluice-test-{uuid.uuid4().hex[:12]}:v1"
    with db.transaction() as cur:
        cur.execute("DELETE FROM todos")
        cur.execute("DELETE FROM ingest_batches")
    body = b"".join(_command(i, p[0], 0).to_line() for i, p in zip(ids, drawn, strict=True))
    BatchLoader(db, on_commit=CacheInvalidator(redis, 60, prefix=prefix)).load(
        "test", "writes/2026/01/01/00/order-loaded", local_etag(body), body
    )
    # versions 1 to 3 are far in the past: a clock at 0 keeps the pending writes from expiring
    pending = PendingWrites(CachedReader(SqlReader(db), redis, 60, prefix=prefix), 900, clock=lambda: 0)
    try:
        assert pending.record([_command(i, p[1], 1) for i, p in zip(ids, drawn, strict=True)])
        expected = [f"side {side}" for side in _expected(drawn)]
        assert [_title(pending.get_todo(OWNER, i).row) for i in ids] == expected
        assert [row["title"] for row in pending.list_todos(OWNER, None, len(ids) + 1, None)] == expected
        assert redis.execute_command("DEL", *[entry_key("todos", OWNER, i, prefix) for i in ids]) == len(ids)
        assert [_title(pending.get_todo(OWNER, i).row) for i in ids] == expected
    finally:
        for key in redis.execute_command("KEYS", f"{prefix}:*") or []:
            redis.execute_command("DEL", key)


def _title(row: Any) -> Any:
    return None if row is None else row["title"]
