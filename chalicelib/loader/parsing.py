"""Parsing a delivered object's lines into commands and rejects (CONTRACT sections 4 and 5).

Three paths give the same answers: the line lanes (`lanes`, one regular expression per resource
and schema version), a cheap check of a decoded command that is plainly valid (`_fast_command`),
and the reference checks in order, which give the reason of the first that fails
(`_checked_command`). Lines may hold several commands concatenated, blank lines are skipped, and
anything else that is not a command is a reject.

Every path reads `v` (the command schema version) first: a version older than this release's is
validated as that version wrote it (its documents then take the newer fields' defaults); a version
newer than every one this release knows raises `Deferred` (chalicelib/loader/deferral.py), whatever
the rest of the line holds, and the loader leaves the whole object for later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from chalicelib.commands import (
    COMMAND_KEYS,
    KNOWN_OWNERS,
    MAX_OWNER_CHARS,
    OPS,
    WriteCommand,
    canonical_stored_ts,
    new_command,
    owner_ok,
    remember_owner,
    stored_ts,
)
from chalicelib.ids import CANONICAL_UUID, MAX_VERSION, is_canonical_uuid
from chalicelib.loader import lanes
from chalicelib.loader.deferral import newer_version
from chalicelib.loader.gc_pause import gc_paused
from chalicelib.loader.reject_lines import MAX_REJECT_LINE_CHARS, Reject, line_no_of, reject_line
from chalicelib.loader.streaming import LineStream
from chalicelib.models import Invalid, fast_validator, validator
from chalicelib.resources import RESOURCES, SCHEMA_VERSION
from chalicelib.validation import is_utf8

_TWO_UUIDS = re.compile(CANONICAL_UUID.pattern * 2)  # a command's id and op_id, checked in one call


def _fast_command(raw: dict[str, Any]) -> WriteCommand | None:
    """command_from_dict for a command that is plainly valid, checked cheaply. None means: not
    sure, take the full path (which then gives the reason, the same command, or a deferral)."""
    if raw.keys() != COMMAND_KEYS:
        return None
    v, op, resource, owner = raw["v"], raw["op"], raw["resource"], raw["owner"]
    if type(v) is not int or type(op) is not str or type(resource) is not str or type(owner) is not str:
        return None
    if op != "put" and op != "delete":
        return None
    declared = RESOURCES.get(resource)
    if declared is None or not declared.since <= v <= SCHEMA_VERSION:
        return None
    if owner not in KNOWN_OWNERS and not remember_owner(owner):
        return None
    id_, version, op_id, at, data = raw["id"], raw["version"], raw["op_id"], raw["at"], raw["data"]
    if type(op_id) is not str or len(op_id) != 36:
        return None
    if declared.by_id:
        if type(id_) is not str or len(id_) != 36 or _TWO_UUIDS.fullmatch(id_ + op_id) is None:
            return None
    elif id_ != owner or CANONICAL_UUID.fullmatch(op_id) is None:
        return None
    if type(version) is not int or not 0 < version <= MAX_VERSION:
        return None
    if type(at) is not str:
        return None
    at_norm = canonical_stored_ts(at)
    if at_norm is None:
        return None
    if op == "delete":
        if data is not None:
            return None
    else:
        if type(data) is not dict:
            return None
        data = fast_validator(resource, v)(data)
        if data is None:
            return None
    return new_command(op, resource, owner, id_, version, op_id, at, data, at_norm)


def command_from_dict(raw: Any) -> WriteCommand:
    """Validate one decoded command. Raises ValueError with a reason, or Deferred."""
    if type(raw) is dict:
        fast = _fast_command(raw)
        if fast is not None:
            return fast
    return _checked_command(raw)


def _checked_command(raw: Any) -> WriteCommand:
    """Every check in order, with the reason of the first that fails (the reference path). `v`
    comes first: newer than this release's raises Deferred, whatever else the command holds."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    v = raw.get("v")
    if type(v) is int and v > SCHEMA_VERSION:
        raise newer_version(v)
    extra = raw.keys() - COMMAND_KEYS
    if extra:
        raise ValueError(f"unknown keys: {', '.join(sorted(map(str, extra)))[:200]}")
    if type(v) is not int or v < 1:
        raise ValueError("v must be a positive integer (the command schema version)")
    op, resource, owner, id_ = raw.get("op"), raw.get("resource"), raw.get("owner"), raw.get("id")
    if op not in OPS or not isinstance(op, str):
        raise ValueError("op must be 'put' or 'delete'")
    declared = RESOURCES.get(resource) if isinstance(resource, str) else None
    if declared is None or declared.since > v:
        known = " or ".join(repr(name) for name, r in RESOURCES.items() if r.since <= v)
        raise ValueError(f"resource must be {known} (command schema version {v})")
    if not owner_ok(owner):
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
            data = validator(declared.name, v)(data)
        except Invalid as exc:
            raise ValueError(f"invalid data: {exc}"[:500]) from exc
    return WriteCommand(op, resource, owner, id_, version, op_id, at, data, at_norm)  # type: ignore[arg-type]


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


