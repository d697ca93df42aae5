"""Upgrading a populated version-1 database (CONTRACT sections 4 and 5), on SQLite and MariaDB.

The database is made as migration 4 left it and filled as the version-1 release did; then:
- (MariaDB) this release's loader meets it before `migrate`: an object with todos is deferred
  whole (nothing applied, no ledger entry, no rejects, its attempt not counted), one of profiles
  only loads, and the scheduled reconciler waits for `migrate` instead of trying on every run;
- `migrate` adds the new columns (the old rows read with the new fields' defaults) and tables;
- `reconcile_deferred` (the deploy's last step) loads what was deferred; objects written by the
  version-1 writer load with the defaults, and version-2 ones with their fields.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.db.database import utc_now_stored
from chalicelib.db.schema import migrate
from chalicelib.loader.reconciler import reconcile_deferred, reconcile_recent
from chalicelib.readers.sql import SqlReader
from tests.factories import make, older

OLD = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a50"
NEW = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a51"
FROM_V1 = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a52"
LIST = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5f"
OPS = [f"9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c{n}" for n in range(8)]
V = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
V1_ROWS = [
    "INSERT INTO todos (owner, id, title, notes, state, tags, due_at, version, op_id, deleted, created_at, "
    f"updated_at) VALUES ('alice', '{OLD}', 'written by version 1', '', 'done', '[\"home\"]', NULL, {V}, "
    f"'{OPS[0]}', 0, '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')",
    "INSERT INTO profiles (owner, display_name, locale, timezone, version, op_id, deleted, created_at, "
    f"updated_at) VALUES ('alice', 'Alice', 'en', 'UTC', {V}, '{OPS[1]}', 0, '2026-01-01 00:00:00.000000', "
    "'2026-01-01 00:00:00.000000')",
]


def write(local: Path, name: str, *lines: bytes) -> str:
    """An object in the local store, in this hour's folder (where the scheduled walk looks)."""
    key = f"writes/{datetime.now(UTC):%Y/%m/%d/%H}/{name}"
    (local / key).parent.mkdir(parents=True, exist_ok=True)
    (local / key).write_bytes(b"".join(lines))
    return key


def v1_line(id_: str, version: int, op: str, **data: Any) -> bytes:
    """A line as the version-1 writer wrote it (its own layout and fields)."""
    command = make_command("put", "todos", "alice", id_, version, op, make("todos", **data))
    return (
        json.dumps(older(json.loads(command.to_line()), 1), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    )


def v2_line(id_: str, version: int, op: str, **data: Any) -> bytes:
    return make_command("put", "todos", "alice", id_, version, op, make("todos", **data)).to_line()


def counts(db: Any) -> dict[str, int]:
    names = ("todos", "ingest_batches", "ingest_rejects")
    return {name: int(db.query(f"SELECT COUNT(*) FROM {name}")[0][0]) for name in names}


def services_on(url: str, local: Path) -> Any:
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    return bootstrap.build(Settings.from_env({"DATABASE_URL": url, "LOCAL_DATA_DIR": str(local)}))


def assert_upgraded(built: Any, local: Path) -> None:
    """After migrate: old rows read with the defaults; v1 and v2 objects load."""
    reader = SqlReader(built.master)
    old = reader.get("todos", "alice", OLD)
    assert old is not None and (old["title"], old["priority"], old["list_id"]) == ("written by version 1", 3, None)
    key = write(
        local,
        "after",
        v1_line(FROM_V1, V + 5, OPS[5], title="v1 after"),
        v2_line(NEW, V + 6, OPS[6], title="v2", priority=1, list_id=LIST),
    )
    result = built.loader.load("local", key, "etag-after", (local / key).read_bytes())
    assert (result.applied, result.rejected, result.deferred) == (2, 0, 0)
    from_v1, from_v2 = reader.get("todos", "alice", FROM_V1), reader.get("todos", "alice", NEW)
    assert from_v1 is not None and (from_v1["priority"], from_v1["list_id"]) == (3, None)
    assert from_v2 is not None and (from_v2["priority"], from_v2["list_id"]) == (1, LIST)


@pytest.fixture
def local(tmp_path: Path) -> Path:
    path = tmp_path / "local"
    path.mkdir()
    return path


def test_a_version_1_sqlite_database_is_upgraded_on_first_use(tmp_path: Path, local: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    assert migrate(conn, "sqlite", utc_now_stored(), upto=4) == [1, 2, 3, 4]
    for statement in V1_ROWS:
        conn.execute(statement)
    conn.commit()
    conn.close()
    built = services_on(f"sqlite:///{path}", local)  # the embedded schema is upgraded on first use
    assert_upgraded(built, local)
    built.master.discard()


@pytest.fixture
def version_1_mariadb(mysql_url: str) -> Iterator[str]:
    import pymysql

    from chalicelib.db.urls import parse_db_url

    url = parse_db_url(mysql_url)
    conn = pymysql.connect(host=url.host, port=url.port, user=url.user, database=url.database)
    try:
        assert migrate(conn, "mysql", utc_now_stored(), upto=4) == [1, 2, 3, 4]
        with conn.cursor() as cur:
            for statement in V1_ROWS:
                cur.execute(statement)
        conn.commit()
    finally:
        conn.close()
    yield mysql_url


def test_a_version_1_mariadb_database_defers_until_migrate_then_loads(version_1_mariadb: str, local: Path) -> None:
    from chalicelib import bootstrap

    built = services_on(version_1_mariadb, local)
    bootstrap.use(built)
    try:
        # GIVEN this release's loader on the version-1 schema (deployed, `migrate` not run yet)
        todos = write(local, "todos", v2_line(NEW, V + 2, OPS[2], title="before migrate", priority=5), b"junk\n")
        profile = (
            json.dumps(
                {
                    **json.loads(
                        make_command(
                            "put",
                            "profiles",
                            "bob",
                            "bob",
                            V + 3,
                            OPS[3],
                            {"display_name": "Bob", "locale": "en", "timezone": "UTC"},
                        ).to_line()
                    ),
                    "v": 1,
                }
            ).encode()
            + b"\n"
        )
        profiles = write(local, "profiles", profile)
        # WHEN objects arrive THEN the todos are deferred whole, the profile (held by every level) loads
        deferred = built.loader.load("local", todos, "etag-todos", (local / todos).read_bytes())
        assert (deferred.deferred, deferred.applied, deferred.rejected) == (1, 0, 0)
        assert counts(built.master) == {"todos": 1, "ingest_batches": 0, "ingest_rejects": 0}
        attempts = built.master.query("SELECT attempts, last_error FROM ingest_attempts")
        assert [(a, e.startswith("deferred:")) for a, e in attempts] == [(0, True)]
        assert built.loader.load("local", profiles, "etag-profiles", (local / profiles).read_bytes()).applied == 1
        # AND the scheduled reconciler waits for migrate instead of deferring them on every run
        assert reconcile_recent(built) == {"schema_behind": 1}
        # WHEN migrate runs, then the deploy's last step THEN what was deferred loads
        assert built.master.migrate() == [5, 6]
        done = reconcile_deferred(built)
        assert done["applied"] == 1 and done["deferred"] == 0 and done["rejected"] == 1
        row = SqlReader(built.master).get("todos", "alice", NEW)
        assert row is not None and (row["title"], row["priority"]) == ("before migrate", 5)
        assert_upgraded(built, local)
    finally:
        bootstrap.reset()
        built.master.discard()
