"""MySQL or MariaDB through PyMySQL: `MySQLDatabase`, its connect (TLS, credentials, timeouts,
the session's settings) and its reads (a kept connection found dropped is replaced once)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from chalicelib.db import local_files
from chalicelib.db.base import Database
from chalicelib.db.mysql_errors import (
    ACCESS_DENIED,
    CHARSET_ERRORS,
    CONNECTION_LOST,
    RETRYABLE,
    SSL_NOT_OFFERED,
    connection_dropped_inside_pymysql,
    mysql_error_code,
)
from chalicelib.db.secrets import Credentials, CredentialSource
from chalicelib.db.tls import TlsPolicy, context_for, policy_for
from chalicelib.db.urls import DbUrl
from chalicelib.errors import DatabaseUnavailable

COM_QUERY = 3  # pymysql.constants.COMMAND.COM_QUERY, without importing PyMySQL here
# A string PyMySQL's escaping leaves as it is (no quote, backslash, NUL, newline or ^Z), with
# or without NO_BACKSLASH_ESCAPES: the owners and ids every read by key sends.
_PLAIN = re.compile(r"[0-9A-Za-z_.:@+-]*").fullmatch
# Strict for every table, and UTC for the session. CONCAT_WS skips an empty sql_mode.
INIT_COMMAND = (
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES'), time_zone = '+00:00'"
)


class MySQLDatabase(Database):
    """MySQL or MariaDB through PyMySQL (imported on first connect: a process on SQLite never
    pays for it).

    One connection per thread, made on first use and kept across invocations (Lambda reuses the
    process). Before use it is checked locally (still open?) and, after `ping_after_idle`
    seconds unused, with a ping; a dead one is replaced. A read that finds its reused connection
    gone is run once more on a new one. TLS uses one SSL context per process (chalicelib.db.tls);
    credentials come from the URL or a CredentialSource (Secrets Manager), asked again once when
    a login is refused (rotation).
    """

    dialect = "mysql"
    mark = "%s"

    def __init__(
        self,
        url: DbUrl,
        connect_timeout: float = 3,
        read_timeout: float = 30,
        ssl_context: Any = None,
        credentials: CredentialSource | None = None,
        *,
        tls: TlsPolicy | None = None,
        local_infile: bool = False,
        autocommit: bool = False,
        ping_after_idle: float = 30.0,
        connect: Callable[..., Any] | None = None,
        cache_columns: bool = False,
        lock_wait_timeout: int | None = None,
    ) -> None:
        super().__init__(url)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tls = tls or (TlsPolicy("required") if ssl_context is not None else policy_for(url))
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.local_infile = local_infile
        self.autocommit = autocommit
        self.ping_after_idle = ping_after_idle
        self._connect_fn = connect
        self.cache_columns = cache_columns  # readers: column descriptions parsed once (db/columns.py)
        # innodb_lock_wait_timeout of the session: a lock wait must end (1205, retried) before
        # the read timeout would take the waiting statement for a lost connection.
        self.lock_wait_timeout = lock_wait_timeout
        self._plain_tcp = self.tls.mode == "disabled"  # preferred: set once the server offers no TLS

    # -- connecting ---------------------------------------------------------------------------
    def _connect(self) -> Any:
        creds = self.credentials.get() if self.credentials else None
        try:
            return self._open(creds)
        except Exception as exc:
            if mysql_error_code(exc) != ACCESS_DENIED or self.credentials is None:
                raise
            fresh = self.credentials.refresh()
            if fresh is None:
                raise
            return self._open(fresh)

    def _open(self, creds: Credentials | None) -> Any:
        kwargs = self._connect_kwargs(creds)
        if self._plain_tcp:
            return self._pymysql_connect(**kwargs, ssl_disabled=True)
        try:
            return self._pymysql_connect(**kwargs, ssl=self._context())
        except Exception as exc:
            if self.tls.mode != "preferred" or mysql_error_code(exc) != SSL_NOT_OFFERED:
                raise
            self._plain_tcp = True  # this server offers no TLS; don't ask again
            return self._pymysql_connect(**kwargs, ssl_disabled=True)

    def _context(self) -> Any:
        return self.ssl_context if self.ssl_context is not None else context_for(self.tls)

    def _pymysql_connect(self, **kwargs: Any) -> Any:
        if self._connect_fn is not None:
            return self._connect_fn(**kwargs)
        import pymysql

        factory = pymysql.connect
        if self.cache_columns:
            from chalicelib.db.columns import reader_connection_class

            factory = reader_connection_class() or factory
        # PyMySQL waits for the server's greeting (and the login) with the read timeout: a server
        # that takes the connection and never answers would hold a connect for read_timeout, not
        # connect_timeout. The handshake gets connect_timeout; statements get the read timeout.
        handshake = min(self.connect_timeout, self.read_timeout)
        conn: Any = factory(**{**kwargs, "read_timeout": handshake, "write_timeout": handshake})
        conn._read_timeout, conn._write_timeout = kwargs["read_timeout"], kwargs["write_timeout"]
        return local_files.protect(conn) if kwargs.get("local_infile") else conn

    def _connect_kwargs(self, creds: Credentials | None) -> dict[str, Any]:
        url = self.url
        host, port, database = url.host, url.port, url.database
        user, password = url.user, url.password
        if creds is not None:
            user, password = creds.user, creds.password
            if not host:
                host, port = creds.host, creds.port or 3306
            database = database or creds.database
        if not host:
            raise ValueError("the database URL names no host and the credentials give none")
        return {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "database": database or None,
            "charset": "utf8mb4",
            "autocommit": self.autocommit,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "write_timeout": self.read_timeout,
            # Only with the guard that sends the loader's own files and no other (local_files).
            "local_infile": self.local_infile and local_files.install(),
            "init_command": INIT_COMMAND
            + ("" if self.lock_wait_timeout is None else f", innodb_lock_wait_timeout = {int(self.lock_wait_timeout)}"),
        }

    def _healthy(self, conn: Any, idle: float) -> bool:
        if not conn.open:
            return False
        if idle < self.ping_after_idle:
            return True
        try:
            conn.ping(reconnect=False)
        except Exception:  # noqa: BLE001 - any failure means: make a new connection
            return False
        return True

    # -- using --------------------------------------------------------------------------------
    def _begin(self, cur: Any) -> None:
        if self.autocommit:
            cur.execute("START TRANSACTION")

    def _end_read(self, conn: Any) -> None:
        # End the read's snapshot so the next read sees fresh replicated rows (autocommit: none).
        if not self.autocommit:
            conn.commit()

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """`Database.query`. On a reader's kept connection (`cache_columns`: chalicelib.db.columns)
        used within `ping_after_idle`, the statement goes straight to the connection: no cursor, no
        second health check; a failure is handled as `Database.query`'s and the retry below."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and getattr(conn, "sluice_columns", None) is not None and conn.open:
            now = time.monotonic()
            if now - local.used < self.ping_after_idle:
                local.used = now
                try:
                    conn.query(statement(conn, text, params))
                    rows = conn._result.rows
                    self._end_read(conn)
                except Exception as exc:  # noqa: BLE001 - _query_failed re-raises what is not a lost connection
                    return self._query_failed(exc, text, params)
                return list(rows) if rows else []
        reused = conn is not None
        try:
            return super().query(text, params)
        except DatabaseUnavailable as exc:
            # A kept connection the server dropped since (restart, wait_timeout, failover): try once
            # more on a new one before calling the server unavailable.
            if not reused or mysql_error_code(exc.__cause__) not in CONNECTION_LOST:
                raise
            return super().query(text, params)

    def _query_failed(self, exc: Exception, text: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A failed read on a kept connection: as `Database.query` raises it (the connection
        discarded when the server is gone), except a lost connection, read once more on a new one."""
        try:
            self._raise_for(exc)
        except DatabaseUnavailable as unavailable:
            if mysql_error_code(unavailable.__cause__) not in CONNECTION_LOST:
                raise
        return Database.query(self, text, params)

    def send_query(self, text: str, params: Sequence[Any] = ()) -> Callable[[], list[tuple[Any, ...]]]:
        """The statement is written now and its result read when the returned function is called
        (PyMySQL's `Connection.query` in its two halves: `_execute_command`, `_read_query_result`).
        A failure either side is `query`'s: DatabaseUnavailable, after once more on a new
        connection when a kept one turned out dropped."""
        reused = getattr(self._local, "conn", None) is not None
        conn = self.connection()
        try:
            sent = statement(conn, self.sql(text), params)
            conn._execute_command(COM_QUERY, sent)
        except Exception as exc:  # noqa: BLE001 - _sent_failed re-raises what is not an outage
            return self._sent_failed(exc, reused, text, params)

        def rows() -> list[tuple[Any, ...]]:
            try:
                conn._read_query_result()
                result = conn._result.rows
                self._end_read(conn)
            except Exception as exc:  # noqa: BLE001 - _sent_failed re-raises what is not an outage
                return self._sent_failed(exc, reused, text, params)()
            return list(result or ())

        return rows

    def _sent_failed(
        self, exc: Exception, reused: bool, text: str, params: Sequence[Any]
    ) -> Callable[[], list[tuple[Any, ...]]]:
        self.discard()  # sent, or read halfway: the connection's state is unknown
        if reused and self._is_unavailable(exc) and mysql_error_code(exc) in CONNECTION_LOST:
            rows = Database.query(self, text, params)  # as `query` does: once more on a new one
            return lambda: rows
        self._raise_for(exc)

    def _is_unavailable(self, exc: BaseException) -> bool:
        import pymysql

        if isinstance(exc, pymysql.err.OperationalError) and mysql_error_code(exc) in CHARSET_ERRORS:
            return False  # the server answered: a bug in the statement, not an outage
        if isinstance(exc, (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError)):
            return True
        return connection_dropped_inside_pymysql(exc)

    def is_duplicate_key(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.IntegrityError) and mysql_error_code(exc) == 1062

    def is_retryable(self, exc: BaseException | None) -> bool:
        return mysql_error_code(exc) in RETRYABLE


def statement(conn: Any, text: str, params: Sequence[Any]) -> str:
    """`text` with `params` bound, as PyMySQL's `Cursor.execute` binds them; owners, ids and
    integers written out directly, anything else by PyMySQL."""
    try:
        return text % tuple([f"'{p}'" if type(p) is str and _PLAIN(p) else _int_literal(p) for p in params])
    except (TypeError, ValueError):
        return mogrified(conn, text, params)


def _int_literal(value: Any) -> str:
    if type(value) is int:
        return str(value)
    raise TypeError("not a plain parameter")


def mogrified(conn: Any, text: str, params: Sequence[Any]) -> str:
    """`text` with `params` bound by PyMySQL (`Cursor.mogrify`)."""
    return str(conn.cursor().mogrify(text, params))
