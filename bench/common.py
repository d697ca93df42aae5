"""What every row needs: the MariaDB pair, fresh databases, server counters, timing and statistics."""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAIR_SCRIPT = ROOT / "scripts" / "db-pair"
BENCH_PAIR_DIR = os.environ.get("SLUICE_BENCH_PAIR_DIR", "/tmp/sluice-bench-pair")
BENCH_MASTER_PORT = "3317"
BENCH_REPLICA_PORT = "3318"
REDIS_URL = os.environ.get("SLUICE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

Row = dict[str, Any]


# -- rows ---------------------------------------------------------------------------------------
def row(
    name: str,
    ours: float | None,
    baseline: float | None,
    unit: str,
    target: str = "",
    note: str = "",
    section: str = "",
) -> Row:
    """One line of the table. `ratio` is always ours / baseline; `target` reads like "<= 1.3"."""
    ratio = ours / baseline if ours is not None and baseline else None
    return {
        "name": name,
        "ours": ours,
        "baseline": baseline,
        "unit": unit,
        "ratio": ratio,
        "target": target,
        "met": target_met(ratio, target),
        "note": note,
        "section": section,
    }


def target_met(ratio: float | None, target: Any) -> bool | None:
    """ "<= X" / ">= X" (also ≤ ≥); None when there is no target or no ratio."""
    if ratio is None or target in (None, ""):
        return None
    text = str(target).strip().replace("≤", "<=").replace("≥", ">=")
    for op in ("<=", ">="):
        if text.startswith(op):
            try:
                bound = float(text[len(op) :].strip().split()[0].rstrip("x×"))
            except (ValueError, IndexError):
                return None
            return ratio <= bound if op == "<=" else ratio >= bound
    return None


def error_row(name: str, section: str, exc: BaseException) -> Row:
    return row(name, None, None, "", note=f"did not run: {type(exc).__name__}: {exc}"[:400], section=section)


# -- statistics -------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def time_calls(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call over `calls` back-to-back calls."""
    clock = time.perf_counter
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


def interleaved(cases: dict[str, Callable[[], Any]], rounds: int, calls: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each case, rounds interleaved so drift hits every case alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(time_calls(fn, calls))
    return {name: median(values) for name, values in samples.items()}


def profile_summary(fn: Callable[[], Any], calls: int, top: int = 6) -> str:
    """Where the time goes in `fn`: the functions with the most own time, as shares of the total."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    parts = []
    for (filename, _line, func), value in ranked:
        where = _short_path(filename)
        parts.append(f"{where}:{func} {100 * value[2] / total:.0f}%")
    return "; ".join(parts)


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return os.path.basename(filename) if filename.startswith("/") else filename


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """The app's JSON access log still renders each line (a real cost) but goes nowhere."""

    class Sink(io.TextIOBase):
        def write(self, text: str) -> int:
            return len(text)

    saved = sys.stdout
    sys.stdout = Sink()
    try:
        yield
    finally:
        sys.stdout = saved


# -- the MariaDB pair -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    directory: str
    master_url: str  # mysql://root@127.0.0.1:PORT/test
    replica_url: str
    master_pid_file: str
    master_port: int
    replica_port: int

    @classmethod
    def from_env_file(cls, directory: str) -> Pair:
        env: dict[str, str] = {}
        for line in (Path(directory) / "env").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key.strip()] = value.strip().strip("'\"")
        return cls(
            directory=directory,
            master_url=env["SLUICE_MASTER_URL"],
            replica_url=env["SLUICE_REPLICA_URL"],
            master_pid_file=env["SLUICE_MASTER_PID_FILE"],
            master_port=int(env["SLUICE_MASTER_PORT"]),
            replica_port=int(env["SLUICE_REPLICA_PORT"]),
        )

    def master_pid(self) -> int:
        return int(Path(self.master_pid_file).read_text().split()[0])

    def url(self, role: str, database: str) -> str:
        port = self.master_port if role == "master" else self.replica_port
        return f"mysql://root@127.0.0.1:{port}/{database}"


def pair_is_up(directory: str) -> bool:
    done = subprocess.run([str(PAIR_SCRIPT), "status", directory], capture_output=True, text=True)
    return done.returncode == 0


def start_pair(directory: str = BENCH_PAIR_DIR) -> tuple[Pair, bool]:
    """The bench's own pair, started when down. Returns (pair, started_here)."""
    if pair_is_up(directory):
        return Pair.from_env_file(directory), False
    env = dict(os.environ, SLUICE_MASTER_PORT=BENCH_MASTER_PORT, SLUICE_REPLICA_PORT=BENCH_REPLICA_PORT)
    done = subprocess.run([str(PAIR_SCRIPT), "start", directory], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/db-pair start {directory} failed: {done.stderr.strip()[-400:]}")
    return Pair.from_env_file(directory), True


def stop_pair(directory: str) -> None:
    subprocess.run([str(PAIR_SCRIPT), "stop", directory], capture_output=True, text=True)


def admin(pair: Pair, role: str = "master", database: str | None = None) -> Any:
    import pymysql

    port = pair.master_port if role == "master" else pair.replica_port
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", database=database, autocommit=True)


def raw_connection(url: str, database: str | None = None, **extra: Any) -> Any:
    """A plain PyMySQL connection to a mysql:// URL (autocommit unless `extra` says otherwise):
    what the baselines use. `database` overrides the URL's."""
    import pymysql

    from chalicelib.db.urls import parse_db_url

    parsed = parse_db_url(url)
    options = {"autocommit": True, **extra}
    return pymysql.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.user,
        password=parsed.password,
        database=database if database is not None else parsed.database,
        charset="utf8mb4",
        ssl_disabled=True,
        **options,
    )


@contextlib.contextmanager
def fresh_database(pair: Pair, migrate: bool = True) -> Iterator[tuple[str, str]]:
    """A new database on the master (replicated), migrated; yields (master_url, replica_url)."""
    from chalicelib.db.database import open_database

    name = f"sluice_bench_{uuid.uuid4().hex[:10]}"
    conn = admin(pair)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        master_url, replica_url = pair.url("master", name), pair.url("replica", name)
        if migrate:
            db = open_database(master_url)
            db.migrate()
            db.discard()
        sync_replica(pair)
        yield master_url, replica_url
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def production_loader(master_url: str) -> Any:
    """The loader exactly as the app's composition root builds it for this master (its options,
    such as LOAD DATA LOCAL, and any cache hook included). Local writes, if any, go to a
    throw-away folder."""
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    local = tempfile.mkdtemp(prefix="sluice-bench-")
    return bootstrap.build(Settings.from_env({"DATABASE_URL": master_url, "LOCAL_DATA_DIR": local})).loader


def sync_replica(pair: Pair, timeout: float = 30) -> None:
    replica_caught_up(pair.url("master", "test"), pair.url("replica", "test"), timeout)


def replica_caught_up(master_url: str, replica_url: str, timeout: float = 30) -> None:
    """Wait until the replica has applied everything the master has logged so far."""
    master, replica = raw_connection(master_url), raw_connection(replica_url)
    try:
        with master.cursor() as cur:
            cur.execute("SELECT @@gtid_binlog_pos")
            (pos,) = cur.fetchone()
        with replica.cursor() as cur:
            cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))
            (status,) = cur.fetchone()
        if status != 0:
            raise RuntimeError(f"replica did not reach {pos} within {timeout} s")
    finally:
        master.close()
        replica.close()


