"""The stage's capacity, as literals in one place, and the sizing rules they must keep.

`.chalice/templates/stage-<stage>.json` holds them all:
- under `capacity` (read by the deploy step only; `chalice deploy` never sees it): the API's
  throttles per method, reads and writes apart and a route's own (steady rate per second and
  burst), and the write requests one caller may send per minute (the edge web ACL's per-caller
  rule, keyed on the caller's `Authorization` header);
- under `stages.<stage>.lambda_functions` (read by Chalice): each function's reserved
  concurrency, memory and timeout.

`problems()` holds them to the sizing rules of docs/deploy.md (*Sizing*); the deploy step stops
before any AWS call when one is broken. The rules' own constants are named here, with where each
comes from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.apigateway import StageSettings, Throttle
from deploy.render import load_json, stage_template_path
from deploy.routes import Route

# The API handler's p99 duration the throttles are sized for: the bench measures the app's own
# work in process at well under a millisecond (BENCHMARKS.md rows 3 and 5); in Lambda a write adds
# Firehose's PutRecordBatch and a read the replica or Redis round trip. Compare with the
# function's `Duration` p99 in CloudWatch, and size again if it is above.
API_P99_SECONDS = 0.15
# Firehose Direct PUT, per stream, unless raised (Firehose Developer Guide, "Amazon Data Firehose
# Quota"): 2,000 requests/s and 5 MiB/s in us-east-1, us-west-2 and eu-west-1, 1,000 requests/s
# and 1 MiB/s elsewhere. The rules use the smaller: a stage deploys to any region.
FIREHOSE_REQUESTS_PER_SECOND = 1_000
FIREHOSE_BYTES_PER_SECOND = 1024 * 1024
# A write's record: one command line, about 400 bytes for the bench's todos (bench/loader.py) and
# up to MAX_BODY_BYTES (64 KiB) for the largest body; the rule takes 1 KiB as the usual size.
USUAL_RECORD_BYTES = 1024
# A WAF rate-based rule counts at least 10 requests per window (AWS WAF Developer Guide,
# "Rate-based rule statement"); one caller may take at most this share of a write route's rate.
WAF_MIN_LIMIT = 10
CALLER_SHARE = 0.1
# Lambda gives a function one full vCPU at 1,769 MB (Lambda Developer Guide, "Configure Lambda
# function memory"); the loader parses on one thread while the master runs LOAD DATA.
ONE_VCPU_MB = 1769
# The largest Firehose object (128 MiB buffered) needs about 750 MB in the loader
# (docs/operations.md, Scaling: measured with tracemalloc).
LOADER_PEAK_MB = 750
# Lambda keeps 100 of the account's concurrency unreserved; established accounts have 1,000.
UNRESERVED = 100
ACCOUNT_CONCURRENCY = 1_000
RECONCILE_EVERY_SECONDS = 15 * 60  # app.py: @app.schedule(Rate(15, unit=Rate.MINUTES))
LOADERS = ("load_writes", "reconcile_writes")  # the functions that run the loader


class CapacityError(ValueError):
    """The stage's capacity literals are missing, malformed, or break a sizing rule."""


@dataclass(frozen=True)
class FunctionSize:
    reserved_concurrency: int
    memory_mb: int
    timeout_seconds: int


@dataclass(frozen=True)
class Capacity:
    reads: Throttle
    writes: Throttle
    overrides: Mapping[tuple[str, str], Throttle]  # (METHOD, path) -> the route's own throttle
    writes_per_caller_per_minute: int
    functions: Mapping[str, FunctionSize]  # Chalice function name -> its size

    def stage_settings(self, **extra: Any) -> StageSettings:
        """The API Gateway stage settings these throttles make (`extra`: the stage cache)."""
        return StageSettings(reads=self.reads, writes=self.writes, overrides=dict(self.overrides), **extra)

    def edge_parameters(self) -> dict[str, str]:
        """The edge stack's parameters these literals set."""
        return {"WriteRequestsPerCallerPerMinute": str(self.writes_per_caller_per_minute)}


