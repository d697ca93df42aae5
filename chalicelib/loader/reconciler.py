"""Load every object under writes/ that the ledger does not hold: by hour, bounded, resumable.

The scheduled reconciler covers S3 events that never arrived or whose retries ran out; `replay`
(CLI) is the same walk over a chosen range. Progress is the ledger itself, so a run cut short by
its bound or a failure simply continues on the next run.

Deferred objects (deferral.py: a newer schema version, or a schema `migrate` has not brought up
yet) are left alone while what they wait for is still missing, not tried on every run; and while
the database has no `ingest_deferrals` yet (a release deployed before its `migrate`), the
scheduled run loads nothing. `reconcile_deferred` (the deploy's last step, after `migrate`)
loads every deferred object that can load now, then runs the scheduled walk once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import observe
from chalicelib.config import ConfigError
from chalicelib.db.schema import DEFERRALS_LEVEL
from chalicelib.errors import DatabaseUnavailable, ObjectUnavailable
from chalicelib.loader import BatchLoader, LoadResult, batch_id
from chalicelib.loader.sources import ObjectMissing, ObjectStore, StoredObject

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    result: LoadResult = field(default_factory=LoadResult)
    missing: int = 0  # objects found missing from the ledger (loaded now or left for later)
    left: int = 0  # missing objects not loaded in this run (bound reached or a read failed)
    failed: int = 0
    poisoned: int = 0  # poisoned objects left alone (loads kept failing; `replay --force` retries them)
    waiting: int = 0  # deferred objects left alone: what they wait for is still missing

    def as_dict(self) -> dict[str, int]:
        r = self.result
        return {
            "applied": r.applied,
            "stale": r.stale,
            "rejected": r.rejected,
            "skipped": r.skipped,
            "deferred": r.deferred,
            "objects": r.objects,
            "missing": self.missing,
            "left": self.left,
            "failed": self.failed,
            "poisoned": self.poisoned,
            "waiting": self.waiting,
        }


def parse_hour(text: str) -> datetime:
    """YYYY-MM-DDTHH (UTC). ValueError if not."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an hour in the form YYYY-MM-DDTHH") from exc


def hour_prefixes(prefix: str, since: datetime, until: datetime) -> Iterator[str]:
    """One prefix per hour from `since` to `until` (both included), oldest first."""
    hour = _hour(since)
    while hour <= until:
        yield f"{prefix}{hour:%Y/%m/%d/%H}/"
        hour += timedelta(hours=1)


def covering_prefixes(prefix: str, since: datetime, until: datetime) -> Iterator[str]:
    """The fewest prefixes that hold exactly the hours from `since` to `until`, oldest first.

    Whole years, months and days inside the range are listed as one prefix each, so replaying
    months costs a LIST call per page of objects rather than one per hour.
    """
    hour, last = _hour(since), _hour(until)
    while hour <= last:
        for form, start, end in _spans(hour):
            if hour == start and end is not None and end - timedelta(hours=1) <= last:
                yield f"{prefix}{hour:{form}}/"
                hour = end
                break
        else:
            yield f"{prefix}{hour:%Y/%m/%d/%H}/"
            if hour == last:
                return  # (the hour after 9999-12-31T23 does not exist)
            hour += timedelta(hours=1)


def _spans(hour: datetime) -> list[tuple[str, datetime, datetime | None]]:
    """(key format, first hour, first hour after) of the year, month and day holding `hour`."""
    year_start = hour.replace(month=1, day=1, hour=0)
    month_start = hour.replace(day=1, hour=0)
    day_start = hour.replace(hour=0)
    try:
        next_day: datetime | None = day_start + timedelta(days=1)
        next_month: datetime | None = (month_start + timedelta(days=32)).replace(day=1)
        next_year: datetime | None = year_start.replace(year=hour.year + 1)
    except (OverflowError, ValueError):  # the last day of year 9999
        next_day = next_month = next_year = None
    return [("%Y", year_start, next_year), ("%Y/%m", month_start, next_month), ("%Y/%m/%d", day_start, next_day)]


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def reconcile(
    store: ObjectStore,
    loader: BatchLoader,
    prefixes: Iterable[str],
    max_objects: int | None = None,
    force: bool = False,
    source: str | None = "reconcile",
) -> ReconcileReport:
    """Load every object under `prefixes` missing from the ledger (every object with `force`).

    Oldest hour first, at most `max_objects` loads; the rest is counted in `left` for the next
    run. An object that cannot be read, or fails in a way other than the database being
    unavailable, is counted in `failed` and left for the next run without stopping this one.
    A poisoned object (attempts.py) is left alone and counted in `poisoned`, unless `force`; a
    deferred one whose schema version or migration level is still missing, in `waiting`.
    DatabaseUnavailable stops the run (every further load would fail the same way).
    Each object loaded writes its log line and loader metrics, marked `source`; None writes none
    (the CLI, whose standard output is its one summary line).
    """
    report = ReconcileReport()
    for hour_prefix in prefixes:
        objects = list(store.list(hour_prefix))
        ids = [batch_id(o.key, o.etag) for o in objects if o.etag is not None]
        known = set() if force else loader.loaded_ids(ids)
        poisoned = set() if force else loader.poisoned_ids([i for i in ids if i not in known])
        waiting = loader.waiting_ids([i for i in ids if i not in known and i not in poisoned])
        for item in objects:
            bid = batch_id(item.key, item.etag) if item.etag is not None else None
            if bid in known:
                report.result.skipped += 1
                continue
            if bid in poisoned:
                report.poisoned += 1
                continue
            if bid in waiting:
                report.waiting += 1
                continue
            if max_objects is not None and report.result.objects >= max_objects:
                report.left += 1
                report.missing += 1
                continue
            _load_one(store, loader, item, force, report, source)
    return report


