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
from typing import Any, NoReturn

from chalicelib.db import local_files
from chalicelib.db.schema import migrate
from chalicelib.db.secrets import Credentials, CredentialSource
from chalicelib.db.tls import TlsPolicy, context_for, policy_for
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


# Client errors that mean the connection itself is gone (server restarted, idle timeout, network).
CONNECTION_LOST = frozenset({2006, 2013, 2055})
COM_QUERY = 3  # pymysql.constants.COMMAND.COM_QUERY, without importing PyMySQL here
ACCESS_DENIED = 1045
SSL_NOT_OFFERED = 2026  # CR_SSL_CONNECTION_ERROR: "SSL is required but the server doesn't support it"
# Lock wait timeout, deadlock, and (MariaDB with innodb_snapshot_isolation, the default from 11.6)
# "record has changed since last read": the transaction can simply run again.
RETRYABLE = frozenset({1205, 1213, 1020})
# The server refused the statement for its character sets or collations (PyMySQL raises these as
# OperationalError, like an outage): "Illegal mix of collations" for two, three or more operands
# (1267, 1270, 1271), a collation not of its character set (1253), an unknown collation or
# character set (1273, 1115), an invalid character string (1300), a conversion between
# collations that cannot be done (MySQL 8: 3988), a collation an indexed column cannot use
# (MariaDB: 4063). A bug in the statement or its parameters, never an outage: raised as it is
# (a 500), and no breaker opens.
CHARSET_ERRORS = frozenset({1115, 1253, 1267, 1270, 1271, 1273, 1300, 3988, 4063})


def mysql_error_code(exc: BaseException | None) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


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
        reused = getattr(self._local, "conn", None) is not None
        try:
            return super().query(text, params)
        except DatabaseUnavailable as exc:
            # A kept connection the server dropped since (restart, wait_timeout, failover): try once
            # more on a new one before calling the server unavailable.
            if not reused or mysql_error_code(exc.__cause__) not in CONNECTION_LOST:
                raise
            return super().query(text, params)

    def send_query(self, text: str, params: Sequence[Any] = ()) -> Callable[[], list[tuple[Any, ...]]]:
        """The statement is written now and its result read when the returned function is called
        (PyMySQL's `Connection.query` in its two halves: `_execute_command`, `_read_query_result`).
        A failure either side is `query`'s: DatabaseUnavailable, after once more on a new
        connection when a kept one turned out dropped."""
        reused = getattr(self._local, "conn", None) is not None
        conn = self.connection()
        try:
            statement = conn.cursor().mogrify(self.sql(text), params)
            conn._execute_command(COM_QUERY, statement)
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
        return _connection_dropped_inside_pymysql(exc)

    def is_duplicate_key(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.IntegrityError) and mysql_error_code(exc) == 1062

    def is_retryable(self, exc: BaseException | None) -> bool:
        return mysql_error_code(exc) in RETRYABLE


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the connection itself is gone: 2006, 2013, 2055, or what PyMySQL raises
    once it has dropped the socket."""
    return mysql_error_code(exc) in CONNECTION_LOST or _connection_dropped_inside_pymysql(exc)


def _connection_dropped_inside_pymysql(exc: BaseException) -> bool:
    """Errors PyMySQL raises, once it has dropped a connection's socket, that do not say so: an
    AttributeError on the socket it set to None ('NoneType' object has no attribute 'sendall'),
    from the `finally` that ends a LOAD DATA LOCAL whose file could not be sent, and an
    InternalError for a reply out of sequence (it drops the socket first). Raised by PyMySQL's
    own code, not by a bug of ours: the connection is lost, as with 2006 or 2013."""
    import pymysql

    if isinstance(exc, pymysql.err.InternalError):
        return "Packet sequence number wrong" in str(exc)
    if not isinstance(exc, AttributeError) or "'NoneType' object has no attribute" not in str(exc):
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and str(frame.tb_frame.f_globals.get("__name__", "")).startswith("pymysql.")


# Strict for every table, and UTC for the session. CONCAT_WS skips an empty sql_mode.
INIT_COMMAND = (
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES'), time_zone = '+00:00'"
)


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
