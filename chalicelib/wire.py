"""The reference JSON form of write commands and their documents, through dataclasses-json.

A command travels as one JSON object on one line (CONTRACT section 4); its `data` is a document
of its resource as declared in `chalicelib.resources`. Here both are dataclasses-json classes:
`CommandLine` for the envelope, and for each resource a subclass of its declaration that adds
dataclasses-json's `to_dict`/`from_dict` (the declarations themselves stay free of it).

It is the reference the fast paths are held to, byte for byte, for every declared resource: the
line `WriteCommand.to_line` writes by hand (the POST benchmark row runs on it) must be
`encode(command)`, and the loader's line lanes and general path must make of a line the command
`decode(line)` makes (tests/unit/test_wire.py). A line carries `v`, this release's command schema
version (`resources.SCHEMA_VERSION`).
dataclasses-json's `from_dict` checks no types, so `decode` then runs the loader's own checks
(`loader.parsing.command_from_dict`): untrusted input always goes through the validators.

Imported only by paths that write or load, and then only where no benchmark row runs (it costs
tens of milliseconds of import, marshmallow included): never by a GET (tests/unit/test_cold_start.py).
"""

from __future__ import annotations

import json
from dataclasses import fields, make_dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, get_type_hints

from dataclasses_json import DataClassJsonMixin

from chalicelib.resources import RESOURCES, SCHEMA_VERSION

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand


def _command_line() -> Any:
    """The envelope as it travels: "v", then WriteCommand's fields in their order, but for
    `stored_at` (the tables' form of `at`, not on the line)."""
    from chalicelib.commands import WriteCommand

    hints = get_type_hints(WriteCommand)
    travelling = [(f.name, hints[f.name]) for f in fields(WriteCommand) if f.name != "stored_at"]
    return make_dataclass("CommandLine", [("v", int), *travelling], bases=(DataClassJsonMixin,))


CommandLine = _command_line()


def document_class(resource: str) -> type[DataClassJsonMixin]:
    """The resource's declared dataclass with dataclasses-json's methods (a subclass)."""
    return _with_json(RESOURCES[resource].document)


@cache
def _with_json(declared: type) -> type[DataClassJsonMixin]:
    return type(f"{declared.__name__}Document", (declared, DataClassJsonMixin), {"__doc__": declared.__doc__})


def document(resource: str, data: dict[str, Any]) -> dict[str, Any]:
    """A document's reference form: through its declared dataclass, fields in declared order."""
    return document_class(resource).from_dict(data).to_dict()


def encode(command: WriteCommand) -> bytes:
    """The reference line of a command (what `WriteCommand.to_line` must write)."""
    data = None if command.data is None else document(command.resource, command.data)
    line = CommandLine(
        SCHEMA_VERSION,
        command.op,
        command.resource,
        command.owner,
        command.id,
        command.version,
        command.op_id,
        command.at,
        data,
    )
    return line.to_json(ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: str | bytes) -> WriteCommand:
    """The command of one line: the envelope through dataclasses-json, then the loader's checks,
    which raise ValueError with the reason (`from_dict` checks no types and ignores unknown keys,
    so the keys are checked first, as the loader does)."""
    from chalicelib.commands import COMMAND_KEYS
    from chalicelib.loader.parsing import command_from_dict

    raw = json.loads(line)
    if not isinstance(raw, dict) or raw.keys() != COMMAND_KEYS:
        raise ValueError("not a command: a JSON object with exactly the command's keys")
    parsed = CommandLine.from_dict(raw)
    return command_from_dict(parsed.to_dict(encode_json=False))
