"""Running the migrations (chalicelib.db.migrations) and reading the migration level.

`schema_migrations` records what ran, and its newest version is the database's migration level
(`migration_level`, `level_of`). On MySQL/MariaDB every DDL statement commits by itself, so each
is idempotent on its own: `CREATE ... IF NOT EXISTS`, and an `ALTER` (`AddColumn`, `AddIndex`)
runs only when `information_schema` says it has not yet (MySQL 8.4 has no `ADD COLUMN IF NOT
EXISTS`; tests/unit/test_migrations.py forbids MariaDB-only syntax). Two `migrate` runs at once
are serialised with a named lock. The owner collation mark is replaced by the server's NO PAD
binary collation (`nopad_bin_collation`).

The migration list and the levels the loader reads are re-exported here for their importers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.db.migrations import (
    DEFERRALS_LEVEL,
    MIGRATIONS,
    MYSQL_TABLE,
    OWNER_COLLATION,
    RUNNING_CHARS,
    RUNNING_LOADS_MIGRATION,
    AddColumn,
    AddIndex,
    level_for,
)

if TYPE_CHECKING:
    from chalicelib.db.base import Database

__all__ = [
    "DEFERRALS_LEVEL",
    "MIGRATIONS",
    "OWNER_COLLATION",
    "RUNNING_CHARS",
    "RUNNING_LOADS_MIGRATION",
    "level_for",
    "level_of",
    "migrate",
    "migration_level",
    "owner_collation",
    "run_statement",
]

# MySQL/MariaDB: a read of keys listed as `(owner, id) IN ((...), ...)` names the primary key,
# which is what it reads anyway. Otherwise the range optimizer also works through every secondary
# index that starts with owner (`todos_list`), in time that grows with the square of the list
# (MariaDB 10.11, 50,000 todos, "statistics" of one read: 500 keys 112 ms against 2.6 ms with
# it; 64 keys 1.7 ms against 0.3 ms). On a populated table the plan is the same either way (a
# range read of the listed keys); on one of a few hundred rows, a scan of the whole primary key.
BY_KEY = "FORCE INDEX (PRIMARY)"
NOPAD_BIN_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")  # MariaDB >= 10.2, MySQL >= 8.0.17


def has_column(cur: Any, dialect: str, table: str, column: str) -> bool:
    if dialect == "sqlite":
        cur.execute(f"PRAGMA table_info({table})")
        return any(row[1] == column for row in cur.fetchall())
    return _listed(cur, "COLUMNS", "COLUMN_NAME", table, column)


def _listed(cur: Any, view: str, name_column: str, table: str, name: str) -> bool:
    """MySQL/MariaDB: whether information_schema.`view` lists `name` for this database's `table`."""
    cur.execute(
        f"SELECT COUNT(*) FROM information_schema.{view} "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND {name_column} = %s",
        (table, name),
    )
    return int(cur.fetchone()[0]) > 0


def has_index(cur: Any, table: str, name: str) -> bool:
    return _listed(cur, "STATISTICS", "INDEX_NAME", table, name)


LEVEL_QUERY = "SELECT MAX(version) FROM schema_migrations"


def level_of(cur: Any) -> int:
    """The migration level, read on a cursor: the newest recorded migration (0 before any)."""
    cur.execute(LEVEL_QUERY)
    return int(cur.fetchone()[0] or 0)


def migration_level(db: Database) -> int:
    """The database's migration level, read in a query of its own (0 before any migration, even
    of schema_migrations itself)."""
    from chalicelib.errors import DatabaseUnavailable

    try:
        rows = db.query(LEVEL_QUERY)
    except DatabaseUnavailable:
        raise
    except Exception:  # noqa: BLE001 - no schema_migrations table: nothing migrated yet
        return 0
    return int(rows[0][0] or 0) if rows else 0


LEDGER_TABLE = {
    "sqlite": """CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)""",
    "mysql": f"""CREATE TABLE IF NOT EXISTS schema_migrations (
        version INT NOT NULL PRIMARY KEY, description VARCHAR(255) NOT NULL,
        applied_at DATETIME(6) NOT NULL) {MYSQL_TABLE}""",
}


MIGRATE_LOCK = "sluice_migrate"
MIGRATE_LOCK_SECONDS = 30  # under the master's read timeout (40 s): a wait ends as an answer


def migrate(conn: Any, dialect: str, now: str, upto: int | None = None) -> list[int]:
    """Apply every migration not yet recorded (up to `upto`, when given: tests of upgrades).
    Returns the versions applied now.

    On MySQL/MariaDB each DDL statement commits by itself, so a migration is made idempotent
    statement by statement (IF NOT EXISTS; `AddColumn` and `AddIndex` ask whether it exists) and
    recorded last; two `migrate` runs at once are
    serialised with a named lock, so the second finds the work done.
    """
    mark = "?" if dialect == "sqlite" else "%s"
    cur = conn.cursor()
    if dialect == "mysql":
        cur.execute("SELECT GET_LOCK(%s, %s)", (MIGRATE_LOCK, MIGRATE_LOCK_SECONDS))
        if cur.fetchone()[0] != 1:
            raise RuntimeError("another migrate holds the schema lock; try again")
    try:
        cur.execute(LEDGER_TABLE[dialect])
        cur.execute("SELECT version FROM schema_migrations")
        done = {int(row[0]) for row in cur.fetchall()}
        applied = []
        for version, description, statements in sorted(MIGRATIONS, key=lambda m: m[0]):
            if version in done or (upto is not None and version > upto):
                continue
            for statement in statements[dialect]:
                run_statement(cur, dialect, statement)
            cur.execute(
                f"INSERT INTO schema_migrations (version, description, applied_at) VALUES ({mark}, {mark}, {mark})",
                (version, description, now),
            )
            applied.append(version)
        conn.commit()
    finally:
        if dialect == "mysql":
            cur.execute("SELECT RELEASE_LOCK(%s)", (MIGRATE_LOCK,))
            cur.fetchall()
    return applied


def run_statement(cur: Any, dialect: str, statement: str) -> None:
    """Run one migration statement: an `AddColumn` or `AddIndex` only when what it adds is missing;
    the owner collation mark replaced by the server's NO PAD binary collation."""
    if isinstance(statement, AddColumn) and has_column(cur, dialect, statement.table, statement.column):
        return
    if isinstance(statement, AddIndex) and has_index(cur, statement.table, statement.name):
        return
    if OWNER_COLLATION in statement:
        statement = statement.replace(OWNER_COLLATION, nopad_bin_collation(cur))
    cur.execute(statement)


def nopad_bin_collation(cur: Any) -> str:
    """The server's utf8mb4 binary collation without PAD SPACE (MariaDB's or MySQL 8's name)."""
    marks = ", ".join(["%s"] * len(NOPAD_BIN_COLLATIONS))
    cur.execute(
        f"SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN ({marks})",
        NOPAD_BIN_COLLATIONS,
    )
    known = {str(row[0]) for row in cur.fetchall()}
    for name in NOPAD_BIN_COLLATIONS:
        if name in known:
            return name
    raise RuntimeError(f"the server has none of {', '.join(NOPAD_BIN_COLLATIONS)}: owners cannot compare exactly")


def owner_collation(cur: Any, table: str = "todos") -> str:
    """The collation `table`.owner has now (a table made with another collation must match it)."""
    cur.execute(
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = 'owner'",
        (table,),
    )
    row = cur.fetchone()
    return str(row[0]) if row and row[0] else "utf8mb4_bin"
