"""Row 7: reading your own writes (issue 12), inside the Lambda process through `app.app`.

Ours: the app with the Redis cache and the pending writes (PendingWrites over a CachedReader on the
bench pair's replica, keys under a prefix of the run's own), and a Firehose-like batching writer
(bench.batching.BatchingWriter, 60 s interval) with NO loader: nothing a write sends
reaches the database during the row, as in the first minute after a 202 in production.

- 202 -> visible, by id: after each POST's 202, the time until a `GET /todos/{id}` answers that
  todo at that version (it must, the first time). Baseline: the p99 of a warm cached GET of a
  loaded todo, plus 1 ms (the issue's bound), measured in the same rounds.
- 202 -> visible, page: after each POST, the time until `GET /todos?limit=50` shows it. The owner
  has 40 loaded todos and at most 10 pending ones (the pending hash is emptied every 10 writes, as
  the loader and a replica read would), so the new todo is on the first page. Baseline: the p99 of
  the same page read without a cache (the replica), plus 1 ms.
- A page of 50 with 10 pending writes of the caller merged (4 changed rows, 2 deletes and 4 new
  todos inside the page), against the same page without a cache: medians of interleaved rounds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import common
from bench.events import LambdaContext, get_todo_event, list_event, post_event

SECTION = "7. Reading your own writes"
WRITER = "4e3d2c1b-0a9f-4e8d-9c7b-6a5f4e3d2c1b"  # 40 loaded todos, writes in the row
READER = "5f4e3d2c-1b0a-4f9e-8d7c-6b5a4f3e2d1c"  # 300 loaded todos, 10 pending in its first page
ONE_MS_US = 1000.0


def run(pair: common.Pair, quick: bool = False, samples: int | None = None) -> list[common.Row]:
    """Run with Lambda's environment marker set, and put the environment back afterwards."""
    with common.lambda_environment():
        return _run(pair, quick, samples)


def _run(pair: common.Pair, quick: bool, samples: int | None) -> list[common.Row]:
    import app as app_module
    from bench.batching import BatchingWriter
    from bench.inprocess import discard_writer, seed, tear_down
    from chalicelib import bootstrap
    from chalicelib.config import Settings
    from chalicelib.readers.cache import CachedReader
    from chalicelib.readers.pending import PendingWrites, pending_key
    from chalicelib.readers.resp import RespClient

    samples = samples or (40 if quick else 400)
    rounds, calls, warmup = (5, 30, 30) if quick else (15, 200, 300)
    prefix = f"sluice-bench-{uuid.uuid4().hex[:8]}:v1"
    redis = RespClient.from_url(common.REDIS_URL)
    context = LambdaContext()
    with common.fresh_database(pair) as (master_url, replica_url), tempfile.TemporaryDirectory() as local:
        writer_ids = seed(master_url, WRITER, 40)
        reader_ids = seed(master_url, READER, 300)
        common.sync_replica(pair)
        settings = Settings.from_env({"DATABASE_URL": master_url, "REPLICA_URLS": replica_url, "LOCAL_DATA_DIR": local})
        plain = bootstrap.build(settings, writer=discard_writer())
        cached_reader = CachedReader(plain.reader, redis, 300, prefix=prefix)
        batching = BatchingWriter(os.path.join(local, "batched"), None, max_interval=60)  # no loader runs
        ours = bootstrap.build(settings, writer=batching, reader=cached_reader)
        pending = PendingWrites(cached_reader, 900)
        ours.service.pending = pending

        def call(services: Any, event: dict[str, Any]) -> dict[str, Any]:
            bootstrap.use(services)
            return app_module.app(event, context)

        try:
            with common.quiet_stdout():
                by_id, page, cached_p99, page_p99 = visibility(call, ours, plain, writer_ids[0], samples, redis, prefix)
                merged = merged_page(call, ours, plain, pending, reader_ids, rounds, calls, warmup)
        finally:
            batching.close()
            tear_down(plain, redis, prefix)
            redis.execute_command("DEL", pending_key(WRITER, prefix))
    return [
        common.row(
            "202 → visible to the writer, GET /todos/{id} p99",
            by_id,
            cached_p99 + ONE_MS_US,
            "µs",
            "<= 1",
            f"{samples} POSTs, each followed at once by a GET of that id, answered at that version every time; "
            f"baseline = warm cached GET p99 {cached_p99:.0f} µs + 1 ms. No loader ran.",
            SECTION,
        ),
        common.row(
            "202 → visible to the writer, GET /todos p99",
            page,
            page_p99 + ONE_MS_US,
            "µs",
            "<= 1",
            f"{samples} POSTs, each followed at once by a page of 50 that shows it (40 loaded + up to 10 "
            f"pending); baseline = the page without a cache p99 {page_p99:.0f} µs + 1 ms. No loader ran.",
            SECTION,
        ),
        common.row(
            "GET /todos page of 50, 10 pending merged vs no cache",
            merged[0],
            merged[1],
            "µs",
            "<= 1.15",
            "medians of interleaved rounds through app.app; ours: the page query naming the pending ids, then "
            "one HGETALL read while it runs, merged (4 changed, 2 deleted, 4 new in the page); baseline: the "
            "same page, replica only.",
            SECTION,
        ),
    ]


