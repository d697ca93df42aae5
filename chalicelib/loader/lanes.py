"""The loader's line lanes: a line written exactly as `WriteCommand.to_line` writes a command of a
resource keyed by (owner, id) is recognised by one regular expression, built from the resource's
declaration, instead of being decoded and validated field by field; its `LOAD DATA` row text is
written on the way.

One lane is generated per resource and command schema version (`"v":N`), once per process on
first use (`chalicelib.codegen`): a version-1 line (already in S3) takes the version-1 lane,
which fills the fields added since with their defaults. Every limit, choice and pattern comes from
the declaration; checks a regular expression cannot make (a bound of an integer, a real calendar
hour, a canonical date-time, no repeated list item, a pattern or a known value) run on the
captured text. A lane may only decline (None: the general path in `chalicelib.loader.parsing`
decodes and decides) or agree with the general path: tests/unit/test_command_lane.py and
tests/unit/test_wire.py hold them together.

Inside a string the lanes take any character but a quote, a backslash (the start of an escape)
and a control character (JSON writes those escaped), so a string without a backslash decodes to
its own text, holds nothing `LOAD DATA` escapes, and a line that is not ASCII must still encode to
UTF-8 (no lone surrogate from an invalid byte). A field whose values could hold a quote (a list
whose item pattern is not plain, a choice that is not) leaves its resource without a lane.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chalicelib.codegen import ident, make_function
from chalicelib.commands import (
    KNOWN_HOURS,
    KNOWN_OWNERS,
    MAX_OWNER_CHARS,
    WriteCommand,
    canonical_stored_ts,
    new_command,
    remember_owner,
)
from chalicelib.ids import CANONICAL_UUID, MAX_VERSION
from chalicelib.models import KNOWN_DATETIMES, canonical_datetime
from chalicelib.resources import RESOURCES, SCHEMA_VERSION, Resource, Rule, on_change
from chalicelib.rows import NULL, escaped, plain_choices, plain_pattern, table
from chalicelib.validation import is_utf8

Lane = Callable[[str, "dict[int, str] | None"], "WriteCommand | None"]
PLAIN = r'[^"\\\x00-\x1f]'
_UUID = CANONICAL_UUID.pattern
_DATETIME = r'"([0-9][^"]{19,26})"'  # then canonical_datetime decides


def _plain(low: int, high: int) -> str:
    return f"{PLAIN}{{{low},{high}}}"


def lane_ready(rule: Rule) -> bool:
    """Whether a field's values can be read off a line by the lane (see the module docstring)."""
    if rule.kind == "list":
        return plain_pattern(rule.pattern) and (rule.max_items or 0) > 0
    if rule.kind == "choice":
        return plain_choices(rule)
    return rule.kind != "integer" or (rule.minimum is not None and rule.maximum is not None)


def _integer_pattern(rule: Rule) -> str:
    low, high = rule.minimum or 0, rule.maximum or 0
    if 0 <= low <= high <= 9:
        return f"([{low}-{high}])"
    digits = len(str(max(abs(low), abs(high))))
    sign = "-?" if low < 0 else ""
    return f"({sign}(?:0|[1-9][0-9]{{0,{digits - 1}}}))"


def _field_pattern(name: str, rule: Rule) -> str:
    """The regular expression of `"name":VALUE`, with one capturing group for the value."""
    key = f'"{name}":'
    if rule.kind == "text":
        return key + f'"({_plain(rule.min_length, rule.max_length or 0)})"'
    if rule.kind == "choice":
        return key + '"(' + "|".join(map(re.escape, rule.choices)) + ')"'
    if rule.kind == "integer":
        return key + _integer_pattern(rule)
    if rule.kind == "uuid":
        return key + (f'(?:null|"({_UUID})")' if rule.nullable else f'"({_UUID})"')
    if rule.kind == "list":
        item = f'"(?:{rule.pattern})"'
        return key + rf"\[((?:{item}(?:,{item}){{0,{(rule.max_items or 1) - 1}}})?)\]"
    return key + (f"(?:null|{_DATETIME})" if rule.nullable else _DATETIME)


