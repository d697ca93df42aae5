"""Row 6: end-to-end freshness, from the 202 of a POST to the todo being readable on the replica.

Ours: the write path batched like Firehose (bench.batching.BatchingWriter: each
request's lines appended and fsynced before the 202, one object per buffer interval, loaded by
the real loader into the pair's master, replicated to the replica). The buffer interval is scaled
down from Firehose's 60 s minimum to 1 s so the row runs in seconds; in production add the
difference (the median grows to about half the interval, the p99 to about the whole interval,
plus S3's event delivery and the loader's start).
Baseline: the write-through local transport (LocalWriter: one object per request, loaded before
the 202), i.e. what replication alone costs.

POSTs go through `app.app` at a steady rate; a second thread polls the replica every 2 ms for
the ids still pending, so a write is "readable" when a GET served by the replica would find it.

The buffer interval trade-off (docs/operations.md): the same run at 0, 1 and 5 s, measured (each
object the batching writer seals is one loader run and one master commit), and at 60 s, the data
stack's default, computed: 10,000 / (RATE x 60) commits per 10k writes (one object per interval at
this rate; Firehose's 5 MiB size limit is far away), and a 202 -> replica latency of the buffer's
wait (median interval / 2, p99 0.99 x interval) plus the per-object cost measured at 0 s (seal,
load, commit, replicate, with the queueing that brings).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from typing import Any

from bench.common import (
    Pair,
    Row,
    admin,
    fresh_database,
    lambda_environment,
    median,
    percentile,
    production_loader,
    quiet_stdout,
    row,
)
from bench.events import LambdaContext, post_event

SECTION = "6. End-to-end freshness"
OWNER = "7d3c1e5a-9b2f-4c6d-8e0a-1f2b3c4d5e6f"
INTERVAL = 1.0
RATE = 40  # writes per second
INTERVALS = (0.0, 1.0, 5.0)  # measured
COMPUTED_INTERVAL = 60.0  # the data stack's default, computed from the 0 s run
DIRECT_COMMITS = 10_000  # a write-through path commits every write


class ReplicaWatch(threading.Thread):
    """Polls the replica for pending ids and records, for each, when it first became visible."""

    def __init__(self, pair: Pair, database: str) -> None:
        super().__init__(name="replica-watch", daemon=True)
        self.conn = admin(pair, "replica", database)
        self.pending: dict[str, float] = {}
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.stopping = False

    def expect(self, todo_id: str, accepted_at: float) -> None:
        with self.lock:
            self.pending[todo_id] = accepted_at

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while True:
                with self.lock:
                    ids = list(self.pending)
                if not ids:
                    if self.stopping:
                        return
                    time.sleep(0.002)
                    continue
                marks = ", ".join(["%s"] * len(ids))
                cur.execute(f"SELECT id FROM todos WHERE owner = %s AND id IN ({marks})", [OWNER, *ids])
                now = time.perf_counter()
                with self.lock:
                    for (found,) in cur.fetchall():
                        accepted = self.pending.pop(found, None)
                        if accepted is not None:
                            self.latencies.append(now - accepted)
                time.sleep(0.002)

    def finish(self, timeout: float) -> list[float]:
        self.stopping = True
        self.join(timeout)
        self.conn.close()
        if self.is_alive() or self.pending:
            raise RuntimeError(f"{len(self.pending)} accepted writes never became readable")
        return self.latencies


def drive(pair: Pair, database: str, services: Any, count: int, rate: float, interval: float) -> list[float]:
    import app as app_module
    from chalicelib import bootstrap

    event, context = post_event(OWNER), LambdaContext()
    watch = ReplicaWatch(pair, database)
    watch.start()
    bootstrap.use(services)
    start = time.perf_counter()
    with quiet_stdout():
        for index in range(count):
            answer = app_module.app(event, context)
            accepted_at = time.perf_counter()
            if answer["statusCode"] != 202:
                raise RuntimeError(f"POST answered {answer['statusCode']}: {answer['body']}")
            watch.expect(json.loads(answer["body"])["id"], accepted_at)
            pause = start + (index + 1) / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    return watch.finish(timeout=interval * 3 + 10)


def run(
    pair: Pair,
    quick: bool = False,
    count: int | None = None,
    interval: float = INTERVAL,
    intervals: tuple[float, ...] = INTERVALS,
) -> list[Row]:
    """Run with Lambda's environment marker set, and put the environment back afterwards."""
    with lambda_environment():
        return _run(pair, quick, count, interval, intervals)


