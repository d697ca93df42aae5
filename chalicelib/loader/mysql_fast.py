"""The loader's fast path on MySQL/MariaDB: whole chunks of rows per statement, with LOAD DATA.

An object's fast path takes one resource keyed by (owner, id): the one most of its first chunk
names (todos, in the objects Firehose delivers; lists in an object of lists). Its commands are
written as below; the few of any other resource are folded as read and applied with the guarded
upsert in the same transaction. Every statement is made from the resource's declaration
(`FastTable`, `chalicelib.rows`).

`MySQLFastApplier` keeps every rule of `SqlApplier` (last writer wins by (version, op_id),
tombstones, created_at = the earliest `at` ever seen, exact applied/stale counts, all inside the
caller's transaction with the ledger row) and changes only how rows reach the server:

- An object is inflated and parsed in chunks of lines as they are needed (`LineStream`; lines our
  writer wrote take the line lane, which also writes their row text). Each command is folded into
  a per-key winner as it is read; the first time a key is seen its row goes, tab-separated, into
  a chunk file that a worker thread sends with `LOAD DATA LOCAL INFILE` while the next chunk is
  parsed: parsing (Python) and writing (the server) overlap instead of adding up. Chunks grow
  from `chunk_lines`/16 by half each time, so the server starts early and rarely waits.
- How a chunk is written depends on a probe of a few keys of the first chunk:
  * none stored ("fresh"): straight into its table with `IGNORE`. Every key is then new, so the
    rows inserted must equal the rows sent; if a chunk inserts fewer (some keys existed after
    all), the work is rolled back to a savepoint and redone the "keys" way.
  * some stored ("keys"): the chunk's keys, versions and created_at go into a narrow TEMPORARY
    table; one locking join against the resource's table returns which keys are new, newer or stale (the
    stored rows, and the gaps where new keys go, stay locked against other loaders until
    commit); the new and newer rows are then written with one `LOAD DATA ... REPLACE` (InnoDB
    turns a replace on the primary key into an in-place update), with created_at = the earlier
    of the stored one and ours. Stale rows whose `at` is earlier than the stored created_at get
    just that column fixed, with the guarded multi-row upsert.
- A key seen again in a later chunk is fixed at the end (a handful of rows, one multi-row
  guarded upsert), so every key ends with its winner and earliest `at`, counted once.
- When the server (or a proxy) refuses LOAD DATA LOCAL (errors 1148, 3948, 4166) or a temporary
  table (1787 under GTID consistency with statement logging), the work since the savepoint is
  rolled back and the object is applied with `SqlApplier`'s multi-row guarded upsert; the refusal
  is remembered for a while so later objects go there directly.
- When the connection drops during the fast path (a proxy that cuts LOAD DATA LOCAL instead of
  refusing it, a failover), the transaction is gone: the load fails as the database being
  unavailable, and its retry takes the fast path once more. A second drop in a row on the fast
  path is taken as a refusal: this process's loads then use the guarded upsert for a while, so an
  endpoint that always drops it is not retried for ever.
- Small objects (under `min_rows` lines) use `SqlApplier` directly: a multi-row upsert is as
  fast there and needs no file.

Profiles are rare (one per user) and always take `SqlApplier`'s path, in the same transaction.

Every read of the resource's table here (the probe, the decision, the recount at the end) is a locking read:
under REPEATABLE READ a plain SELECT would read a snapshot that lacks rows other loaders
committed since, and disagree with the locking reads and writes (docs/architecture.md,
"Concurrent loaders").
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from chalicelib.commands import WriteCommand
from chalicelib.db import local_files
from chalicelib.db.database import Database, connection_lost
from chalicelib.db.schema import OWNER_COLLATION, owner_collation
from chalicelib.loader import chunk_files
from chalicelib.loader.apply import Folded, SqlApplier, Touched
from chalicelib.loader.gc_pause import gc_paused
from chalicelib.loader.parsing import parse_lines
from chalicelib.loader.quarantine import Quarantine
from chalicelib.loader.streaming import LineStream
from chalicelib.ordering import newer
from chalicelib.resources import RESOURCES
from chalicelib.rows import escaped, table

log = logging.getLogger(__name__)

KEYS = "sluice_load_keys"
LOAD_KEYS = (
    f"LOAD DATA LOCAL INFILE %s INTO TABLE {KEYS} CHARACTER SET utf8mb4 (seq, owner, id, version, op_id, created_at)"
)
# MEMORY: the rows are scratch (a chunk's keys, emptied once decided), and a heap table takes them
# several times faster than InnoDB. InnoDB when the server has no MEMORY engine.
# The owner column takes the table's owner collation (schema migration 2: NO PAD), or the join fails.
KEYS_COLUMNS = f"""seq INT UNSIGNED NOT NULL,
        owner VARCHAR(128) CHARACTER SET utf8mb4 COLLATE {OWNER_COLLATION} NOT NULL,
        id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        version BIGINT NOT NULL,
        op_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        created_at DATETIME(6) NOT NULL"""
CREATE_KEYS = (
    f"DROP TEMPORARY TABLE IF EXISTS {KEYS}",
    f"CREATE TEMPORARY TABLE {KEYS} ({KEYS_COLUMNS}, PRIMARY KEY USING BTREE (seq)) ENGINE=MEMORY",
)
CREATE_KEYS_INNODB = f"CREATE TEMPORARY TABLE {KEYS} ({KEYS_COLUMNS}, PRIMARY KEY (seq)) ENGINE=InnoDB"
EMPTY_KEYS = f"DELETE FROM {KEYS}"
DROP_KEYS = f"DROP TEMPORARY TABLE IF EXISTS {KEYS}"
NEW, NEWER, OLDER_CREATED = 0, 1, 2
# Which keys of a chunk need a write: "seq|state|stored created_at if earlier" items in one
# string (one result row instead of thousands: PyMySQL decodes rows in Python), with their count
# to prove nothing was cut at group_concat_max_len. The read locks what it reads (the stored rows,
# and the gaps where the new keys go) until commit, so the unguarded REPLACE below cannot
# overwrite another loader's newer row.
DECIDE = (
    f"SELECT COUNT(*), GROUP_CONCAT(s.seq, '|', CASE WHEN t.id IS NULL THEN {NEW} "
    f"WHEN (s.version, s.op_id) > (t.version, t.op_id) THEN {NEWER} ELSE {OLDER_CREATED} END, '|', "
    "IF(t.created_at < s.created_at, CAST(t.created_at AS CHAR), '') SEPARATOR ',') "
    f"FROM {KEYS} s LEFT JOIN @TABLE@ t ON t.owner = s.owner AND t.id = s.id "
    "WHERE s.seq BETWEEN %s AND %s "
    "AND (t.id IS NULL OR (s.version, s.op_id) > (t.version, t.op_id) OR s.created_at < t.created_at) "
    "FOR UPDATE"
)
# Stale rows whose `at` is earlier than the stored created_at: just that column.
LOWER_CREATED = (
    f"UPDATE {KEYS} s STRAIGHT_JOIN @TABLE@ t ON t.owner = s.owner AND t.id = s.id "
    "SET t.created_at = s.created_at "
    "WHERE s.seq BETWEEN %s AND %s AND s.created_at < t.created_at "
    "AND (s.version, s.op_id) <= (t.version, t.op_id)"
)
GROUP_CONCAT_MAX = "SET SESSION group_concat_max_len = 67108864"
SAVEPOINT = "SAVEPOINT sluice_fast"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT sluice_fast"

# Server or proxy will not take LOAD DATA LOCAL / a temporary table inside a transaction.
REFUSED_ERRORS = frozenset({1148, 3948, 4166, 1787, 1785})
NO_MEMORY_ENGINE = frozenset({1286, 1289})  # unknown / disabled storage engine
REFUSAL_MEMORY_SECONDS = 600.0
DROPS_BEFORE_UPSERT = 2  # connections lost on the fast path in a row before it is given up a while
PROBE_KEYS = 64
MAX_HELD_REJECTS = 2000

Key = tuple[str, str]
Row = tuple[WriteCommand, str]  # the command to write and the created_at to write with it


class _Abandoned(Exception):
    """The fast path gives the object up (rolled back to its savepoint): use the multi-row upsert."""


class LoadRefused(_Abandoned):
    """The server will not run the fast path's statements; use the multi-row upsert."""


