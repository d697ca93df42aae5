"""Cold start: a fresh process that imports `app` and serves one GET must not load what a GET
does not use (boto3 and botocore for the Firehose writer, dataclasses-json and marshmallow, and
PyMySQL when the database is SQLite).

Each case runs in a new interpreter, as a new Lambda execution environment does, and sends a
production-shaped API Gateway event through `app.app(event, context)`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.events import get_todo_event
from chalicelib import bootstrap
from chalicelib.config import Settings
from chalicelib.identity import Principal
from chalicelib.models import validate_todo

ROOT = Path(__file__).resolve().parents[2]
NEVER_FOR_A_GET = (
    "boto3",
    "botocore",
    "s3transfer",
    "dataclasses_json",
    "marshmallow",
    # the write and load side: commands are made by writes and parsed by the loader, which is
    # built on first use (chalicelib/bootstrap.py)
    "chalicelib.loader",
    "chalicelib.commands",
    "chalicelib.wire",
    "chalicelib.loader.parsing",
    "chalicelib.loader.streaming",
    "chalicelib.loader.lanes",
    "chalicelib.loader.apply",
    "chalicelib.loader.mysql_fast",
)
MARK = "COLD-START-RESULT "
SUB = "3f2e1d0c-9b8a-4765-8432-10fedcba9876"

CHILD = """
import json, sys
import app
class Context:
    function_name = "sluice-test"; memory_limit_in_mb = 1024; aws_request_id = "cold"
    def get_remaining_time_in_millis(self): return 30000
answer = app.app(json.loads(sys.argv[1]), Context())
print(sys.argv[2] + json.dumps({"status": answer["statusCode"], "body": answer["body"], "modules": sorted(sys.modules)}))
"""

CONFIGS = {
    "lambda-firehose": {
        "AWS_LAMBDA_FUNCTION_NAME": "sluice-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "WRITE_TRANSPORT": "firehose",
        "FIREHOSE_STREAM": "sluice-test-writes",
        "WRITES_BUCKET": "sluice-test-writes",
    },
    "lambda-local-transport": {"AWS_LAMBDA_FUNCTION_NAME": "sluice-test"},
    "chalice-local": {},
}


@pytest.fixture
def stored_todo(tmp_path: Path) -> tuple[Path, str]:
    """A todo in the embedded SQLite file, written by this (warm) process through the app's service."""
    built = bootstrap.build(Settings.from_env({"LOCAL_DATA_DIR": str(tmp_path)}))
    done = built.service.create_todo(Principal(SUB, frozenset()), validate_todo({"title": "Cold tea"}), None)
    built.master.discard()
    return tmp_path, done.id


def serve_one_get(local_dir: Path, todo_id: str, extra_env: dict[str, str]) -> dict[str, Any]:
    settings = ("AWS_", "DATABASE_", "REPLICA_", "CACHE_", "WRITE_", "FIREHOSE_", "WRITES_", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(settings)}
    env.update({"LOCAL_DATA_DIR": str(local_dir), "PYTHONPATH": str(ROOT), "SLUICE_LOG": "0", **extra_env})
    event = json.dumps(get_todo_event(SUB, todo_id))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, event, MARK], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    return json.loads(lines[-1][len(MARK) :])


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_first_get_loads_nothing_a_get_does_not_use(stored_todo: tuple[Path, str], config: str) -> None:
    local_dir, todo_id = stored_todo
    if CONFIGS[config].get("WRITE_TRANSPORT") == "firehose":
        pytest.importorskip("chalicelib.writers.firehose", reason="the Firehose writer is not in this tree")

    result = serve_one_get(local_dir, todo_id, CONFIGS[config])

    assert result["status"] == 200, result["body"]
    assert json.loads(result["body"])["title"] == "Cold tea"
    loaded = set(result["modules"])
    assert sorted(loaded.intersection(NEVER_FOR_A_GET)) == []
    assert "pymysql" not in loaded  # DATABASE_URL is SQLite
    assert not any(name == "redis" or name.startswith("redis.") for name in loaded)  # no CACHE_URL


def test_the_check_sees_a_heavy_import(stored_todo: tuple[Path, str], tmp_path: Path) -> None:
    """The harness itself: a module imported during the GET does show up in the child's list."""
    local_dir, todo_id = stored_todo
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import marshmallow\n")
    pytest.importorskip("marshmallow")
    env = {"AWS_LAMBDA_FUNCTION_NAME": "sluice-test", "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"}
    result = serve_one_get(local_dir, todo_id, env)
    assert "marshmallow" in result["modules"]
