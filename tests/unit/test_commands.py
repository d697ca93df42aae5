"""Write commands on the line, and reading delivered objects as Firehose really delivers them."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.commands import make_command
from chalicelib.loader.deferral import Deferred
from chalicelib.loader.parsing import command_from_dict, parse_object
from chalicelib.loader.streaming import inflate
from chalicelib.resources import SCHEMA_VERSION
from tests.factories import make

OWNER = "alice"
TODO_ID = "0190b2a0-0000-7000-8000-000000000001"
OP_ID = "6a9c5d2e-1111-4222-8333-444455556666"
DATA = make("todos", title="t")


def line(**over):  # type: ignore[no-untyped-def]
    cmd = {
        "v": SCHEMA_VERSION,
        "op": "put",
        "resource": "todos",
        "owner": OWNER,
        "id": TODO_ID,
        "version": 1_800_000_000_000_000,
        "op_id": OP_ID,
        "at": "2027-01-15T08:00:00.000000Z",
        "data": DATA,
    }
    cmd.update(over)
    return json.dumps(cmd)


def test_command_line_has_exactly_the_contract_fields_and_ends_in_newline():
    command = make_command("put", "todos", OWNER, TODO_ID, 1_800_000_000_000_001, OP_ID, DATA)
    raw = command.to_line()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    decoded = json.loads(raw)
    assert set(decoded) == {"v", "op", "resource", "owner", "id", "version", "op_id", "at", "data"}
    assert decoded["v"] == SCHEMA_VERSION and decoded["at"] == "2027-01-15T08:00:00.000001Z"
    assert command_from_dict(decoded) == command


def test_delete_has_null_data():
    command = make_command("delete", "todos", OWNER, TODO_ID, 1, OP_ID, None)
    assert json.loads(command.to_line())["data"] is None


def test_unicode_travels_unescaped_and_intact():
    data = dict(DATA, title="café 💧")
    command = make_command("put", "todos", OWNER, TODO_ID, 7, OP_ID, data)
    assert "café 💧".encode() in command.to_line()
    commands, rejects = parse_object(command.to_line())
    assert commands[0].data["title"] == "café 💧" and not rejects


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"v": 0}, "v must be a positive integer"),
        ({"v": True}, "v must be a positive integer"),
        ({"v": 2.0}, "v must be a positive integer"),
        ({"v": "2"}, "v must be a positive integer"),
        ({"v": None}, "v must be a positive integer"),
        ({"v": 1}, "priority: is not a known field"),
        ({"v": 1, "resource": "lists", "data": {"name": "n"}}, "resource must be 'todos' or 'profiles'"),
        ({"op": "patch"}, "op"),
        ({"resource": "users"}, "resource"),
        ({"owner": ""}, "owner"),
        ({"owner": "x" * 129}, "owner"),
        ({"id": TODO_ID.upper()}, "id"),
        ({"version": 0}, "version"),
        ({"version": 2**53}, "version"),
        ({"version": "5"}, "version"),
        ({"version": 5.0}, "version"),
        ({"op_id": "x"}, "op_id"),
        ({"at": "yesterday"}, "at"),
        ({"at": "1900-01-01T00:00:00Z"}, "at"),
        ({"data": None}, "invalid data"),
        ({"data": {"title": ""}}, "invalid data"),
        ({"data": dict(DATA, extra=1)}, "invalid data"),
        ({"op": "delete", "data": DATA}, "null for a delete"),
        ({"resource": "profiles", "id": "bob", "data": {"display_name": "B"}}, "equal its owner"),
        ({"surprise": 1}, "unknown keys"),
    ],
)
def test_invalid_commands_are_rejected_with_a_reason(over, reason):
    commands, rejects = parse_object((line(**over) + "\n").encode())
    assert commands == []
    assert len(rejects) == 1 and reason in rejects[0].reason and rejects[0].line_no == 1


def test_data_defaults_are_filled_when_the_loader_reads_a_minimal_put():
    commands, _ = parse_object(line(data={"title": "x"}).encode())
    assert commands[0].data == make("todos", title="x")  # every default: tests/unit/test_models.py


def test_a_version_1_command_loads_with_the_new_fields_defaults():
    old = {"title": "x", "notes": "n", "state": "done", "tags": ["a"], "due_at": None}
    commands, rejects = parse_object(line(v=1, data=old).encode())
    assert not rejects and commands[0].data == {**old, "priority": 3, "list_id": None}


def test_a_missing_v_is_a_reject():
    raw = json.loads(line())
    del raw["v"]
    commands, rejects = parse_object(json.dumps(raw).encode())
    assert commands == [] and "v must be a positive integer" in rejects[0].reason


@pytest.mark.parametrize("newer", [SCHEMA_VERSION + 1, 10**6])
def test_a_newer_v_defers_the_object_whatever_the_line_holds(newer):
    good = line()
    for odd in (line(v=newer), line(v=newer, op="frobnicate", surprise=1), json.dumps({"v": newer})):
        with pytest.raises(Deferred) as deferred:
            parse_object(f"{good}\n{odd}\nnot json\n".encode())
        assert deferred.value.needs_version == newer


def test_concatenated_commands_without_newlines_are_all_read():
    body = (line(version=1) + line(version=2) + " " + line(version=3) + "\n" + line(version=4)).encode()
    commands, rejects = parse_object(body)
    assert [c.version for c in commands] == [1, 2, 3, 4] and not rejects


def test_bad_lines_are_kept_with_their_line_number_and_do_not_stop_the_rest():
    body = "\n".join([line(version=1), "not json", "", line(version=0), "[1,2]", line(version=3), "{"]).encode()
    commands, rejects = parse_object(body)
    assert [c.version for c in commands] == [1, 3]
    assert [r.line_no for r in rejects] == [2, 4, 5, 7]
    assert rejects[0].line == "not json"


def test_a_bad_command_inside_a_concatenated_line_rejects_only_itself():
    body = (line(version=1) + line(version=0) + line(version=2)).encode()
    commands, rejects = parse_object(body)
    assert [c.version for c in commands] == [1, 2]
    assert len(rejects) == 1 and rejects[0].line_no == 1


def test_gzip_is_recognised_by_content_including_several_members():
    part1 = gzip.compress((line(version=1) + "\n").encode())
    part2 = gzip.compress((line(version=2) + "\n").encode())
    commands, rejects = parse_object(part1 + part2)
    assert [c.version for c in commands] == [1, 2] and not rejects


def test_truncated_gzip_keeps_what_inflated_and_records_the_problem():
    whole = gzip.compress(("\n".join(line(version=v) for v in range(1, 200)) + "\n").encode())
    commands, rejects = parse_object(whole[: len(whole) - 20])
    assert commands  # the part before the cut
    assert any("gzip" in r.reason for r in rejects)


def test_invalid_utf8_rejects_only_its_line():
    body = line(version=1).encode() + b"\n" + b'{"v":1,"owner":"\xff\xfe"}\n' + line(version=2).encode()
    commands, rejects = parse_object(body)
    assert [c.version for c in commands] == [1, 2]
    assert len(rejects) == 1 and rejects[0].line_no == 2
    rejects[0].line.encode("utf-8")  # storable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b'{"\\udc80":1}', "\\udc80"),  # a lone surrogate written as a JSON escape: as written
        (b'{"\\ud800":1}', "\\ud800"),
        (b'{"v":1}{"\\udcff":1}', "\\udcff"),  # inside a concatenated line too
        (b'{"\x80":1}', "\\x80"),  # a byte that is not UTF-8: as that byte, in the line and the reason
        (b'{"\xff\xfe":1}', "\\xff\\xfe"),
    ],
)
def test_a_reason_shows_a_lone_surrogate_as_written_and_a_bad_byte_as_that_byte(raw: bytes, shown: str) -> None:
    _, rejects = parse_object(raw + b"\n")
    (reject,) = [r for r in rejects if "unknown" in r.reason]
    assert shown in reject.reason, reject
    assert shown in reject.line, reject  # the line's text shows it the same way
    reject.reason.encode("utf-8") and reject.line.encode("utf-8")  # storable


def test_deeply_nested_line_is_a_reject_not_a_crash():
    body = (line(version=1) + "\n" + "[" * 100000 + "]" * 100000 + "\n").encode()
    commands, rejects = parse_object(body)
    assert len(commands) == 1 and len(rejects) == 1


def test_huge_reject_lines_are_clipped():
    _, rejects = parse_object(("x" * 100000).encode())
    assert len(rejects[0].line) < 3000


def test_inflate_passes_plain_bytes_through():
    assert inflate(b"abc") == (b"abc", None)


# -- LineStream: object_lines piece by piece ------------------------------------------------------
LINE_BYTES = st.sampled_from(
    [b"", b"{}", b"abc", b"caf\xc3\xa9", b"bad \xff byte", b"split \xe2\x82", b"\xac euro tail", b"x" * 300, b"\r"]
)


@st.composite
def delivered_bodies(draw: st.DrawFn) -> bytes:
    """Plain or GZIP (one or more members), sometimes broken the ways a delivery can be."""
    members = draw(st.lists(st.lists(LINE_BYTES, max_size=12).map(b"\n".join), min_size=1, max_size=3))
    if draw(st.booleans()):
        return b"\n".join(members)
    body = b"".join(gzip.compress(m + b"\n" * draw(st.integers(0, 1))) for m in members)
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "trailing", "padding"]))
    if damage == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif damage == "flip":
        at = draw(st.integers(10, max(10, len(body) - 1)))
        body = body[:at] + bytes([body[at] ^ 0x55]) + body[at + 1 :] if at < len(body) else body
    elif damage == "trailing":
        body += b"junk"
    elif damage == "padding":
        body += b"\x00\n"
    return body


@settings(max_examples=400, deadline=None)
@given(delivered_bodies(), st.integers(1, 64), st.integers(1, 40), st.booleans())
def test_line_stream_gives_object_lines_piece_by_piece(body: bytes, piece: int, step: int, as_file: bool) -> None:
    import io

    from chalicelib.loader.streaming import LineStream

    data, problem = inflate(body, piece)  # all at once, then decoded and split: the reference
    try:
        expected = (data.decode("utf-8").split("\n"), problem)
    except UnicodeDecodeError:
        expected = ([raw.decode("utf-8", "surrogateescape") for raw in data.split(b"\n")], problem)
    stream = LineStream(io.BytesIO(body) if as_file else body, piece)
    got: list[str] = []
    while stream.fill(step):  # taken a few lines at a time, as the loader takes them
        first, lines = stream.take(step)
        assert first == len(got) + 1 and 0 < len(lines) <= step
        got.extend(lines)
    assert stream.done and (got, stream.problem) == expected and stream.count == len(got)


def test_a_line_with_no_end_is_read_in_linear_time_and_rejected_past_the_line_limit() -> None:
    from chalicelib.loader.streaming import MAX_LINE_BYTES, LineStream

    body = gzip.compress(b"x" * (64 * 1024 * 1024) + b"\n{}")
    stream = LineStream(body, piece=4096)  # 16,384 pieces, none of them kept
    assert stream.read_all() == ["", "{}"]
    (reject,) = stream.take_rejects()
    assert reject.line_no == 1 and str(MAX_LINE_BYTES) in reject.reason and len(reject.line) < 3000


def test_a_line_just_under_the_limit_is_kept_whole() -> None:
    from chalicelib.loader.streaming import LineStream

    body = gzip.compress(b"y" * 1000 + b"\nz")
    stream = LineStream(body, piece=64, max_line=1000)
    assert stream.read_all() == ["y" * 1000, "z"] and not stream.rejects
    stream = LineStream(body, piece=64, max_line=999)
    assert stream.read_all() == ["", "z"] and [r.line_no for r in stream.rejects] == [1]


@pytest.mark.parametrize("gzipped", [False, True])
def test_an_object_inflating_beyond_the_limit_raises_before_holding_it(gzipped: bool) -> None:
    import io

    from chalicelib.loader.streaming import LineStream, ObjectTooLarge

    raw = b"\n" * 300_000
    body = gzip.compress(raw) if gzipped else raw
    assert LineStream(body, limit=300_000).read_all() == [""] * 300_001
    stream = LineStream(io.BytesIO(body), limit=299_999)
    with pytest.raises(ObjectTooLarge):
        while stream.fill(1000):
            stream.take(1000)


@pytest.mark.parametrize("blank", ["", " ", "\t", "\r", " \t\r  "])
def test_lines_of_json_whitespace_are_skipped(blank: str) -> None:
    commands, rejects = parse_object((line(version=1) + "\n" + blank + "\n").encode())
    assert len(commands) == 1 and not rejects


@pytest.mark.parametrize("spaces", ["\x1c", "\x1c\x1d\x1e\x1f", "\u2028", "\u3000", "\u00a0", "\x0b\x0c", " \u2029 "])
def test_lines_of_other_unicode_whitespace_are_rejects_not_blank(spaces: str) -> None:
    commands, rejects = parse_object((line(version=1) + "\n" + spaces + "\n").encode())
    assert len(commands) == 1
    assert [r.line_no for r in rejects] == [2]


@pytest.mark.parametrize("key", ['"\\udc80"', '"\\ud800"', '"\\udfff\\udc00"'])
def test_a_lone_surrogate_key_gives_a_storable_reason_and_text(key: str) -> None:
    # the reason names the unknown key: it must be storable as UTF-8 too, not only the text
    top = line(version=1)[:-1] + f", {key}: 1}}"
    inside = line(version=1, data={**DATA, "title": "x"}).replace('"title"', f'{key}: 1, "title"')
    for text in (top, inside):
        _, rejects = parse_object(text.encode() + b"\n")
        assert len(rejects) == 1
        rejects[0].reason.encode("utf-8")
        rejects[0].line.encode("utf-8")


def test_raw_invalid_utf8_in_a_key_is_escaped_in_reason_and_text() -> None:
    body = line(version=1)[:-1].encode() + b', "k\x80\xff": 1}\n'
    _, rejects = parse_object(body)
    assert len(rejects) == 1
    assert "k\\x80\\xff" in rejects[0].line and rejects[0].reason.encode("utf-8")


@pytest.mark.parametrize("digits", ["\u0662\u0660\u0662\u0667", "\uff12\uff10\uff12\uff17"])
def test_at_in_other_scripts_digits_is_a_reject(digits: str) -> None:
    _, rejects = parse_object((line(at=f"{digits}-01-15T08:00:00Z") + "\n").encode())
    assert len(rejects) == 1 and "at" in rejects[0].reason
