"""Write commands: what travels through Firehose and S3 (CONTRACT section 4).

One command is one JSON object on one line ending in a newline. The loader side (`parse_object`)
accepts what Firehose really delivers: GZIP or not (by content), lines with several commands
concatenated, blank lines, and lines that are not commands at all (returned as rejects).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chalicelib.ids import MAX_VERSION, is_canonical_uuid, parse_rfc3339, version_to_ts
from chalicelib.models import VALIDATORS, Invalid

RESOURCES = ("todos", "profiles")
OPS = ("put", "delete")
COMMAND_KEYS = frozenset(("v", "op", "resource", "owner", "id", "version", "op_id", "at", "data"))
MAX_OWNER_CHARS = 128
# Firehose's largest buffer is 128 MiB; anything that inflates far beyond is not ours.
MAX_INFLATED_BYTES = 1024 * 1024 * 1024
MAX_REJECT_LINE_CHARS = 2000


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

    @property
    def order(self) -> tuple[int, str]:
        return (self.version, self.op_id)

    def to_line(self) -> bytes:
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
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def make_command(
    op: str, resource: str, owner: str, id_: str, version: int, op_id: str, data: dict[str, Any] | None
) -> WriteCommand:
    at = version_to_ts(version)
    return WriteCommand(op, resource, owner, id_, version, op_id, at, data, stored_ts(at))


@dataclass(frozen=True, slots=True)
class Reject:
    line_no: int
    reason: str
    line: str


def _reject(number: int, reason: str, line: str) -> Reject:
    """A reject whose text is always storable: valid UTF-8, clipped."""
    text = line if _is_utf8(line) else _printable(line)
    if len(text) > MAX_REJECT_LINE_CHARS:
        text = text[:MAX_REJECT_LINE_CHARS] + "..."
    return Reject(number, reason[:500], text)


def stored_ts(at: str) -> str:
    """A command's `at` in the fixed-width form the tables keep: YYYY-MM-DD HH:MM:SS.ffffff (UTC).

    Fixed width makes the text order the time order, in SQLite as in MySQL's DATETIME(6).
    """
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


def command_from_dict(raw: Any) -> WriteCommand:
    """Validate one decoded command. Raises ValueError with a reason."""
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
    if resource not in RESOURCES or not isinstance(resource, str):
        raise ValueError("resource must be 'todos' or 'profiles'")
    if not _owner_ok(owner):
        raise ValueError("owner must be a printable string of 1 to 128 characters")
    if resource == "todos":
        if not is_canonical_uuid(id_):
            raise ValueError("id must be a canonical UUID")
    elif id_ != owner:
        raise ValueError("a profile's id must equal its owner")
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
            data = VALIDATORS[resource](data)
        except Invalid as exc:
            raise ValueError(f"invalid data: {exc}"[:500]) from exc
    return WriteCommand(op, resource, owner, id_, version, op_id, at, data, at_norm)  # type: ignore[arg-type]


def inflate(body: bytes) -> tuple[bytes, str | None]:
    """GZIP (one or more members, recognised by content) to bytes; plain bytes unchanged.

    Returns (data, problem): on a corrupt or oversized stream, what inflated cleanly and why the
    rest was not used.
    """
    if body[:2] != b"\x1f\x8b":
        return body, None
    out: list[bytes] = []
    size = 0
    rest = body
    while rest[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                chunk = inflater.decompress(rest, 1 << 20)
                size += len(chunk)
                out.append(chunk)
                if size > MAX_INFLATED_BYTES:
                    return b"".join(out)[:MAX_INFLATED_BYTES], "inflated size over the limit"
                rest = inflater.unconsumed_tail
                if inflater.eof or not rest:
                    break
        except zlib.error as exc:
            return b"".join(out), f"corrupt gzip stream: {exc}"
        if not inflater.eof:
            return b"".join(out), "truncated gzip stream"
        rest = inflater.unused_data
    if rest.strip(b"\x00\n\r\t "):
        return b"".join(out), "trailing bytes after the gzip stream"
    return b"".join(out), None


_decoder = json.JSONDecoder()
_loads = json.loads
_WS = " \t\r\n"


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


def parse_object(body: bytes) -> tuple[list[WriteCommand], list[Reject]]:
    """Every command in a delivered object, and every line that is not one."""
    data, problem = inflate(body)
    commands: list[WriteCommand] = []
    rejects: list[Reject] = []
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = [raw.decode("utf-8", "surrogateescape") for raw in data.split(b"\n")]
    append = commands.append
    for number, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        try:
            raw = _loads(line)
        except RecursionError:
            rejects.append(_reject(number, "nested too deeply", line))
            continue
        except ValueError:
            if not _is_utf8(line):
                rejects.append(_reject(number, "not UTF-8", line))
                continue
            try:
                values = list(_split_concatenated(line))
            except (ValueError, RecursionError) as exc:
                rejects.append(_reject(number, f"not JSON: {exc}", line))
                continue
            for value in values:
                try:
                    append(command_from_dict(value))
                except ValueError as exc:
                    rejects.append(_reject(number, str(exc), json.dumps(value)[:MAX_REJECT_LINE_CHARS]))
            continue
        try:
            append(command_from_dict(raw))
        except ValueError as exc:
            rejects.append(_reject(number, str(exc), line))
    if problem:
        rejects.append(_reject(len(lines) + 1, problem, ""))
    return commands, rejects


def _is_utf8(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(line: str) -> str:
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
