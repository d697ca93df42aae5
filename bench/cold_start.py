"""Row 4: cold start. A fresh interpreter per sample, as a new Lambda execution environment has.

Ours: import `app` (with the production configuration: Lambda's AWS_LAMBDA_FUNCTION_NAME, the
Firehose transport, MySQL master and replica URLs) and serve one GET /todos/{id} through
`app.app(event, context)`, a real row read from the bench pair's replica.
Baseline: the naive handler's start: import chalice, boto3, pymysql and dataclasses_json, and open
a PyMySQL connection with its defaults.

Each child times itself with perf_counter from just before its first import to the end, so the
interpreter's own start (the same for both, reported beside) is left out; samples alternate
between the two and the figure is the median. Bytecode: chalicelib is compiled first as `make
deploy` compiles it before packaging (deploy/bytecode.py, checked-hash caches), and the children
run with PYTHONDONTWRITEBYTECODE=1, as Lambda (a read-only /var/task) cannot write caches
either; the baseline's packages carry the caches pip wrote. Each runs once unmeasured. Without
the compile step, ours compiled every chalicelib module from source in every sample (about 35 ms
here), which is what a package without bytecode pays on every cold start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import ROOT, Pair, Row, fresh_database, median, row, sync_replica
from bench.events import get_todo_event

SECTION = "4. Cold start"
HEAVY = ("boto3", "botocore", "dataclasses_json", "marshmallow", "pymysql", "redis")
MARK = "BENCH-RESULT "

OURS = """
import json, sys, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
class Context:
    function_name = "sluice-bench"; memory_limit_in_mb = 1024; aws_request_id = "cold-start"
    def get_remaining_time_in_millis(self): return 30000
answer = app.app(json.loads(sys.argv[1]), Context())
elapsed = time.perf_counter() - t0
heavy = [m for m in __HEAVY__ if m in sys.modules]
result = {"elapsed": elapsed, "import": t1 - t0, "status": answer["statusCode"], "heavy": heavy}
print(__MARK__ + json.dumps(result))
""".replace("__HEAVY__", repr(HEAVY)).replace("__MARK__", repr(MARK))

NAIVE = """
import json, sys, time
t0 = time.perf_counter()
import chalice, boto3, pymysql
try:
    import dataclasses_json
    missing = []
except ImportError:
    missing = ["dataclasses_json"]
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", password="", database=sys.argv[2])
elapsed = time.perf_counter() - t0
conn.close()
print(__MARK__ + json.dumps({"elapsed": elapsed, "status": 0, "missing": missing}))
""".replace("__MARK__", repr(MARK))


def child(code: str, args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"cold-start child failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    return json.loads(lines[-1][len(MARK) :]), wall


def compile_app() -> bool:
    """Write chalicelib's bytecode as `make deploy` does before packaging (deploy/bytecode.py)."""
    from deploy.bytecode import compile_package

    return compile_package(ROOT)


def ours_env(master_url: str, replica_url: str, local_dir: str) -> dict[str, str]:
    dropped = ("SLUICE_", "CACHE_", "DATABASE_", "REPLICA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "sluice-bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "DATABASE_URL": master_url,
            "REPLICA_URLS": replica_url,
            "WRITE_TRANSPORT": "firehose",
            "FIREHOSE_STREAM": "sluice-bench-writes",
            "WRITES_BUCKET": "sluice-bench-writes",
            "LOCAL_DATA_DIR": local_dir,
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def run(pair: Pair, quick: bool = False) -> list[Row]:
    from bench.inprocess import OWNER, seed

    samples = 3 if quick else 11
    with fresh_database(pair) as (master_url, replica_url), tempfile.TemporaryDirectory() as local:
        ids = seed(master_url, OWNER, 3)
        sync_replica(pair)
        event = json.dumps(get_todo_event(OWNER, ids[0]))
        database = master_url.rsplit("/", 1)[1]
        env = ours_env(master_url, replica_url, local)
        compiled = compile_app()
        ours_args, naive_args = [event], [str(pair.replica_port), database]
        child(OURS, ours_args, env)  # warm the bytecode caches, unmeasured
        child(NAIVE, naive_args, env)
        ours: list[float] = []
        ours_import: list[float] = []
        naive: list[float] = []
        walls: dict[str, list[float]] = {"ours": [], "naive": [], "python": []}
        last: dict[str, Any] = {}
        for _ in range(samples):
            result, wall = child(OURS, ours_args, env)
            if result["status"] != 200:
                raise RuntimeError(f"the cold GET answered {result['status']}")
            ours.append(result["elapsed"])
            ours_import.append(result["import"])
            walls["ours"].append(wall)
            last = result
            result, wall = child(NAIVE, naive_args, env)
            naive.append(result["elapsed"])
            walls["naive"].append(wall)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            walls["python"].append(time.perf_counter() - started)
    missing = result.get("missing") or []
    note = (
        f"medians of {samples} fresh processes each, from the first import to the answer; ours = import app "
        f"{median(ours_import) * 1000:.0f} ms + first GET {(median(ours) - median(ours_import)) * 1000:.0f} ms "
        "(building the services, importing pymysql, connecting, one select). "
        f"Heavy modules loaded by ours: {', '.join(last['heavy']) or 'none'} "
        f"(of {', '.join(HEAVY)}). Whole process incl. interpreter start: ours "
        f"{median(walls['ours']) * 1000:.0f} ms, baseline {median(walls['naive']) * 1000:.0f} ms, "
        f"bare `python -c pass` {median(walls['python']) * 1000:.0f} ms. "
        + (
            "chalicelib compiled first, as make deploy does (deploy/bytecode.py)."
            if compiled
            else "WARNING: chalicelib did not compile."
        )
    )
    if missing:
        note += " WARNING: dataclasses_json is not installed, so the baseline leaves out its ~70-100 ms."
    return [
        row("cold start: import + first GET", median(ours) * 1000, median(naive) * 1000, "ms", "<= 0.5", note, SECTION)
    ]
