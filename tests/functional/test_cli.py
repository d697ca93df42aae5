"""python -m chalicelib.cli (CONTRACT section 7), run as a user would: in a subprocess."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.commands import make_command
from tests.conftest import ROOT
from tests.factories import make

TODO_ID = "0190b2a0-0000-7000-8000-0000000000c1"
OP = "6a9c5d2e-1111-4222-8333-444455556666"
V1, V2 = 1_800_000_000_000_001, 1_800_000_000_000_002


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "SLUICE_LOG": "0"}
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120
    )


def put(version: int, title: str) -> bytes:
    data = make("todos", title=title, notes="", state="open", tags=[])
    return make_command("put", "todos", "alice", TODO_ID, version, OP, data).to_line()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"LOCAL_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3"}


def write(path: Path, body: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return str(path)


def title_in(env: dict[str, str]) -> str:
    import sqlite3

    db = sqlite3.connect(env["DATABASE_URL"][len("sqlite:///") :])
    return db.execute("SELECT title FROM todos WHERE id = ?", (TODO_ID,)).fetchone()[0]


def test_migrate_is_idempotent(env):
    first = cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    second = cli("migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_load_prints_the_counts_line(env, tmp_path):
    good = write(tmp_path / "writes/2027/01/15/08/a", put(V2, "new") + b"junk\n")
    older = write(tmp_path / "writes/2027/01/15/08/b", gzip.compress(put(V1, "old")))
    result = cli("load", good, older, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "applied=1 stale=1 rejected=1 skipped=0 deferred=0"
    again = cli("load", good, env=env)
    assert again.stdout.strip() == "applied=0 stale=0 rejected=0 skipped=1 deferred=0"
    forced = cli("load", "--force", good, env=env)
    assert forced.stdout.strip() == "applied=0 stale=1 rejected=1 skipped=0 deferred=0"
    assert title_in(env) == "new"


def test_replay_local_over_an_hour_range(env):
    data = Path(env["LOCAL_DATA_DIR"])
    write(data / "writes/2027/01/15/07/x", put(V1, "seven"))
    write(data / "writes/2027/01/15/09/y", put(V2, "nine"))
    write(data / "writes/2027/01/15/09/.y.tmp", b"half written")
    only_seven = cli("replay", "--local", "--since", "2027-01-15T06", "--until", "2027-01-15T08", env=env)
    assert only_seven.stdout.strip() == "applied=1 stale=0 rejected=0 skipped=0 deferred=0", only_seven.stderr
    assert title_in(env) == "seven"
    everything = cli("replay", "--local", "--since", "2027-01-15T00", "--until", "2027-01-15T23", env=env)
    assert everything.stdout.strip() == "applied=1 stale=0 rejected=0 skipped=1 deferred=0"
    assert title_in(env) == "nine"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["load"],
        ["replay", "--local", "--since", "yesterday"],
        ["replay", "--local", "--since", "2027-01-15T09", "--until", "2027-01-15T08"],
        ["replay", "--since", "2027-01-15T09"],
        ["token"],
        ["token", "--sub", ""],
        ["load", "s3://bucket-only"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(env, args):
    result = cli(*args, env=env)
    assert result.returncode == 2, (args, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")


def test_failure_exits_1_with_one_clear_line(env, tmp_path):
    result = cli("load", str(tmp_path / "missing"), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot read {tmp_path / 'missing'}: No such file or directory"
    ]
    unreachable = cli("migrate", env={**env, "DATABASE_URL": "mysql://root@127.0.0.1:1/x"})
    assert unreachable.returncode == 1 and len(unreachable.stderr.strip().splitlines()) == 1
    assert "Traceback" not in unreachable.stderr


def test_help_exits_0(env):
    for args in (["--help"], ["load", "--help"], ["replay", "--help"], ["token", "--help"]):
        result = cli(*args, env=env)
        assert result.returncode == 0 and "usage" in result.stdout


def test_token_carries_cognito_claims(env):
    result = cli(
        "token", "--sub", "abc-123", "--username", "ana", "--email", "a@example.com", "--groups", "admins,x", env=env
    )
    assert result.returncode == 0
    header, payload, signature = result.stdout.strip().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "abc-123" and claims["cognito:username"] == "ana"
    assert claims["email"] == "a@example.com" and claims["cognito:groups"] == ["admins", "x"]
    assert claims["token_use"] == "id" and claims["exp"] > claims["iat"] and signature == ""
