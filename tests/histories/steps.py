"""Histories: a seed's list of steps, drawn before anything runs.

A step names what to do with numbers, not with ids or objects (`key=0.42` is "the todo at 42 % of
the caller's known ids", `obj=0.7` "the object at 70 % of those not loaded yet"), resolved when it
runs. So any sublist of a history is still a history: the soak tier shrinks a failing one by
dropping steps (`shrink`), and the failure still names each remaining step.

Kinds (each with `dt`, the history's time that passes before it, in microseconds):
- writes: `put`, `delete`, `post` (with or without Idempotency-Key), `batch` (1 to 8 todos, or 65 to
  100: more pending writes than a page names), `put_me`, `tie` (two writes of one todo through both
  instances with one `min_version` ahead of both clocks: equal versions, op_id decides); each with a
  `mv` mode: none, `last` (the caller's last version: a client ordering its writes), `ahead`;
- reads: `get`, `get_me` (with `mv`: none, `last`, `old`, `ahead`), `walk` (a page walk begins:
  limit 1 to 100, maybe a `state` filter) and `page` (the next page of an open walk, so other steps
  run between a walk's pages);
- delivery: `cut` (the stream delivers its oldest records as an object: GZIP or not, a foreign line,
  bytes after the GZIP member, delivered twice), `load` (an object loaded: one not loaded yet, or
  again), `concurrent` (2 to 5 loads at once on threads: of one object, or of several), `kill` (a
  load that dies: fewer than 3 per object), `outage` (a load during which the database goes away);
- faults: `flush` (Redis loses every key of the history's owners), `redis_down` / `redis_up`,
  `advance` (seconds pass), `expire_cache` (past CACHE_TTL: cache entries gone), `expire_pending`
  (past PENDING_TTL), `corrupt` (a bad entry written into a caller's pending hash), and on MariaDB
  `lag_start` / `lag_end` (replication stopped on the replica) and `replica_down` / `replica_up`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, TypeVar

CALLERS = 3
CORRUPTIONS = ("not_json", "json_list", "not_utf8", "missing_fields", "bad_header", "not_uuid_id", "non_ascii_id")


@dataclass(frozen=True)
class Step:
    kind: str
    dt: int = 0
    args: tuple[tuple[str, Any], ...] = field(default=())

    def __getitem__(self, name: str) -> Any:
        return dict(self.args)[name]

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.args).get(name, default)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in self.args)
        return f"{self.kind}({inner})"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# Relative weights of the step kinds: tuned so that the rare interleavings the contract must
# survive (ties loaded loser first, edits after the TTLs, bad pending entries among many, loads
# killed or cut off, concurrent deliveries) come up in a few hundred steps.
WEIGHTS: dict[str, float] = {
    "put": 12,
    "delete": 4,
    "post": 4,
    "batch": 3,
    "big_batch": 0.4,
    "put_me": 4,
    "tie": 2.5,
    "get": 14,
    "get_me": 5,
    "walk": 3,
    "page": 9,
    "cut": 7,
    "load": 7,
    "concurrent": 1.2,
    "kill": 1.0,
    "outage": 1.0,
    "flush": 0.6,
    "redis_down": 0.4,
    "advance": 2,
    "expire_cache": 0.6,
    "expire_pending": 0.3,
    "corrupt": 0.7,
}
PAIR_WEIGHTS: dict[str, float] = {"lag_start": 0.5, "replica_down": 0.4}


def generate(seed: int, count: int, replica_faults: bool = False) -> list[Step]:
    """The history of `seed`: `count` steps (plus the ends of the fault windows it opens)."""
    rng = Random(seed)
    weights = dict(WEIGHTS)
    if replica_faults:
        weights.update(PAIR_WEIGHTS)
    kinds, cumulative = list(weights), []
    total = 0.0
    for kind in kinds:
        total += weights[kind]
        cumulative.append(total)
    steps: list[Step] = []
    ends: list[tuple[int, Step]] = []  # (position, step) closing a window
    for _ in range(count):
        kind = rng.choices(kinds, cum_weights=cumulative)[0]
        steps.append(_draw(rng, kind))
        if kind in ("redis_down", "lag_start", "replica_down"):
            closing = {"redis_down": "redis_up", "lag_start": "lag_end", "replica_down": "replica_up"}[kind]
            ends.append((len(steps) + rng.randint(1, 12), Step(closing, 0)))
        for position, end in [e for e in ends if e[0] <= len(steps)]:
            steps.append(end)
            ends.remove((position, end))
    steps += [end for _, end in ends]
    return steps


def _mv(rng: Random, read: bool) -> str:
    roll = rng.random()
    if read:
        return "none" if roll < 0.55 else "last" if roll < 0.85 else "old" if roll < 0.92 else "ahead"
    return "none" if roll < 0.72 else "last" if roll < 0.9 else "ahead"


def _key(rng: Random) -> tuple[tuple[str, Any], ...]:
    return (("key", "recent" if rng.random() < 0.45 else "any"), ("pick", rng.random()))


def _draw(rng: Random, kind: str) -> Step:
    dt = rng.randint(1, 40_000) if rng.random() < 0.9 else rng.randint(40_000, 1_500_000)
    caller = ("caller", rng.randrange(CALLERS))
    instance = ("instance", rng.randrange(2))
    args: tuple[tuple[str, Any], ...]
    if kind in ("put", "delete"):
        args = (caller, *_key(rng), instance, ("mv", _mv(rng, False)))
    elif kind == "post":
        args = (caller, ("idem", rng.randrange(5) if rng.random() < 0.5 else None), instance, ("mv", _mv(rng, False)))
    elif kind in ("batch", "big_batch"):
        size = rng.randint(1, 8) if kind == "batch" else rng.randint(65, 100)
        kind = "batch"
        args = (caller, ("size", size), ("idem", rng.randrange(3) if rng.random() < 0.4 else None), instance)
        args += (("mv", _mv(rng, False)),)
    elif kind == "put_me":
        args = (caller, instance, ("mv", _mv(rng, False)))
    elif kind == "tie":
        ops = rng.choice((("put", "put"), ("put", "put"), ("put", "delete"), ("delete", "put")))
        args = (caller, *_key(rng), ("ops", ops), ("first", rng.randrange(2)), ("m", rng.random()))
        args += (("cut_between", rng.random() < 0.6),)
    elif kind == "get":
        args = (caller, *_key(rng), instance, ("mv", _mv(rng, True)))
    elif kind == "get_me":
        args = (caller, instance, ("mv", _mv(rng, True)))
    elif kind == "walk":
        limit = rng.choice((1, 2, 3, 5, 10, 25, 50, 100))
        state = rng.choice((None, None, "open", "done"))
        args = (caller, ("limit", limit), ("state", state), instance, ("mv", rng.random() < 0.2))
    elif kind == "page":
        args = (("walk", rng.random()), instance)
    elif kind == "cut":
        gzipped = rng.random() < 0.5
        args = (("share", rng.random()), ("gzip", gzipped), ("junk", rng.random() < 0.1))
        args += (("trailing", gzipped and rng.random() < 0.1), ("twice", rng.random() < 0.08))
    elif kind == "load":
        args = (("obj", rng.random()), ("again", rng.random() < 0.1))
    elif kind == "concurrent":
        args = (("obj", rng.random()), ("n", rng.randint(2, 5)), ("same", rng.random() < 0.7))
    elif kind in ("kill", "outage"):
        args = (("obj", rng.random()), ("at", rng.choice(("claim", "work", "commit"))), ("worst", rng.random() < 0.7))
    elif kind == "advance":
        args = (("seconds", rng.choice((0.5, 1, 2, 4, 6, 10, 30))),)
    elif kind == "corrupt":
        args = (caller, ("how", rng.choice(CORRUPTIONS)))
    else:
        args = ()
    return Step(kind, dt, args)


T = TypeVar("T")


def shrink(items: Sequence[T], fails: Callable[[list[T]], bool], budget: Callable[[], bool]) -> list[T]:
    """Delta debugging (Zeller's ddmin, complements only): the shortest sublist of `items` that
    still `fails` that it can find while `budget()` holds. `items` itself must fail."""
    current = list(items)
    chunks = 2
    while len(current) >= 2 and budget():
        size = max(1, len(current) // chunks)
        reduced = False
        start = 0
        while start < len(current) and budget():
            candidate = current[:start] + current[start + size :]
            if candidate and fails(candidate):
                current = candidate
                chunks = max(chunks - 1, 2)
                reduced = True
            else:
                start += size
        if not reduced:
            if size == 1:
                break
            chunks = min(len(current), chunks * 2)
    return current