def _run(pair: Pair, quick: bool, count: int | None, interval: float, intervals: tuple[float, ...]) -> list[Row]:
    from bench.batching import BatchingWriter
    from chalicelib import bootstrap
    from chalicelib.config import Settings
    from chalicelib.loader import local_etag
    from chalicelib.writers.local import LocalWriter

    count = count or int(RATE * (3 if quick else 10))
    chosen = sorted({*intervals, interval})
    with fresh_database(pair) as (master_url, replica_url), tempfile.TemporaryDirectory() as local:
        database = master_url.rsplit("/", 1)[1]
        loader = production_loader(master_url)

        def load(key: str, body: bytes) -> object:
            return loader.load("local", key, local_etag(body), body)

        settings = Settings.from_env({"DATABASE_URL": master_url, "REPLICA_URLS": replica_url, "LOCAL_DATA_DIR": local})
        measured: dict[float, tuple[list[float], int]] = {}
        for value in chosen:
            batching = BatchingWriter(os.path.join(local, f"batched-{value:g}"), load, max_interval=value)
            try:
                latencies = drive(pair, database, bootstrap.build(settings, writer=batching), count, RATE, value)
            finally:
                batching.close()
            measured[value] = (latencies, len(batching.objects))
        through = LocalWriter(os.path.join(local, "through"), load=load)
        baseline = drive(pair, database, bootstrap.build(settings, writer=through), count, RATE, interval)
        bootstrap.reset()
    ours, objects = measured[interval]
    note = (
        f"{count} POSTs at {RATE}/s; ours made {objects} objects (buffer interval {interval:g} s, "
        "scaled down from Firehose's 60 s minimum: in production add the difference)"
    )
    ms = 1000.0
    rows = [
        row("202 → readable on the replica, median", median(ours) * ms, median(baseline) * ms, "ms", "", note, SECTION),
        row(
            "202 → readable on the replica, p99",
            percentile(ours, 99) * ms,
            percentile(baseline, 99) * ms,
            "ms",
            "",
            "baseline: write-through local transport (an object per request, loaded before the 202)",
            SECTION,
        ),
    ]
    return rows + tradeoff_rows(measured, count, baseline, [v for v in chosen if v in intervals])


def tradeoff_rows(
    measured: dict[float, tuple[list[float], int]], count: int, baseline: list[float], intervals: list[float]
) -> list[Row]:
    """Per buffer interval: master commits per 10k writes (against committing every write) and the
    202 -> replica p99 (against the write-through transport); 60 s computed from the 0 s run."""
    ms = 1000.0
    through = percentile(baseline, 99) * ms
    out: list[Row] = []
    for value in intervals:
        latencies, objects = measured[value]
        commits = objects * 10_000 / count
        out += [
            row(
                f"buffer interval {value:g} s: master commits per 10k writes",
                float(commits),
                float(DIRECT_COMMITS),
                "commits",
                "",
                f"measured: {objects} objects for {count} writes at {RATE}/s; baseline: one commit per write",
                SECTION,
            ),
            row(
                f"buffer interval {value:g} s: 202 → replica p99",
                percentile(latencies, 99) * ms,
                through,
                "ms",
                "",
                f"measured; median {median(latencies) * ms:.0f} ms. Baseline: write-through transport's p99",
                SECTION,
            ),
        ]
    if 0.0 in measured:
        zero = measured[0.0][0]
        cost50, cost99 = median(zero), percentile(zero, 99)
        wait = COMPUTED_INTERVAL
        out += [
            row(
                f"buffer interval {wait:g} s: master commits per 10k writes",
                10_000 / (RATE * wait),
                float(DIRECT_COMMITS),
                "commits",
                "<= 0.002",
                f"COMPUTED, not measured: one object per {wait:g} s at {RATE} writes/s (fewer at higher "
                "rates, until the 5 MiB buffer fills first); target: at least 500x fewer than direct writes",
                SECTION,
            ),
            row(
                f"buffer interval {wait:g} s: 202 → replica p99",
                (0.99 * wait + cost99) * ms,
                through,
                "ms",
                "",
                f"COMPUTED, not measured: 0.99 x {wait:g} s of buffering plus the per-object cost measured "
                f"at 0 s (p99 {cost99 * ms:.0f} ms); median {(wait / 2 + cost50) * ms:.0f} ms",
                SECTION,
            ),
        ]
    return out
