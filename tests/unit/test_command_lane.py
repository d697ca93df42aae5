"""The loader's line lane (loader/todo_lane._todo_from_line): one regular expression for a todo command
written exactly as WriteCommand.to_line writes it.

The lane may decline any line (None: the general path decodes and checks it); when it answers,
its command must be the one the general path makes of the same line, field for field. The lines
here are drawn in the lane's own layout (compact JSON, the writer's key order) from valid and
broken commands, and then damaged the ways a hostile or buggy producer would: escapes, control
characters, invalid UTF-8, numbers JSON spells another way, limits plus one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chalicelib import commands as cm
from chalicelib.ids import MAX_VERSION
from chalicelib.loader import parsing, todo_lane
from tests.unit.test_parse_fast_paths import raw_commands

ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
OP = "9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c8"


def canonical(raw: Any) -> str:
    """The line as the writer lays it out (to_line without the newline)."""
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


def general(line: str) -> Any:
    """What the general path makes of one line: the command, or the reject's reason."""
    commands: list[Any] = []
    rejects: list[Any] = []
    parsing._parse_line_slowly(1, line, commands.append, rejects)
    if commands:
        assert len(commands) == 1 and not rejects
        return commands[0]
    return ("rejected", rejects[0].reason)


def good(**data: Any) -> dict[str, Any]:
    body = {"title": "Buy milk", "notes": "", "state": "open", "tags": [], "due_at": None} | data
    return {
        "v": 1,
        "op": "put",
        "resource": "todos",
        "owner": "alice",
        "id": ID,
        "version": 1767225600000000,
        "op_id": OP,
        "at": "2026-01-01T00:00:00.000000Z",
        "data": body,
    }


def test_a_line_the_writer_wrote_takes_the_lane_and_gives_the_same_command() -> None:
    for command in (
        cm.make_command("put", "todos", "alice", ID, 1767225600123456, OP, good()["data"]),
        cm.make_command(
            "put",
            "todos",
            "Zoë 💧 <b>&",
            ID,
            7,
            OP,
            {
                "title": "Café ☕",
                "notes": "x" * 10000,
                "state": "done",
                "tags": ["a", "b-1", "z_9"],
                "due_at": "2026-03-04T09:00:00Z",
            },
        ),
        cm.make_command("delete", "todos", "alice", ID, MAX_VERSION, OP, None),
    ):
        line = command.to_line().decode("utf-8")[:-1]
        heads: dict[int, str] = {}
        lane = todo_lane._todo_from_line(line, heads)
        assert lane is not None, line[:120]
        assert lane == command == general(line)
        assert_head_is_the_row(lane, heads)


def assert_head_is_the_row(command: Any, heads: dict[int, str]) -> None:
    """The row head the lane wrote, completed, is the row tsv_line writes."""
    from chalicelib.loader.mysql_fast import tsv_line

    assert list(heads) == [id(command)]
    for created_at in (command.stored_at, "2001-02-03 04:05:06.000007"):
        assert f"{heads[id(command)]}{created_at}\t{command.stored_at}\n" == tsv_line(command, created_at)


