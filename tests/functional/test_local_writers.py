"""The local transports land a request whole or not at all, as Firehose does with one record:
`LocalWriter` makes one object per request, and `BatchingWriter` cuts its spool back when a write
fails part-way, so a batch answered 503 leaves none of its lines behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, auth, body


def objects_under(root: Path) -> list[Path]:
    return sorted(p for p in (root / "writes").rglob("*") if p.is_file() and not p.name.startswith("."))


def test_a_batch_is_one_local_object_loaded_in_one_transaction(client: Any, services: Any, local_dir: Path) -> None:
    # WHEN a batch of four is accepted on the local transport
    answer = client.http.post(
        "/todos/batch", headers=auth(), body=body({"todos": [{"title": f"t{i}"} for i in range(4)]})
    )
    assert answer.status_code == 202, answer.body
    ids = [a["id"] for a in answer.json_body["accepted"]]

    # THEN one object holds the four lines, in order, and one ledger entry applied them
    (only,) = objects_under(local_dir)
    assert [json.loads(line)["id"] for line in only.read_bytes().splitlines()] == ids
    assert services.master.query("SELECT COUNT(*), SUM(applied) FROM ingest_batches") == [(1, 4)]


# Run in a child process: RLIMIT_FSIZE applies to the whole process.
PARTIAL_WRITE = r"""
import json, os, resource, signal, sys, uuid
from chalicelib.commands import make_command
from chalicelib.errors import TransportUnavailable
from bench.batching import BatchingWriter

def batch(tag, n=3):
    return [make_command("put", "todos", "alice", str(uuid.uuid4()), 1_700_000_000_000_000 + i, str(uuid.uuid4()),
                         {"title": f"{tag}{i}", "notes": "n" * 200, "state": "open", "tags": [], "due_at": None, "priority": 3, "list_id": None})
            for i in range(n)]

def refused_with_room_for(room, commands):
    # write on a disk that takes only `room` bytes more: part of the first line gets out
    spool = os.path.join(root, "spool")
    size = sum(os.path.getsize(os.path.join(spool, n)) for n in os.listdir(spool))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + room, hard))
    try:
        writer.write(commands)
    except TransportUnavailable:
        return True
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return False

root = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
writer = BatchingWriter(root, load=None, max_bytes=10**9, max_interval=3600)
refused = [refused_with_room_for(100, batch("z"))]  # the write that opens the spool
if sys.argv[2:] == ["only"]:
    writer.close()
    print(json.dumps({"refused": refused, "left": os.listdir(os.path.join(root, "spool"))}))
    sys.exit(0)
first = batch("a")
writer.write(first)
refused.append(refused_with_room_for(100, batch("b")))  # a write into a spool holding "a"
third = batch("c")
writer.write(third)
writer.close()
left = os.listdir(os.path.join(root, "spool"))
print(json.dumps({"refused": refused, "first": [c.id for c in first], "third": [c.id for c in third], "left": left}))
"""


def test_a_batching_write_that_fails_part_way_leaves_none_of_its_lines(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PARTIAL_WRITE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    # THEN the write that failed was refused (a 503), and the sealed object holds exactly the
    # batches that were accepted: no line, whole or cut, of the refused one
    assert result["refused"] == [True, True] and result["left"] == []
    (only,) = objects_under(tmp_path)
    lines = only.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line)["id"] for line in lines[:-1]] == result["first"] + result["third"]


def test_a_refused_first_write_leaves_no_spool_and_makes_no_object(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PARTIAL_WRITE, str(tmp_path), "only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"refused": [True], "left": []}
    assert objects_under(tmp_path) == []  # not even an empty one
