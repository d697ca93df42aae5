"""Reading your own writes (CONTRACT section 3) against the real Redis: the app as bootstrap wires
it with CACHE_URL, a transport that accepts and holds commands as Firehose does (nothing loads
them until a test says so), and the embedded SQLite file as the only database (so its reads are
replica reads). Every test writes as owners of its own; their keys are removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chalicelib.ids import VersionClock
from chalicelib.readers.cache import todo_key
from chalicelib.readers.pending import PendingWrites, pending_key
from chalicelib.readers.resp import RespClient
from chalicelib.writers import CommandWriter
from tests.conftest import auth, body
from tests.factories import make

pytestmark = pytest.mark.redis


class HeldWriter(CommandWriter):
    """Accepts commands and keeps them, as Firehose's buffer does, until `load_all`."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, commands: Sequence[Any]) -> None:
        self.lines += [c.to_line() for c in commands]

    def load_all(self, built: Any, reverse: bool = False) -> None:
        from chalicelib.loader import local_etag

        lines, self.lines = (self.lines[::-1] if reverse else self.lines), []
        for n, line in enumerate(lines):  # one object per line: any order of arrival
            built.loader.load("local", f"writes/2026/01/01/00/held-{uuid.uuid4()}-{n}", local_etag(line), line)


@pytest.fixture
def owners(redis: RespClient) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for owner in made:
        for key in redis.execute_command("KEYS", f"sluice:v1:*:{owner}*") or []:
            redis.execute_command("DEL", key)


def new_owner(owners: list[str]) -> str:
    owners.append(str(uuid.uuid4()))
    return owners[-1]


def build(local_dir: Path, cache_url: str, writer: CommandWriter, env: dict[str, str] | None = None) -> Any:
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    settings = Settings.from_env({"LOCAL_DATA_DIR": str(local_dir), "CACHE_URL": cache_url, **(env or {})})
    return bootstrap.build(settings, writer=writer)


@pytest.fixture
def app_with(local_dir: Path, redis_server: str) -> Iterator[Any]:
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap

    held = HeldWriter()
    built = build(local_dir, redis_server, held)
    bootstrap.use(built)
    try:
        with Client(app_module.app) as client:
            yield client, built, held
    finally:
        bootstrap.reset()


def titles(response: Any) -> list[str]:
    assert response.status_code == 200, response.json_body
    return [t["title"] for t in response.json_body["todos"]]


def test_own_writes_show_at_once_in_every_read_while_nothing_is_loaded(app_with, owners):
    client, built, held = app_with
    me, other = new_owner(owners), new_owner(owners)
    assert isinstance(built.service.pending, PendingWrites)
    ids = []
    for title in ("a", "b", "c", "d"):
        answer = client.http.post("/todos", headers=auth(me), body=body({"title": title}))
        assert answer.status_code == 202
        ids.append(answer.json_body["id"])
    changed = client.http.put(f"/todos/{ids[1]}", headers=auth(me), body=body({"title": "B", "state": "done"}))
    gone = client.http.delete(f"/todos/{ids[2]}", headers=auth(me, json_body=False))
    assert changed.status_code == gone.status_code == 202
    client.http.put("/me", headers=auth(me), body=body({"display_name": "Me"}))
    assert held.lines and built.master.query("SELECT COUNT(*) FROM todos")[0][0] == 0  # nothing loaded

    got = client.http.get(f"/todos/{ids[1]}", headers=auth(me))
    assert got.status_code == 200 and got.json_body["title"] == "B"
    assert got.headers["ETag"] == f'"{changed.json_body["version"]}"'
    assert client.http.get(f"/todos/{ids[2]}", headers=auth(me)).status_code == 404  # a pending delete
    # pages are in id order; UUIDv7 ids made in one millisecond need not follow creation order
    shown = [title for _, title in sorted(zip((ids[0], ids[1], ids[3]), ("a", "B", "d"), strict=True))]
    assert titles(client.http.get("/todos", headers=auth(me))) == shown
    assert titles(client.http.get("/todos?state=done", headers=auth(me))) == ["B"]
    assert titles(client.http.get("/todos?state=open", headers=auth(me))) == [t for t in shown if t != "B"]
    first = client.http.get("/todos?limit=2", headers=auth(me)).json_body
    rest = client.http.get(f"/todos?limit=2&cursor={first['next_cursor']}", headers=auth(me)).json_body
    assert [t["title"] for t in first["todos"] + rest["todos"]] == shown and rest["next_cursor"] is None
    me_now = client.http.get("/me", headers=auth(me)).json_body
    assert me_now["display_name"] == "Me" and me_now["created_at"] == me_now["updated_at"]

    # Other users, and an admin through /users/{sub}/todos, see only what is loaded.
    assert client.http.get(f"/todos/{ids[0]}", headers=auth(other)).status_code == 404
    assert titles(client.http.get("/todos", headers=auth(other))) == []
    assert titles(client.http.get(f"/users/{me}/todos", headers=auth(other, ["admins"]))) == []


