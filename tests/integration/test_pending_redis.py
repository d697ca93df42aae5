"""Reading your own writes (CONTRACT section 3) against the real Redis: the app as bootstrap wires
it with CACHE_URL, a transport that accepts and holds commands as Firehose does (nothing loads
them until a test says so), and the embedded SQLite file as the only database (so its reads are
replica reads). Every test writes as owners of its own; their keys are removed afterwards."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chalicelib.ids import VersionClock
from chalicelib.readers.cache import profile_key, todo_key
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
    # A read by id with a pending put and no cache entry reads the replica (the put shows the
    # stored row's created_at), fills the cache, and drops the entry the replica shows.
    second = client.http.put(f"/todos/{todo_id}", headers=auth(me), body=body({"title": "second"})).json_body
    held.load_all(built)
    redis.execute_command("DEL", todo_key(me, todo_id))
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is not None
    got = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body
    assert got["title"] == "second" and got["version"] == second["version"]
    assert redis.execute_command("GET", todo_key(me, todo_id)) is not None  # filled from the replica
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is None
    assert titles(client.http.get("/todos", headers=auth(me))) == ["second"]


class CountingReads:
    """The pending writes' database reader, counting the reads by key that reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.by_key = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def seen(self, resource: str, owner: str, id_: str) -> Any:
        self.by_key += 1
        return self.inner.seen(resource, owner, id_)


def test_a_read_by_key_of_a_pending_put_reads_the_database_only_when_something_may_be_stored(app_with, owners, redis):
    """A pending put shows the stored row's created_at, so with no cache entry a read by key
    reads the database once (and fills the cache). A POST's new id has nothing stored: its
    record sets the cache entry to absent, and the writer's reads stay one Redis round trip."""
    client, built, _ = app_with
    me = new_owner(owners)
    counting = CountingReads(built.service.pending.inner)
    built.service.pending.inner = counting
    posted = client.http.post("/todos", headers=auth(me), body=body({"title": "new"})).json_body
    batch = client.http.post("/todos/batch", headers=auth(me), body=body({"todos": [{"title": "b"}]})).json_body
    for todo_id in (posted["id"], batch["accepted"][0]["id"]):
        assert redis.execute_command("GET", todo_key(me, todo_id)) == b"a|0||"
        got = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body
        assert got["created_at"] == got["updated_at"]
    assert counting.by_key == 0

    keyed = client.http.post("/todos", headers={**auth(me), "Idempotency-Key": "k1"}, body=body({"title": "k"}))
    put_id = str(uuid.uuid4())
    client.http.put(f"/todos/{put_id}", headers=auth(me), body=body({"title": "p"}))
    for todo_id in (keyed.json_body["id"], put_id):  # ids that may have a stored row
        assert redis.execute_command("GET", todo_key(me, todo_id)) is None
        for _ in range(2):  # the first read fills the cache; the second hits it
            assert client.http.get(f"/todos/{todo_id}", headers=auth(me)).status_code == 200
    assert counting.by_key == 2


def test_a_page_that_drops_a_pending_write_leaves_no_older_cache_entry_behind(app_with, owners, redis):
    """The loader's cache update can fail (Redis unreachable at its commit), leaving an older
    cache entry. A page read that drops the pending write the replica shows first fills the
    cache from those rows, so the caller's next read by key does not go back. Failed before:
    the entry was dropped and GET /todos/{id} answered the older cached state."""
    client, built, held = app_with
    me = new_owner(owners)
    todo_id = client.http.post("/todos", headers=auth(me), body=body({"title": "v1"})).json_body["id"]
    held.load_all(built)
    assert client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body["title"] == "v1"  # cached
    client.http.put(f"/todos/{todo_id}", headers=auth(me), body=body({"title": "v2"}))
    gone = client.http.delete(f"/todos/{todo_id}", headers=auth(me, json_body=False)).json_body["version"]
    invalidator, built.loader.on_commit = built.loader.on_commit, None  # its cache update fails
    try:
        held.load_all(built)
    finally:
        built.loader.on_commit = invalidator
    assert redis.execute_command("GET", todo_key(me, todo_id)).startswith(b"p|")  # the older row
    assert titles(client.http.get("/todos", headers=auth(me))) == []  # the replica shows the delete
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), f"t:{todo_id}") is None  # dropped
    assert client.http.get(f"/todos/{todo_id}", headers=auth(me)).status_code == 404
    assert client.http.get(f"/todos/{todo_id}?min_version={gone}", headers=auth(me)).status_code == 404


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


