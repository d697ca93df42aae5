"""Objects a loader cannot load yet (CONTRACT section 5): deferred whole, retried once it can.

An object is deferred when it holds a command whose `v` (command schema version) is newer than
every version this release knows, or a command of a resource whose table the database's schema
cannot hold yet (`migrate` has not run): nothing of it is applied, it gets no ledger entry and no
rejects, and its attempt does not count toward poisoning. It is counted (`LoadResult.deferred`,
the EMF metric `DeferredObjects`) and recorded in `ingest_deferrals` with what it waits for (the
schema version and the migration level), so the reconciler retries it once this release knows
that version and the database has that level, and not on every run before.

The database's level is the newest migration recorded in `schema_migrations`. Migrations only
add, so a level once seen to be enough is remembered for the process; below it, every load asks
again (one indexed read).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from chalicelib.db.database import Database, utc_now_stored
from chalicelib.db.schema import DEFERRALS_LEVEL, level_for, migration_level
from chalicelib.resources import RESOURCES, SCHEMA_VERSION

log = logging.getLogger(__name__)


class Deferred(Exception):
    """An object holds a command this loader, or its database's schema, cannot hold yet.

    `needs_version`: the command schema version it waits for (the loader's own when the schema
    is what is missing); `needs_level`: the migration level it waits for (0: not known yet, as for
    a version this loader does not know)."""

    def __init__(self, reason: str, needs_version: int, needs_level: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.needs_version = needs_version
        self.needs_level = needs_level


def newer_version(v: int) -> Deferred:
    return Deferred(f"command schema version {v} is newer than this loader's ({SCHEMA_VERSION})", v)


class SchemaGate:
    """What the database's schema can hold now: its migration level, and the resources it cannot
    hold yet. A level that holds everything this release declares is remembered for the process
    (migrations only add); below it, each call reads it again."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._needs = {name: level_for(resource.newest) for name, resource in RESOURCES.items()}
        self._top = max([DEFERRALS_LEVEL, *self._needs.values()])
        self._seen = 0

    def level(self) -> int:
        if self._seen < self._top:
            self._seen = migration_level(self.db)
        return self._seen

    def blocked(self) -> dict[str, int]:
        """resource -> the migration level it needs, for each the database cannot hold yet."""
        if self._seen >= self._top and len(self._needs) == len(RESOURCES):
            return {}
        self._needs = {name: level_for(resource.newest) for name, resource in RESOURCES.items()}
        level = self.level()
        return {name: need for name, need in self._needs.items() if need > level}

    def check(self, resources: set[str], blocked: dict[str, int]) -> None:
        """Raise Deferred when any of `resources` is blocked."""
        waiting = sorted(name for name in resources if name in blocked)
        if waiting:
            need = max(blocked[name] for name in waiting)
            reason = f"the database's schema cannot hold {', '.join(waiting)} yet (needs migration {need}: run migrate)"
            raise Deferred(reason, SCHEMA_VERSION, need)


class DeferralLog:
    """The `ingest_deferrals` rows of one database (from migration DEFERRALS_LEVEL on)."""

    def __init__(self, db: Database, schema: SchemaGate) -> None:
        self.db = db
        self.schema = schema

    def record(self, bid: str, where: tuple[str, str, str], deferred: Deferred) -> bool:
        """Record (or refresh) a deferred object; False when the schema has no table for it yet
        (then the reconciler waits for `migrate` instead). Never raises."""
        bucket, key, etag = where
        now = utc_now_stored()
        db = self.db
        try:
            if self.schema.level() < DEFERRALS_LEVEL:
                return False
            with db.transaction() as cur:
                # deferred_at is when the object was first deferred (its alarm fires after an hour
                # of waiting, however often it is deferred again meanwhile)
                cur.execute(db.sql("SELECT deferred_at FROM ingest_deferrals WHERE batch_id = %s"), (bid,))
                first = cur.fetchall()
                cur.execute(db.sql("DELETE FROM ingest_deferrals WHERE batch_id = %s"), (bid,))
                cur.execute(
                    db.sql(
                        "INSERT INTO ingest_deferrals (batch_id, bucket, object_key, etag, needs_version, "
                        "needs_level, reason, deferred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    ),
                    (
                        bid,
                        bucket,
                        key,
                        etag,
                        deferred.needs_version,
                        deferred.needs_level,
                        deferred.reason[:500],
                        first[0][0] if first else now,
                    ),
                )
            return True
        except Exception:
            log.warning("could not record the deferred object %s", key, exc_info=True)
            return False

    def waiting(self, ids: list[str]) -> set[str]:
        """Which of these batch ids are deferred objects still waiting: for a schema version this
        release does not know, or a migration level the database does not have."""
        if not ids or self.schema.level() < DEFERRALS_LEVEL:
            return set()
        level = self.schema.level()
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            rows = self.db.query(
                f"SELECT batch_id FROM ingest_deferrals WHERE (needs_version > %s OR needs_level > %s) "
                f"AND batch_id IN ({marks})",
                [SCHEMA_VERSION, level, *chunk],
            )
            found.update(r[0] for r in rows)
        return found

    def ready(self) -> list[tuple[str, str, str]]:
        """(bucket, key, etag) of every deferred object this release and this schema can load now."""
        if self.schema.level() < DEFERRALS_LEVEL:
            return []
        rows = self.db.query(
            "SELECT bucket, object_key, etag FROM ingest_deferrals WHERE needs_version <= %s AND needs_level <= %s "
            "ORDER BY deferred_at",
            (SCHEMA_VERSION, self.schema.level()),
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def oldest_age(self, now: datetime) -> float:
        """Seconds since the oldest object still deferred was first deferred (0 when none, or
        while the schema has no `ingest_deferrals`)."""
        if self.schema.level() < DEFERRALS_LEVEL:
            return 0.0
        rows = self.db.query("SELECT MIN(deferred_at) FROM ingest_deferrals")
        first = rows[0][0] if rows else None
        if first is None:
            return 0.0
        if not isinstance(first, datetime):  # SQLite keeps the fixed-width UTC text
            first = datetime.fromisoformat(str(first))
        return max(0.0, (now - first.replace(tzinfo=UTC)).total_seconds())

    def count(self) -> int:
        if self.schema.level() < DEFERRALS_LEVEL:
            return 0
        return int(self.db.query("SELECT COUNT(*) FROM ingest_deferrals")[0][0])

    def forget(self, bid: str) -> None:
        """The object loaded (or is in the ledger already): it waits no more."""
        db = self.db
        with db.transaction() as cur:
            cur.execute(db.sql("DELETE FROM ingest_deferrals WHERE batch_id = %s"), (bid,))