class _TooManyRejects(_Abandoned):
    """More rejects than MAX_HELD_REJECTS wait in memory (they are written only once the worker
    thread is done with the connection): not an object of our writer; take the general path,
    which writes rejects as they come."""


# -- a resource's statements ----------------------------------------------------------------------
class FastTable:
    """A resource's table on the fast path: its columns (chalicelib.rows, from the declaration)
    and every statement the fast path runs on it. Defaults of LOAD DATA: fields end at a tab,
    lines at a newline, backslash escapes (\\t \\n \\\\ \\N)."""

    def __init__(self, name: str) -> None:
        made = table(name)
        self.name = name
        self.table = made
        self.tsv = made.tsv  # the row text of a command the lanes did not write (the reference)
        columns = ", ".join(made.columns)
        self.load_new = f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE {name} CHARACTER SET utf8mb4 ({columns})"
        self.load_replace = f"LOAD DATA LOCAL INFILE %s REPLACE INTO TABLE {name} CHARACTER SET utf8mb4 ({columns})"
        self.decide = DECIDE.replace("@TABLE@", name)
        self.lower_created = LOWER_CREATED.replace("@TABLE@", name)

    def probe(self, count: int) -> str:
        marks = ", ".join(["(%s, %s)"] * count)
        return f"SELECT COUNT(*) FROM {self.name} WHERE (owner, id) IN ({marks}) FOR UPDATE"

    def stored(self, count: int) -> str:
        marks = ", ".join(["(%s, %s)"] * count)
        return f"SELECT owner, id, version, op_id FROM {self.name} WHERE (owner, id) IN ({marks}) FOR UPDATE"