def _without(name: str) -> Any:
    def spoil(row: dict[str, Any], head: bytes) -> bytes:
        del row[name]
        return head + b"|" + json.dumps(row).encode()

    return spoil


def _with(name: str, value: Any) -> Any:
    def spoil(row: dict[str, Any], head: bytes) -> bytes:
        row[name] = value
        return head + b"|" + json.dumps(row).encode()

    return spoil


def _payload(payload: bytes) -> Any:
    return lambda row, head: head + b"|" + payload


def _header(field: int, value: bytes) -> Any:
    def spoil(row: dict[str, Any], head: bytes) -> bytes:
        parts = head.split(b"|")
        parts[field] = value
        return b"|".join(parts) + b"|" + json.dumps(row).encode()

    return spoil


# What someone else may have written into a pending entry (our RECORD never writes these).
SPOILS = {
    "not-json": _payload(b"not json"),
    "json-list": _payload(b"[1, 2]"),
    "not-utf8": _payload(b"\xff\xfe"),
    "cut-short": _payload(b'{"id": "x"'),
    "no-version": _without("version"),
    "no-state": _without("state"),
    "no-id": _without("id"),
    "no-title": _without("title"),
    "another-id": _with("id", "00000000-0000-4000-8000-000000000000"),
    "another-version": _with("version", 1),
    "bad-state": _with("state", "maybe"),
    "bad-created-at": _with("created_at", "yesterday"),
    "bad-entry-state": _header(0, b"x"),
    "bad-entry-version": _header(1, b"soon"),
    "bad-entry-op-id": _header(2, "\u00e9".encode()),
}