def test_pages_stay_right_whatever_pending_ids_a_process_last_saw(app_with, owners):
    """A page query names the pending ids its process last saw while the HGETALL is answered:
    writes recorded by another process (none seen, or a stale set) show all the same."""
    client, built, _ = app_with
    me = new_owner(owners)
    mine = built.service.pending
    other = PendingWrites(mine.cache, 900)  # another process: it has seen nothing of `me`
    ids = []
    for title in ("a", "b", "c", "d"):
        ids.append(client.http.post("/todos", headers=auth(me), body=body({"title": title})).json_body["id"])
    assert len(titles(client.http.get("/todos?limit=2", headers=auth(me)))) == 2
    assert mine._guesses  # it names these four in its next page query
    built.service.pending = other
    client.http.put(f"/todos/{ids[1]}", headers=auth(me), body=body({"title": "B", "state": "done"}))
    client.http.delete(f"/todos/{ids[2]}", headers=auth(me, json_body=False))
    new = client.http.post("/todos", headers=auth(me), body=body({"title": "e"})).json_body["id"]
    built.service.pending = mine  # its guess is stale: it saw none of these writes
    order = sorted([(ids[0], "a"), (ids[1], "B"), (ids[3], "d"), (new, "e")])
    shown = [title for _, title in order]
    assert titles(client.http.get("/todos", headers=auth(me))) == shown
    assert titles(client.http.get("/todos?state=done", headers=auth(me))) == ["B"]
    first = client.http.get("/todos?limit=2", headers=auth(me)).json_body
    rest = client.http.get(f"/todos?limit=3&cursor={first['next_cursor']}", headers=auth(me)).json_body
    assert [t["title"] for t in first["todos"] + rest["todos"]] == shown
    mine._guesses.clear()  # a process that knows nothing of the owner
    assert titles(client.http.get("/todos", headers=auth(me))) == shown


def test_a_replica_read_that_shows_the_write_drops_it_and_reads_stay_right(app_with, owners, redis):
    client, built, held = app_with
    me = new_owner(owners)
    todo_id = client.http.post("/todos", headers=auth(me), body=body({"title": "first"})).json_body["id"]
    field = f"t:{todo_id}"
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is not None
    # WHEN the loader commits it (which writes the cache entry: the master, not a replica)
    held.load_all(built)
    assert client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body["title"] == "first"
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is not None  # not dropped yet
    # THEN a read that reaches the database (here a list) shows the version and drops the entry
    assert titles(client.http.get("/todos", headers=auth(me))) == ["first"]
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is None
    # A read by id with a pending entry and no cache entry answers the pending write without
    # the replica (so it drops nothing); the next page read drops it.
    second = client.http.put(f"/todos/{todo_id}", headers=auth(me), body=body({"title": "second"})).json_body
    held.load_all(built)
    redis.execute_command("DEL", todo_key(me, todo_id))
    got = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body
    assert got["title"] == "second" and got["version"] == second["version"]
    assert redis.execute_command("GET", todo_key(me, todo_id)) is None  # the replica was not read
    assert titles(client.http.get("/todos", headers=auth(me))) == ["second"]
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is None


