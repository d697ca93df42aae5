"""Row 8: the sustained write rate at which the loader keeps the master and the replica current.
Information only: no target, no baseline.

Objects arrive as Firehose delivers them under load: 5 MiB of command lines each (its default
buffer size, which fills long before its 60 s interval at these rates), GZIP, at a fixed rate of
2,000, 5,000, 10,000 or 20,000 rows/s of mixed commands (bench.events.write_stream: 70 % new
todos, 25 % updates of earlier ones, 5 % deletes, 200 owners). Object k arrives once its last row
has (its rows / the rate after the one before it) and the production loader (bootstrap's, LOAD
DATA fast path) loads it at once, one object at a time: one loader, where production runs up to 5.
Each rate gets a fresh database on the bench's MariaDB pair, a warm-up, then a measured window.

Replica lag comes from a heartbeat row, not Seconds_Behind_Master (whole seconds, and 0 between
events): a thread updates a row on the master every 50 ms with its clock in microseconds
(autocommit), another reads it on the replica every 50 ms; the lag is the reader's clock less the
value it sees (the same machine, the same clock). A reading may be up to one heartbeat (50 ms)
older than the replica's state. The master is current when each object is committed within 1 s of
its arrival (its object lag).

A rate is sustained when, over the whole window, the replica lag stayed under 1 s and the loader
kept the master current: each object found no earlier one still waiting for the loader when it
arrived, and none was left waiting at the end (the replica lag alone would look fine while objects
pile up in front of the loader: the replica only applies what the master has). The row is the
highest sustained rate. Each row's note adds the object lag (arrival to commit: one object's load
time when the loader keeps up). The master, the replica and this process (the loader's two threads, the heartbeat
threads and the arrivals) share the machine's cores; each row's note gives how many cores each
used over the window (CPU seconds / window seconds, from /proc).
"""

from __future__ import annotations

import gzip
import os
import queue
import resource
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Pair,
    Row,
    fresh_database,
    percentile,
    process_cpu_seconds,
    production_loader,
    raw_connection,
    row,
)

SECTION = "8. Sustained write rate"
RATES = (2_000, 5_000, 10_000, 20_000)  # rows/s
WINDOW = 30.0  # seconds measured
WARMUP = 5.0  # seconds before the window: connections warm, the first objects loaded
HEARTBEAT = 0.05  # seconds between heartbeat writes, and between reads
LAG_LIMIT = 1.0  # seconds: the replica and every object within this
OBJECT_BYTES = 5 * 1024 * 1024  # Firehose's default buffer size (before compression)


@dataclass(frozen=True)
class Delivered:
    key: str
    body: bytes  # GZIP, as Firehose writes it
    rows: int


def delivered_objects(rows: int, object_bytes: int = OBJECT_BYTES) -> list[Delivered]:
    """`rows` mixed commands in Firehose-sized GZIP objects (the same objects serve every rate)."""
    from bench.events import write_stream
    from bench.loader import firehose_objects

    return [
        Delivered(key, body, gzip.decompress(body).count(b"\n"))
        for key, body in firehose_objects(write_stream(rows), object_bytes)
    ]


def _warm_commands() -> list[Any]:
    """A few commands on keys of their own, loaded before the clock: imports and the fast path's
    set-up are paid there, as by a Lambda that has loaded before."""
    from bench.events import write_stream

    return write_stream(50, owners=1, seed=99)


