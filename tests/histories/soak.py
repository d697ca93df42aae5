"""The soak tier (`make soak MINUTES=N`), and the command-line helpers of tests/histories.

Soak: random seeds, one history after another until the minutes are up, on the MariaDB pair with
real processes and real faults:
- every load is a process of its own (tests/histories/load_process.py); a "kill" is SIGKILL at a
  random moment of its load, concurrent deliveries are processes released together;
- a database outage during a load is `scripts/db-pair kill-master` while it runs, then
  `start-master`; a dead replica is `stop-replica` or `kill-replica`, then `start-replica`; a
  lagging replica is replication stopped on it;
- Redis is cut through the proxy (the machine's Redis is shared: it is never stopped or flushed).
The API instances stay in this process (chalice's test client; their clocks injected), as in CI.

A failing history is shrunk (delta debugging, `steps.shrink`): in process first, where a run takes
seconds and replays exactly, when the failure reproduces there; with the real faults otherwise,
within --shrink-minutes. The shortest history found is printed with its failure and written to a
JSON file that `python -m tests.histories replay FILE` plays again.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.histories.runner import Outcome, Runner, counts_line
from tests.histories.steps import Step, generate, shrink
from tests.histories.system import Obj, PairSystem, SqliteSystem, System, offsets

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "scripts" / "db-pair")
PROCESS_TIMEOUT = 180.0


def redis_url() -> str:
    host = os.environ.get("SLUICE_TEST_REDIS_HOST", "127.0.0.1")
    port = os.environ.get("SLUICE_TEST_REDIS_PORT", "6379")
    return f"redis://{host}:{port}/0"


# -- the pair --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pair_env(directory: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (Path(directory) / "env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key.strip()] = value.strip().strip("'\"")
    return env


@contextmanager
def pair() -> Iterator[dict[str, str]]:
    """The pair named by SLUICE_PAIR_DIR when it is up; otherwise one of our own, destroyed after."""
    named = os.environ.get("SLUICE_PAIR_DIR")
    if named and subprocess.run([SCRIPT, "status", named], capture_output=True).returncode == 0:
        yield {**_pair_env(named), "dir": named}
        return
    directory = tempfile.mkdtemp(prefix="sluice-hist-")
    env = {**os.environ, "SLUICE_MASTER_PORT": str(_free_port()), "SLUICE_REPLICA_PORT": str(_free_port())}
    started = subprocess.run([SCRIPT, "start", directory], capture_output=True, text=True, env=env)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"could not start a MariaDB pair: {started.stderr.strip()[-800:]}")
        yield {**_pair_env(directory), "dir": directory}
    finally:
        subprocess.run([SCRIPT, "destroy", directory], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def system_for(tier: str, seed: int, pair_env: dict[str, str] | None, real: bool = False) -> Iterator[System]:
    """A fresh system for one history (its own SQLite folder or its own database on the pair),
    closed and removed afterwards."""
    directory = tempfile.mkdtemp(prefix="sluice-hist-")
    try:
        if tier == "sqlite":
            system: System = SqliteSystem(directory, redis_url(), seed, offsets(seed))
        else:
            assert pair_env is not None
            database = f"sluice_hist_{uuid.uuid4().hex[:10]}"
            made = RealFaultsSystem if real else PairSystem
            system = made(pair_env, database, redis_url(), seed, offsets(seed))
        try:
            yield system
        finally:
            system.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def play(
    tier: str, seed: int, steps: list[Step], pair_env: dict[str, str] | None, real: bool = False, announce: bool = True
) -> Outcome:
    with system_for(tier, seed, pair_env, real) as system:
        return Runner(system, seed, steps, tier + ("-real" if real else ""), announce=announce).run()


# -- real processes and faults ---------------------------------------------------------------------
class LoadError(Exception):
    """A loader process that failed: `kind` is the exception it reported."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(f"{kind}: {text}")
        self.kind = kind


class LoadReport:
    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)


