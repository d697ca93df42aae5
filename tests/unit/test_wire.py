"""The hand-made fast paths are held byte for byte to the dataclasses-json reference (chalicelib.wire).

- The writer's encoder, `WriteCommand.to_line`, writes exactly `wire.encode`'s line.
- The loader's line lane and its general path make of such a line exactly the command
  `wire.decode` makes (the lane may decline; it may not disagree).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import wire
from chalicelib.commands import WriteCommand, make_command
from chalicelib.loader import parsing, todo_lane
from chalicelib.models import Invalid, time_zones, validate_profile, validate_todo

UUIDS = st.uuids().map(str)
ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
OP = "9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c8"
# Text as clients send it: any Unicode that UTF-8 can hold, quotes, backslashes and controls included.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
OWNERS = st.one_of(
    UUIDS,
    st.text(st.characters(exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp", "Cf"]), min_size=1, max_size=20).filter(
        lambda s: s.isprintable() and s.strip() == s
    ),
)
DUE = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%f+02:00")
    ),
)
TAGS = st.lists(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,5}", fullmatch=True), max_size=4, unique=True)


@st.composite
def todo_data(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"title": draw(TEXT.filter(bool))}
    for name, values in (
        ("notes", TEXT),
        ("state", st.sampled_from(["open", "done"])),
        ("tags", TAGS),
        ("due_at", DUE),
    ):
        if draw(st.booleans()):
            body[name] = draw(values)
    return validate_todo(body)


@st.composite
def profile_data(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"display_name": draw(TEXT.filter(bool))}
    if draw(st.booleans()):
        body["locale"] = draw(st.sampled_from(["en", "pt-BR", "zh-Hant-TW", "x-private"]))
    if draw(st.booleans()):
        body["timezone"] = draw(st.sampled_from(sorted(time_zones())))
    try:
        return validate_profile(body)
    except Invalid:
        return validate_profile({"display_name": "d"})


@st.composite
def commands(draw: st.DrawFn) -> WriteCommand:
    resource = draw(st.sampled_from(["todos", "todos", "profiles"]))
    owner = draw(OWNERS)
    op = draw(st.sampled_from(["put", "put", "delete"]))
    data = None if op == "delete" else draw(todo_data() if resource == "todos" else profile_data())
    id_ = draw(UUIDS) if resource == "todos" else owner
    version = draw(st.integers(1, 2**53 - 1))
    return make_command(op, resource, owner, id_, version, draw(UUIDS), data)


@settings(max_examples=300)
@given(commands())
def test_the_writer_writes_the_reference_line_byte_for_byte(command: WriteCommand) -> None:
    assert command.to_line() == wire.encode(command)


@settings(max_examples=300)
@given(commands())
def test_the_loader_reads_the_reference_command(command: WriteCommand) -> None:
    line = wire.encode(command)
    reference = wire.decode(line)
    assert reference == command
    text = line[:-1].decode("utf-8")
    laned = todo_lane._todo_from_line(text)
    assert laned is None or laned == reference
    parsed, rejects = parsing.parse_lines([text])
    assert (parsed, rejects) == ([reference], [])


def test_the_lane_takes_the_reference_line_of_a_plain_todo() -> None:
    # The lane is what the loader's benchmark runs on: it must not decline the common case.
    data = validate_todo({"title": "Buy milk", "tags": ["home"], "due_at": "2026-01-31T09:00:00+01:00"})
    command = make_command("put", "todos", "alice", ID, 1_700_000_000_000_000, OP, data)
    assert todo_lane._todo_from_line(wire.encode(command)[:-1].decode("utf-8")) == command


def test_decode_refuses_what_the_loader_refuses() -> None:
    command = make_command("delete", "todos", "alice", ID, 1, OP, None)
    line = wire.encode(command)
    for bad in (line.replace(b'"v":1', b'"v":2'), line.replace(b'"data":null', b'"data":null,"x":1')):
        try:
            wire.decode(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
