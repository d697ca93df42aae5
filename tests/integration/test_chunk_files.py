"""No chunk file (`sluice-load-*.tsv`: rows of user data on their way to LOAD DATA LOCAL) outlives
its loader, even one killed with SIGKILL: the next loader clears the folders of dead processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.loader import chunk_files
from tests.loader_limits import commands_body

pytestmark = pytest.mark.mariadb

ROOT = Path(__file__).resolve().parent.parent.parent
KILLED_WHILE_SENDING = """
import os, signal, sys
from contextlib import contextmanager
from chalicelib.db import local_files

@contextmanager
def sending(connection, name):
    os.kill(os.getpid(), signal.SIGKILL)  # the chunk file is written and about to be sent
    yield

local_files.sending = sending
from chalicelib.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(mysql_url: str, tmp: Path, *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": mysql_url, "TMPDIR": str(tmp), "SLUICE_LOG": "0", "PYTHONPATH": str(ROOT)}
    env["LOCAL_DATA_DIR"] = str(tmp / "data")
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "chalicelib.cli", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def chunk_files_under(tmp: Path) -> list[Path]:
    return sorted(tmp.rglob("sluice-load-*.tsv"))


def test_a_loader_killed_mid_load_leaves_its_chunk_files_to_the_next_one_which_clears_them(
    mysql_url: str, tmp_path: Path
) -> None:
    # GIVEN an object big enough for the fast path (LOAD DATA from chunk files)
    path = tmp_path / "writes" / "2027" / "01" / "15" / "08" / "big"
    path.parent.mkdir(parents=True)
    path.write_bytes(commands_body(1000))
    assert cli(mysql_url, tmp_path, "migrate").returncode == 0
    # WHEN its loader is killed while a chunk file waits to be sent
    assert cli(mysql_url, tmp_path, "load", str(path), script=KILLED_WHILE_SENDING).returncode == -9
    left = chunk_files_under(tmp_path)
    assert left, "the killed loader left its chunk file"
    assert all(oct(p.parent.parent.stat().st_mode & 0o777) == "0o700" for p in left)  # in a private folder
    # THEN the next loader clears it at start, and leaves none of its own
    done = cli(mysql_url, tmp_path, "load", str(path))
    assert (done.returncode, done.stdout.strip()) == (0, "applied=1000 stale=0 rejected=0 skipped=0 deferred=0"), (
        done.stderr
    )
    assert chunk_files_under(tmp_path) == []
    assert not left[0].parent.exists()  # the dead loader's folder is gone


def test_the_folder_of_a_live_loader_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(chunk_files, "_folder", None)
    mine = chunk_files.folder()
    (Path(mine) / "sluice-load-x.tsv").write_text("row\n")
    dead = Path(chunk_files.base()) / "12345-dead"
    dead.mkdir()
    (dead / chunk_files.LOCK_NAME).write_text("")
    (dead / "sluice-load-y.tsv").write_text("row\n")
    assert chunk_files.clear_dead(chunk_files.base()) == [str(dead)]
    assert (Path(mine) / "sluice-load-x.tsv").exists() and not dead.exists()