def visibility(
    call: Callable[[Any, dict[str, Any]], dict[str, Any]],
    ours: Any,
    plain: Any,
    loaded_id: str,
    samples: int,
    redis: Any,
    prefix: str,
) -> tuple[float, float, float, float]:
    """(p99 202 -> visible by id, p99 202 -> visible in the page, cached GET p99, page p99) in µs."""
    from chalicelib.readers.pending import pending_key

    clock = time.perf_counter
    post = post_event(WRITER)
    cached_get, page_event = get_todo_event(WRITER, loaded_id), list_event(WRITER, 50)
    for _ in range(50):  # warm: connections, the cache entry of the loaded todo, the scripts
        call(ours, cached_get)
        call(plain, page_event)
    by_id: list[float] = []
    in_page: list[float] = []
    cached: list[float] = []
    page: list[float] = []
    for index in range(samples):
        if index % 5 == 0:  # two writes per sample: at most 10 pending
            redis.execute_command("DEL", pending_key(WRITER, prefix))
        answer = call(ours, post)
        accepted = clock()
        written = json.loads(answer["body"])
        got = call(ours, get_todo_event(WRITER, written["id"]))
        by_id.append(clock() - accepted)
        if got["statusCode"] != 200 or json.loads(got["body"])["version"] != written["version"]:
            raise RuntimeError(f"the writer did not see its write at once: {got}")
        answer = call(ours, post)
        accepted = clock()
        written = json.loads(answer["body"])
        listed = call(ours, page_event)
        in_page.append(clock() - accepted)
        if written["id"] not in {t["id"] for t in json.loads(listed["body"])["todos"]}:
            raise RuntimeError("the writer's page did not show its write at once")
        for fn, out, services in ((cached_get, cached, ours), (page_event, page, plain)):
            start = clock()
            call(services, fn)
            out.append(clock() - start)
    us = 1e6
    return (
        common.percentile(by_id, 99) * us,
        common.percentile(in_page, 99) * us,
        common.percentile(cached, 99) * us,
        common.percentile(page, 99) * us,
    )


def merged_page(
    call: Callable[[Any, dict[str, Any]], dict[str, Any]],
    ours: Any,
    plain: Any,
    pending: Any,
    ids: list[str],
    rounds: int,
    calls: int,
    warmup: int,
) -> tuple[float, float]:
    """Medians (µs) of the reader's first page with 10 of its pending writes merged, and without."""
    from chalicelib.commands import make_command
    from chalicelib.ids import new_op_id
    from chalicelib.models import validate_todo

    data = validate_todo({"title": "Water the plants (pending)", "tags": ["home"]})
    version = ours.service.clock.next
    first = ids[:50]
    commands = [make_command("put", "todos", READER, i, version(), new_op_id(), data) for i in first[1:9:2]]
    commands += [make_command("delete", "todos", READER, i, version(), new_op_id(), None) for i in first[10:12]]
    between = [i[:-1] + ("0" if i[-1] == "f" else "f") for i in first[20:28:2]]  # ids inside the page
    commands += [make_command("put", "todos", READER, i, version(), new_op_id(), data) for i in between]
    if not pending.record(commands):
        raise RuntimeError("could not record the pending writes")
    event = list_event(READER, 50)
    answer = json.loads(call(ours, event)["body"])["todos"]
    shown = {t["id"] for t in answer}
    if len(answer) != 50 or shown & set(first[10:12]) or not set(between) <= shown:
        raise RuntimeError("the merged page is not what the pending writes make it")
    seconds = common.interleaved(
        {"ours": lambda: call(ours, event), "plain": lambda: call(plain, event)}, rounds, calls, warmup
    )
    return seconds["ours"] * 1e6, seconds["plain"] * 1e6