_FAST_TABLES: dict[str, FastTable] = {}


def fast_table(name: str) -> FastTable:
    made = _FAST_TABLES.get(name)
    if made is None or made.table is not table(name):
        made = _FAST_TABLES[name] = FastTable(name)
    return made


def main_resource(commands: Sequence[WriteCommand]) -> str:
    """The resource keyed by (owner, id) that most of these commands name (todos when none)."""
    counts = Counter(c.resource for c in commands if c.resource == "todos" or RESOURCES[c.resource].by_id)
    return counts.most_common(1)[0][0] if counts else "todos"


# -- folding as chunks arrive ----------------------------------------------------------------------
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


# -- the worker thread that talks to the server ----------------------------------------------------
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


@contextmanager
def short_switch_interval(seconds: float = 0.0002) -> Iterator[None]:
    """Let the worker thread take the GIL back quickly after each packet it sends.

    With CPython's default 5 ms switch interval, a thread sending a file in 16 KiB packets while
    another thread parses waits up to 5 ms per packet, and the overlap is lost. Process-wide while
    any load runs; restored after the last one.
    """
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, seconds))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class _Worker:
    """Runs statements in order on one thread (or inline); the caller never touches the
    connection while a task is pending."""

    def __init__(self, threaded: bool) -> None:
        self.threaded = threaded
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sluice-load") if threaded else None
        self._pending: deque[tuple[Future[Any], Any]] = deque()

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is not None:
            self._pending.append((self._pool.submit(fn, *args), tag))
            return
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        self._pending.append((future, tag))

    def backlog(self) -> int:
        """Tasks submitted and not yet finished (the one running included)."""
        return sum(1 for future, _ in self._pending if not future.done())

    def finished(self) -> Iterator[tuple[Any, Any]]:
        """(tag, result) of tasks done so far, in order, without waiting; raises a task's error."""
        while self._pending and self._pending[0][0].done():
            future, tag = self._pending.popleft()
            yield tag, future.result()

    def drain(self) -> Iterator[tuple[Any, Any]]:
        """(tag, result) of every pending task, waiting; on an error, waits for the rest first."""
        while self._pending:
            future, tag = self._pending.popleft()
            try:
                result = future.result()
            except BaseException:
                self.settle()
                raise
            yield tag, result

    def finish_all(self) -> None:
        """Wait for every pending task; then raise the first error other than a refusal (which
        leaves the transaction as it was): a failed statement, a deadlock say, may have ended the
        transaction, and the savepoint with it."""
        error: BaseException | None = None
        while self._pending:
            future, _ = self._pending.popleft()
            try:
                future.result()
            except _Abandoned:
                pass
            except BaseException as exc:  # noqa: BLE001 - raised below, once every task is done
                error = error or exc
        if error is not None:
            raise error

    def settle(self) -> None:
        """Wait for every pending task, ignoring results (before the caller uses the connection)."""
        while self._pending:
            future, _ = self._pending.popleft()
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first error was already raised
                pass

    def close(self) -> None:
        self.settle()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _load_file(cur: Any, statement: str, text: str) -> int:
    """Write one chunk to a temporary file and LOAD DATA it; returns the rows the server took."""
    handle = tempfile.NamedTemporaryFile(
        "wb", prefix="sluice-load-", suffix=".tsv", dir=chunk_files.folder(), delete=False
    )
    try:
        with handle:
            handle.write(text.encode("utf-8"))
        try:
            with local_files.sending(cur.connection, handle.name):
                return int(cur.execute(statement, (handle.name,)))
        except Exception as exc:
            if _error_code(exc) in REFUSED_ERRORS:
                raise LoadRefused(str(exc)) from exc
            raise
    finally:
        os.unlink(handle.name)


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


