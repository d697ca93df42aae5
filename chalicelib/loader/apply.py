"""Applying commands to the tables with last-writer-wins, in the caller's transaction.

`SqlApplier` works on both dialects with few round trips: it folds the object's commands to one
winner per key, reads the stored (version, op_id) of those keys in chunks, and writes only the
winners that are newer, with a multi-row guarded upsert (the guard keeps it right even if another
loader wrote the same key in between). created_at is the earliest `at` ever seen for a key, so
it does not depend on the order objects arrive in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chalicelib.commands import WriteCommand
from chalicelib.db.database import Database
from chalicelib.db.schema import BY_KEY
from chalicelib.loader.parsing import parsed_batches
from chalicelib.loader.streaming import LineStream
from chalicelib.ordering import newer
from chalicelib.rows import Table, table

if TYPE_CHECKING:
    from chalicelib.loader.quarantine import Quarantine

CHUNK = 500


def table_for(resource: str) -> Table:
    """The table of a declared resource (its columns and generated row writers: chalicelib.rows)."""
    return table(resource)


Key3 = tuple[str, str, str]


class Folded:
    """One winner per key, the earliest stored_at per key, and how many commands lost inside:
    what an object comes to, built as its commands are read (memory grows with its keys only)."""

    def __init__(self) -> None:
        self.winners: dict[Key3, WriteCommand] = {}
        self.earliest: dict[Key3, str] = {}
        self.superseded = 0

    def add(self, commands: Iterable[WriteCommand]) -> None:
        winners, earliest = self.winners, self.earliest
        for command in commands:
            key = (command.resource, command.owner, command.id)
            best = winners.get(key)
            if best is None:
                winners[key] = command
                earliest[key] = command.stored_at
                continue
            self.superseded += 1
            if newer((command.version, command.op_id), (best.version, best.op_id)):
                winners[key] = command
            if command.stored_at < earliest[key]:
                earliest[key] = command.stored_at


def fold(commands: Iterable[WriteCommand]) -> tuple[dict[Key3, WriteCommand], dict[Key3, str], int]:
    """One winner per key, the earliest stored_at per key, and how many commands lost inside."""
    folded = Folded()
    folded.add(commands)
    return folded.winners, folded.earliest, folded.superseded


@dataclass
class Touched:
    """What a load hands the read cache after COMMIT: every key's winner in the object, the rows
    written by the guarded upsert with their created_at, and every key's earliest `at` in the
    object, which lowers a cached created_at even when the object's winner is older than the
    entry (BatchLoader._committed)."""

    winners: list[WriteCommand] = field(default_factory=list)
    written: list[tuple[WriteCommand, str]] = field(default_factory=list)
    earliest: dict[Key3, str] = field(default_factory=dict)

    def clear(self) -> None:
        """Start over (a retried transaction)."""
        self.winners.clear()
        self.written.clear()
        self.earliest.clear()

    def add(self, winners: dict[Any, WriteCommand], earliest: dict[Any, str]) -> None:
        """An object's winners and earliest `at`s, by key (of any shape: Folded's or the fast path's)."""
        self.winners.extend(winners.values())
        # Only where the earliest is not the winner's own `at` (most keys have one command in an
        # object): BatchLoader._committed falls back to the winner's.
        self.earliest.update((w.key, at) for k, at in earliest.items() if at != (w := winners[k]).stored_at)


class Applier(ABC):
    @abstractmethod
    def apply(
        self, cur: Any, commands: Sequence[WriteCommand], changes: list[tuple[WriteCommand, str]] | None = None
    ) -> tuple[int, int]:
        """Apply in the caller's transaction; returns (applied, stale). With `changes`, adds
        (command, created_at) for every command written, for the read cache."""

    def apply_stream(
        self, cur: Any, stream: LineStream, quarantine: Quarantine, touched: Touched | None = None
    ) -> tuple[int, int]:
        """Read, parse and apply one object as a stream, in the caller's transaction; its bad
        lines go to `quarantine` as they are read. Returns (applied, stale). Here: folded as
        read (memory grows with the object's keys, not its lines), then `apply`."""
        folded = read_folded(stream, quarantine)
        commands = list(folded.winners.values())
        if touched is not None:
            touched.add(folded.winners, folded.earliest)
        applied, stale = self.apply(cur, commands, touched.written if touched is not None else None)
        return applied, stale + folded.superseded


def read_folded(stream: LineStream, quarantine: Quarantine, folded: Folded | None = None) -> Folded:
    """Every command of the stream folded, every bad line quarantined."""
    folded = folded or Folded()
    for commands, rejects in parsed_batches(stream):
        folded.add(commands)
        if rejects:
            quarantine.add(rejects)
    return folded