def parse_lines(
    lines: list[str],
    start: int = 0,
    stop: int | None = None,
    heads: dict[int, str] | None = None,
    first: int = 1,
) -> tuple[list[WriteCommand], list[Reject]]:
    """The commands in lines[start:stop] and the lines there that are not commands (numbered
    from `first` for lines[0]). With `heads`, commands read by a line lane get their row head
    there (see lanes.from_line). Raises Deferred for a command of a newer schema version."""
    commands: list[WriteCommand] = []
    rejects: list[Reject] = []
    append = commands.append
    scan = _scan_once
    first_lane, *other_lanes = lanes.ordered() or (_no_lane,)
    stop = len(lines) if stop is None else stop
    with gc_paused():
        for number in range(start + first, stop + first):
            line = lines[number - first]
            if not line:
                continue
            if line[0] == "{":
                command = first_lane(line, heads)
                if command is None and other_lanes:
                    for lane in other_lanes:
                        command = lane(line, heads)
                        if command is not None:
                            break
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
                        rejects.append(reject_line(number, str(exc), line))
                    continue
            elif line[0] in _BLANK and not line.strip(_BLANK):
                continue  # JSON whitespace only; other Unicode whitespace is not blank (a reject)
            _parse_line_slowly(number, line, append, rejects)
    return commands, rejects


def _no_lane(line: str, heads: dict[int, str] | None = None) -> WriteCommand | None:
    return None


def _parse_line_slowly(number: int, line: str, append: Any, rejects: list[Reject]) -> None:
    try:
        raw = _loads(line)
    except RecursionError:
        rejects.append(reject_line(number, "nested too deeply", line))
        return
    except ValueError:
        if not is_utf8(line):
            rejects.append(reject_line(number, "not UTF-8", line))
            return
        try:
            values = list(_split_concatenated(line))
        except (ValueError, RecursionError) as exc:
            rejects.append(reject_line(number, f"not JSON: {exc}", line))
            return
        for value in values:
            try:
                append(command_from_dict(value))
            except ValueError as exc:
                rejects.append(reject_line(number, str(exc), json.dumps(value)[:MAX_REJECT_LINE_CHARS]))
        return
    try:
        append(command_from_dict(raw))
    except ValueError as exc:
        rejects.append(reject_line(number, str(exc), line))


def parse_object(body: bytes) -> tuple[list[WriteCommand], list[Reject]]:
    """Every command in a delivered object, and every line that is not one (the whole object in
    memory: tests and tools; the loader reads a LineStream)."""
    stream = LineStream(body)
    commands: list[WriteCommand] = []
    rejects: list[Reject] = []
    for batch_commands, batch_rejects in parsed_batches(stream):
        commands.extend(batch_commands)
        rejects.extend(batch_rejects)
    problem = stream.problem_reject()
    return commands, rejects + ([problem] if problem else [])


def parsed_batches(
    stream: LineStream, size: int = 4000, heads: dict[int, str] | None = None
) -> Iterator[tuple[list[WriteCommand], list[Reject]]]:
    """The object's (commands, rejects) batch by batch, up to `size` lines each, lines too long
    included. The inflate problem is not: the loader records it once, whatever path the object
    took (`LineStream.problem_reject`)."""
    while stream.fill(size):
        first, lines = stream.take(size)
        commands, rejects = parse_lines(lines, heads=heads, first=first)
        if stream.rejects:
            rejects = sorted(rejects + stream.take_rejects(), key=line_no_of)
        yield commands, rejects