def test_min_version_answers_that_version_or_503_never_older(app_with, owners, redis):
    client, built, held = app_with
    me = new_owner(owners)
    one = client.http.post("/todos", headers=auth(me), body=body({"title": "one"})).json_body
    todo_id, v1 = one["id"], one["version"]
    got = client.http.get(f"/todos/{todo_id}?min_version={v1}", headers=auth(me))
    assert got.status_code == 200 and got.json_body["version"] == v1
    assert client.http.get(f"/todos?min_version={v1}", headers=auth(me)).status_code == 200  # checked, ignored

    # WHEN the pending writes are lost (Redis keys gone) before anything is loaded
    redis.execute_command("DEL", pending_key(me, "sluice:v1"))
    lost = client.http.get(f"/todos/{todo_id}?min_version={v1}", headers=auth(me))
    assert lost.status_code == 503 and lost.headers["Retry-After"] and lost.json_body["error"] == "unavailable"
    assert client.http.get(f"/todos/{todo_id}", headers=auth(me)).status_code == 404  # eventual without it
    # THEN once loaded, the version is readable again (the cache entry is older: the replica answers)
    held.load_all(built)
    assert client.http.get(f"/todos/{todo_id}?min_version={v1}", headers=auth(me)).json_body["title"] == "one"

    # A delete at V or later is 404 (pending, then loaded: the tombstone's version tells)
    deleted = client.http.delete(f"/todos/{todo_id}", headers=auth(me, json_body=False)).json_body["version"]
    assert client.http.get(f"/todos/{todo_id}?min_version={v1}", headers=auth(me)).status_code == 404
    assert client.http.get(f"/todos/{todo_id}?min_version={deleted}", headers=auth(me)).status_code == 404
    held.load_all(built)
    redis.execute_command("DEL", pending_key(me, "sluice:v1"), todo_key(me, todo_id))
    assert client.http.get(f"/todos/{todo_id}?min_version={deleted}", headers=auth(me)).status_code == 404
    assert client.http.get(f"/todos/{todo_id}?min_version={deleted + 1}", headers=auth(me)).status_code == 503

    profile = client.http.put("/me", headers=auth(me), body=body({"display_name": "P"})).json_body["version"]
    assert client.http.get(f"/me?min_version={profile}", headers=auth(me)).status_code == 200
    redis.execute_command("DEL", pending_key(me, "sluice:v1"))
    assert client.http.get(f"/me?min_version={profile}", headers=auth(me)).status_code == 503


def test_recording_keeps_the_newest_write_and_the_earliest_created_at(local_dir, redis_server, owners):
    from chalicelib.commands import make_command
    from chalicelib.identity import Principal

    held = HeldWriter()
    built = build(local_dir, redis_server, held)
    me = new_owner(owners)
    who = Principal(me, frozenset())
    pending = built.service.pending
    todo_id = built.service.create_todo(who, make("todos", title="new", notes="", state="open", tags=[]), None).id
    first = pending.get_todo(me, todo_id)
    # an older command recorded late (a retry taken by a slower process) changes nothing shown
    older = make_command("put", "todos", me, todo_id, first.version - 10, "0" * 36, dict(first.row, title="old"))
    assert pending.record([older])
    again = pending.get_todo(me, todo_id)
    assert again.row["title"] == "new" and again.version == first.version
    assert again.row["created_at"] < first.row["created_at"]  # created_at: the earliest command seen
    newer = built.service.put_todo(who, todo_id, make("todos", title="newer", notes="", state="done", tags=[]))
    shown = pending.get_todo(me, todo_id)
    assert (shown.row["title"], shown.version, shown.row["created_at"]) == (
        "newer",
        newer.version,
        again.row["created_at"],
    )