def global_status(conn: Any, names: tuple[str, ...]) -> dict[str, int]:
    with conn.cursor() as cur:
        marks = ", ".join(["%s"] * len(names))
        cur.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({marks})", names)
        return {name: int(value) for name, value in cur.fetchall()}


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


# -- the machine ---------------------------------------------------------------------------------
def machine_info(pair: Pair | None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load average at the end (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for package in ("chalice", "PyMySQL", "boto3"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    if pair is not None:
        try:
            conn = admin(pair)
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog")
                ver, flush, sync = cur.fetchone()
            conn.close()
            info["mariadb"] = f"{ver} (innodb_flush_log_at_trx_commit={flush}, sync_binlog={sync}, binlog ROW)"
        except Exception as exc:  # noqa: BLE001 - info only
            info["mariadb"] = f"unknown ({exc})"
    try:
        from chalicelib.readers.resp import RespClient

        server = RespClient.from_url(REDIS_URL).execute_command("INFO", "server").decode()
        info["redis"] = next(line.split(":", 1)[1] for line in server.splitlines() if line.startswith("redis_version"))
    except Exception as exc:  # noqa: BLE001 - info only
        info["redis"] = f"unreachable ({exc})"
    info["commit"] = _git_commit()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


@contextlib.contextmanager
def lambda_environment() -> Iterator[None]:
    """Mark the process as running in Lambda (as production is) for the block, then restore."""
    previous = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "sluice-bench"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)
        else:
            os.environ["AWS_LAMBDA_FUNCTION_NAME"] = previous
