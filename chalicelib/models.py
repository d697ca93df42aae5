"""The resources as written: validation with field-level errors (CONTRACT section 3).

Untrusted input (request bodies, and the `data` of write commands read back by the loader) goes
through the same validators, which check types, lengths and formats, reject unknown fields and
fill defaults. Both of a resource's validators are generated from its declaration
(`chalicelib.resources`) once per process, on first use (`chalicelib.codegen`):
- the fast one (`fast_validator`) answers a plainly valid body with straight-line checks and its
  limits as constants, or None when unsure (the loader validates tens of thousands of commands
  per second; a POST runs it first);
- the full one (`validator`) runs the fast one, and otherwise every field's rule with its
  messages (`Invalid.fields`), with no loop over the fields at run time either.
The checks they call (`Invalid`, one per rule kind, the fast path's helpers) are in
`chalicelib.validation`.
A command of an older schema version (`v`) is validated by that version's validator: the fields
added later are unknown to it, and take their defaults. dataclasses-json/marshmallow are not used
here (their `from_dict` checks no types, and a GET must not pay their import on a cold start).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chalicelib.codegen import ident, make_function
from chalicelib.ids import CANONICAL_UUID
from chalicelib.resources import RESOURCES, SCHEMA_VERSION, TODOS, Resource, Rule, on_change, time_zones
from chalicelib.validation import (
    KNOWN_DATETIMES,
    Fields,
    Invalid,
    add,
    add_unknown,
    canonical_datetime,
    check_choice,
    check_datetime,
    check_integer,
    check_strings,
    check_text,
    check_uuid,
    count_errors,
    is_utf8,
    known_items,
)

# Re-exported: the validators' list of zones, and the names callers import from here.
__all__ = ["KNOWN_DATETIMES", "Invalid", "canonical_datetime", "time_zones"]

Validator = Callable[..., dict[str, Any]]
Fast = Callable[[dict[str, Any]], "dict[str, Any] | None"]
BATCH_MAX = TODOS.collection.batch if TODOS.collection else 0  # todos in one POST /todos/batch


# -- generation -----------------------------------------------------------------------------------
def _fast_check(name: str, rule: Rule, default: Any, required: bool) -> list[str]:
    """The fast validator's lines for one field: the local `f_NAME` holds the value, and any doubt
    returns None (the full path decides)."""
    v = ident(name)
    get = f"body.get({name!r})" if required or default is None else f"body.get({name!r}, D_{name})"
    out = [f"    {v} = {get}"]
    if rule.kind == "text":
        low, high = rule.min_length, rule.max_length or 0
        size = f"len({v}) > {high}" if low == 0 else f"not {low} <= len({v}) <= {high}"
        out.append(f"    if type({v}) is not str or {size} or not ({v}.isascii() or is_utf8({v})):")
        out.append("        return None")
        if rule.pattern:
            out += [f"    if M_{name}({v}) is None:", "        return None"]
        if rule.known is not None:
            out += [f"    if {v} not in K_{name}():", "        return None"]
    elif rule.kind == "choice":
        out += [f"    if type({v}) is not str or {v} not in C_{name}:", "        return None"]
    elif rule.kind == "integer":
        out += [f"    if type({v}) is not int or not {rule.minimum} <= {v} <= {rule.maximum}:", "        return None"]
    elif rule.kind == "uuid":
        test = f"type({v}) is not str or len({v}) != 36 or UUID({v}) is None"
        out += [f"    if {v} is not None and ({test}):" if rule.nullable else f"    if {test}:", "        return None"]
    elif rule.kind == "list":
        out += [
            f"    if type({v}) is not list or len({v}) > {rule.max_items or 0}:",
            "        return None",
            f"    if {v}:",
            f"        if not known_items({v}, S_{name}, P_{name}):",
            "            return None",
        ]
        if rule.unique:
            out += [f"        if len({v}) > 1 and len(set({v})) != len({v}):", "            return None"]
        out.append(f"    {v} = list({v})")
    else:  # datetime
        check = [f"if type({v}) is not str:", "    return None", f"{v} = canonical_datetime({v})", f"if {v} is None:"]
        check.append("    return None")
        if rule.nullable:
            out += [f"    if {v} is not None:", *(f"        {line}" for line in check)]
        else:
            out += [f"    {line}" for line in check]
    return out


def _full_check(name: str, rule: Rule, required: bool) -> list[str]:
    """The full validator's lines for one field: its kind's check, with messages."""
    v, path = ident(name), f"prefix + {name!r}"
    value = f"body.get({name!r}, D_{name})"
    call = {
        "text": f"check_text(own, {path}, {{value}}, R_{name}, P_{name})",
        "choice": f"check_choice(own, {path}, {{value}}, R_{name})",
        "integer": f"check_integer(own, {path}, {{value}}, R_{name})",
        "uuid": f"check_uuid(own, {path}, {{value}}, R_{name})",
        "list": f"check_strings(own, {path}, {{value}}, R_{name}, P_{name})",
        "datetime": f"check_datetime(own, {path}, {{value}}, R_{name})",
    }[rule.kind]
    if not required:
        return [f"    {v} = " + call.format(value=value)]
    return [
        f"    if {name!r} not in body:",
        f"        add(own, {path}, 'is required')",
        f"        {v} = None",
        "    else:",
        f"        {v} = " + call.format(value=f"body[{name!r}]"),
    ]


def _namespace(resource: Resource, version: int) -> dict[str, Any]:
    rules, defaults = resource.rules(), resource.defaults()
    space: dict[str, Any] = {
        "KNOWN": frozenset(resource.fields_at(version)),
        "UUID": CANONICAL_UUID.fullmatch,
        "is_utf8": is_utf8,
        "known_items": known_items,
        "canonical_datetime": canonical_datetime,
        "add": add,
        "Invalid": Invalid,
        "count_errors": count_errors,
        "add_unknown": add_unknown,
        "check_text": check_text,
        "check_choice": check_choice,
        "check_integer": check_integer,
        "check_uuid": check_uuid,
        "check_strings": check_strings,
        "check_datetime": check_datetime,
    }
    for name, rule in rules.items():
        compiled = re.compile(rule.pattern) if rule.pattern else None
        if rule.kind == "list" and compiled is None:
            compiled = re.compile(".*")
        space.update({f"R_{name}": rule, f"D_{name}": defaults.get(name), f"P_{name}": compiled})
        space.update({f"M_{name}": compiled.fullmatch if compiled else None, f"K_{name}": rule.known})
        space.update({f"C_{name}": frozenset(rule.choices), f"S_{name}": set()})
    return space


def _result(resource: Resource, version: int) -> str:
    """The validated document: every declared field in order; those newer than `version` take
    their defaults."""
    known, defaults = set(resource.fields_at(version)), resource.defaults()
    parts = []
    for name in resource.field_names:
        if name not in known and name not in defaults:
            raise ValueError(f"{resource.name}.{name}: a field added after schema version 1 needs a default")
        value = ident(name) if name in known else ("[]" if defaults[name] == [] else repr(defaults[name]))
        parts.append(f"{name!r}: {value}")
    return "{" + ", ".join(parts) + "}"


def _make_fast(resource: Resource, version: int) -> Fast:
    rules, defaults, required = resource.rules(), resource.defaults(), resource.required()
    name = f"fast_{resource.name}_v{version}"
    lines = [f"def {name}(body):", "    if not KNOWN.issuperset(body):", "        return None"]
    for field_name in resource.fields_at(version):
        lines += _fast_check(field_name, rules[field_name], defaults.get(field_name), field_name in required)
    lines.append(f"    return {_result(resource, version)}")
    namespace = _namespace(resource, version)
    return make_function(name, lines, namespace)


def _make_full(resource: Resource, version: int, fast: Fast) -> Validator:
    rules, required = resource.rules(), resource.required()
    name = f"validate_{resource.name}_v{version}"
    lines = [
        f"def {name}(body, prefix='', errors=None):",
        "    if errors is None and type(body) is dict:",
        "        done = FAST(body)",
        "        if done is not None:",
        "            return done",
        "    own = errors if errors is not None else {}",
        "    before = count_errors(own)",
        "    if not isinstance(body, dict):",
        "        add(own, prefix.rstrip('.') or 'body', 'must be a JSON object')",
        "        raise Invalid(own)",
        "    add_unknown(own, prefix, body, KNOWN)",
    ]
    for field_name in resource.fields_at(version):
        lines += _full_check(field_name, rules[field_name], field_name in required)
    lines += [
        "    if count_errors(own) != before:",
        "        if errors is None:",
        "            raise Invalid(own)",
        "        return {}",
        f"    return {_result(resource, version)}",
    ]
    return make_function(name, lines, {**_namespace(resource, version), "FAST": fast})


_FAST: dict[tuple[str, int], Fast] = {}
_FULL: dict[tuple[str, int], Validator] = {}


def fast_validator(resource: str, version: int = SCHEMA_VERSION) -> Fast:
    """The fast validator of a resource's documents at a schema version (made on first use)."""
    key = (resource, version)
    made = _FAST.get(key)
    if made is None:
        declared = RESOURCES[resource]
        if not declared.since <= version <= SCHEMA_VERSION:
            raise KeyError(key)
        made = _FAST[key] = _make_fast(declared, version)
    return made


