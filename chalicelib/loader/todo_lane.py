"""The todo line lane: a line written exactly as `WriteCommand.to_line` writes a todo is
recognised by one regular expression, built from the todo's declaration, instead of being decoded
and validated field by field, and its `LOAD DATA` row text is written on the way. It may only
decline or agree with the general path (`chalicelib.loader.parsing`): tests/unit/test_command_lane.py."""

from __future__ import annotations

import re

from chalicelib.commands import (
    MAX_OWNER_CHARS,
    WriteCommand,
    _canonical_stored_ts,
    _is_utf8,
    _known_hours,
    _known_owners,
    _new_command,
    _remember_owner,
)
from chalicelib.ids import CANONICAL_UUID, MAX_VERSION
from chalicelib.models import (
    NOTES_MAX,
    STATES,
    TAG,
    TAGS_MAX,
    TITLE_MAX,
    TITLE_MIN,
    TODO_FIELDS,
    _canonical_due_at,
    _known_due,
)

# The line of a todo command exactly as WriteCommand.to_line writes it, with no JSON escape in any
# string (a string without a backslash decodes to its own text). Such a line is recognised by one
# regular expression instead of being decoded to dicts and validated field by field; anything else
# (escapes, other key orders or spacing, profiles, invalid values) takes the general path, which
# gives the same command or the reason it is not one. tests/unit/test_command_lane.py holds the
# two paths to the same answers. Inside a string, _PLAIN takes any character but a quote, a
# backslash (the start of an escape) and a control character (JSON writes those escaped); a line
# that is not ASCII must also encode to UTF-8 (no lone surrogate from an invalid byte).
_PLAIN = r'[^"\\\x00-\x1f]'
_UUID = CANONICAL_UUID.pattern


# Every limit, choice and pattern below comes from the todo's declaration (chalicelib.resources,
# through chalicelib.models), so the lane cannot drift from the validators.
assert TODO_FIELDS == ("title", "notes", "state", "tags", "due_at"), "the lane's layout follows the todo's fields"


_QUOTED_TAG = '"' + TAG.pattern + '"'


def _plain(low: int, high: int) -> str:
    return f"{_PLAIN}{{{low},{high}}}"


_TODO_LINE = re.compile(
    r'\{"v":1,"op":"(put|delete)","resource":"todos","owner":"(' + _plain(1, MAX_OWNER_CHARS) + r')",'
    r'"id":"(' + _UUID + r')","version":([1-9][0-9]{0,15}),"op_id":"(' + _UUID + r')",'
    r'"at":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z)",'
    r'"data":(?:null|\{"title":"(' + _plain(TITLE_MIN, TITLE_MAX) + r')",'
    r'"notes":"(' + _plain(0, NOTES_MAX) + r')","state":"(' + "|".join(map(re.escape, STATES)) + r')",'
    r'"tags":\[((?:' + _QUOTED_TAG + r"(?:," + _QUOTED_TAG + r"){0," + str(TAGS_MAX - 1) + r"})?)\],"
    r'"due_at":(?:null|"([0-9][^"]{19,26})")\})\}'
)


_todo_line = _TODO_LINE.fullmatch
_NULL = "\\N"  # LOAD DATA's NULL


def _todo_from_line(line: str, heads: dict[int, str] | None = None) -> WriteCommand | None:
    """The command of a canonical todo line (see _TODO_LINE); None when the line is not one, or
    when any value needs a closer look (the general path then decides).

    With `heads`, heads[id(command)] is set to the command's todos row as LOAD DATA reads it, up
    to created_at: owner, id, title, notes, state, tags, due_at, version, op_id, deleted, each
    followed by a tab (loader.mysql_fast.tsv_line is the reference; the strings of a line the
    lane takes hold no character that row format escapes)."""
    if not line.isascii() and not _is_utf8(line):
        return None
    match = _todo_line(line)
    if match is None:
        return None
    op, owner, id_, version_text, op_id, at, title, notes, state, tags_text, due_at = match.groups()
    if owner not in _known_owners and not _remember_owner(owner):
        return None
    version = int(version_text)
    if version > MAX_VERSION:
        return None
    if at[:14] not in _known_hours and _canonical_stored_ts(at) is None:  # the form is checked above
        return None
    if title is None:  # "data":null
        if op != "delete":
            return None
        command = _new_command(op, "todos", owner, id_, version, op_id, at, None, f"{at[:10]} {at[11:26]}")
        if heads is not None:
            heads[id(command)] = f"{owner}\t{id_}\t\t\topen\t[]\t{_NULL}\t{version_text}\t{op_id}\t1\t"
        return command
    if op != "put":
        return None
    if tags_text:
        tags = tags_text[1:-1].split('","')
        if len(tags) > 1 and len(set(tags)) != len(tags):
            return None
    else:
        tags = []
    if due_at is not None and due_at not in _known_due:
        due_at = _canonical_due_at(due_at)
        if due_at is None:
            return None
    data = {"title": title, "notes": notes, "state": state, "tags": tags, "due_at": due_at}
    command = _new_command(op, "todos", owner, id_, version, op_id, at, data, f"{at[:10]} {at[11:26]}")
    if heads is not None:
        heads[id(command)] = (
            f"{owner}\t{id_}\t{title}\t{notes}\t{state}\t[{tags_text}]\t{due_at or _NULL}\t{version_text}\t{op_id}\t0\t"
        )
    return command