LANE_DECLINES = [
    # each is the good line with one thing the lane leaves to the general path
    ("escape in a title", lambda line: line.replace("Buy milk", 'Buy \\"milk\\"')),
    ("escaped newline in notes", lambda line: line.replace('"notes":""', '"notes":"a\\nb"')),
    ("unicode escape", lambda line: line.replace("Buy milk", "Buy \\u00e9")),
    ("raw tab in a title", lambda line: line.replace("Buy milk", "Buy\tmilk")),
    ("raw control char", lambda line: line.replace("Buy milk", "Buy\x01milk")),
    ("lone surrogate (invalid UTF-8 decoded)", lambda line: line.replace("Buy milk", "Buy \udc80")),
    ("spaces after commas", lambda line: line.replace(",", ", ")),
    ("keys in another order", lambda line: line.replace('{"v":1,"op":"put",', '{"op":"put","v":1,')),
    ("trailing carriage return", lambda line: line + "\r"),
    ("version as a float", lambda line: line.replace("1767225600000000", "1767225600000000.0")),
    ("version with an exponent", lambda line: line.replace("1767225600000000", "1.7e15")),
    ("version over 2**53-1", lambda line: line.replace("1767225600000000", str(MAX_VERSION + 1))),
    ("version zero", lambda line: line.replace("1767225600000000", "0")),
    ("version negative", lambda line: line.replace("1767225600000000", "-5")),
    ("upper-case id", lambda line: line.replace(ID, ID.upper())),
    ("at not canonical", lambda line: line.replace("00.000000Z", "00Z")),
    ("at on the 30th of February", lambda line: line.replace("2026-01-01T", "2026-02-30T")),
    ("at with an offset", lambda line: line.replace("2026-01-01T00:00:00.000000Z", "2026-01-01T01:00:00.000000+01")),
    ("title over 200", lambda line: line.replace("Buy milk", "x" * 201)),
    ("empty title", lambda line: line.replace("Buy milk", "")),
    ("notes over 10000", lambda line: line.replace('"notes":""', '"notes":"' + "n" * 10001 + '"')),
    ("unknown state", lambda line: line.replace('"state":"open"', '"state":"closed"')),
    ("a repeated tag", lambda line: line.replace('"tags":[]', '"tags":["a","b","a"]')),
    ("21 tags", lambda line: line.replace('"tags":[]', '"tags":[' + ",".join(f'"t{i}"' for i in range(21)) + "]")),
    ("an upper-case tag", lambda line: line.replace('"tags":[]', '"tags":["Home"]')),
    ("due_at not canonical", lambda line: line.replace('"due_at":null', '"due_at":"2026-01-01T09:00:00.000000Z"')),
    ("due_at with an offset", lambda line: line.replace('"due_at":null', '"due_at":"2026-01-01T09:00:00+02:00"')),
    ("a put without data", lambda line: line[: line.index('"data":')] + '"data":null}'),
    ("a delete with data", lambda line: line.replace('"op":"put"', '"op":"delete"')),
    ("owner with a leading space", lambda line: line.replace('"owner":"alice"', '"owner":" alice"')),
    ("owner not printable", lambda line: line.replace('"owner":"alice"', '"owner":"al\u2028ice"')),
    ("owner over 128", lambda line: line.replace('"owner":"alice"', '"owner":"' + "o" * 129 + '"')),
    ("a profile", lambda line: line.replace('"resource":"todos"', '"resource":"profiles"')),
    ("v is 2", lambda line: line.replace('"v":1', '"v":2')),
    ("an extra key", lambda line: line.replace('"v":1,', '"v":1,"x":1,')),
    ("an extra data key", lambda line: line.replace('"title":', '"x":1,"title":')),
    ("two commands on a line", lambda line: line + line),
]


@pytest.mark.parametrize("name, damage", LANE_DECLINES, ids=[n for n, _ in LANE_DECLINES])
def test_the_lane_declines_what_needs_a_closer_look_and_the_general_path_decides(name: str, damage: Any) -> None:
    line = damage(canonical(good()))
    assert line != canonical(good())
    assert todo_lane._todo_from_line(line) is None
    # and parse_lines (lane first, general path after) answers as the general path alone
    commands, rejects = parsing.parse_lines([line])
    reference = general(line) if name != "two commands on a line" else None
    if reference is None:
        assert len(commands) == 2 and not rejects
    elif isinstance(reference, tuple):
        assert commands == [] and [r.reason for r in rejects] == [reference[1]]
    else:
        assert commands == [reference] and rejects == []


@settings(max_examples=500, deadline=None)
@given(raw_commands(), st.sampled_from(["none", "escape", "control", "nonascii", "surrogate"]))
@example(good(), "none")
@example(good(tags=["a", "b"], due_at="2026-01-01T09:00:00Z", notes="n" * 10000), "nonascii")
def test_the_lane_declines_or_agrees_with_the_general_path(raw: Any, twist: str) -> None:
    try:
        line = canonical(raw)
    except (TypeError, ValueError):
        return
    if twist == "escape":
        line = line.replace("a", "\\u0061", 1)
    elif twist == "control":
        line = line.replace("a", "\x7f\x1f", 1)
    elif twist == "nonascii":
        line = line.replace("e", "é", 1)
    elif twist == "surrogate":
        line = line.replace("e", "\udcff", 1)
    heads: dict[int, str] = {}
    lane = todo_lane._todo_from_line(line, heads)
    if lane is not None:
        assert lane == general(line)
        assert_head_is_the_row(lane, heads)
    else:
        assert heads == {}