class Heartbeat:
    """A row updated on the master every HEARTBEAT seconds, read on the replica as often."""

    def __init__(self, master_url: str, replica_url: str) -> None:
        self.master = raw_connection(master_url)
        self.replica = raw_connection(replica_url)
        self.samples: list[tuple[float, float]] = []  # (perf_counter, lag in seconds)
        self.stopping = threading.Event()
        with self.master.cursor() as cur:
            cur.execute("CREATE TABLE sluice_heartbeat (id INT PRIMARY KEY, ts BIGINT NOT NULL) ENGINE=InnoDB")
            cur.execute("INSERT INTO sluice_heartbeat VALUES (1, %s)", (self._now_us(),))
        self.threads = [
            threading.Thread(target=self._write, name="heartbeat-write", daemon=True),
            threading.Thread(target=self._read, name="heartbeat-read", daemon=True),
        ]

    @staticmethod
    def _now_us() -> int:
        return time.time_ns() // 1000

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _write(self) -> None:
        with self.master.cursor() as cur:
            while not self.stopping.is_set():
                cur.execute("UPDATE sluice_heartbeat SET ts = %s WHERE id = 1", (self._now_us(),))
                self.stopping.wait(HEARTBEAT)

    def _read(self) -> None:
        with self.replica.cursor() as cur:
            while not self.stopping.is_set():
                cur.execute("SELECT ts FROM sluice_heartbeat WHERE id = 1")
                found = cur.fetchone()
                if found is not None:
                    self.samples.append((time.perf_counter(), (self._now_us() - int(found[0])) / 1e6))
                self.stopping.wait(HEARTBEAT)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)
        self.master.close()
        self.replica.close()

    def lags(self, since: float, until: float) -> list[float]:
        return [lag for at, lag in self.samples if since <= at <= until]


@dataclass
class CpuMeter:
    """CPU seconds of the master, the replica and this process between two readings."""

    pair: Pair
    readings: list[tuple[float, float, float]] = field(default_factory=list)

    def read(self) -> None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        self.readings.append(
            (
                process_cpu_seconds(self.pair.master_pid()),
                process_cpu_seconds(replica_pid(self.pair)),
                own.ru_utime + own.ru_stime,
            )
        )

    def cores(self, seconds: float) -> tuple[float, float, float]:
        (m0, r0, p0), (m1, r1, p1) = self.readings[0], self.readings[-1]
        return (m1 - m0) / seconds, (r1 - r0) / seconds, (p1 - p0) / seconds


