"""The loader's order-independence property, shared by the SQLite (functional) and MariaDB
(integration) tiers.

PROPERTY: however a command history is split into delivered objects, whatever order those
objects (and the lines inside them) arrive in, however often an object or a command is delivered
again (also with --force), the tables end up exactly as when the history is applied one command
at a time in (version, op_id) order. Every column is compared, tombstones and created_at/updated_at
included. The rows are also checked against a model written from the contract alone.

What varies (see `histories` and `deliveries`):
- commands: puts and deletes of a few keys, several owners, both resources (todos, profiles),
  equal versions with different op_ids;
- each delivery: how the commands are split into objects, the order of objects and of lines, the
  same object loaded again (skipped by the ledger, or forced), a command repeated in other
  objects, junk lines, GZIP by content, commands concatenated without newlines (as Firehose
  does), and equivalent spellings of a line (`at` in another offset, defaults left out, due_at in
  another offset), which must all land the same.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.database import Database
from chalicelib.ids import parse_rfc3339
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.models import validate_profile, validate_todo

OWNERS = ("alice", "bob", "carol-ü")
TODO_IDS = (
    "0190b2a0-0000-7000-8000-000000000001",
    "0190b2a0-0000-7000-8000-000000000002",
    "ffffffff-0000-7000-8000-000000000003",
)
BASE_VERSION = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
TABLES = ("todos", "profiles", "ingest_batches", "ingest_rejects")
TODO_COLUMNS = "owner, id, title, notes, state, tags, due_at, version, op_id, deleted, created_at, updated_at"
PROFILE_COLUMNS = "owner, display_name, locale, timezone, version, op_id, deleted, created_at, updated_at"
JUNK_LINES = (b"not json at all", b'{"v": 2}', b"[1, 2, 3]", b'{"v": 1, "op": "put"}', b"\xff\xfe broken")

# -- strategies ------------------------------------------------------------------------------------
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
TODO_DATA = st.fixed_dictionaries(
    {
        "title": st.one_of(st.sampled_from(["a", "b", "buy milk"]), TEXT.filter(bool)),
        "notes": st.one_of(st.just(""), TEXT),
        "state": st.sampled_from(["open", "done"]),
        "tags": st.lists(st.sampled_from(["home", "work", "x-1", "a_b"]), unique=True, max_size=3),
        "due_at": st.one_of(
            st.none(),
            st.sampled_from(["2030-01-01T10:00:00+01:00", "2030-01-01T09:00:00Z", "2031-06-30T23:59:59.5-07:30"]),
        ),
    }
).map(validate_todo)
PROFILE_DATA = st.fixed_dictionaries(
    {
        "display_name": st.one_of(st.sampled_from(["Alice", "Bob"]), TEXT.filter(bool)),
        "locale": st.sampled_from(["en", "pt-BR", "fr"]),
        "timezone": st.sampled_from(["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"]),
    }
).map(validate_profile)


@st.composite
def histories(draw: st.DrawFn, max_commands: int = 12) -> list[WriteCommand]:
    """A history of distinct commands (unique op_ids); versions collide on purpose."""
    size = draw(st.integers(1, max_commands))
    op_ids = draw(st.lists(st.uuids(), min_size=size, max_size=size, unique=True))
    history = []
    for op_id in op_ids:
        resource = draw(st.sampled_from(("todos", "todos", "profiles")))
        owner = draw(st.sampled_from(OWNERS))
        id_ = draw(st.sampled_from(TODO_IDS)) if resource == "todos" else owner
        op = draw(st.sampled_from(("put", "put", "delete")))
        version = BASE_VERSION + draw(st.integers(0, 4)) * draw(st.sampled_from((1, 1_000_000)))
        data = None if op == "delete" else draw(TODO_DATA if resource == "todos" else PROFILE_DATA)
        history.append(make_command(op, resource, owner, id_, version, str(op_id), data))
    return history


@dataclass
class Delivery:
    """The objects (each a list of command positions, with junk marked -1) and the load order."""

    objects: list[list[int]]
    gzipped: list[bool]
    concatenated: list[bool]
    spellings: dict[tuple[int, int], int]  # (object, line) -> which equivalent spelling of the line
    loads: list[tuple[int, bool]]  # (object, force)


@st.composite
def deliveries(draw: st.DrawFn, history: list[WriteCommand]) -> Delivery:
    count = draw(st.integers(1, len(history) + 2))
    objects: list[list[int]] = [[] for _ in range(count)]
    for position in range(len(history)):
        objects[draw(st.integers(0, count - 1))].append(position)
        for again in draw(st.lists(st.integers(0, count - 1), max_size=2)):  # the command delivered again
            objects[again].append(position)
    for index in range(count):
        if draw(st.integers(0, 4)) == 0:
            objects[index].append(-1 - draw(st.integers(0, len(JUNK_LINES) - 1)))
        objects[index] = draw(st.permutations(objects[index]))
    spellings = {(o, line): draw(st.integers(0, 3)) for o, lines in enumerate(objects) for line in range(len(lines))}
    order = list(draw(st.permutations(range(count))))
    repeats = draw(st.lists(st.tuples(st.integers(0, count - 1), st.booleans()), max_size=3))
    loads = [(o, False) for o in order]
    for obj, force in repeats:
        loads.insert(draw(st.integers(0, len(loads))), (obj, force))
    return Delivery(
        objects=objects,
        gzipped=[draw(st.booleans()) for _ in range(count)],
        concatenated=[draw(st.booleans()) for _ in range(count)],
        spellings=spellings,
        loads=loads,
    )


# -- rendering objects ----------------------------------------------------------------------------
def respelled(timestamp: str, hours: int, separator: str = "T") -> str:
    """The same instant as `timestamp` (RFC 3339), written with another offset."""
    moment = parse_rfc3339(timestamp).replace(tzinfo=UTC)
    text = moment.astimezone(timezone(timedelta(hours=hours))).isoformat(timespec="microseconds")
    return text[:10] + separator + text[11:]


def render(command: WriteCommand, spelling: int) -> bytes:
    """One line of the command, in one of several spellings that all mean the same command."""
    line = json.loads(command.to_line())
    if spelling == 1:
        line["at"] = respelled(command.at, 2)
    elif spelling == 2 and command.data is not None:
        line["data"] = {k: v for k, v in command.data.items() if _DEFAULTS.get(k, _MISSING) != v}
    elif spelling == 3:
        line["at"] = respelled(command.at, -5, "t")
        if command.data is not None and command.data.get("due_at"):
            line["data"]["due_at"] = respelled(command.data["due_at"], 9)
    items = list(line.items())
    return json.dumps(dict(reversed(items) if spelling % 2 else items), ensure_ascii=spelling == 2).encode()


_MISSING = object()
_DEFAULTS: dict[str, Any] = {
    "notes": "",
    "state": "open",
    "tags": [],
    "due_at": None,
    "locale": "en",
    "timezone": "UTC",
}


def junk_lines(delivery: Delivery, index: int) -> int:
    return sum(1 for position in delivery.objects[index] if position < 0)


def object_body(history: list[WriteCommand], delivery: Delivery, index: int) -> bytes:
    lines = []
    for line_no, position in enumerate(delivery.objects[index]):
        if position < 0:
            lines.append(JUNK_LINES[-1 - position])
        else:
            lines.append(render(history[position], delivery.spellings[(index, line_no)]))
    # Firehose adds no delimiters; junk, though, cannot be told apart from its neighbours without one.
    joiner = b"" if delivery.concatenated[index] and not junk_lines(delivery, index) else b"\n"
    body = joiner.join(lines) + (b"\n" if lines else b"")
    return gzip.compress(body, mtime=0) if delivery.gzipped[index] else body


# -- running and reading ---------------------------------------------------------------------------
def object_key(index: int) -> str:
    return f"writes/2026/01/01/00/sluice-local-1-2026-01-01-00-00-00-{index:04d}"


def load_in_order(db: Database, history: list[WriteCommand]) -> None:
    """The reference: one command per object, in (version, op_id) order."""
    loader = BatchLoader(db)
    for number, command in enumerate(sorted(history, key=lambda c: (c.version, c.op_id))):
        body = command.to_line()
        loader.load("reference", f"writes/ref/{number:06d}", local_etag(body), body)


def load_delivery(db: Database, history: list[WriteCommand], delivery: Delivery) -> tuple[int, int]:
    """Load the delivery; returns (lines quarantined, lines that should have been)."""
    loader = BatchLoader(db)
    bodies = [object_body(history, delivery, i) for i in range(len(delivery.objects))]
    rejected = expected = 0
    loaded: set[int] = set()
    for index, force in delivery.loads:
        result = loader.load("bucket", object_key(index), local_etag(bodies[index]), bodies[index], force=force)
        assert result.skipped == (0 if force or index not in loaded else 1)
        if force or index not in loaded:
            expected += junk_lines(delivery, index)
        loaded.add(index)
        rejected += result.rejected
    return rejected, expected


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bytes):
        return value.decode()
    return value


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every row of both resource tables, in a dialect-independent form."""
    todos = db.query(f"SELECT {TODO_COLUMNS} FROM todos")
    profiles = db.query(f"SELECT {PROFILE_COLUMNS} FROM profiles")
    return {
        "todos": sorted(tuple(_text(v) for v in row) for row in todos),
        "profiles": sorted(tuple(_text(v) for v in row) for row in profiles),
    }