class SqlApplier(Applier):
    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.dialect

    def apply(
        self, cur: Any, commands: Sequence[WriteCommand], changes: list[tuple[WriteCommand, str]] | None = None
    ) -> tuple[int, int]:
        folded = Folded()
        folded.add(commands)
        return self.apply_folded(cur, folded, changes)

    def apply_stream(
        self, cur: Any, stream: LineStream, quarantine: Quarantine, touched: Touched | None = None
    ) -> tuple[int, int]:
        folded = read_folded(stream, quarantine)
        if touched is not None:
            touched.add(folded.winners, folded.earliest)
        return self.apply_folded(cur, folded, touched.written if touched is not None else None)

    def apply_folded(
        self, cur: Any, folded: Folded, changes: list[tuple[WriteCommand, str]] | None = None
    ) -> tuple[int, int]:
        """Apply an object's winners (see `apply`)."""
        winners, earliest, stale = folded.winners, folded.earliest, folded.superseded
        applied = 0
        by_resource: dict[str, list[tuple[str, str, str]]] = {}
        for key in winners:
            by_resource.setdefault(key[0], []).append(key)
        for resource in sorted(by_resource, key=_lock_order):
            keys = by_resource[resource]
            if self._locking:
                # Rows are locked in one order by every load: resource by resource, each in its
                # primary key's order (a binary collation orders as Python orders str), so two
                # loads of this path never each hold a row the other wants next.
                keys.sort()
            table = table_for(resource)
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                a, s = self._apply_chunk(cur, table, chunk, winners, earliest, changes)
                applied += a
                stale += s
        return applied, stale

    def _stored(
        self, cur: Any, table: Table, keys: list[tuple[str, str, str]]
    ) -> dict[tuple[str, ...], tuple[int, str, Any]]:
        if len(table.key_columns) == 2:
            if self.dialect == "sqlite":
                where = "WHERE (owner, id) IN (VALUES " + ", ".join(["(?, ?)"] * len(keys)) + ")"
            else:
                where = f"{BY_KEY} WHERE (owner, id) IN (" + ", ".join(["(%s, %s)"] * len(keys)) + ")"
            params: list[Any] = [part for key in keys for part in key[1:]]
            cur.execute(
                f"SELECT owner, id, version, op_id, created_at FROM {table.name} {where}{self._locking}", params
            )
            return {(r[0], r[1]): (int(r[2]), r[3], r[4]) for r in cur.fetchall()}
        mark = self.db.mark
        where = "owner IN (" + ", ".join([mark] * len(keys)) + ")"
        cur.execute(
            f"SELECT owner, version, op_id, created_at FROM {table.name} WHERE {where}{self._locking}",
            [k[1] for k in keys],
        )
        return {(r[0],): (int(r[1]), r[2], r[3]) for r in cur.fetchall()}

    @property
    def _locking(self) -> str:
        """MySQL/MariaDB: read the stored rows with a locking read. Under REPEATABLE READ a plain
        SELECT reads the snapshot taken at the transaction's first plain read, which misses rows
        other loaders committed since; a locking read reads the latest committed rows and keeps
        them (and the gaps where missing keys go) as read until commit. A load makes no plain read
        of the resource tables at all (docs/architecture.md, "Concurrent loaders"). SQLite needs
        none: BEGIN IMMEDIATE already holds the database's one write lock."""
        return " FOR UPDATE" if self.dialect == "mysql" else ""

    def _apply_chunk(
        self,
        cur: Any,
        table: Table,
        keys: list[tuple[str, str, str]],
        winners: dict[tuple[str, str, str], WriteCommand],
        earliest: dict[tuple[str, str, str], str],
        changes: list[tuple[WriteCommand, str]] | None = None,
    ) -> tuple[int, int]:
        stored = self._stored(cur, table, keys)
        two = len(table.key_columns) == 2
        rows = []
        older_created: list[tuple[str, ...]] = []
        stale = 0
        for key in keys:
            command = winners[key]
            skey = key[1:] if two else key[1:2]
            have = stored.get(skey)
            if have is None or newer((command.version, command.op_id), (have[0], have[1])):
                rows.append(table.row(command, earliest[key]))
                if changes is not None:
                    created = earliest[key] if have is None else min(earliest[key], _stored_text(have[2]))
                    changes.append((command, created))
                continue
            stale += 1
            if earliest[key] < _stored_text(have[2]):
                older_created.append((earliest[key],) + skey)
        if rows:
            cur.executemany(self.upsert_sql(table), rows)
        if older_created:
            # Guarded like the upsert: never raise created_at, whatever was read.
            where = " AND ".join(f"{c} = {self.db.mark}" for c in table.key_columns)
            least = "MIN" if self.dialect == "sqlite" else "LEAST"
            cur.executemany(
                self.db.sql(f"UPDATE {table.name} SET created_at = {least}(created_at, %s) WHERE {where}"),
                older_created,
            )
        return len(rows), stale

    def upsert_sql(self, table: Table) -> str:
        cols = ", ".join(table.columns)
        marks = ", ".join([self.db.mark] * len(table.columns))
        keys = ", ".join(table.key_columns)
        if self.dialect == "sqlite":
            sets = ", ".join(f"{c} = excluded.{c}" for c in table.data_columns)
            return (
                f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON CONFLICT ({keys}) DO UPDATE SET {sets}, "
                f"version = excluded.version, op_id = excluded.op_id, deleted = excluded.deleted, "
                f"created_at = MIN({table.name}.created_at, excluded.created_at), updated_at = excluded.updated_at "
                f"WHERE (excluded.version, excluded.op_id) > ({table.name}.version, {table.name}.op_id)"
            )
        # MySQL/MariaDB: the VALUES() form (PyMySQL folds it into one multi-row statement; MariaDB
        # has no `AS new` alias). Columns are assigned left to right, so the guard's own columns
        # (op_id, then version) come last.
        wins = "((VALUES(version), VALUES(op_id)) > (version, op_id))"  # ordering.newer, in SQL
        guarded = [f"{c} = IF({wins}, VALUES({c}), {c})" for c in table.data_columns + ("deleted", "updated_at")]
        sets = ", ".join(
            guarded
            + ["created_at = LEAST(created_at, VALUES(created_at))"]
            + [f"op_id = IF({wins}, VALUES(op_id), op_id)", f"version = IF({wins}, VALUES(version), version)"]
        )
        return f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {sets}"


def _lock_order(resource: str) -> tuple[bool, str]:
    """todos first, as the MySQL fast path writes them before the other resources; then by name."""
    return resource != "todos", resource


def _stored_text(value: Any) -> str:
    """created_at as the fixed-width text the loader compares with."""
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")
