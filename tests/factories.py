"""Factories and hypothesis strategies derived from the resources' declarations (chalicelib.resources).

Every declared field, of every declared resource (a throwaway one declared in a test included),
gets its values from its rule here, so a field added to a declaration is drawn by every property
test that uses these strategies (the wire, the lanes, the loader's model, the fault suite, the
OpenAPI agreement) with no test edited:

- `values(rule)`: what a field may hold, as stored (the validator's output);
- `written(rule)`: what a client may send for it (date-times in any offset, say);
- `refused(rule)`: values the field must refuse (wrong type, one past a limit, a bad pattern);
- `bodies(resource)`: request bodies (optional fields left out at random); `documents(resource)`:
  the validated form; `small_documents(resource)`: documents from a few values each, so that
  histories collide;
- `commands(...)`: write commands of any declared resource; `make(resource, **fields)`: one
  valid document for examples.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from chalicelib.commands import WriteCommand, make_command
from chalicelib.models import validator
from chalicelib.resources import RESOURCES, SCHEMA_VERSION, Resource, Rule

UUIDS = st.uuids().map(str)
# Text as clients send it: any Unicode that UTF-8 can hold, quotes, backslashes and controls included.
TEXT_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30))
OFFSETS = st.sampled_from([0, 60, -300, 330, 840, -720])


def _utc(moment: datetime) -> str:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return text[:19] + "Z" if text.endswith(".000000Z") else text


def _offset(moment: datetime, minutes: int) -> str:
    zone = timezone(timedelta(minutes=minutes))
    return moment.replace(tzinfo=UTC).astimezone(zone).isoformat()


def _text(rule: Rule) -> st.SearchStrategy[str]:
    low, high = rule.min_length, rule.max_length or 0
    if rule.known is not None:
        return st.sampled_from(sorted(rule.known()))
    if rule.pattern:
        return st.from_regex(rule.pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
    edges = st.sampled_from([c * n for c in ("x", "é", "💧") for n in {max(low, 1), high}])
    return st.one_of(st.text(TEXT_CHARS, min_size=low, max_size=min(high, 12)), edges)


def values(rule: Rule) -> st.SearchStrategy[Any]:
    """Values a field may hold, as the validator returns them (stored form)."""
    if rule.kind == "text":
        return _text(rule)
    if rule.kind == "choice":
        return st.sampled_from(rule.choices)
    if rule.kind == "integer":
        return st.one_of(st.integers(rule.minimum, rule.maximum), st.sampled_from([rule.minimum, rule.maximum]))
    if rule.kind == "uuid":
        return st.one_of(st.none(), UUIDS) if rule.nullable else UUIDS
    if rule.kind == "list":
        item = st.from_regex(rule.pattern or ".+", fullmatch=True)
        return st.lists(item, max_size=min(rule.max_items or 0, 4), unique=rule.unique)
    stamps = MOMENTS.map(_utc)
    return st.one_of(st.none(), stamps) if rule.nullable else stamps


def written(rule: Rule) -> st.SearchStrategy[Any]:
    """Values a client may send for a field (the validator normalises them)."""
    if rule.kind != "datetime":
        return values(rule)
    spelled = st.builds(_offset, MOMENTS, OFFSETS)
    return st.one_of(st.none(), spelled) if rule.nullable else spelled


def refused(rule: Rule) -> st.SearchStrategy[Any]:
    """Values a field must refuse: another JSON type, one past each limit, a broken pattern."""
    wrong_type: list[Any] = [True, 3.0, {"x": 1}, [["x"]]] + ([] if rule.kind == "integer" else [7])
    if rule.kind != "uuid" and not (rule.kind == "datetime" and rule.nullable):
        wrong_type.append(None)
    if rule.kind in ("text", "choice", "uuid", "datetime"):
        wrong_type.append(["x"])
    cases: list[Any] = list(wrong_type)
    if rule.kind == "text":
        cases += ["x" * ((rule.max_length or 0) + 1), "\ud800"]
        if rule.min_length:
            cases.append("")
    elif rule.kind == "choice":
        cases += ["", rule.choices[0].upper() + "!", " " + rule.choices[0]]
    elif rule.kind == "integer":
        cases += [rule.minimum - 1, rule.maximum + 1, "3", str(rule.minimum)]  # type: ignore[operator]
    elif rule.kind == "uuid":
        cases += ["", "not-a-uuid", "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"]
    elif rule.kind == "list":
        cases += [["x"] * ((rule.max_items or 0) + 1), "x", [7]]
        if rule.unique:
            cases.append(["a0", "a0"] if rule.pattern is None or _matches(rule.pattern, "a0") else [])
    else:
        cases += ["tomorrow", "2026-01-31", "2026-01-31T09:00:00", "2026-02-30T09:00:00Z"]
    return st.sampled_from([c for c in cases if c != []])


def _matches(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None


def bodies(resource: Resource | str, version: int = SCHEMA_VERSION) -> st.SearchStrategy[dict[str, Any]]:
    """Valid request bodies of `resource` (as schema version `version` knows it): required fields
    always, optional ones at random."""
    declared = RESOURCES[resource] if isinstance(resource, str) else resource
    rules, required = declared.rules(), set(declared.required())
    known = declared.fields_at(version)
    return st.fixed_dictionaries(
        {name: written(rules[name]) for name in known if name in required},
        optional={name: written(rules[name]) for name in known if name not in required},
    )


def documents(resource: Resource | str, version: int = SCHEMA_VERSION) -> st.SearchStrategy[dict[str, Any]]:
    """Validated documents (every declared field, defaults filled), from `bodies`."""
    declared = RESOURCES[resource] if isinstance(resource, str) else resource
    return bodies(declared, version).map(validator(declared.name, version))


def small_documents(resource: Resource | str) -> st.SearchStrategy[dict[str, Any]]:
    """Documents whose optional fields are their defaults half the time, so that drawn histories
    repeat values and have equivalent spellings (a default left out): the loader's model."""
    declared = RESOURCES[resource] if isinstance(resource, str) else resource
    defaults = declared.defaults()
    fields = {
        name: st.one_of(st.just(defaults[name]), written(rule)) if name in defaults else written(rule)
        for name, rule in declared.rules().items()
    }
    return st.fixed_dictionaries(fields).map(validator(declared.name))