def _load_one(
    store: ObjectStore,
    loader: BatchLoader,
    item: StoredObject,
    force: bool,
    report: ReconcileReport,
    source: str | None,
) -> None:
    key = item.key
    started = time.perf_counter()
    try:
        body, etag = store.open(key)  # read as a stream while it loads
        if item.etag is None and not force and loader.is_loaded(key, etag):
            report.result.skipped += 1  # a local file: its MD5 is known only once read
            return
        result = loader.load(store.bucket, key, etag, body, force=force)
    except ObjectMissing:
        return  # deleted since it was listed
    except DatabaseUnavailable:
        raise
    except ObjectUnavailable as exc:
        log.warning("reconciler could not read %s: %s", key, exc)
        _count_failure(report)
        return
    except Exception:
        log.exception("reconciler could not load %s; it is left for the next run", key)
        _count_failure(report)
        return
    if result.poisoned:
        report.poisoned += 1
        return
    report.result.add(result)
    report.missing += 1
    if source is not None:
        lag = (datetime.now(UTC) - item.last_modified).total_seconds() if item.last_modified else None
        observe.loaded_object(
            store.bucket,
            key,
            result.applied,
            result.stale,
            result.rejected,
            result.skipped,
            (time.perf_counter() - started) * 1000,
            max(0.0, lag) if lag is not None else None,
            source=source,
            too_large=result.too_large,
            deferred=result.deferred,
        )


def _count_failure(report: ReconcileReport) -> None:
    report.failed += 1
    report.left += 1
    report.missing += 1


def _store(settings: Any, bucket: str | None) -> ObjectStore:
    """The writes bucket's store (`bucket`, or LOCAL_DATA_DIR for the local transport's "local")."""
    from chalicelib.loader.sources import LocalObjectStore, S3ObjectStore, s3_client
    from chalicelib.writers.local import LOCAL_BUCKET

    if bucket and bucket != LOCAL_BUCKET:
        return S3ObjectStore(s3_client(), bucket)
    if settings.write_transport == "firehose":
        raise ConfigError("the reconciler needs WRITES_BUCKET when WRITE_TRANSPORT=firehose")
    return LocalObjectStore(settings.local_data_dir)


def _schema_behind(loader: BatchLoader) -> bool:
    """True (logged and counted as `SchemaBehind`) when the database cannot record deferrals yet:
    this release was deployed and its `migrate` has not run. Every object naming a resource the
    schema lacks would be deferred again on each run, so the scheduled run waits for `migrate`
    (the deploy then calls `reconcile_deferred`)."""
    if loader.schema.level() >= DEFERRALS_LEVEL or not loader.schema.blocked():
        return False
    log.warning("the database's schema is behind this release: run migrate; nothing is loaded until then")
    observe.metrics({"Stage": observe.stage()}, {"SchemaBehind": (1, "Count")}, type="reconcile")
    return True


def reconcile_deferred(services: Any, now: datetime | None = None) -> dict[str, int]:
    """After `migrate` (the deploy's last step): load every deferred object this release and this
    schema can hold now, then run the scheduled walk once (it finds objects deferred while the
    database could not record them)."""
    loader: BatchLoader = services.loader
    report = ReconcileReport()
    for bucket, key, etag in loader.deferrals.ready():
        store = _store(services.settings, bucket)
        item = StoredObject(key, etag, None)
        _load_one(store, loader, item, False, report, "deferred")
        if loader.is_loaded(key, etag):
            loader.deferrals.forget(batch_id(key, etag))
    counts = {f"deferred_{name}": value for name, value in report.as_dict().items()}
    return {**counts, **reconcile_recent(services, now=now)}


# The request of the deploy's last step (deploy/functions.py sends it in the event's `detail`).
RECONCILE_DEFERRED = {"reconcile": "deferred"}


def reconcile_requested(event: dict[str, Any], services: Any) -> dict[str, int]:
    """The reconciler function's run: `reconcile_deferred` when the event's detail asks for it
    (the deploy, after migrate), the scheduled walk otherwise."""
    detail = event.get("detail")
    if isinstance(detail, dict) and detail.get("reconcile") == RECONCILE_DEFERRED["reconcile"]:
        return reconcile_deferred(services)
    return reconcile_recent(services)


def reconcile_recent(services: Any, hours: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """The scheduled run: the last `hours` hours of the writes bucket (or LOCAL_DATA_DIR).

    Emits `ReconcilerBacklog` (missing objects this run did not load) and, when the run cannot
    go on (database or bucket unavailable), `ReconcilerFailures` before raising.
    """
    settings = services.settings
    if hours is None:
        hours = settings.reconcile_lookback_hours
    store = _store(settings, settings.writes_bucket or None)
    now = now or datetime.now(UTC)
    try:
        if _schema_behind(services.loader):
            return {"schema_behind": 1}
        report = reconcile(
            store,
            services.loader,
            hour_prefixes("writes/", now - timedelta(hours=hours), now),
            max_objects=settings.reconcile_max_objects,
        )
    except (DatabaseUnavailable, ObjectUnavailable):
        observe.metrics({"Stage": observe.stage()}, {"ReconcilerFailures": (1, "Count")}, type="reconcile")
        raise
    counts = report.as_dict()
    observe.metrics(
        {"Stage": observe.stage()},
        {
            "ReconcilerBacklog": (report.left, "Count"),
            "ReconciledObjects": (report.result.objects, "Count"),
            # every poisoned object, not only this run's window: the alarm holds while any is left
            "PoisonedObjects": (services.loader.poisoned_count(), "Count"),
        },
        type="reconcile",
        **counts,
    )
    return counts