class RealFaultsSystem(PairSystem):
    """The pair tier with every load a process of its own and the servers themselves faulted."""

    def __init__(
        self, pair_env: dict[str, str], database: str, redis: str, seed: int, offsets_us: tuple[int, int]
    ) -> None:
        from tests.integration.faults import PairControl

        super().__init__(pair_env, database, redis, seed, offsets_us)
        self.control = PairControl(SCRIPT, pair_env["dir"])
        self.files = tempfile.mkdtemp(prefix="sluice-hist-objects-")
        self.chance = random.Random(seed ^ 0x50A4)
        self.cache_failures = 0
        self._last_line = ""

    def _file(self, obj: Obj) -> str:
        path = os.path.join(self.files, obj.key)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Path(path).write_bytes(obj.body)
        return path

    def _start(self, obj: Obj, force: bool = False, pause_at: str = "") -> subprocess.Popen[str]:
        cache = f"redis://127.0.0.1:{self.redis_proxy.port}/0?timeout=2&connect_timeout=1"
        args = [sys.executable, "-m", "tests.histories.load_process", self.master_direct, cache, self.prefix]
        args += [self._file(obj)] + (["--force"] if force else []) + (["--pause-at", pause_at] if pause_at else [])
        process = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            process.kill()
            raise RuntimeError("a loader process did not start")
        return process

    @staticmethod
    def _go(process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()

    def _paused(self, process: subprocess.Popen[str]) -> bool:
        """Whether the process reached its pause point (False: its load ended before, as a load
        of an object already in the ledger does)."""
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], PROCESS_TIMEOUT)
        if not ready:
            raise RuntimeError(f"a loader process neither paused nor ended in {PROCESS_TIMEOUT:.0f} s")
        line = process.stdout.readline()
        if line.strip() == "paused":
            return True
        self._last_line = line
        return False

    def _result(self, process: subprocess.Popen[str]) -> Any:
        try:
            out, _ = process.communicate(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return LoadError("Timeout", f"the loader process did not end in {PROCESS_TIMEOUT:.0f} s")
        out = getattr(self, "_last_line", "") + (out or "")
        self._last_line = ""
        line = out.strip().splitlines()[-1:] or [""]
        if line[0].startswith("{"):
            report = json.loads(line[0])
            self.cache_failures += int(report.get("cache_failures", 0))
            return LoadReport(report["result"])
        kind, _, text = line[0].removeprefix("error: ").partition(": ")
        return LoadError(kind or "Died", text or f"exit status {process.returncode}")

    def load(self, obj: Obj, force: bool = False) -> Any:
        process = self._start(obj, force)
        self._go(process)
        return self._result(process)

    def load_together(self, objs: list[Obj]) -> list[Any] | None:
        processes = [self._start(obj) for obj in objs]
        for process in processes:
            self._go(process)
        results = [self._result(p) for p in processes]
        if any(isinstance(r, LoadError) and r.kind == "Timeout" for r in results):
            return None
        return results

    def load_killed(self, obj: Obj, at: str) -> tuple[bool, Any]:
        """A loader process SIGKILLed inside its load's transaction (at `at`)."""
        process = self._start(obj, pause_at=at)
        self._go(process)
        if not self._paused(process):
            return False, self._result(process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True, None

    def load_cut_off(self, obj: Obj, at: str) -> tuple[Any, bool]:
        """The master SIGKILLed while a loader process is inside its load's transaction (at `at`),
        started again a moment later."""
        if self.lagging:  # db-pair's start-master waits for replication, which a lag has stopped
            self.lag_end()
        process = self._start(obj, pause_at=at)
        self._go(process)
        if not self._paused(process):
            return self._result(process), False
        self.control.stop_master(kill=True)
        self._go(process)  # the load goes on, against a dead server
        failed: list[BaseException] = []

        def start() -> None:
            try:
                self.control.start_master()
            except BaseException as exc:  # noqa: BLE001 - raised in this thread below
                failed.append(exc)

        restart = threading.Timer(self.chance.uniform(0.2, 1.5), start)
        restart.start()
        result = self._result(process)
        restart.join()
        if failed:
            raise RuntimeError("the master did not come back") from failed[0]
        return result, True

    def invalidator_failures(self) -> int:
        return self.cache_failures

    # -- the replica, for real ----------------------------------------------------------------------
    @property  # type: ignore[override]
    def replica_is_up(self) -> bool:
        return self.control.replica_up

    def replica_down(self) -> None:
        self.control.stop_replica(kill=self.chance.random() < 0.5)

    def replica_up(self) -> None:
        if not self.control.replica_up:
            self.control.start_replica()
            self.lagging = False  # a started replica replicates

    def sync_replica(self) -> bool:
        if not self.control.replica_up or not self.control.master_up:
            return False
        return super().sync_replica()

    def lag_start(self) -> None:
        if self.control.replica_up:
            super().lag_start()

    def lag_end(self) -> None:
        if self.control.replica_up:
            super().lag_end()
        self.lagging = False

    def heal(self) -> None:
        if self.lagging and self.control.replica_up:
            self.lag_end()
        self.control.restore()
        super().heal()

    def close(self) -> None:
        try:
            self.control.restore()
        finally:
            super().close()
            shutil.rmtree(self.files, ignore_errors=True)


# -- commands --------------------------------------------------------------------------------------
def survey(tier: str, seeds: list[int], steps: int) -> int:
    with pair() if tier == "pair" else _nothing() as pair_env:
        for seed in seeds:
            with system_for(tier, seed, pair_env) as system:
                outcome = Runner(system, seed, generate(seed, steps, system.replica_faults), tier, False).run()
            first: dict[str, Any] = {}
            for violation in outcome.violations:
                first.setdefault(violation.check, violation)
            print(f"SEED {seed} ({tier}): {', '.join(first) or 'ok'}", flush=True)
            print(f"    {counts_line(outcome.counts)}", flush=True)
            for check, violation in first.items():
                where = f"step {violation.step_no} {violation.step}" if violation.step_no else "final"
                print(f"    [{check}] {where}: {violation.message[:700]}", flush=True)
    return 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def soak(minutes: float, tier: str, steps: int, seed: int | None, shrink_minutes: float) -> int:
    deadline = time.monotonic() + minutes * 60
    seed = seed if seed is not None else random.SystemRandom().randrange(10**6, 10**9)
    real = tier == "pair"
    runs = 0
    print(f"soak: {minutes} min, tier {tier}{' with real processes and faults' if real else ''}", flush=True)
    with pair() if tier == "pair" else _nothing() as pair_env:
        while time.monotonic() < deadline:
            history = generate(seed, steps, replica_faults=tier == "pair")
            outcome = play(tier, seed, history, pair_env, real)
            runs += 1
            print(outcome.message(context=6) if not outcome.ok else f"soak: seed {seed} ok ({outcome.ran} steps)")
            if not outcome.ok:
                report_shortest(tier, seed, history, outcome, pair_env, real, shrink_minutes)
                return 1
            seed += 1
    print(f"soak: {runs} histories, no problem", flush=True)
    return 0


def report_shortest(
    tier: str,
    seed: int,
    history: list[Step],
    outcome: Outcome,
    pair_env: dict[str, str] | None,
    real: bool,
    minutes: float,
) -> None:
    """Shrink the failing history (in process when it fails there too) and print the shortest."""
    check = outcome.violations[0].check
    history = history[: outcome.violations[0].step_no or len(history)]
    deadline = time.monotonic() + minutes * 60

    def fails_with(real_faults: bool) -> Callable[[list[Step]], bool]:
        def fails(candidate: list[Step]) -> bool:
            got = play(tier, seed, candidate, pair_env, real_faults, announce=False)
            return any(v.check == check for v in got.violations)

        return fails

    real_faults = real and not fails_with(False)(history)
    print(f"soak: shrinking {len(history)} steps ({'real faults' if real_faults else 'in process'})...", flush=True)
    shortest = shrink(history, fails_with(real_faults), lambda: time.monotonic() < deadline)
    final = play(tier, seed, shortest, pair_env, real_faults)
    path = Path(tempfile.gettempdir()) / f"sluice-history-{seed}.json"
    path.write_text(json.dumps({"seed": seed, "tier": tier, "steps": [to_json(s) for s in shortest]}, indent=1))
    print(f"soak: the shortest history found ({len(shortest)} steps) for check {check!r}:")
    print("\n".join(f"  {n}. {s}" for n, s in enumerate(shortest, 1)))
    print(final.message(context=0))
    flag = " --real" if real_faults else ""
    print(
        f"soak: written to {path}; play it again: .venv/bin/python -m tests.histories replay {path} --tier {tier}{flag}"
    )


def to_json(step: Step) -> list[Any]:
    return [step.kind, step.dt, [[k, list(v) if isinstance(v, tuple) else v] for k, v in step.args]]


def from_json(raw: list[Any]) -> Step:
    kind, dt, args = raw
    return Step(kind, dt, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in args))


def replay(file: str, tier: str, real: bool) -> int:
    saved = json.loads(Path(file).read_text())
    steps = [from_json(s) for s in saved["steps"]]
    with pair() if tier == "pair" else _nothing() as pair_env:
        outcome = play(tier, int(saved["seed"]), steps, pair_env, real)
    print(outcome.message())
    return 0 if outcome.ok else 1
