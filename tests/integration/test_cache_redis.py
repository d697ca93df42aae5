"""The Redis read cache against the real Redis server (fixture `redis_server`).

The databases here are embedded SQLite files: a "master" the real loader writes, and where a
test needs a lagging replica, a second file that holds an older state. Redis is what is under
test; every key lives under a prefix of the test's own, removed afterwards.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.database import Database, open_database
from chalicelib.ids import VersionClock, new_op_id, uuid7
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.models import validate_profile, validate_todo
from chalicelib.readers import Filters, Reader, Row, scripts
from chalicelib.readers import cache as cache_module
from chalicelib.readers.cache import (
    ROW_UNKNOWN,
    Breaker,
    CachedReader,
    CacheInvalidator,
    build_cache,
    change_for,
    parse_entry,
    profile_key,
    todo_key,
)
from chalicelib.readers.resp import CacheUrl, RespClient, RespConnectionError, RespError
from chalicelib.readers.sql import SqlReader

pytestmark = pytest.mark.redis

ALICE = "6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
BOB = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
clock = VersionClock()


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def master(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'master.sqlite3'}")


@pytest.fixture
def lagging(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'replica.sqlite3'}")


class CountingReader(Reader):
    """Counts what reaches the database; `between` runs after the read and before returning."""

    def __init__(self, inner: Reader, between: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.calls = 0
        self.between = between

    def _after(self, row: Any) -> Any:
        self.calls += 1
        if self.between is not None:
            step, self.between = self.between, None
            step()
        return row

    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        return self._after(self.inner.get(resource, owner, id_))

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        return self._after(self.inner.list_rows(resource, owner, after, limit, filters))


def put(owner: str, todo_id: str, title: str, version: int | None = None, op_id: str | None = None) -> WriteCommand:
    data = validate_todo({"title": title, "tags": ["home"]})
    return make_command("put", "todos", owner, todo_id, version or clock.next(), op_id or new_op_id(), data)


def delete(owner: str, todo_id: str, version: int | None = None) -> WriteCommand:
    return make_command("delete", "todos", owner, todo_id, version or clock.next(), new_op_id(), None)


def put_profile(owner: str, name: str) -> WriteCommand:
    return make_command(
        "put", "profiles", owner, owner, clock.next(), new_op_id(), validate_profile({"display_name": name})
    )


def load(db: Database, *commands: WriteCommand) -> None:
    body = b"".join(c.to_line() for c in commands)
    result = BatchLoader(db).load("local", f"writes/2026/01/01/00/t-{uuid.uuid4()}", local_etag(body), body)
    assert result.applied == len(commands), result


def load_and_invalidate(db: Database, invalidator: CacheInvalidator, *commands: WriteCommand) -> None:
    """The loader's side as the lead wires it: after the commit, the changed keys with their rows.

    Uses BatchLoader's `on_commit` hook when it has one; otherwise loads, then hands over the
    same changes the hook would (created_at of a key written the first time is its command's)."""
    body = b"".join(c.to_line() for c in commands)
    key = f"writes/2026/01/01/00/t-{uuid.uuid4()}"
    if "on_commit" in inspect.signature(BatchLoader).parameters:
        BatchLoader(db, on_commit=invalidator).load("local", key, local_etag(body), body)  # type: ignore[call-arg]
        return
    BatchLoader(db).load("local", key, local_etag(body), body)
    invalidator.apply([change_for(c, _created_at(db, c)) for c in commands])


def _created_at(db: Database, command: WriteCommand) -> str:
    table = "todos WHERE owner = %s AND id = %s" if command.resource == "todos" else "profiles WHERE owner = %s"
    params = (command.owner, command.id) if command.resource == "todos" else (command.owner,)
    return str(db.query(f"SELECT created_at FROM {table}", params)[0][0])


def raw(redis: RespClient, key: str) -> tuple[bytes, int, str, Row | None] | None:
    return parse_entry(redis.execute_command("GET", key))


# -- read-through -------------------------------------------------------------------------------
def test_second_read_is_served_by_redis(redis: RespClient, prefix: str, master: Database) -> None:
    todo_id = uuid7()
    load(master, put(ALICE, todo_id, "Water the plants"))
    db = CountingReader(SqlReader(master))
    reader = CachedReader(db, redis, 60, prefix=prefix)

    first = reader.get_todo(ALICE, todo_id)
    second = reader.get_todo(ALICE, todo_id)

    assert first is not None and first["title"] == "Water the plants"
    assert second == first == SqlReader(master).get_todo(ALICE, todo_id)
    assert db.calls == 1
    stored = raw(redis, todo_key(ALICE, todo_id, prefix))
    assert stored is not None and stored[:3] == (b"p", first["version"], "")


def test_profile_read_through_and_absent_profile(redis: RespClient, prefix: str, master: Database) -> None:
    load(master, put_profile(ALICE, "Alice"))
    db = CountingReader(SqlReader(master))
    reader = CachedReader(db, redis, 60, negative_ttl=5, prefix=prefix)

    assert reader.get_profile(ALICE) == reader.get_profile(ALICE) == SqlReader(master).get_profile(ALICE)
    assert reader.get_profile(BOB) is None
    assert reader.get_profile(BOB) is None
    assert db.calls == 2  # one per owner
    assert raw(redis, profile_key(BOB, prefix)) == (b"a", 0, "", None)
    assert 0 < redis.execute_command("PTTL", profile_key(BOB, prefix)) <= 5000


def test_lists_are_not_cached(redis: RespClient, prefix: str, master: Database) -> None:
    load(master, put(ALICE, uuid7(), "one"), put(ALICE, uuid7(), "two"))
    db = CountingReader(SqlReader(master))
    reader = CachedReader(db, redis, 60, prefix=prefix)

    assert len(reader.list_todos(ALICE, None, 10, None)) == 2
    assert len(reader.list_todos(ALICE, None, 10, None)) == 2
    assert db.calls == 2
    assert redis.execute_command("KEYS", prefix + ":*") == []


def test_entries_are_scoped_by_owner(redis: RespClient, prefix: str, master: Database) -> None:
    shared_id = uuid7()  # ids are unique per user: two users may hold the same one
    load(master, put(ALICE, shared_id, "alice's"), put(BOB, shared_id, "bob's"))
    reader = CachedReader(SqlReader(master), redis, 60, prefix=prefix)
    only_alice = uuid7()
    load(master, put(ALICE, only_alice, "private"))

    assert reader.get_todo(ALICE, shared_id)["title"] == "alice's"  # type: ignore[index]
    assert reader.get_todo(BOB, shared_id)["title"] == "bob's"  # type: ignore[index]
    assert reader.get_todo(ALICE, only_alice) is not None
    assert reader.get_todo(BOB, only_alice) is None
    assert reader.get_todo(BOB, only_alice) is None
    assert todo_key(ALICE, shared_id, prefix) != todo_key(BOB, shared_id, prefix)


def test_odd_owners_get_hashed_keys_of_their_own(redis: RespClient, prefix: str, master: Database) -> None:
    odd = "user:with spaces/and:ünïcode*"
    lookalike = "user"
    todo_id = uuid7()
    load(master, put(odd, todo_id, "odd"))
    reader = CachedReader(SqlReader(master), redis, 60, prefix=prefix)

    assert reader.get_todo(odd, todo_id)["title"] == "odd"  # type: ignore[index]
    key = todo_key(odd, todo_id, prefix)
    assert odd not in key and ":~" in key and key.endswith(todo_id)
    assert reader.get_todo(lookalike, todo_id) is None
    assert reader.get_todo(odd, todo_id)["title"] == "odd"  # type: ignore[index]


def test_bad_entries_are_misses(redis: RespClient, prefix: str, master: Database) -> None:
    todo_id = uuid7()
    load(master, put(ALICE, todo_id, "real"))
    redis.execute_command("SET", todo_key(ALICE, todo_id, prefix), b"garbage without the header", "PX", 60000)
    reader = CachedReader(SqlReader(master), redis, 60, prefix=prefix)

    assert reader.get_todo(ALICE, todo_id)["title"] == "real"  # type: ignore[index]
    assert raw(redis, todo_key(ALICE, todo_id, prefix))[0] == b"p"  # type: ignore[index]


# -- the loader's updates ------------------------------------------------------------------------
def test_load_updates_exactly_the_changed_keys(redis: RespClient, prefix: str, master: Database) -> None:
    changed, untouched = uuid7(), uuid7()
    load(master, put(ALICE, changed, "v1"), put(ALICE, untouched, "other"))
    db = CountingReader(SqlReader(master))
    reader = CachedReader(db, redis, 60, prefix=prefix)
    invalidator = CacheInvalidator(redis, 60, prefix=prefix)
    reader.get_todo(ALICE, changed)
    reader.get_todo(ALICE, untouched)
    untouched_before = redis.execute_command("GET", todo_key(ALICE, untouched, prefix))

    update = put(ALICE, changed, "v2")
    load_and_invalidate(master, invalidator, update)

    calls = db.calls
    cached = reader.get_todo(ALICE, changed)
    assert db.calls == calls  # answered from the entry the loader wrote
    assert cached == SqlReader(master).get_todo(ALICE, changed)
    assert cached is not None and cached["title"] == "v2" and cached["version"] == update.version
    assert raw(redis, todo_key(ALICE, changed, prefix))[2] == update.op_id  # type: ignore[index]
    assert redis.execute_command("GET", todo_key(ALICE, untouched, prefix)) == untouched_before

    gone = delete(ALICE, changed)
    load_and_invalidate(master, invalidator, gone)
    assert reader.get_todo(ALICE, changed) is None
    assert db.calls == calls
    assert raw(redis, todo_key(ALICE, changed, prefix)) == (b"a", gone.version, gone.op_id, None)


def test_profile_changes_reach_the_cache(redis: RespClient, prefix: str, master: Database) -> None:
    reader = CachedReader(SqlReader(master), redis, 60, prefix=prefix)
    invalidator = CacheInvalidator(redis, 60, prefix=prefix)
    assert reader.get_profile(ALICE) is None  # negative entry

    load_and_invalidate(master, invalidator, put_profile(ALICE, "Alice A."))

    assert reader.get_profile(ALICE) == SqlReader(master).get_profile(ALICE)
    assert reader.get_profile(ALICE)["display_name"] == "Alice A."  # type: ignore[index]


def test_version_guard_keeps_the_newest(redis: RespClient, prefix: str) -> None:
    invalidator = CacheInvalidator(redis, 60, prefix=prefix)
    todo_id = uuid7()
    key = todo_key(ALICE, todo_id, prefix)

    def change(version: int, op_id: str, title: str | None) -> tuple[str, str, str, int, str, Any]:
        row = None if title is None else {"id": todo_id, "title": title, "version": version}
        return ("todos", ALICE, todo_id, version, op_id, row)

    low, high = "1" + new_op_id()[1:], "f" + new_op_id()[1:]
    assert invalidator.apply([change(20, low, "v20")]) == 1
    assert invalidator.apply([change(10, high, "v10 arrives late")]) == 0
    assert raw(redis, key)[3]["title"] == "v20"  # type: ignore[index]
    # equal versions: the greater op_id wins, in either order
    assert invalidator.apply([change(20, high, "v20 high")]) == 1
    assert invalidator.apply([change(20, low, "v20 low again")]) == 0
    assert raw(redis, key)[3]["title"] == "v20 high"  # type: ignore[index]
    # a tombstone holds its version against older puts; a newer put replaces it
    assert invalidator.apply([change(30, low, None)]) == 1
    assert invalidator.apply([change(25, high, "v25")]) == 0
    assert raw(redis, key)[:2] == (b"a", 30)  # type: ignore[index]
    assert invalidator.apply([change(31, low, "v31")]) == 1
    assert raw(redis, key)[3]["title"] == "v31"  # type: ignore[index]
    # versions near 2**53 still compare exactly in Lua
    big = 2**53 - 2
    assert invalidator.apply([change(big, low, "big")]) == 1
    assert invalidator.apply([change(big - 1, high, "big-1")]) == 0
    assert invalidator.apply([change(big + 1, low, "big+1")]) == 1


def test_fills_never_replace_the_loaders_entry_of_the_same_version(redis: RespClient, prefix: str) -> None:
    todo_id = uuid7()
    key = todo_key(ALICE, todo_id, prefix)
    invalidator = CacheInvalidator(redis, 60, prefix=prefix)
    invalidator.apply([("todos", ALICE, todo_id, 7, new_op_id(), {"title": "loader", "version": 7})])

    cache_module.guarded_set(redis, "fill", 60000, [(key, b"p", 7, "", b'{"title":"fill","version":7}')])
    assert raw(redis, key)[3]["title"] == "loader"  # type: ignore[index]
    cache_module.guarded_set(redis, "fill", 60000, [(key, b"p", 8, "", b'{"title":"newer fill","version":8}')])
    assert raw(redis, key)[3]["title"] == "newer fill"  # type: ignore[index]


def test_a_fence_makes_a_miss_and_admits_the_fill_of_its_version(
    redis: RespClient, prefix: str, master: Database
) -> None:
    todo_id = uuid7()
    command = put(ALICE, todo_id, "known to the database only")
    load(master, command)
    db = CountingReader(SqlReader(master))
    reader = CachedReader(db, redis, 60, prefix=prefix)
    CacheInvalidator(redis, 60, prefix=prefix).apply([change_for(command)])  # row not given
    assert raw(redis, todo_key(ALICE, todo_id, prefix))[0] == b"m"  # type: ignore[index]

    assert reader.get_todo(ALICE, todo_id)["title"] == "known to the database only"  # type: ignore[index]
    assert reader.get_todo(ALICE, todo_id) is not None
    assert db.calls == 1
    assert raw(redis, todo_key(ALICE, todo_id, prefix))[0] == b"p"  # type: ignore[index]
    assert ROW_UNKNOWN is change_for(command)[5]


# -- the race: reader reads old, loader updates, reader fills -----------------------------------------
def test_reader_fill_of_an_old_row_loses_to_the_loaders_newer_entry(
    redis: RespClient, prefix: str, master: Database, lagging: Database
) -> None:
    todo_id = uuid7()
    v1 = put(ALICE, todo_id, "v1")
    load(master, v1)
    load(lagging, v1)  # the replica has v1 and will not see v2 during this test
    invalidator = CacheInvalidator(redis, 60, prefix=prefix)
    v2 = put(ALICE, todo_id, "v2")

    # GIVEN a reader that has read v1 from the lagging replica but not yet filled the cache,
    # WHEN the loader commits v2 and updates the cache in between,
    db = CountingReader(SqlReader(lagging), between=lambda: load_and_invalidate(master, invalidator, v2))
    reader = CachedReader(db, redis, 60, prefix=prefix)
    answered = reader.get_todo(ALICE, todo_id)

    # THEN that read answers what it read, but its fill does not overwrite the newer entry,
    assert answered is not None and answered["version"] == v1.version
    assert raw(redis, todo_key(ALICE, todo_id, prefix))[1] == v2.version  # type: ignore[index]
    # and every later read gets v2 from the cache, though the replica still holds v1.
    again = reader.get_todo(ALICE, todo_id)
    assert again is not None and again["title"] == "v2" and again["version"] == v2.version
    assert db.calls == 1


def test_reader_fill_of_absent_loses_to_a_create_in_between(
    redis: RespClient, prefix: str, master: Database, lagging: Database
) -> None:
    todo_id = uuid7()
    invalidator = CacheInvalidator(redis, 60, prefix=prefix)
    created = put(ALICE, todo_id, "just created")
    db = CountingReader(SqlReader(lagging), between=lambda: load_and_invalidate(master, invalidator, created))
    reader = CachedReader(db, redis, 60, prefix=prefix)

    assert reader.get_todo(ALICE, todo_id) is None  # what the lagging replica said
    later = reader.get_todo(ALICE, todo_id)
    assert later is not None and later["version"] == created.version
    assert db.calls == 1


def test_concurrent_fills_and_updates_end_on_the_newest(redis: RespClient, prefix: str, master: Database) -> None:
    """Many readers filling old versions while the loader walks a key forward: the last entry is
    always the loader's newest, whatever the interleaving."""
    todo_id = uuid7()
    key = todo_key(ALICE, todo_id, prefix)
    versions = [clock.next() for _ in range(40)]
    invalidator = CacheInvalidator(RespClient.from_url(_url(redis)), 60, prefix=prefix)
    errors: list[BaseException] = []

    def filler() -> None:
        client = RespClient.from_url(_url(redis))
        try:
            for version in versions:
                row = {"id": todo_id, "title": f"fill {version}", "version": version}
                cache_module.guarded_set(client, "fill", 60000, [(key, b"p", version, "", cache_module.dump_row(row))])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=filler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for version in versions:
        invalidator.apply(
            [("todos", ALICE, todo_id, version, new_op_id(), {"title": f"load {version}", "version": version})]
        )
    for thread in threads:
        thread.join()

    assert not errors
    state, version, op_id, row = raw(redis, key)  # type: ignore[misc]
    assert version == versions[-1] and op_id != "" and row["title"] == f"load {versions[-1]}"  # type: ignore[index]


def _url(redis: RespClient) -> str:
    return f"redis://{redis.host}:{redis.port}/{redis.db}"


# -- outages ---------------------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CountingClient:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def execute_command(self, *args: Any) -> Any:
        self.calls += 1
        return self.inner.execute_command(*args)


def test_redis_down_reads_answer_from_the_database(master: Database, prefix: str) -> None:
    todo_id = uuid7()
    load(master, put(ALICE, todo_id, "still readable"), put_profile(ALICE, "Alice"))
    dead = CountingClient(RespClient("127.0.0.1", closed_port(), connect_timeout=0.2, timeout=0.2))
    breaker = Breaker(cooldown=60)
    reader = CachedReader(SqlReader(master), dead, 60, breaker=breaker, prefix=prefix)

    assert reader.get_todo(ALICE, todo_id)["title"] == "still readable"  # type: ignore[index]
    assert reader.get_profile(ALICE)["display_name"] == "Alice"  # type: ignore[index]
    assert reader.get_todo(BOB, todo_id) is None
    assert dead.calls == 1  # the breaker kept the other reads away from the dead server
    assert not breaker.allows()
    invalidator = CacheInvalidator(dead, 60, breaker=breaker, prefix=prefix)
    assert invalidator.apply([change_for(put(ALICE, todo_id, "x"), "2026-01-01 00:00:00.000000")]) == 0


def test_a_silent_server_costs_one_short_timeout(master: Database, prefix: str) -> None:
    todo_id = uuid7()
    load(master, put(ALICE, todo_id, "answered"))
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = RespClient("127.0.0.1", silent.getsockname()[1], connect_timeout=0.2, timeout=0.05)
        reader = CachedReader(SqlReader(master), client, 60, breaker=Breaker(cooldown=60), prefix=prefix)
        started = time.monotonic()
        for _ in range(20):
            assert reader.get_todo(ALICE, todo_id)["title"] == "answered"  # type: ignore[index]
        elapsed = time.monotonic() - started
    assert elapsed < 2.0  # one 50 ms timeout, then the open breaker; not 20 timeouts in a row


def test_reads_use_redis_again_after_the_cooldown(redis: RespClient, prefix: str, master: Database) -> None:
    todo_id = uuid7()
    load(master, put(ALICE, todo_id, "back"))
    now = [0.0]
    breaker = Breaker(cooldown=5, clock=lambda: now[0])

    class Flaky:
        down = True

        def execute_command(self, *args: Any) -> Any:
            if self.down:
                raise RespConnectionError("down")
            return redis.execute_command(*args)

    flaky = Flaky()
    db = CountingReader(SqlReader(master))
    reader = CachedReader(db, flaky, 60, breaker=breaker, prefix=prefix)
    reader.get_todo(ALICE, todo_id)
    flaky.down = False
    reader.get_todo(ALICE, todo_id)  # still cooling down: not filled
    assert redis.execute_command("GET", todo_key(ALICE, todo_id, prefix)) is None
    now[0] = 6.0
    reader.get_todo(ALICE, todo_id)  # tries again, fills
    reader.get_todo(ALICE, todo_id)  # hit
    assert db.calls == 3
    assert breaker.allows() and breaker.open_until == 0.0


# -- TTLs, scripts, building ---------------------------------------------------------------------------
def test_every_entry_has_a_ttl(redis: RespClient, prefix: str, master: Database) -> None:
    present, missing, loaded = uuid7(), uuid7(), uuid7()
    load(master, put(ALICE, present, "p"))
    reader = CachedReader(SqlReader(master), redis, 30, negative_ttl=3, prefix=prefix)
    reader.get_todo(ALICE, present)
    reader.get_todo(ALICE, missing)
    CacheInvalidator(redis, 20, prefix=prefix).apply([change_for(delete(ALICE, loaded))])

    assert 25_000 < redis.execute_command("PTTL", todo_key(ALICE, present, prefix)) <= 30_000
    assert 0 < redis.execute_command("PTTL", todo_key(ALICE, missing, prefix)) <= 3_000
    assert 15_000 < redis.execute_command("PTTL", todo_key(ALICE, loaded, prefix)) <= 20_000


def test_a_flushed_script_cache_falls_back_to_eval(
    redis: RespClient, prefix: str, master: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    todo_id = uuid7()
    load(master, put(ALICE, todo_id, "x"))
    monkeypatch.setattr(scripts, "GUARDED_SET_SHA", "0" * 40)  # a script the server never saw
    reader = CachedReader(SqlReader(master), redis, 60, prefix=prefix)

    reader.get_todo(ALICE, todo_id)
    assert raw(redis, todo_key(ALICE, todo_id, prefix))[0] == b"p"  # type: ignore[index]
    with pytest.raises(RespError, match="NOSCRIPT"):
        redis.execute_command("EVALSHA", "0" * 40, 0)


def test_build_cache_off_by_default_and_wired_through_the_app(
    redis_server: str, redis: RespClient, tmp_path: Path
) -> None:
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap
    from chalicelib.config import Settings
    from tests.conftest import auth

    plain = bootstrap.build(Settings.from_env({"LOCAL_DATA_DIR": str(tmp_path)}))
    assert plain.service.pending is None and not isinstance(plain.reader, CachedReader)  # off by default
    plain.master.discard()
    settings = Settings.from_env({"LOCAL_DATA_DIR": str(tmp_path), "CACHE_URL": redis_server + "?cooldown=2"})
    cache_url = CacheUrl.parse(settings.cache_url)
    wrap, invalidator = build_cache(cache_url.client(), settings.cache_ttl_seconds, cache_url.cooldown)
    master = open_database(settings.database_url)
    db = CountingReader(SqlReader(master))
    reader = wrap(db)
    assert reader.breaker is invalidator.breaker and reader.breaker.cooldown == 2
    sub = f"app-{uuid.uuid4().hex}"
    try:
        bootstrap.use(bootstrap.build(settings, reader=reader))
        with Client(app_module.app) as client:
            created = client.http.post("/todos", headers=auth(sub), body='{"title": "through the app"}')
            assert created.status_code == 202
            todo_id = created.json_body["id"]
            first = client.http.get(f"/todos/{todo_id}", headers=auth(sub, json_body=False))
            second = client.http.get(f"/todos/{todo_id}", headers=auth(sub, json_body=False))
        assert first.status_code == second.status_code == 200
        assert first.json_body == second.json_body and first.json_body["title"] == "through the app"
        assert first.headers["ETag"] == second.headers["ETag"]
        # bootstrap wired the loader to the cache: the load that followed the POST wrote the row
        # into Redis after its commit, so neither read reached the database
        assert db.calls == 0
    finally:
        bootstrap.reset()
        redis.execute_command("DEL", todo_key(sub, todo_id))


# -- the RESP client -----------------------------------------------------------------------------
def test_resp_client_replies(redis: RespClient, prefix: str) -> None:
    key = prefix + ":resp"
    value = bytes(range(256)) * 600 + b"\r\n"  # binary, larger than one recv
    assert redis.execute_command("SET", key, value, "PX", 10000) == b"OK"
    assert redis.execute_command("GET", key) == value
    assert redis.execute_command("GET", prefix + ":absent") is None
    assert redis.execute_command("EVAL", "return {1, 'two', {3}, false}", 0) == [1, b"two", [3], None]
    replies = redis.pipeline([["PING"], ["NO-SUCH-COMMAND"], ["ECHO", "ünï"]])
    assert replies[0] == b"PONG" and isinstance(replies[1], RespError) and replies[2] == "ünï".encode()
    with pytest.raises(RespError):
        redis.execute_command("INCR", key)  # not an integer: an error reply, connection kept
    assert redis.execute_command("DEL", key) == 1
    assert redis.execute_command("PING") == b"PONG"


def test_resp_client_reconnects_after_the_server_drops_it(redis_server: str, redis: RespClient) -> None:
    client = RespClient.from_url(redis_server)
    own_id = client.execute_command("CLIENT", "ID")
    assert redis.execute_command("CLIENT", "KILL", "ID", own_id) == 1

    assert client.execute_command("PING") == b"PONG"  # retried once on a fresh connection
    assert client.connects == 2
    client.close()


def test_resp_client_send_reads_the_reply_later(redis_server: str, redis: RespClient, prefix: str) -> None:
    client = RespClient.from_url(redis_server)
    key = prefix + ":send"
    client.execute_command("SET", key, b"v", "PX", 10000)
    later = client.send("GET", key)
    assert redis.execute_command("PING") == b"PONG"  # other connections meanwhile
    assert later.result() == b"v"
    with pytest.raises(RuntimeError):
        later.result()  # one reply, read once
    with pytest.raises(RespError):
        client.send("INCR", key).result()  # an error reply; the connection is kept
    client.send("GET", key).abandon()  # the caller failed meanwhile: the connection is dropped
    assert client.execute_command("GET", key) == b"v" and client.connects == 2
    own_id = client.execute_command("CLIENT", "ID")
    assert redis.execute_command("CLIENT", "KILL", "ID", own_id) == 1
    assert client.send("GET", key).result() == b"v"  # found closed after idling: retried once
    assert client.connects == 3
    client.execute_command("DEL", key)
    client.close()


def test_resp_client_refused_and_url_options() -> None:
    client = RespClient.from_url(f"redis://:secret@127.0.0.1:{closed_port()}/3?timeout=0.05&connect_timeout=0.1")
    assert (client.db, client.password, client.timeout, client.connect_timeout) == (3, "secret", 0.05, 0.1)
    with pytest.raises(RespConnectionError):
        client.execute_command("PING")
    assert RespClient.from_url("rediss://user:pw@cache.example:6380").tls is True
    with pytest.raises(ValueError):
        RespClient.from_url("http://127.0.0.1:6379")
