"""The history checker's CI tier (tests/histories): random histories over a fixed list of seeds,
in process, with injected clocks and faults, on SQLite and on the MariaDB master/replica pair.

Each seed's history is drawn before it runs (tests/histories/steps.py), played through chalice's
test client against app.py with two API instances whose clocks are apart, and held, step by step,
to the contract's model (tests/histories/model.py). A failure names the seed, the step, the check
and the steps before it. Replay one seed, or several, with
    SLUICE_HISTORY_SEEDS=7,12 .venv/bin/pytest tests/integration/test_histories.py
and make a history longer with SLUICE_HISTORY_STEPS=N. `make soak MINUTES=N` is the long tier:
real processes and real faults, random seeds, shrinking.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.readers.cache import entry_key
from chalicelib.readers.pending_entry import pending_key
from chalicelib.resources import RESOURCES
from tests.histories.runner import Outcome, Runner
from tests.histories.steps import generate
from tests.histories.system import PairSystem, SqliteSystem, offsets

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# Before the fixes of issue 17 these found each of defects 1 to 5 (tests/histories/FOUND.md);
# on a correct service they all pass. Each history runs to its end, so that a failure lists every
# check that failed, each with its first problem.
SQLITE_SEEDS = tuple(range(1, 13))
PAIR_SEEDS = (104, 107, 118, 123)
STEPS = 400


def seeds(default: tuple[int, ...]) -> list[int]:
    chosen = os.environ.get("SLUICE_HISTORY_SEEDS", "").strip()
    return [int(s) for s in chosen.split(",") if s.strip()] if chosen else list(default)


def steps() -> int:
    return int(os.environ.get("SLUICE_HISTORY_STEPS", "").strip() or STEPS)


def play(system: Any, seed: int, tier: str) -> Outcome:
    replay = f"SLUICE_HISTORY_SEEDS={seed} .venv/bin/pytest tests/integration/test_histories.py -k {tier}"
    history = generate(seed, steps(), replica_faults=system.replica_faults)
    outcome = Runner(system, seed, history, tier, stop_at_first=False, replay=replay).run()
    print(outcome.message())
    return outcome


@pytest.fixture
def sqlite_system(tmp_path: Path, redis_server: str, request: pytest.FixtureRequest) -> Iterator[SqliteSystem]:
    seed = request.param
    system = SqliteSystem(str(tmp_path), redis_server, seed, offsets(seed))
    try:
        yield system
    finally:
        system.close()


@pytest.fixture
def pair_system(db_pair: dict[str, str], redis_server: str, request: pytest.FixtureRequest) -> Iterator[PairSystem]:
    seed = request.param
    system = PairSystem(db_pair, f"sluice_hist_{uuid.uuid4().hex[:10]}", redis_server, seed, offsets(seed))
    try:
        yield system
    finally:
        system.close()


@pytest.mark.parametrize("sqlite_system", seeds(SQLITE_SEEDS), indirect=True, ids=lambda s: f"seed{s}")
def test_sqlite_histories_keep_the_contract(sqlite_system: SqliteSystem, request: pytest.FixtureRequest) -> None:
    outcome = play(sqlite_system, request.node.callspec.params["sqlite_system"], "sqlite")
    assert outcome.ok, outcome.message()


@pytest.mark.pair
@pytest.mark.parametrize("pair_system", seeds(PAIR_SEEDS), indirect=True, ids=lambda s: f"seed{s}")
def test_pair_histories_keep_the_contract(pair_system: PairSystem, request: pytest.FixtureRequest) -> None:
    outcome = play(pair_system, request.node.callspec.params["pair_system"], "pair")
    assert outcome.ok, outcome.message()


def test_the_cache_expiry_of_a_history_takes_every_resource_s_entries_and_keeps_the_pending_hashes(
    sqlite_system_plain: SqliteSystem,
) -> None:
    """`expire_cache` (the step standing for CACHE_TTL_SECONDS) deleted `todo:*` and `profile:*`,
    which no key matches since the cache's keys hold their read shape's digest (schema version 2):
    the model thought the cache expired while it did not, and the soak reported a created_at that
    only a cache never expired would show."""
    system, prefix = sqlite_system_plain, sqlite_system_plain.prefix
    owner = "3b2a1c0d-9e8f-4a7b-8c6d-5e4f3a2b1c0d"
    entries = [entry_key(name, owner, owner if name == "profiles" else str(uuid.uuid4()), prefix) for name in RESOURCES]
    for key in entries:
        system.redis.execute_command("SET", key, b"a|0||", "PX", 60_000)
    hash_key = pending_key(owner, prefix)
    system.redis.execute_command("HSET", hash_key, "t:x", b"kept")
    system.expire_cache()
    assert [system.redis.execute_command("EXISTS", key) for key in entries] == [0] * len(entries)
    assert system.redis.execute_command("HGET", hash_key, "t:x") == b"kept"


@pytest.fixture
def sqlite_system_plain(tmp_path: Path, redis_server: str) -> Iterator[SqliteSystem]:
    system = SqliteSystem(str(tmp_path), redis_server, 1, offsets(1))
    try:
        yield system
    finally:
        system.close()