def make(resource: str, **fields: Any) -> dict[str, Any]:
    """One valid document of `resource`: its required text fields filled with "x", then `fields`."""
    declared = RESOURCES[resource]
    rules = declared.rules()
    body: dict[str, Any] = {}
    for name in declared.required():
        rule = rules[name]
        body[name] = "x" if rule.kind == "text" and not rule.pattern else None
    return validator(resource)({**{k: v for k, v in body.items() if v is not None}, **fields})


VERSIONS = st.integers(1, 2**53 - 1)
OWNER_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp", "Cf"))
OWNERS = st.one_of(
    UUIDS,
    st.text(OWNER_CHARS, min_size=1, max_size=20).filter(lambda s: s.isprintable() and s.strip() == s),
    st.text(string.ascii_letters, min_size=1, max_size=8),
)


@st.composite
def commands(
    draw: st.DrawFn,
    resources: tuple[str, ...] | None = None,
    owners: st.SearchStrategy[str] = OWNERS,
    ids: st.SearchStrategy[str] = UUIDS,
    versions: st.SearchStrategy[int] = VERSIONS,
    data: str = "documents",
) -> WriteCommand:
    """A write command of any declared resource (or of `resources`): puts twice as often as deletes."""
    name = draw(st.sampled_from(resources or tuple(RESOURCES)))
    declared = RESOURCES[name]
    owner = draw(owners)
    op = draw(st.sampled_from(["put", "put", "delete"]))
    document = None
    if op == "put":
        document = draw(documents(declared) if data == "documents" else small_documents(declared))
    id_ = draw(ids) if declared.by_id else owner
    return make_command(op, name, owner, id_, draw(versions), draw(UUIDS), document)


