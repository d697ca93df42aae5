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
  a chunk that a worker thread sends from memory with `LOAD DATA LOCAL INFILE` while the next
  chunk is parsed: parsing (Python) and writing (the server) overlap instead of adding up. Chunks grow
  from `chunk_lines`/16 by half each time, so the server starts early and rarely waits.
- How a chunk is written depends on a probe of a few keys of the first chunk:
  * none stored ("fresh"): straight into its table with `IGNORE`. Every key is then new, so the
    rows inserted must equal the rows sent; if a chunk inserts fewer (some keys existed after
    all), the work is rolled back to a savepoint and redone the "keys" way. Once the last chunk
    is handed to the worker, the object's parsed commands are let go while the server writes
    (`Session.let_go`; freed after it, they cost ~10 ms per 10,000 rows on the critical path)
    where the object can be read again and no cache wants its winners: a redo or a refusal met
    after that rolls back to the savepoint and reads the object again from its start
    (`StartOver`, `LineStream.again`).
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

Every read of the resource's table on the fast path (the probe, the decision, the recount at the end) is a locking read:
under REPEATABLE READ a plain SELECT would read a snapshot that lacks rows other loaders
committed since, and disagree with the locking reads and writes (docs/architecture.md,
"Concurrent loaders").

Where it lives: this module holds the applier (which objects take the fast path, the refusal and
dropped-connection memory, the chunks of an object, the fallback to the upsert); `fast_session`
one object's session (the probe, fresh or keys, the decision, the fix-ups at the end);
`fast_worker` the thread that talks to the server and LOAD DATA of a chunk; `fast_rows` the
folding, the row text and the chunk sizes; `fast_statements` the SQL.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from chalicelib.commands import WriteCommand
from chalicelib.db.database import Database, connection_lost
from chalicelib.loader.apply import Folded, SqlApplier, Touched
from chalicelib.loader.fast_rows import full_sizes, tail_sizes
from chalicelib.loader.fast_session import Session
from chalicelib.loader.fast_statements import DROP_KEYS, ROLLBACK_TO_SAVEPOINT, fast_table, main_resource
from chalicelib.loader.fast_worker import Abandoned, LoadRefused, StartOver, Worker, short_switch_interval
from chalicelib.loader.gc_pause import gc_paused
from chalicelib.loader.parsing import parse_lines
from chalicelib.loader.quarantine import Quarantine
from chalicelib.loader.streaming import LineStream

log = logging.getLogger(__name__)

REFUSAL_MEMORY_SECONDS = 600.0
DROPS_BEFORE_UPSERT = 2  # connections lost on the fast path in a row before it is given up a while
MAX_HELD_REJECTS = 2000


class _TooManyRejects(Abandoned):
    """More rejects than MAX_HELD_REJECTS wait in memory (they are written only once the worker
    thread is done with the connection): not an object of our writer; take the general path,
    which writes rejects as they come."""


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

    # -- already parsed: an object's winners (BatchLoader._apply_gated, SqlApplier.apply_stream) --
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
        session = Session(self, cur, Worker(False), {})
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
        read cache). Memory holds the object's keys (their winners), not its lines.

        When the object can be read again (`stream.again`) and no cache wants its winners, its
        parsed commands go while the server writes its last chunks (`Session.let_go`); the rare
        paths that would need them then roll back to the savepoint and read the object again
        from its start: the keys way (keys stored after all), or the upsert (a refusal)."""
        reopen = stream.again
        early = reopen is not None and touched is None
        mark = quarantine.mark() if early else None
        try:
            return self._apply_stream(cur, stream, quarantine, touched, early)
        except StartOver as exc:
            assert reopen is not None and mark is not None
            log.info("fast load: the object is read again from its start: %s", exc)
            self.paths["started over"] += 1
            quarantine.reset(mark)
            return self._apply_stream(cur, reopen(), quarantine, touched, False, again=True)

    def _apply_stream(
        self,
        cur: Any,
        stream: LineStream,
        quarantine: Quarantine,
        touched: Touched | None,
        early: bool,
        again: bool = False,
    ) -> tuple[int, int]:
        if stream.fill(self.min_rows) < self.min_rows or not self.fast_allowed:
            if not again:  # an object read again was counted by how it began
                self.paths["small" if self.fast_allowed else "upsert"] += 1
            return SqlApplier.apply_stream(self, cur, stream, quarantine, touched)
        # No cyclic GC while the object's winners are alive: nothing here makes cycles, and a
        # collection would walk every one of them. They are released before the collector runs.
        with gc_paused():
            others = Folded()
            worker = Worker(self.threaded and not stream.done)  # a thread to talk to the server
            session = Session(self, cur, worker, {}, early, again)
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
        session: Session,
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
        self, stream: LineStream, quarantine: Quarantine, others: Folded, session: Session
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
        session: Session,
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
        except Abandoned as exc:
            worker.finish_all()  # a chunk's error (a deadlock ends the transaction) is raised
            if isinstance(exc, LoadRefused):
                self._refused(exc)
            elif not isinstance(exc, StartOver):
                log.info("fast load: many rejects; this object takes the multi-row upsert")
                self.paths["rejects"] += 1
            if session.mode:
                cur.execute(ROLLBACK_TO_SAVEPOINT)
                try:
                    cur.execute(DROP_KEYS)
                except Exception:
                    log.debug("could not drop the keys table", exc_info=True)
            if session.released:  # its parsed commands are gone: the object is read again
                if isinstance(exc, StartOver):
                    raise
                raise StartOver(str(exc)) from exc
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