def test_entries_older_than_the_ttl_are_ignored_and_removed(local_dir, redis_server, owners, redis):
    from chalicelib.identity import Principal

    built = build(local_dir, redis_server, HeldWriter(), {"PENDING_TTL_SECONDS": "60"})
    me = new_owner(owners)
    pending = built.service.pending
    assert pending.ttl_ms == 60_000
    done = built.service.create_todo(
        Principal(me, frozenset()), make("todos", title="t", notes="", state="open", tags=[]), None
    )
    assert 0 < redis.execute_command("PTTL", pending_key(me, "sluice:v1")) <= 60_000
    assert pending.get_todo(me, done.id).row is not None
    pending.clock = lambda: (done.version + 61_000_000) * 1000
    assert pending.list_todos(me, None, 10, None) == []
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), f"t:{done.id}") is None


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"\xff\xfe", b'{"id": "x"'])
def test_a_pending_entry_that_is_not_a_row_is_ignored_by_every_read(app_with, owners, redis, payload):
    client, _, _ = app_with
    me = new_owner(owners)
    kept = client.http.post("/todos", headers=auth(me), body=body({"title": "kept"})).json_body
    spoilt = client.http.post("/todos", headers=auth(me), body=body({"title": "spoilt"})).json_body
    field = f"t:{spoilt['id']}"
    stored = redis.execute_command("HGET", pending_key(me, "sluice:v1"), field)
    head = stored.rsplit(b"|", 1)[0]  # state|version|op_id|created: only the row is spoilt
    redis.execute_command("HSET", pending_key(me, "sluice:v1"), field, head + b"|" + payload)
    assert client.http.get(f"/todos/{spoilt['id']}", headers=auth(me)).status_code == 404  # nothing loaded
    assert titles(client.http.get("/todos", headers=auth(me))) == ["kept"]
    assert client.http.get(f"/todos/{kept['id']}", headers=auth(me)).json_body["title"] == "kept"


def test_a_dead_redis_never_fails_a_write_counts_it_and_reads_fall_back(local_dir, owners):
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap

    built = build(local_dir, "redis://127.0.0.1:1/0", HeldWriter())
    counted: list[int] = []
    built.service.pending.on_failure = counted.append
    bootstrap.use(built)
    me = new_owner(owners)
    try:
        with Client(app_module.app) as client:
            for _ in range(2):  # the first fails on Redis, the second finds the breaker open
                answer = client.http.post("/todos", headers=auth(me), body=body({"title": "x"}))
                assert answer.status_code == 202
            todo_id, version = answer.json_body["id"], answer.json_body["version"]
            assert counted == [1, 1]
            assert client.http.get(f"/todos/{todo_id}", headers=auth(me)).status_code == 404  # eventual
            assert client.http.get(f"/todos/{todo_id}?min_version={version}", headers=auth(me)).status_code == 503
            assert titles(client.http.get("/todos", headers=auth(me))) == []
    finally:
        bootstrap.reset()


def test_min_version_on_writes_orders_one_clients_writes_across_instances_with_clocks_apart(
    local_dir, redis_server, owners
):
    """Two processes: A's clock runs 3 s ahead of B's. A client writes through A, then through B
    with min_version: B's version is newer, B's other callers keep B's clock, and whatever order
    the loader meets the two objects in, the second write wins."""
    import time

    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap

    held = HeldWriter()
    a = build(local_dir, redis_server, held)
    b = build(local_dir, redis_server, held)
    a.service.clock = VersionClock(lambda: time.time_ns() + 3_000_000_000)
    b.service.clock = VersionClock(time.time_ns)
    me, someone = new_owner(owners), new_owner(owners)
    todo_id = str(uuid.uuid4())
    try:
        with Client(app_module.app) as client:
            bootstrap.use(a)
            first = client.http.put(f"/todos/{todo_id}", headers=auth(me), body=body({"title": "first"})).json_body
            bootstrap.use(b)
            blind = b.service.clock.next()
            assert blind < first["version"]  # what B would have given without min_version
            url = f"/todos/{todo_id}?min_version={first['version']}"
            second = client.http.put(url, headers=auth(me), body=body({"title": "second"})).json_body
            assert second["version"] > first["version"]
            other = client.http.post("/todos", headers=auth(someone), body=body({"title": "z"})).json_body
            assert other["version"] < first["version"]  # B's clock did not move for other callers
            got = client.http.get(f"/todos/{todo_id}?min_version={second['version']}", headers=auth(me))
            assert got.status_code == 200 and got.json_body["title"] == "second"
            held.load_all(b, reverse=True)
            redis = RespClient.from_url(redis_server)
            redis.execute_command("DEL", pending_key(me, "sluice:v1"), todo_key(me, todo_id))
            redis.close()
            loaded = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body
            assert (loaded["title"], loaded["version"]) == ("second", second["version"])
    finally:
        bootstrap.reset()
