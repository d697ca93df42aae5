"""Adding a resource is one declaration (docs/architecture.md, "How to add a field / a resource").

A throwaway resource, `bookmarks`, is declared here and nowhere else. With no other code it is
validated (field-level errors from its declaration), written as command lines (held to the
dataclasses-json reference encoder), loaded by `cli load` on SQLite and on MariaDB (its line lane,
the LOAD DATA fast path, last-writer-wins, tombstones, rejects), read back by key, and served by
the routes derived from it, its writer reading its own writes through the pending writes and the
cache on the real Redis.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chalicelib import cli, models, resources, wire
from chalicelib.commands import make_command
from chalicelib.db.database import Database, open_database
from chalicelib.db.migrations import table_ddl
from chalicelib.db.schema import run_statement
from chalicelib.loader import apply, lanes
from chalicelib.models import Invalid
from chalicelib.readers.sql import SqlReader
from chalicelib.resources import ASCII, Collection, Resource, rule

OWNER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
KEPT, DELETED = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"
OPS = [f"9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c{n}" for n in range(6)]
V = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@dataclass
class Bookmark:
    """A bookmark as written."""

    url: str = field(metadata=rule("text", "VARCHAR(300)", min_length=1, max_length=300, pattern=r"https://\S+"))
    labels: list[str] = field(
        default_factory=list,
        metadata=rule("list", f"VARCHAR(200) {ASCII}", max_items=5, unique=True, pattern=r"[a-z]{1,10}"),
    )
    kind: str = field(default="link", metadata=rule("choice", f"VARCHAR(8) {ASCII}", choices=("link", "video")))
    stars: int = field(default=0, metadata=rule("integer", "SMALLINT", minimum=0, maximum=5))


BOOKMARKS = Resource(
    "bookmarks", Bookmark, by_id=True, singular="bookmark", tag="b", path="/bookmarks", collection=Collection()
)


@pytest.fixture
def declared() -> Iterator[Resource]:
    resources.declare(BOOKMARKS)
    yield BOOKMARKS
    resources.forget(BOOKMARKS.name)


@pytest.fixture(params=["sqlite", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new.sqlite3'}"
    return str(request.getfixturevalue("mysql_url"))


def test_the_declaration_alone_validates(declared: Resource) -> None:
    validate = models.VALIDATORS[declared.name]
    assert validate({"url": "https://example.com/a"}) == {
        "url": "https://example.com/a",
        "labels": [],
        "kind": "link",
        "stars": 0,
    }
    with pytest.raises(Invalid) as bad:
        validate({"url": "ftp://x", "labels": ["ok", "ok"], "kind": "gif", "extra": 1})
    assert set(bad.value.fields) == {"url", "labels", "kind", "extra"}
    with pytest.raises(Invalid) as missing:
        validate({"labels": ["a"] * 6})
    assert missing.value.fields == {"url": ["is required"], "labels": ["must hold at most 5 items"]}


def put(id_: str, version: int, op: str, **data: object) -> bytes:
    command = make_command("put", "bookmarks", OWNER, id_, version, op, models.VALIDATORS["bookmarks"](data))
    line = command.to_line()
    assert line == wire.encode(command)
    return line


def test_cli_load_and_read_back(
    declared: Resource,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the resource's table, made from its declaration
    db: Database = open_database(database_url)
    db.migrate()
    with db.transaction() as cur:
        run_statement(cur, db.dialect, table_ddl(declared, db.dialect))
    # WHEN two objects arrive out of order: the newer first, then older puts, a delete and a bad line
    newer = put(KEPT, V + 2, OPS[2], url="https://example.com/new", labels=["read", "later"], kind="video")
    older = put(KEPT, V + 1, OPS[1], url="https://example.com/old")
    doomed = put(DELETED, V + 1, OPS[3], url="https://example.com/gone")
    delete = make_command("delete", "bookmarks", OWNER, DELETED, V + 3, OPS[4], None).to_line()
    bad = json.dumps({**json.loads(older), "data": {"url": "https://x", "kind": "gif"}}).encode() + b"\n"
    folder = tmp_path / "writes" / "2026" / "01" / "01" / "00"
    folder.mkdir(parents=True)
    (folder / "first").write_bytes(newer)
    (folder / "second").write_bytes(older + doomed + delete + bad)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOCAL_DATA_DIR", str(tmp_path / "local"))
    assert cli.main(["load", str(folder / "first")]) == 0
    assert cli.main(["load", str(folder / "second")]) == 0
    out = capsys.readouterr().out.split()
    assert out == [
        "applied=1",
        "stale=0",
        "rejected=0",
        "skipped=0",
        "deferred=0",
        "applied=1",
        "stale=2",
        "rejected=1",
        "skipped=0",
        "deferred=0",
    ]
    # THEN reads show the newest put, and the delete's tombstone hides the other
    reader = SqlReader(open_database(database_url))
    row = reader.get(declared.name, OWNER, KEPT)
    assert row == {
        "id": KEPT,
        "url": "https://example.com/new",
        "labels": ["read", "later"],
        "kind": "video",
        "stars": 0,
        "version": V + 2,
        "created_at": "2026-01-01T00:00:00.000001Z",
        "updated_at": "2026-01-01T00:00:00.000002Z",
    }
    assert reader.get(declared.name, OWNER, DELETED) is None
    (reason,) = [r[0] for r in db.query("SELECT reason FROM ingest_rejects")]
    assert "kind" in reason
    db.discard()
    reader.db.discard()


def test_every_resource_reads_back_the_row_the_cache_and_pending_writes_keep(database_url: str) -> None:
    """A row read from the database (decoded by column name) is the row the loader hands the
    cache and a pending write shows (`row_for_command`), for every declared resource."""
    from chalicelib.readers.cache import row_for_command
    from chalicelib.resources import RESOURCES
    from tests.factories import make

    db = open_database(database_url)
    db.migrate()
    commands = [
        make_command("put", name, OWNER, KEPT if r.by_id else OWNER, V, OPS[0], make(name))
        for name, r in RESOURCES.items()
    ]
    with db.transaction() as cur:
        apply.SqlApplier(db).apply(cur, commands)
    reader = SqlReader(db)
    for command in commands:
        assert reader.get(command.resource, OWNER, command.id) == row_for_command(command, command.stored_at)
    assert reader.get_todo(OWNER, KEPT) == reader.get("todos", OWNER, KEPT) is not None
    assert reader.get_profile(OWNER) == reader.get("profiles", OWNER, OWNER) is not None
    db.discard()


def test_its_lines_take_a_lane_and_load_data_on_mariadb(declared: Resource, mysql_url: str) -> None:
    """The fast path: its line lane (generated from the declaration) writes each row's LOAD DATA
    text, and the object goes in by LOAD DATA, fresh and then the keys way."""
    from chalicelib.db.database import open_master
    from chalicelib.loader import BatchLoader, local_etag
    from chalicelib.loader.mysql_fast import MySQLFastApplier

    db = open_master(mysql_url, local_infile=True)
    db.migrate()
    with db.transaction() as cur:
        run_statement(cur, db.dialect, table_ddl(declared, db.dialect))
    ids = [f"0190a1b2-c3d4-7e5f-8a9b-{n:012x}" for n in range(300)]
    first = b"".join(put(i, V + 1, OPS[1], url=f"https://example.com/{n}", stars=n % 6) for n, i in enumerate(ids))
    heads: dict[int, str] = {}
    assert lanes.from_line(first.split(b"\n")[0].decode(), heads) is not None and heads  # a lane takes them
    applier = MySQLFastApplier(db, min_rows=1, chunk_lines=64)
    loader = BatchLoader(db, applier)
    assert loader.load("b", "writes/2026/01/01/00/one", local_etag(first), first).applied == 300
    newer = b"".join(
        put(i, V + 2, OPS[2], url=f"https://example.com/v2/{n}", kind="video") for n, i in enumerate(ids) if n % 2 == 0
    )
    assert loader.load("b", "writes/2026/01/01/00/two", local_etag(newer), newer).applied == 150
    assert applier.paths["fresh"] == 1 and applier.paths["keys"] == 1, dict(applier.paths)
    reader = SqlReader(db)
    for n in (0, 1, 298, 299):
        row = reader.get(declared.name, OWNER, ids[n])
        assert row is not None
        want = (
            ("video", f"https://example.com/v2/{n}", 0) if n % 2 == 0 else ("link", f"https://example.com/{n}", n % 6)
        )
        assert (row["kind"], row["url"], row["stars"]) == want
    db.discard()


def test_its_routes_cache_and_pending_writes_come_from_the_declaration(
    declared: Resource, local_dir: Path, redis_server: str
) -> None:
    """Routes derived for it on an app of its own, with the cache and the pending writes on the
    real Redis: the writer reads its bookmarks at once, by key and in pages, before anything
    loads; once loaded, the cache holds them under the resource's own keys."""
    from chalice import Chalice, CognitoUserPoolAuthorizer
    from chalice.test import Client

    from chalicelib import bootstrap, openapi, routes
    from chalicelib.config import Settings
    from chalicelib.readers.cache import entry_key
    from chalicelib.readers.pending import pending_key
    from chalicelib.readers.resp import RespClient
    from tests.conftest import auth, body
    from tests.integration.test_pending_redis import HeldWriter

    app = Chalice(app_name="bookmarks")
    routes.install(app, CognitoUserPoolAuthorizer("users", provider_arns=["arn:aws:cognito-idp:x"]), ["*/*"])
    assert {"/bookmarks", "/bookmarks/{bookmark_id}"} <= set(app.routes)
    assert "/bookmarks/{bookmark_id}" in openapi.document()["paths"]
    held = HeldWriter()
    built = bootstrap.build(
        Settings.from_env({"LOCAL_DATA_DIR": str(local_dir), "CACHE_URL": redis_server}), writer=held
    )
    with built.master.transaction() as cur:
        run_statement(cur, "sqlite", table_ddl(declared, "sqlite"))
    bootstrap.use(built)
    me = str(uuid.uuid4())
    redis = RespClient.from_url(redis_server)
    try:
        with Client(app) as client:
            bad = client.http.post("/bookmarks", headers=auth(me), body=body({"url": "ftp://x", "stars": 6}))
            assert bad.status_code == 400 and set(bad.json_body["fields"]) == {"url", "stars"}
            made = [
                client.http.post("/bookmarks", headers=auth(me), body=body({"url": f"https://example.com/{n}"}))
                for n in range(3)
            ]
            ids = sorted(m.json_body["id"] for m in made)
            client.http.put(f"/bookmarks/{ids[0]}", headers=auth(me), body=body({"url": "https://e.com/x", "stars": 5}))
            client.http.delete(f"/bookmarks/{ids[2]}", headers=auth(me, json_body=False))
            assert built.master.query("SELECT COUNT(*) FROM bookmarks")[0][0] == 0  # nothing loaded yet
            got = client.http.get(f"/bookmarks/{ids[0]}", headers=auth(me)).json_body
            assert (got["url"], got["stars"], got["kind"]) == ("https://e.com/x", 5, "link")
            assert client.http.get(f"/bookmarks/{ids[2]}", headers=auth(me)).status_code == 404
            page = client.http.get("/bookmarks", headers=auth(me)).json_body
            assert [b["id"] for b in page["bookmarks"]] == ids[:2] and page["next_cursor"] is None
            assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), f"b:{ids[1]}") is not None
            held.load_all(built)
            assert client.http.get(f"/bookmarks/{ids[0]}", headers=auth(me)).json_body["stars"] == 5
            assert redis.execute_command("GET", entry_key("bookmarks", me, ids[0])) is not None
            assert [b["id"] for b in client.http.get("/bookmarks", headers=auth(me)).json_body["bookmarks"]] == ids[:2]
    finally:
        for key in redis.execute_command("KEYS", f"sluice:v1:*:{me}*") or []:
            redis.execute_command("DEL", key)
        redis.close()
        bootstrap.reset()
