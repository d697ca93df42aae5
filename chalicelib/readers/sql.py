"""SQL readers: one database (`SqlReader`), and replicas with failover (`ReplicaReader`)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from chalicelib.db.database import Database
from chalicelib.ids import format_ts
from chalicelib.readers import Row, Seen, SeenLater, TodoReader
from chalicelib.resources import Resource

TODO_COLUMNS = "id, title, notes, state, tags, due_at, version, created_at, updated_at"
GET_TODO = f"SELECT {TODO_COLUMNS} FROM todos WHERE owner = %s AND id = %s AND deleted = 0"
LIST_TODOS = f"SELECT {TODO_COLUMNS} FROM todos WHERE owner = %s AND id > %s AND deleted = 0"
LIST_TODOS_STATE = LIST_TODOS + " AND state = %s"
# Versioned reads see tombstones too (their version answers min_version and pending deletes),
# and the winning command's op_id (a pending write of the same version is ordered by it).
SEEN_TODO = f"SELECT {TODO_COLUMNS}, deleted, op_id FROM todos WHERE owner = %s AND id = %s"
SEEN_PROFILE = (
    "SELECT display_name, locale, timezone, version, created_at, updated_at, deleted, op_id "
    "FROM profiles WHERE owner = %s"
)
# The stored states of given ids (SEEN_TODO for several keys), op_id included.
SEEN_TODOS = f"SELECT {TODO_COLUMNS}, deleted, op_id FROM todos WHERE owner = %s AND id IN "
# A page's versioned read: a tombstone's version comes negated (versions are positive), so the
# rows carry no `deleted` column (one field fewer to decode per row of a page), and no op_id
# either: only a row whose version ties the caller's pending write needs it, and `seen_todos`
# reads those again (pending.merge_page), so the many rows of every page do not pay for the few.
LIST_SEEN = (
    "SELECT id, title, notes, state, tags, due_at, CASE WHEN deleted = 0 THEN version ELSE -version END, "
    "created_at, updated_at FROM todos WHERE owner = %s AND id > %s"
)
GET_PROFILE = (
    "SELECT display_name, locale, timezone, version, created_at, updated_at "
    "FROM profiles WHERE owner = %s AND deleted = 0"
)


def ts_out(value: Any) -> str:
    """A stored timestamp (datetime from MySQL, fixed-width text from SQLite) as RFC 3339 UTC."""
    if type(value) is datetime and value.tzinfo is None:  # MySQL's, stored in UTC: format_ts's result
        return value.isoformat() + "Z"
    if isinstance(value, datetime):
        return format_ts(value)
    return format_ts(datetime.fromisoformat(value))


def todo_row(row: Sequence[Any]) -> Row:
    return {
        "id": row[0],
        "title": row[1],
        "notes": row[2],
        "state": row[3],
        "tags": json.loads(row[4]),
        "due_at": row[5],
        "version": int(row[6]),
        "created_at": ts_out(row[7]),
        "updated_at": ts_out(row[8]),
    }


def profile_row(row: Sequence[Any]) -> Row:
    return {
        "display_name": row[0],
        "locale": row[1],
        "timezone": row[2],
        "version": int(row[3]),
        "created_at": ts_out(row[4]),
        "updated_at": ts_out(row[5]),
    }


class SqlReader(TodoReader):
    """Reads one database (the master, a replica, or the embedded SQLite file)."""

    def __init__(self, db: Database) -> None:
        self.db = db  # db.query rewrites the %s placeholders for SQLite (cached per statement)

    def get_todo(self, owner: str, todo_id: str) -> Row | None:
        rows = self.db.query(GET_TODO, (owner, todo_id))
        return todo_row(rows[0]) if rows else None

    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> list[Row]:
        params: list[Any] = [owner, after or ""]
        text = LIST_TODOS
        if state is not None:
            text = LIST_TODOS_STATE
            params.append(state)
        text += " ORDER BY id LIMIT %s"
        params.append(limit)
        return [todo_row(r) for r in self.db.query(text, params)]

    def get_profile(self, owner: str) -> Row | None:
        rows = self.db.query(GET_PROFILE, (owner,))
        return profile_row(rows[0]) if rows else None

    def get_row(self, resource: Resource, owner: str, id_: str | None = None) -> Row | None:
        """One live row of a declared resource, read by its key: the general read for a resource
        added with one declaration (todos and profiles keep their own statements, held to it by
        tests/unit/test_resources.py)."""
        where = "owner = %s AND id = %s" if resource.by_id else "owner = %s"
        text = f"SELECT {', '.join(resource.read_fields)} FROM {resource.name} WHERE {where} AND deleted = 0"
        rows = self.db.query(text, (owner, id_) if resource.by_id else (owner,))
        return declared_row(resource, rows[0]) if rows else None

    def seen_todo(self, owner: str, todo_id: str) -> Seen:
        rows = self.db.query(SEEN_TODO, (owner, todo_id))
        return _seen(todo_id, rows[0]) if rows else Seen(todo_id, None, 0)

    def seen_profile(self, owner: str) -> Seen:
        rows = self.db.query(SEEN_PROFILE, (owner,))
        if not rows:
            return Seen(owner, None, 0)
        stored = rows[0]
        if stored[6]:
            return Seen(owner, None, int(stored[3]), stored[7], True, ts_out(stored[4]))
        return Seen(owner, profile_row(stored), int(stored[3]), stored[7])

    def list_seen(
        self, owner: str, after: str | None, limit: int, state: str | None, ids: Collection[str]
    ) -> list[Seen]:
        return list(self.start_list_seen(owner, after, limit, state, ids)())

    def start_list_seen(
        self, owner: str, after: str | None, limit: int, state: str | None, ids: Collection[str]
    ) -> SeenLater:
        text, params = list_seen_statement(owner, after, limit, state, ids)
        rows = self.db.send_query(text, params)

        def seen(replaced: Mapping[str, int] | None = None) -> list[Seen]:
            new = tuple.__new__  # Seen(...) without its Python-level __new__: one per row of a page
            older = (replaced or {}).get
            # A tombstone comes with its version negated (LIST_SEEN): no extra column per row. A
            # row of a version older than a pending write's (which replaces it whatever the op_ids)
            # needs only its created_at; a tie keeps the whole row.
            return [
                (
                    new(
                        Seen,
                        (
                            r[0],
                            todo_row(r) if older(r[0], 0) <= r[6] else {"created_at": ts_out(r[7])},
                            r[6],
                            "",
                            True,
                            None,
                        ),
                    )
                    if r[6] > 0
                    else _tombstone(r)
                )
                for r in rows()
            ]

        return seen

    def seen_todos(self, owner: str, ids: Collection[str]) -> dict[str, Seen]:
        if not ids:
            return {}
        rows = self.db.query(SEEN_TODOS + f"({', '.join(['%s'] * len(ids))})", (owner, *ids))
        return {r[0]: _seen(r[0], r) for r in rows}


def _tombstone(r: Sequence[Any]) -> Seen:
    """A page's tombstone (its version negated in LIST_SEEN), with its created_at."""
    return Seen(r[0], None, -r[6], "", True, ts_out(r[7]))


