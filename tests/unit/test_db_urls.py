"""Database URLs, TLS policy, and how MySQLDatabase connects: what it hands to pymysql.connect,
once per thread, reused, checked, rebuilt; one SSL context per process. No server: a recording
connect function stands in for pymysql.connect."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pymysql
import pytest

from chalicelib.db import tls
from chalicelib.db.database import MASTER_OPTIONS, READER_OPTIONS, MySQLDatabase, open_database, open_master
from chalicelib.db.secrets import Credentials, StaticCredentials
from chalicelib.db.urls import parse_db_url
from chalicelib.errors import DatabaseUnavailable
from tests.conftest import make_ca


# -- URLs ---------------------------------------------------------------------------------------
def test_mysql_url_parts_are_decoded_and_the_password_never_shown():
    url = parse_db_url("mysql://app%40x:p%2Fss%3Aw@db.example.com:3310/sluice?ssl=required&ssl_ca=/ca.pem")
    assert (url.dialect, url.host, url.port, url.user, url.password, url.database) == (
        "mysql",
        "db.example.com",
        3310,
        "app@x",
        "p/ss:w",
        "sluice",
    )
    assert url.options == {"ssl": "required", "ssl_ca": "/ca.pem"}
    assert "p/ss" not in url.redacted() and "***" in url.redacted()


@pytest.mark.parametrize("scheme", ["mysql", "mariadb", "mysql+pymysql"])
def test_schemes_and_default_port(scheme):
    url = parse_db_url(f"{scheme}://root@h/db")
    assert (url.port, url.user, url.password) == (3306, "root", "")


def test_sqlite_url():
    assert parse_db_url("sqlite:////tmp/x.db").path == "/tmp/x.db"
    with pytest.raises(ValueError):
        parse_db_url("sqlite:///")


@pytest.mark.parametrize("bad", ["postgres://h/db", "mysql:///db", "mysql://h:notaport/db", "h/db"])
def test_unusable_urls_are_value_errors(bad):
    with pytest.raises(ValueError):
        parse_db_url(bad)


def test_a_url_without_host_is_allowed_only_when_credentials_name_it():
    assert parse_db_url("mysql:///sluice", need_host=False).host == ""
    with pytest.raises(ValueError, match="host"):
        open_database("mysql:///sluice")
    assert isinstance(
        open_database("mysql:///sluice", credentials=StaticCredentials(Credentials("u", "p"))), MySQLDatabase
    )


# -- TLS policy ------------------------------------------------------------------------------------
def policy(url: str, ca_bundle: str = "") -> tls.TlsPolicy:
    return tls.policy_for(parse_db_url(url), ca_bundle)


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    """A self-signed CA certificate in PEM, enough for ssl.create_default_context(cafile=...)."""
    path, _, _ = make_ca(tmp_path, "sluice-test-ca")
    return str(path)


def test_tls_defaults_follow_the_host(caplog):
    assert policy("mysql://root@127.0.0.1/db").mode == "disabled"
    assert policy("mysql://root@localhost/db").mode == "disabled"
    assert policy("mysql://root@db.internal/db").mode == "preferred"
    with caplog.at_level("WARNING"):
        assert policy("mysql://u@x.abc.eu-west-1.rds.amazonaws.com/db").mode == "required"
    assert "no CA bundle" in caplog.text


def test_a_ca_bundle_means_verify_the_identity(ca_file):
    assert policy(f"mysql://u@db.internal/db?ssl_ca={ca_file}") == tls.TlsPolicy("verify_identity", ca_file)
    assert policy("mysql://u@x.rds.amazonaws.com/db", ca_bundle=ca_file) == tls.TlsPolicy("verify_identity", ca_file)
    assert policy(f"mysql://u@h/db?ssl=verify_ca&ssl_ca={ca_file}").mode == "verify_ca"
    assert policy(f"mysql://u@h/db?ssl=required&ssl_ca={ca_file}") == tls.TlsPolicy("required", "")


@pytest.mark.parametrize(
    ("option", "mode"),
    [
        ("disabled", "disabled"),
        ("false", "disabled"),
        ("0", "disabled"),
        ("true", "required"),
        ("REQUIRED", "required"),
    ],
)
def test_tls_mode_spellings(option, mode):
    assert policy(f"mysql://u@h/db?ssl={option}").mode == mode
    assert policy(f"mysql://u@h/db?ssl_mode={option}").mode == mode


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db?ssl=maybe", "mysql://u@h/db?ssl=verify_identity", "mysql://u@h/db?ssl_ca=/no/such/ca.pem"]
)
def test_unusable_tls_settings_are_value_errors(url):
    with pytest.raises(ValueError):
        policy(url)


def test_contexts_verify_only_when_asked(ca_file):
    tls.clear()
    plain = tls.context_for(tls.TlsPolicy("required"))
    assert plain is not None and plain.verify_mode == ssl.CERT_NONE and not plain.check_hostname
    strict = tls.context_for(tls.TlsPolicy("verify_identity", ca_file))
    assert strict is not None and strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    ca_only = tls.context_for(tls.TlsPolicy("verify_ca", ca_file))
    assert ca_only is not None and ca_only.verify_mode == ssl.CERT_REQUIRED and not ca_only.check_hostname
    assert tls.context_for(tls.TlsPolicy("disabled")) is None


# -- what reaches pymysql.connect ------------------------------------------------------------------------
class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> int:
        self.conn.statements.append(sql)
        if self.conn.fail_next:
            error, self.conn.fail_next = self.conn.fail_next, None
            self.conn.open = False
            raise error
        return 1

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [(1,)]


class FakeConnection:
    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.open = True
        self.pings = 0
        self.ping_fails = False
        self.statements: list[str] = []
        self.fail_next: Exception | None = None

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def ping(self, reconnect: bool = False) -> None:
        self.pings += 1
        if self.ping_fails:
            raise pymysql.err.OperationalError(2006, "MySQL server has gone away")

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        self.open = False


class Recorder:
    """Stands in for pymysql.connect: records every call's arguments, can refuse some."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.connections: list[FakeConnection] = []
        self.refuse: list[Exception] = []

    def __call__(self, **kwargs: Any) -> FakeConnection:
        self.calls.append(kwargs)
        if self.refuse:
            raise self.refuse.pop(0)
        conn = FakeConnection(kwargs)
        self.connections.append(conn)
        return conn


