"""Read side: the interface every reader keeps (SQL, replica failover, cache), over any declared
resource (`resource` is its name; a resource with one row per owner is read with id = owner)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

Row = dict[str, Any]
Filters = Mapping[str, str]  # a page's filters: declared field -> the value rows must hold
NO_FILTERS: Filters = {}


def state_filter(state: str | None) -> Filters:
    """The todos' `state` filter as Filters (None: no filter)."""
    return NO_FILTERS if state is None else {"state": state}


class Seen(NamedTuple):  # a tuple: made for every row of a merged page, so cheap to build
    """What a read found for one key: the row (None when deleted or never written), its version
    (a tombstone's version for a deleted row, 0 when nothing was ever stored) and the op_id of
    the command that wrote it ("" when nothing was stored, or when the reader does not know it:
    such a state never wins a version tie against a pending write, `ordering.loaded_wins`).

    `settled` is False when the answer came from the master while replicas exist (failover): a
    pending write may be dropped only once a replica shows it (CONTRACT section 3).

    `created_at` is a tombstone's stored created_at, which a later write of the key keeps
    (CONTRACT section 3: the earliest `at` of any command, deletes included); a live row has its
    own in `row`. None when nothing is stored, or a tombstone's is not known (a cache entry)."""

    id: str
    row: Row | None
    version: int
    op_id: str = ""
    settled: bool = True
    created_at: str | None = None

    @property
    def order(self) -> tuple[int, str]:
        """(version, op_id): the state's place in the loader's order (`ordering.newer`)."""
        return (self.version, self.op_id)

    @property
    def stored_created_at(self) -> str | None:
        """The created_at of what is stored, a live row's or a tombstone's (None: not known, or
        nothing stored)."""
        row = self.row
        return row["created_at"] if row is not None else self.created_at


class SeenRows(Sequence[Seen]):
    """A page query's states as parallel lists, as `SqlReader.start_list_seen` reads them: the
    ids, the rows (None for a tombstone; a row a pending write replaces may hold only its
    created_at), the versions and the tombstones' created_at. A `Seen` is built only for the
    rows asked for one by one (merge_page asks only for those a pending write names, and reads
    the rest through `ids` and `rows`). Equal to any sequence of the same Seen values."""

    __slots__ = ("ids", "rows", "versions", "created", "settled")

    def __init__(
        self,
        ids: list[str],
        rows: list[Row | None],
        versions: list[int],
        created: Mapping[str, str] | None = None,
        settled: bool = True,
    ) -> None:
        self.ids = ids
        self.rows = rows
        self.versions = versions
        self.created = created or {}
        self.settled = settled

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return SeenRows(self.ids[index], self.rows[index], self.versions[index], self.created, self.settled)
        id_, row = self.ids[index], self.rows[index]
        created = self.created.get(id_) if row is None else None
        return tuple.__new__(Seen, (id_, row, self.versions[index], "", self.settled, created))

    def __iter__(self) -> Iterator[Seen]:
        return map(self.__getitem__, range(len(self.ids)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SeenRows({list(self)!r})"

    def unsettled(self) -> SeenRows:
        """The same states, read from the master while replicas exist (`Seen.settled`)."""
        return SeenRows(self.ids, self.rows, self.versions, self.created, False)


def ids_and_rows(batch: Sequence[Seen]) -> tuple[list[str], list[Row | None]]:
    """The ids and rows of a batch of states (a SeenRows's own lists, not copies)."""
    if type(batch) is SeenRows:
        return batch.ids, batch.rows
    return [s.id for s in batch], [s.row for s in batch]


class SeenLater(Protocol):
    """The rows of a page query already sent (`Reader.start_list_seen`). `replaced` maps ids
    to the version of a write that will replace their stored row: a row of an older version may
    come with only its `created_at` (all a merged page needs of it)."""

    def __call__(self, replaced: Mapping[str, int] | None = None) -> Sequence[Seen]: ...


class Reader(ABC):
    """What GET routes need, for every declared resource. Every implementation returns rows as
    the API shows them. `get_todo`, `list_todos`, `get_profile` and the like name the two first
    resources' reads."""

    @abstractmethod
    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        """One live row (None: deleted or never written)."""

    @abstractmethod
    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        """Live rows of `owner` with id > after matching `filters`, ascending id, at most `limit`."""

    # -- versioned reads (min_version, pending writes): readers that can see tombstones override
    def seen(self, resource: str, owner: str, id_: str) -> Seen:
        row = self.get(resource, owner, id_)
        return Seen(id_, row, int(row["version"]) if row else 0)

    def seen_many(self, resource: str, owner: str, ids: Collection[str]) -> dict[str, Seen]:
        """The stored state of each of `ids` that has one, by id, as `seen` reads it (op_id
        included): what orders a page's row against a pending write of the same version."""
        found = {i: self.seen(resource, owner, i) for i in ids}
        return {i: s for i, s in found.items() if s.version}

    def list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> list[Seen]:
        """Like list_rows (at most `limit` keys with id > after, ascending), and besides the rows
        matching `filters`, the stored state of each of `ids` in that range, tombstones included
        (with their created_at). A page's rows need not carry their op_id ("": `seen_many`
        reads it for the few that tie a pending write's version)."""
        rows = [Seen(r["id"], r, int(r["version"])) for r in self.list_rows(resource, owner, after, limit, filters)]
        if not ids:
            return rows
        top = rows[-1].id if len(rows) == limit else None
        # The stored state of each named id in range (its op_id and a tombstone's created_at
        # included): a live one replaces its row of the page, a stored tombstone joins it.
        by_id = {s.id: s for s in rows}
        for i in sorted(ids):
            if (after is None or i > after) and (top is None or i <= top):
                stored = self.seen(resource, owner, i)
                if stored.version:
                    by_id[i] = stored
        return sorted(by_id.values(), key=lambda s: s.id)[:limit]

    def start_list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> SeenLater:
        """`list_seen` in two steps: the query is sent now and its rows read by the returned
        function, so a caller can do other work (read Redis) while the database runs it. Nothing
        else may read through this reader in this thread meanwhile. By default it runs now."""
        rows = self.list_seen(resource, owner, after, limit, filters, ids)
        return lambda replaced=None: rows

    # -- the first two resources' reads, by name --------------------------------------------------
    def get_todo(self, owner: str, todo_id: str) -> Row | None:
        return self.get("todos", owner, todo_id)

    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> list[Row]:
        return self.list_rows("todos", owner, after, limit, state_filter(state))

    def get_profile(self, owner: str) -> Row | None:
        return self.get("profiles", owner, owner)

    def seen_todo(self, owner: str, todo_id: str) -> Seen:
        return self.seen("todos", owner, todo_id)

    def seen_profile(self, owner: str) -> Seen:
        return self.seen("profiles", owner, owner)

    def seen_todos(self, owner: str, ids: Collection[str]) -> dict[str, Seen]:
        return self.seen_many("todos", owner, ids)