def validator(resource: str, version: int = SCHEMA_VERSION) -> Validator:
    """The validator of a resource's documents at a schema version (made on first use):
    `validate(body, prefix="", errors=None)` returns the document with every declared field
    (defaults filled), or raises Invalid; with `errors`, adds to them and returns {} instead."""
    key = (resource, version)
    made = _FULL.get(key)
    if made is None:
        made = _FULL[key] = _make_full(RESOURCES[resource], version, fast_validator(resource, version))
    return made


class _Validators(dict[str, Validator]):
    """resource name -> its validator at this release's schema version, made on first use."""

    def __missing__(self, name: str) -> Validator:
        if name not in RESOURCES:
            raise KeyError(name)
        made = self[name] = validator(name)
        return made


VALIDATORS: dict[str, Validator] = _Validators()


def validate_todo(body: Any, prefix: str = "", errors: Fields | None = None) -> dict[str, Any]:
    """A todo as written (POST/PUT body, or a command's data): the stored fields, defaults filled."""
    return VALIDATORS["todos"](body, prefix, errors)


def validate_profile(body: Any) -> dict[str, Any]:
    """A profile as written (PUT /me body, or a command's data)."""
    return VALIDATORS["profiles"](body)


def validate_batch(body: Any, resource: str = "todos") -> list[dict[str, Any]]:
    """POST /{resource}/batch: {"todos": [TODO, ...]}, 1 to the declared most, validated as a whole."""
    declared = RESOURCES[resource]
    most = declared.collection.batch if declared.collection else 0
    if not isinstance(body, dict):
        raise Invalid({"body": ["must be a JSON object"]})
    errors: Fields = {}
    add_unknown(errors, "", body, frozenset((resource,)))
    items = body.get(resource)
    if not isinstance(items, list):
        add(errors, resource, f"is required and must be a list of {resource}")
        raise Invalid(errors)
    if not 1 <= len(items) <= most:
        add(errors, resource, f"must hold 1 to {most} {resource}")
        raise Invalid(errors)
    validate = VALIDATORS[resource]
    out = []
    for position, item in enumerate(items):
        try:
            out.append(validate(item, f"{resource}.{position}.", errors))
        except Invalid:
            pass
    if errors:
        raise Invalid(errors)
    return out


def _forget(name: str) -> None:
    """Drop the validators made for a resource declared or forgotten at run time."""
    VALIDATORS.pop(name, None)
    for made in (_FAST, _FULL):
        for key in [k for k in made if k[0] == name]:
            del made[key]


on_change(_forget)
