"""The resources as written: validation with field-level errors (CONTRACT section 3).

Untrusted input (request bodies, and the `data` of write commands read back by the loader) goes
through the same validators, which check types, lengths and formats, reject unknown fields and
fill defaults. They are written out by hand rather than with dataclasses-json/marshmallow: the
loader validates tens of thousands of commands per second, and the API must not pay marshmallow's
import time on a cold start (README, "Dependencies").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from chalicelib.ids import format_ts, parse_rfc3339

Fields = dict[str, list[str]]

TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# RFC 5646 language tags, well-formed (not checked against the registry).
BCP47 = re.compile(
    r"(?:(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*"
    r"(?:-[Xx](?:-[A-Za-z0-9]{1,8})+)?"
    r"|[Xx](?:-[A-Za-z0-9]{1,8})+)"
)
TODO_FIELDS = ("title", "notes", "state", "tags", "due_at")
PROFILE_FIELDS = ("display_name", "locale", "timezone")
STATES = ("open", "done")


class Invalid(Exception):
    """Validation failed; `fields` maps a field path to its messages."""

    def __init__(self, fields: Fields) -> None:
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items()))
        self.fields = fields


def _add(errors: Fields, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def _is_text(value: str) -> bool:
    """True when the string can be stored as UTF-8 (no lone surrogates from JSON escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(errors: Fields, path: str, value: Any, low: int, high: int) -> str | None:
    if not isinstance(value, str):
        _add(errors, path, "must be a string")
        return None
    if not _is_text(value):
        _add(errors, path, "must be valid Unicode text")
        return None
    if len(value) < low:
        _add(errors, path, "is required" if low == 1 and not value else f"must be at least {low} characters")
        return None
    if len(value) > high:
        _add(errors, path, f"must be at most {high} characters")
        return None
    return value


def _unknown(errors: Fields, prefix: str, body: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in body:
        if key not in known:
            _add(errors, prefix + str(key), "is not a known field")


def _tags(errors: Fields, path: str, value: Any) -> list[str] | None:
    if not isinstance(value, list):
        _add(errors, path, "must be a list of strings")
        return None
    if len(value) > 20:
        _add(errors, path, "must hold at most 20 tags")
        return None
    seen: set[str] = set()
    ok = True
    for tag in value:
        if not isinstance(tag, str) or TAG.fullmatch(tag) is None:
            _add(errors, path, "each tag must match ^[a-z0-9][a-z0-9_-]{0,31}$")
            ok = False
            break
        if tag in seen:
            _add(errors, path, f"must not repeat a tag ({tag!r})")
            ok = False
            break
        seen.add(tag)
    return list(value) if ok else None


def _due_at(errors: Fields, path: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        _add(errors, path, "must be an RFC 3339 date-time with an offset, or null")
        return None
    try:
        return format_ts(parse_rfc3339(value))
    except ValueError as exc:
        _add(errors, path, str(exc))
        return None


_TODO_KEYS = frozenset(TODO_FIELDS)
# RFC 3339 in UTC with Z, whole seconds or microseconds: what format_ts itself produces.
_CANONICAL_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z")
_known_tags: set[str] = set()  # tags already seen to match TAG (bounded below)
_KNOWN_TAGS_MAX = 10000


_known_due: set[str] = set()  # due_at values already seen to be canonical (bounded below)
_KNOWN_DUE_MAX = 10000


def _canonical_due_at(value: str) -> str | None:
    """`value` when it is already the canonical form _due_at would return; None when unsure."""
    if value in _known_due:
        return value
    if _CANONICAL_UTC.fullmatch(value) is None or value.endswith(".000000Z"):
        return None
    try:
        datetime.fromisoformat(value[:19])  # a real calendar date and time of day
    except ValueError:
        return None
    if len(_known_due) >= _KNOWN_DUE_MAX:
        _known_due.clear()
    _known_due.add(value)
    return value


def _todo_fast(body: dict[str, Any]) -> dict[str, Any] | None:
    """validate_todo for a body that is plainly valid, checked cheaply (the loader reads tens of
    thousands per second). None means: not sure, take the full path, which gives the same answer
    for every body this accepts."""
    if not _TODO_KEYS.issuperset(body):
        return None
    title = body.get("title")
    if type(title) is not str or not 0 < len(title) <= 200 or not (title.isascii() or _is_text(title)):
        return None
    notes = body.get("notes", "")
    if type(notes) is not str or len(notes) > 10000 or not (notes.isascii() or _is_text(notes)):
        return None
    state = body.get("state", "open")
    if type(state) is not str or (state != "open" and state != "done"):
        return None
    tags = body.get("tags", [])
    if type(tags) is not list or len(tags) > 20:
        return None
    if tags:
        known = _known_tags
        for tag in tags:
            if type(tag) is not str:
                return None
            if tag not in known:
                if TAG.fullmatch(tag) is None:
                    return None
                if len(known) >= _KNOWN_TAGS_MAX:
                    known.clear()
                known.add(tag)
        if len(tags) > 1 and len(set(tags)) != len(tags):
            return None
    due_at = body.get("due_at")
    if due_at is not None:
        if type(due_at) is not str:
            return None
        due_at = _canonical_due_at(due_at)
        if due_at is None:
            return None
    return {"title": title, "notes": notes, "state": state, "tags": list(tags), "due_at": due_at}


def validate_todo(body: Any, prefix: str = "", errors: Fields | None = None) -> dict[str, Any]:
    """A todo as written (POST/PUT body, or a command's data): the stored fields, defaults filled."""
    if errors is None and type(body) is dict:
        fast = _todo_fast(body)
        if fast is not None:
            return fast
    own = errors if errors is not None else {}
    before = sum(len(v) for v in own.values())
    if not isinstance(body, dict):
        _add(own, prefix.rstrip(".") or "body", "must be a JSON object")
        raise Invalid(own)
    _unknown(own, prefix, body, TODO_FIELDS)
    if "title" not in body:
        _add(own, prefix + "title", "is required")
        title = None
    else:
        title = _string(own, prefix + "title", body["title"], 1, 200)
    notes = _string(own, prefix + "notes", body.get("notes", ""), 0, 10000)
    state = body.get("state", "open")
    if state not in STATES or not isinstance(state, str):
        _add(own, prefix + "state", "must be 'open' or 'done'")
    tags = _tags(own, prefix + "tags", body.get("tags", []))
    due_at = _due_at(own, prefix + "due_at", body.get("due_at"))
    if sum(len(v) for v in own.values()) != before:
        if errors is None:
            raise Invalid(own)
        return {}
    return {"title": title, "notes": notes, "state": state, "tags": tags, "due_at": due_at}


# Names in tzdata's list that name no place: "Factory" (a zone whose abbreviation says "-00").
NOT_ZONES = frozenset(("Factory",))


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    """The IANA zone names a profile may hold: the list the `tzdata` package ships (a requirement),
    read from the package itself, so the host's zone files never decide what is valid (they add
    `localtime`, `posixrules` and the like, or lack zones) and every name loads with zoneinfo."""
    from importlib import resources

    text = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(name for name in text.split("\n") if name) - NOT_ZONES


def validate_profile(body: Any) -> dict[str, Any]:
    """A profile as written (PUT /me body, or a command's data)."""
    errors: Fields = {}
    if not isinstance(body, dict):
        raise Invalid({"body": ["must be a JSON object"]})
    _unknown(errors, "", body, PROFILE_FIELDS)
    if "display_name" not in body:
        _add(errors, "display_name", "is required")
        display_name = None
    else:
        display_name = _string(errors, "display_name", body["display_name"], 1, 100)
    locale = _string(errors, "locale", body.get("locale", "en"), 1, 35)
    if locale is not None and BCP47.fullmatch(locale) is None:
        _add(errors, "locale", "must be a BCP 47 language tag, such as en or pt-BR")
    zone = _string(errors, "timezone", body.get("timezone", "UTC"), 1, 64)
    if zone is not None and zone not in time_zones():
        _add(errors, "timezone", "must be an IANA time zone name, such as Europe/Paris")
    if errors:
        raise Invalid(errors)
    return {"display_name": display_name, "locale": locale, "timezone": zone}


def validate_batch(body: Any) -> list[dict[str, Any]]:
    """POST /todos/batch: {"todos": [TODO, ...]}, 1 to 100, validated as a whole."""
    if not isinstance(body, dict):
        raise Invalid({"body": ["must be a JSON object"]})
    errors: Fields = {}
    _unknown(errors, "", body, ("todos",))
    items = body.get("todos")
    if not isinstance(items, list):
        _add(errors, "todos", "is required and must be a list of todos")
        raise Invalid(errors)
    if not 1 <= len(items) <= 100:
        _add(errors, "todos", "must hold 1 to 100 todos")
        raise Invalid(errors)
    out = []
    for position, item in enumerate(items):
        try:
            out.append(validate_todo(item, prefix=f"todos.{position}.", errors=errors))
        except Invalid:
            pass
    if errors:
        raise Invalid(errors)
    return out


VALIDATORS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "todos": validate_todo,
    "profiles": validate_profile,
}