def truncate(db: Database) -> None:
    with db.transaction() as cur:
        for table in TABLES:
            cur.execute(f"DELETE FROM {table}")


def model(history: list[WriteCommand]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The contract's rule alone: the greatest (version, op_id) wins; created_at is the earliest
    `at`, updated_at the winner's; a delete is a tombstone holding its version."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for command in history:
        key = command.key
        best = out.get(key)
        created = min(command.stored_at, best["created_at"]) if best else command.stored_at
        if best is None or (command.version, command.op_id) > (best["version"], best["op_id"]):
            best = {
                "version": command.version,
                "op_id": command.op_id,
                "deleted": int(command.op == "delete"),
                "data": command.data,
                "updated_at": command.stored_at,
            }
        out[key] = {**best, "created_at": created}
    return out


def check_against_model(rows: dict[str, list[tuple[Any, ...]]], history: list[WriteCommand]) -> None:
    expected = model(history)
    seen = set()
    for row in rows["todos"]:
        owner, id_, title, notes, state, tags, due_at, version, op_id, deleted, created, updated = row
        want = expected[("todos", owner, id_)]
        seen.add(("todos", owner, id_))
        assert (int(version), op_id, int(deleted), created, updated) == (
            want["version"],
            want["op_id"],
            want["deleted"],
            want["created_at"],
            want["updated_at"],
        )
        if not want["deleted"]:
            data = want["data"]
            assert (title, notes, state, json.loads(tags), due_at) == (
                data["title"],
                data["notes"],
                data["state"],
                data["tags"],
                data["due_at"],
            )
    for row in rows["profiles"]:
        owner, display_name, locale, zone, version, op_id, deleted, created, updated = row
        want = expected[("profiles", owner, owner)]
        seen.add(("profiles", owner, owner))
        assert (int(version), op_id, int(deleted), created, updated) == (
            want["version"],
            want["op_id"],
            want["deleted"],
            want["created_at"],
            want["updated_at"],
        )
        if not want["deleted"]:
            assert (display_name, locale, zone) == tuple(
                want["data"][k] for k in ("display_name", "locale", "timezone")
            )
    assert seen == set(expected), "every key of the history has exactly one row"


def assert_split_invariance(fresh_db: Callable[[], Database], history: list[WriteCommand], delivery: Delivery) -> None:
    """The property. `fresh_db()` gives an empty database (a new file, or truncated tables)."""
    db = fresh_db()
    load_in_order(db, history)
    reference = snapshot(db)
    check_against_model(reference, history)

    db = fresh_db()
    rejected, expected = load_delivery(db, history, delivery)
    assert snapshot(db) == reference
    assert rejected == expected, "every junk line is quarantined, and nothing else"
