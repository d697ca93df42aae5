"""The loader: apply one delivered object to the master, in one transaction with its ledger row.

Rules (CONTRACT section 5): for each (resource, owner, id) the command with the greatest
(version, op_id) wins whatever the order; deletes leave tombstones; an object already in the
ledger `ingest_batches` is skipped unless forced; bad lines go to `ingest_rejects` and never stop
the rest of the object; an object holding a command of a newer schema version, or one the
database's schema cannot hold yet, is deferred whole (deferral.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from chalicelib.config import DEFAULT_LOADER_MAX_OBJECT_BYTES
from chalicelib.db.database import Database, utc_now_stored
from chalicelib.errors import DatabaseUnavailable, ObjectUnavailable
from chalicelib.loader.attempts import Attempt, Attempts
from chalicelib.loader.deferral import DeferralLog, Deferred, SchemaGate
from chalicelib.loader.gate import LoadGate
from chalicelib.loader.ledger import Ledger, backslash_escaped, batch_id, ledger_key, local_etag
from chalicelib.loader.quarantine import Quarantine
from chalicelib.retry import RetryPolicy, half_jitter

if TYPE_CHECKING:  # parsing and applying are imported on first load: a GET never needs them
    from chalicelib.commands import WriteCommand
    from chalicelib.loader.apply import Applier, Touched
    from chalicelib.loader.streaming import LineStream

    Work = Callable[[Any, Quarantine], tuple[int, int]]

# An object to load: its bytes, or a function that opens it as a binary stream.
Body = bytes | Callable[[], BinaryIO]

# What other modules import from here (the ledger's names are ledger.py's).
__all__ = ["BatchLoader", "Body", "LoadResult", "applier_for", "batch_id", "ledger_key", "local_etag"]

log = logging.getLogger(__name__)


@dataclass
class LoadResult:
    applied: int = 0
    stale: int = 0
    rejected: int = 0
    skipped: int = 0
    objects: int = 0
    too_large: int = 0  # objects refused whole (LOADER_MAX_OBJECT_BYTES): one reject each
    poisoned: int = 0  # poisoned objects left alone (not forced)
    deferred: int = 0  # objects left for a newer loader or schema (deferral.py)

    def add(self, other: LoadResult) -> None:
        self.applied += other.applied
        self.stale += other.stale
        self.rejected += other.rejected
        self.skipped += other.skipped
        self.objects += other.objects
        self.too_large += other.too_large
        self.poisoned += other.poisoned
        self.deferred += other.deferred

    def line(self) -> str:
        return (
            f"applied={self.applied} stale={self.stale} rejected={self.rejected} skipped={self.skipped} "
            f"deferred={self.deferred}"
        )


class BatchLoader:
    # A deadlock victim or a lock wait that timed out runs again (chalicelib.retry) after a pause drawn between half
    # and all of RETRY_PAUSE_SECONDS doubled per try (at most RETRY_PAUSE_MAX_SECONDS). After
    # ATTEMPTS tries it closes the gate (gate.py: new loads wait; only those already running are
    # left to collide with) and runs again, with the same pauses, until it commits or
    # EXCLUSIVE_SECONDS have passed: five loaders on the same keys all get through.
    ATTEMPTS = 3
    EXCLUSIVE_SECONDS = 120.0
    RETRY_PAUSE_SECONDS = 0.05
    RETRY_PAUSE_MAX_SECONDS = 2.0
    clock = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)  # tests record the pauses instead

    def __init__(
        self,
        db: Database,
        applier: Applier | None = None,
        on_commit: Callable[[list[Any]], object] | None = None,
        max_object_bytes: int = DEFAULT_LOADER_MAX_OBJECT_BYTES,
    ) -> None:
        self.db = db
        self._applier = applier
        self.max_object_bytes = max_object_bytes
        self.ledger = Ledger(db)
        self.attempts = Attempts(db)
        self.gate = LoadGate(db)
        self.schema = SchemaGate(db)  # what the database's schema can hold (deferral.py)
        self.deferrals = DeferralLog(db, self.schema)
        # Called after a load commits with the changes for the read cache (CacheInvalidator).
        self.on_commit = on_commit

    @property
    def applier(self) -> Applier:
        """The applier for the database's dialect, made on first use (every process builds a
        loader; only the ones that load pay for importing the parser and the fast path)."""
        if self._applier is None:
            self._applier = applier_for(self.db)
        return self._applier

    @applier.setter
    def applier(self, value: Applier) -> None:
        self._applier = value

    def is_loaded(self, key: str, etag: str) -> bool:
        return self.ledger.holds(batch_id(key, etag))

    def loaded_ids(self, ids: list[str]) -> set[str]:
        """Which of these batch ids the ledger holds (one query per 500)."""
        return self.ledger.held(ids)

    def poisoned_ids(self, ids: list[str]) -> set[str]:
        """Which of these batch ids are poisoned objects (attempts.py)."""
        return self.attempts.poisoned_ids(ids)

    def poisoned_count(self) -> int:
        return self.attempts.poisoned_count()

    def waiting_ids(self, ids: list[str]) -> set[str]:
        """Which of these batch ids are deferred objects still waiting (deferral.py)."""
        return self.deferrals.waiting(ids)

    def load(self, bucket: str, key: str, etag: str, body: Body, force: bool = False) -> LoadResult:
        """Load one object: its bytes, or a function that opens it as a binary stream (called
        again if the transaction is retried). The object is read as a stream inside the
        transaction, after the ledger claim (an object already loaded is not even read).

        Raises DatabaseUnavailable (nothing applied) when the master fails, ObjectUnavailable
        when the object cannot be read. Each attempt is recorded first (attempts.py): a poisoned
        object is left alone unless forced (the result counts it in `poisoned`). An object this
        loader or its database cannot hold yet is left whole, its attempt not counted, and
        recorded for the reconciler (the result counts it in `deferred`)."""
        bid = batch_id(key, etag)
        lkey = backslash_escaped(ledger_key(key))[:1024]
        state, attempt = self.attempts.begin(bid, bucket, lkey, etag.strip('"')[:128], force)
        if state == "skip":
            return LoadResult(skipped=1, objects=1)
        if state == "poisoned":
            log.warning("object s3://%s/%s is poisoned: left alone (replay --force retries it)", bucket, key)
            return LoadResult(poisoned=1, objects=1)
        try:
            result, touched = self._load_stream(bucket, key, etag, body, force, attempt, self.schema.blocked())
        except Deferred as exc:  # rolled back: nothing of it applied, no ledger entry, no rejects
            self.attempts.deferred(attempt, exc.reason)
            self.deferrals.record(bid, (bucket, backslash_escaped(key)[:1024], etag.strip('"')[:128]), exc)
            log.warning("object s3://%s/%s deferred: %s", bucket, key, exc.reason)
            return LoadResult(deferred=1, objects=1)
        except Exception as exc:
            if isinstance(exc, (DatabaseUnavailable, ObjectUnavailable)):
                self.attempts.given_back(attempt)
            else:
                self.attempts.failed(attempt, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.attempts.end(attempt)
        if touched is not None:
            self._committed(result, touched.winners, touched.written, touched.earliest)
        return result

    def _load_stream(
        self,
        bucket: str,
        key: str,
        etag: str,
        body: Body,
        force: bool,
        attempt: Attempt | None = None,
        blocked: dict[str, int] | None = None,
    ) -> tuple[LoadResult, Touched | None]:
        from chalicelib.loader.apply import Touched
        from chalicelib.loader.reject_lines import Reject
        from chalicelib.loader.streaming import LineStream, ObjectTooLarge

        touched = Touched() if self.on_commit else None

        def open_stream() -> LineStream:
            stream = LineStream(body() if callable(body) else body, limit=self.max_object_bytes)
            stream.again = open_stream  # bytes, or a function that opens the object again
            return stream

        def work(cur: Any, quarantine: Quarantine) -> tuple[int, int]:
            stream = open_stream()
            if touched is not None:  # a retried transaction starts over
                touched.clear()
            if blocked:  # the schema is behind this loader (a deploy before migrate): read it all first
                applied, stale = self._apply_gated(cur, stream, quarantine, touched, blocked)
            else:
                applied, stale = self._apply_stream(cur, stream, quarantine, touched)
            problem = stream.problem_reject()  # recorded here only, whichever path the object took
            if problem is not None:
                quarantine.add([problem])
            return applied, stale

        try:
            return self._load(bucket, key, etag, force, work, attempt), touched
        except ObjectTooLarge as exc:  # rolled back: nothing of it applied
            log.error("object s3://%s/%s refused: %s", bucket, key, exc)
            refusal = [Reject(0, str(exc), "")]

            def refuse(cur: Any, quarantine: Quarantine) -> tuple[int, int]:
                quarantine.add(refusal)
                return 0, 0

            result = self._load(bucket, key, etag, force, refuse, attempt)
            result.too_large = 0 if result.skipped else 1
            return result, None

    def _apply_gated(
        self, cur: Any, stream: LineStream, quarantine: Quarantine, touched: Touched | None, blocked: dict[str, int]
    ) -> tuple[int, int]:
        """While the database's schema is behind this loader: fold the whole object, and defer it
        if it names a resource the schema cannot hold yet; otherwise apply its winners."""
        from chalicelib.loader.apply import read_folded

        folded = read_folded(stream, quarantine)
        self.schema.check({key[0] for key in folded.winners}, blocked)
        winners = list(folded.winners.values())
        if touched is not None:
            touched.add(folded.winners, folded.earliest)
        applied, stale = self.applier.apply(cur, winners, touched.written if touched is not None else None)
        return applied, stale + folded.superseded

    def _apply_stream(self, cur: Any, stream: LineStream, quarantine: Quarantine, touched: Touched | None) -> Any:
        apply_stream = getattr(self.applier, "apply_stream", None)
        if apply_stream is not None:
            return apply_stream(cur, stream, quarantine, touched)
        # An applier that only takes parsed commands (a test double): the whole object is read.
        from chalicelib.loader.parsing import parsed_batches

        commands: list[WriteCommand] = []
        for batch, rejects in parsed_batches(stream):
            commands.extend(batch)
            quarantine.add(rejects)
        if touched is None:
            return self.applier.apply(cur, commands)
        touched.winners.extend(commands)
        return self.applier.apply(cur, commands, touched.written)

    def _committed(
        self,
        result: LoadResult,
        commands: list[WriteCommand],
        written: list[tuple[WriteCommand, str]] | None = None,
        earliest: dict[tuple[str, str, str], str] | None = None,
    ) -> None:
        """After COMMIT: hand the read cache every key of the object, version-guarded. A row the
        applier wrote goes in whole (so reads hit at once, even on a lagging replica); any other
        key's winner in the object becomes a fence (reads miss until they fill a row at least that
        new; a stale command's fence is refused by the guard). Each carries the key's earliest
        `at` in the object, which lowers the entry's created_at whatever the versions: a stale
        command lowers the table's created_at too (apply.py). Never raises."""
        if self.on_commit is None or result.skipped or not commands:
            return
        try:
            from chalicelib.loader.apply import fold
            from chalicelib.readers.cache import change_for

            rows = {c.key: change_for(c, created) for c, created in written or []}
            winners, first, _ = fold(commands)
            for k, at in (earliest or {}).items():  # the object's commands that did not win
                if k in first and at < first[k]:
                    first[k] = at
            self.on_commit([rows.get(k) or change_for(c, earliest=first[k]) for k, c in winners.items()])
        except Exception:
            log.exception("could not update the read cache after a load")

    def _load(
        self, bucket: str, key: str, etag: str, force: bool, work: Work, attempt: Attempt | None = None
    ) -> LoadResult:
        """One transaction; run again when the server chose it as a deadlock victim or its lock
        wait timed out, which only concurrent loads of the same keys cause: ATTEMPTS tries, then
        more with the gate closed (see ATTEMPTS). Anything else, or the last try's failure, is
        raised with nothing applied (the transaction rolled back): the event's retry and the
        reconciler load the object again later."""
        run, gated, gate = self._retries().start(), False, False
        try:
            while True:
                try:
                    return self._load_once(bucket, key, etag, force, work, attempt)
                except DatabaseUnavailable as exc:
                    if not self.db.is_retryable(exc.__cause__):
                        raise
                    pause = run.next_pause()
                    if pause is None and not gated and self.EXCLUSIVE_SECONDS > 0:
                        gate, gated = self.gate.close(), True
                        run = self._retries(exclusive=True).resume(run)  # its time starts now
                        log.info("load of %s goes through the gate after %d tries", key, run.tries)
                        pause = run.next_pause()
                    if pause is None:
                        raise
                    log.info("load of %s retried after: %s", key, exc)
                    run.wait(pause)
        finally:
            if gate:
                self.gate.open()

    def _retries(self, exclusive: bool = False) -> RetryPolicy:
        """The pauses between a load's tries: ATTEMPTS of them, or (`exclusive`: behind the
        closed gate) as many as EXCLUSIVE_SECONDS allow."""
        return RetryPolicy(
            None if exclusive else self.ATTEMPTS,
            self.RETRY_PAUSE_SECONDS,
            cap=self.RETRY_PAUSE_MAX_SECONDS,
            jitter=half_jitter,
            give_up_after=self.EXCLUSIVE_SECONDS if exclusive else None,
            sleep=self.sleep,
            clock=self.clock,
        )

    def _load_once(
        self, bucket: str, key: str, etag: str, force: bool, work: Work, attempt: Attempt | None
    ) -> LoadResult:
        bid = batch_id(key, etag)
        lkey = backslash_escaped(ledger_key(key))[:1024]
        etag = etag.strip('"')[:128]
        now = utc_now_stored()
        result = LoadResult(objects=1)
        with self.db.transaction() as cur:
            self.gate.pass_through(cur)  # before any row lock
            if attempt is not None:
                self.attempts.hold(cur, attempt)  # still shown alive, on this connection
            claimed = self.ledger.claim(cur, bid, bucket, lkey, etag, now, force)
            self.attempts.succeeded(cur, bid)  # this attempt ends here, whichever way
            if not claimed:
                result.skipped = 1
                return result
            quarantine = Quarantine(self.db, cur, (bid, bucket, lkey, etag, now))
            result.applied, result.stale = work(cur, quarantine)
            quarantine.flush()
            result.rejected = quarantine.count
            self.ledger.counted(cur, bid, result.applied, result.stale, result.rejected)
        return result


def applier_for(db: Database) -> Applier:
    """MySQL/MariaDB get the LOAD DATA fast path (chalicelib.loader.mysql_fast); SQLite the upsert."""
    if db.dialect == "mysql":
        from chalicelib.loader.mysql_fast import MySQLFastApplier

        return MySQLFastApplier(db)
    from chalicelib.loader.apply import SqlApplier

    return SqlApplier(db)
