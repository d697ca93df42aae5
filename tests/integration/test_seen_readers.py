"""Versioned reads (`seen_todo`, `seen_profile`, `list_seen`) on both dialects: tombstones tell
their version, and a page names the stored state of given ids whatever their state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.db.database import open_master
from chalicelib.ids import new_op_id
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.models import validate_profile, validate_todo
from chalicelib.readers import Seen
from chalicelib.readers.sql import SqlReader

OWNER = "5c4b3a29-1807-4f6e-9d5c-4b3a29180706"
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]


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
            lines.append(make_command("put", "todos", OWNER, IDS[index], version, new_op_id(), data))
    lines.append(make_command("delete", "todos", OWNER, IDS[2], 2000, new_op_id(), None))
    lines.append(make_command("delete", "todos", OWNER, IDS[4], 2001, new_op_id(), None))
    lines.append(
        make_command("put", "profiles", OWNER, OWNER, 3000, new_op_id(), validate_profile({"display_name": "A"}))
    )
    body = b"".join(c.to_line() for c in lines)
    BatchLoader(master).load("local", "writes/2026/01/01/00/seen", local_etag(body), body)
    yield SqlReader(master)
    master.discard()


def test_a_tombstone_tells_its_version_and_nothing_stored_is_zero(reader):
    assert reader.seen_todo(OWNER, IDS[2]) == Seen(IDS[2], None, 2000)
    assert reader.seen_todo(OWNER, IDS[4]) == Seen(IDS[4], None, 2001)
    live = reader.seen_todo(OWNER, IDS[0])
    assert live.row is not None and live.row["title"] == "t0" and live.version == live.row["version"] == 1001
    assert live.row == reader.get_todo(OWNER, IDS[0])
    assert reader.seen_todo(OWNER, "00000000-0000-4000-8000-999999999999") == Seen(
        "00000000-0000-4000-8000-999999999999", None, 0
    )
    profile = reader.seen_profile(OWNER)
    assert profile.version == 3000 and profile.row == reader.get_profile(OWNER)
    assert reader.seen_profile("nobody") == Seen("nobody", None, 0)


def test_list_seen_adds_the_named_ids_whatever_their_state(reader):
    def ids(rows: list[Seen]) -> list[tuple[str, int, bool]]:
        return [(s.id[-1], s.version, s.row is not None) for s in rows]

    assert ids(reader.list_seen(OWNER, None, 10, None, [])) == [
        ("0", 1001, True),
        ("1", 1002, True),
        ("3", 1004, True),
        ("5", 1006, True),
    ]
    assert ids(reader.list_seen(OWNER, None, 10, "open", [IDS[1], IDS[2], IDS[4]])) == [
        ("0", 1001, True),
        ("1", 1002, True),
        ("2", 2000, False),
        ("3", 1004, True),
        ("4", 2001, False),
    ]
    assert ids(reader.list_seen(OWNER, IDS[1], 2, "done", [IDS[2]])) == [("2", 2000, False), ("5", 1006, True)]
    assert [r["id"] for r in reader.list_todos(OWNER, None, 10, "done")] == [IDS[1], IDS[5]]
