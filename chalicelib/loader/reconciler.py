"""Load every object under writes/ that the ledger does not hold: by hour, bounded, resumable.

The scheduled reconciler covers S3 events that never arrived or whose retries ran out; `replay`
(CLI) is the same walk over a chosen range. Progress is the ledger itself, so a run cut short by
its bound or a failure simply continues on the next run.

The scheduled run has a time budget (budget.py's `Budget`, from the Lambda context's remaining
time): it starts a load only while enough time is left, and a load still running when only the
margin is left is cut (`LoadWatchdog`: its connection is killed from another one, so the server
rolls it back and frees its locks, and the load fails as for a lost connection, which does not count
toward poisoning). A Lambda timeout would instead freeze the process with its connection open: the
load's transaction and its attempt's lock (liveness.py) would stay held until the server drops the
connection (`wait_timeout`, hours on RDS), and the attempt would then be judged dead while the
server stayed up, which counts.

Every scheduled run reports its backlog (`ReconcilerBacklog`, reconcile_report.py), a database
outage included: what it could not check against the ledger counts as missing (an upper bound: every
object under `writes/` of the lookback it listed but could not check).

Deferred objects (deferral.py: a newer schema version, or a schema `migrate` has not brought up
yet) are left alone while what they wait for is still missing, not tried on every run; and while
the database has no `ingest_deferrals` yet (a release deployed before its `migrate`), the
scheduled run loads nothing. `reconcile_deferred` (the deploy's last step, after `migrate`)
loads every deferred object that can load now, then runs the scheduled walk once, both within
the one invocation's budget. Every run that reaches the database reports the age of the oldest
object still deferred (`OldestDeferredObjectAgeSeconds`, 0 when none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import observe
from chalicelib.config import ConfigError
from chalicelib.db.schema import DEFERRALS_LEVEL
from chalicelib.errors import DatabaseUnavailable, ObjectUnavailable
from chalicelib.loader import BatchLoader
from chalicelib.loader.budget import Budget, LoadWatchdog
from chalicelib.loader.hours import hour_prefixes
from chalicelib.loader.ledger import batch_id
from chalicelib.loader.reconcile_report import ReconcileReport, emit_run
from chalicelib.loader.sources import ObjectMissing, ObjectStore, StoredObject

log = logging.getLogger(__name__)


def reconcile(
    store: ObjectStore,
    loader: BatchLoader,
    prefixes: Iterable[str],
    max_objects: int | None = None,
    force: bool = False,
    source: str | None = "reconcile",
    budget: Budget | None = None,
    report: ReconcileReport | None = None,
    count_on: bool = False,
) -> ReconcileReport:
    """Load every object under `prefixes` missing from the ledger (every object with `force`).

    Oldest hour first, at most `max_objects` loads; the rest is counted in `left` for the next
    run. An object that cannot be read, or fails in a way other than the database being
    unavailable, is counted in `failed` and left for the next run without stopping this one.
    A poisoned object (attempts.py) is left alone and counted in `poisoned`, unless `force`; a
    deferred one whose schema version or migration level is still missing, in `waiting`.
    With a `budget`, loads stop when its time is short (`stopped` = "time"; the rest is `left`,
    or `unchecked` once only its margin is left).
    DatabaseUnavailable stops the loads (every further load would fail the same way); with
    `count_on` the walk goes on listing, counting what it cannot check in `unchecked`, and raises
    the failure at the end (kept in `report.error`: pass in the `report` to read it then).
    Each object loaded writes its log line and loader metrics, marked `source`; None writes none
    (the CLI, whose standard output is its one summary line).
    """
    walk = _Walk(store, loader, force, source, budget, ReconcileReport() if report is None else report, count_on)
    for hour_prefix in prefixes:
        walk.hour(list(store.list(hour_prefix)), max_objects)
    if walk.report.error is not None:
        raise walk.report.error
    return walk.report


@dataclass
class _Walk:
    """One `reconcile` run: what it was asked, and its report so far."""

    store: ObjectStore
    loader: BatchLoader
    force: bool
    source: str | None
    budget: Budget | None
    report: ReconcileReport
    count_on: bool
    watchdog: LoadWatchdog = field(init=False)

    def __post_init__(self) -> None:
        self.watchdog = LoadWatchdog(self.loader.db if self.budget is not None else None)

    def hour(self, objects: list[StoredObject], max_objects: int | None) -> None:
        """The objects listed under one hour's prefix: checked against the ledger, the missing ones
        loaded while the run may go on."""
        report, budget = self.report, self.budget
        if budget is not None and not report.stopped and budget.spent():
            report.stopped = "time"
        if report.stopped == "database" or (report.stopped == "time" and budget is not None and budget.spent()):
            report.unchecked += len(objects)
            return
        try:
            known, poisoned, waiting = self.marks(objects)
        except DatabaseUnavailable as exc:
            _database_down(report, exc, self.count_on)
            report.unchecked += len(objects)
            return
        for item in objects:
            bid = batch_id(item.key, item.etag) if item.etag is not None else None
            if bid in known:
                report.result.skipped += 1
            elif bid in poisoned:
                report.poisoned += 1
            elif bid in waiting:
                report.waiting += 1
            elif self.may_load(max_objects):
                self.load(item)
            else:
                report.left += 1
                report.missing += 1

    def marks(self, objects: list[StoredObject]) -> tuple[set[str], set[str], set[str]]:
        """The batch ids of `objects` the ledger holds, those poisoned, and those deferred and
        still waiting (with `force`: only those waiting)."""
        loader = self.loader
        ids = [batch_id(o.key, o.etag) for o in objects if o.etag is not None]
        known = set() if self.force else loader.loaded_ids(ids)
        poisoned = set() if self.force else loader.poisoned_ids([i for i in ids if i not in known])
        waiting = loader.waiting_ids([i for i in ids if i not in known and i not in poisoned])
        return known, poisoned, waiting

    def may_load(self, max_objects: int | None) -> bool:
        """Whether another load may start: not stopped (the budget's time short, the database
        down) and under `max_objects`."""
        report, budget = self.report, self.budget
        if budget is not None and not report.stopped and not budget.may_start_load():
            report.stopped = "time"
        return not report.stopped and (max_objects is None or report.result.objects < max_objects)

    def load(self, item: StoredObject) -> None:
        """Load one missing object, under the watchdog when the run has a budget."""
        report, budget = self.report, self.budget
        before = budget.remaining() if budget is not None else 0.0
        try:
            with self.watchdog.guard(budget.for_loads() if budget is not None else None):
                _load_one(self.store, self.loader, item, self.force, report, self.source)
        except DatabaseUnavailable as exc:
            report.left += 1
            report.missing += 1
            if self.watchdog.fired:
                report.stopped = "time"  # cut by the watchdog: its attempt was given back
            else:
                _database_down(report, exc, self.count_on)
        if budget is not None:
            budget.loaded(before - budget.remaining())


def _database_down(report: ReconcileReport, exc: DatabaseUnavailable, count_on: bool) -> None:
    if not count_on:
        raise exc
    report.stopped, report.error = "database", exc


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


def reconcile_deferred(services: Any, now: datetime | None = None, context: Any = None) -> dict[str, int]:
    """After `migrate` (the deploy's last step): load every deferred object this release and this
    schema can hold now, then run the scheduled walk once (it finds objects deferred while the
    database could not record them), both within the time the invocation's `context` has left."""
    loader: BatchLoader = services.loader
    budget = Budget.of(context)
    watchdog = LoadWatchdog(loader.db if budget is not None else None)
    report = ReconcileReport()
    for bucket, key, etag in loader.deferrals.ready():
        if budget is not None and not budget.may_start_load():
            report.stopped = "time"  # the rest stays deferred: the next request, or run, takes it
            report.left += 1
            continue
        before = budget.remaining() if budget is not None else 0.0
        store = _store(services.settings, bucket)
        with watchdog.guard(budget.for_loads() if budget is not None else None):
            _load_one(store, loader, StoredObject(key, etag, None), False, report, "deferred")
        if budget is not None:
            budget.loaded(before - budget.remaining())
        if loader.is_loaded(key, etag):
            loader.deferrals.forget(batch_id(key, etag))
    counts = {f"deferred_{name}": value for name, value in report.as_dict().items()}
    return {**counts, **reconcile_recent(services, now=now, budget=budget)}


# The request of the deploy's last step (deploy/functions.py sends it in the event's `detail`).
RECONCILE_DEFERRED = {"reconcile": "deferred"}


def reconcile_requested(event: dict[str, Any], services: Any, context: Any = None) -> dict[str, int]:
    """The reconciler function's run: `reconcile_deferred` when the event's detail asks for it
    (the deploy, after migrate), the scheduled walk otherwise; within the time `context` has left."""
    detail = event.get("detail")
    if isinstance(detail, dict) and detail.get("reconcile") == RECONCILE_DEFERRED["reconcile"]:
        return reconcile_deferred(services, context=context)
    return reconcile_recent(services, context=context)


def reconcile_recent(
    services: Any,
    hours: int | None = None,
    now: datetime | None = None,
    context: Any = None,
    budget: Budget | None = None,
) -> dict[str, int]:
    """The scheduled run: the last `hours` hours of the writes bucket (or LOCAL_DATA_DIR), within
    the time its Lambda `context` has left (`Budget`; no context, no budget), or within `budget`
    (what `reconcile_deferred` left of the same invocation's).

    Emits `ReconcilerBacklog` (objects that may still be missing from the ledger, `backlog`) on
    every run that could list the bucket, a database outage included, with `ReconcilerStopped`
    (1 when loads stopped early, for time or the database); `ReconciledObjects`,
    `PoisonedObjects` and `OldestDeferredObjectAgeSeconds` when the database answered; and
    `ReconcilerFailures` when the run cannot go on (database or bucket unavailable), before raising.
    """
    settings = services.settings
    if hours is None:
        hours = settings.reconcile_lookback_hours
    store = _store(settings, settings.writes_bucket or None)
    now = now or datetime.now(UTC)
    if budget is None:
        budget = Budget.of(context)
    report = ReconcileReport()
    try:
        behind = _schema_behind(services.loader)
    except DatabaseUnavailable:
        behind = False  # the walk below counts what it cannot check, emits the backlog, then raises
    if behind:
        return {"schema_behind": 1}
    try:
        reconcile(
            store,
            services.loader,
            hour_prefixes("writes/", now - timedelta(hours=hours), now),
            max_objects=settings.reconcile_max_objects,
            budget=budget,
            report=report,
            count_on=True,
        )
    except DatabaseUnavailable:
        emit_run(report, budget, {"ReconcilerFailures": (1, "Count")})
        raise
    except ObjectUnavailable:
        observe.metrics({"Stage": observe.stage()}, {"ReconcilerFailures": (1, "Count")}, type="reconcile")
        raise
    return emit_run(
        report,
        budget,
        {
            "ReconciledObjects": (report.result.objects, "Count"),
            # every poisoned object, not only this run's window: the alarm holds while any is left
            "PoisonedObjects": (services.loader.poisoned_count(), "Count"),
            # the oldest object still deferred, wherever it is: its alarm fires after an hour
            "OldestDeferredObjectAgeSeconds": (services.loader.deferrals.oldest_age(now), "Seconds"),
        },
    )
