"""How a declared resource is stored and read back, generated from its declaration once per
process (`chalicelib.codegen`):

- the table's columns (its key, one column per field, then the winning command's version and
  op_id, the tombstone flag and the two timestamps), and a tombstone's stored values (each
  field's default; "" or the least value where a field has none);
- `Table.row(command, created_at)`: the row the loader writes (lists as compact JSON);
- `Table.tsv(command, created_at)`: the same row as `LOAD DATA` reads it (tab-separated,
  backslash escapes, `\\N` for NULL), the reference the line lanes' row text is held to;
- `decoder(resource, columns)`: a stored row, read by column name, as GET shows it.

Import-light: a GET decodes rows through it on a cold start (json and the declarations only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from chalicelib.codegen import make_function
from chalicelib.ids import format_ts
from chalicelib.resources import RESOURCES, Resource, Rule, on_change

TAIL = ("version", "op_id", "deleted", "created_at", "updated_at")
NULL = "\\N"  # LOAD DATA's NULL
_SPECIAL = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\0"})
_UNSAFE = frozenset('"\\\t\n\r\x00')


def escaped(text: str) -> str:
    """A text field as LOAD DATA reads it (its default escapes)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text or "\x00" in text:
        return text.translate(_SPECIAL)
    return text


def dump_list(value: list[Any]) -> str:
    """A list field as stored: compact JSON, ASCII (the form every path writes)."""
    return json.dumps(value, separators=(",", ":"))


def ts_out(value: Any) -> str:
    """A stored timestamp (datetime from MySQL, fixed-width text from SQLite) as RFC 3339 UTC."""
    if type(value) is datetime and value.tzinfo is None:  # MySQL's, stored in UTC: format_ts's result
        return value.isoformat() + "Z"
    if isinstance(value, datetime):
        return format_ts(value)
    return format_ts(datetime.fromisoformat(value))


def plain_pattern(pattern: str | None) -> bool:
    """Whether every string `pattern` matches is printable ASCII without a quote or a backslash:
    such values are written the same in a JSON line, in compact JSON and in LOAD DATA's text, so
    the fast paths may copy them as they are. Decided on the pattern's parse tree; anything not
    understood here counts as not plain."""
    if not pattern:
        return False
    try:
        import re._constants as codes  # the standard library's own parser of patterns
        import re._parser as sre

        return _plain_tree(sre.parse(pattern).data, codes)
    except Exception:  # noqa: BLE001 - unknown shapes are not plain: the general path is kept
        return False


def _safe(code: int) -> bool:
    return 0x20 < code < 0x7F and chr(code) not in _UNSAFE


def _plain_tree(items: Any, c: Any) -> bool:
    for op, arg in items:
        if op is c.LITERAL:
            ok = _safe(arg)
        elif op is c.IN:
            ok = all(
                (k is c.LITERAL and _safe(v)) or (k is c.RANGE and all(_safe(x) for x in range(v[0], v[1] + 1)))
                for k, v in arg
            )
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            ok = _plain_tree(arg[2], c)
        elif op is c.SUBPATTERN:
            ok = _plain_tree(arg[3], c)
        elif op is c.BRANCH:
            ok = all(_plain_tree(branch, c) for branch in arg[1])
        else:
            ok = False
        if not ok:
            return False
    return True


def plain_choices(rule: Rule) -> bool:
    return all(choice and all(_safe(ord(ch)) for ch in choice) for choice in rule.choices)


def empty_value(rule: Rule, default: Any, has_default: bool) -> Any:
    """A field's stored value in a tombstone: its default, or the least value of its kind."""
    if has_default:
        return dump_list(default) if rule.kind == "list" else default
    return {
        "text": "",
        "choice": rule.choices[0] if rule.choices else "",
        "integer": rule.minimum or 0,
        "uuid": "00000000-0000-0000-0000-000000000000",
        "list": "[]",
        "datetime": "1970-01-01T00:00:00Z",
    }[rule.kind]


def _tsv_value(name: str, rule: Rule) -> tuple[list[str], str]:
    """The lines that prepare a field's LOAD DATA text, and the expression (in a generated
    f-string's braces) that gives it."""
    value = f"data[{name!r}]"
    if rule.kind == "text" or (rule.kind == "choice" and not plain_choices(rule)):
        return [], f"escaped({value})"
    if rule.kind == "list":
        if plain_pattern(rule.pattern):  # '["a","b"]': what dump_list writes, without calling it
            local = f"t_{name}"
            return [
                f"    {local} = {value}",
                f"""    {local} = '["' + '","'.join({local}) + '"]' if {local} else '[]'""",
            ], local
        return [], f"escaped(dump_list({value}))"
    if rule.nullable:
        return [], f"NULL if {value} is None else {value}"
    return [], value


