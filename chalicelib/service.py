"""The API's use cases, free of HTTP: turn validated input into write commands, and read rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.errors import not_found
from chalicelib.identity import Principal
from chalicelib.ids import VersionClock, derived_id, new_op_id, uuid7
from chalicelib.readers import Row, TodoReader
from chalicelib.writers import CommandWriter

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand


@dataclass(frozen=True)
class Accepted:
    id: str
    version: int


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    last_id: str | None


class TodoService:
    def __init__(self, reader: TodoReader, writer: CommandWriter, clock: VersionClock) -> None:
        self.reader = reader
        self.writer = writer
        self.clock = clock

    # -- writes: never touch the database ------------------------------------------------
    def _command(self, op: str, resource: str, owner: str, id_: str, data: dict[str, Any] | None) -> WriteCommand:
        from chalicelib.commands import make_command  # not on the read path: GETs never import it

        return make_command(op, resource, owner, id_, self.clock.next(), new_op_id(), data)

    def _send(self, commands: Sequence[WriteCommand]) -> list[Accepted]:
        self.writer.write(commands)
        return [Accepted(c.id, c.version) for c in commands]

    def create_todo(self, who: Principal, data: dict[str, Any], idempotency_key: str | None) -> Accepted:
        todo_id = derived_id(who.sub, idempotency_key) if idempotency_key else uuid7()
        return self._send([self._command("put", "todos", who.sub, todo_id, data)])[0]

    def create_todos(self, who: Principal, items: list[dict[str, Any]], idempotency_key: str | None) -> list[Accepted]:
        commands = []
        for position, data in enumerate(items):
            todo_id = derived_id(who.sub, idempotency_key, position) if idempotency_key else uuid7()
            commands.append(self._command("put", "todos", who.sub, todo_id, data))
        # One write: the writer sends a batch's commands as one record (one object, one
        # transaction), so a 503 means all or none of them may land, never some.
        return self._send(commands)

    def put_todo(self, who: Principal, todo_id: str, data: dict[str, Any]) -> Accepted:
        return self._send([self._command("put", "todos", who.sub, todo_id, data)])[0]

    def delete_todo(self, who: Principal, todo_id: str) -> Accepted:
        return self._send([self._command("delete", "todos", who.sub, todo_id, None)])[0]

    def put_profile(self, who: Principal, data: dict[str, Any]) -> Accepted:
        return self._send([self._command("put", "profiles", who.sub, who.sub, data)])[0]

    # -- reads ------------------------------------------------------------------------------
    def get_todo(self, owner: str, todo_id: str) -> Row:
        row = self.reader.get_todo(owner, todo_id)
        if row is None:
            raise not_found("todo")
        return row

    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> Page:
        rows = self.reader.list_todos(owner, after, limit + 1, state)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, rows[-1]["id"] if more and rows else None)

    def get_profile(self, owner: str) -> Row:
        row = self.reader.get_profile(owner)
        if row is None:
            raise not_found("profile")
        return row