def load(project_dir: Path, stage: str) -> Capacity:
    """The capacity literals of the stage's template."""
    path = stage_template_path(project_dir, stage)
    document = load_json(path)
    try:
        section = document["capacity"]
        throttling = section["throttling"]
        functions = document["stages"][stage]["lambda_functions"]
        return Capacity(
            reads=_throttle(throttling["reads"]),
            writes=_throttle(throttling["writes"]),
            overrides={
                _route(key): _throttle(value)
                for key, value in throttling.items()
                if key not in ("reads", "writes") and not key.startswith("//")
            },
            writes_per_caller_per_minute=int(section["write_requests_per_caller_per_minute"]),
            functions={
                name: FunctionSize(
                    int(entry["reserved_concurrency"]), int(entry["lambda_memory_size"]), int(entry["lambda_timeout"])
                )
                for name, entry in functions.items()
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CapacityError(f"{path.name}: the capacity literals are incomplete or malformed ({exc!r})") from exc


def _throttle(value: Mapping[str, Any]) -> Throttle:
    return Throttle(rate=float(value["rate"]), burst=int(value["burst"]))


def _route(key: str) -> tuple[str, str]:
    method, _, path = key.partition(" ")
    if not method.isupper() or not path.startswith("/"):
        raise ValueError(f"a route's throttle is keyed 'METHOD /path', not {key!r}")
    return method, path


def problems(capacity: Capacity, routes: Sequence[Route]) -> list[str]:
    """The sizing rules the literals break (docs/deploy.md, *Sizing*); [] when none."""
    found: list[str] = []
    settings = capacity.stage_settings()
    functions = capacity.functions
    missing = {"api_handler", *LOADERS} - set(functions)
    if missing:
        return [f"no size for {', '.join(sorted(missing))}"]
    for key in capacity.overrides:
        if key not in {(r.method, r.path) for r in routes}:
            found.append(f"a throttle for {' '.join(key)}, which the app does not have")
    # 1. One read route, one write route and every route of its own at their limits at once fit in
    #    the API handler's reserved concurrency: an overload is a 429 at the gateway, not a
    #    throttled Lambda (a 5XX).
    busiest = capacity.reads.rate + capacity.writes.rate + sum(t.rate for t in capacity.overrides.values())
    needed = busiest * API_P99_SECONDS
    if needed > functions["api_handler"].reserved_concurrency:
        found.append(
            f"API: {busiest:g} requests/s x {API_P99_SECONDS} s needs {needed:g} concurrent handlers, over "
            f"api_handler's reserved concurrency {functions['api_handler'].reserved_concurrency}"
        )
    # 2. Every write route at its rate, one PutRecordBatch each, within one stream's request and
    #    byte quotas (bursts above them are answered 503 with Retry-After).
    writes = sum(settings.throttle_for(r).rate for r in routes if not r.is_read)
    if writes > FIREHOSE_REQUESTS_PER_SECOND:
        found.append(f"Firehose: the write routes add up to {writes:g} requests/s, over {FIREHOSE_REQUESTS_PER_SECOND}")
    if writes * USUAL_RECORD_BYTES > FIREHOSE_BYTES_PER_SECOND:
        found.append(f"Firehose: {writes:g} records/s of {USUAL_RECORD_BYTES} bytes is over 1 MiB/s")
    # 3. One caller's writes: at least WAF's minimum, at most a tenth of one write route's rate.
    per_caller = capacity.writes_per_caller_per_minute
    most = math.floor(capacity.writes.rate * 60 * CALLER_SHARE)
    if not WAF_MIN_LIMIT <= per_caller <= most:
        found.append(f"per caller: {per_caller} writes a minute, not within {WAF_MIN_LIMIT} to {most}")
    # 4. The loaders: a full vCPU, and room for the largest object.
    for name in LOADERS:
        memory = functions[name].memory_mb
        if memory < max(ONE_VCPU_MB, LOADER_PEAK_MB):
            found.append(f"{name}: {memory} MB, under {ONE_VCPU_MB} MB (one vCPU)")
    # 5. The reconciler ends before its next run starts.
    if functions["reconcile_writes"].timeout_seconds >= RECONCILE_EVERY_SECONDS:
        found.append(f"reconcile_writes: a timeout at or over its {RECONCILE_EVERY_SECONDS} s schedule")
    # 6. Every reservation, and Lambda's unreserved 100, fit in an established account's quota.
    reserved = sum(f.reserved_concurrency for f in functions.values())
    if reserved + UNRESERVED > ACCOUNT_CONCURRENCY:
        found.append(f"Lambda: {reserved} reserved + {UNRESERVED} unreserved is over {ACCOUNT_CONCURRENCY}")
    return found
