"""The loader's order-independence property, shared by the SQLite (functional) and MariaDB
(integration) tiers.

PROPERTY: however a command history is split into delivered objects, whatever order those
objects (and the lines inside them) arrive in, however often an object or a command is delivered
again (also with --force), the tables end up exactly as when the history is applied one command
at a time in (version, op_id) order. Every column is compared, tombstones and created_at/updated_at
included. The rows are also checked against a model written from the contract alone.

What varies (see `histories` and `deliveries`):
- commands: puts and deletes of a few keys, several owners, every declared resource (todos,
  lists, profiles; every field drawn from its declaration by tests/factories.py), equal versions
  with different op_ids;
- each delivery: how the commands are split into objects, the order of objects and of lines, the
  same object loaded again (skipped by the ledger, or forced), a command repeated in other
  objects, junk lines, GZIP by content, commands concatenated without newlines (as Firehose
  does), and equivalent spellings of a line (`at` in another offset, defaults left out, date-times
  in another offset, a version-1 line for a command that has only version-1 fields and defaults),
  which must all land the same.
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
from chalicelib.resources import RESOURCES
from chalicelib.rows import table
from tests.factories import older, small_documents, without_defaults

OWNERS = ("alice", "bob", "carol-ü")
TODO_IDS = (
    "0190b2a0-0000-7000-8000-000000000001",
    "0190b2a0-0000-7000-8000-000000000002",
    "ffffffff-0000-7000-8000-000000000003",
)
BASE_VERSION = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
TABLES = (*RESOURCES, "ingest_batches", "ingest_rejects")
JUNK_LINES = (b"not json at all", b'{"v": 0}', b"[1, 2, 3]", b'{"v": 1, "op": "put"}', b"\xff\xfe broken")


@st.composite
def histories(draw: st.DrawFn, max_commands: int = 12) -> list[WriteCommand]:
    """A history of distinct commands (unique op_ids); versions collide on purpose."""
    size = draw(st.integers(1, max_commands))
    op_ids = draw(st.lists(st.uuids(), min_size=size, max_size=size, unique=True))
    history = []
    for op_id in op_ids:
        resource = draw(st.sampled_from(("todos", "todos", *RESOURCES)))
        owner = draw(st.sampled_from(OWNERS))
        id_ = draw(st.sampled_from(TODO_IDS)) if RESOURCES[resource].by_id else owner
        op = draw(st.sampled_from(("put", "put", "delete")))
        version = BASE_VERSION + draw(st.integers(0, 4)) * draw(st.sampled_from((1, 1_000_000)))
        data = None if op == "delete" else draw(small_documents(resource))
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
    declared = RESOURCES[command.resource]
    if spelling == 1:
        line["at"] = respelled(command.at, 2)
        if version_1_holds(command):
            line = older(line, 1)
    elif spelling == 2 and command.data is not None:
        line["data"] = without_defaults(command.resource, command.data)
    elif spelling == 3:
        line["at"] = respelled(command.at, -5, "t")
        for name, rule in declared.rules().items():
            if rule.kind == "datetime" and command.data is not None and command.data.get(name):
                line["data"][name] = respelled(command.data[name], 9)
    items = list(line.items())
    return json.dumps(dict(reversed(items) if spelling % 2 else items), ensure_ascii=spelling == 2).encode()


def version_1_holds(command: WriteCommand) -> bool:
    """Whether a version-1 writer could have written this command: its resource existed then, and
    the fields added since hold their defaults."""
    declared = RESOURCES[command.resource]
    if declared.since > 1:
        return False
    defaults = declared.defaults()
    newer = [name for name, rule in declared.rules().items() if rule.since > 1]
    return command.data is None or all(command.data[name] == defaults[name] for name in newer)


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
    """Every column of every row of every resource table, in a dialect-independent form."""
    out = {}
    for name in RESOURCES:
        rows = db.query(f"SELECT {', '.join(table(name).columns)} FROM {name}")
        out[name] = sorted(tuple(_text(v) for v in row) for row in rows)
    return out


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
    for name, declared in RESOURCES.items():
        columns = table(name).columns
        lists = {f for f, rule in declared.rules().items() if rule.kind == "list"}
        for values in rows[name]:
            row = dict(zip(columns, values, strict=True))
            key = (name, row["owner"], row["id"] if declared.by_id else row["owner"])
            want = expected[key]
            seen.add(key)
            assert (int(row["version"]), row["op_id"], int(row["deleted"]), row["created_at"], row["updated_at"]) == (
                want["version"],
                want["op_id"],
                want["deleted"],
                want["created_at"],
                want["updated_at"],
            )
            if not want["deleted"]:
                data = {f: json.loads(row[f]) if f in lists else row[f] for f in declared.field_names}
                assert data == want["data"]
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
