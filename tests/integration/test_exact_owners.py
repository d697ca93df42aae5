"""Owners compare exactly on every backend (CONTRACT section 2: users see and change only their own
data). MySQL 8 and MariaDB compare utf8mb4_bin with PAD SPACE, so before schema migration 2
`GET /users/alice%20/todos` listed alice's todos on MariaDB and a row of 'alice ' would have taken
alice's primary key; SQLite's TEXT never padded. Each test runs on SQLite and on the real MariaDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.db import schema
from tests.conftest import auth, body
from tests.gateway import LambdaContext, call, prod_claims, rest_event

ADMIN = auth("root", ["admins"])
NEAR_ALICE = ["alice ", "alice  ", "alice%20", "ALICE", "alic", "alice%C3%A9", "%20alice"]


@pytest.fixture(params=["sqlite", "mariadb"])
def services(request: pytest.FixtureRequest, local_dir: Path) -> Iterator[Any]:
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    env = {"LOCAL_DATA_DIR": str(local_dir)}
    if request.param == "mariadb":
        env["DATABASE_URL"] = request.getfixturevalue("mysql_url")
    built = bootstrap.build(Settings.from_env(env))
    built.master.migrate()
    bootstrap.use(built)
    yield built
    bootstrap.reset()


def listed(client: Any, sub: str) -> tuple[int, list[str]]:
    answer = client.http.get(f"/users/{sub}/todos", headers=ADMIN)
    return answer.status_code, [t["title"] for t in (answer.json_body or {}).get("todos", [])]


def test_the_admin_route_lists_exactly_the_owner_named(client: Any) -> None:
    assert client.http.post("/todos", headers=auth("alice"), body=body({"title": "alice's"})).status_code == 202
    assert listed(client, "alice") == (200, ["alice's"])
    for near in NEAR_ALICE:
        assert listed(client, near) == (200, []), near


def test_a_row_of_alice_space_is_its_own_key_and_reads_are_exact(client: Any, services: Any) -> None:
    # GIVEN alice's todo, and a row stored for 'alice ' with the same id (no path of the API or the
    # loader writes such an owner: the database itself must still keep the two apart)
    mine = client.http.post("/todos", headers=auth("alice"), body=body({"title": "alice's"})).json_body
    stamp = "2030-01-01 00:00:00.000000" if services.master.dialect == "mysql" else "2030-01-01T00:00:00.000000"
    with services.master.transaction() as cur:
        cur.execute(
            services.master.sql(
                "INSERT INTO todos (owner, id, title, notes, state, tags, due_at, version, op_id, deleted, "
                "created_at, updated_at) VALUES (%s, %s, %s, '', 'open', '[]', NULL, 1, %s, 0, %s, %s)"
            ),
            ("alice ", mine["id"], "not alice's", str(uuid.uuid4()), stamp, stamp),
        )
    # THEN both rows exist, alice still reads her own, and each owner lists only its own
    owners = services.master.query("SELECT owner FROM todos WHERE id = %s ORDER BY owner", (mine["id"],))
    assert [r[0] for r in owners] == ["alice", "alice "]
    assert client.http.get(f"/todos/{mine['id']}", headers=auth("alice")).json_body["title"] == "alice's"
    assert services.reader.get_todo("alice ", mine["id"])["title"] == "not alice's"
    assert listed(client, "alice") == (200, ["alice's"])
    assert listed(client, "alice%20") == (200, ["not alice's"])


def test_a_write_as_alice_space_never_reaches_alices_row(client: Any, services: Any) -> None:
    import app
    from chalicelib.commands import make_command

    mine = client.http.post("/todos", headers=auth("alice"), body=body({"title": "alice's"})).json_body
    # WHEN production's gateway hands over a sub with a trailing space: 401, nothing written
    for sub in ("alice ", " alice", "alice\u00a0"):
        event = rest_event(
            "PUT",
            "/todos/{todo_id}",
            f"/todos/{mine['id']}",
            claims=prod_claims(sub),
            headers={"Content-Type": "application/json"},
            body=body({"title": "taken over"}),
            path_params={"todo_id": mine["id"]},
        )
        assert call(app.app, event, LambdaContext())[0] == 401, repr(sub)
    # WHEN a command for 'alice ' reaches the loader: it is quarantined, alice's row untouched
    command = make_command(
        "put", "todos", "alice ", mine["id"], mine["version"] + 1, str(uuid.uuid4()), {"title": "taken over"}
    )
    services.writer.write([command])
    assert services.master.query("SELECT COUNT(*) FROM ingest_rejects") == [(1,)]
    assert client.http.get(f"/todos/{mine['id']}", headers=auth("alice")).json_body["title"] == "alice's"
    assert [r[0] for r in services.master.query("SELECT owner FROM todos")] == ["alice"]


def test_profiles_are_exact_too(client: Any, services: Any) -> None:
    put = client.http.put("/me", headers=auth("alice"), body=body({"display_name": "Alice"}))
    assert put.status_code == 202
    assert services.reader.get_profile("alice")["display_name"] == "Alice"
    for near in ("alice ", "ALICE", "alice\u3000"):
        assert services.reader.get_profile(near) is None, repr(near)


# -- MariaDB: the migration itself ---------------------------------------------------------------------
@pytest.fixture
def before_2(mysql_url: str, local_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Services on a MariaDB database with every migration but 2 (owners still PAD SPACE); the
    loader needs the later ones (3: load attempts)."""
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    built = bootstrap.build(Settings.from_env({"LOCAL_DATA_DIR": str(local_dir), "DATABASE_URL": mysql_url}))
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] != 2])
        assert 2 not in built.master.migrate()
    bootstrap.use(built)
    yield built
    bootstrap.reset()