def line_pattern(resource: Resource, version: int) -> str:
    """The whole line's regular expression: the envelope, then `"data":null` (group 7) or the
    fields of `version` in declared order (one group each)."""
    rules = resource.rules()
    fields = ",".join(_field_pattern(name, rules[name]) for name in resource.fields_at(version))
    return (
        rf'\{{"v":{version},"op":"(put|delete)","resource":"{resource.name}",'
        rf'"owner":"({_plain(1, MAX_OWNER_CHARS)})","id":"({_UUID})","version":([1-9][0-9]{{0,15}}),'
        rf'"op_id":"({_UUID})","at":"([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-5][0-9]:[0-5][0-9]\.[0-9]{{6}}Z)",'
        rf'"data":(?:(null)|\{{{fields}\}})\}}'
    )


def _check(name: str, rule: Rule) -> tuple[list[str], str, str]:
    """A captured field's lines in the put branch (any doubt returns None), the expression of its
    document value, and its row text as a piece of the head's f-string. The capture `f_NAME` is
    the field's text as written on the line, which is its row text too (plain characters only)."""
    v = ident(name)
    if rule.kind == "text":
        out = []
        if rule.pattern:
            out += [f"    if M_{name}({v}) is None:", "        return None"]
        if rule.known is not None:
            out += [f"    if {v} not in K_{name}():", "        return None"]
        return out, v, f"{{{v}}}"
    if rule.kind == "choice":
        return [], v, f"{{{v}}}"
    if rule.kind == "integer":
        out = [f"    n_{name} = int({v})"]
        if not 0 <= (rule.minimum or 0) <= (rule.maximum or 0) <= 9:  # else the pattern checked a digit's range
            out += [f"    if not {rule.minimum} <= n_{name} <= {rule.maximum}:", "        return None"]
        return out, f"n_{name}", f"{{{v}}}"
    if rule.kind == "uuid":
        return [], v, f"{{{v} or NULL}}"
    if rule.kind == "list":
        out = [f"    if {v}:", f"""        l_{name} = {v}[1:-1].split('","')"""]
        if rule.unique:
            out += [f"        if len(l_{name}) > 1 and len(set(l_{name})) != len(l_{name}):", "            return None"]
        return out + ["    else:", f"        l_{name} = []"], f"l_{name}", f"[{{{v}}}]"
    test = [f"if {v} not in KNOWN_DATETIMES and canonical_datetime({v}) is None:", "    return None"]
    if rule.nullable:
        return [f"    if {v} is not None:", *(f"        {line}" for line in test)], v, f"{{{v} or NULL}}"
    return [f"    {line}" for line in test], v, f"{{{v}}}"


def _literal(text: str) -> str:
    """`text` as the literal part of a generated f'...' string."""
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("{", "{{").replace("}", "}}").replace("\t", "\\t")


def _make_lane(resource: Resource, version: int) -> Lane:
    rules, defaults = resource.rules(), resource.defaults()
    present = resource.fields_at(version)
    stored = dict(zip(resource.field_names, table(resource.name).tombstone, strict=True))
    tombstone = "".join((NULL if v is None else escaped(str(v))) + "\t" for v in table(resource.name).tombstone)
    checks: list[str] = []
    data: list[str] = []
    head: list[str | None] = []
    for name in resource.field_names:
        if name in present:
            lines, value, text = _check(name, rules[name])
            checks += lines
            data.append(f"{name!r}: {value}")
            head.append(text)
        else:  # added after `version`: its default, stored as a tombstone stores it
            default = defaults[name]
            data.append(f"{name!r}: {'[]' if default == [] else repr(default)}")
            head.append(None)
    row = "".join(
        (text if text is not None else _literal(NULL if stored[n] is None else escaped(str(stored[n])))) + "\\t"
        for n, text in zip(resource.field_names, head, strict=True)
    )
    groups = ", ".join(["op", "owner", "id_", "version_text", "op_id", "at", "null", *map(ident, present)])
    fn = f"lane_{resource.name}_v{version}"
    new = f"new_command(op, {resource.name!r}, owner, id_, version, op_id, at, {{data}}, f'{{{{at[:10]}}}} {{{{at[11:26]}}}}')"
    lines = [
        f"def {fn}(line, heads=None):",
        "    if not line.isascii() and not is_utf8(line):",
        "        return None",
        "    match = MATCH(line)",
        "    if match is None:",
        "        return None",
        f"    {groups} = match.groups()",
        "    if owner not in KNOWN_OWNERS and not remember_owner(owner):",
        "        return None",
        "    version = int(version_text)",
        "    if version > MAX_VERSION:",
        "        return None",
        "    if at[:14] not in KNOWN_HOURS and canonical_stored_ts(at) is None:",
        "        return None",
        "    if null is not None:",
        "        if op != 'delete':",
        "            return None",
        "        command = " + new.format(data="None"),
        "        if heads is not None:",
        f"            heads[id(command)] = f'{{owner}}\\t{{id_}}\\t{_literal(tombstone)}{{version_text}}\\t{{op_id}}\\t1\\t'",
        "        return command",
        "    if op != 'put':",
        "        return None",
        *checks,
        "    command = " + new.format(data="{" + ", ".join(data) + "}"),
        "    if heads is not None:",
        f"        heads[id(command)] = f'{{owner}}\\t{{id_}}\\t{row}{{version_text}}\\t{{op_id}}\\t0\\t'",
        "    return command",
    ]
    return make_function(fn, lines, _namespace(resource, version))


