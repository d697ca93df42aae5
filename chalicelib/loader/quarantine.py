"""Quarantine: an object's bad lines, written to `ingest_rejects` in the load's transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.db.database import Database

if TYPE_CHECKING:
    from chalicelib.loader.reject_lines import Reject


class Quarantine:
    """An object's rejects, written to `ingest_rejects` in the load's transaction as they come,
    BATCH rows at a time: a reject costs no memory once written. `held` keeps them in memory
    meanwhile (the MySQL fast path, while its worker thread owns the connection)."""

    BATCH = 500

    def __init__(self, db: Database, cur: Any, where: tuple[str, str, str, str, str]) -> None:
        self.db = db
        self.cur = cur
        self.where = where  # batch_id, bucket, key, etag, rejected_at
        self.pending: list[tuple[Any, ...]] = []
        self.count = 0
        self.held = False
        self._last = (-1, -1)  # (line, part) of the last reject: a line's rejects come together
        self._written = 0  # rejects written so far

    def add(self, rejects: list[Reject]) -> None:
        bid, bucket, key, etag, now = self.where
        line, part = self._last
        for reject in rejects:
            part = part + 1 if reject.line_no == line else 0
            line = reject.line_no
            self.pending.append((bid, line, part, bucket, key, etag, reject.reason[:500], reject.line, now))
        self._last = (line, part)
        self.count += len(rejects)
        if not self.held and len(self.pending) >= self.BATCH:
            self.flush()

    def mark(self) -> tuple[int, int, int, tuple[int, int]]:
        """Where the rejects stand now; `reset` goes back to it (an object read again from its start)."""
        return self._written, len(self.pending), self.count, self._last

    def reset(self, mark: tuple[int, int, int, tuple[int, int]]) -> None:
        """Forget the rejects added since `mark`; raises RuntimeError when some were written since."""
        written, size, count, last = mark
        if self._written != written or len(self.pending) < size:
            raise RuntimeError("rejects were written since the mark: the object cannot be read again")
        del self.pending[size:]
        self.count, self._last = count, last

    def flush(self) -> None:
        if not self.pending:
            return
        self._written += len(self.pending)
        verb = "INSERT OR IGNORE" if self.db.dialect == "sqlite" else "INSERT IGNORE"
        self.cur.executemany(
            self.db.sql(
                f"{verb} INTO ingest_rejects (batch_id, line_no, part, bucket, object_key, etag, reason, line, "
                "rejected_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            self.pending,
        )
        self.pending.clear()
