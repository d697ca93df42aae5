"""Objects refused for their size, and poisoned objects (CONTRACT section 5), on the embedded
SQLite; tests/integration/test_loader_limits_mysql.py runs the same on MariaDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.db.database import open_database
from tests.loader_limits import (
    assert_a_database_outage_does_not_poison,
    assert_a_failing_object_is_poisoned_after_three_attempts,
    assert_an_object_over_the_limit_is_refused_whole,
    assert_killed_loads_count_and_the_cli_reports_poisoned_objects,
    assert_many_rejects_and_a_limit_in_the_middle,
    assert_the_runbook_query_lists_poisoned_objects,
)


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = open_database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    database.migrate()
    yield database
    database.discard()


@pytest.mark.parametrize("gzipped", [False, True])
def test_an_object_over_the_limit_is_refused_whole(db, gzipped: bool) -> None:  # type: ignore[no-untyped-def]
    assert_an_object_over_the_limit_is_refused_whole(db, None, gzipped)


def test_many_rejects_then_the_limit(db) -> None:  # type: ignore[no-untyped-def]
    assert_many_rejects_and_a_limit_in_the_middle(db, None)


def test_a_failing_object_is_poisoned_after_three_attempts(db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert_a_failing_object_is_poisoned_after_three_attempts(db, tmp_path)


def test_a_database_outage_does_not_poison(db) -> None:  # type: ignore[no-untyped-def]
    assert_a_database_outage_does_not_poison(db)


def test_the_runbook_query_lists_poisoned_objects(db) -> None:  # type: ignore[no-untyped-def]
    assert_the_runbook_query_lists_poisoned_objects(db)


def test_killed_loads_count_and_the_cli_reports_poisoned_objects(tmp_path: Path) -> None:
    assert_killed_loads_count_and_the_cli_reports_poisoned_objects(f"sqlite:///{tmp_path / 'cli.sqlite3'}", tmp_path)
