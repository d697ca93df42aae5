"""The loader's memory on MariaDB (the fast path, its worker thread included) does not grow with
blank lines, rejects or repeated keys (see tests/loader_memory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.db.database import open_master
from tests.loader_memory import assert_loads_within

pytestmark = pytest.mark.mariadb


def test_blank_lines_rejects_and_repeated_keys_load_under_an_address_space_limit(
    mysql_url: str, tmp_path: Path
) -> None:
    db = open_master(mysql_url)
    db.migrate()
    db.discard()
    assert_loads_within(mysql_url, tmp_path)
