"""Write commands: what travels through Firehose and S3 (CONTRACT section 4), the wire model.

One command is one JSON object on one line ending in a newline. `WriteCommand` is a command,
`make_command` makes one for a write, `to_line` writes its line (held to the dataclasses-json
reference in `chalicelib.wire`). Every line carries `v`, the command schema version it was written
under (`resources.SCHEMA_VERSION`). The envelope rules the loader's parsing paths share live here
too: the canonical `at` and its stored form (`stored_ts`), a valid owner, and a fast constructor
for the hot paths. Reading delivered objects is the loader's (`chalicelib/loader/streaming.py`,
`parsing.py`, `lanes.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from chalicelib.identity import MAX_SUB_CHARS
from chalicelib.ids import parse_rfc3339, version_to_ts
from chalicelib.resources import SCHEMA_VERSION

OPS = ("put", "delete")
COMMAND_KEYS = frozenset(("v", "op", "resource", "owner", "id", "version", "op_id", "at", "data"))
MAX_OWNER_CHARS = MAX_SUB_CHARS  # a command's owner is a caller's sub


@dataclass(frozen=True, slots=True)
class WriteCommand:
    op: str
    resource: str
    owner: str
    id: str
    version: int
    op_id: str
    at: str  # RFC 3339, as it travels on the line
    data: dict[str, Any] | None
    stored_at: str  # the same instant as the tables keep it (stored_ts)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.resource, self.owner, self.id)

    def to_line(self) -> bytes:
        """The command's line, written here by hand (the POST benchmark row runs on it): the
        envelope with `v`, this release's schema version, and the validated data in declared
        order. tests/unit/test_wire.py holds it to the dataclasses-json reference
        (chalicelib.wire), byte for byte, for every declared resource.

        What json.dumps(envelope, ensure_ascii=False, separators=(",", ":")) writes, put together
        from its parts: the fixed text, each string as the encoder writes a string, the version
        as it writes an int, and only `data` through the encoder."""
        data = self.data
        return (
            "".join(
                (
                    _LINE_HEAD,
                    _encode_str(self.op),
                    ',"resource":',
                    _encode_str(self.resource),
                    ',"owner":',
                    _encode_str(self.owner),
                    ',"id":',
                    _encode_str(self.id),
                    ',"version":',
                    int.__repr__(self.version),
                    ',"op_id":',
                    _encode_str(self.op_id),
                    ',"at":',
                    _encode_str(self.at),
                    ',"data":',
                    "null" if data is None else _encode_line(data),
                    "}\n",
                )
            )
        ).encode("utf-8")


# json.dumps(body, ensure_ascii=False, separators=(",", ":")) without a new encoder per call. The
# loader's line lanes (chalicelib.loader.lanes) read exactly this layout.
_encode_line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_str = json.encoder.encode_basestring  # a str as that encoder writes it (ensure_ascii=False)
_LINE_HEAD = '{"v":' + str(SCHEMA_VERSION) + ',"op":'


def make_command(
    op: str, resource: str, owner: str, id_: str, version: int, op_id: str, data: dict[str, Any] | None
) -> WriteCommand:
    at = version_to_ts(version)  # always YYYY-MM-DDTHH:MM:SS.ffffffZ: the stored form is a slice of it
    return new_command(op, resource, owner, id_, version, op_id, at, data, at[:10] + " " + at[11:26])


# `at` exactly as version_to_ts writes it: UTC, microseconds, Z. ASCII digits only ([0-9], not \d).
# Checked in two parts: "YYYY-MM-DDTHH:" (a real date and hour, remembered once seen: a delivered
# object spans a few hours at most) and "MM:SS.ffffffZ".
_AT_HEAD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:")
_AT_TAIL = re.compile(r"[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z")
KNOWN_HOURS: set[str] = set()
_KNOWN_HOURS_MAX = 10000


def canonical_stored_ts(at: str) -> str | None:
    """stored_ts of an `at` in the canonical form, by slicing; None when not plainly canonical."""
    if len(at) != 27:
        return None
    head = at[:14]
    if head not in KNOWN_HOURS:
        if head < "1970" or _AT_HEAD.fullmatch(head) is None:
            return None
        try:
            datetime.fromisoformat(head + "00")  # a real calendar day and hour of day
        except ValueError:
            return None
        if len(KNOWN_HOURS) >= _KNOWN_HOURS_MAX:
            KNOWN_HOURS.clear()
        KNOWN_HOURS.add(head)
    if _AT_TAIL.fullmatch(at, 14) is None:
        return None
    return at[:10] + " " + at[11:26]


def stored_ts(at: str) -> str:
    """A command's `at` in the fixed-width form the tables keep: YYYY-MM-DD HH:MM:SS.ffffff (UTC).

    Fixed width makes the text order the time order, in SQLite as in MySQL's DATETIME(6).
    """
    fast = canonical_stored_ts(at)
    if fast is not None:
        return fast
    return _parsed_stored_ts(at)


def _parsed_stored_ts(at: str) -> str:
    """stored_ts by parsing any RFC 3339 spelling (the reference path)."""
    if not at.isascii():  # ASCII digits only (parse_rfc3339's \d would take other scripts' digits)
        raise ValueError("at must be an RFC 3339 date-time in ASCII digits")
    try:
        moment = parse_rfc3339(at)
    except ValueError as exc:
        raise ValueError(f"at {exc}") from exc
    if not 1970 <= moment.year <= 9999:
        raise ValueError("at must be between 1970 and 9999")
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def owner_ok(owner: object) -> bool:
    return (
        isinstance(owner, str) and 0 < len(owner) <= MAX_OWNER_CHARS and owner.isprintable() and owner.strip() == owner
    )


def _slot_setters() -> tuple[Any, ...]:
    names = tuple(f.name for f in fields(WriteCommand))
    assert names == WriteCommand.__slots__ and len(names) == 9, "WriteCommand's fields changed: update new_command"
    return tuple(getattr(WriteCommand, name).__set__ for name in names)


_SET_OP, _SET_RESOURCE, _SET_OWNER, _SET_ID, _SET_VERSION, _SET_OP_ID, _SET_AT, _SET_DATA, _SET_STORED_AT = (
    _slot_setters()
)


_new_object = object.__new__


def new_command(
    op: str, resource: str, owner: str, id_: str, version: int, op_id: str, at: str, data: Any, stored_at: str
) -> WriteCommand:
    """WriteCommand(...) for the loader's hot path: the same object, its slots filled directly
    (the frozen dataclass's __init__ goes through object.__setattr__ once per field)."""
    command = _new_object(WriteCommand)
    _SET_OP(command, op)
    _SET_RESOURCE(command, resource)
    _SET_OWNER(command, owner)
    _SET_ID(command, id_)
    _SET_VERSION(command, version)
    _SET_OP_ID(command, op_id)
    _SET_AT(command, at)
    _SET_DATA(command, data)
    _SET_STORED_AT(command, stored_at)
    return command


KNOWN_OWNERS: set[str] = set()  # owners already seen to pass owner_ok (bounded below)
_KNOWN_OWNERS_MAX = 100000


def remember_owner(owner: str) -> bool:
    """owner_ok, and if so the owner is remembered (the hot paths test `in KNOWN_OWNERS` first)."""
    if not owner_ok(owner):
        return False
    if len(KNOWN_OWNERS) >= _KNOWN_OWNERS_MAX:
        KNOWN_OWNERS.clear()
    KNOWN_OWNERS.add(owner)
    return True
