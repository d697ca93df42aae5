"""What the loader hands the read cache after a commit, against the real loader and the real Redis.

created_at: a command that loads after the cached row, older than it but with an earlier `at`,
lowers the row's created_at in the table, and so in its cache entry (CONTRACT section 3: created_at
is the earliest `at` of any command seen for the row, deletes included, the same on every route
whatever order objects arrive in). Found by the history checker (tests/histories/FOUND.md): before,
the loader's cache update for such a command was a fence older than the entry, refused (or, for an
object of stale commands only, not sent at all), and `GET /todos/{id}` and `GET /me` kept the entry's
created_at until it expired while `GET /todos` showed the table's.

On the embedded SQLite file and on MariaDB (its small-object upsert and its LOAD DATA path); every
key lives under a prefix of the test's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.database import Database, open_database, open_master
from chalicelib.ids import VersionClock, new_op_id, uuid7, version_to_ts
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.loader.mysql_fast import MySQLFastApplier
from chalicelib.models import validate_profile, validate_todo
from chalicelib.readers import Row
from chalicelib.readers.cache import (
    PRESENT,
    UNKNOWN,
    CachedReader,
    CacheInvalidator,
    change_for,
    dump_row,
    guarded_set,
    parse_entry,
    todo_key,
)
from chalicelib.readers.pending import PendingWrites
from chalicelib.readers.resp import RespClient
from chalicelib.readers.sql import SqlReader

pytestmark = pytest.mark.redis

OWNER = "3f2b8c1d-6e5a-4b7c-9d8e-1f0a2b3c4d5e"
clock = VersionClock()


@pytest.fixture(params=["sqlite", "mariadb-upsert", "mariadb-load-data"])
def loader_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, str]]:
    """(the master, the path its loads take): SQLite's upsert, MariaDB's multi-row upsert (objects
    below the fast path's size), MariaDB's LOAD DATA path (the keys way: rows already stored)."""
    path = request.param
    url = f"sqlite:///{tmp_path / 'master.db'}" if path == "sqlite" else request.getfixturevalue("mysql_url")
    database = open_master(url)
    database.migrate()
    yield database, path
    database.discard()


def loader_for(db: Database, path: str, redis: RespClient, prefix: str) -> BatchLoader:
    loader = BatchLoader(db, on_commit=CacheInvalidator(redis, 60, prefix=prefix))
    if path == "mariadb-upsert":
        loader.applier = MySQLFastApplier(db, min_rows=10_000)
    elif path == "mariadb-load-data":
        loader.applier = MySQLFastApplier(db, min_rows=1, chunk_lines=2, threaded=False, prefers_keys=True)
    return loader


def load(loader: BatchLoader, *commands: WriteCommand) -> Any:
    body = b"".join(c.to_line() for c in commands)
    return loader.load("test", f"writes/2026/01/01/00/created-{uuid.uuid4()}", local_etag(body), body)


def put(todo_id: str, title: str, version: int) -> WriteCommand:
    return make_command("put", "todos", OWNER, todo_id, version, new_op_id(), validate_todo({"title": title}))


def put_profile(name: str, version: int) -> WriteCommand:
    data = validate_profile({"display_name": name})
    return make_command("put", "profiles", OWNER, OWNER, version, new_op_id(), data)


def shown(version: int) -> str:
    """A version's instant as reads show created_at (the fraction only when there is one)."""
    at = version_to_ts(version)
    return at if version % 1_000_000 else at[:19] + "Z"


def created_everywhere(db: Database, redis: RespClient, prefix: str, ids: list[str]) -> dict[str, list[str]]:
    """created_at of each todo and of the profile on every read: by key through the cache alone, by
    key through the pending writes' read (the owner's reads), and as the table holds it (the page)."""
    cached = CachedReader(SqlReader(db), redis, 60, prefix=prefix)
    pending = PendingWrites(cached, 900)
    page = {row["id"]: row for row in SqlReader(db).list_todos(OWNER, None, 100, None)}
    out: dict[str, list[str]] = {}
    for todo_id in ids:
        by_key = cached.get_todo(OWNER, todo_id)
        seen = pending.get_todo(OWNER, todo_id).row
        assert by_key is not None and seen is not None
        out[todo_id] = [by_key["created_at"], seen["created_at"], page[todo_id]["created_at"]]
    profile = cached.get_profile(OWNER)
    seen_profile = pending.get_profile(OWNER).row
    stored_profile = SqlReader(db).get_profile(OWNER)
    assert profile is not None and seen_profile is not None and stored_profile is not None
    out["profile"] = [profile["created_at"], seen_profile["created_at"], stored_profile["created_at"]]
    return out


def test_an_older_command_loaded_after_the_cached_row_lowers_its_created_at_on_every_route(
    loader_db: tuple[Database, str], redis: RespClient, prefix: str
) -> None:
    db, path = loader_db
    loader = loader_for(db, path, redis, prefix)
    ids = sorted(uuid7() for _ in range(3))
    # GIVEN each todo and the profile written twice, the second write (newer) loaded first, in one
    # object, and read (so every key has a cache entry holding the second write's instant),
    first = {i: put(i, "first", clock.next()) for i in ids}
    first_profile = put_profile("First", clock.next())
    second = {i: put(i, "second", clock.next()) for i in ids}
    second_profile = put_profile("Second", clock.next())
    assert load(loader, *second.values(), second_profile).applied == len(ids) + 1
    before = created_everywhere(db, redis, prefix, ids)
    assert before["profile"] == [shown(second_profile.version)] * 3
    assert all(before[i] == [shown(second[i].version)] * 3 for i in ids)
    # WHEN the first writes load after them (an object delivered late): older, so stale,
    result = load(loader, *first.values(), first_profile)
    assert (result.applied, result.stale) == (0, len(ids) + 1)
    # THEN every route shows the first write's instant, the cached reads as the table does.
    after = created_everywhere(db, redis, prefix, ids)
    assert after["profile"] == [shown(first_profile.version)] * 3
    assert {i: after[i] for i in ids} == {i: [shown(first[i].version)] * 3 for i in ids}
    for todo_id in ids:  # the entries still hold the second write's rows
        entry = parse_entry(redis.execute_command("GET", todo_key(OWNER, todo_id, prefix)))
        assert entry is not None and entry[:2] == (PRESENT, second[todo_id].version)


def test_the_earliest_at_of_an_object_counts_a_delete_it_holds(
    loader_db: tuple[Database, str], redis: RespClient, prefix: str
) -> None:
    db, path = loader_db
    loader = loader_for(db, path, redis, prefix)
    todo_id = uuid7()
    gone = make_command("delete", "todos", OWNER, todo_id, clock.next(), new_op_id(), None)
    middle = put(todo_id, "middle", clock.next())
    newest = put(todo_id, "newest", clock.next())
    load(loader, newest, put_profile("Me", clock.next()))
    assert created_everywhere(db, redis, prefix, [todo_id])[todo_id] == [shown(newest.version)] * 3
    # WHEN one object brings two older commands of the key, its earliest a delete,
    load(loader, middle, gone)
    # THEN created_at is the delete's instant on every route (deletes count, CONTRACT section 3).
    assert created_everywhere(db, redis, prefix, [todo_id])[todo_id] == [shown(gone.version)] * 3


def test_a_fill_from_a_lagging_replica_after_an_older_command_loaded_takes_the_lower_created_at(
    redis: RespClient, prefix: str, tmp_path: Path
) -> None:
    master = open_database(f"sqlite:///{tmp_path / 'master.db'}")
    lagging = open_database(f"sqlite:///{tmp_path / 'replica.db'}")
    todo_id = uuid7()
    first, second = put(todo_id, "first", clock.next()), put(todo_id, "second", clock.next())
    for db in (master, lagging):
        load(BatchLoader(db), second)
    # GIVEN no cache entry for the key (expired, say) when the older command loads on the master,
    load(BatchLoader(master, on_commit=CacheInvalidator(redis, 60, prefix=prefix)), first)
    entry = parse_entry(redis.execute_command("GET", todo_key(OWNER, todo_id, prefix)))
    assert entry is not None and entry[:3] == (UNKNOWN, first.version, first.op_id)  # a fence: a miss
    # WHEN a reader misses, reads the replica, which does not have the lower created_at yet, and fills,
    reader = CachedReader(SqlReader(lagging), redis, 60, prefix=prefix)
    answered = reader.get_todo(OWNER, todo_id)
    assert answered is not None and answered["created_at"] == shown(second.version)  # what it read
    # THEN the entry it filled holds the master's created_at, and later reads hit it.
    again = reader.get_todo(OWNER, todo_id)
    assert again is not None and (again["title"], again["created_at"]) == ("second", shown(first.version))
    assert again == SqlReader(master).get_todo(OWNER, todo_id)


def test_an_older_commands_update_that_reaches_redis_first_is_kept_by_the_newer_one(
    redis: RespClient, prefix: str
) -> None:
    # Two loaders: one commits the newer write (its created_at as it read it), then another commits
    # an older command that lowers created_at; their cache updates reach Redis in the other order.
    invalidator = CacheInvalidator(redis, 60, prefix=prefix)
    todo_id = uuid7()
    older, newer_put = put(todo_id, "older", clock.next()), put(todo_id, "newer", clock.next())
    key = todo_key(OWNER, todo_id, prefix)
    invalidator.apply([change_for(older)])  # the older one's update, first: a fence
    invalidator.apply([change_for(newer_put, newer_put.stored_at)])  # the row, created_at as read
    entry = parse_entry(redis.execute_command("GET", key))
    assert entry is not None and entry[0] == PRESENT and entry[3] is not None
    assert (entry[3]["title"], entry[3]["created_at"]) == ("newer", shown(older.version))


def _present(key: str, version: int, row: Row) -> tuple[str, bytes, int, str, bytes]:
    return (key, PRESENT, version, new_op_id(), dump_row(row))


def test_lowering_created_at_rewrites_that_text_alone(redis: RespClient, prefix: str) -> None:
    # The payload is never decoded and encoded again: numbers beyond 2^53, floats and a title
    # holding the very text of the created_at key stay byte for byte.
    key = f"{prefix}:todo:{OWNER}:{uuid7()}"
    row = {
        "title": 'a "created_at":"2000-01-01T00:00:00Z" lookalike',
        "big": 2**63 + 1,
        "ratio": 0.1,
        "created_at": "2026-01-01T00:00:09.500000Z",
        "updated_at": "2026-01-01T00:00:09.500000Z",
    }
    stored = _present(key, 50, row)
    guarded_set(redis, "load", 60_000, [stored])
    older = (key, UNKNOWN, 40, new_op_id(), b"", "2026-01-01T00:00:03Z")  # refused, but its floor counts
    assert guarded_set(redis, "load", 60_000, [older]) == 0
    raw = redis.execute_command("GET", key)
    assert raw == stored[1] + b"|50|" + stored[3].encode() + b"|" + stored[4].replace(
        b'"created_at":"2026-01-01T00:00:09.500000Z"', b'"created_at":"2026-01-01T00:00:03Z"'
    )
    assert 55_000 < redis.execute_command("PTTL", key) <= 60_000  # its TTL kept


@pytest.mark.parametrize(
    ("cached", "floor", "expected"),
    [
        ("2026-01-01T00:00:05Z", "2026-01-01T00:00:05.500000Z", "2026-01-01T00:00:05Z"),  # not earlier
        ("2026-01-01T00:00:05.500000Z", "2026-01-01T00:00:05Z", "2026-01-01T00:00:05Z"),
        ("2026-01-01T00:00:05.000001Z", "2026-01-01T00:00:04.999999Z", "2026-01-01T00:00:04.999999Z"),
        ("2026-01-01T00:00:05Z", "2026-01-01T00:00:05Z", "2026-01-01T00:00:05Z"),
        ("2026-01-01T00:00:05Z", "2026-01-01T00:00:06Z", "2026-01-01T00:00:05Z"),
    ],
)
def test_created_at_is_compared_as_an_instant_with_or_without_a_fraction(
    redis: RespClient, prefix: str, cached: str, floor: str, expected: str
) -> None:
    key = f"{prefix}:todo:{OWNER}:{uuid7()}"
    guarded_set(redis, "load", 60_000, [_present(key, 50, {"created_at": cached})])
    guarded_set(redis, "load", 60_000, [(key, UNKNOWN, 40, new_op_id(), b"", floor)])
    entry = parse_entry(redis.execute_command("GET", key))
    assert entry is not None and entry[3] == {"created_at": expected}


# -- every key of an object reaches the cache, whichever way the fast path ends ---------------------
@pytest.mark.mariadb
def test_keys_after_the_fast_path_gives_up_halfway_reach_the_cache(
    mysql_db: Database, redis: RespClient, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.loader import fast_session, fast_worker

    applier = MySQLFastApplier(mysql_db, min_rows=1, chunk_lines=2, threaded=False, prefers_keys=True)
    loader = BatchLoader(mysql_db, applier, on_commit=CacheInvalidator(redis, 60, prefix=prefix))
    reader = CachedReader(SqlReader(mysql_db), redis, 60, prefix=prefix)
    last = uuid7()
    load(loader, put(last, "v1", clock.next()))
    assert reader.get_todo(OWNER, last)["title"] == "v1"  # type: ignore[index]
    # GIVEN the server refusing LOAD DATA once the object's first chunk went in (a proxy, say),
    real, calls = fast_session.load_file, [0]

    def refusing(cur: Any, statement: str, text: str) -> int:
        calls[0] += 1
        if calls[0] == 2:
            raise fast_worker.LoadRefused("refused after the first chunk")
        return real(cur, statement, text)

    monkeypatch.setattr(fast_session, "load_file", refusing)
    # WHEN an object whose last line changes the cached todo takes the upsert for the rest,
    news = [put(uuid7(), f"new {n}", clock.next()) for n in range(4)]
    result = load(loader, *news, put(last, "v2", clock.next()))
    assert (result.applied, applier.paths["refused"]) == (5, 1)
    # THEN its cache entry is updated like every other key's: reads show v2 at once.
    assert reader.get_todo(OWNER, last)["title"] == "v2"  # type: ignore[index]
    assert [reader.get_todo(OWNER, c.id)["title"] for c in news] == [c.data["title"] for c in news]  # type: ignore[index]
