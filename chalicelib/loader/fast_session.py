"""One object on the LOAD DATA fast path (`mysql_fast`): `Session` folds the object's commands of
its fast resource chunk by chunk on the caller's thread, probes a few keys of the first chunk to
choose how chunks are written ("fresh": straight in with `IGNORE`; "keys": through the key table,
the locking decision join and `REPLACE`), hands each chunk's text to the worker thread, redoes
the object the keys way when a fresh chunk meets stored keys, and at the end fixes the keys seen
again in later chunks with the guarded multi-row upsert. All inside the caller's transaction,
after a savepoint the applier rolls back to when the object is given up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from chalicelib.commands import WriteCommand
from chalicelib.db.schema import OWNER_COLLATION, owner_collation
from chalicelib.loader.fast_rows import ROW_END, STAMP, Fold, Key, Row, chunk_text, keys_line, with_created_at
from chalicelib.loader.fast_statements import (
    CREATE_KEYS,
    CREATE_KEYS_INNODB,
    DROP_KEYS,
    EMPTY_KEYS,
    GROUP_CONCAT_MAX,
    LOAD_KEYS,
    ROLLBACK_TO_SAVEPOINT,
    SAVEPOINT,
    FastTable,
    fast_table,
)
from chalicelib.loader.fast_worker import REFUSED_ERRORS, LoadRefused, StartOver, Worker, error_code, load_file
from chalicelib.ordering import newer

if TYPE_CHECKING:
    from chalicelib.loader.mysql_fast import MySQLFastApplier

log = logging.getLogger(__name__)

NO_MEMORY_ENGINE = frozenset({1286, 1289})  # unknown / disabled storage engine
PROBE_KEYS = 64
LET_GO_SLICE = 256  # commands freed at a time (`Session.let_go`): the worker thread may run in between


class Session:
    """One object's commands of its fast resource, inside the caller's transaction."""

    def __init__(
        self,
        applier: MySQLFastApplier,
        cur: Any,
        worker: Worker,
        heads: dict[int, str],
        early: bool = False,
        again: bool = False,
    ) -> None:
        self.applier = applier
        self.early = early  # let the parsed commands go before the last chunks are written (finish)
        self.again = again  # the object read again (StartOver): the keys way, not counted again
        self.released = False  # the parsed commands were let go: a path that needs them starts over
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
        """Let go of the object's rows (the session is done, or its commands go early: `let_go`)."""
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
            self.worker.submit(("fresh", len(rows)), load_file, self.cur, self.fast.load_new, "".join(lines))
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
        if int(cur.fetchone()[0]) == 0 and not self.applier.prefers_keys and not self.again:
            self.mode = "fresh"
        else:
            self._use_keys()
        if not self.again:  # counted once, by how it began
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
                    if statement is not CREATE_KEYS[-1] or error_code(exc) not in NO_MEMORY_ENGINE:
                        raise
                    self.cur.execute(CREATE_KEYS_INNODB.replace(OWNER_COLLATION, collation))
        except Exception as exc:
            if error_code(exc) in REFUSED_ERRORS:
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
        if self.released:  # its rows are gone: read again from the start
            raise StartOver("keys already stored")
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
        load_file(cur, LOAD_KEYS, keys)
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
            load_file(cur, fast.load_replace, "".join(writes))
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
        commands = self.fold.commands
        if self.early and self.mode == "fresh" and self.worker.threaded:
            self.let_go()  # while the server writes the last chunks, not after them
        self._collect(self.worker.drain())
        if fixups and self.mode == "keys":
            self.applied += self._newly_applied([c for c, _ in fixups if (c.owner, c.id) not in self.written])
        if fixups:
            self._upsert(fixups)
        if self.mode == "keys":
            self.cur.execute(DROP_KEYS)
        return self.applied, commands - self.applied

    def let_go(self) -> None:
        """Free the object's parsed commands now (every chunk has been handed to the worker, the
        fixups are known): freed after the last chunk, they cost the load about 10 ms per 10,000
        rows on its critical path (measured 2026-12-07). In slices, so that the worker thread can
        take the interpreter between them. From here on, a chunk that finds keys stored after all
        (`_fresh_to_keys`) or a refusal starts the object over (StartOver)."""
        commands = list(self.fold.best.values())  # held here: `release` frees only what holds them
        self.release()
        self.released = True
        while commands:
            del commands[-LET_GO_SLICE:]

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
