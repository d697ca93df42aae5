"""Write commands: what travels through Firehose and S3 (CONTRACT section 4).

One command is one JSON object on one line ending in a newline. The loader side (`parse_object`)
accepts what Firehose really delivers: GZIP or not (by content), lines with several commands
concatenated, blank lines, and lines that are not commands at all (returned as rejects).
"""

from __future__ import annotations

import gc
import json
import re
import zlib
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, BinaryIO

from chalicelib.config import DEFAULT_LOADER_MAX_OBJECT_BYTES
from chalicelib.identity import MAX_SUB_CHARS
from chalicelib.ids import CANONICAL_UUID, MAX_VERSION, is_canonical_uuid, parse_rfc3339, version_to_ts
from chalicelib.models import (
    NOTES_MAX,
    STATES,
    TAG,
    TAGS_MAX,
    TITLE_MAX,
    TITLE_MIN,
    TODO_FIELDS,
    VALIDATORS,
    Invalid,
    _canonical_due_at,
    _known_due,
    _todo_fast,
)
from chalicelib.resources import RESOURCES

OPS = ("put", "delete")
COMMAND_KEYS = frozenset(("v", "op", "resource", "owner", "id", "version", "op_id", "at", "data"))
MAX_OWNER_CHARS = MAX_SUB_CHARS  # a command's owner is a caller's sub
# Firehose's largest buffer is 128 MiB; the loader refuses objects that inflate beyond twice that
# (LOADER_MAX_OBJECT_BYTES sets it per process).
MAX_OBJECT_BYTES = DEFAULT_LOADER_MAX_OBJECT_BYTES
# One command is at most about 64 KiB (10,000 characters of notes, each at most six bytes escaped);
# a longer line is a reject, and only its start is read into memory.
MAX_LINE_BYTES = 1024 * 1024
MAX_REJECT_LINE_CHARS = 2000
MAX_REJECT_LINE_BYTES = 4 * MAX_REJECT_LINE_CHARS


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
        """The command's line. A todo's is written here by hand (the POST benchmark row runs on it);
        any other resource's by the reference encoder, dataclasses-json (chalicelib.wire), which
        tests/unit/test_wire.py holds the hand-made form to, byte for byte."""
        if self.resource != "todos":
            from chalicelib.wire import encode

            return encode(self)
        body = {
            "v": 1,
            "op": self.op,
            "resource": self.resource,
            "owner": self.owner,
            "id": self.id,
            "version": self.version,
            "op_id": self.op_id,
            "at": self.at,
            "data": self.data,
        }
        return _encode_line(body).encode("utf-8") + b"\n"


# json.dumps(body, ensure_ascii=False, separators=(",", ":")) without a new encoder per call. The
# loader's line lane (_TODO_LINE) reads exactly this layout.
_encode_line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def make_command(
    op: str, resource: str, owner: str, id_: str, version: int, op_id: str, data: dict[str, Any] | None
) -> WriteCommand:
    at = version_to_ts(version)  # always YYYY-MM-DDTHH:MM:SS.ffffffZ: the stored form is a slice of it
    return WriteCommand(op, resource, owner, id_, version, op_id, at, data, f"{at[:10]} {at[11:26]}")


@dataclass(frozen=True, slots=True)
class Reject:
    line_no: int
    reason: str
    line: str


def _reject(number: int, reason: str, line: str) -> Reject:
    """A reject whose reason and text are always storable (valid UTF-8: see `storable`), clipped.
    Both may hold what the line held: the reason names a line's unknown keys, for one."""
    text = storable(line)
    if len(text) > MAX_REJECT_LINE_CHARS:
        text = text[:MAX_REJECT_LINE_CHARS] + "..."
    return Reject(number, storable(reason)[:500], text)


