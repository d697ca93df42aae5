"""How a load shows it is alive on SQLite (chalicelib.loader.liveness.ProcessTokens): by its
process, on its host, in the host's boot. MySQL/MariaDB's ServerLocks are tested against the
server (tests/integration/test_loader_limits_mysql.py, test_loader_outages.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chalicelib.loader import liveness
from chalicelib.loader.liveness import DIED, GONE, RUNNING, ProcessTokens


def test_a_token_of_this_process_is_running() -> None:
    tokens = ProcessTokens()
    mine = tokens.take(None)
    assert tokens.judge(None, [mine]) == [RUNNING] and tokens.same_run(None, mine)
    assert tokens.take(None) != mine  # two loads of one process: two tokens


def test_a_token_of_a_process_that_has_ended_died() -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from chalicelib.loader.liveness import ProcessTokens; print(ProcessTokens().take(None))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token = child.stdout.strip()
    assert ProcessTokens().judge(None, [token]) == [DIED] and ProcessTokens().same_run(None, token)


def test_a_reused_pid_is_not_taken_for_the_process_that_had_it() -> None:
    kind, host, boot, pid, started, suffix = ProcessTokens().take(None).split(".")
    if started == "-":
        pytest.skip("no /proc here: the start time of a process cannot be read")
    earlier = ".".join([kind, host, boot, pid, str(int(started) - 1), suffix])
    assert ProcessTokens().judge(None, [earlier]) == [DIED]


def test_tokens_of_another_boot_or_host_are_gone_and_anything_else_too(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = ProcessTokens()
    mine = tokens.take(None)
    monkeypatch.setattr(liveness, "_boot", lambda: "rebooted")
    assert tokens.judge(None, [mine]) == [GONE] and not tokens.same_run(None, mine)  # the host restarted
    monkeypatch.undo()
    monkeypatch.setattr(liveness, "_host", lambda: "elsewhere")
    assert tokens.judge(None, [mine]) == [GONE]
    monkeypatch.undo()
    junk = ["", "p", "m.sluice_load_ab.123", "p.a.b.c.d.e", mine + ".x"]
    assert tokens.judge(None, junk) == [GONE] * len(junk)
