"""Versioned reads (`seen_todo`, `seen_profile`, `list_seen`) on both dialects: tombstones tell
their version, and a page names the stored state of given ids whatever their state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.db.database import open_master
from chalicelib.ids import version_to_ts
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.models import validate_profile, validate_todo
from chalicelib.readers import Seen, state_filter
from chalicelib.readers.sql import SqlReader

OWNER = "5c4b3a29-1807-4f6e-9d5c-4b3a29180706"
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]
# The op_id of each stored winner: a put of ids 0, 1, 3, 5, the deletes of 2 and 4, the profile.
OPS = {key: str(uuid.uuid4()) for key in (*IDS, OWNER)}


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mariadb)])
def reader(request: Any, tmp_path: Path) -> Iterator[SqlReader]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'seen.sqlite3'}"
    else:
        url = request.getfixturevalue("mysql_url")
    master = open_master(url)
    master.migrate()
    # ids 0..5: open, done, deleted (after a put), open, deleted (never put), done
    lines = []
    version = 1000
    for index, state in enumerate(["open", "done", "open", "open", None, "done"]):
        version += 1
        if state is not None:
            data = validate_todo({"title": f"t{index}", "state": state})
            lines.append(make_command("put", "todos", OWNER, IDS[index], version, OPS[IDS[index]], data))
    lines.append(make_command("delete", "todos", OWNER, IDS[2], 2000, OPS[IDS[2]], None))
    lines.append(make_command("delete", "todos", OWNER, IDS[4], 2001, OPS[IDS[4]], None))
    lines.append(
        make_command("put", "profiles", OWNER, OWNER, 3000, OPS[OWNER], validate_profile({"display_name": "A"}))
    )
    body = b"".join(c.to_line() for c in lines)
    BatchLoader(master).load("local", "writes/2026/01/01/00/seen", local_etag(body), body)
    yield SqlReader(master)
    master.discard()


def test_a_tombstone_tells_its_version_and_created_at_and_nothing_stored_is_zero(reader):
    # id 2 was put at 1003, then deleted: its tombstone keeps the put's created_at; id 4 never was
    assert reader.seen_todo(OWNER, IDS[2]) == Seen(IDS[2], None, 2000, OPS[IDS[2]], True, version_to_ts(1003))
    assert reader.seen_todo(OWNER, IDS[4]) == Seen(IDS[4], None, 2001, OPS[IDS[4]], True, version_to_ts(2001))
    live = reader.seen_todo(OWNER, IDS[0])
    assert live.row is not None and live.row["title"] == "t0" and live.version == live.row["version"] == 1001
    assert live.row == reader.get_todo(OWNER, IDS[0]) and live.op_id == OPS[IDS[0]]
    assert live.stored_created_at == live.row["created_at"] == version_to_ts(1001)
    assert reader.seen_todo(OWNER, "00000000-0000-4000-8000-999999999999") == Seen(
        "00000000-0000-4000-8000-999999999999", None, 0
    )
    profile = reader.seen_profile(OWNER)
    assert profile.version == 3000 and profile.row == reader.get_profile(OWNER) and profile.op_id == OPS[OWNER]
    assert reader.seen_profile("nobody") == Seen("nobody", None, 0)


def test_a_page_that_names_ids_carries_their_tombstones_created_at(reader):
    named = {s.id: s for s in reader.list_seen("todos", OWNER, None, 10, state_filter(None), [IDS[0], IDS[2]])}
    assert named[IDS[2]] == reader.seen_todo(OWNER, IDS[2])._replace(op_id="")  # with its created_at
    assert named[IDS[0]] == reader.seen_todo(OWNER, IDS[0])._replace(op_id="")


def test_list_seen_adds_the_named_ids_whatever_their_state(reader):
    def ids(rows: list[Seen]) -> list[tuple[str, int, bool]]:
        return [(s.id[-1], s.version, s.row is not None) for s in rows]

    assert ids(reader.list_seen("todos", OWNER, None, 10, state_filter(None), [])) == [
        ("0", 1001, True),
        ("1", 1002, True),
        ("3", 1004, True),
        ("5", 1006, True),
    ]
    assert ids(reader.list_seen("todos", OWNER, None, 10, state_filter("open"), [IDS[1], IDS[2], IDS[4]])) == [
        ("0", 1001, True),
        ("1", 1002, True),
        ("2", 2000, False),
        ("3", 1004, True),
        ("4", 2001, False),
    ]
    assert ids(reader.list_seen("todos", OWNER, IDS[1], 2, state_filter("done"), [IDS[2]])) == [
        ("2", 2000, False),
        ("5", 1006, True),
    ]
    assert [r["id"] for r in reader.list_todos(OWNER, None, 10, "done")] == [IDS[1], IDS[5]]
