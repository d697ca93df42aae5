"""What is derived from the resources' declarations (chalicelib.resources), or held to them.

The validators and the OpenAPI document read the declarations directly (tests/unit/test_models.py
and tests/unit/test_openapi.py test their boundaries); the DDL, the loader's tables and line lane,
and the rows the cache keeps restate them, and are checked here.
"""

from __future__ import annotations

import re

import pytest

from chalicelib.commands import make_command
from chalicelib.db.schema import MIGRATIONS, table_ddl
from chalicelib.loader import todo_lane
from chalicelib.loader.apply import TABLES, DeclaredTable
from chalicelib.models import validate_profile, validate_todo
from chalicelib.readers.cache import row_for_command
from chalicelib.resources import RESOURCES, Resource

OWNER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
OP = "9b2f4c1e-8d7a-4e3b-a1c2-d3e4f5a6b7c8"


def column_types(dialect: str, table: str) -> dict[str, str]:
    """Each column's type as the migrations leave it (a later MODIFY/CHANGE wins)."""
    types: dict[str, str] = {}
    for _, _, statements in MIGRATIONS:
        for statement in statements.get(dialect, []):
            text = " ".join(statement.split())
            if re.search(rf"\bTABLE (?:IF NOT EXISTS )?`?{table}`?[ (]", text) is None:
                continue
            for match in re.finditer(
                r"(?:^|[(,]\s*|MODIFY (?:COLUMN )?)`?([a-z_]+)`? ([A-Z][A-Za-z0-9_() ]*?) (?:NOT NULL|NULL)\b", text
            ):
                types[match.group(1)] = match.group(2)
    return types


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=lambda r: r.name)
def test_ddl_columns_are_the_declared_storage(resource: Resource) -> None:
    mysql = column_types("mysql", resource.name)
    sqlite = column_types("sqlite", resource.name)
    for name, rule in resource.rules().items():
        assert mysql[name] == rule.mysql, f"{resource.name}.{name}"
        assert name in sqlite, f"{resource.name}.{name} in SQLite"
        size = re.fullmatch(r"VARCHAR\((\d+)\).*", rule.mysql)
        if size and rule.kind == "text":
            assert rule.max_length is not None and int(size.group(1)) >= rule.max_length


def test_a_full_todo_fits_its_columns() -> None:
    rules = RESOURCES["todos"].rules()
    tags = rules["tags"]
    assert tags.max_items is not None
    widest = "[" + ",".join(['"' + "t" * 32 + '"'] * tags.max_items) + "]"
    assert validate_todo({"title": "x", "tags": [f"{n:02d}" + "t" * 30 for n in range(tags.max_items)]})
    assert len(widest) <= int(re.findall(r"\d+", tags.mysql)[0])
    assert len("2026-01-01T00:00:00.000000Z") <= int(re.findall(r"\d+", rules["due_at"].mysql)[0])
    assert max(len(state) for state in rules["state"].choices) <= int(re.findall(r"\d+", rules["state"].mysql)[0])


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=lambda r: r.name)
def test_the_loader_writes_the_declared_fields(resource: Resource) -> None:
    assert TABLES[resource.name].data_columns == resource.field_names


def test_the_cache_keeps_rows_in_the_declared_read_shape() -> None:
    todo = make_command("put", "todos", OWNER, ID, 1, OP, validate_todo({"title": "t"}))
    profile = make_command("put", "profiles", OWNER, OWNER, 1, OP, validate_profile({"display_name": "d"}))
    for command in (todo, profile):
        row = row_for_command(command, command.stored_at)
        assert row is not None
        assert tuple(row) == RESOURCES[command.resource].read_fields


def lane(data: dict[str, object]) -> object:
    """The line lane's command for a canonical put line of this data (None: it declines)."""
    command = make_command("put", "todos", OWNER, ID, 1_700_000_000_000_000, OP, data)
    return todo_lane._todo_from_line(command.to_line()[:-1].decode("utf-8"))


def todo(**fields: object) -> dict[str, object]:
    return {"title": "t", "notes": "", "state": "open", "tags": [], "due_at": None, **fields}


def test_the_line_lane_takes_every_declared_limit_and_nothing_beyond() -> None:
    rules = RESOURCES["todos"].rules()
    title, notes, tags = rules["title"].max_length, rules["notes"].max_length, rules["tags"].max_items
    assert title and notes and tags
    assert lane(todo(title="x" * title)) is not None
    assert lane(todo(title="x" * (title + 1))) is None
    assert lane(todo(notes="x" * notes)) is not None
    assert lane(todo(notes="x" * (notes + 1))) is None
    assert lane(todo(tags=[f"t{n}" for n in range(tags)])) is not None
    assert lane(todo(tags=[f"t{n}" for n in range(tags + 1)])) is None
    pattern = re.compile(rules["tags"].pattern or "")
    for tag in ("a", "a" * 32, "a" * 33, "-a", "A", "a_b-c", "0"):
        taken = lane(todo(tags=[tag])) is not None
        assert taken == (pattern.fullmatch(tag) is not None), tag
    for state in (*rules["state"].choices, "closed"):
        assert (lane(todo(state=state)) is not None) == (state in rules["state"].choices)


def test_the_todo_table_writes_what_the_declared_table_would() -> None:
    hand_made, declared = TABLES["todos"], DeclaredTable(RESOURCES["todos"])
    for data in (
        validate_todo({"title": "t"}),
        validate_todo(
            {"title": "é", "notes": "n", "state": "done", "tags": ["a", "b"], "due_at": "2026-01-01T10:00:00+02:00"}
        ),
        None,
    ):
        command = make_command("delete" if data is None else "put", "todos", OWNER, ID, 1, OP, data)
        assert hand_made.row(command, command.stored_at) == declared.row(command, command.stored_at)


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=lambda r: r.name)
def test_a_table_made_from_the_declaration_has_the_migrated_columns(resource: Resource) -> None:
    made = " ".join(table_ddl(resource, "mysql").split())
    for name, rule in resource.rules().items():
        assert f" {name} {rule.mysql} " in made
    assert column_types("sqlite", resource.name).keys() <= set(
        re.findall(r"(\w+) (?:TEXT|INTEGER)", table_ddl(resource, "sqlite"))
    )