class Table:
    """A declared resource's table as the loader writes it (the functions made on first use)."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.name = resource.name
        self.key_columns = resource.key_columns
        self.data_columns = resource.field_names
        self.columns = self.key_columns + self.data_columns + TAIL
        rules, defaults = resource.rules(), resource.defaults()
        self.tombstone = tuple(empty_value(rules[n], defaults.get(n), n in defaults) for n in self.data_columns)
        self.row: Callable[[Any, str], tuple[Any, ...]] = self._make_row()
        self.tsv: Callable[[Any, str], str] = self._make_tsv()

    def _keys(self) -> str:
        return "command.owner, command.id" if self.resource.by_id else "command.owner"

    def _make_row(self) -> Callable[[Any, str], tuple[Any, ...]]:
        rules = self.resource.rules()
        values = [f"dump_list(data[{n!r}])" if rules[n].kind == "list" else f"data[{n!r}]" for n in self.data_columns]
        tail = "command.version, command.op_id, {deleted}, created_at, command.stored_at"
        name = f"row_{self.name}"
        lines = [
            f"def {name}(command, created_at):",
            "    data = command.data",
            "    if data is None:",
            f"        return ({self._keys()}, *TOMBSTONE, {tail.format(deleted=1)})",
            f"    return ({self._keys()}, {', '.join(values)}, {tail.format(deleted=0)})",
        ]
        return make_function(name, lines, {"TOMBSTONE": self.tombstone, "dump_list": dump_list})

    def _make_tsv(self) -> Callable[[Any, str], str]:
        rules = self.resource.rules()
        keys = "{escaped(command.owner)}" + ("\\t{command.id}" if self.resource.by_id else "")
        prepare: list[str] = []
        fields = ""
        for n in self.data_columns:
            lines, expression = _tsv_value(n, rules[n])
            prepare += lines
            fields += "{" + expression + "}\\t"
        tail = "{command.version}\\t{command.op_id}\\t%s\\t{created_at}\\t{command.stored_at}\\n"
        name = f"tsv_{self.name}"
        lines = [
            f"def {name}(command, created_at):",
            "    data = command.data",
            "    if data is None:",
            f'        return f"{keys}\\t{{EMPTY}}{tail % 1}"',
            *prepare,
            f'    return f"{keys}\\t{fields}{tail % 0}"',
        ]
        empty = "".join((NULL if v is None else escaped(str(v))) + "\t" for v in self.tombstone)
        return make_function(name, lines, {"escaped": escaped, "dump_list": dump_list, "NULL": NULL, "EMPTY": empty})


_TABLES: dict[str, Table] = {}


def table(resource: str) -> Table:
    """The table of a declared resource (made on first use)."""
    made = _TABLES.get(resource)
    if made is None or made.resource is not RESOURCES[resource]:
        made = _TABLES[resource] = Table(RESOURCES[resource])
    return made


def _forget(resource: str) -> None:
    """Drop what was made for a resource declared or forgotten at run time."""
    _TABLES.pop(resource, None)
    for key in [k for k in _DECODERS if k[0] == resource]:
        del _DECODERS[key]


# -- reading --------------------------------------------------------------------------------------
Decoder = Callable[[Sequence[Any]], dict[str, Any]]
_DECODERS: dict[tuple[str, tuple[str, ...]], Decoder] = {}


def decoder(resource: str, columns: Sequence[str]) -> Decoder:
    """A function from a stored row whose columns are `columns` (by name, in that order) to the
    row as GET shows it: the read fields among `columns`, lists decoded, timestamps in RFC 3339.
    Columns that are not read fields (`deleted`, say) are read past."""
    key = (resource, tuple(columns))
    made = _DECODERS.get(key)
    if made is None:
        made = _DECODERS[key] = _make_decoder(RESOURCES[resource], key[1])
    return made


def _make_decoder(resource: Resource, columns: tuple[str, ...]) -> Decoder:
    rules = resource.rules()
    shown = set(resource.read_fields)
    items = []
    for position, column in enumerate(columns):
        if column not in shown:
            continue
        value = f"r[{position}]"
        if column in ("created_at", "updated_at"):
            value = f"ts_out({value})"
        elif column == "version":
            value = f"int({value})"
        elif column in rules and rules[column].kind == "list":
            value = f"loads({value})"
        items.append(f"{column!r}: {value}")
    name = f"decode_{resource.name}"
    lines = [f"def {name}(r):", "    return {" + ", ".join(items) + "}"]
    return make_function(name, lines, {"ts_out": ts_out, "loads": json.loads})


on_change(_forget)


def read_columns(resource: str) -> str:
    """The read fields of a resource as a SELECT list (`id, title, ..., updated_at`)."""
    return ", ".join(RESOURCES[resource].read_fields)
