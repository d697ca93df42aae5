"""Poison lines never block an object, on MariaDB (see tests/poison_properties.py): through the
small-object upsert and through the fast path (LOAD DATA in tiny chunks, a worker thread)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from chalicelib.db.database import Database
from chalicelib.loader import BatchLoader
from chalicelib.loader.mysql_fast import MySQLFastApplier
from tests.loader_properties import truncate
from tests.poison_properties import PoisonedObject, assert_poison_never_blocks, poisoned_objects

pytestmark = pytest.mark.mariadb


@pytest.fixture
def db(mysql_db: Database) -> Database:
    return mysql_db


@pytest.mark.parametrize("fast", [False, True], ids=["upsert", "fast"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=poisoned_objects())
def test_arbitrary_lines_never_block_the_valid_commands_of_their_object(
    db: Database, fast: bool, case: PoisonedObject
) -> None:
    truncate(db)
    applier = MySQLFastApplier(db, min_rows=1, chunk_lines=2) if fast else MySQLFastApplier(db)
    assert_poison_never_blocks(db, BatchLoader(db, applier), case)