# A row's text ends with created_at, a tab, updated_at and a newline; both are DATETIME(6) text.
STAMP = len("2026-01-01 00:00:00.000000")
ROW_END = 2 * STAMP + 2


def with_created_at(line: str, created_at: str) -> str:
    """A row's text (as chunk_text writes it) with another created_at of the same width."""
    return line[:-ROW_END] + created_at + line[-STAMP - 2 :]


def _primary_key(row: Row) -> Key:
    return (row[0].owner, row[0].id)


def keys_line(seq: int, command: WriteCommand, created_at: str) -> str:
    return f"{seq}\t{escaped(command.owner)}\t{command.id}\t{command.version}\t{command.op_id}\t{created_at}\n"


class _Session:
    """One object's commands of its fast resource, inside the caller's transaction."""

    def __init__(self, applier: MySQLFastApplier, cur: Any, worker: _Worker, heads: dict[int, str]) -> None:
        self.applier = applier
        self.fast: FastTable | None = None  # the resource, chosen by the first chunk (main_resource)
        self.heads = heads
        self.cur = cur
        self.worker = worker
        self.fold = Fold()
        self.mode = ""  # "fresh" or "keys", chosen by the first chunk
        self.sent: list[list[Row]] = []  # fresh: the chunks sent, to redo them the keys way if needed
        self.seq = 0  # keys: rows numbered across the object
        self.applied = 0
        self.written: set[Key] = set()  # keys: keys written (new or newer than stored)

    def release(self) -> None:
        """Let go of the object's rows (the session is done)."""
        self.fold = Fold()
        self.sent = []
        self.heads.clear()
        self.written = set()

    # -- the caller's thread: parse, fold, hand chunks to the worker ----------------------------
    def add(self, commands: Sequence[WriteCommand]) -> None:
        rows = self.fold.add(commands)
        if not rows:
            self.heads.clear()
            return
        if not self.mode:
            self._start(rows)
        self._collect(self.worker.finished())
        self._send(rows)
        # The heads of this chunk's other commands (keys seen before) are not used: let them go
        # (they are keyed by id(), and those commands are let go too).
        self.heads.clear()

    def _send(self, rows: list[Row]) -> None:
        assert self.fast is not None
        lines = chunk_text(rows, self.heads, self.fast.tsv)  # sorted too
        if self.mode == "fresh":
            self.sent.append(rows)
            self.worker.submit(("fresh", len(rows)), _load_file, self.cur, self.fast.load_new, "".join(lines))
        else:
            first = self.seq + 1
            self.seq += len(rows)
            keys = "".join([keys_line(first + i, c, at) for i, (c, at) in enumerate(rows)])
            self.worker.submit(("keys", 0), self._keys_chunk, first, rows, keys, lines)

    def _start(self, rows: list[Row]) -> None:
        step = max(1, len(rows) // PROBE_KEYS)
        sample = [command for command, _ in rows[::step][:PROBE_KEYS]]
        cur = self.cur
        if self.fast is None:
            self.fast = fast_table(sample[0].resource)
        cur.execute(SAVEPOINT)
        cur.execute(  # a locking read, as every read of the load (docs/architecture.md)
            self.fast.probe(len(sample)), [part for command in sample for part in (command.owner, command.id)]
        )
        if int(cur.fetchone()[0]) == 0 and not self.applier.prefers_keys:
            self.mode = "fresh"
        else:
            self._use_keys()
        self.applier.paths[self.mode] += 1

    def _use_keys(self) -> None:
        self.mode = "keys"
        try:
            assert self.fast is not None
            collation = owner_collation(self.cur, self.fast.name)
            for statement in (GROUP_CONCAT_MAX, *CREATE_KEYS):
                try:
                    self.cur.execute(statement.replace(OWNER_COLLATION, collation))
                except Exception as exc:
                    if statement is not CREATE_KEYS[-1] or _error_code(exc) not in NO_MEMORY_ENGINE:
                        raise
                    self.cur.execute(CREATE_KEYS_INNODB.replace(OWNER_COLLATION, collation))
        except Exception as exc:
            if _error_code(exc) in REFUSED_ERRORS:
                raise LoadRefused(str(exc)) from exc
            raise

    def _collect(self, done: Iterator[tuple[Any, Any]]) -> None:
        for (kind, expected), result in done:
            if kind == "keys":
                applied, written = result
                self.applied += applied
                self.written.update(written)
            elif self.mode == "fresh":
                self.applied += result
                if result != expected:
                    self._fresh_to_keys()

    def _fresh_to_keys(self) -> None:
        """Some keys were stored after all: undo the direct inserts and send every chunk sent so
        far the keys way (later chunks follow)."""
        log.info("fast load: keys already stored; redoing this object the keys way")
        self.applier.paths["redo"] += 1
        self.worker.finish_all()  # a chunk's error (a deadlock ends the transaction) is raised
        self.cur.execute(ROLLBACK_TO_SAVEPOINT)
        self.applied = 0
        self._use_keys()
        sent, self.sent = self.sent, []
        for rows in sent:
            self._send(rows)

    # -- the worker thread ------------------------------------------------------------------
    def _keys_chunk(self, first: int, rows: list[Row], keys: str, lines: list[str]) -> tuple[int, list[Key]]:
        """Decide and write one chunk the keys way; (rows applied, keys written). `keys` and
        `lines` are the chunk's keys and its rows as written with our created_at, row by row."""
        cur, fast = self.cur, self.fast
        assert fast is not None
        last = first + len(rows) - 1
        _load_file(cur, LOAD_KEYS, keys)
        cur.execute(fast.decide, (first, last))
        count, packed = cur.fetchone()
        items = packed.split(",") if packed else []
        if len(items) != int(count):
            raise RuntimeError(f"fast load: {len(items)} decisions of {count} (group_concat_max_len?)")
        writes: list[str] = []
        written: list[Key] = []
        older_created = False
        for item in items:
            seq, state, stored_created = item.split("|")
            index = int(seq) - first
            if state == "2":  # OLDER_CREATED
                older_created = True
                continue
            command, created_at = rows[index]
            if stored_created and stored_created < created_at:
                line = lines[index]
                fits = len(stored_created) == STAMP and line[-ROW_END : -STAMP - 1] == created_at + "\t"
                writes.append(with_created_at(line, stored_created) if fits else fast.tsv(command, stored_created))
            else:
                writes.append(lines[index])
            written.append((command.owner, command.id))
        if writes:
            _load_file(cur, fast.load_replace, "".join(writes))
        if older_created:
            cur.execute(fast.lower_created, (first, last))
        cur.execute(EMPTY_KEYS)
        return len(writes), written

    def _upsert(self, rows: list[Row]) -> None:
        """The guarded multi-row upsert: applies what is newer, lowers created_at where earlier."""
        assert self.fast is not None
        made = self.fast.table
        self.cur.executemany(self.applier.upsert_sql(made), [made.row(c, at) for c, at in rows])

    # -- the end ----------------------------------------------------------------------------
    def finish(self) -> tuple[int, int]:
        """Wait for the worker, then fix keys seen again in later chunks; (applied, stale)."""
        if not self.mode:
            return 0, self.fold.commands
        # Every chunk is folded by now: which keys need a fix is known before the worker is
        # done, so it is found while the server writes the last chunk instead of after.
        fixups = self.fold.fixups()
        self._collect(self.worker.drain())
        if fixups and self.mode == "keys":
            self.applied += self._newly_applied([c for c, _ in fixups if (c.owner, c.id) not in self.written])
        if fixups:
            self._upsert(fixups)
        if self.mode == "keys":
            self.cur.execute(DROP_KEYS)
        return self.applied, self.fold.commands - self.applied

    def _newly_applied(self, winners: list[WriteCommand]) -> int:
        """Of keys left alone when first seen (stored was newer), how many a later chunk's winner
        beats. The stored rows are as the decision read them: not written by us, locked against
        others since. A locking read: a plain SELECT would read the transaction's snapshot, which
        may predate a row another loader committed before the decision locked it."""
        count = 0
        for start in range(0, len(winners), 500):
            part = winners[start : start + 500]
            assert self.fast is not None
            self.cur.execute(self.fast.stored(len(part)), [v for c in part for v in (c.owner, c.id)])
            stored = {(r[0], r[1]): (int(r[2]), r[3]) for r in self.cur.fetchall()}
            for c in part:
                have = stored.get((c.owner, c.id))
                count += have is None or newer((c.version, c.op_id), have)
        return count


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


class MySQLFastApplier(SqlApplier):
    def __init__(
        self,
        db: Database,
        min_rows: int = 200,
        chunk_lines: int = 4000,
        threaded: bool = True,
        prefers_keys: bool = False,
    ) -> None:
        super().__init__(db)
        self.min_rows = min_rows
        self.chunk_lines = chunk_lines
        self.threaded = threaded
        self.prefers_keys = prefers_keys  # tests: take the keys way even on a fresh table
        self._refused_until = 0.0
        self._drops = 0  # connections lost on the fast path since it last succeeded
        self.paths: Counter[str] = Counter()  # how objects went: small, fresh, keys, redo, refused

    @property
    def fast_allowed(self) -> bool:
        return time.monotonic() >= self._refused_until

    def _refused(self, exc: LoadRefused) -> None:
        log.warning("fast load refused by the server, using multi-row upserts for a while: %s", exc)
        self.paths["refused"] += 1
        self._refused_until = time.monotonic() + REFUSAL_MEMORY_SECONDS

    def _dropped(self, exc: BaseException) -> None:
        """The connection was lost on the fast path; the second time in a row, give it up a while."""
        self._drops += 1
        if self._drops < DROPS_BEFORE_UPSERT:
            log.warning("connection lost during the fast load; its retry takes the fast path once more: %s", exc)
            return
        log.warning("connection lost during the fast load again: multi-row upserts for a while: %s", exc)
        self.paths["dropped"] += 1
        self._drops = 0
        self._refused_until = time.monotonic() + REFUSAL_MEMORY_SECONDS

    # -- already parsed (BatchLoader.load_parsed) ------------------------------------------------
    def apply(
        self, cur: Any, commands: Sequence[WriteCommand], changes: list[tuple[WriteCommand, str]] | None = None
    ) -> tuple[int, int]:
        # `changes` is filled where rows are written by the upsert; the LOAD DATA path leaves
        # its keys out, and BatchLoader fences those in the cache instead.
        resource = main_resource(commands)
        mine = [c for c in commands if c.resource == resource]
        if len(mine) < self.min_rows or not self.fast_allowed:
            self.paths["small" if self.fast_allowed else "upsert"] += 1
            return super().apply(cur, commands, changes)
        others = [c for c in commands if c.resource != resource]
        session = _Session(self, cur, _Worker(False), {})
        session.fast = fast_table(resource)
        result = self._run(cur, session, [mine])
        if result is None:
            return super().apply(cur, commands, changes)
        applied, stale = result
        if others:
            a, s = super().apply(cur, others, changes)
            applied, stale = applied + a, stale + s
        return applied, stale

    # -- straight from the object's stream (BatchLoader.load) ------------------------------------
    def apply_stream(
        self, cur: Any, stream: LineStream, quarantine: Quarantine, touched: Touched | None = None
    ) -> tuple[int, int]:
        """Parse and apply one object in the caller's transaction as it is read; (applied, stale).
        Bad lines go to `quarantine`; with `touched`, every key's winner is added to it (for the
        read cache). Memory holds the object's keys (their winners), not its lines."""
        if stream.fill(self.min_rows) < self.min_rows or not self.fast_allowed:
            self.paths["small" if self.fast_allowed else "upsert"] += 1
            return SqlApplier.apply_stream(self, cur, stream, quarantine, touched)
        # No cyclic GC while the object's winners are alive: nothing here makes cycles, and a
        # collection would walk every one of them. They are released before the collector runs.
        with gc_paused():
            others = Folded()
            worker = _Worker(self.threaded and not stream.done)  # a thread to talk to the server
            session = _Session(self, cur, worker, {})
            parts = self._chunks(stream, quarantine, others, session)
            try:
                return self._apply_parts(cur, session, parts, quarantine, others, touched)
            finally:
                # Let go of the object's rows while the collector is still paused: alive when
                # it resumes, they would all be walked by its next collection (a third of what
                # parsing costs), only to be freed a moment later.
                parts.close()
                session.release()
                others.winners.clear()
                others.earliest.clear()

    def _apply_parts(
        self,
        cur: Any,
        session: _Session,
        parts: Iterator[list[WriteCommand]],
        quarantine: Quarantine,
        others: Folded,
        touched: Touched | None,
    ) -> tuple[int, int]:
        quarantine.held = True  # the worker owns the connection while the session runs
        try:
            result = self._run(cur, session, parts, quarantine)
        finally:
            quarantine.held = False
        mine: Folded | None = None
        if result is None:  # abandoned: nothing of it stays; read the rest, then the upsert
            mine = session.fold.folded(session.fast.name if session.fast else "todos")
            for chunk in parts:
                mine.add(chunk)
                session.heads.clear()
            applied, stale = self.apply_folded(cur, mine)
        else:
            applied, stale = result
        if others.winners:
            a, s = self.apply_folded(cur, others)
            applied, stale = applied + a, stale + s
        if touched is not None:  # every key of the object: the rest of it too, when abandoned
            if mine is None:
                touched.add(session.fold.best, session.fold.earliest)
            else:
                touched.add(mine.winners, mine.earliest)
            touched.add(others.winners, others.earliest)
        return applied, stale

    def _chunks(
        self, stream: LineStream, quarantine: Quarantine, others: Folded, session: _Session
    ) -> Generator[list[WriteCommand], None, None]:
        """The object's commands of its fast resource chunk by chunk, inflated as they are needed
        (the resource is the one most of the first chunk names; commands of other resources are
        folded into `others`, bad lines go to `quarantine`). Chunks grow from `size`/16 by half each
        time up to `size`: the server starts soon after the object is opened, and each next
        chunk is parsed in about the time the server takes for the one before (a chunk twice as
        big would leave it waiting). At the end, if the server has nothing queued, they shrink
        (little to wait for once parsing is done); if it has, the rest goes in chunks of `size`."""
        size = self.chunk_lines
        want = max(1, size >> 4)
        heads = session.heads
        while True:
            stream.fill(want)
            if stream.done:  # the rest is known
                rest = stream.waiting
                sizes = tail_sizes(rest, size) if session.worker.backlog() == 0 else full_sizes(rest, size)
            else:
                sizes = [want]
            for count in sizes:
                first, lines = stream.take(count)
                commands, bad = parse_lines(lines, heads=heads, first=first)
                del lines
                if bad:
                    quarantine.add(bad)
                if stream.rejects:
                    quarantine.add(stream.take_rejects())
                if session.fast is None:
                    session.fast = fast_table(main_resource(commands))
                resource = session.fast.name
                mine: list[WriteCommand] = []
                elsewhere: list[WriteCommand] = []
                for command in commands:
                    (mine if command.resource == resource else elsewhere).append(command)
                if elsewhere:
                    others.add(elsewhere)
                yield mine
            if stream.done:
                return
            want = min(size, want + (want >> 1) + 1)

    def _run(
        self,
        cur: Any,
        session: _Session,
        chunks: Iterator[list[WriteCommand]] | list[list[WriteCommand]],
        quarantine: Quarantine | None = None,
    ) -> Any:
        """(applied, stale) of the fast resource's commands, or None when the fast path was abandoned (the server
        refused it, or the object holds more rejects than are kept in memory meanwhile): nothing
        of it is left applied. Closes the worker."""
        worker = session.worker
        try:
            with short_switch_interval() if worker.threaded else _nothing():
                for mine in chunks:
                    session.add(mine)
                    if quarantine is not None and len(quarantine.pending) > MAX_HELD_REJECTS:
                        raise _TooManyRejects()
                result = session.finish()
            self._drops = 0
            return result
        except _Abandoned as exc:
            worker.finish_all()  # a chunk's error (a deadlock ends the transaction) is raised
            if isinstance(exc, LoadRefused):
                self._refused(exc)
            else:
                log.info("fast load: many rejects; this object takes the multi-row upsert")
                self.paths["rejects"] += 1
            if session.mode:
                cur.execute(ROLLBACK_TO_SAVEPOINT)
                try:
                    cur.execute(DROP_KEYS)
                except Exception:
                    log.debug("could not drop the keys table", exc_info=True)
            return None
        except Exception as exc:
            if connection_lost(exc):
                self._dropped(exc)  # the transaction is gone with the connection: raised as it is
            raise
        finally:
            worker.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
