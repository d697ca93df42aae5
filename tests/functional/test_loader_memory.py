"""The loader's memory on SQLite does not grow with blank lines, rejects or repeated keys (see
tests/loader_memory.py; tests/integration/test_loader_memory_mysql.py does the same on MariaDB)."""

from __future__ import annotations

from pathlib import Path

from tests.loader_memory import assert_loads_within


def test_blank_lines_rejects_and_repeated_keys_load_under_an_address_space_limit(tmp_path: Path) -> None:
    assert_loads_within(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path)