def replica_pid(pair: Pair) -> int:
    for line in (Path(pair.directory) / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "SLUICE_REPLICA_PID_FILE":
            return int(Path(value.strip().strip("'\"")).read_text().split()[0])
    raise RuntimeError("the pair's env names no replica pid file")


@dataclass
class RateResult:
    rate: int
    replica_lags: list[float]
    object_lags: list[float]
    objects: int
    waiting: int  # the most objects an arriving object found still waiting for the loader
    left: int  # objects that arrived in the window and were still waiting at its end
    cores: tuple[float, float, float]  # master, replica, this process

    @property
    def sustained(self) -> bool:
        return bool(self.replica_lags) and max(self.replica_lags) < LAG_LIMIT and self.waiting == 0 and self.left == 0


def measure(pair: Pair, objects: list[Delivered], rate: int, window: float, warmup: float) -> RateResult:
    """Objects arriving at `rate` rows/s for warmup + window seconds, loaded as they arrive."""
    from chalicelib.loader import local_etag

    with fresh_database(pair) as (master_url, replica_url):
        heartbeat = Heartbeat(master_url, replica_url)
        loader = production_loader(master_url)
        warm = b"".join(c.to_line() for c in _warm_commands())
        loader.load("sluice-bench-writes", "writes/2026/01/01/00/warm", local_etag(warm), warm)  # as a warm Lambda
        arrivals: queue.Queue[tuple[float, Delivered]] = queue.Queue()
        cpu = CpuMeter(pair)
        start = time.perf_counter() + 0.5
        opens, closes = start + warmup, start + warmup + window
        schedule, done = [], 0
        for item in objects:
            done += item.rows
            at = start + done / rate
            if at > closes:
                break
            schedule.append((at, item))
        if done / rate < warmup + window:
            raise RuntimeError(f"{len(objects)} objects are too few for {rate} rows/s over {warmup + window:g} s")

        waiting = [0]

        def deliver() -> None:
            for at, item in schedule:
                time.sleep(max(0.0, at - time.perf_counter()))
                if at >= opens:
                    waiting[0] = max(waiting[0], arrivals.qsize())
                arrivals.put((at, item))

        timers = [threading.Timer(moment - time.perf_counter(), cpu.read) for moment in (opens, closes)]
        feeder = threading.Thread(target=deliver, name="firehose", daemon=True)
        heartbeat.start()
        for thread in (*timers, feeder):
            thread.start()
        lags: list[float] = []
        loaded = 0
        try:
            while (wait := closes - time.perf_counter()) > 0:
                try:
                    at, item = arrivals.get(timeout=wait)
                except queue.Empty:
                    break
                loader.load("sluice-bench-writes", item.key, local_etag(item.body), item.body)
                loaded += 1
                if at >= opens:
                    lags.append(time.perf_counter() - at)
            for thread in (*timers, feeder):
                thread.join(window + warmup + 10)
        finally:
            heartbeat.stop()
            loader.db.discard()
        left = sum(1 for at, _ in list(arrivals.queue) if at >= opens)
        return RateResult(
            rate=rate,
            replica_lags=heartbeat.lags(opens, closes),
            object_lags=lags,
            objects=loaded,
            waiting=waiting[0],
            left=left,
            cores=cpu.cores(window),
        )


def run(
    pair: Pair,
    quick: bool = False,
    rates: tuple[int, ...] | None = None,
    window: float | None = None,
    warmup: float | None = None,
    object_bytes: int = OBJECT_BYTES,
) -> list[Row]:
    """The sustained rate, and one row per rate tried. `object_bytes` smaller than Firehose's
    buffer only for the smoke test (more objects in a short window)."""
    from bench.__main__ import quiesce

    rates = rates or ((2_000, 5_000) if quick else RATES)
    window = window if window is not None else (5.0 if quick else WINDOW)
    warmup = warmup if warmup is not None else (1.0 if quick else WARMUP)
    objects = delivered_objects(int(max(rates) * (window + warmup)) + object_bytes // 300, object_bytes)
    results = []
    for rate in rates:
        quiesce(pair)
        results.append(measure(pair, objects, rate, window, warmup))
    return rows_of(results, window, objects)


def rows_of(results: list[RateResult], window: float, objects: list[Delivered]) -> list[Row]:
    ms = 1000.0
    best = max((r.rate for r in results if r.sustained), default=0)
    per_object = statistics.median(o.rows for o in objects)
    tried = "/".join(f"{r.rate:,}" for r in results)
    out = [
        row(
            f"sustained write rate (replica and objects within {LAG_LIMIT:g} s for {window:g} s)",
            float(best),
            None,
            "rows/s",
            "",
            f"the highest of {tried} rows/s of mixed commands (70 % new todos, 25 % updates, 5 % deletes) whose "
            f"replica lag (heartbeat) stayed under {LAG_LIMIT:g} s while the loader kept up (no object found another "
            f"waiting for it); GZIP objects of about {per_object:,.0f} rows (5 MiB raw), one loader (production "
            f"runs up to 5), master and replica on this machine's {os.cpu_count()} cores with the loader (0 when "
            "none was)",
            SECTION,
        )
    ]
    for r in results:
        master, replica, loader = r.cores
        object_note = (
            f"object lag max {max(r.object_lags) * ms:,.0f} ms, median {statistics.median(r.object_lags) * ms:,.0f} ms"
            if r.object_lags
            else "no object arrived in the window"
        )
        out.append(
            row(
                f"{r.rate:,} rows/s: replica lag, max",
                max(r.replica_lags) * ms if r.replica_lags else None,
                None,
                "ms",
                "",
                f"{'sustained' if r.sustained else 'NOT sustained'}; replica lag p99 "
                f"{percentile(r.replica_lags, 99) * ms if r.replica_lags else float('nan'):,.0f} ms over "
                f"{len(r.replica_lags)} heartbeat reads; {object_note}; {r.objects} objects loaded, at most "
                f"{r.waiting} found waiting by an arrival, {r.left} left waiting at the end; cores used over the "
                f"window: master {master:.2f}, replica {replica:.2f}, "
                f"loader process {loader:.2f} (of {os.cpu_count()})",
                SECTION,
            )
        )
    return out
