"""The app through chalice's test client with DATABASE_URL on MariaDB (local transport: each write
is an object on disk, loaded at once into MariaDB by the same loader as production), and the
schema made by `python -m chalicelib.cli migrate`, which is idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from chalicelib.db.schema import MIGRATIONS
from chalicelib.resources import RESOURCES
from tests.conftest import ROOT, auth, body

pytestmark = pytest.mark.mariadb

TODO = {
    "title": "buy milk",
    "notes": "2 l\tcold",
    "state": "open",
    "tags": ["home"],
    "due_at": "2030-01-01T10:00:00+01:00",
}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
    )


@pytest.fixture
def migrated(mysql_url: str, local_dir: Path) -> str:
    env = {"DATABASE_URL": mysql_url, "LOCAL_DATA_DIR": str(local_dir)}
    first = cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    return mysql_url


@pytest.fixture
def settings_env(local_dir: Path, migrated: str) -> dict[str, str]:
    return {"LOCAL_DATA_DIR": str(local_dir), "DATABASE_URL": migrated}


def test_migrate_twice_is_idempotent(mysql_url: str, local_dir: Path) -> None:
    env = {"DATABASE_URL": mysql_url, "LOCAL_DATA_DIR": str(local_dir)}
    first, second = cli("migrate", env=env), cli("migrate", env=env)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    every = sorted(version for version, _, _ in MIGRATIONS)
    assert f"applied {every}" in first.stdout and "already up to date" in second.stdout
    assert "mysql://root:***@" in first.stdout  # names the database, never a password

    import pymysql

    from chalicelib.db.urls import parse_db_url

    url = parse_db_url(mysql_url)
    conn = pymysql.connect(host=url.host, port=url.port, user=url.user, database=url.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM schema_migrations ORDER BY version")
            assert [r[0] for r in cur.fetchall()] == every
            cur.execute("SHOW TABLES")
            tables = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    assert tables == {
        *RESOURCES,
        "ingest_batches",
        "ingest_rejects",
        "ingest_attempts",
        "ingest_deferrals",
        "schema_migrations",
    }


def test_migrate_without_a_server_fails_with_one_clear_line(local_dir: Path) -> None:
    result = cli("migrate", env={"DATABASE_URL": "mysql://root:pw@127.0.0.1:1/x", "LOCAL_DATA_DIR": str(local_dir)})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:") and "pw" not in result.stderr


def create(client: Any, sub: str = "alice", payload: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.http.post("/todos", headers=auth(sub), body=body(payload or TODO))
    assert response.status_code == 202, response.body
    return dict(response.json_body)


def test_create_read_list_update_delete_on_mariadb(client: Any, services: Any) -> None:
    assert services.master.dialect == "mysql"
    created = create(client)
    got = client.http.get(f"/todos/{created['id']}", headers=auth())
    assert got.status_code == 200, got.body
    todo = got.json_body
    assert (todo["title"], todo["notes"], todo["tags"], todo["due_at"]) == (
        "buy milk",
        "2 l\tcold",
        ["home"],
        "2030-01-01T09:00:00Z",
    )
    assert todo["version"] == created["version"] and todo["created_at"] == todo["updated_at"]
    assert todo["created_at"].endswith("Z")

    replaced = client.http.put(
        f"/todos/{created['id']}", headers=auth(), body=body({"title": "oat milk", "state": "done"})
    )
    assert replaced.status_code == 202
    again = client.http.get(f"/todos/{created['id']}", headers=auth()).json_body
    assert (again["title"], again["state"], again["tags"], again["created_at"]) == (
        "oat milk",
        "done",
        [],
        todo["created_at"],
    )
    assert again["version"] > todo["version"]

    others = [create(client, payload={"title": f"t{i}"})["id"] for i in range(4)]
    everything = sorted([created["id"], *others])
    page = client.http.get("/todos?limit=3", headers=auth()).json_body
    rest = client.http.get(f"/todos?limit=3&cursor={page['next_cursor']}", headers=auth()).json_body
    assert [t["id"] for t in page["todos"] + rest["todos"]] == everything and rest["next_cursor"] is None
    done = client.http.get("/todos?state=done", headers=auth()).json_body
    assert [t["id"] for t in done["todos"]] == [created["id"]]

    assert client.http.delete(f"/todos/{created['id']}", headers=auth(json_body=False)).status_code == 202
    assert client.http.get(f"/todos/{created['id']}", headers=auth()).status_code == 404
    listed = client.http.get("/todos", headers=auth()).json_body
    assert created["id"] not in [t["id"] for t in listed["todos"]]


def test_users_are_isolated_and_the_profile_round_trips(client: Any) -> None:
    mine = create(client, "alice")
    assert client.http.get(f"/todos/{mine['id']}", headers=auth("bob")).status_code == 404
    assert client.http.get("/me", headers=auth("bob")).status_code == 404
    put = client.http.put("/me", headers=auth("bob"), body=body({"display_name": "Bob ü", "timezone": "Europe/Paris"}))
    assert put.status_code == 202
    me = client.http.get("/me", headers=auth("bob")).json_body
    assert (me["display_name"], me["locale"], me["timezone"]) == ("Bob ü", "en", "Europe/Paris")


def test_a_batch_lands_in_mariadb(client: Any) -> None:
    todos = [{"title": f"item {i}", "tags": ["b"]} for i in range(20)]
    response = client.http.post("/todos/batch", headers=auth(), body=body({"todos": todos}))
    assert response.status_code == 202, response.body
    ids = [a["id"] for a in response.json_body["accepted"]]
    listed = client.http.get("/todos?limit=100", headers=auth()).json_body["todos"]
    assert sorted(t["id"] for t in listed) == sorted(ids)


def test_reads_answer_503_with_retry_after_when_no_database_answers(local_dir: Path) -> None:
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    dead = "mysql://root@127.0.0.1:1/x"
    settings = Settings.from_env({"LOCAL_DATA_DIR": str(local_dir), "DATABASE_URL": dead, "REPLICA_URLS": dead})
    bootstrap.use(bootstrap.build(settings))
    try:
        with Client(app_module.app) as client:
            response = client.http.get(f"/todos/{uuid.uuid4()}", headers=auth())
            assert response.status_code == 503 and "Retry-After" in response.headers
            assert response.json_body["error"] == "unavailable"
    finally:
        bootstrap.reset()