def mysql(url: str, recorder: Recorder, **kwargs: Any) -> MySQLDatabase:
    db = open_database(url, connect=recorder, **kwargs)
    assert isinstance(db, MySQLDatabase)
    return db


def test_one_ssl_context_for_every_connect_of_the_process():
    tls.clear()
    built_before = tls.builds
    recorder = Recorder()
    master = mysql("mysql://u:p@db.internal/sluice?ssl=required", recorder)
    replica = mysql("mysql://u:p@replica.internal/sluice?ssl=required", recorder)
    master.query("SELECT 1")
    master.discard()  # a new connection next time
    master.query("SELECT 1")
    replica.query("SELECT 1")
    contexts = [call["ssl"] for call in recorder.calls]
    assert len(contexts) == 3 and isinstance(contexts[0], ssl.SSLContext)
    assert contexts[0] is contexts[1] is contexts[2]
    assert tls.builds == built_before + 1
    assert all("ssl_disabled" not in call for call in recorder.calls)


def test_tls_disabled_passes_no_context_and_turns_pymysqls_default_off():
    recorder = Recorder()
    mysql("mysql://root@127.0.0.1/db", recorder).query("SELECT 1")
    assert recorder.calls[0]["ssl_disabled"] is True and "ssl" not in recorder.calls[0]


def test_preferred_tls_falls_back_to_plain_once_and_remembers():
    recorder = Recorder()
    recorder.refuse = [pymysql.err.OperationalError(2026, "SSL is required but the server doesn't support it")]
    db = mysql("mysql://u@db.internal/db", recorder)
    db.query("SELECT 1")
    db.discard()
    db.query("SELECT 1")
    assert [("ssl" in c, c.get("ssl_disabled")) for c in recorder.calls] == [(True, None), (False, True), (False, True)]


