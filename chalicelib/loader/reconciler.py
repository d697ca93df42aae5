"""Load every object under writes/ that the ledger does not hold: by hour, bounded, resumable.

The scheduled reconciler covers S3 events that never arrived or whose retries ran out; `replay`
(CLI) is the same walk over a chosen range. Progress is the ledger itself, so a run cut short by
its bound or a failure simply continues on the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import observe
from chalicelib.errors import DatabaseUnavailable, ObjectUnavailable
from chalicelib.loader import BatchLoader, LoadResult, batch_id
from chalicelib.loader.sources import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    result: LoadResult = field(default_factory=LoadResult)
    missing: int = 0  # objects found missing from the ledger (loaded now or left for later)
    left: int = 0  # missing objects not loaded in this run (bound reached or a read failed)
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        r = self.result
        return {
            "applied": r.applied,
            "stale": r.stale,
            "rejected": r.rejected,
            "skipped": r.skipped,
            "objects": r.objects,
            "missing": self.missing,
            "left": self.left,
            "failed": self.failed,
        }


def parse_hour(text: str) -> datetime:
    """YYYY-MM-DDTHH (UTC). ValueError if not."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an hour in the form YYYY-MM-DDTHH") from exc


def hour_prefixes(prefix: str, since: datetime, until: datetime) -> Iterator[str]:
    hour = since.replace(minute=0, second=0, microsecond=0)
    while hour <= until:
        yield f"{prefix}{hour:%Y/%m/%d/%H}/"
        hour += timedelta(hours=1)


def reconcile(
    store: ObjectStore,
    loader: BatchLoader,
    prefixes: Iterator[str] | list[str],
    max_objects: int | None = None,
    force: bool = False,
) -> ReconcileReport:
    report = ReconcileReport()
    for hour_prefix in prefixes:
        objects = list(store.list(hour_prefix))
        known = set() if force else loader.loaded_ids([batch_id(o.key, o.etag) for o in objects if o.etag is not None])
        for item in objects:
            if item.etag is not None and batch_id(item.key, item.etag) in known:
                report.result.skipped += 1
                continue
            if max_objects is not None and report.result.objects >= max_objects:
                report.left += 1
                report.missing += 1
                continue
            try:
                body, etag = store.get(item.key)
            except KeyError:
                continue
            except ObjectUnavailable as exc:
                log.warning("reconciler could not read %s: %s", item.key, exc)
                report.failed += 1
                report.left += 1
                report.missing += 1
                continue
            if not force and item.etag is None and loader.is_loaded(item.key, etag):
                report.result.skipped += 1
                continue
            report.missing += 1
            report.result.add(loader.load(store.bucket, item.key, etag, body, force=force))
    return report


def reconcile_recent(services: Any, hours: int = 24, now: datetime | None = None) -> dict[str, int]:
    """The scheduled run: the last `hours` hours of the writes bucket (or LOCAL_DATA_DIR)."""
    from chalicelib.loader.sources import LocalObjectStore, S3ObjectStore, s3_client

    settings = services.settings
    if settings.write_transport == "firehose" or settings.writes_bucket:
        store: ObjectStore = S3ObjectStore(s3_client(), settings.writes_bucket)
    else:
        store = LocalObjectStore(settings.local_data_dir)
    now = now or datetime.now(UTC)
    try:
        report = reconcile(
            store,
            services.loader,
            hour_prefixes("writes/", now - timedelta(hours=hours), now),
            max_objects=settings.reconcile_max_objects,
        )
    except DatabaseUnavailable:
        observe.metrics({"Stage": observe.stage()}, {"ReconcilerFailures": (1, "Count")})
        raise
    counts = report.as_dict()
    observe.metrics(
        {"Stage": observe.stage()},
        {
            "ReconcilerBacklog": (report.left, "Count"),
            "ReconciledObjects": (report.result.objects, "Count"),
        },
        type="reconcile",
        **counts,
    )
    return counts
