"""The S3 event handler's body: every record of the event, keys URL-decoded.

Chalice's S3Event shows only the first record; S3 may put several in one event. A record whose
object cannot be loaded because the database (or S3) is unavailable makes the invocation fail
after the other records are done, so Lambda retries the event (records already loaded are then
skipped by the ledger). Bad lines never fail it: they are quarantined.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from chalicelib import observe
from chalicelib.errors import DatabaseUnavailable, ObjectUnavailable
from chalicelib.loader import LoadResult
from chalicelib.loader.sources import ObjectStore

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Raised so that Lambda retries the event: some object could not be loaded now."""


def records(event: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    """(bucket, key, etag, event time) of every S3 record in the event."""
    out = []
    for record in event.get("Records") or []:
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if not bucket or not key:
            continue
        etag = obj.get("eTag") or obj.get("etag")
        out.append((bucket, unquote_plus(key), etag, record.get("eventTime")))
    return out


def _lag_seconds(event_time: str | None) -> float | None:
    if not event_time:
        return None
    try:
        arrived = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (datetime.now(UTC) - arrived).total_seconds())


def handle_s3_event(event: dict[str, Any], services: Any, store_for: Any = None) -> dict[str, int]:
    from chalicelib.loader.sources import S3ObjectStore, s3_client

    store_for = store_for or (lambda bucket: S3ObjectStore(s3_client(), bucket))
    total = LoadResult()
    failures = []
    for bucket, key, etag, event_time in records(event):
        store: ObjectStore = store_for(bucket)
        started = time.perf_counter()
        try:
            if etag and services.loader.is_loaded(key, etag):
                total.skipped += 1
                total.objects += 1
                continue
            body, real_etag = store.get(key)
            result = services.loader.load(bucket, key, real_etag, body)
        except KeyError:
            log.error("object s3://%s/%s named by the event no longer exists", bucket, key)
            continue
        except (DatabaseUnavailable, ObjectUnavailable) as exc:
            log.warning("could not load s3://%s/%s now: %s", bucket, key, exc)
            failures.append(key)
            continue
        total.add(result)
        lag = _lag_seconds(event_time)
        observe.metrics(
            {"Stage": observe.stage()},
            {
                "RecordsApplied": (result.applied, "Count"),
                "RecordsStale": (result.stale, "Count"),
                "RecordsRejected": (result.rejected, "Count"),
                "ObjectLagSeconds": (lag if lag is not None else 0.0, "Seconds"),
            },
            type="load",
            bucket=bucket,
            key=key,
            skipped=result.skipped,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    if failures:
        observe.metrics({"Stage": observe.stage()}, {"LoadFailures": (len(failures), "Count")})
        raise RetryLater(f"{len(failures)} object(s) not loaded; the event will be retried: {failures[:5]}")
    return {
        "applied": total.applied,
        "stale": total.stale,
        "rejected": total.rejected,
        "skipped": total.skipped,
        "objects": total.objects,
    }
