"""A reader's read on its kept connection (MySQLDatabase.query without a cursor, chalicelib/db/mysql.py)
keeps `Database.query`'s rules: a kept connection the server dropped is read once more on a new
one, a statement the server refuses raises PyMySQL's error and keeps the connection, parameters
are bound as PyMySQL binds them, and a connection idle past `ping_after_idle` is checked first."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

from chalicelib.db.database import open_reader
from chalicelib.db.urls import parse_db_url

pytestmark = pytest.mark.mariadb


def _admin(url: str) -> Any:
    parsed = parse_db_url(url)
    return pymysql.connect(host=parsed.host, port=parsed.port, user="root", password="", autocommit=True)


def _kill(url: str, connection: Any) -> None:
    """The server drops `connection` (KILL CONNECTION from another session)."""
    admin = _admin(url)
    try:
        with admin.cursor() as cur:
            cur.execute(f"KILL CONNECTION {connection.thread_id()}")
    finally:
        admin.close()


def test_a_dropped_kept_connection_is_read_once_more_on_a_new_one(mysql_url: str) -> None:
    db = open_reader(mysql_url)
    assert db.query("SELECT 1") == [(1,)]
    first = db.connection()
    assert first.sluice_columns is not None  # the fast path's connection
    _kill(mysql_url, first)
    assert db.query("SELECT %s, %s", ("a", 2)) == [("a", 2)]
    assert db.connection() is not first
    db.discard()


def test_a_refused_statement_raises_and_keeps_the_connection(mysql_url: str) -> None:
    db = open_reader(mysql_url)
    db.query("SELECT 1")
    kept = db.connection()
    with pytest.raises(pymysql.err.ProgrammingError):
        db.query("SELECT nope FROM nowhere")
    assert db.query("SELECT 2") == [(2,)]
    assert db.connection() is kept
    db.discard()


@pytest.mark.parametrize(
    "value",
    [
        "plain-id_0123",
        "it's",
        'a "quote"',
        "back\\slash",
        "new\nline",
        "nul\x00",
        "ünïcode ✓",
        "%s",
        "",
        7,
        -1,
        None,
        1.5,
        True,
        b"\x00\xff",
    ],
)
def test_parameters_are_bound_as_pymysql_binds_them(mysql_url: str, value: Any) -> None:
    db = open_reader(mysql_url)
    db.query("SELECT 1")  # the kept connection: the fast path from here on
    plain = pymysql.connect(**{**_kwargs(mysql_url), "autocommit": True})
    try:
        with plain.cursor() as cur:
            cur.execute("SELECT %s, %s", (value, "x"))
            expected = list(cur.fetchall())
        assert db.query("SELECT %s, %s", (value, "x")) == expected
        with pytest.raises(pymysql.err.ProgrammingError):
            db.query("SELECT %s, %s", (value,))  # one parameter short: PyMySQL's error
    finally:
        plain.close()
        db.discard()


def test_a_connection_idle_past_the_ping_interval_is_checked_first(mysql_url: str) -> None:
    db = open_reader(mysql_url, ping_after_idle=0.0)
    db.query("SELECT 1")
    first = db.connection()
    _kill(mysql_url, first)
    assert db.query("SELECT 3") == [(3,)]  # the ping found it dead: a new one, no failed read
    assert db.connection() is not first
    db.discard()


def _kwargs(url: str) -> dict[str, Any]:
    parsed = parse_db_url(url)
    return {"host": parsed.host, "port": parsed.port, "user": "root", "password": "", "database": parsed.database}
