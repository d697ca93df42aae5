"""The embedded SQLite database: a file under LOCAL_DATA_DIR, schema created on first use."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from chalicelib.db.base import Database, utc_now_stored
from chalicelib.db.schema import migrate
from chalicelib.db.urls import DbUrl


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

    def is_retryable(self, exc: BaseException | None) -> bool:
        # Still busy or locked after busy_timeout (another process held the write lock that long).
        code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.OperationalError) else None
        return isinstance(code, int) and code & 0xFF in SQLITE_BUSY


SQLITE_BUSY = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED: the low byte of their extended codes too


class _AutoCommitting:
    """Lets schema.migrate drive an isolation_level=None sqlite connection inside our BEGIN."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def cursor(self) -> sqlite3.Cursor:
        return self._conn.cursor()

    def commit(self) -> None:
        self._conn.execute("COMMIT")