def storable(text: str) -> str:
    """`text` as valid UTF-8, for MySQL's utf8mb4 and SQLite: unchanged when it already is;
    otherwise each lone surrogate U+DC80..U+DCFF (how surrogateescape decodes a byte that was not
    UTF-8) becomes that byte, written `\\xNN` where not UTF-8, and any other lone surrogate
    `\\udNNN`."""
    if text.isascii() or _is_utf8(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the object's own bytes back
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


# `at` exactly as version_to_ts writes it: UTC, microseconds, Z. ASCII digits only ([0-9], not \d).
# Checked in two parts: "YYYY-MM-DDTHH:" (a real date and hour, remembered once seen: a delivered
# object spans a few hours at most) and "MM:SS.ffffffZ".
_AT_HEAD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:")
_AT_TAIL = re.compile(r"[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z")
_known_hours: set[str] = set()
_KNOWN_HOURS_MAX = 10000


def _canonical_stored_ts(at: str) -> str | None:
    """stored_ts of an `at` in the canonical form, by slicing; None when not plainly canonical."""
    if len(at) != 27:
        return None
    head = at[:14]
    if head not in _known_hours:
        if head < "1970" or _AT_HEAD.fullmatch(head) is None:
            return None
        try:
            datetime.fromisoformat(head + "00")  # a real calendar day and hour of day
        except ValueError:
            return None
        if len(_known_hours) >= _KNOWN_HOURS_MAX:
            _known_hours.clear()
        _known_hours.add(head)
    if _AT_TAIL.fullmatch(at, 14) is None:
        return None
    return at[:10] + " " + at[11:26]


def stored_ts(at: str) -> str:
    """A command's `at` in the fixed-width form the tables keep: YYYY-MM-DD HH:MM:SS.ffffff (UTC).

    Fixed width makes the text order the time order, in SQLite as in MySQL's DATETIME(6).
    """
    fast = _canonical_stored_ts(at)
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


def _owner_ok(owner: object) -> bool:
    return (
        isinstance(owner, str) and 0 < len(owner) <= MAX_OWNER_CHARS and owner.isprintable() and owner.strip() == owner
    )


def _slot_setters() -> tuple[Any, ...]:
    names = tuple(f.name for f in fields(WriteCommand))
    assert names == WriteCommand.__slots__ and len(names) == 9, "WriteCommand's fields changed: update _new_command"
    return tuple(getattr(WriteCommand, name).__set__ for name in names)


_SET_OP, _SET_RESOURCE, _SET_OWNER, _SET_ID, _SET_VERSION, _SET_OP_ID, _SET_AT, _SET_DATA, _SET_STORED_AT = (
    _slot_setters()
)
_new_object = object.__new__


def _new_command(
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


_TWO_UUIDS = re.compile(CANONICAL_UUID.pattern * 2)  # a todo's id and op_id, checked in one call
_known_owners: set[str] = set()  # owners already seen to pass _owner_ok (bounded below)
_KNOWN_OWNERS_MAX = 100000


def _remember_owner(owner: str) -> bool:
    """_owner_ok, and if so the owner is remembered (the hot paths test `in _known_owners` first)."""
    if not _owner_ok(owner):
        return False
    if len(_known_owners) >= _KNOWN_OWNERS_MAX:
        _known_owners.clear()
    _known_owners.add(owner)
    return True


def _fast_command(raw: dict[str, Any]) -> WriteCommand | None:
    """command_from_dict for a command that is plainly valid, checked cheaply. None means: not
    sure, take the full path (which then gives the reason, or the same command)."""
    if raw.keys() != COMMAND_KEYS:
        return None
    v, op, resource, owner = raw["v"], raw["op"], raw["resource"], raw["owner"]
    if type(v) is not int or v != 1 or type(op) is not str or type(resource) is not str or type(owner) is not str:
        return None
    if op != "put" and op != "delete":
        return None
    if owner not in _known_owners and not _remember_owner(owner):
        return None
    id_, version, op_id, at, data = raw["id"], raw["version"], raw["op_id"], raw["at"], raw["data"]
    if type(op_id) is not str or len(op_id) != 36:
        return None
    if resource == "todos":
        if type(id_) is not str or len(id_) != 36 or _TWO_UUIDS.fullmatch(id_ + op_id) is None:
            return None
    elif resource != "profiles" or id_ != owner or CANONICAL_UUID.fullmatch(op_id) is None:
        return None
    if type(version) is not int or not 0 < version <= MAX_VERSION:
        return None
    if type(at) is not str:
        return None
    at_norm = _canonical_stored_ts(at)
    if at_norm is None:
        return None
    if op == "delete":
        if data is not None:
            return None
    elif resource == "todos":
        if type(data) is not dict:
            return None
        data = _todo_fast(data)
        if data is None:
            return None
    else:
        try:
            data = VALIDATORS[resource](data)
        except Invalid:
            return None
    return _new_command(op, resource, owner, id_, version, op_id, at, data, at_norm)


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


def command_from_dict(raw: Any) -> WriteCommand:
    """Validate one decoded command. Raises ValueError with a reason."""
    if type(raw) is dict:
        fast = _fast_command(raw)
        if fast is not None:
            return fast
    return _checked_command(raw)


def _checked_command(raw: Any) -> WriteCommand:
    """Every check in order, with the reason of the first that fails (the reference path)."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    extra = raw.keys() - COMMAND_KEYS
    if extra:
        raise ValueError(f"unknown keys: {', '.join(sorted(map(str, extra)))[:200]}")
    if raw.get("v") != 1 or isinstance(raw.get("v"), bool):
        raise ValueError("v must be 1")
    op, resource, owner, id_ = raw.get("op"), raw.get("resource"), raw.get("owner"), raw.get("id")
    if op not in OPS or not isinstance(op, str):
        raise ValueError("op must be 'put' or 'delete'")
    declared = RESOURCES.get(resource) if isinstance(resource, str) else None
    if declared is None:
        raise ValueError("resource must be " + " or ".join(repr(name) for name in RESOURCES))
    if not _owner_ok(owner):
        raise ValueError(f"owner must be a printable string of 1 to {MAX_OWNER_CHARS} characters")
    if declared.by_id:
        if not is_canonical_uuid(id_):
            raise ValueError("id must be a canonical UUID")
    elif id_ != owner:
        raise ValueError(f"the id of a {resource} command must equal its owner")
    version = raw.get("version")
    if type(version) is not int or not 0 < version <= MAX_VERSION:
        raise ValueError("version must be an integer from 1 to 2**53-1")
    op_id = raw.get("op_id")
    if not is_canonical_uuid(op_id):
        raise ValueError("op_id must be a canonical UUID")
    at = raw.get("at")
    if not isinstance(at, str):
        raise ValueError("at must be an RFC 3339 date-time")
    at_norm = stored_ts(at)
    data = raw.get("data")
    if op == "delete":
        if data is not None:
            raise ValueError("data must be null for a delete")
    else:
        try:
            data = VALIDATORS[declared.name](data)
        except Invalid as exc:
            raise ValueError(f"invalid data: {exc}"[:500]) from exc
    return WriteCommand(op, resource, owner, id_, version, op_id, at, data, at_norm)  # type: ignore[arg-type]


class ObjectTooLarge(Exception):
    """The object inflates beyond the loader's limit (LOADER_MAX_OBJECT_BYTES): refused whole."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the object inflates beyond LOADER_MAX_OBJECT_BYTES ({limit} bytes); not applied")
        self.limit = limit


_TOO_LARGE = "inflated size over the limit"
_MAGIC = b"\x1f\x8b"
_PADDING = b"\x00\n\r\t "  # what may follow the last GZIP member
READ_BYTES = 1 << 20  # how much of a stream's compressed bytes is read at a time


def inflate(body: bytes, piece: int = 1 << 20, limit: int = MAX_OBJECT_BYTES) -> tuple[bytes, str | None]:
    """GZIP (one or more members, recognised by content) to bytes; plain bytes unchanged.

    Returns (data, problem): on a corrupt or oversized stream, what inflated cleanly (in pieces of
    at most `piece` bytes; the piece the damage is found in is lost) and why the rest was not used.
    """
    steps = _inflate_steps(body, piece, limit)
    pieces: list[bytes] = []
    while True:
        try:
            pieces.append(next(steps))
        except StopIteration as stop:
            problem: str | None = stop.value
            break
    return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), problem


def _raw_pieces(source: bytes | BinaryIO, size: int) -> Iterator[bytes]:
    """The object's bytes as they are read: slices of `size` of bytes in memory, or reads of a stream."""
    if isinstance(source, bytes):
        if len(source) <= size:
            yield source
            return
        view = memoryview(source)
        for start in range(0, len(source), size):
            yield bytes(view[start : start + size])
        return
    while True:
        chunk = source.read(size)
        if not chunk:
            return
        yield chunk


def _inflate_steps(
    source: bytes | BinaryIO, piece: int = 1 << 20, limit: int = MAX_OBJECT_BYTES
) -> Generator[bytes, None, str | None]:
    """inflate() piece by piece, reading `source` (bytes, or a binary stream read once) only as
    far as needed: yields the bytes as they inflate (at most `piece` at a time), returns the
    problem (or None; _TOO_LARGE once more than `limit` bytes came out)."""
    raw = _raw_pieces(source, READ_BYTES)
    rest = b""
    for chunk in raw:  # enough to tell GZIP by its first two bytes
        rest += chunk
        if len(rest) >= 2:
            break
    size = 0
    if rest[:2] != _MAGIC:  # plain: the bytes as they are, in pieces
        while rest:
            for start in range(0, len(rest), piece):
                out = rest[start : start + piece] if start or len(rest) > piece else rest
                size += len(out)
                if size > limit:
                    return _TOO_LARGE
                yield out
            rest = next(raw, b"")
        return None
    while True:  # one GZIP member per turn; `rest` starts with its magic
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                out = inflater.decompress(rest, piece)
                rest = inflater.unconsumed_tail
                if out:
                    size += len(out)
                    if size > limit:
                        return _TOO_LARGE
                    yield out
                if not rest and len(out) < piece and not inflater.eof:  # all input taken, none held back
                    rest = next(raw, b"")
                    if not rest:
                        break
        except zlib.error as exc:
            return f"corrupt gzip stream: {exc}"
        if not inflater.eof:
            return "truncated gzip stream"
        rest = inflater.unused_data
        while len(rest) < 2:
            more = next(raw, None)
            if more is None:
                break
            rest += more
        if rest[:2] != _MAGIC:
            if rest.strip(_PADDING) or any(chunk.strip(_PADDING) for chunk in raw):
                return "trailing bytes after the gzip stream"
            return None


class LineStream:
    """A delivered object's lines (as object_lines gives them), inflated and split piece by piece
    as they are asked for, and let go once taken: memory holds one piece and the lines not yet
    taken, whatever the object's size (blank and rejected lines cost nothing once taken).

    `fill(n)` reads until at least n lines wait or the object ends (`done`; then `problem` is
    inflate's problem); `take(n)` hands out the next n, numbered from `first`. A line longer than
    `max_line` bytes is not kept: it counts as an empty line and its reject waits in `rejects`.
    Raises ObjectTooLarge once more than `limit` bytes have inflated.
    """

    PIECE = 256 * 1024

    def __init__(
        self,
        body: bytes | BinaryIO,
        piece: int = PIECE,
        limit: int = MAX_OBJECT_BYTES,
        max_line: int = MAX_LINE_BYTES,
    ) -> None:
        self._steps = _inflate_steps(body, piece, limit)
        self._limit = limit
        self._max_line = max_line
        self._carry: list[bytes] = []  # the bytes after the last newline so far (one line's start)
        self._carried = 0  # their length (the whole line's, once it is over max_line)
        self._lines: list[str] = []  # lines read; those before _next were taken
        self._next = 0
        self.first = 1  # the number of the next line `take` hands out
        self.rejects: list[Reject] = []
        self.done = False
        self.problem: str | None = None

    @property
    def waiting(self) -> int:
        """Lines read and not yet taken."""
        return len(self._lines) - self._next

    @property
    def count(self) -> int:
        """Lines read so far, taken or not."""
        return self.first - 1 + self.waiting

    def fill(self, count: int) -> int:
        """Read until `count` lines wait or the object ends; how many wait."""
        if self._next and self.waiting < count:  # let the taken lines go before reading on
            del self._lines[: self._next]
            self._next = 0
        lines, carry = self._lines, self._carry
        while len(lines) - self._next < count and not self.done:
            try:
                piece = next(self._steps)
            except StopIteration as stop:
                if stop.value is _TOO_LARGE:
                    raise ObjectTooLarge(self._limit) from None
                self.problem = stop.value
                self.done = True
                self._end_line(b"")
                break
            cut = piece.rfind(b"\n") + 1
            if not cut:  # no line ends here: keep the pieces, join them once (a long line costs linear time)
                self._carry_on(piece)
                continue
            if carry:
                end = piece.find(b"\n")
                self._end_line(piece[:end])
                data = piece[end + 1 : cut]
            else:
                data = piece[:cut]
            if cut < len(piece):
                self._carry_on(piece[cut:])
            if data:
                _split_into(lines, data)
        return len(lines) - self._next

    def take(self, count: int) -> tuple[int, list[str]]:
        """(number of the first, lines): up to `count` waiting lines, handed out and let go here."""
        start = self._next
        if start == 0 and count >= len(self._lines):
            batch, self._lines = self._lines, []
        else:
            batch = self._lines[start : start + count]
            self._next = start + len(batch)
        first = self.first
        self.first += len(batch)
        return first, batch

    def take_rejects(self) -> list[Reject]:
        rejects, self.rejects = self.rejects, []
        return rejects

    def _carry_on(self, part: bytes) -> None:
        before = self._carried
        self._carried += len(part)
        if self._carried <= self._max_line:
            self._carry.append(part)
        elif before <= self._max_line:  # the line just became too long: only its start is kept
            self._carry[:] = [b"".join([*self._carry, part])[:MAX_REJECT_LINE_BYTES]]

    def _end_line(self, tail: bytes) -> None:
        """The carried line ends with `tail`: append it (or, when too long, its reject)."""
        if self._carried + len(tail) > self._max_line:
            start = b"".join([*self._carry, tail[:MAX_REJECT_LINE_BYTES]])[:MAX_REJECT_LINE_BYTES]
            number = self.first + len(self._lines) - self._next
            self.rejects.append(_reject(number, f"line longer than {self._max_line} bytes", _decoded(start)))
            self._lines.append("")
        else:
            self._lines.append(_decoded(b"".join([*self._carry, tail]) if self._carry else tail))
        self._carry.clear()
        self._carried = 0

    def read_all(self) -> list[str]:
        """Every line of the object (tests and tools: the whole object in memory)."""
        while not self.done:
            self.fill(self.waiting + 1)
        return self.take(self.waiting)[1]


def _decoded(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def _split_into(lines: list[str], data: bytes) -> None:
    """Append the lines of `data` (which ends in a newline), decoded as object_lines does."""
    view = data[:-1]
    try:
        lines.extend(view.decode("utf-8").split("\n"))
    except UnicodeDecodeError:
        lines.extend(raw.decode("utf-8", "surrogateescape") for raw in view.split(b"\n"))


_decoder = json.JSONDecoder()
_scan_once = _decoder.scan_once  # type: ignore[attr-defined]
_loads = json.loads
_WS = " \t\r\n"
_BLANK = " \t\r"  # what a blank line may hold: JSON whitespace (a line holds no newline)


def _split_concatenated(text: str) -> Iterator[Any]:
    """Decode `{...}{...} {...}` (commands with no delimiter between them). ValueError if not."""
    index, end = 0, len(text)
    while index < end:
        while index < end and text[index] in _WS:
            index += 1
        if index >= end:
            return
        value, index = _decoder.raw_decode(text, index)
        yield value


def object_lines(body: bytes) -> tuple[list[str], str | None]:
    """A delivered object's text split into lines (inflated first), and any inflate problem.
    A line that is not UTF-8 is decoded with surrogateescape (and rejected as not UTF-8)."""
    stream = LineStream(body)
    return stream.read_all(), stream.problem


def problem_reject(number: int, problem: str) -> Reject:
    """The reject recorded after the last line (`number`) when the object did not inflate cleanly."""
    return _reject(number, problem, "")


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while tens of thousands of small dicts are made: the
    collector would otherwise walk them over and over (about a third of parse time). Nothing
    made here is cyclic. Leaves the collector as it found it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_lines(
    lines: list[str],
    start: int = 0,
    stop: int | None = None,
    heads: dict[int, str] | None = None,
    first: int = 1,
) -> tuple[list[WriteCommand], list[Reject]]:
    """The commands in lines[start:stop] and the lines there that are not commands (numbered
    from `first` for lines[0]). With `heads`, commands read by the todo line lane get their row
    head there (see _todo_from_line)."""
    commands: list[WriteCommand] = []
    rejects: list[Reject] = []
    append = commands.append
    scan = _scan_once
    todo_line = _todo_from_line
    stop = len(lines) if stop is None else stop
    with gc_paused():
        for number in range(start + first, stop + first):
            line = lines[number - first]
            if not line:
                continue
            if line[0] == "{":
                command = todo_line(line, heads)
                if command is not None:
                    append(command)
                    continue
                # One object filling the whole line (the usual case): decode it with the scanner
                # json.loads itself ends in; anything else takes the full path below.
                try:
                    raw, end = scan(line, 0)
                except Exception:  # noqa: BLE001 - the full path below finds and reports the problem
                    end = -1
                if end == len(line):
                    try:
                        append(command_from_dict(raw))
                    except ValueError as exc:
                        rejects.append(_reject(number, str(exc), line))
                    continue
            elif line[0] in _BLANK and not line.strip(_BLANK):
                continue  # JSON whitespace only; other Unicode whitespace is not blank (a reject)
            _parse_line_slowly(number, line, append, rejects)
    return commands, rejects


def _parse_line_slowly(number: int, line: str, append: Any, rejects: list[Reject]) -> None:
    try:
        raw = _loads(line)
    except RecursionError:
        rejects.append(_reject(number, "nested too deeply", line))
        return
    except ValueError:
        if not _is_utf8(line):
            rejects.append(_reject(number, "not UTF-8", line))
            return
        try:
            values = list(_split_concatenated(line))
        except (ValueError, RecursionError) as exc:
            rejects.append(_reject(number, f"not JSON: {exc}", line))
            return
        for value in values:
            try:
                append(command_from_dict(value))
            except ValueError as exc:
                rejects.append(_reject(number, str(exc), json.dumps(value)[:MAX_REJECT_LINE_CHARS]))
        return
    try:
        append(command_from_dict(raw))
    except ValueError as exc:
        rejects.append(_reject(number, str(exc), line))


def parse_object(body: bytes) -> tuple[list[WriteCommand], list[Reject]]:
    """Every command in a delivered object, and every line that is not one (the whole object in
    memory: tests and tools; the loader reads a LineStream)."""
    stream = LineStream(body)
    commands: list[WriteCommand] = []
    rejects: list[Reject] = []
    for batch_commands, batch_rejects in parsed_batches(stream):
        commands.extend(batch_commands)
        rejects.extend(batch_rejects)
    return commands, rejects


def parsed_batches(
    stream: LineStream, size: int = 4000, heads: dict[int, str] | None = None
) -> Iterator[tuple[list[WriteCommand], list[Reject]]]:
    """The object's (commands, rejects) batch by batch, up to `size` lines each: lines too long
    and, at the end, the inflate problem (after the last line) included."""
    while stream.fill(size):
        first, lines = stream.take(size)
        commands, rejects = parse_lines(lines, heads=heads, first=first)
        if stream.rejects:
            rejects = sorted(rejects + stream.take_rejects(), key=_line_no)
        yield commands, rejects
    if stream.problem:
        yield [], [problem_reject(stream.count + 1, stream.problem)]


def _line_no(reject: Reject) -> int:
    return reject.line_no


def _is_utf8(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
