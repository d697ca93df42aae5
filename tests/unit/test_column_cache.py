"""Without the PyMySQL internals chalicelib/db/columns.py relies on, readers connect with
pymysql.connect as before (tests/integration/test_column_cache.py holds the results equal)."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

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
