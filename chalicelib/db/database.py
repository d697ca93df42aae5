"""Opening a database: `open_database` for a URL (SQLite or MySQL/MariaDB), and the master and
reader settings (`open_master`, `open_reader`: timeouts, LOAD DATA, Secrets Manager credentials).

The classes live beside it: `Database` (chalicelib.db.base), `SqliteDatabase` (chalicelib.db.sqlite),
`MySQLDatabase` (chalicelib.db.mysql), and the MySQL error classes (chalicelib.db.mysql_errors); the
names callers import from here are re-exported.
"""

from __future__ import annotations

from typing import Any

from chalicelib.db.base import Database, utc_now_stored
from chalicelib.db.mysql import MySQLDatabase
from chalicelib.db.mysql_errors import connection_lost
from chalicelib.db.secrets import CredentialSource
from chalicelib.db.sqlite import SqliteDatabase
from chalicelib.db.urls import parse_db_url

__all__ = [
    "MASTER_OPTIONS",
    "READER_OPTIONS",
    "Database",
    "MySQLDatabase",
    "SqliteDatabase",
    "connection_lost",
    "open_database",
    "open_master",
    "open_reader",
    "utc_now_stored",
]


def open_database(url: str, **kwargs: Any) -> Database:
    """A Database for `url`; keyword arguments go to MySQLDatabase (timeouts, TLS, credentials)."""
    parsed = parse_db_url(url, need_host=kwargs.get("credentials") is None)
    if parsed.dialect == "sqlite":
        return SqliteDatabase(parsed)
    return MySQLDatabase(parsed, **kwargs)


# Timeouts: a reader gives up quickly and fails over. The loader's statements each move at most a
# chunk of an object (LOAD DATA of 4,000 rows, 500-row upserts) or commit it, and PyMySQL's read
# timeout is per socket read; a lock wait ends first (30 s, then retried). A load whose server stops
# answering mid-statement gives up after 40 s, and its attempt is given back within 60 s (CONTRACT
# section 5); a connection attempt, handshake included, takes at most connect_timeout.
READER_OPTIONS: dict[str, Any] = {"connect_timeout": 2, "read_timeout": 5, "autocommit": True, "cache_columns": True}
MASTER_OPTIONS: dict[str, Any] = {
    "connect_timeout": 3,
    "read_timeout": 40,
    "lock_wait_timeout": 30,
    "local_infile": True,
}


def _credentials(secret_arn: str) -> CredentialSource | None:
    if not secret_arn:
        return None
    from chalicelib.db.secrets import secret_credentials

    return secret_credentials(secret_arn)


def open_master(url: str, secret_arn: str = "", **overrides: Any) -> Database:
    """The master as the loader and `migrate` use it (transactions, LOAD DATA LOCAL allowed)."""
    return open_database(url, **{**MASTER_OPTIONS, "credentials": _credentials(secret_arn), **overrides})


def open_reader(url: str, secret_arn: str = "", **overrides: Any) -> Database:
    """A database for GET routes: autocommit reads, short timeouts, no LOAD DATA."""
    return open_database(url, **{**READER_OPTIONS, "credentials": _credentials(secret_arn), **overrides})