def test_required_tls_does_not_fall_back():
    recorder = Recorder()
    recorder.refuse = [pymysql.err.OperationalError(2026, "SSL is required but the server doesn't support it")]
    with pytest.raises(DatabaseUnavailable):
        mysql("mysql://u@db.internal/db?ssl=required", recorder).query("SELECT 1")
    assert len(recorder.calls) == 1


def test_master_and_reader_options():
    recorder = Recorder()
    master = open_master("mysql://u:p@db.internal/db?ssl=disabled", connect=recorder)
    master.query("SELECT 1")
    reader = open_database("mysql://u:p@db.internal/db?ssl=disabled", connect=recorder, **READER_OPTIONS)
    reader.query("SELECT 1")
    m, r = recorder.calls
    assert (m["local_infile"], m["autocommit"], m["connect_timeout"], m["read_timeout"]) == (
        True,
        False,
        MASTER_OPTIONS["connect_timeout"],
        MASTER_OPTIONS["read_timeout"],
    )
    assert (r["local_infile"], r["autocommit"], r["connect_timeout"], r["read_timeout"]) == (False, True, 2, 5)
    assert r["read_timeout"] <= 5 and r["connect_timeout"] <= 3 and m["write_timeout"] == m["read_timeout"]
    assert "STRICT_ALL_TABLES" in m["init_command"] and "+00:00" in m["init_command"]
    # the loader's lock waits end (1205, retried) before its read timeout would call them an outage
    wait = MASTER_OPTIONS["lock_wait_timeout"]
    assert f"innodb_lock_wait_timeout = {wait}" in m["init_command"] and wait < m["read_timeout"]
    assert "innodb_lock_wait_timeout" not in r["init_command"]
    assert (m["host"], m["port"], m["user"], m["password"], m["database"], m["charset"]) == (
        "db.internal",
        3306,
        "u",
        "p",
        "db",
        "utf8mb4",
    )


def test_an_autocommit_reader_sends_no_commit_and_a_transaction_begins_explicitly():
    recorder = Recorder()
    db = open_database("mysql://u@db.internal/db?ssl=disabled", connect=recorder, **READER_OPTIONS)
    db.query("SELECT 1")
    with db.transaction() as cur:
        cur.execute("UPDATE x")
    assert recorder.connections[0].statements == ["SELECT 1", "START TRANSACTION", "UPDATE x"]


# -- reuse, checks, rebuild ------------------------------------------------------------------------------
def test_the_connection_is_made_once_and_reused_until_it_dies():
    recorder = Recorder()
    db = mysql("mysql://u@h/db?ssl=disabled", recorder)
    for _ in range(3):
        db.query("SELECT 1")
    assert len(recorder.calls) == 1 and recorder.connections[0].pings == 0  # used recently: no ping
    recorder.connections[0].open = False  # closed under us
    db.query("SELECT 1")
    assert len(recorder.calls) == 2


def test_an_idle_connection_is_pinged_and_replaced_when_the_ping_fails():
    recorder = Recorder()
    db = mysql("mysql://u@h/db?ssl=disabled", recorder, ping_after_idle=0.0)
    db.query("SELECT 1")
    db.query("SELECT 1")
    assert recorder.connections[0].pings == 1 and len(recorder.calls) == 1
    recorder.connections[0].ping_fails = True
    db.query("SELECT 1")
    assert len(recorder.calls) == 2


def test_a_read_on_a_connection_the_server_dropped_runs_once_more_on_a_new_one():
    recorder = Recorder()
    db = mysql("mysql://u@h/db?ssl=disabled", recorder)
    db.query("SELECT 1")
    recorder.connections[0].fail_next = pymysql.err.OperationalError(2013, "Lost connection to server during query")
    assert db.query("SELECT 1") == [(1,)]
    assert len(recorder.calls) == 2


def test_a_fresh_connection_that_fails_is_not_retried_and_means_unavailable():
    recorder = Recorder()
    recorder.refuse = [pymysql.err.OperationalError(2003, "Can't connect to MySQL server")]
    db = mysql("mysql://u:secretpw@h/db?ssl=disabled", recorder)
    with pytest.raises(DatabaseUnavailable) as caught:
        db.query("SELECT 1")
    assert "mysql://u:***@h:3306/db" in str(caught.value) and "secretpw" not in str(caught.value)
    assert len(recorder.calls) == 1


