"""Read side: the interface every reader keeps (SQL, replica failover, cache)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

Row = dict[str, Any]


class Seen(NamedTuple):  # a tuple: made for every row of a merged page, so cheap to build
    """What a read found for one key: the row (None when deleted or never written) and its
    version (a tombstone's version for a deleted row, 0 when nothing was ever stored).

    `settled` is False when the answer came from the master while replicas exist (failover): a
    pending write may be dropped only once a replica shows it (CONTRACT section 3)."""

    id: str
    row: Row | None
    version: int
    settled: bool = True


class SeenLater(Protocol):
    """The rows of a page query already sent (`TodoReader.start_list_seen`). `replaced` maps ids
    to the version of a write that will replace their stored row: a row older than that may come
    with only its `created_at` (all a merged page needs of it)."""

    def __call__(self, replaced: Mapping[str, int] | None = None) -> Sequence[Seen]: ...


class TodoReader(ABC):
    """What GET routes need. Every implementation returns rows as the API shows them."""

    @abstractmethod
    def get_todo(self, owner: str, todo_id: str) -> Row | None: ...

    @abstractmethod
    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> list[Row]:
        """Live todos of `owner` with id > after, ascending id, at most `limit`."""

    @abstractmethod
    def get_profile(self, owner: str) -> Row | None: ...

    # -- versioned reads (min_version, pending writes): readers that can see tombstones override
    def seen_todo(self, owner: str, todo_id: str) -> Seen:
        row = self.get_todo(owner, todo_id)
        return Seen(todo_id, row, int(row["version"]) if row else 0)

    def seen_profile(self, owner: str) -> Seen:
        row = self.get_profile(owner)
        return Seen(owner, row, int(row["version"]) if row else 0)

    def list_seen(
        self, owner: str, after: str | None, limit: int, state: str | None, ids: Collection[str]
    ) -> list[Seen]:
        """Like list_todos (at most `limit` keys with id > after, ascending), and besides the rows
        matching `state`, the stored state of each of `ids` in that range, tombstones included."""
        rows = [Seen(r["id"], r, int(r["version"])) for r in self.list_todos(owner, after, limit, state)]
        if not ids:
            return rows
        found = {s.id for s in rows}
        top = rows[-1].id if len(rows) == limit else None
        extra = [
            self.seen_todo(owner, i)
            for i in sorted(ids)
            if i not in found and (after is None or i > after) and (top is None or i < top)
        ]
        merged = sorted([*rows, *(s for s in extra if s.version)], key=lambda s: s.id)
        return merged[:limit]

    def start_list_seen(
        self, owner: str, after: str | None, limit: int, state: str | None, ids: Collection[str]
    ) -> SeenLater:
        """`list_seen` in two steps: the query is sent now and its rows read by the returned
        function, so a caller can do other work (read Redis) while the database runs it. Nothing
        else may read through this reader in this thread meanwhile. By default it runs now."""
        rows = self.list_seen(owner, after, limit, state, ids)
        return lambda replaced=None: rows
