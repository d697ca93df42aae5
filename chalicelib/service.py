"""The API's use cases, free of HTTP: turn validated input into write commands, and read rows.

Failures are the project's domain errors (`NotFound`, `Unavailable`, ...); only `http.guarded`
turns them into HTTP answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from chalicelib.errors import NotFound, Unavailable
from chalicelib.identity import Principal
from chalicelib.ids import VersionClock, derived_id, new_op_id, uuid7
from chalicelib.readers import Filters, Reader, Row, Seen, state_filter
from chalicelib.resources import RESOURCES
from chalicelib.writers import CommandWriter

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand
    from chalicelib.readers.pending import PendingWrites

# How long a client asking for a min_version no read can show yet is told to wait.
MIN_VERSION_RETRY_AFTER = 1


class Accepted(NamedTuple):
    """A write the transport took: its id and version (a tuple: made on every write)."""

    id: str
    version: int


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    last_id: str | None


class Service:
    """The use cases of every declared resource: writes become commands, reads return rows."""

    def __init__(
        self, reader: Reader, writer: CommandWriter, clock: VersionClock, pending: PendingWrites | None = None
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.clock = clock
        self.pending = pending  # with CACHE_URL: accepted writes kept for their writer's reads

    # -- writes: never touch the database ------------------------------------------------
    def _command(
        self, op: str, resource: str, owner: str, id_: str, data: dict[str, Any] | None, after: int | None = None
    ) -> WriteCommand:
        return _make_command()(op, resource, owner, id_, self.clock.next(after), new_op_id(), data)

    def _send(self, commands: Sequence[WriteCommand], new_ids: bool = False) -> list[Accepted]:
        """Write `commands` (one record); `new_ids`: their ids were made here (UUIDv7), so
        nothing can be stored for them yet (PendingWrites.record)."""
        self.writer.write(commands)
        if self.pending is not None:  # after the transport's acceptance, never instead of it
            self.pending.record(commands, new_ids)
        return [Accepted(c.id, c.version) for c in commands]

    @staticmethod
    def _new_id(resource: str, owner: str, key: str | None, position: int | None = None) -> str:
        """A POST's id: derived from the Idempotency-Key (per resource: todos keep the derivation
        they had before lists, so a retry across an upgrade names the same todo), or a UUIDv7."""
        if not key:
            return uuid7()
        return derived_id(owner, key, position, scope="" if resource == "todos" else resource)

    def create(
        self, resource: str, who: Principal, data: dict[str, Any], key: str | None, min_version: int | None = None
    ) -> Accepted:
        id_ = self._new_id(resource, who.sub, key)
        return self._send([self._command("put", resource, who.sub, id_, data, min_version)], new_ids=not key)[0]

    def create_many(
        self,
        resource: str,
        who: Principal,
        items: list[dict[str, Any]],
        key: str | None,
        min_version: int | None = None,
    ) -> list[Accepted]:
        commands = [
            self._command("put", resource, who.sub, self._new_id(resource, who.sub, key, position), data, min_version)
            for position, data in enumerate(items)
        ]
        # One write: the writer sends a batch's commands as one record (one object, one
        # transaction), so a 503 means all or none of them may land, never some.
        return self._send(commands, new_ids=not key)

    def put(
        self, resource: str, who: Principal, id_: str, data: dict[str, Any], min_version: int | None = None
    ) -> Accepted:
        return self._send([self._command("put", resource, who.sub, id_, data, min_version)])[0]

    def delete(self, resource: str, who: Principal, id_: str, min_version: int | None = None) -> Accepted:
        return self._send([self._command("delete", resource, who.sub, id_, None, min_version)])[0]

    # -- reads ------------------------------------------------------------------------------
    def get(self, resource: str, owner: str, id_: str, min_version: int | None = None) -> Row:
        """The owner's row (id = owner for a resource with one row per owner), or NotFound."""
        if self.pending is None and min_version is None:
            row = self.reader.get(resource, owner, id_)
        elif self.pending is not None:  # the owner's own read: pending, cached and replica states
            row = _at_least(self.pending.get(resource, owner, id_, min_version), min_version)
        else:
            row = _at_least(self.reader.seen(resource, owner, id_), min_version)
        if row is None:
            raise NotFound(RESOURCES[resource].singular)
        return row

    def list_rows(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, own: bool = False
    ) -> Page:
        """A page of `owner`'s rows; `own` (the caller's own page) merges their pending writes."""
        if own and self.pending is not None:
            rows = self.pending.list_rows(resource, owner, after, limit + 1, filters)
        else:
            rows = self.reader.list_rows(resource, owner, after, limit + 1, filters)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, rows[-1]["id"] if more and rows else None)

    # -- the first two resources' use cases, by name ------------------------------------------------
    def create_todo(
        self, who: Principal, data: dict[str, Any], idempotency_key: str | None, min_version: int | None = None
    ) -> Accepted:
        return self.create("todos", who, data, idempotency_key, min_version)

    def create_todos(
        self, who: Principal, items: list[dict[str, Any]], idempotency_key: str | None, min_version: int | None = None
    ) -> list[Accepted]:
        return self.create_many("todos", who, items, idempotency_key, min_version)

    def put_todo(self, who: Principal, todo_id: str, data: dict[str, Any], min_version: int | None = None) -> Accepted:
        return self.put("todos", who, todo_id, data, min_version)

    def delete_todo(self, who: Principal, todo_id: str, min_version: int | None = None) -> Accepted:
        return self.delete("todos", who, todo_id, min_version)

    def put_profile(self, who: Principal, data: dict[str, Any], min_version: int | None = None) -> Accepted:
        return self.put("profiles", who, who.sub, data, min_version)

    def get_todo(self, owner: str, todo_id: str, min_version: int | None = None) -> Row:
        return self.get("todos", owner, todo_id, min_version)

    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None, own: bool = False) -> Page:
        return self.list_rows("todos", owner, after, limit, state_filter(state), own)

    def get_profile(self, owner: str, min_version: int | None = None) -> Row:
        return self.get("profiles", owner, owner, min_version)


_MAKE_COMMAND: list[Callable[..., WriteCommand]] = []


def _make_command() -> Callable[..., WriteCommand]:
    """chalicelib.commands.make_command, imported by the first write, then kept: not on the read
    path (GETs never import it), and a write does not pay an import statement per request."""
    if not _MAKE_COMMAND:
        from chalicelib.commands import make_command

        _MAKE_COMMAND.append(make_command)
    return _MAKE_COMMAND[0]


def _at_least(seen: Seen, min_version: int | None) -> Row | None:
    """The row of a state at least `min_version` new (None: deleted or never written), or 503
    when no read can show that version yet; never an older state (CONTRACT section 3)."""
    if min_version is not None and seen.version < min_version:
        raise Unavailable("That version is not readable yet; try again shortly.", MIN_VERSION_RETRY_AFTER)
    return seen.row
