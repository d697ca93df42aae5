"""Load every object under writes/ that the ledger does not hold: by hour, bounded, resumable.

The scheduled reconciler covers S3 events that never arrived or whose retries ran out; `replay`
(CLI) is the same walk over a chosen range. Progress is the ledger itself, so a run cut short by
its bound or a failure simply continues on the next run.

The scheduled run has a time budget (`Budget`, from the Lambda context's remaining time): it
starts a load only while enough time is left, and a load still running when only the margin is
left is cut (`LoadWatchdog`: its connection is killed from another one, so the server rolls it
back and frees its locks, and the load fails as for a lost connection, which does not count
toward poisoning). A Lambda timeout would instead freeze the process with its connection open:
the load's transaction and its attempt's lock (liveness.py) would stay held until the server
drops the connection (`wait_timeout`, hours on RDS), and the attempt would then be judged dead
while the server stayed up, which counts.

Every scheduled run reports its backlog (`ReconcilerBacklog`), a database outage included: what
it could not check against the ledger counts as missing (an upper bound: every object under
`writes/` of the lookback it listed but could not check).

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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
    unchecked: int = 0  # objects listed but not checked against the ledger (it could not be read, or no time)
    stopped: str = ""  # why loading stopped early: "time" (the budget) or "database" (it stopped answering)
    error: DatabaseUnavailable | None = None  # the database's failure, raised once the rest is counted
    waiting: int = 0  # deferred objects left alone: what they wait for is still missing

    @property
    def backlog(self) -> int:
        """Objects that may still be missing from the ledger: those found missing and not loaded,
        and those the run could not check (an upper bound when the ledger could not be read)."""
        return self.left + self.unchecked

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


class Budget:
    """The time a scheduled run may spend loading, from its Lambda context's remaining time.

    MARGIN_SECONDS stay free before the function's timeout: a load still running when only they
    are left is cut (`LoadWatchdog`); what follows the cut fits in them (the load gives its
    attempt back, at most 5 s; the rest of the walk lists S3 only; the metrics line, with one
    count of poisoned objects, at most the loader's 40 s read timeout). A load is started only
    with at least LOAD_SECONDS, or twice the longest load of this run, left before the margin."""

    MARGIN_SECONDS = 60.0
    LOAD_SECONDS = 60.0

    def __init__(self, remaining_ms: Callable[[], int]) -> None:
        self._remaining_ms = remaining_ms
        self.longest = 0.0  # the longest load so far, in seconds

    @classmethod
    def of(cls, context: Any) -> Budget | None:
        """The budget of a Lambda invocation; None without a context (the CLI, tests, local)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return cls(remaining) if callable(remaining) else None

    def remaining(self) -> float:
        """Seconds left before the function's timeout."""
        return self._remaining_ms() / 1000

    def for_loads(self) -> float:
        """Seconds left before the margin."""
        return self.remaining() - self.MARGIN_SECONDS

    def may_start_load(self) -> bool:
        return self.for_loads() >= max(self.LOAD_SECONDS, 2 * self.longest)

    def spent(self) -> bool:
        """Only the margin is left: no more loads and no more ledger reads."""
        return self.for_loads() <= 0

    def loaded(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)


class LoadWatchdog:
    """Cuts a load still running at the budget's margin, before the Lambda timeout freezes it.

    MySQL/MariaDB: the load's connection is killed from a connection of the watchdog's own
    (`KILL CONNECTION`, allowed on a connection of the same user): the server rolls the load's
    transaction back and frees its locks, the attempt's lock among them, and the load fails with a
    lost connection, which gives its attempt back without counting (attempts.py). SQLite has no
    server to ask and is never run with a deadline (a Lambda stage uses MySQL): no watchdog."""

    def __init__(self, db: Any) -> None:
        self.db = db  # None: no watchdog (a run without a budget)
        self.fired = False

    @contextmanager
    def guard(self, seconds: float | None) -> Iterator[None]:
        """Around one load: cut it if it still runs after `seconds` (None: never)."""
        self.fired = False
        if seconds is None or self.db is None or self.db.dialect == "sqlite":
            yield
            return
        thread_id = self.db.connection().thread_id()  # the connection this thread's load uses
        timer = threading.Timer(max(0.0, seconds), self._cut, (thread_id,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()
            if self.fired:
                self.db.discard()  # killed (or about to be): this thread connects afresh

    def _cut(self, thread_id: int) -> None:
        self.fired = True
        log.warning("the reconciler's time is nearly up: cutting the load still running (connection %s)", thread_id)
        try:
            with self.db.transaction() as cur:  # this timer thread's own connection
                cur.execute("KILL CONNECTION %s", (thread_id,))
        except Exception:  # gone already, or the server does not answer: the load's own timeouts end it
            log.warning("could not cut the load's connection %s", thread_id, exc_info=True)
        finally:
            self.db.discard()


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
    report = ReconcileReport() if report is None else report
    watchdog = LoadWatchdog(loader.db if budget is not None else None)
    for hour_prefix in prefixes:
        objects = list(store.list(hour_prefix))
        if budget is not None and not report.stopped and budget.spent():
            report.stopped = "time"
        if report.stopped == "database" or (report.stopped == "time" and budget is not None and budget.spent()):
            report.unchecked += len(objects)
            continue
        ids = [batch_id(o.key, o.etag) for o in objects if o.etag is not None]
        try:
            known = set() if force else loader.loaded_ids(ids)
            poisoned = set() if force else loader.poisoned_ids([i for i in ids if i not in known])
            waiting = loader.waiting_ids([i for i in ids if i not in known and i not in poisoned])
        except DatabaseUnavailable as exc:
            _database_down(report, exc, count_on)
            report.unchecked += len(objects)
            continue
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
            if budget is not None and not report.stopped and not budget.may_start_load():
                report.stopped = "time"
            if report.stopped or (max_objects is not None and report.result.objects >= max_objects):
                report.left += 1
                report.missing += 1
                continue
            before = budget.remaining() if budget is not None else 0.0
            try:
                with watchdog.guard(budget.for_loads() if budget is not None else None):
                    _load_one(store, loader, item, force, report, source)
            except DatabaseUnavailable as exc:
                report.left += 1
                report.missing += 1
                if watchdog.fired:
                    report.stopped = "time"  # cut by the watchdog: its attempt was given back
                else:
                    _database_down(report, exc, count_on)
            if budget is not None:
                budget.loaded(before - budget.remaining())
    if report.error is not None:
        raise report.error
    return report


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
        _emit(report, budget, {"ReconcilerFailures": (1, "Count")})
        raise
    except ObjectUnavailable:
        observe.metrics({"Stage": observe.stage()}, {"ReconcilerFailures": (1, "Count")}, type="reconcile")
        raise
    return _emit(
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


def _emit(report: ReconcileReport, budget: Budget | None, values: dict[str, tuple[float, str]]) -> dict[str, int]:
    """The run's line and metrics: the backlog, whether loads stopped early, and `values`."""
    counts = {**report.as_dict(), "unchecked": report.unchecked}
    remaining = round(budget.remaining(), 1) if budget is not None else None
    if report.stopped:
        log.warning(
            "reconciler stopped loading (%s): %d object(s) left for the next run, %s s of its time left",
            report.stopped,
            report.backlog,
            remaining,
        )
    observe.metrics(
        {"Stage": observe.stage()},
        {
            "ReconcilerBacklog": (report.backlog, "Count"),
            "ReconcilerStopped": (1 if report.stopped else 0, "Count"),
            **values,
        },
        type="reconcile",
        stopped=report.stopped or None,
        remaining_seconds=remaining,
        **counts,
    )
    return counts
