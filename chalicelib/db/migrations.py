"""The migrations themselves: the list of versioned, additive migrations for SQLite and
MySQL/MariaDB (`MIGRATIONS`), the statements that add only what is missing (`AddColumn`,
`AddIndex`), the CREATE TABLE of a declared resource (`table_ddl`), and the levels the loader
checks (`SCHEMA_LEVELS`, `DEFERRALS_LEVEL`, `RUNNING_LOADS_MIGRATION`). chalicelib.db.schema runs them.

Timestamps are kept as fixed-width UTC text in SQLite and DATETIME(6) in MySQL, so that their
order is the time order in both (the loader takes LEAST(created_at, ...)). `SCHEMA_LEVELS` says
from which level the tables hold the commands of each command schema version
(`resources.SCHEMA_VERSION`, CONTRACT section 4): a loader defers an object the database cannot
hold yet (chalicelib/loader/deferral.py) instead of failing on a missing column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.identity import MAX_SUB_CHARS

if TYPE_CHECKING:
    from chalicelib.resources import Resource

MYSQL_TABLE = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
ASCII_BIN = "CHARACTER SET ascii COLLATE ascii_bin"
RUNNING_CHARS = 2000  # ingest_attempts.running: about 40 loads of one object at once

# utf8mb4_bin is a PAD SPACE collation in MySQL 8 and MariaDB: 'alice' = 'alice ', and the two would
# share a primary key. Owners compare exactly (as in SQLite, whose TEXT has no padding) under the
# server's NO PAD binary collation, named in a statement by this mark and chosen by `chalicelib.db.schema.migrate`.
OWNER_COLLATION = "@OWNER_COLLATION@"


class AddColumn(str):
    """`ALTER TABLE table ADD COLUMN column definition`, run only when the table has no such column
    yet. MySQL 8.4 has no `ADD COLUMN IF NOT EXISTS` (MariaDB has), and on MySQL/MariaDB each DDL
    statement commits by itself: a migration cut short after its ALTER must run again cleanly. The
    statement's text is the plain ALTER (what tests read); `chalicelib.db.schema.migrate` asks information_schema
    (SQLite: PRAGMA table_info) first."""

    table: str
    column: str

    def __new__(cls, table: str, column: str, definition: str) -> AddColumn:
        statement = super().__new__(cls, f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        statement.table, statement.column = table, column
        return statement


class AddIndex(str):
    """MySQL/MariaDB: `ALTER TABLE table ADD INDEX index (columns)`, run only when the table has no
    index of that name yet (MySQL 8.4 has no `ADD INDEX IF NOT EXISTS`; SQLite migrations write
    `CREATE INDEX IF NOT EXISTS`)."""

    table: str
    name: str

    def __new__(cls, table: str, name: str, columns: str) -> AddIndex:
        statement = super().__new__(cls, f"ALTER TABLE {table} ADD INDEX {name} ({columns})")
        statement.table, statement.name = table, name
        return statement


# The migration whose `ingest_attempts.running` lists the loads of an object under way
# (chalicelib.loader.attempts); a loader on an older schema counts failures only.
RUNNING_LOADS_MIGRATION = 4

MIGRATIONS: list[tuple[int, str, dict[str, list[str]]]] = [
    (
        1,
        "todos, profiles, ingest ledger and rejects",
        {
            "sqlite": [
                """CREATE TABLE IF NOT EXISTS todos (
                    owner TEXT NOT NULL, id TEXT NOT NULL,
                    title TEXT NOT NULL, notes TEXT NOT NULL, state TEXT NOT NULL,
                    tags TEXT NOT NULL, due_at TEXT NULL,
                    version INTEGER NOT NULL, op_id TEXT NOT NULL, deleted INTEGER NOT NULL,
                    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                    PRIMARY KEY (owner, id)) WITHOUT ROWID""",
                """CREATE TABLE IF NOT EXISTS profiles (
                    owner TEXT NOT NULL PRIMARY KEY,
                    display_name TEXT NOT NULL, locale TEXT NOT NULL, timezone TEXT NOT NULL,
                    version INTEGER NOT NULL, op_id TEXT NOT NULL, deleted INTEGER NOT NULL,
                    created_at TEXT NOT NULL, updated_at TEXT NOT NULL) WITHOUT ROWID""",
                """CREATE TABLE IF NOT EXISTS ingest_batches (
                    batch_id TEXT NOT NULL PRIMARY KEY,
                    bucket TEXT NOT NULL, object_key TEXT NOT NULL, etag TEXT NOT NULL,
                    applied INTEGER NOT NULL, stale INTEGER NOT NULL, rejected INTEGER NOT NULL,
                    loads INTEGER NOT NULL, first_loaded_at TEXT NOT NULL, last_loaded_at TEXT NOT NULL)""",
                """CREATE INDEX IF NOT EXISTS ingest_batches_key ON ingest_batches (object_key)""",
                """CREATE TABLE IF NOT EXISTS ingest_rejects (
                    batch_id TEXT NOT NULL, line_no INTEGER NOT NULL, part INTEGER NOT NULL,
                    bucket TEXT NOT NULL, object_key TEXT NOT NULL, etag TEXT NOT NULL,
                    reason TEXT NOT NULL, line TEXT NOT NULL, rejected_at TEXT NOT NULL,
                    PRIMARY KEY (batch_id, line_no, part))""",
            ],
            "mysql": [
                f"""CREATE TABLE IF NOT EXISTS todos (
                    owner VARCHAR(128) NOT NULL,
                    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    title VARCHAR(200) NOT NULL, notes TEXT NOT NULL,
                    state VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    tags VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    due_at VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin NULL,
                    version BIGINT NOT NULL,
                    op_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    deleted TINYINT NOT NULL,
                    created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL,
                    PRIMARY KEY (owner, id)) {MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS profiles (
                    owner VARCHAR(128) NOT NULL PRIMARY KEY,
                    display_name VARCHAR(100) NOT NULL,
                    locale VARCHAR(35) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    timezone VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    version BIGINT NOT NULL,
                    op_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    deleted TINYINT NOT NULL,
                    created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL) {MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS ingest_batches (
                    batch_id CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
                    bucket VARCHAR(255) NOT NULL, object_key VARCHAR(1024) NOT NULL,
                    etag VARCHAR(128) NOT NULL,
                    applied INT NOT NULL, stale INT NOT NULL, rejected INT NOT NULL,
                    loads INT NOT NULL,
                    first_loaded_at DATETIME(6) NOT NULL, last_loaded_at DATETIME(6) NOT NULL,
                    KEY ingest_batches_key (object_key(255))) {MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS ingest_rejects (
                    batch_id CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                    line_no INT NOT NULL, part INT NOT NULL,
                    bucket VARCHAR(255) NOT NULL, object_key VARCHAR(1024) NOT NULL,
                    etag VARCHAR(128) NOT NULL,
                    reason VARCHAR(512) NOT NULL, line TEXT NOT NULL,
                    rejected_at DATETIME(6) NOT NULL,
                    PRIMARY KEY (batch_id, line_no, part)) {MYSQL_TABLE}""",
            ],
        },
    ),
    (
        2,
        "owners compare exactly: a NO PAD binary collation for todos.owner and profiles.owner",
        {
            "sqlite": [],  # TEXT compares byte by byte already
            "mysql": [
                f"ALTER TABLE todos MODIFY owner VARCHAR(128) CHARACTER SET utf8mb4 COLLATE {OWNER_COLLATION} NOT NULL",
                "ALTER TABLE profiles MODIFY owner VARCHAR(128) "
                f"CHARACTER SET utf8mb4 COLLATE {OWNER_COLLATION} NOT NULL",
            ],
        },
    ),
    (
        3,
        "ingest_attempts: load attempts and poisoned objects",
        {
            "sqlite": [
                """CREATE TABLE IF NOT EXISTS ingest_attempts (
                    batch_id TEXT NOT NULL PRIMARY KEY,
                    bucket TEXT NOT NULL, object_key TEXT NOT NULL, etag TEXT NOT NULL,
                    attempts INTEGER NOT NULL, last_error TEXT NOT NULL,
                    first_attempt_at TEXT NOT NULL, last_attempt_at TEXT NOT NULL,
                    poisoned_at TEXT NULL)""",
                """CREATE INDEX IF NOT EXISTS ingest_attempts_poisoned ON ingest_attempts (poisoned_at)""",
            ],
            "mysql": [
                f"""CREATE TABLE IF NOT EXISTS ingest_attempts (
                    batch_id CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
                    bucket VARCHAR(255) NOT NULL, object_key VARCHAR(1024) NOT NULL,
                    etag VARCHAR(128) NOT NULL,
                    attempts INT NOT NULL, last_error VARCHAR(1000) NOT NULL,
                    first_attempt_at DATETIME(6) NOT NULL, last_attempt_at DATETIME(6) NOT NULL,
                    poisoned_at DATETIME(6) NULL,
                    KEY ingest_attempts_poisoned (poisoned_at)) {MYSQL_TABLE}""",
            ],
        },
    ),
    (
        4,
        "ingest_attempts.running: the loads of an object under way, each with what shows it alive",
        {
            "sqlite": [AddColumn("ingest_attempts", "running", "TEXT NOT NULL DEFAULT ''")],
            "mysql": [
                AddColumn("ingest_attempts", "running", f"VARCHAR({RUNNING_CHARS}) {ASCII_BIN} NOT NULL DEFAULT ''"),
            ],
        },
    ),
    (
        5,
        "command schema version 2: todos.priority and todos.list_id (with the index of ?list_id=), lists",
        {
            "sqlite": [
                AddColumn("todos", "priority", "INTEGER NOT NULL DEFAULT 3"),
                AddColumn("todos", "list_id", "TEXT NULL"),
                "CREATE INDEX IF NOT EXISTS todos_list ON todos (owner, list_id, id)",
                """CREATE TABLE IF NOT EXISTS lists (
                    owner TEXT NOT NULL, id TEXT NOT NULL,
                    name TEXT NOT NULL, position INTEGER NOT NULL,
                    version INTEGER NOT NULL, op_id TEXT NOT NULL, deleted INTEGER NOT NULL,
                    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                    PRIMARY KEY (owner, id)) WITHOUT ROWID""",
            ],
            "mysql": [
                AddColumn("todos", "priority", "TINYINT NOT NULL DEFAULT 3"),
                AddColumn("todos", "list_id", f"CHAR(36) {ASCII_BIN} NULL"),
                AddIndex("todos", "todos_list", "owner, list_id, id"),
                f"""CREATE TABLE IF NOT EXISTS lists (
                    owner VARCHAR(128) CHARACTER SET utf8mb4 COLLATE {OWNER_COLLATION} NOT NULL,
                    id CHAR(36) {ASCII_BIN} NOT NULL,
                    name VARCHAR(100) NOT NULL, position INT NOT NULL,
                    version BIGINT NOT NULL,
                    op_id CHAR(36) {ASCII_BIN} NOT NULL,
                    deleted TINYINT NOT NULL,
                    created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL,
                    PRIMARY KEY (owner, id)) {MYSQL_TABLE}""",
            ],
        },
    ),
    (
        6,
        "ingest_deferrals: objects left for a newer loader or schema, and what each waits for",
        {
            "sqlite": [
                """CREATE TABLE IF NOT EXISTS ingest_deferrals (
                    batch_id TEXT NOT NULL PRIMARY KEY,
                    bucket TEXT NOT NULL, object_key TEXT NOT NULL, etag TEXT NOT NULL,
                    needs_version INTEGER NOT NULL, needs_level INTEGER NOT NULL,
                    reason TEXT NOT NULL, deferred_at TEXT NOT NULL)""",
            ],
            "mysql": [
                f"""CREATE TABLE IF NOT EXISTS ingest_deferrals (
                    batch_id CHAR(64) {ASCII_BIN} NOT NULL PRIMARY KEY,
                    bucket VARCHAR(255) NOT NULL, object_key VARCHAR(1024) NOT NULL,
                    etag VARCHAR(128) NOT NULL,
                    needs_version INT NOT NULL, needs_level INT NOT NULL,
                    reason VARCHAR(512) NOT NULL, deferred_at DATETIME(6) NOT NULL) {MYSQL_TABLE}""",
            ],
        },
    ),
]

# From which migration level the tables hold the commands of each command schema version.
SCHEMA_LEVELS = {1: 1, 2: 5}
DEFERRALS_LEVEL = 6  # ingest_deferrals exists from here


def level_for(schema_version: int) -> int:
    """The migration level whose tables hold commands of `schema_version`."""
    return SCHEMA_LEVELS[schema_version]


def table_ddl(resource: Resource, dialect: str) -> str:
    """CREATE TABLE for a declared resource, in the layout of todos and lists: its key, one
    column per declared field (MySQL types from the declaration; TEXT, or INTEGER for integers,
    in SQLite), then the winning command's version and op_id, the tombstone flag and the two
    timestamps. A new resource's migration writes it out (docs/architecture.md, "How to add a
    field / a resource"); tests/unit/test_resources.py holds every migrated table to it. On
    MySQL the owner's collation is the mark `chalicelib.db.schema.run_statement` replaces."""
    rules = resource.rules()
    nulls = {name: "NULL" if rule.nullable else "NOT NULL" for name, rule in rules.items()}
    primary = "PRIMARY KEY (owner, id)" if resource.by_id else "PRIMARY KEY (owner)"
    if dialect == "sqlite":
        key = "owner TEXT NOT NULL, id TEXT NOT NULL" if resource.by_id else "owner TEXT NOT NULL"
        types = {name: "INTEGER" if rule.kind == "integer" else "TEXT" for name, rule in rules.items()}
        columns = [f"{name} {types[name]} {null}" for name, null in nulls.items()]
        tail = (
            "version INTEGER NOT NULL, op_id TEXT NOT NULL, deleted INTEGER NOT NULL, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL"
        )
        end = ") WITHOUT ROWID"
    else:
        key = f"owner VARCHAR({MAX_SUB_CHARS}) CHARACTER SET utf8mb4 COLLATE {OWNER_COLLATION} NOT NULL" + (
            f", id CHAR(36) {ASCII_BIN} NOT NULL" if resource.by_id else ""
        )
        columns = [f"{name} {rule.mysql} {nulls[name]}" for name, rule in rules.items()]
        tail = (
            f"version BIGINT NOT NULL, op_id CHAR(36) {ASCII_BIN} NOT NULL, deleted TINYINT NOT NULL, "
            "created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL"
        )
        end = f") {MYSQL_TABLE}"
    return f"CREATE TABLE IF NOT EXISTS {resource.name} ({key}, {', '.join(columns)}, {tail}, {primary}{end}"
