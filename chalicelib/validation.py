"""The checks the validators are made of (chalicelib.models generates them): `Invalid` and its
field errors, one check per rule kind with its messages (`check_text`, `check_choice`, ...), and
the fast path's helpers that remember what they have seen (`canonical_datetime`, `known_items`).
`is_utf8` says whether a string can be stored as UTF-8 (the loader asks it of every line).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from chalicelib.ids import CANONICAL_UUID, format_ts, parse_rfc3339
from chalicelib.resources import Rule

Fields = dict[str, list[str]]


class Invalid(Exception):
    """Validation failed; `fields` maps a field path to its messages."""

    def __init__(self, fields: Fields) -> None:
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items()))
        self.fields = fields


def add(errors: Fields, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def is_utf8(value: str) -> bool:
    """True when the string can be stored as UTF-8 (no lone surrogates from JSON escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def count_errors(errors: Fields) -> int:
    return sum(len(v) for v in errors.values())


def add_unknown(errors: Fields, prefix: str, body: dict[str, Any], known: frozenset[str]) -> None:
    for key in body:
        if key not in known:
            add(errors, prefix + str(key), "is not a known field")


# -- one rule kind each: the full path's checks, with their messages --------------------------------
def check_text(errors: Fields, path: str, value: Any, limits: Rule, pattern: re.Pattern[str] | None) -> str | None:
    low, high = limits.min_length, limits.max_length or 0
    if not isinstance(value, str):
        add(errors, path, "must be a string")
        return None
    if not is_utf8(value):
        add(errors, path, "must be valid Unicode text")
        return None
    if len(value) < low:
        add(errors, path, "is required" if low == 1 and not value else f"must be at least {low} characters")
        return None
    if len(value) > high:
        add(errors, path, f"must be at most {high} characters")
        return None
    if pattern is not None and pattern.fullmatch(value) is None:
        add(errors, path, limits.hint or f"must match ^{pattern.pattern}$")
    elif limits.known is not None and value not in limits.known():
        add(errors, path, limits.hint or "is not a known value")
    return value


def choices_text(choices: tuple[str, ...]) -> str:
    names = [repr(c) for c in choices]
    return " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)


def check_choice(errors: Fields, path: str, value: Any, limits: Rule) -> Any:
    if not isinstance(value, str) or value not in limits.choices:
        add(errors, path, "must be " + choices_text(limits.choices))
    return value


def check_integer(errors: Fields, path: str, value: Any, limits: Rule) -> Any:
    if type(value) is not int or not limits.minimum <= value <= limits.maximum:  # type: ignore[operator]
        add(errors, path, f"must be an integer from {limits.minimum} to {limits.maximum}")
    return value


def check_uuid(errors: Fields, path: str, value: Any, limits: Rule) -> Any:
    if value is None and limits.nullable:
        return None
    if not isinstance(value, str) or CANONICAL_UUID.fullmatch(value) is None:
        add(errors, path, "must be a canonical UUID (lowercase, hyphenated)" + (" or null" if limits.nullable else ""))
    return value


def check_strings(errors: Fields, path: str, value: Any, limits: Rule, pattern: re.Pattern[str]) -> list[str] | None:
    """A "list" field: at most max_items strings (distinct when unique), each matching the pattern."""
    noun = limits.noun
    if not isinstance(value, list):
        add(errors, path, "must be a list of strings")
        return None
    if len(value) > (limits.max_items or 0):
        add(errors, path, f"must hold at most {limits.max_items} {noun}s")
        return None
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or pattern.fullmatch(item) is None:
            add(errors, path, f"each {noun} must match ^{pattern.pattern}$")
            return None
        if limits.unique and item in seen:
            add(errors, path, f"must not repeat a {noun} ({item!r})")
            return None
        seen.add(item)
    return list(value)


def check_datetime(errors: Fields, path: str, value: Any, limits: Rule) -> str | None:
    if value is None and limits.nullable:
        return None
    if not isinstance(value, str) or len(value) > (limits.max_length or 64):
        add(errors, path, "must be an RFC 3339 date-time with an offset" + (", or null" if limits.nullable else ""))
        return None
    try:
        return format_ts(parse_rfc3339(value))
    except ValueError as exc:
        add(errors, path, str(exc))
        return None


# RFC 3339 in UTC with Z, whole seconds or microseconds: what format_ts itself produces.
_CANONICAL_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z")
KNOWN_DATETIMES: set[str] = set()  # date-times already seen to be canonical (bounded below)
_KNOWN_MAX = 10000


def canonical_datetime(value: str) -> str | None:
    """`value` when it is already the canonical form `check_datetime` would return; None when unsure."""
    if value in KNOWN_DATETIMES:
        return value
    if _CANONICAL_UTC.fullmatch(value) is None or value.endswith(".000000Z"):
        return None
    try:
        datetime.fromisoformat(value[:19])  # a real calendar date and time of day
    except ValueError:
        return None
    if len(KNOWN_DATETIMES) >= _KNOWN_MAX:
        KNOWN_DATETIMES.clear()
    KNOWN_DATETIMES.add(value)
    return value


def known_items(items: list[Any], known: set[str], pattern: re.Pattern[str]) -> bool:
    """Whether every item is a string matching `pattern`; those seen to match are remembered in
    `known` (bounded), so the next line's tags are one set lookup each."""
    for item in items:
        if type(item) is not str:
            return False
        if item not in known:
            if pattern.fullmatch(item) is None:
                return False
            if len(known) >= _KNOWN_MAX:
                known.clear()
            known.add(item)
    return True
