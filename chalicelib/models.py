"""The resources as written: validation with field-level errors (CONTRACT section 3).

Untrusted input (request bodies, and the `data` of write commands read back by the loader) goes
through the same validators, which check types, lengths and formats, reject unknown fields and
fill defaults. Their limits, patterns and defaults come from the declarations in
`chalicelib.resources`. They are written out by hand rather than with dataclasses-json/marshmallow
(whose `from_dict` checks no types anyway): the loader validates tens of thousands of commands per
second, and a GET must not pay marshmallow's import time on a cold start (README, "Dependencies").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from chalicelib.ids import format_ts, parse_rfc3339
from chalicelib.resources import BCP47_PATTERN, PROFILES, RESOURCES, TAG_PATTERN, TODOS, Resource, Rule

Fields = dict[str, list[str]]

_TODO = TODOS.rules()
_PROFILE = PROFILES.rules()
TITLE, NOTES, STATE, TAGS, DUE_AT = (_TODO[name] for name in TODOS.field_names)
DISPLAY_NAME, LOCALE, TIMEZONE = (_PROFILE[name] for name in PROFILES.field_names)
TAG = re.compile(TAG_PATTERN)
BCP47 = re.compile(BCP47_PATTERN)
TODO_FIELDS = TODOS.field_names
PROFILE_FIELDS = PROFILES.field_names
STATES = STATE.choices
# The limits as plain ints, for the hot checks below.
TITLE_MIN, TITLE_MAX = TITLE.min_length, TITLE.max_length or 0
NOTES_MAX = NOTES.max_length or 0
TAGS_MAX = TAGS.max_items or 0
DUE_AT_MAX = DUE_AT.max_length or 0
_TODO_DEFAULTS = TODOS.defaults()
_PROFILE_DEFAULTS = PROFILES.defaults()
_DEFAULT_NOTES, _DEFAULT_STATE = _TODO_DEFAULTS["notes"], _TODO_DEFAULTS["state"]
_DEFAULT_TAGS: list[str] = _TODO_DEFAULTS["tags"]  # never handed out: both paths copy the list
_STATE_SET = frozenset(STATES)
BATCH_MAX = 100  # todos in one POST /todos/batch


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


def _string(errors: Fields, path: str, value: Any, limits: Rule) -> str | None:
    low, high = limits.min_length, limits.max_length or 0
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
    return _strings(errors, path, value, TAGS, TAG, "tag")


def _strings(
    errors: Fields, path: str, value: Any, limits: Rule, pattern: re.Pattern[str], noun: str
) -> list[str] | None:
    """A "list" field: at most max_items distinct strings, each matching the pattern."""
    if not isinstance(value, list):
        _add(errors, path, "must be a list of strings")
        return None
    if len(value) > (limits.max_items or 0):
        _add(errors, path, f"must hold at most {limits.max_items} {noun}s")
        return None
    seen: set[str] = set()
    ok = True
    for item in value:
        if not isinstance(item, str) or pattern.fullmatch(item) is None:
            _add(errors, path, f"each {noun} must match ^{pattern.pattern}$")
            ok = False
            break
        if limits.unique and item in seen:
            _add(errors, path, f"must not repeat a {noun} ({item!r})")
            ok = False
            break
        seen.add(item)
    return list(value) if ok else None


def _due_at(errors: Fields, path: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > DUE_AT_MAX:
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
    if type(title) is not str or not TITLE_MIN <= len(title) <= TITLE_MAX or not (title.isascii() or _is_text(title)):
        return None
    notes = body.get("notes", _DEFAULT_NOTES)
    if type(notes) is not str or len(notes) > NOTES_MAX or not (notes.isascii() or _is_text(notes)):
        return None
    state = body.get("state", _DEFAULT_STATE)
    if type(state) is not str or state not in _STATE_SET:
        return None
    tags = body.get("tags", _DEFAULT_TAGS)
    if type(tags) is not list or len(tags) > TAGS_MAX:
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
        title = _string(own, prefix + "title", body["title"], TITLE)
    notes = _string(own, prefix + "notes", body.get("notes", _DEFAULT_NOTES), NOTES)
    state = body.get("state", _DEFAULT_STATE)
    if state not in STATES or not isinstance(state, str):
        _add(own, prefix + "state", "must be 'open' or 'done'")
    tags = _tags(own, prefix + "tags", body.get("tags", _DEFAULT_TAGS))
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
        display_name = _string(errors, "display_name", body["display_name"], DISPLAY_NAME)
    locale = _string(errors, "locale", body.get("locale", _PROFILE_DEFAULTS["locale"]), LOCALE)
    if locale is not None and BCP47.fullmatch(locale) is None:
        _add(errors, "locale", "must be a BCP 47 language tag, such as en or pt-BR")
    zone = _string(errors, "timezone", body.get("timezone", _PROFILE_DEFAULTS["timezone"]), TIMEZONE)
    if zone is not None and zone not in time_zones():
        _add(errors, "timezone", "must be an IANA time zone name, such as Europe/Paris")
    if errors:
        raise Invalid(errors)
    return {"display_name": display_name, "locale": locale, "timezone": zone}


def validate_batch(body: Any) -> list[dict[str, Any]]:
    """POST /todos/batch: {"todos": [TODO, ...]}, 1 to BATCH_MAX, validated as a whole."""
    if not isinstance(body, dict):
        raise Invalid({"body": ["must be a JSON object"]})
    errors: Fields = {}
    _unknown(errors, "", body, ("todos",))
    items = body.get("todos")
    if not isinstance(items, list):
        _add(errors, "todos", "is required and must be a list of todos")
        raise Invalid(errors)
    if not 1 <= len(items) <= BATCH_MAX:
        _add(errors, "todos", f"must hold 1 to {BATCH_MAX} todos")
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


# -- resources with no hand-written validator ------------------------------------------------------
def declared_validator(resource: Resource) -> Callable[[Any], dict[str, Any]]:
    """A validator made from a declaration alone: the same field-level errors, for a resource
    added with one declaration (docs/architecture.md, "Adding a resource")."""
    rules = resource.rules()
    required = resource.required()
    patterns = {name: re.compile(rule.pattern) for name, rule in rules.items() if rule.pattern}

    def validate(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid({"body": ["must be a JSON object"]})
        errors: Fields = {}
        _unknown(errors, "", body, resource.field_names)
        defaults = resource.defaults()
        out: dict[str, Any] = {}
        for name, rule in rules.items():
            if name not in body and name in required:
                _add(errors, name, "is required")
                continue
            out[name] = _declared_value(errors, name, body.get(name, defaults.get(name)), rule, patterns.get(name))
        if errors:
            raise Invalid(errors)
        return out

    return validate


def _declared_value(errors: Fields, path: str, value: Any, rule: Rule, pattern: re.Pattern[str] | None) -> Any:
    if rule.kind == "list":
        return _strings(errors, path, value, rule, pattern or re.compile(".*"), "item")
    if rule.kind == "datetime":
        return _due_at(errors, path, value)
    if rule.kind == "choice":
        if not isinstance(value, str) or value not in rule.choices:
            _add(errors, path, "must be one of " + ", ".join(map(repr, rule.choices)))
        return value
    text = _string(errors, path, value, rule)
    if text is not None and pattern is not None and pattern.fullmatch(text) is None:
        _add(errors, path, f"must match ^{pattern.pattern}$")
    return text


def declare(resource: Resource) -> None:
    """Add a resource: its declaration, and a validator made from it unless one is registered."""
    RESOURCES[resource.name] = resource
    VALIDATORS.setdefault(resource.name, declared_validator(resource))


def forget(name: str) -> None:
    """Remove a declared resource (tests)."""
    RESOURCES.pop(name, None)
    VALIDATORS.pop(name, None)
