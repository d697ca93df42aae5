"""The database surface every caller uses: `Database`, one connection per thread, made lazily and reused.

`Database` hides the two dialects (chalicelib.db.sqlite, chalicelib.db.mysql) behind one small
surface: `transaction()` and `query()`, SQL written with %s placeholders (rewritten to ? for
SQLite), and driver errors translated into `DatabaseUnavailable` (server gone) or left as
integrity errors the caller asked about. Also the stored form of "now" (`utc_now_stored`).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NoReturn

from chalicelib.db.schema import migrate
from chalicelib.db.urls import DbUrl
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

    def is_retryable(self, exc: BaseException | None) -> bool:
        """Whether a transaction that failed with `exc` may simply run again (deadlock victim)."""
        return False

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
        except Exception as exc:  # noqa: BLE001 - _raise_for raises it again
            self._raise_for(exc)

    def _raise_for(self, exc: Exception) -> NoReturn:
        """A driver error raised again: as DatabaseUnavailable, the connection discarded, when the
        server is gone; as it is otherwise."""
        if self._is_unavailable(exc):
            self.discard()
            raise DatabaseUnavailable(f"database {self.url.redacted()} failed: {exc}") from exc
        raise exc

    def send_query(self, text: str, params: Sequence[Any] = ()) -> Callable[[], list[tuple[Any, ...]]]:
        """`query` in two steps: send now, and read the rows when the returned function is called,
        so the caller can do other work while the server runs the statement. Nothing else may use
        this thread's connection until the rows are read. Here (SQLite) the statement runs now."""
        rows = self.query(text, params)
        return lambda: rows

    def _end_read(self, conn: Any) -> None:
        return None

    def migrate(self) -> list[int]:
        conn = self.connection()
        try:
            return migrate(conn, self.dialect, utc_now_stored())
        except Exception as exc:  # noqa: BLE001 - _raise_for raises it again
            self._raise_for(exc)


@lru_cache(maxsize=64)
def _to_qmark(text: str) -> str:
    return text.replace("%s", "?")