UUID_CHARS = "0123456789abcdef-"


def list_seen_statement(
    owner: str, after: str | None, limit: int, state: str | None, ids: Collection[str]
) -> tuple[str, list[Any]]:
    """LIST_SEEN for a page: live rows matching `state`, and the stored state of each of `ids`."""
    params: list[Any] = [owner, after or ""]
    live = "deleted = 0" if state is None else "deleted = 0 AND state = %s"
    if state is not None:
        params.append(state)
    text = LIST_SEEN
    if ids:
        if all(len(i) == 36 and not i.strip(UUID_CHARS) for i in ids):  # written out: nothing to escape
            listed = "', '".join(ids)
            text += f" AND ({live} OR id IN ('{listed}'))"
        else:
            text += f" AND ({live} OR id IN ({', '.join(['%s'] * len(ids))}))"
            params.extend(ids)
    else:
        text += f" AND {live}"
    params.append(limit)
    return text + " ORDER BY id LIMIT %s", params


def declared_row(resource: Resource, stored: Sequence[Any]) -> Row:
    """A stored row (its columns in `resource.read_fields` order) as GET shows it."""
    row: Row = {}
    for name, kind, value in zip(resource.read_fields, _kinds(resource), stored, strict=True):
        if kind == "list":
            value = json.loads(value)
        elif kind == "stamp":
            value = ts_out(value)
        elif kind == "version":
            value = int(value)
        row[name] = value
    return row


def _kinds(resource: Resource) -> tuple[str, ...]:
    key = ("id",) if resource.by_id else ()
    return key + tuple(rule.kind for rule in resource.rules().values()) + ("version", "stamp", "stamp")


def _seen(todo_id: str, stored: Sequence[Any]) -> Seen:
    """A SEEN_TODO row: the live row, or a tombstone with its created_at."""
    if stored[9]:
        return Seen(todo_id, None, int(stored[6]), stored[10], True, ts_out(stored[7]))
    return Seen(todo_id, todo_row(stored), int(stored[6]), stored[10])