@pytest.mark.parametrize("count", [3, 70], ids=["few", "over-64"])
@pytest.mark.parametrize("spoil", list(SPOILS.values()), ids=list(SPOILS))
def test_a_pending_entry_that_cannot_be_used_is_ignored_and_logged_on_every_path(
    app_with, owners, redis, caplog, spoil, count
):
    """Every read ignores (and logs) an entry it cannot use, by key and in pages, with at most
    64 pending writes (decoded before the page is merged) and more (decoded as the merge meets
    them): that key reads what is loaded (nothing here). Failed before: a missing field answered
    500 (KeyError), and past 64 entries so did bad JSON, a list or bytes that are not UTF-8."""
    client, _, _ = app_with
    me = new_owner(owners)
    todos = [{"title": f"t{n:03d}"} for n in range(count)]
    accepted = client.http.post("/todos/batch", headers=auth(me), body=body({"todos": todos})).json_body["accepted"]
    ids = sorted(a["id"] for a in accepted)
    spoilt = ids[count // 2]
    field = f"t:{spoilt}"
    stored = redis.execute_command("HGET", pending_key(me, "sluice:v1"), field)
    head, payload = stored.split(b"|", 4)[:4], stored.split(b"|", 4)[4]
    redis.execute_command("HSET", pending_key(me, "sluice:v1"), field, spoil(json.loads(payload), b"|".join(head)))
    good = [i for i in ids if i != spoilt]
    caplog.set_level(logging.WARNING, logger="chalicelib.readers.pending")

    assert client.http.get(f"/todos/{spoilt}", headers=auth(me)).status_code == 404  # nothing loaded
    assert client.http.get(f"/todos/{good[0]}", headers=auth(me)).status_code == 200
    for limit in (100, 10, 3):
        walked: list[str] = []
        cursor = ""
        while True:
            page = client.http.get(f"/todos?limit={limit}{cursor}", headers=auth(me))
            assert page.status_code == 200, page.json_body
            walked += [t["id"] for t in page.json_body["todos"]]
            if page.json_body["next_cursor"] is None:
                break
            cursor = f"&cursor={page.json_body['next_cursor']}"
        assert walked == good, limit
    assert any(spoilt in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("count", [3, 70], ids=["few", "over-64"])
@pytest.mark.parametrize(
    "bad_id",
    ["not-a-uuid", "00000000-0000-4000-8000-00000000000A", "00000000000040008000000000000001", "\u00e9" * 36],
    ids=["word", "upper-case", "no-hyphens", "non-ascii"],
)
def test_a_pending_field_whose_id_is_not_a_canonical_uuid_is_ignored_and_logged(
    app_with, owners, redis, caplog, bad_id, count
):
    """A field `t:{id}` whose id is not a canonical UUID (with an entry that is otherwise a row
    of that id) is never merged into a page, and its id is checked before any SQL. Failed
    before: it showed as a row of the page."""
    client, _, _ = app_with
    me = new_owner(owners)
    todos = [{"title": f"t{n:03d}"} for n in range(count)]
    accepted = client.http.post("/todos/batch", headers=auth(me), body=body({"todos": todos})).json_body["accepted"]
    ids = sorted(a["id"] for a in accepted)
    stored = redis.execute_command("HGET", pending_key(me, "sluice:v1"), f"t:{ids[0]}")
    head, payload = stored.split(b"|", 4)[:4], stored.split(b"|", 4)[4]
    row = dict(json.loads(payload), id=bad_id)
    value = b"|".join(head) + b"|" + json.dumps(row).encode()
    redis.execute_command("HSET", pending_key(me, "sluice:v1"), f"t:{bad_id}".encode(), value)
    caplog.set_level(logging.WARNING, logger="chalicelib.readers.pending")
    for limit in (100, 5):
        page = client.http.get(f"/todos?limit={limit}", headers=auth(me))
        assert page.status_code == 200 and [t["id"] for t in page.json_body["todos"]] == ids[:limit]
    assert any("canonical" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("spoil", [SPOILS["no-version"], SPOILS["json-list"], _without("display_name")])
def test_a_pending_profile_entry_that_cannot_be_used_is_ignored_and_logged(app_with, owners, redis, caplog, spoil):
    client, built, held = app_with
    me = new_owner(owners)
    client.http.put("/me", headers=auth(me), body=body({"display_name": "Loaded"}))
    held.load_all(built)
    client.http.put("/me", headers=auth(me), body=body({"display_name": "Pending"}))
    stored = redis.execute_command("HGET", pending_key(me, "sluice:v1"), "p")
    head, payload = stored.split(b"|", 4)[:4], stored.split(b"|", 4)[4]
    redis.execute_command("HSET", pending_key(me, "sluice:v1"), "p", spoil(json.loads(payload), b"|".join(head)))
    caplog.set_level(logging.WARNING, logger="chalicelib.readers.pending")
    for _ in range(2):  # with the cache entry the loader wrote, and without
        profile = client.http.get("/me", headers=auth(me))
        assert profile.status_code == 200 and profile.json_body["display_name"] == "Loaded"
        redis.execute_command("DEL", profile_key(me))
    assert any("ignored" in r.getMessage() for r in caplog.records)


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


# -- issue 17, defect 1: a version tie between two instances ----------------------------------------
def test_a_version_tie_between_two_instances_shows_the_op_id_winner_on_every_read(local_dir, redis_server, owners):
    """Two writes of one todo through two instances, both sent with the same min_version, get the
    same version, and the loader keeps the greater op_id. With the op_id loser loaded first, every
    read of the writer shows the winner (pending) until it loads, and after: never A, then B,
    then A. Failed before reads carried op_ids (the loaded loser won the version tie)."""
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap

    base = time.time_ns()  # frozen clocks: versions near now (pending entries do not expire)
    held = HeldWriter()
    ahead = build(local_dir, redis_server, held)  # its clock 3 s ahead of the other two
    ahead.service.clock = VersionClock(lambda: base + 3_000_000_000)
    writers = {"A": HeldWriter(), "B": HeldWriter()}
    instances = {name: build(local_dir, redis_server, writer) for name, writer in writers.items()}
    for instance in instances.values():
        instance.service.clock = VersionClock(lambda: base)
    a = instances["A"]
    me = new_owner(owners)
    todo_id = str(uuid.uuid4())
    redis = RespClient.from_url(redis_server)
    try:
        with Client(app_module.app) as client:

            def shown(version: int) -> list[str]:
                """The title of the todo on every route of the writer (read through instance A)."""
                bootstrap.use(a)
                got = [client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body["title"]]
                got.append(
                    client.http.get(f"/todos/{todo_id}?min_version={version}", headers=auth(me)).json_body["title"]
                )
                return got + titles(client.http.get("/todos", headers=auth(me)))

            bootstrap.use(ahead)
            first = client.http.put(f"/todos/{todo_id}", headers=auth(me), body=body({"title": "first"})).json_body
            versions = {}
            for name, instance in instances.items():
                bootstrap.use(instance)
                url = f"/todos/{todo_id}?min_version={first['version']}"
                versions[name] = client.http.put(url, headers=auth(me), body=body({"title": name})).json_body["version"]
            tie = first["version"] + 1
            assert versions == {"A": tie, "B": tie}
            op_ids = {name: json.loads(writer.lines[0])["op_id"] for name, writer in writers.items()}
            winner, loser = sorted(op_ids, key=op_ids.__getitem__, reverse=True)
            assert shown(tie) == [winner] * 3

            held.load_all(a)
            writers[loser].load_all(a)  # the loser loads first: the cache entry and the replica hold it
            assert shown(tie) == [winner] * 3
            redis.execute_command("DEL", todo_key(me, todo_id))  # the replica answers by key too
            assert shown(tie) == [winner] * 3
            field = f"t:{todo_id}"
            assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is not None  # kept

            writers[winner].load_all(a)
            assert shown(tie) == [winner] * 3
            assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), field) is None  # shown: dropped
            redis.execute_command("DEL", todo_key(me, todo_id))
            assert shown(tie) == [winner] * 3  # what is loaded: the loader chose the same
    finally:
        redis.close()
        bootstrap.reset()


# -- issue 17, defect 2: created_at of a pending row -------------------------------------------------
def _created(client: Any, me: str, todo_id: str) -> list[str]:
    """created_at of a todo as GET /todos/{id} and GET /todos show it."""
    by_id = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body
    page = client.http.get("/todos", headers=auth(me)).json_body["todos"]
    return [by_id["created_at"], *(t["created_at"] for t in page if t["id"] == todo_id)]


def test_an_edit_after_the_ttls_shows_the_stored_created_at_on_every_route(app_with, owners, redis):
    """Edit a todo and the profile once the cache and pending entries are gone (TTLs): GET
    /todos/{id} and GET /me show the stored created_at, as GET /todos does and loading will.
    Failed before: with no cache entry they showed the edit's own time."""
    client, built, held = app_with
    me = new_owner(owners)
    todo_id = client.http.post("/todos", headers=auth(me), body=body({"title": "old"})).json_body["id"]
    client.http.put("/me", headers=auth(me), body=body({"display_name": "Old"}))
    held.load_all(built)
    created = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body["created_at"]
    profile_created = client.http.get("/me", headers=auth(me)).json_body["created_at"]
    redis.execute_command("DEL", pending_key(me, "sluice:v1"), todo_key(me, todo_id), profile_key(me))  # TTLs

    edit = client.http.put(f"/todos/{todo_id}", headers=auth(me), body=body({"title": "new"}))
    client.http.put("/me", headers=auth(me), body=body({"display_name": "New"}))
    for _ in range(2):  # the first read fills the cache from the replica; the second hits it
        got = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body
        assert (got["title"], got["version"]) == ("new", edit.json_body["version"])
        assert _created(client, me, todo_id) == [created, created] and got["updated_at"] > created
        profile = client.http.get("/me", headers=auth(me)).json_body
        assert (profile["display_name"], profile["created_at"]) == ("New", profile_created)
    held.load_all(built)
    redis.execute_command("DEL", pending_key(me, "sluice:v1"), todo_key(me, todo_id), profile_key(me))
    assert _created(client, me, todo_id) == [created, created]  # what loading gave
    assert client.http.get("/me", headers=auth(me)).json_body["created_at"] == profile_created


@pytest.mark.parametrize("cached", [True, False], ids=["tombstone-cached", "nothing-cached"])
def test_a_todo_put_again_after_its_delete_shows_its_first_created_at_on_every_route(app_with, owners, redis, cached):
    """created_at is the earliest `at` of any command of the row, deletes included (CONTRACT
    section 3): a PUT over a loaded tombstone shows the first command's instant while pending,
    whether the cache holds the tombstone (without its created_at) or nothing. Failed before:
    both routes showed the PUT's own time."""
    client, built, held = app_with
    me = new_owner(owners)
    todo_id = client.http.post("/todos", headers=auth(me), body=body({"title": "first"})).json_body["id"]
    held.load_all(built)
    created = client.http.get(f"/todos/{todo_id}", headers=auth(me)).json_body["created_at"]
    client.http.delete(f"/todos/{todo_id}", headers=auth(me, json_body=False))
    held.load_all(built)
    redis.execute_command("DEL", pending_key(me, "sluice:v1"))
    if not cached:
        redis.execute_command("DEL", todo_key(me, todo_id))
    else:
        assert redis.execute_command("GET", todo_key(me, todo_id)).startswith(b"a|")  # the loader's tombstone

    client.http.put(f"/todos/{todo_id}", headers=auth(me), body=body({"title": "again"}))
    assert _created(client, me, todo_id) == [created, created]
    held.load_all(built)
    redis.execute_command("DEL", pending_key(me, "sluice:v1"), todo_key(me, todo_id))
    assert _created(client, me, todo_id) == [created, created]  # what loading gave
