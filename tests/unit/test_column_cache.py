"""Without the PyMySQL internals chalicelib/db/columns.py relies on, readers connect with
pymysql.connect as before (tests/integration/test_column_cache.py holds the results equal)."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql.converters import convert_datetime

from chalicelib.db import columns
from chalicelib.db.database import READER_OPTIONS, open_database


class Made(Exception):
    pass


def test_readers_ask_for_it_and_fall_back_to_pymysql_connect_without_the_internals(monkeypatch):
    assert READER_OPTIONS["cache_columns"] is True
    assert columns.reader_connection_class() is not None  # this PyMySQL has them
    monkeypatch.setattr(columns, "_made", [])
    monkeypatch.delattr(pymysql.connections.MySQLResult, "_get_descriptions")
    assert columns.reader_connection_class() is None
    calls: list[dict[str, Any]] = []

    def connect(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise Made()

    monkeypatch.setattr(pymysql, "connect", connect)
    reader = open_database("mysql://u@db.internal/db?ssl=disabled", **READER_OPTIONS)
    with pytest.raises(Made):
        reader.query("SELECT 1")
    assert len(calls) == 1 and calls[0]["host"] == "db.internal" and "cache_columns" not in calls[0]


# -- datetime_from_text is convert_datetime ----------------------------------------------------------------
SHAPED = [
    "2026-01-02 03:04:05.123456",
    "2026-01-02 03:04:05.000000",
    "0001-01-01 00:00:00.000000",
    "9999-12-31 23:59:59.999999",
    "0000-00-00 00:00:00.000000",  # MySQL's zero date: PyMySQL gives the text back
    "2026-02-30 03:04:05.000001",  # impossible dates and times
    "2026-13-02 03:04:05.000001",
    "2026-01-02 24:04:05.000001",
    "2026-01-02 03:60:05.000001",
    "2026-01-02 03:04:60.000001",
    "2026-W01-1 03:04:05.123456",  # shapes fromisoformat takes and MySQL never sends
    "2026-01-02 03:04:05.12345Z",
    "2026-01-02 03:04:05.123+01",
    "2026-01-02T03:04:05.123456",
    "2026-01-02 03:04:05,123456",
    "２０２６-01-02 03:04:05.123456",
    "2026-01-02 03:04:05.1234567",
    "2026-01-02 03:04:05",
    "2026-01-02 03:04:05.123",
    "2026-01-02",
    "",
]


@pytest.mark.parametrize("text", SHAPED)
def test_datetime_from_text_answers_as_pymysql(text):
    assert _outcome(columns.datetime_from_text, text) == _outcome(convert_datetime, text)
    encoded = text.encode()
    assert _outcome(columns.datetime_from_text, encoded) == _outcome(convert_datetime, encoded)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from("0123456789 -:.T+Z,W٣"), min_size=26, max_size=26), st.datetimes())
def test_datetime_from_text_answers_as_pymysql_for_any_text_of_its_length(chars, moment):
    for text in ("".join(chars), moment.strftime("%Y-%m-%d %H:%M:%S.%f")):
        assert _outcome(columns.datetime_from_text, text) == _outcome(convert_datetime, text)


def _outcome(read: Any, text: Any) -> tuple[Any, ...]:
    """What `read` answers (value, type, tzinfo) or raises (exception type and message)."""
    try:
        value = read(text)
    except Exception as exc:  # noqa: BLE001 - PyMySQL's own converter raises on some texts
        return ("raises", type(exc), str(exc))
    return ("answers", value, type(value), getattr(value, "tzinfo", None))


def test_reader_connections_read_datetimes_with_it():
    from pymysql.constants import FIELD_TYPE

    cls = columns.reader_connection_class()
    assert cls is not None
    for kind in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
        assert cls.sluice_conversions[kind] is columns.datetime_from_text
    assert {
        k: v for k, v in cls.sluice_conversions.items() if k not in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP)
    } == {
        k: v for k, v in pymysql.converters.conversions.items() if k not in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP)
    }
