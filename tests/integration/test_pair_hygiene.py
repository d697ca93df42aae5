"""A test run leaves no MariaDB running behind it without a word: the pair (scripts/db-pair) that
`make test` starts for the tests that need it is stopped when the run ends, or, with
SLUICE_KEEP_PAIR=1, the run says in one line that it still runs and how to stop it.

Each case runs pytest (outside CI) on one test of the pair, in a pair folder and on ports of its
own, and looks at the pair afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.pair

SCRIPT = str(ROOT / "scripts" / "db-pair")
ONE_PAIR_TEST = "tests/integration/test_replica_pair.py::test_a_write_loaded_into_the_master_is_read_from_the_replica"


@pytest.fixture
def pair_dir() -> Iterator[str]:
    parent = tempfile.mkdtemp(prefix="sp-", dir="/tmp")  # short: the servers' socket paths must fit
    try:
        yield f"{parent}/pair"
    finally:
        subprocess.run([SCRIPT, "destroy", f"{parent}/pair"], capture_output=True, timeout=120)
        shutil.rmtree(parent, ignore_errors=True)


def free_ports() -> tuple[int, int]:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def run_tests(pair_dir: str, **extra: str) -> subprocess.CompletedProcess[str]:
    master, replica = free_ports()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SLUICE_KEEP_PAIR")}
    env.update(SLUICE_PAIR_DIR=pair_dir, SLUICE_MASTER_PORT=str(master), SLUICE_REPLICA_PORT=str(replica), **extra)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_PAIR_TEST]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def running(pair_dir: str) -> bool:
    return subprocess.run([SCRIPT, "status", pair_dir], capture_output=True, timeout=60).returncode == 0


def notes(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.startswith("db-pair:")]


def test_a_run_stops_the_pair_it_started(pair_dir: str) -> None:
    done = run_tests(pair_dir)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not running(pair_dir)
    (note,) = notes(done)
    assert "stopped the MariaDB pair this run started" in note


def test_a_run_told_to_keep_the_pair_says_how_to_stop_it_and_leaves_one_it_did_not_start(pair_dir: str) -> None:
    done = run_tests(pair_dir, SLUICE_KEEP_PAIR="1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert running(pair_dir)
    (note,) = notes(done)
    assert "still running" in note and f"scripts/db-pair stop {pair_dir}" in note
    # a run that finds the pair up did not start it: it leaves it running, and says nothing
    again = run_tests(pair_dir)
    assert again.returncode == 0 and running(pair_dir) and notes(again) == []
    # the line's command stops it
    assert subprocess.run([SCRIPT, "stop", pair_dir], capture_output=True, timeout=120).returncode == 0
    assert not running(pair_dir)
    assert Path(pair_dir).exists()


def test_a_replica_killed_while_it_wrote_master_info_replicates_again_on_start(pair_dir: str) -> None:
    """`kill-replica` (the soak's fault) can leave master.info empty; `start-replica` then failed
    with "Could not initialize master info structure" (1201) and the soak stopped. The replica now
    sets its connection up again and goes on from its gtid_slave_pos: nothing skipped, nothing
    applied twice."""
    master, replica = free_ports()
    env = {**os.environ, "SLUICE_MASTER_PORT": str(master), "SLUICE_REPLICA_PORT": str(replica)}

    def pair(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SCRIPT, command, pair_dir], env=env, capture_output=True, text=True, timeout=180)

    def rows(port: int, statement: str) -> Any:
        conn = pymysql.connect(host="127.0.0.1", port=port, user="root", database="test", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        finally:
            conn.close()

    assert pair("start").returncode == 0
    rows(master, "CREATE TABLE marks (n INT PRIMARY KEY)")
    rows(master, "INSERT INTO marks VALUES (1)")
    assert pair("sync").returncode == 0
    assert pair("kill-replica").returncode == 0
    Path(pair_dir, "replica", "data", "master.info").write_bytes(b"")  # as a kill mid-write leaves it
    rows(master, "INSERT INTO marks VALUES (2)")  # written while the replica is down
    started = pair("start-replica")
    assert started.returncode == 0, started.stderr[-2000:]
    rows(master, "INSERT INTO marks VALUES (3)")
    assert pair("sync").returncode == 0
    assert rows(replica, "SELECT n FROM marks ORDER BY n") == ((1,), (2,), (3,))
    assert running(pair_dir)
