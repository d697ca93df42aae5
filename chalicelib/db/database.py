"""Connections to the master or a replica, one per thread, made lazily and reused.

`Database` hides the two dialects behind one small surface: `transaction()` and `query()`, SQL
written with %s placeholders (rewritten to ? for SQLite), and driver errors translated into
`DatabaseUnavailable` (server gone) or left as integrity errors the caller asked about.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from chalicelib.db.schema import migrate
from chalicelib.db.urls import DbUrl, parse_db_url
from chalicelib.errors import DatabaseUnavailable


def utc_now_stored() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Database(ABC):
    dialect: str = ""
    mark: str = "%s"

    def __init__(self, url: DbUrl) -> None:
        self.url = url
        self._local = threading.local()

    def sql(self, text: str) -> str:
        return _to_qmark(text) if self.mark == "?" else text

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _is_unavailable(self, exc: BaseException) -> bool: ...

    @abstractmethod
    def is_duplicate_key(self, exc: BaseException) -> bool: ...

    def _healthy(self, conn: Any, idle: float) -> bool:
        return True

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        now = time.monotonic()
        if conn is not None and not self._healthy(conn, now - self._local.used):
            self.discard()
            conn = None
        if conn is None:
            try:
                conn = self._connect()
            except Exception as exc:
                if self._is_unavailable(exc):
                    raise DatabaseUnavailable(f"cannot connect to {self.url.redacted()}: {exc}") from exc
                raise
            self._local.conn = conn
        self._local.used = now
        return conn

    def discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail any way
                pass

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor in one transaction: committed when the block ends, rolled back on error."""
        conn = self.connection()
        try:
            cur = conn.cursor()
            self._begin(cur)
            yield cur
            conn.commit()
        except BaseException as exc:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the server may be gone; the connection is dropped
                self.discard()
            if self._is_unavailable(exc):
                self.discard()
                raise DatabaseUnavailable(f"database {self.url.redacted()} failed: {exc}") from exc
            raise

    def _begin(self, cur: Any) -> None:
        return None

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self.connection()
        try:
            cur = conn.cursor()
            cur.execute(self.sql(text), params)
            rows = cur.fetchall()
            self._end_read(conn)
            return list(rows)
        except Exception as exc:
            if self._is_unavailable(exc):
                self.discard()
                raise DatabaseUnavailable(f"database {self.url.redacted()} failed: {exc}") from exc
            raise

    def _end_read(self, conn: Any) -> None:
        return None

    def migrate(self) -> list[int]:
        conn = self.connection()
        try:
            return migrate(conn, self.dialect, utc_now_stored())
        except Exception as exc:
            if self._is_unavailable(exc):
                self.discard()
                raise DatabaseUnavailable(f"database {self.url.redacted()} failed: {exc}") from exc
            raise


@lru_cache(maxsize=64)
def _to_qmark(text: str) -> str:
    return text.replace("%s", "?")


class SqliteDatabase(Database):
    """The embedded default: a file under LOCAL_DATA_DIR, schema created on first use."""

    dialect = "sqlite"
    mark = "?"

    def __init__(self, url: DbUrl) -> None:
        super().__init__(url)
        self._migrated = False
        self._migrate_lock = threading.Lock()

    def _connect(self) -> Any:
        if self.url.path != ":memory:":
            folder = os.path.dirname(os.path.abspath(self.url.path))
            os.makedirs(folder, exist_ok=True)
        conn = sqlite3.connect(self.url.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        # isolation_level=None: we issue BEGIN ourselves; commit()/rollback() still work.
        with self._migrate_lock:
            if not self._migrated:
                conn.execute("BEGIN IMMEDIATE")
                migrate(_AutoCommitting(conn), "sqlite", utc_now_stored())
                self._migrated = True
        return conn

    def _begin(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and not isinstance(exc, sqlite3.IntegrityError)

    def is_duplicate_key(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)


class _AutoCommitting:
    """Lets schema.migrate drive an isolation_level=None sqlite connection inside our BEGIN."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def cursor(self) -> sqlite3.Cursor:
        return self._conn.cursor()

    def commit(self) -> None:
        self._conn.execute("COMMIT")


class MySQLDatabase(Database):
    """MySQL or MariaDB through PyMySQL. Imported lazily: a process on SQLite never pays for it."""

    dialect = "mysql"
    mark = "%s"
    PING_AFTER_IDLE_SECONDS = 30.0

    def __init__(
        self,
        url: DbUrl,
        connect_timeout: float = 3,
        read_timeout: float = 30,
        ssl_context: Any = None,
        credentials: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(url)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl_context = ssl_context
        self.credentials = credentials

    def _connect(self) -> Any:
        import pymysql

        user, password = self.credentials() if self.credentials else (self.url.user, self.url.password)
        return pymysql.connect(
            host=self.url.host,
            port=self.url.port,
            user=user,
            password=password,
            database=self.url.database or None,
            charset="utf8mb4",
            autocommit=False,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            write_timeout=self.read_timeout,
            local_infile=True,
            ssl=self.ssl_context,
            init_command="SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), time_zone = '+00:00'",
        )

    def _healthy(self, conn: Any, idle: float) -> bool:
        if not conn.open:
            return False
        if idle < self.PING_AFTER_IDLE_SECONDS:
            return True
        try:
            conn.ping(reconnect=False)
        except Exception:  # noqa: BLE001 - any failure means: make a new connection
            return False
        return True

    def _end_read(self, conn: Any) -> None:
        # End the read's implicit transaction so the next read sees fresh replicated rows.
        conn.commit()

    def _is_unavailable(self, exc: BaseException) -> bool:
        import pymysql

        if isinstance(exc, (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError)):
            return True
        return False

    def is_duplicate_key(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.IntegrityError) and exc.args and exc.args[0] == 1062  # type: ignore[return-value]


def open_database(url: str, **kwargs: Any) -> Database:
    parsed = parse_db_url(url)
    if parsed.dialect == "sqlite":
        return SqliteDatabase(parsed)
    return MySQLDatabase(parsed, **kwargs)