def _namespace(resource: Resource, version: int) -> dict[str, Any]:
    space: dict[str, Any] = {
        "MATCH": re.compile(line_pattern(resource, version)).fullmatch,
        "NULL": NULL,
        "MAX_VERSION": MAX_VERSION,
        "KNOWN_OWNERS": KNOWN_OWNERS,
        "KNOWN_HOURS": KNOWN_HOURS,
        "KNOWN_DATETIMES": KNOWN_DATETIMES,
        "canonical_datetime": canonical_datetime,
        "canonical_stored_ts": canonical_stored_ts,
        "remember_owner": remember_owner,
        "new_command": new_command,
        "is_utf8": is_utf8,
    }
    for name, rule in resource.rules().items():
        space[f"M_{name}"] = re.compile(rule.pattern).fullmatch if rule.pattern else None
        space[f"K_{name}"] = rule.known
    return space


def has_lane(resource: Resource) -> bool:
    return resource.by_id and all(lane_ready(rule) for rule in resource.rules().values())


_LANES: dict[tuple[str, int], Lane] = {}


def lane(resource: str, version: int = SCHEMA_VERSION) -> Lane | None:
    """The lane of a resource's lines of schema version `version` (made on first use), or None
    when the resource has none."""
    key = (resource, version)
    made = _LANES.get(key)
    if made is None:
        declared = RESOURCES[resource]
        if not has_lane(declared) or not declared.since <= version <= SCHEMA_VERSION:
            return None
        made = _LANES[key] = _make_lane(declared, version)
    return made


def lanes() -> tuple[Lane, ...]:
    """Every lane, tried in this order by `from_line`: this release's versions first, todos
    before the rest (they are most of every object), older versions last."""
    order = sorted(RESOURCES, key=lambda name: (name != "todos", name))
    found = [lane(name, version) for version in range(SCHEMA_VERSION, 0, -1) for name in order]
    return tuple(made for made in found if made is not None)


_ordered: list[tuple[Lane, ...]] = []


def ordered() -> tuple[Lane, ...]:
    """`lanes()`, made once (until a resource is declared or forgotten at run time)."""
    if not _ordered:
        _ordered.append(lanes())
    return _ordered[0]


def _forget(resource: str) -> None:
    """Drop the lanes made for a resource declared or forgotten at run time, and their order."""
    for key in [k for k in _LANES if k[0] == resource]:
        del _LANES[key]
    _ordered.clear()


on_change(_forget)


def from_line(line: str, heads: dict[int, str] | None = None) -> WriteCommand | None:
    """The command of a line some lane takes (see `lane`), or None: the general path decides.
    With `heads`, heads[id(command)] is set to the command's row as LOAD DATA reads it, up to
    created_at, each column followed by a tab (`rows.Table.tsv` is the reference)."""
    for each in ordered():
        command = each(line, heads)
        if command is not None:
            return command
    return None
