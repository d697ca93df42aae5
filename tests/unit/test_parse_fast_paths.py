"""The loader's fast paths (parsing._fast_command, the generated fast validators, the canonical
`at` and date-time slicing, the whole-line scanner in parse_lines) answer exactly as the full
checks do, for commands of every declared resource and schema version.

Each fast path either declines (None: the full path runs) or returns what the full path returns.
Hypothesis draws valid commands and then breaks them one field at a time, with values chosen to
sit at the edges the fast checks test (lengths, digits outside ASCII, calendar days, offsets).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import commands as cm
from chalicelib import models, validation
from chalicelib.loader import parsing
from chalicelib.loader.deferral import Deferred
from chalicelib.resources import TODOS
from tests import factories

OWNER = "alice"
UUIDS = st.uuids().map(str)
GOOD_AT = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
)
ODD_AT = st.sampled_from(
    [
        "2026-01-31T09:00:00Z",
        "2026-01-31t09:00:00.000000z",
        "2026-01-31T09:00:00.000000+01:00",
        "2026-02-30T09:00:00.000000Z",
        "2026-01-31T24:00:00.000000Z",
        "2026-01-31T09:60:00.000000Z",
        "2026-01-31T09:00:60.000000Z",
        "1969-12-31T23:59:59.999999Z",
        "0000-01-01T00:00:00.000000Z",
        "٢٠٢٦-01-31T09:00:00.000000Z",  # Arabic-Indic digits: \d matches them, [0-9] does not
        "2026-01-31T09:00:00.0000000Z",
        "2026-01-31 09:00:00.000000Z",
        "",
    ]
)
DUE_AT = st.one_of(
    st.none(),
    GOOD_AT,
    ODD_AT,
    st.sampled_from(["2026-01-31T09:00:00Z", "2026-01-31T09:00:00.000000Z", "2026-01-31T09:00:00.5Z"]),
    st.integers(),
)
TEXT = st.text(max_size=8)
TITLE = st.one_of(st.sampled_from(["", "t", "x" * 200, "x" * 201, "\ud800", "café 💧"]), TEXT)
TAGS = st.one_of(
    st.lists(st.sampled_from(["home", "a", "A", "-a", "a" * 32, "a" * 33, "a b", "a\n", "", "x_1"]), max_size=4),
    st.lists(st.sampled_from(["t"]), min_size=2, max_size=2),
    st.lists(st.integers(), max_size=2),
    st.just([f"t{i}" for i in range(21)]),
    st.just("home"),
)


@st.composite
def todo_bodies(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {}
    for field, values in (
        ("title", TITLE),
        ("notes", st.one_of(TEXT, st.just("n" * 10001), st.integers())),
        ("state", st.sampled_from(["open", "done", "closed", 1])),
        ("tags", TAGS),
        ("due_at", DUE_AT),
        ("surprise", st.just(1)),
    ):
        if draw(st.integers(0, 3)) and (field != "surprise" or draw(st.integers(0, 5)) == 0):
            body[field] = draw(values)
    return body if draw(st.integers(0, 20)) else draw(st.sampled_from([None, [], "x", 3]))


@st.composite
def raw_commands(draw: st.DrawFn) -> Any:
    """Commands of every declared resource, valid, older, newer or damaged (tests/factories.py),
    and now and then one with this file's todo bodies and odd `at` values."""
    raw = draw(factories.raw_commands())
    if draw(st.integers(0, 4)) == 0:
        raw["at"] = draw(st.one_of(GOOD_AT, ODD_AT))
    if raw.get("resource") == "todos" and isinstance(raw.get("data"), dict) and draw(st.integers(0, 3)) == 0:
        raw["data"] = draw(todo_bodies())
    return raw


def full_path(raw: Any) -> Any:
    try:
        return parsing._checked_command(raw)
    except ValueError as exc:
        return ("rejected", str(exc))
    except Deferred as exc:
        return ("deferred", exc.needs_version)


@settings(max_examples=300, deadline=None)
@given(raw_commands())
def test_fast_command_declines_or_agrees_with_every_check(raw: Any) -> None:
    fast = parsing._fast_command(raw)
    reference = full_path(raw)
    if fast is not None:
        assert fast == reference
    # and the public entry point gives the reference answer either way
    try:
        assert parsing.command_from_dict(raw) == reference
    except ValueError as exc:
        assert reference == ("rejected", str(exc))
    except Deferred as exc:
        assert reference == ("deferred", exc.needs_version)


@settings(max_examples=300, deadline=None)
@given(todo_bodies())
def test_fast_todo_validation_declines_or_agrees(body: Any) -> None:
    errors: dict[str, list[str]] = {}
    reference = models.validate_todo(body, errors=errors) if isinstance(body, dict) else None
    fast = models.fast_validator("todos")(body) if type(body) is dict else None
    if fast is not None:
        assert not errors and fast == reference


@settings(max_examples=300, deadline=None)
@given(st.one_of(GOOD_AT, ODD_AT, st.text(max_size=30)))
def test_canonical_at_slicing_agrees_with_parsing(at: str) -> None:
    fast = cm.canonical_stored_ts(at)
    try:
        reference: Any = cm._parsed_stored_ts(at)
    except ValueError:
        reference = None
    if fast is not None:
        assert fast == reference


@settings(max_examples=300, deadline=None)
@given(DUE_AT.filter(lambda v: isinstance(v, str)))
def test_canonical_due_at_agrees_with_normalising(value: str) -> None:
    fast = models.canonical_datetime(value)
    errors: dict[str, list[str]] = {}
    reference = validation.check_datetime(errors, "due_at", value, TODOS.rules()["due_at"])
    if fast is not None:
        assert not errors and fast == reference


def as_line(raw: Any, ascii_only: bool) -> str:
    """A line as it reaches the loader: text decoded from UTF-8 bytes (so no lone surrogates)."""
    text = json.dumps(raw, ensure_ascii=ascii_only)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(raw)
    return text


@settings(max_examples=150, deadline=None)
@given(
    st.lists(raw_commands(), min_size=1, max_size=6), st.lists(st.sampled_from(["", " ", "x", "{", "}{"]), max_size=3)
)
def test_parse_lines_fast_scanner_agrees_with_json_loads_per_line(raws: list[Any], junk: list[str]) -> None:
    lines = [as_line(r, i % 2 == 0) for i, r in enumerate(raws)] + junk
    lines += [json.dumps(raws[0]) + "  ", json.dumps(raws[0]) + json.dumps(raws[-1])]  # trailing space, concatenated
    # reference: every line through the slow path (a newer version anywhere defers them all)
    commands: list[Any] = []
    rejects: list[Any] = []
    try:
        for number, line in enumerate(lines, 1):
            if line and not line.isspace():
                parsing._parse_line_slowly(number, line, commands.append, rejects)
    except Deferred:
        with pytest.raises(Deferred):
            parsing.parse_lines(lines)
        return
    assert parsing.parse_lines(lines) == (commands, rejects)
