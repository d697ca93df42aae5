"""Reader connections reuse parsed column descriptions (chalicelib/db/columns.py): every result is
exactly what a plain PyMySQL connection gives for the same statement, the first time, from the
cache, after the schema changed under the same statement, and with the cache cleared; their
DATETIME and TIMESTAMP values (read by datetime_from_text) too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from pymysql.converters import convert_datetime

from chalicelib.db import columns
from chalicelib.db.database import open_master, open_reader
from chalicelib.db.urls import parse_db_url
from chalicelib.readers.sql import statements

pytestmark = pytest.mark.mariadb

TABLE = """CREATE TABLE kinds (
    id INT NOT NULL PRIMARY KEY, small TINYINT NULL, big BIGINT UNSIGNED NULL, money DECIMAL(12, 3) NULL,
    ratio DOUBLE NULL, part FLOAT NULL, flag BIT(3) NULL, day DATE NULL, moment DATETIME(6) NULL,
    stamp TIMESTAMP(3) NULL, span TIME(2) NULL, yr YEAR NULL, word VARCHAR(50) NULL,
    code CHAR(4) CHARACTER SET ascii NULL, raw VARBINARY(16) NULL, blobby BLOB NULL, body TEXT NULL,
    doc JSON NULL, choice ENUM('a', 'b') NULL, several SET('x', 'y') NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"""
ROWS = [
    "(1, -5, 18446744073709551615, 123456789.125, 1.5e300, 0.25, b'101', '2026-01-02', "
    "'2026-01-02 03:04:05.000000', '2026-01-02 03:04:05.123', '-838:59:59.99', 2026, 'héllo \U0001f600 \"q\"', "
    "'abcd', x'00ff10', x'deadbeef', 'line\\nbreak', '{\"a\": [1, 2.5, null]}', 'b', 'x,y')",
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL)",
    "(3, 0, 0, -0.001, -0.0, -1, b'0', '1000-01-01', '2026-01-02 03:04:05.999999', NULL, '00:00:00', 1901, '', "
    "'', x'', x'', '', '[]', 'a', '')",
]
STATEMENTS = [
    "SELECT * FROM kinds ORDER BY id",
    "SELECT id, word, moment FROM kinds WHERE id = %s",
    "SELECT COUNT(*), MAX(moment), SUM(money), GROUP_CONCAT(word) FROM kinds",
    "SELECT 1, 'x', NULL, CAST(1 AS DECIMAL(3, 1)), NOW(6) > '2000-01-01', JSON_OBJECT('k', word) FROM kinds",
    "SELECT word AS same_name, word AS same_name FROM kinds",
    # values of 251 bytes and more (two- and three-byte lengths): those rows are parsed by PyMySQL
    "SELECT id, REPEAT(word, 40), word, REPEAT('z', 70000), body, NULL FROM kinds ORDER BY id",
    "SELECT id, REPEAT('y', 250), REPEAT('y', 251) FROM kinds ORDER BY id",
    # a result of many reads from the socket: packets cut at the read buffer's end
    "SELECT seq, REPEAT('x', seq % 300), NULL, seq * 2 FROM seq_1_to_3000",
]


def _connect(url: str, cls: Any, **extra: Any) -> Any:
    parsed = parse_db_url(url)
    return cls(
        host=parsed.host,
        port=parsed.port,
        user=parsed.user,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        autocommit=True,
        **extra,
    )


@pytest.fixture
def url(mysql_url: str) -> Iterator[str]:
    conn = _connect(mysql_url, pymysql.connections.Connection)
    with conn.cursor() as cur:
        cur.execute(TABLE)
        cur.execute("INSERT INTO kinds VALUES " + ", ".join(ROWS))
    conn.close()
    yield mysql_url


def _result(conn: Any, statement: str, args: Any = None) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(statement, args)
        rows = cur.fetchall()
        result = conn._result
        fields = [
            (f.catalog, f.db, f.table_name, f.org_table, f.name, f.org_name, f.charsetnr, f.length, f.type_code)
            + (f.flags, f.scale)
            for f in result.fields
        ]
        # the same decoders, but reader connections read DATETIME and TIMESTAMP with datetime_from_text
        decoders = [(e, convert_datetime if c is columns.datetime_from_text else c) for e, c in result.converters]
        return rows, cur.description, decoders, fields


def _reader_class() -> Any:
    cls = columns.reader_connection_class()
    assert cls is not None, "this PyMySQL lacks what ReaderConnection relies on"
    return cls


# use_unicode=False: PyMySQL itself cannot read DECIMAL or JSON columns that way, so fewer kinds
BYTES_STATEMENTS = ["SELECT id, small, big, day, moment, span, word, code, raw, blobby, body FROM kinds ORDER BY id"]


@pytest.mark.parametrize(("use_unicode", "statements"), [(True, STATEMENTS), (False, BYTES_STATEMENTS)])
def test_results_are_plain_pymysql_ones_first_time_and_from_the_cache(url, use_unicode, statements):
    plain = _connect(url, pymysql.connections.Connection, use_unicode=use_unicode)
    cached = _connect(url, _reader_class(), use_unicode=use_unicode)
    try:
        for _ in range(3):  # the first round parses, the later ones reuse
            for statement in statements:
                args = (1,) if "%s" in statement else None
                assert _result(cached, statement, args) == _result(plain, statement, args)
        assert cached.sluice_columns  # it did keep them
        assert cached.sluice_blocks  # and the statements' column blocks
    finally:
        plain.close()
        cached.close()


def test_a_changed_schema_under_the_same_statement_is_parsed_again(url):
    cached = _connect(url, _reader_class())
    plain = _connect(url, pymysql.connections.Connection)
    try:
        statement = "SELECT word, day FROM kinds WHERE id = 1"
        before = _result(cached, statement)
        assert before == _result(plain, statement)
        with plain.cursor() as cur:
            cur.execute("ALTER TABLE kinds MODIFY day VARCHAR(20) NULL, MODIFY word VARBINARY(60) NULL")
        after = _result(cached, statement)
        assert after == _result(plain, statement)
        assert after[0] == ((b'h\xc3\xa9llo \xf0\x9f\x98\x80 "q"', "2026-01-02"),) and after[0] != before[0]
    finally:
        plain.close()
        cached.close()


def test_a_full_cache_starts_again(url, monkeypatch):
    monkeypatch.setattr(columns, "MAX_COLUMNS", 3)
    cached = _connect(url, _reader_class())
    plain = _connect(url, pymysql.connections.Connection)
    try:
        for statement in STATEMENTS * 2:
            args = (1,) if "%s" in statement else None
            assert _result(cached, statement, args) == _result(plain, statement, args)
            assert len(cached.sluice_columns) <= 3 or statement == STATEMENTS[0]
    finally:
        plain.close()
        cached.close()


def test_unbuffered_results_errors_and_statements_without_rows_behave_as_before(url):
    cached = _connect(url, _reader_class())
    try:
        with cached.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute("SELECT id, word FROM kinds ORDER BY id")
            assert [row[0] for row in cur.fetchall_unbuffered()] == [1, 2, 3]
        with cached.cursor() as cur:
            assert cur.execute("UPDATE kinds SET small = 1 WHERE id = 3") == 1
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("SELECT nope FROM kinds")
            cur.execute("SELECT id FROM kinds WHERE id = 3")
            assert cur.fetchall() == ((3,),)
    finally:
        cached.close()


def test_readers_use_it_and_the_master_does_not(url):
    master = open_master(url)
    master.migrate()
    reader = open_reader(url)
    try:
        owner, todo = "o", "00000000-0000-4000-8000-000000000001"
        for text in (statements("todos").get, statements("todos").seen):
            assert reader.query(text, (owner, todo)) == master.query(text, (owner, todo)) == []
        assert reader.query(statements("todos").list + " LIMIT 5", (owner, "")) == []
        assert reader.query("SELECT moment, word FROM kinds WHERE id = 1") == master.query(
            "SELECT moment, word FROM kinds WHERE id = 1"
        )
        assert isinstance(reader.connection(), _reader_class())
        assert type(master.connection()) is pymysql.connections.Connection
    finally:
        reader.discard()
        master.discard()
