"""What is derived from the resources' declarations (chalicelib.resources), or held to them.

The validators, the OpenAPI document, the tables' row writers, the row decoders and the line
lanes are generated from the declarations (tests/unit/test_models.py, test_openapi.py,
test_command_lane.py test their boundaries); the migrations are history and restate them, and are
checked here against `table_ddl`, as are the generated row writers against each other.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.migrations import MIGRATIONS, table_ddl
from chalicelib.loader import lanes
from chalicelib.readers.cache import row_for_command
from chalicelib.resources import RESOURCES, SCHEMA_VERSION, Resource
from chalicelib.rows import NULL, decoder, table
from tests import factories

OWNER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
OP = "9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c8"


def statements(dialect: str) -> list[str]:
    return [statement for _, _, all_ in MIGRATIONS for statement in all_.get(dialect, [])]


def column_types(dialect: str, table_name: str) -> dict[str, str]:
    """Each column's type as the migrations leave it (a later MODIFY/ADD wins)."""
    types: dict[str, str] = {}
    for statement in statements(dialect):
        text = " ".join(statement.split())
        if re.search(rf"\bTABLE (?:IF NOT EXISTS )?`?{table_name}`?[ (]", text) is None:
            continue
        for match in re.finditer(
            r"(?:^|[(,]\s*|(?:MODIFY|ADD) (?:COLUMN )?)`?([a-z_]+)`? ([A-Z][A-Za-z0-9_()@ ]*?) (?:NOT NULL|NULL)\b",
            text,
        ):
            types[match.group(1)] = match.group(2)
    return types


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=lambda r: r.name)
def test_ddl_columns_are_the_declared_storage(resource: Resource) -> None:
    mysql = column_types("mysql", resource.name)
    sqlite = column_types("sqlite", resource.name)
    for name, rule in resource.rules().items():
        assert mysql[name] == rule.mysql, f"{resource.name}.{name}"
        assert sqlite[name] == ("INTEGER" if rule.kind == "integer" else "TEXT"), f"{resource.name}.{name} in SQLite"
        size = re.fullmatch(r"VARCHAR\((\d+)\).*", rule.mysql)
        if size and rule.kind == "text":
            assert rule.max_length is not None and int(size.group(1)) >= rule.max_length


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=lambda r: r.name)
def test_the_migrated_tables_have_the_columns_the_loader_writes(resource: Resource) -> None:
    for dialect in ("sqlite", "mysql"):
        assert set(column_types(dialect, resource.name)) == set(table(resource.name).columns), dialect


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=lambda r: r.name)
def test_a_table_made_from_the_declaration_has_the_migrated_columns(resource: Resource) -> None:
    made = " ".join(table_ddl(resource, "mysql").split())
    for name, rule in resource.rules().items():
        assert f" {name} {rule.mysql} " in made
    sqlite_made = dict(re.findall(r"(\w+) (TEXT|INTEGER) (?:NOT )?NULL", table_ddl(resource, "sqlite")))
    assert column_types("sqlite", resource.name) == sqlite_made


def test_a_full_todo_fits_its_columns() -> None:
    rules = RESOURCES["todos"].rules()
    tags = rules["tags"]
    assert tags.max_items is not None
    widest = "[" + ",".join(['"' + "t" * 32 + '"'] * tags.max_items) + "]"
    assert factories.make("todos", tags=[f"{n:02d}" + "t" * 30 for n in range(tags.max_items)])
    assert len(widest) <= int(re.findall(r"\d+", tags.mysql)[0])
    assert len("2026-01-01T00:00:00.000000Z") <= int(re.findall(r"\d+", rules["due_at"].mysql)[0])
    assert max(len(state) for state in rules["state"].choices) <= int(re.findall(r"\d+", rules["state"].mysql)[0])
    assert rules["priority"].maximum is not None and rules["priority"].maximum <= 127  # TINYINT


def test_every_field_added_after_version_1_has_a_default() -> None:
    # A command of an older version loads with the new fields' defaults (CONTRACT section 4).
    for resource in RESOURCES.values():
        defaults = resource.defaults()
        for name, rule in resource.rules().items():
            assert rule.since <= SCHEMA_VERSION
            if rule.since > resource.since:
                assert name in defaults, f"{resource.name}.{name}"


def test_the_cache_keeps_rows_in_the_declared_read_shape() -> None:
    for name, resource in RESOURCES.items():
        command = make_command("put", name, OWNER, ID if resource.by_id else OWNER, 1, OP, factories.make(name))
        row = row_for_command(command, command.stored_at)
        assert row is not None
        assert tuple(row) == resource.read_fields


def unescaped(field: str) -> Any:
    """A LOAD DATA field's value (its default escapes; \\N is NULL)."""
    if field == NULL:
        return None
    out, chars = [], iter(field)
    for char in chars:
        if char == "\\":
            char = {"t": "\t", "n": "\n", "r": "\r", "0": "\x00", "\\": "\\"}[next(chars)]
        out.append(char)
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(factories.commands())
def test_the_load_data_text_is_the_row_the_upsert_writes(command: WriteCommand) -> None:
    made = table(command.resource)
    created_at = "2001-02-03 04:05:06.000007"
    text = made.tsv(command, created_at)
    assert text.endswith("\n") and text.count("\n") == 1
    fields = [unescaped(f) for f in text[:-1].split("\t")]
    assert fields == [None if v is None else str(v) for v in made.row(command, created_at)]


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=lambda r: r.name)
def test_rows_are_decoded_by_column_name_in_any_order(resource: Resource) -> None:
    command = make_command(
        "put", resource.name, OWNER, ID if resource.by_id else OWNER, 1, OP, factories.make(resource.name)
    )
    row = row_for_command(command, command.stored_at)
    assert row is not None
    stored = dict(zip(table(resource.name).columns, table(resource.name).row(command, command.stored_at), strict=True))
    columns = [*reversed(list(stored)), "deleted"]
    stored["deleted"] = 0
    assert decoder(resource.name, columns)([stored[c] for c in columns]) == row


def lane(**data: object) -> object:
    """The todos lane's command for a canonical put line of this data (None: it declines)."""
    command = make_command("put", "todos", OWNER, ID, 1_700_000_000_000_000, OP, {**factories.make("todos"), **data})
    return lanes.from_line(command.to_line()[:-1].decode("utf-8"))


def test_the_line_lane_takes_every_declared_limit_and_nothing_beyond() -> None:
    rules = RESOURCES["todos"].rules()
    title, notes, tags = rules["title"].max_length, rules["notes"].max_length, rules["tags"].max_items
    assert title and notes and tags
    assert lane(title="x" * title) is not None
    assert lane(title="x" * (title + 1)) is None
    assert lane(notes="x" * notes) is not None
    assert lane(notes="x" * (notes + 1)) is None
    assert lane(tags=[f"t{n}" for n in range(tags)]) is not None
    assert lane(tags=[f"t{n}" for n in range(tags + 1)]) is None
    pattern = re.compile(rules["tags"].pattern or "")
    for tag in ("a", "a" * 32, "a" * 33, "-a", "A", "a_b-c", "0"):
        taken = lane(tags=[tag]) is not None
        assert taken == (pattern.fullmatch(tag) is not None), tag
    for state in (*rules["state"].choices, "closed"):
        assert (lane(state=state) is not None) == (state in rules["state"].choices)
    low, high = rules["priority"].minimum, rules["priority"].maximum
    assert low is not None and high is not None
    for priority in range(low - 2, high + 3):
        assert (lane(priority=priority) is not None) == (low <= priority <= high), priority
