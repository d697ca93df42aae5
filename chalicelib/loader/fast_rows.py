"""The LOAD DATA fast path's rows (`mysql_fast`): `Fold`, each key's winner and earliest `at` as
chunks are read (and what was already sent per key); the text LOAD DATA reads, a chunk's rows
(`chunk_text`, `with_created_at`) and its key table lines (`keys_line`); and how the end of an
object is cut into chunks (`full_sizes`, `tail_sizes`).

These run once per command or row of every object: keep their loops free of extra calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from chalicelib.commands import WriteCommand
from chalicelib.loader.apply import Folded
from chalicelib.ordering import newer
from chalicelib.rows import escaped

Key = tuple[str, str]
Row = tuple[WriteCommand, str]  # the command to write and the created_at to write with it

# A row's text ends with created_at, a tab, updated_at and a newline; both are DATETIME(6) text.
STAMP = len("2026-01-01 00:00:00.000000")
ROW_END = 2 * STAMP + 2


class Fold:
    """The winner and the earliest `at` of every key so far, and what was already sent per key."""

    def __init__(self) -> None:
        self.best: dict[Key, WriteCommand] = {}
        self.earliest: dict[Key, str] = {}
        self.sent: dict[Key, Row] = {}
        self.commands = 0

    def folded(self, resource: str) -> Folded:
        """The same as apply.Folded (for the multi-row upsert)."""
        folded = Folded()
        folded.winners = {(resource, *key): command for key, command in self.best.items()}
        folded.earliest = {(resource, *key): at for key, at in self.earliest.items()}
        folded.superseded = self.commands - len(self.best)
        return folded

    def add(self, commands: Sequence[WriteCommand]) -> list[Row]:
        """Fold a chunk in; returns the rows of keys seen for the first time (to send now)."""
        best, earliest = self.best, self.earliest
        new: list[Key] = []
        for command in commands:
            key = (command.owner, command.id)
            have = best.get(key)
            if have is None:
                best[key] = command
                earliest[key] = command.stored_at
                new.append(key)
                continue
            if newer((command.version, command.op_id), (have.version, have.op_id)):
                best[key] = command
            if command.stored_at < earliest[key]:
                earliest[key] = command.stored_at
        self.commands += len(commands)
        rows = [(best[key], earliest[key]) for key in new]
        self.sent.update(zip(new, rows, strict=True))
        return rows

    def fixups(self) -> list[Row]:
        """Keys whose sent row is no longer their winner or their earliest `at`."""
        best, earliest = self.best, self.earliest
        return [
            (best[key], earliest[key])
            for key, (command, created_at) in self.sent.items()
            if best[key] is not command or earliest[key] != created_at
        ]


def chunk_text(rows: list[Row], heads: dict[int, str], tsv: Callable[[WriteCommand, str], str]) -> list[str]:
    """A chunk's rows as LOAD DATA reads them, line by line, in primary-key order (built on the
    parsing thread, so the worker thread only waits for the server). In primary-key order, InnoDB
    appends to the pages it just wrote instead of splitting pages all over the index (utf8mb4_bin
    and ascii_bin order is Python's str order). `heads` holds the rows the line lane already
    wrote up to created_at (lanes.from_line); each is let go once used; `tsv` writes the others."""
    rows.sort(key=_primary_key)
    pop = heads.pop
    return [
        tsv(command, created_at)
        if (head := pop(id(command), None)) is None
        else f"{head}{created_at}\t{command.stored_at}\n"
        for command, created_at in rows
    ]


def with_created_at(line: str, created_at: str) -> str:
    """A row's text (as chunk_text writes it) with another created_at of the same width."""
    return line[:-ROW_END] + created_at + line[-STAMP - 2 :]


def _primary_key(row: Row) -> Key:
    return (row[0].owner, row[0].id)


def keys_line(seq: int, command: WriteCommand, created_at: str) -> str:
    """A row of the key table (fast_statements.KEYS) as LOAD DATA reads it."""
    return f"{seq}\t{escaped(command.owner)}\t{command.id}\t{command.version}\t{command.op_id}\t{created_at}\n"


def full_sizes(total: int, size: int) -> list[int]:
    """The last `total` lines in chunks of `size` (the last one shorter)."""
    return [min(size, total - start) for start in range(0, total, size)]


def tail_sizes(total: int, size: int) -> list[int]:
    """The last `total` lines: `size` at most, coming down in three steps at the very end."""
    tail: list[int] = []
    rest = total
    for step in (max(1, size >> shift) for shift in (3, 2, 1)):
        if rest > 0:
            tail.append(min(step, rest))
            rest -= tail[-1]
    middle = []
    while rest > 0:
        middle.append(min(size, rest))
        rest -= middle[-1]
    return middle + tail[::-1]
