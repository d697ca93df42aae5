"""The hand-made fast paths are held byte for byte to the dataclasses-json reference (chalicelib.wire),
for every declared resource (commands drawn from tests/factories.py).

- The writer's encoder, `WriteCommand.to_line`, writes exactly `wire.encode`'s line.
- The loader's line lanes and its general path make of such a line exactly the command
  `wire.decode` makes (a lane may decline; it may not disagree).
- A document's reference form (`wire.document`) is what the validators return.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import wire
from chalicelib.commands import WriteCommand, make_command
from chalicelib.loader import lanes, parsing
from chalicelib.loader.deferral import Deferred
from chalicelib.models import validator
from chalicelib.resources import RESOURCES, SCHEMA_VERSION
from tests import factories

ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
OP = "9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c8"


@settings(max_examples=300)
@given(factories.commands())
def test_the_writer_writes_the_reference_line_byte_for_byte(command: WriteCommand) -> None:
    assert command.to_line() == wire.encode(command)
    assert command.to_line().startswith(b'{"v":%d,' % SCHEMA_VERSION)


@settings(max_examples=300)
@given(factories.commands())
def test_the_loader_reads_the_reference_command(command: WriteCommand) -> None:
    line = wire.encode(command)
    reference = wire.decode(line)
    assert reference == command
    text = line[:-1].decode("utf-8")
    laned = lanes.from_line(text)
    assert laned is None or laned == reference
    parsed, rejects = parsing.parse_lines([text])
    assert (parsed, rejects) == ([reference], [])


@pytest.mark.parametrize("resource", sorted(RESOURCES))
@settings(max_examples=60)
@given(data=st.data())
def test_a_validated_document_is_its_reference_form(resource: str, data: st.DataObject) -> None:
    document = data.draw(factories.documents(resource))
    assert wire.document(resource, document) == document
    assert list(document) == list(RESOURCES[resource].field_names)


@pytest.mark.parametrize("resource", [name for name, r in RESOURCES.items() if r.by_id])
def test_the_lane_takes_the_reference_line_of_a_plain_document(resource: str) -> None:
    # A lane is what the loader's benchmark runs on: it must not decline the common case.
    extra = (
        {"title": "Buy milk", "tags": ["home"], "due_at": "2026-01-31T09:00:00+01:00"} if resource == "todos" else {}
    )
    data = factories.make(resource, **extra)
    command = make_command("put", resource, "alice", ID, 1_700_000_000_000_000, OP, data)
    assert lanes.from_line(wire.encode(command)[:-1].decode("utf-8")) == command


def test_decode_refuses_what_the_loader_refuses_and_defers_what_it_defers() -> None:
    command = make_command("delete", "todos", "alice", ID, 1, OP, None)
    line = wire.encode(command)
    version = b'"v":%d' % SCHEMA_VERSION
    for bad in (line.replace(version, b'"v":0'), line.replace(b'"data":null', b'"data":null,"x":1')):
        with pytest.raises(ValueError):
            wire.decode(bad)
    with pytest.raises(Deferred):
        wire.decode(line.replace(version, b'"v":%d' % (SCHEMA_VERSION + 1)))


def test_an_older_version_decodes_with_the_new_fields_defaults() -> None:
    data = factories.make("todos", priority=1)
    command = make_command("put", "todos", "alice", ID, 1, OP, data)
    raw = factories.older(json.loads(command.to_line()), 1)
    decoded = parsing.command_from_dict(raw)
    assert decoded.data == {**data, "priority": 3}
    assert decoded.data == validator("todos", 1)(raw["data"])
