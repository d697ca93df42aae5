"""Loading under an address-space limit (RLIMIT_AS): memory does not grow with blank lines,
rejected lines or commands repeated on the same keys. Shared by the SQLite (functional) and
MariaDB (integration) tiers.

Each object is loaded by `python -m chalicelib.cli load` in a child process whose address space
is capped at what loading a one-line object takes plus HEADROOM. Before the loader streamed,
these objects took from 220 MB (600,000 rejects) to 550 MB (64 MiB of newlines) over that.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

from chalicelib.commands import make_command

ROOT = Path(__file__).resolve().parent.parent
HEADROOM = 128 * 1024 * 1024
# Runs the CLI with the limit set, then reports the process's peak address space on stderr.
RUNNER = """
import resource, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from chalicelib.cli import main
code = main(sys.argv[2:])
peak = [line for line in open("/proc/self/status") if line.startswith("VmPeak")][0].split()[1]
print(f"peak_kb={peak}", file=sys.stderr)
sys.exit(code)
"""
IDS = [f"0190b2a0-0000-7000-8000-{i:012d}" for i in range(10)]


def newline_bomb(folder: Path) -> Path:
    """64 MiB of newlines: 64 KiB packed."""
    return _write(folder / "newlines.gz", gzip.compress(b"\n" * (64 << 20), 9))


def reject_bomb(folder: Path) -> Path:
    """600,000 lines that are not commands: 7 KiB packed."""
    return _write(folder / "rejects.gz", gzip.compress(b'{"v":2}\n' * 600_000, 9))


def repeated_keys(folder: Path, lines: int = 200_000) -> Path:
    """`lines` commands over 10 keys (2.6 MiB packed): the newest of each key wins."""
    body = b"".join(
        make_command(
            "put",
            "todos",
            "alice",
            IDS[n % 10],
            1_800_000_000_000_000 + n,
            f"0190b2a0-0000-7000-8000-{n:012d}",
            {
                "title": f"t{n}",
                "notes": "n" * 200,
                "state": "open",
                "tags": ["a"],
                "due_at": None,
                "priority": 3,
                "list_id": None,
            },
        ).to_line()
        for n in range(lines)
    )
    return _write(folder / "repeats.gz", gzip.compress(body, 6))


def tiny(folder: Path) -> Path:
    command = make_command("put", "todos", "alice", IDS[0], 1, IDS[1], {"title": "t"})
    return _write(folder / "tiny", command.to_line())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def cli_load(database_url: str, path: Path, limit: int, tmp: Path) -> tuple[int, str, int]:
    """(exit status, standard output, peak address space in bytes) of `cli load path`."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOCAL_DATA_DIR": str(tmp / "data"),
        "SLUICE_LOG": "0",
        "MALLOC_ARENA_MAX": "1",  # one malloc arena: a thread's own arena reserves 64 MiB of address space
        "TMPDIR": str(tmp),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(limit), "load", str(path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    peak = [line for line in done.stderr.splitlines() if line.startswith("peak_kb=")]
    return done.returncode, done.stdout.strip() + "\n" + done.stderr.strip(), int(peak[0][8:]) * 1024 if peak else 0


def limit_for(database_url: str, tmp: Path) -> int:
    """What loading a one-line object takes (the interpreter, the imports), plus HEADROOM."""
    status, output, peak = cli_load(database_url, tiny(tmp), 0, tmp)
    assert status == 0 and peak, output
    return peak + HEADROOM


def assert_loads_within(database_url: str, tmp: Path) -> None:
    limit = limit_for(database_url, tmp)
    expected = {
        newline_bomb(tmp): "applied=0 stale=0 rejected=0 skipped=0 deferred=0",
        reject_bomb(tmp): "applied=0 stale=0 rejected=600000 skipped=0 deferred=0",
        repeated_keys(tmp): "applied=10 stale=199990 rejected=0 skipped=0 deferred=0",
    }
    for path, line in expected.items():
        status, output, _ = cli_load(database_url, path, limit, tmp)
        assert (status, output.splitlines()[0]) == (0, line), f"{path.name}: {output[-2000:]}"
