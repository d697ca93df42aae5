"""Load attempts and poisoned objects (CONTRACT section 5).

An attempt counts toward poisoning when it failed while the database answered, or when its process
died while the server stayed up. A load that is still running, one that failed because the
database (or the object's store) was unreachable, and one whose server restarted after it began
do not count.

Each load of an object is recorded in `ingest_attempts` before it starts, in a transaction of its
own: `running` lists the loads of the object under way, each by a token that shows whether it is
alive (chalicelib.loader.liveness: a lock its connection holds and the server's start time on
MySQL/MariaDB, the process on SQLite). A load ends one of four ways:
- it commits: the row goes, in the load's own transaction (with the ledger row);
- it fails while the database answers (a bug, something the code cannot take): it counts,
  `attempts` + 1, its error kept in `last_error`;
- it fails because the database or the store was unreachable: it takes its token out without
  counting, once the database answers again (tried for up to GIVE_BACK_SECONDS);
- its process dies (killed, out of memory or time) and its token stays behind. The next load of the
  object judges the tokens it finds: a load still alive (another delivery in flight) is left
  alone; a token whose load died while its server stayed up counts, with UNFINISHED as its error;
  one whose server restarted since it began (whose load was cut by it) is dropped uncounted.
After MAX_FAILED counted attempts the object is poisoned: loads without `force` leave it (the
reconciler, S3 events, `load`), and one query lists such objects with their last error
(docs/operations.md); `replay --force` or `load --force` tries it again after a fix, and a success
clears the row.

A loader on a schema without `running` (migration 4 not run yet) counts failures only, so that a
deploy needs no order between the loader and `migrate`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from chalicelib.db.database import Database, utc_now_stored
from chalicelib.db.schema import RUNNING_CHARS, RUNNING_LOADS_MIGRATION, level_of
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader.ledger import backslash_escaped
from chalicelib.loader.liveness import DIED, RUNNING, liveness_for
from chalicelib.retry import RetryPolicy, no_jitter

log = logging.getLogger(__name__)

MAX_FAILED = 3
UNFINISHED = "the load did not finish (the process was killed, or ran out of memory or time)"
GIVEN_BACK = "the last load failed while the database or the store was unreachable"
MAX_ERROR_CHARS = 1000
SCHEMA_CHECK_SECONDS = 60.0  # how often a loader on an older schema looks for `running` again

# The runbook's query (docs/operations.md), held to it by a test.
POISONED_QUERY = (
    "SELECT bucket, object_key, etag, attempts, last_error, last_attempt_at, poisoned_at "
    "FROM ingest_attempts WHERE poisoned_at IS NOT NULL ORDER BY poisoned_at"
)


@dataclass
class Attempt:
    """One load of an object under way."""

    bid: str
    key: str
    token: str = ""  # in `running`; "" when not recorded (an older schema, or `running` full)
    holder: Any = None  # the connection that shows the token alive


class Attempts:
    """The `ingest_attempts` rows of one database."""

    GIVE_BACK_SECONDS = 5.0
    BEGIN_ATTEMPTS = 5  # tries to record a load's start, each after a pause of up to 0.05 s more
    sleep = staticmethod(time.sleep)  # tests record the pauses instead
    clock = staticmethod(time.monotonic)

    def __init__(self, db: Database) -> None:
        self.db = db
        self.liveness = liveness_for(db.dialect)
        self._tracks = False
        self._checked_at: float | None = None

    # -- a load begins ----------------------------------------------------------------------
    def begin(self, bid: str, bucket: str, key: str, etag: str, force: bool) -> tuple[str, Attempt]:
        """Record an attempt about to start: ("skip", _) when the object is in the ledger already
        (and not forced: nothing to do), ("poisoned", _) when it is (or has just become) poisoned
        and not forced, ("go", the attempt) otherwise. Committed before the load starts. A
        deadlock (two loads of the same object starting together) is retried like the load's own
        transaction."""
        policy = RetryPolicy(self.BEGIN_ATTEMPTS, 0.05, linear=True, sleep=self.sleep, clock=self.clock)
        return policy.call(lambda: self._begin(bid, bucket, key, etag, force), self._deadlocked)

    def _deadlocked(self, exc: BaseException) -> bool:
        return isinstance(exc, DatabaseUnavailable) and self.db.is_retryable(exc.__cause__)

    def _begin(self, bid: str, bucket: str, key: str, etag: str, force: bool) -> tuple[str, Attempt]:
        db = self.db
        now = utc_now_stored()
        attempt = Attempt(bid, key)
        try:
            with db.transaction() as cur:
                if not force:
                    cur.execute(db.sql("SELECT 1 FROM ingest_batches WHERE batch_id = %s"), (bid,))
                    if cur.fetchall():
                        return "skip", attempt
                tracks = self._tracks_running(cur)
                if tracks:
                    attempt.token, attempt.holder = self.liveness.take(cur), cur.connection
                # The insert first: a locking read of a missing row would lock the gap around it,
                # and two loads of different objects starting together would deadlock on it.
                running = ", running" if tracks else ""
                try:
                    cur.execute(
                        db.sql(
                            "INSERT INTO ingest_attempts (batch_id, bucket, object_key, etag, attempts, last_error, "
                            f"first_attempt_at, last_attempt_at, poisoned_at{running}) "
                            f"VALUES (%s, %s, %s, %s, 0, '', %s, %s, NULL{', %s' if tracks else ''})"
                        ),
                        (bid, bucket, key, etag, now, now, *([attempt.token] if tracks else [])),
                    )
                    return "go", attempt
                except Exception as exc:
                    if not db.is_duplicate_key(exc):
                        raise
                state = self._judge(cur, attempt, force, now, tracks)
        except BaseException:
            self.end(attempt)
            raise
        if state != "go":
            self.end(attempt)
        return state, attempt

    def _judge(self, cur: Any, attempt: Attempt, force: bool, now: str, tracks: bool) -> str:
        """The object's row exists: judge the loads it lists as running, count those that died
        while their server stayed up, then poison the object or add this load."""
        db = self.db
        attempts, poisoned_at, tokens = self._row(cur, attempt.bid, tracks)
        verdicts = self.liveness.judge(cur, tokens) if tokens else []
        died = verdicts.count(DIED)
        running = [token for token, verdict in zip(tokens, verdicts, strict=True) if verdict == RUNNING]
        attempts += died
        state = "go"
        if not force and (poisoned_at is not None or attempts >= MAX_FAILED):
            state = "poisoned"
            if poisoned_at is None:
                poisoned_at = now
                log.error("object %s is poisoned after %d loads that failed or did not finish", attempt.key, attempts)
        elif attempt.token:
            if len(" ".join([*running, attempt.token])) <= RUNNING_CHARS:
                running.append(attempt.token)
            else:  # not recorded: this load does not count whatever happens to it
                log.warning("too many loads of %s at once to record this one", attempt.key)
                self.end(attempt)
                attempt.token = ""
        sets = ["attempts = %s", "poisoned_at = %s"]
        params: list[Any] = [attempts, poisoned_at]
        if died:
            sets.append("last_error = %s")
            params.append(UNFINISHED)
        if state == "go":
            sets.append("last_attempt_at = %s")
            params.append(now)
        if tracks:
            sets.append("running = %s")
            params.append(" ".join(running))
        cur.execute(db.sql(f"UPDATE ingest_attempts SET {', '.join(sets)} WHERE batch_id = %s"), (*params, attempt.bid))
        return state

    def _row(self, cur: Any, bid: str, tracks: bool) -> tuple[int, Any, list[str]]:
        """(attempts, poisoned_at, running tokens) of the object's row, locked; (-1, None, []) when
        there is none."""
        lock = "" if self.db.dialect == "sqlite" else " FOR UPDATE"
        running = ", running" if tracks else ""
        cur.execute(
            self.db.sql(f"SELECT attempts, poisoned_at{running} FROM ingest_attempts WHERE batch_id = %s{lock}"), (bid,)
        )
        rows = cur.fetchall()
        if not rows:
            return -1, None, []
        row = rows[0]
        return int(row[0]), row[1], (str(row[2]).split() if tracks else [])

    def _tracks_running(self, cur: Any) -> bool:
        """Whether the schema has `ingest_attempts.running` (migration 4): checked once, and
        again now and then while it has not."""
        if self._tracks:
            return True
        now = self.clock()
        if self._checked_at is not None and now - self._checked_at < SCHEMA_CHECK_SECONDS:
            return False
        self._checked_at = now
        self._tracks = level_of(cur) >= RUNNING_LOADS_MIGRATION
        if not self._tracks:
            log.warning("ingest_attempts has no `running` yet (run migrate): only failed loads count")
        return self._tracks

    # -- while it runs ----------------------------------------------------------------------
    def hold(self, cur: Any, attempt: Attempt) -> None:
        """In the load's transaction: its token is shown alive on this connection (again, after a
        reconnect: the old connection's lock went with it)."""
        if attempt.token and attempt.holder is not cur.connection:
            self.liveness.hold(cur, attempt.token)
            attempt.holder = cur.connection

    # -- it ends ----------------------------------------------------------------------------
    def succeeded(self, cur: Any, bid: str) -> None:
        """In the load's own transaction: the object loaded, its attempts are forgotten."""
        cur.execute(self.db.sql("DELETE FROM ingest_attempts WHERE batch_id = %s"), (bid,))

    def failed(self, attempt: Attempt, error: str) -> bool:
        """The attempt failed with `error` while the database answered: it counts. True when the
        object is now poisoned. Never raises."""
        try:
            poisoned = self._end(attempt, True, backslash_escaped(error)[:MAX_ERROR_CHARS])
        except Exception:
            log.warning("could not record the failed load of %s", attempt.key, exc_info=True)
            return False
        if poisoned:
            log.error("object %s is poisoned after %d failed loads: %s", attempt.key, MAX_FAILED, error)
        return poisoned

    def given_back(self, attempt: Attempt) -> None:
        """The attempt failed because the database or the store was unreachable: it does not
        count. Tried until the database answers, for up to GIVE_BACK_SECONDS; if it never does,
        the attempt's token stays behind for the next load to judge (a server that restarted
        meanwhile shows it). Never raises."""
        policy = RetryPolicy(
            None,
            0.1,
            cap=1.0,
            jitter=no_jitter,
            give_up_after=self.GIVE_BACK_SECONDS,
            sleep=self.sleep,
            clock=self.clock,
        )
        run = policy.start()
        while True:
            try:
                self._end(attempt, False, GIVEN_BACK)
                return
            except Exception:  # noqa: BLE001 - the database is likely still down: try again
                if not run.again():
                    log.info("could not give back the attempt of %s (the database is still down?)", attempt.key)
                    return

    def deferred(self, attempt: Attempt, reason: str) -> None:
        """The object was left for a newer loader or schema (deferral.py): its attempt does not
        count, and `last_error` says why it waits. Never raises."""
        try:
            self._end(attempt, False, backslash_escaped(f"deferred: {reason}")[:MAX_ERROR_CHARS])
        except Exception:  # the token stays behind for the next load to judge
            log.info("could not record the deferral of %s", attempt.key, exc_info=True)

    def end(self, attempt: Attempt) -> None:
        """After the attempt ended, whichever way: it no longer shows itself alive. Never raises."""
        if attempt.token and attempt.holder is not None:
            try:
                self.liveness.release(attempt.holder, attempt.token)
            except Exception:  # a lost connection has let its locks go already
                log.debug("could not release the token of %s", attempt.key, exc_info=True)

    def _end(self, attempt: Attempt, counts: bool, error: str) -> bool:
        """Take the attempt out of `running`, counted or not; whether the object is poisoned."""
        db = self.db
        with db.transaction() as cur:
            tracks = bool(attempt.token)
            attempts, poisoned_at, tokens = self._row(cur, attempt.bid, tracks)
            if attempts < 0:
                return False  # loaded meanwhile (its commit removed the row)
            if attempt.token in tokens:
                tokens.remove(attempt.token)
                attempts += counts
            elif tracks and self.liveness.same_run(cur, attempt.token):
                # Another load judged this one dead (its connection was lost) and counted it.
                if not counts and attempts > 0:
                    attempts -= 1
                    poisoned_at = poisoned_at if attempts >= MAX_FAILED else None
            else:
                attempts += counts
            if counts and attempts >= MAX_FAILED and poisoned_at is None:
                poisoned_at = utc_now_stored()
            running = ", running = %s" if tracks else ""
            cur.execute(
                db.sql(
                    f"UPDATE ingest_attempts SET attempts = %s, last_error = %s, poisoned_at = %s{running} WHERE batch_id = %s"
                ),
                (attempts, error, poisoned_at, *([" ".join(tokens)] if tracks else []), attempt.bid),
            )
        return poisoned_at is not None

    # -- poisoned objects -------------------------------------------------------------------
    def poisoned_ids(self, ids: list[str]) -> set[str]:
        """Which of these batch ids are poisoned (one query per 500)."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            rows = self.db.query(
                f"SELECT batch_id FROM ingest_attempts WHERE poisoned_at IS NOT NULL AND batch_id IN ({marks})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    def poisoned_count(self) -> int:
        rows = self.db.query("SELECT COUNT(*) FROM ingest_attempts WHERE poisoned_at IS NOT NULL")
        return int(rows[0][0])