def test_each_thread_has_its_own_connection():
    import threading

    recorder = Recorder()
    db = mysql("mysql://u@h/db?ssl=disabled", recorder)
    db.query("SELECT 1")
    worker = threading.Thread(target=lambda: db.query("SELECT 1"))
    worker.start()
    worker.join()
    db.query("SELECT 1")
    assert len(recorder.calls) == 2


def test_deadlocks_and_lock_waits_are_retryable_and_nothing_else_is():
    db = mysql("mysql://u@h/db", Recorder())
    assert db.is_retryable(pymysql.err.OperationalError(1213, "Deadlock found"))
    assert db.is_retryable(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"))
    # MariaDB 11.6+ (innodb_snapshot_isolation=ON): the transaction was rolled back, like a deadlock's
    assert db.is_retryable(pymysql.err.OperationalError(1020, "Record has changed since last read in table 't'"))
    assert not db.is_retryable(pymysql.err.OperationalError(2013, "Lost connection"))
    assert not db.is_retryable(pymysql.err.OperationalError(1305, "SAVEPOINT sluice_fast does not exist"))
    assert not db.is_retryable(None)


def test_sqlite_busy_after_its_timeout_is_retryable_and_other_failures_are_not(tmp_path: Path) -> None:
    import sqlite3

    db = open_database(f"sqlite:///{tmp_path}/busy.sqlite3")
    db.query("SELECT 1")  # creates the file and the schema
    holder = sqlite3.connect(tmp_path / "busy.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(tmp_path / "busy.sqlite3", isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as busy:
            waiter.execute("BEGIN IMMEDIATE")
        assert db.is_retryable(busy.value)
        with pytest.raises(sqlite3.OperationalError) as missing:
            waiter.execute("SELECT * FROM no_such_table")
        assert not db.is_retryable(missing.value)
        assert not db.is_retryable(None)
    finally:
        holder.rollback()
        holder.close()
        waiter.close()


# -- which driver errors mean the connection is lost ------------------------------------------------------
def raised_inside_pymysql() -> AttributeError:
    """What PyMySQL raises when it writes to a connection whose socket it has already dropped."""
    conn = pymysql.connections.Connection(defer_connect=True)  # no socket, as after a drop
    conn._current_timeout = conn._write_timeout  # as a connection that was open has it
    try:
        conn._write_bytes(b"\0")
    except AttributeError as exc:
        return exc
    raise AssertionError("PyMySQL wrote to no socket")


LOST = {
    "interface error": lambda: pymysql.err.InterfaceError(0, ""),
    "2006 gone away": lambda: pymysql.err.OperationalError(2006, "MySQL server has gone away"),
    "2013 lost": lambda: pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
    "2055 lost": lambda: pymysql.err.OperationalError(2055, "Lost connection to server at 'reading', system error"),
    "broken pipe": BrokenPipeError,
    "reset": ConnectionResetError,
    "socket set to None": raised_inside_pymysql,
    "out of sequence": lambda: pymysql.err.InternalError("Packet sequence number wrong - got 3 expected 1"),
}
NOT_LOST = {
    "our own bug": lambda: AttributeError("'NoneType' object has no attribute 'title'"),
    "duplicate key": lambda: pymysql.err.IntegrityError(1062, "Duplicate entry"),
    "syntax": lambda: pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"),
    "other internal error": lambda: pymysql.err.InternalError(1, "something else"),
}


@pytest.mark.parametrize("name", [*LOST, *NOT_LOST])
def test_driver_errors_that_mean_a_lost_connection_are_database_unavailable(name: str) -> None:
    recorder = Recorder()
    db = mysql("mysql://u@h/db?ssl=disabled", recorder)
    error = (LOST.get(name) or NOT_LOST[name])()
    db.query("SELECT 1")
    recorder.connections[0].fail_next = error
    with pytest.raises(Exception) as caught:
        with db.transaction() as cur:
            cur.execute("UPDATE t SET x = 1")
    if name in LOST:
        assert isinstance(caught.value, DatabaseUnavailable) and caught.value.__cause__ is error
        db.query("SELECT 1")
        assert len(recorder.calls) == 2  # the lost connection was let go
    else:
        assert caught.value is error
