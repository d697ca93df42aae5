"""Migrations are additive, idempotent, and written for MySQL 8.4 as well as MariaDB 10.11.

MySQL 8.4 lacks much that MariaDB takes (`ADD COLUMN IF NOT EXISTS`, `CREATE OR REPLACE`, ...): a
migration using it would pass every test here (they run MariaDB) and fail on RDS for MySQL. So
the MySQL statements are checked for MariaDB-only syntax, and every ALTER that adds is one that
asks information_schema first (`AddColumn`, `AddIndex`). On SQLite, a version-1 database with
rows is migrated and migrated again. tests/integration/test_upgrade.py does the same on MariaDB.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from chalicelib.db.migrations import DEFERRALS_LEVEL, MIGRATIONS, SCHEMA_LEVELS, AddColumn, AddIndex
from chalicelib.db.schema import migrate
from chalicelib.resources import RESOURCES, SCHEMA_VERSION

# MariaDB syntax (or types, engines, collations) that MySQL 8.4 does not have.
MARIADB_ONLY = {
    r"\b(?:ADD|DROP|MODIFY|CHANGE|RENAME)\s+(?:COLUMN\s+|INDEX\s+|KEY\s+|CONSTRAINT\s+)?IF\s+(?:NOT\s+)?EXISTS\b": (
        "IF [NOT] EXISTS on a column, index or key"
    ),
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+IF\s+NOT\s+EXISTS\b": "CREATE INDEX IF NOT EXISTS",
    r"\bCREATE\s+OR\s+REPLACE\b": "CREATE OR REPLACE",
    r"\bRETURNING\b": "RETURNING",
    r"\bSEQUENCE\b": "sequences",
    r"\bIGNORED\b": "ignored indexes",
    r"\b(?:INET4|INET6|UUID)\b(?!\()": "MariaDB-only column types",
    r"\bWITH\s+SYSTEM\s+VERSIONING\b": "system-versioned tables",
    r"\bENGINE\s*=\s*(?:Aria|ColumnStore|S3|Spider)\b": "MariaDB-only engines",
    r"\butf8mb4_nopad_bin\b|\butf8mb4_uca1400": "a MariaDB collation named outright (use the owner collation mark)",
    r"\bPAGE_COMPRESSED\b|\bCOMPRESSED\b": "column or page compression",
}


def mysql_statements(migrations: list[tuple[int, str, dict[str, list[str]]]]) -> list[tuple[int, str]]:
    return [(version, s) for version, _, by in migrations for s in by["mysql"]]


def mariadb_only(statement: str) -> list[str]:
    text = " ".join(statement.split())
    return [why for pattern, why in MARIADB_ONLY.items() if re.search(pattern, text, re.IGNORECASE)]


def test_no_migration_uses_mariadb_only_syntax() -> None:
    found = {(v, s[:80]): mariadb_only(s) for v, s in mysql_statements(MIGRATIONS) if mariadb_only(s)}
    assert found == {}


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE todos ADD COLUMN IF NOT EXISTS priority TINYINT NOT NULL DEFAULT 3",
        "ALTER TABLE todos ADD INDEX IF NOT EXISTS todos_list (owner, list_id, id)",
        "CREATE INDEX IF NOT EXISTS todos_list ON todos (owner, list_id, id)",
        "ALTER TABLE todos DROP COLUMN IF EXISTS priority",
        "CREATE OR REPLACE TABLE lists (id INT)",
        "CREATE TABLE x (id UUID NOT NULL)",
        "CREATE TABLE x (owner VARCHAR(128) COLLATE utf8mb4_nopad_bin)",
    ],
)
def test_the_check_finds_mariadb_only_syntax(statement: str) -> None:
    assert mariadb_only(statement)


def test_what_the_migrations_use_is_not_taken_for_mariadb_only() -> None:
    for statement in (
        "CREATE TABLE IF NOT EXISTS lists (id CHAR(36))",
        "ALTER TABLE todos ADD COLUMN list_id CHAR(36)",
    ):
        assert mariadb_only(statement) == []


def test_migrations_from_4_on_only_add_and_ask_before_they_alter() -> None:
    for version, _, by in MIGRATIONS:
        if version < 4:
            continue  # history: 2's MODIFY is idempotent as written
        for dialect, statements in by.items():
            for statement in statements:
                text = " ".join(statement.split()).upper()
                assert not re.search(r"\b(DROP|MODIFY|CHANGE|RENAME|TRUNCATE|DELETE|UPDATE)\b", text), statement
                if text.startswith("ALTER TABLE"):
                    assert isinstance(statement, AddColumn | AddIndex), (version, dialect, statement)
                else:
                    assert "IF NOT EXISTS" in text, (version, dialect, statement)


def test_the_schema_levels_name_migrations_that_exist() -> None:
    versions = {version for version, _, _ in MIGRATIONS}
    assert set(SCHEMA_LEVELS) == set(range(1, SCHEMA_VERSION + 1))
    assert set(SCHEMA_LEVELS.values()) | {DEFERRALS_LEVEL} <= versions
    assert max(versions) >= max(SCHEMA_LEVELS.values())


V1_TODO = (
    "INSERT INTO todos (owner, id, title, notes, state, tags, due_at, version, op_id, deleted, created_at, "
    "updated_at) VALUES ('alice', '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', 'old', '', 'open', '[]', NULL, 1, "
    "'9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c8', 0, '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')"
)


def test_a_version_1_sqlite_database_with_rows_is_migrated_and_migrated_again(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.sqlite3")
    # GIVEN the schema as of migration 4, with a row written by the version-1 loader
    assert migrate(conn, "sqlite", "2026-01-01 00:00:00.000000", upto=4) == [1, 2, 3, 4]
    conn.execute(V1_TODO)
    conn.commit()
    # WHEN it is migrated THEN the new columns hold the declared defaults and the new tables exist
    assert migrate(conn, "sqlite", "2026-01-02 00:00:00.000000") == [5, 6]
    row = conn.execute("SELECT title, priority, list_id FROM todos").fetchall()
    defaults = RESOURCES["todos"].defaults()
    assert row == [("old", defaults["priority"], defaults["list_id"])]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(RESOURCES) | {"ingest_deferrals"} <= tables
    # AND again: nothing to do; and a migration cut short after its ALTERs runs again cleanly
    assert migrate(conn, "sqlite", "2026-01-03 00:00:00.000000") == []
    conn.execute("DELETE FROM schema_migrations WHERE version >= 5")
    conn.commit()
    assert migrate(conn, "sqlite", "2026-01-04 00:00:00.000000") == [5, 6]
    conn.close()
