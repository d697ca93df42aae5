"""Poison lines never block an object, on the embedded SQLite (see tests/poison_properties.py);
tests/integration/test_loader_poison_mysql.py runs the same property on MariaDB."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from chalicelib.commands import make_command
from chalicelib.db.database import open_database
from chalicelib.loader import BatchLoader, local_etag
from tests.factories import make
from tests.poison_properties import POISON_LINES, PoisonedObject, assert_poison_never_blocks, poisoned_objects

_files = itertools.count()
A = "0190b2a0-0000-7000-8000-00000000000a"
OP = "0190b2a0-0000-7000-8000-0000000000ff"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(poisoned_objects())
def test_arbitrary_lines_never_block_the_valid_commands_of_their_object(tmp_path: Path, case: PoisonedObject) -> None:
    db = open_database(f"sqlite:///{tmp_path / f'poison-{next(_files)}.sqlite3'}")
    try:
        assert_poison_never_blocks(db, BatchLoader(db), case)
    finally:
        db.discard()


@pytest.mark.parametrize("poison", [p for p in POISON_LINES if p.strip(b" \t\r")])
def test_each_known_poison_line_is_a_reject_and_the_command_beside_it_applies(tmp_path: Path, poison: bytes) -> None:
    # GIVEN an object of one valid command and one line that once made every load of it fail
    db = open_database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    data = make("todos", title="kept", notes="", state="open", tags=[])
    body = make_command("put", "todos", "alice", A, 1_800_000_000_000_001, OP, data).to_line() + poison + b"\n"
    # WHEN it is loaded
    result = BatchLoader(db).load("bucket", "writes/2027/01/01/00/p", local_etag(body), body)
    # THEN the command applies and the poison line is kept as a storable reject
    assert result.applied == 1 and result.rejected >= 1
    assert db.query("SELECT title FROM todos")[0][0] == "kept"
    reasons = db.query("SELECT line_no, reason, line FROM ingest_rejects")
    assert {r[0] for r in reasons} == {2}
    for _, reason, line in reasons:
        reason.encode("utf-8") and line.encode("utf-8")
