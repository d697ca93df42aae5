"""Load attempts and poisoned objects (CONTRACT section 5).

Each load of an object is recorded in `ingest_attempts` before it starts, in a transaction of its
own, so that a load that never ends (the process killed for memory or time) still counts. The row
says "did not finish" until the load ends: a load that commits deletes it (in its own
transaction, with the ledger row), a load that fails writes its error there. A failure while the
database (or the object's store) is unreachable gives its attempt back: the object is not to blame.
After MAX_FAILED attempts that did not succeed, the object is poisoned: loads without `force`
leave it (the reconciler, S3 events, `load`), and one query lists such objects with their last
error (docs/operations.md); `replay --force` or `load --force` tries it again after a fix, and a
success clears the row.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from chalicelib.db.database import Database, utc_now_stored
from chalicelib.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

MAX_FAILED = 3
UNFINISHED = "the load did not finish (the process was killed, or ran out of memory or time)"
MAX_ERROR_CHARS = 1000

# The runbook's query (docs/operations.md), held to it by a test.
POISONED_QUERY = (
    "SELECT bucket, object_key, etag, attempts, last_error, last_attempt_at, poisoned_at "
    "FROM ingest_attempts WHERE poisoned_at IS NOT NULL ORDER BY poisoned_at"
)


class Attempts:
    """The `ingest_attempts` rows of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(self, bid: str, bucket: str, key: str, etag: str, force: bool) -> str:
        """Record an attempt about to start; "skip" when the object is in the ledger already (and
        not forced: nothing to do), "poisoned" when it is (or has just become) poisoned and not
        forced, "go" otherwise. Committed before the load starts. A deadlock (two loads of the
        same object starting together) is retried like the load's own transaction."""
        for attempt in range(1, 6):
            try:
                return self._begin(bid, bucket, key, etag, force)
            except DatabaseUnavailable as exc:
                if attempt == 5 or not self.db.is_retryable(exc.__cause__):
                    raise
                time.sleep(random.uniform(0, 0.05 * attempt))
        raise AssertionError("unreachable")

    def _begin(self, bid: str, bucket: str, key: str, etag: str, force: bool) -> str:
        db = self.db
        now = utc_now_stored()
        with db.transaction() as cur:
            if not force:
                cur.execute(db.sql("SELECT 1 FROM ingest_batches WHERE batch_id = %s"), (bid,))
                if cur.fetchall():
                    return "skip"
            # The insert first: a locking read of a missing row would lock the gap around it,
            # and two loads of different objects starting together would deadlock on it.
            try:
                cur.execute(
                    db.sql(
                        "INSERT INTO ingest_attempts (batch_id, bucket, object_key, etag, attempts, last_error, "
                        "first_attempt_at, last_attempt_at, poisoned_at) VALUES (%s, %s, %s, %s, 1, %s, %s, %s, NULL)"
                    ),
                    (bid, bucket, key, etag, UNFINISHED, now, now),
                )
                return "go"
            except Exception as exc:
                if not db.is_duplicate_key(exc):
                    raise
            lock = "" if db.dialect == "sqlite" else " FOR UPDATE"
            cur.execute(db.sql(f"SELECT attempts, poisoned_at FROM ingest_attempts WHERE batch_id = %s{lock}"), (bid,))
            rows = cur.fetchall()
            attempts, poisoned_at = (int(rows[0][0]), rows[0][1]) if rows else (0, None)
            if not force and poisoned_at is not None:
                return "poisoned"
            if not force and attempts >= MAX_FAILED:  # the last of them never finished
                cur.execute(db.sql("UPDATE ingest_attempts SET poisoned_at = %s WHERE batch_id = %s"), (now, bid))
                log.error("object %s is poisoned after %d loads that did not finish", key, attempts)
                return "poisoned"
            cur.execute(
                db.sql(
                    "UPDATE ingest_attempts SET attempts = attempts + 1, last_error = %s, last_attempt_at = %s "
                    "WHERE batch_id = %s"
                ),
                (UNFINISHED, now, bid),
            )
        return "go"

    def succeeded(self, cur: Any, bid: str) -> None:
        """In the load's own transaction: the object loaded, its attempts are forgotten."""
        cur.execute(self.db.sql("DELETE FROM ingest_attempts WHERE batch_id = %s"), (bid,))

    def failed(self, bid: str, key: str, error: str) -> bool:
        """The attempt failed with `error`; True when the object is now poisoned. Never raises."""
        try:
            poisoned = self._update(
                bid,
                "UPDATE ingest_attempts SET last_error = %s, "
                "poisoned_at = CASE WHEN attempts >= %s THEN %s ELSE poisoned_at END WHERE batch_id = %s",
                (_storable(error)[:MAX_ERROR_CHARS], MAX_FAILED, utc_now_stored(), bid),
            )
        except Exception:
            log.warning("could not record the failed load of %s", key, exc_info=True)
            return False
        if poisoned:
            log.error("object %s is poisoned after %d failed loads: %s", key, MAX_FAILED, error)
        return poisoned

    def given_back(self, bid: str) -> None:
        """The attempt failed because the database or the store was unreachable: it does not
        count. Best effort (the database may still be down); never raises."""
        try:
            self._update(
                bid,
                "UPDATE ingest_attempts SET attempts = attempts - 1, last_error = %s "
                "WHERE batch_id = %s AND attempts > 0",
                ("the last load failed while the database or the store was unreachable", bid),
            )
        except Exception:  # noqa: BLE001 - best effort: the database is likely down
            log.info("could not give back the attempt of %s (the database is still down?)", bid)

    def _update(self, bid: str, statement: str, params: tuple[Any, ...]) -> bool:
        """One UPDATE of the row of `bid`, in a transaction of its own; whether the row is
        poisoned after it (read in the same transaction)."""
        db = self.db
        with db.transaction() as cur:
            cur.execute(db.sql(statement), params)
            cur.execute(db.sql("SELECT poisoned_at FROM ingest_attempts WHERE batch_id = %s"), (bid,))
            rows = cur.fetchall()
        return bool(rows) and rows[0][0] is not None

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


def _storable(text: str) -> str:
    """Valid UTF-8 (an error message may quote what an object held)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