def owner_collations(db: Any) -> dict[str, str]:
    rows = db.query(
        "SELECT TABLE_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = 'owner' AND TABLE_NAME IN ('todos', 'profiles') "
        "ORDER BY TABLE_NAME"
    )
    return {str(table): str(collation) for table, collation in rows}


def test_migration_2_turns_the_pad_space_match_into_an_exact_one(before_2: Any) -> None:
    from chalice.test import Client

    import app

    with Client(app.app) as client:
        mine = client.http.post("/todos", headers=auth("alice"), body=body({"title": "alice's"})).json_body
        # GIVEN the schema without migration 2: the PAD SPACE comparison lists alice's todos for 'alice '
        assert owner_collations(before_2.master) == {"profiles": "utf8mb4_bin", "todos": "utf8mb4_bin"}
        assert listed(client, "alice%20") == (200, ["alice's"])

        # WHEN the schema is migrated
        assert 2 in before_2.master.migrate()

        # THEN owners compare exactly, with the rows kept, and the fast loader's keys way still joins
        nopad = schema.NOPAD_BIN_COLLATIONS[0]  # MariaDB's name
        assert owner_collations(before_2.master) == {"profiles": nopad, "todos": nopad}
        assert listed(client, "alice%20") == (200, [])
        assert listed(client, "alice") == (200, ["alice's"])
        assert client.http.get(f"/todos/{mine['id']}", headers=auth("alice")).status_code == 200


def test_the_fast_loaders_keys_way_works_on_the_exact_owners(mysql_url: str) -> None:
    from chalicelib.commands import make_command
    from chalicelib.db.database import open_master
    from chalicelib.loader import BatchLoader
    from chalicelib.loader.mysql_fast import MySQLFastApplier

    db = open_master(mysql_url)
    db.migrate()
    applier = MySQLFastApplier(db, min_rows=1, prefers_keys=True, threaded=False)
    loader = BatchLoader(db, applier=applier)
    ids = [str(uuid.uuid4()) for _ in range(5)]

    def obj(owner: str, version: int) -> bytes:
        return b"".join(
            make_command(
                "put", "todos", owner, i, version, str(uuid.uuid4()), {"title": f"{owner}@{version}"}
            ).to_line()
            for i in ids
        )

    for n, (owner, version) in enumerate([("alice", 10), ("bob", 10), ("alice", 20), ("alice", 15)]):
        loader.load("b", f"writes/2030/01/01/00/o{n}", f"e{n}", obj(owner, version))
    assert applier.paths["keys"] == 4
    rows = db.query("SELECT owner, title FROM todos ORDER BY owner, id")
    assert sorted({(o, t) for o, t in rows}) == [("alice", "alice@20"), ("bob", "bob@10")]
    db.discard()


def test_ids_with_padding_never_reach_sql(client: Any, services: Any) -> None:
    # Ids stay CHAR(36) ascii_bin, which pads: exactness rests on every id being a canonical UUID
    # before any query, on both backends.
    import base64
    import json

    mine = client.http.post("/todos", headers=auth("alice"), body=body({"title": "alice's"})).json_body
    for padded in (f"{mine['id']}%20", f"{mine['id']}%20%20", f"%20{mine['id']}"):
        answer = client.http.get(f"/todos/{padded}", headers=auth("alice"))
        assert (answer.status_code, answer.json_body["error"]) == (400, "invalid_id"), padded
    cursor = base64.urlsafe_b64encode(json.dumps({"after": mine["id"] + " "}).encode()).decode().rstrip("=")
    answer = client.http.get(f"/todos?cursor={cursor}", headers=auth("alice"))
    assert (answer.status_code, answer.json_body["error"]) == (400, "invalid_query")
