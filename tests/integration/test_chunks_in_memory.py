"""The fast path's chunks (rows of user data on their way to LOAD DATA LOCAL) go from memory:
no file is written for them, so none can be left on disk by a loader killed mid-load."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from chalicelib.db import local_files
from chalicelib.db.database import open_master
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.loader.mysql_fast import MySQLFastApplier
from tests.loader_limits import commands_body

pytestmark = pytest.mark.mariadb


def files_under(folder: Path) -> list[str]:
    return sorted(str(Path(root, name)) for root, _, names in os.walk(folder) for name in names)


def test_a_fast_load_sends_its_chunks_from_memory_and_writes_no_file(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a temporary folder of its own, and an object big enough for several chunks
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sends: list[tuple[int, list[str]]] = []
    real = local_files.send_bytes

    def watched(conn: Any, data: bytes, size: int = local_files.PACKET_BYTES) -> None:
        sends.append((data.count(b"\n"), files_under(tmp_path)))  # what is on disk while it is sent
        real(conn, data, size)

    monkeypatch.setattr(local_files, "send_bytes", watched)
    db = open_master(mysql_url)
    try:
        db.migrate()
        body = commands_body(1000)
        loader = BatchLoader(db, applier=MySQLFastApplier(db, min_rows=10, chunk_lines=200, threaded=True))
        # WHEN it is loaded on the fast path
        result = loader.load("bench", "chunks-in-memory", local_etag(body), body)
        # THEN every row went in, chunk by chunk, from memory, with no file on disk meanwhile or after
        assert (result.applied, result.stale, result.rejected) == (1000, 0, 0)
        assert len(sends) > 1 and sum(rows for rows, _ in sends) == 1000
        assert all(on_disk == [] for _, on_disk in sends), sends
        assert files_under(tmp_path) == []
        assert db.query("SELECT COUNT(*) FROM todos WHERE owner = %s", ("alice",)) == [(1000,)]
    finally:
        db.discard()
