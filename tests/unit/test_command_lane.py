"""The loader's line lanes (chalicelib/loader/lanes.py): one regular expression per resource and
schema version for a command written exactly as WriteCommand.to_line writes it.

A lane may decline any line (None: the general path decodes and checks it); when it answers, its
command must be the one the general path makes of the same line, field for field, and its row
head, completed, the row `rows.Table.tsv` writes. The lines here are drawn from every declared
resource (tests/factories.py), valid, older, newer and broken, in the lane's own layout (compact
JSON, the writer's key order), and then damaged the ways a hostile or buggy producer would:
escapes, control characters, invalid UTF-8, numbers JSON spells another way, limits plus one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chalicelib import commands as cm
from chalicelib.ids import MAX_VERSION
from chalicelib.loader import lanes, parsing
from chalicelib.loader.deferral import Deferred
from chalicelib.resources import RESOURCES, SCHEMA_VERSION
from chalicelib.rows import table
from tests import factories

ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
LIST = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"
OP = "9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c8"
V = f'"v":{SCHEMA_VERSION}'


def canonical(raw: Any) -> str:
    """The line as the writer lays it out (to_line without the newline)."""
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


def general(line: str) -> Any:
    """What the general path makes of one line: the command, the reject's reason, or a deferral."""
    commands: list[Any] = []
    rejects: list[Any] = []
    try:
        parsing._parse_line_slowly(1, line, commands.append, rejects)
    except Deferred as exc:
        return ("deferred", exc.needs_version)
    if commands:
        assert len(commands) == 1 and not rejects
        return commands[0]
    return ("rejected", rejects[0].reason)


def good(resource: str = "todos", **data: Any) -> dict[str, Any]:
    body = factories.make(resource, title="Buy milk") if resource == "todos" else factories.make(resource)
    return {
        "v": SCHEMA_VERSION,
        "op": "put",
        "resource": resource,
        "owner": "alice",
        "id": ID,
        "version": 1767225600000000,
        "op_id": OP,
        "at": "2026-01-01T00:00:00.000000Z",
        "data": body | data,
    }


def assert_head_is_the_row(command: Any, heads: dict[int, str]) -> None:
    """The row head the lane wrote, completed, is the row the table's reference writes."""
    assert list(heads) == [id(command)]
    tsv = table(command.resource).tsv
    for created_at in (command.stored_at, "2001-02-03 04:05:06.000007"):
        assert f"{heads[id(command)]}{created_at}\t{command.stored_at}\n" == tsv(command, created_at)


def test_every_resource_keyed_by_id_has_a_lane_at_every_version_it_knows() -> None:
    for name, declared in RESOURCES.items():
        for version in range(1, SCHEMA_VERSION + 1):
            made = lanes.lane(name, version)
            assert (made is not None) == (declared.by_id and declared.since <= version), (name, version)


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
            factories.make(
                "todos",
                title="Café ☕",
                notes="x" * 10000,
                state="done",
                tags=["a", "b-1", "z_9"],
                due_at="2026-03-04T09:00:00Z",
                priority=1,
                list_id=LIST,
            ),
        ),
        cm.make_command("delete", "todos", "alice", ID, MAX_VERSION, OP, None),
        cm.make_command("put", "lists", "alice", ID, 5, OP, factories.make("lists", name="Home", position=1_000_000)),
        cm.make_command("delete", "lists", "alice", ID, 5, OP, None),
    ):
        line = command.to_line().decode("utf-8")[:-1]
        heads: dict[int, str] = {}
        lane = lanes.from_line(line, heads)
        assert lane is not None, line[:120]
        assert lane == command == general(line)
        assert_head_is_the_row(lane, heads)


def test_a_version_1_line_takes_its_lane_with_the_new_fields_defaults() -> None:
    raw = factories.older(good(), 1)
    line = canonical(raw)
    assert '"priority"' not in line and line.startswith('{"v":1,')
    heads: dict[int, str] = {}
    lane = lanes.from_line(line, heads)
    assert lane is not None and lane == general(line)
    assert lane.data is not None and (lane.data["priority"], lane.data["list_id"]) == (3, None)
    assert_head_is_the_row(lane, heads)


def todo_damage(old: str, new: str) -> Any:
    return lambda line: line.replace(old, new)


