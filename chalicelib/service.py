"""The API's use cases, free of HTTP: turn validated input into write commands, and read rows.

Failures are the project's domain errors (`NotFound`, `Unavailable`, ...); only `http.guarded`
turns them into HTTP answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.errors import NotFound, Unavailable
from chalicelib.identity import Principal
from chalicelib.ids import VersionClock, derived_id, new_op_id, uuid7
from chalicelib.readers import Row, Seen, TodoReader
from chalicelib.writers import CommandWriter

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand
    from chalicelib.readers.pending import PendingWrites

# How long a client asking for a min_version no read can show yet is told to wait.
MIN_VERSION_RETRY_AFTER = 1


@dataclass(frozen=True)
class Accepted:
    id: str
    version: int


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    last_id: str | None


class TodoService:
    def __init__(
        self, reader: TodoReader, writer: CommandWriter, clock: VersionClock, pending: PendingWrites | None = None
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.clock = clock
        self.pending = pending  # with CACHE_URL: accepted writes kept for their writer's reads

    # -- writes: never touch the database ------------------------------------------------
    def _command(
        self, op: str, resource: str, owner: str, id_: str, data: dict[str, Any] | None, after: int | None = None
    ) -> WriteCommand:
        from chalicelib.commands import make_command  # not on the read path: GETs never import it

        return make_command(op, resource, owner, id_, self.clock.next(after), new_op_id(), data)

    def _send(self, commands: Sequence[WriteCommand], new_ids: bool = False) -> list[Accepted]:
        """Write `commands` (one record); `new_ids`: their ids were made here (UUIDv7), so
        nothing can be stored for them yet (PendingWrites.record)."""
        self.writer.write(commands)
        if self.pending is not None:  # after the transport's acceptance, never instead of it
            self.pending.record(commands, new_ids)
        return [Accepted(c.id, c.version) for c in commands]

    def create_todo(
        self, who: Principal, data: dict[str, Any], idempotency_key: str | None, min_version: int | None = None
    ) -> Accepted:
        todo_id = derived_id(who.sub, idempotency_key) if idempotency_key else uuid7()
        command = self._command("put", "todos", who.sub, todo_id, data, min_version)
        return self._send([command], new_ids=not idempotency_key)[0]

    def create_todos(
        self,
        who: Principal,
        items: list[dict[str, Any]],
        idempotency_key: str | None,
        min_version: int | None = None,
    ) -> list[Accepted]:
        commands = []
        for position, data in enumerate(items):
            todo_id = derived_id(who.sub, idempotency_key, position) if idempotency_key else uuid7()
            commands.append(self._command("put", "todos", who.sub, todo_id, data, min_version))
        # One write: the writer sends a batch's commands as one record (one object, one
        # transaction), so a 503 means all or none of them may land, never some.
        return self._send(commands, new_ids=not idempotency_key)

    def put_todo(self, who: Principal, todo_id: str, data: dict[str, Any], min_version: int | None = None) -> Accepted:
        return self._send([self._command("put", "todos", who.sub, todo_id, data, min_version)])[0]

    def delete_todo(self, who: Principal, todo_id: str, min_version: int | None = None) -> Accepted:
        return self._send([self._command("delete", "todos", who.sub, todo_id, None, min_version)])[0]

    def put_profile(self, who: Principal, data: dict[str, Any], min_version: int | None = None) -> Accepted:
        return self._send([self._command("put", "profiles", who.sub, who.sub, data, min_version)])[0]

    # -- reads ------------------------------------------------------------------------------
    def get_todo(self, owner: str, todo_id: str, min_version: int | None = None) -> Row:
        if self.pending is None and min_version is None:
            row = self.reader.get_todo(owner, todo_id)
        elif self.pending is not None:  # the owner's own read: pending, cached and replica states
            row = _at_least(self.pending.get_todo(owner, todo_id, min_version), min_version)
        else:
            row = _at_least(self.reader.seen_todo(owner, todo_id), min_version)
        if row is None:
            raise NotFound("todo")
        return row

    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None, own: bool = False) -> Page:
        """A page of `owner`'s todos; `own` (the caller's own list) merges their pending writes."""
        if own and self.pending is not None:
            rows = self.pending.list_todos(owner, after, limit + 1, state)
        else:
            rows = self.reader.list_todos(owner, after, limit + 1, state)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, rows[-1]["id"] if more and rows else None)

    def get_profile(self, owner: str, min_version: int | None = None) -> Row:
        if self.pending is None and min_version is None:
            row = self.reader.get_profile(owner)
        elif self.pending is not None:
            row = _at_least(self.pending.get_profile(owner, min_version), min_version)
        else:
            row = _at_least(self.reader.seen_profile(owner), min_version)
        if row is None:
            raise NotFound("profile")
        return row


def _at_least(seen: Seen, min_version: int | None) -> Row | None:
    """The row of a state at least `min_version` new (None: deleted or never written), or 503
    when no read can show that version yet; never an older state (CONTRACT section 3)."""
    if min_version is not None and seen.version < min_version:
        raise Unavailable("That version is not readable yet; try again shortly.", MIN_VERSION_RETRY_AFTER)
    return seen.row
