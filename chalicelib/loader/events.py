"""The S3 event handler's body: every record of the event, keys URL-decoded.

Chalice's S3Event shows only the first record; S3 may put several in one event. Each record is
loaded on its own. A record whose object cannot be loaded now, because the database or S3 is
unavailable (or anything unforeseen went wrong), makes the invocation fail once the other records
are done, so Lambda retries the event; records already loaded are then skipped by the ledger.
Once the database is found unavailable, the records after it are not tried (each would wait for it
in turn): the invocation gives up as soon as one load has.
Bad lines never fail it (the loader quarantines them), and neither does an object that is gone:
retrying cannot bring it back, so it is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from chalicelib import observe
from chalicelib.errors import DatabaseUnavailable, ObjectUnavailable, SluiceError
from chalicelib.loader import LoadResult
from chalicelib.loader.sources import ObjectMissing, ObjectStore

log = logging.getLogger(__name__)


class RetryLater(SluiceError):
    """Raised so that Lambda retries the event: some object could not be loaded now."""


@dataclass(frozen=True)
class S3Record:
    bucket: str
    key: str  # URL-decoded
    etag: str | None  # as the event gives it (may be absent in hand-made events)
    event_time: str | None


def records(event: dict[str, Any]) -> list[S3Record]:
    """Every object-created record of the event, keys URL-decoded (S3 encodes them as a form)."""
    out = []
    for record in event.get("Records") or []:
        name = str(record.get("eventName") or "ObjectCreated")
        if not name.removeprefix("s3:").startswith("ObjectCreated"):
            log.info("ignoring S3 event record %s", name)
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if not bucket or not key:
            log.warning("ignoring an S3 event record with no bucket or key")
            continue
        etag = obj.get("eTag") or obj.get("etag")
        out.append(S3Record(bucket, unquote_plus(key), etag or None, record.get("eventTime")))
    return out


def _lag_seconds(event_time: str | None) -> float | None:
    if not event_time:
        return None
    try:
        arrived = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if arrived.tzinfo is None:
        arrived = arrived.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - arrived).total_seconds())


def load_record(record: S3Record, store: ObjectStore, loader: Any) -> LoadResult | None:
    """Load one record's object; None when the object is gone. Raises when it cannot be loaded now."""
    if record.etag and loader.is_loaded(record.key, record.etag):
        return LoadResult(skipped=1, objects=1)  # a repeated event: not even read from S3
    try:
        body, etag = store.open(record.key)  # read as a stream while it loads
    except ObjectMissing:
        log.error("object s3://%s/%s named by the event does not exist; nothing to load", record.bucket, record.key)
        return None
    result: LoadResult = loader.load(record.bucket, record.key, etag, body)
    return result


def _default_store(bucket: str) -> ObjectStore:
    from chalicelib.loader.sources import S3ObjectStore, s3_client

    return S3ObjectStore(s3_client(), bucket)


def handle_s3_event(
    event: dict[str, Any], services: Any, store_for: Callable[[str], ObjectStore] | None = None
) -> dict[str, int]:
    make_store = store_for or _default_store
    total = LoadResult()
    failures: list[str] = []
    unreachable: DatabaseUnavailable | None = None
    for record in records(event):
        if unreachable is not None:  # each would wait for the database in turn: given up at once
            failures.append(record.key)
            continue
        started = time.perf_counter()
        try:
            result = load_record(record, make_store(record.bucket), services.loader)
        except (DatabaseUnavailable, ObjectUnavailable) as exc:
            log.warning("could not load s3://%s/%s now: %s", record.bucket, record.key, exc)
            failures.append(record.key)
            if isinstance(exc, DatabaseUnavailable):
                unreachable = exc
            continue
        except Exception:
            # Unforeseen: keep the other records going, then fail so the event is retried and the
            # failure shows (the reconciler tries the object again as well).
            log.exception("loading s3://%s/%s failed", record.bucket, record.key)
            failures.append(record.key)
            continue
        if result is None:
            continue
        total.add(result)
        _emit(record, result, started)
    if failures:
        observe.metrics({"Stage": observe.stage()}, {"LoadFailures": (len(failures), "Count")})
        raise RetryLater(f"{len(failures)} object(s) not loaded; the event will be retried: {failures[:5]}")
    return {
        "applied": total.applied,
        "stale": total.stale,
        "rejected": total.rejected,
        "skipped": total.skipped,
        "deferred": total.deferred,
        "objects": total.objects,
    }


def _emit(record: S3Record, result: LoadResult, started: float) -> None:
    observe.loaded_object(
        record.bucket,
        record.key,
        result.applied,
        result.stale,
        result.rejected,
        result.skipped,
        (time.perf_counter() - started) * 1000,
        _lag_seconds(record.event_time),
        source="event",
        too_large=result.too_large,
        deferred=result.deferred,
    )