LANE_DECLINES = [
    # each is the good todo line with one thing the lane leaves to the general path
    ("escape in a title", todo_damage("Buy milk", 'Buy \\"milk\\"')),
    ("escaped newline in notes", todo_damage('"notes":""', '"notes":"a\\nb"')),
    ("unicode escape", todo_damage("Buy milk", "Buy \\u00e9")),
    ("raw tab in a title", todo_damage("Buy milk", "Buy\tmilk")),
    ("raw control char", todo_damage("Buy milk", "Buy\x01milk")),
    ("lone surrogate (invalid UTF-8 decoded)", todo_damage("Buy milk", "Buy \udc80")),
    ("spaces after commas", todo_damage(",", ", ")),
    ("keys in another order", todo_damage(f'{{{V},"op":"put",', f'{{"op":"put",{V},')),
    ("trailing carriage return", lambda line: line + "\r"),
    ("version as a float", todo_damage("1767225600000000", "1767225600000000.0")),
    ("version with an exponent", todo_damage("1767225600000000", "1.7e15")),
    ("version over 2**53-1", todo_damage("1767225600000000", str(MAX_VERSION + 1))),
    ("version zero", todo_damage("1767225600000000", "0")),
    ("version negative", todo_damage("1767225600000000", "-5")),
    ("upper-case id", todo_damage(ID, ID.upper())),
    ("at not canonical", todo_damage("00.000000Z", "00Z")),
    ("at on the 30th of February", todo_damage("2026-01-01T", "2026-02-30T")),
    ("at with an offset", todo_damage("2026-01-01T00:00:00.000000Z", "2026-01-01T01:00:00.000000+01")),
    ("title over 200", todo_damage("Buy milk", "x" * 201)),
    ("empty title", todo_damage("Buy milk", "")),
    ("notes over 10000", todo_damage('"notes":""', '"notes":"' + "n" * 10001 + '"')),
    ("unknown state", todo_damage('"state":"open"', '"state":"closed"')),
    ("a repeated tag", todo_damage('"tags":[]', '"tags":["a","b","a"]')),
    ("21 tags", todo_damage('"tags":[]', '"tags":[' + ",".join(f'"t{i}"' for i in range(21)) + "]")),
    ("an upper-case tag", todo_damage('"tags":[]', '"tags":["Home"]')),
    ("due_at not canonical", todo_damage('"due_at":null', '"due_at":"2026-01-01T09:00:00.000000Z"')),
    ("due_at with an offset", todo_damage('"due_at":null', '"due_at":"2026-01-01T09:00:00+02:00"')),
    ("priority 6", todo_damage('"priority":3', '"priority":6')),
    ("priority 0", todo_damage('"priority":3', '"priority":0')),
    ("priority as a float", todo_damage('"priority":3', '"priority":3.0')),
    ("priority as a string", todo_damage('"priority":3', '"priority":"3"')),
    ("priority true", todo_damage('"priority":3', '"priority":true')),
    ("priority null", todo_damage('"priority":3', '"priority":null')),
    ("list_id upper case", todo_damage('"list_id":null', f'"list_id":"{LIST.upper()}"')),
    ("list_id not a UUID", todo_damage('"list_id":null', '"list_id":"home"')),
    ("list_id a number", todo_damage('"list_id":null', '"list_id":7')),
    ("a put without data", lambda line: line[: line.index('"data":')] + '"data":null}'),
    ("a delete with data", todo_damage('"op":"put"', '"op":"delete"')),
    ("owner with a leading space", todo_damage('"owner":"alice"', '"owner":" alice"')),
    ("owner not printable", todo_damage('"owner":"alice"', '"owner":"al\u2028ice"')),
    ("owner over 128", todo_damage('"owner":"alice"', '"owner":"' + "o" * 129 + '"')),
    ("a profile", todo_damage('"resource":"todos"', '"resource":"profiles"')),
    ("a list's fields", todo_damage('"resource":"todos"', '"resource":"lists"')),
    ("v newer than known", todo_damage(V, f'"v":{SCHEMA_VERSION + 1}')),
    ("v 1 with the new fields", todo_damage(V, '"v":1')),
    ("v 0", todo_damage(V, '"v":0')),
    ("an extra key", todo_damage(f"{V},", f'{V},"x":1,')),
    ("an extra data key", todo_damage('"title":', '"x":1,"title":')),
    ("two commands on a line", lambda line: line + line),
]


@pytest.mark.parametrize("name, damage", LANE_DECLINES, ids=[n for n, _ in LANE_DECLINES])
def test_the_lane_declines_what_needs_a_closer_look_and_the_general_path_decides(name: str, damage: Any) -> None:
    line = damage(canonical(good()))
    assert line != canonical(good())
    assert lanes.from_line(line) is None
    # and parse_lines (lanes first, general path after) answers as the general path alone
    reference = general(line) if name != "two commands on a line" else None
    if isinstance(reference, tuple) and reference[0] == "deferred":
        with pytest.raises(Deferred):
            parsing.parse_lines([line])
        return
    commands, rejects = parsing.parse_lines([line])
    if reference is None:
        assert len(commands) == 2 and not rejects
    elif isinstance(reference, tuple):
        assert commands == [] and [r.reason for r in rejects] == [reference[1]]
    else:
        assert commands == [reference] and rejects == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"name":"x"', '"name":""'),
        ('"name":"x"', '"name":"' + "n" * 101 + '"'),
        ('"position":0', '"position":-1'),
        ('"position":0', '"position":1000001'),
        ('"position":0', '"position":00'),
        ('"position":0', '"position":0.0'),
        ('"position":0', '"position":false'),
        (V, '"v":1'),  # a version-1 command naming a list is a reject
    ],
)
def test_the_list_lane_declines_each_broken_field(old: str, new: str) -> None:
    line = canonical(good("lists", name="x"))
    assert lanes.from_line(line) is not None
    damaged = line.replace(old, new)
    assert damaged != line
    assert lanes.from_line(damaged) is None
    assert isinstance(general(damaged), tuple)


@settings(max_examples=500, deadline=None)
@given(factories.raw_commands(), st.sampled_from(["none", "escape", "control", "nonascii", "surrogate"]))
@example(good(), "none")
@example(good(tags=["a", "b"], due_at="2026-01-01T09:00:00Z", notes="n" * 10000, priority=5, list_id=LIST), "nonascii")
@example(factories.older(good(), 1), "none")
@example(good("lists", name="x", position=999_999), "none")
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
    lane = lanes.from_line(line, heads)
    if lane is not None:
        assert lane == general(line)
        assert_head_is_the_row(lane, heads)
    else:
        assert heads == {}