def without_defaults(resource: str, data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The document with the fields equal to their defaults left out (an equivalent spelling)."""
    if data is None:
        return None
    defaults = RESOURCES[resource].defaults()
    missing = object()
    return {k: v for k, v in data.items() if defaults.get(k, missing) != v}


# -- raw commands as a line decodes them: valid, older, newer and damaged ----------------------------
ODD_ENVELOPE: dict[str, list[Any]] = {
    "v": [0, -1, 1.0, True, "2", None],
    "op": ["patch", None, "PUT"],
    "resource": ["nope", None, "Todos"],
    "owner": ["", " alice", "x" * 129, "a\tb", 7],
    "id": ["X", "A" * 36, None],
    "version": [0, -5, 2**53, 1.0, "5", True],
    "op_id": ["nope", None],
    "at": ["2026-01-31T09:00:00Z", "2026-02-30T09:00:00.000000Z", "1969-12-31T23:59:59.999999Z", 5, ""],
}


def older(raw: dict[str, Any], version: int) -> dict[str, Any]:
    """`raw` as a writer of schema version `version` wrote it: `v` set, the data's fields added
    since left out (a resource added since stays: such a line must be a reject)."""
    declared = RESOURCES.get(raw["resource"])
    data = raw["data"]
    if declared is not None and isinstance(data, dict):
        known = set(declared.fields_at(version))
        data = {k: v for k, v in data.items() if k in known}
    return {**raw, "v": version, "data": data}


@st.composite
def raw_commands(draw: st.DrawFn, resources: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A decoded command line of any declared resource: valid at this release's version, or at an
    older one, or with `v` newer than this release knows, or damaged in one place (an odd envelope
    value, a refused field value, a key left out or added)."""
    import json

    command = draw(commands(resources=resources))
    raw: dict[str, Any] = json.loads(command.to_line())
    twist = draw(st.sampled_from(["valid", "valid", "older", "newer", "envelope", "field", "missing", "extra"]))
    if twist == "older":
        raw = older(raw, draw(st.integers(1, SCHEMA_VERSION)))
    elif twist == "newer":
        raw["v"] = SCHEMA_VERSION + draw(st.integers(1, 3))
    elif twist == "envelope":
        key = draw(st.sampled_from(sorted(ODD_ENVELOPE)))
        raw[key] = draw(st.sampled_from(ODD_ENVELOPE[key]))
    elif twist == "field" and isinstance(raw["data"], dict):
        rules = RESOURCES[command.resource].rules()
        name = draw(st.sampled_from(sorted(rules)))
        raw["data"][name] = draw(refused(rules[name]))
    elif twist == "missing":
        raw.pop(draw(st.sampled_from(sorted(raw))))
    elif twist == "extra":
        (raw["data"] if isinstance(raw["data"], dict) and draw(st.booleans()) else raw)["surprise"] = 1
    return raw


# -- with random.Random instead of hypothesis (the fault suite's workload) ---------------------------
WORDS = ("buy", "milk", "call", "mum", "caf\u00e9", "\u6771\u4eac", "ship", "v2", "tab\tin", 'quote"s')
TEXTS = ("", "plain", "line one\nline two", "tab\there", "back\\slash \\N null", "\u00fcml\u00e4ut \u2603")


def random_value(rule: Rule, rng: Any) -> Any:
    """One value a field may take, drawn with `rng` (a random.Random), as a client writes it."""
    import re

    if rule.kind == "text":
        if rule.known is not None:
            return rng.choice(sorted(rule.known())[:50])
        if rule.pattern:
            for candidate in ("en", "de-CH", "pt-BR", "ja-JP", "x-private", "https://example.com/a", "a0"):
                if re.fullmatch(rule.pattern, candidate) and rule.min_length <= len(candidate) <= (
                    rule.max_length or 0
                ):
                    return candidate
            raise ValueError(f"no sample text matches {rule.pattern!r}")
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) if rule.min_length else rng.choice(TEXTS)
        return text[: rule.max_length]
    if rule.kind == "choice":
        return rng.choice(rule.choices)
    if rule.kind == "integer":
        return rng.randint(rule.minimum, rule.maximum)
    if rule.kind == "uuid":
        return None if rule.nullable and rng.random() < 0.3 else str(__import__("uuid").UUID(int=rng.getrandbits(128)))
    if rule.kind == "list":
        pool = ["home", "work", "x-1", "a_b", "9lives", "abc", "a0"]
        pool = [p for p in pool if re.fullmatch(rule.pattern or ".*", p)]
        return rng.sample(pool, rng.randint(0, min(3, len(pool), rule.max_items or 0)))
    if rule.nullable and rng.random() < 0.3:
        return None
    moment = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**8))
    return moment.astimezone(timezone(timedelta(hours=rng.randint(-11, 12)))).isoformat()


def random_body(resource: str, rng: Any, share: float = 0.5) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a body as a client sends it, the document as stored): every declared field of `resource`
    drawn with `rng`, the optional ones left out at random (they then take their defaults)."""
    declared = RESOURCES[resource]
    required = set(declared.required())
    body = {
        name: random_value(rule, rng)
        for name, rule in declared.rules().items()
        if name in required or rng.random() < share
    }
    return body, validator(resource)(body)
