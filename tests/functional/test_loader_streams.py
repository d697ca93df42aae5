"""Objects are read from S3 and from files as streams, never whole (CONTRACT section 5)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import pytest

from chalicelib.db.database import open_database
from chalicelib.errors import ObjectUnavailable
from chalicelib.loader import BatchLoader
from chalicelib.loader.events import S3Record, load_record
from chalicelib.loader.sources import READ_BYTES, S3ObjectStore
from tests.loader_limits import commands_body

KEY = "writes/2027/01/15/08/streamed"


class Body:
    """A GetObject body that records how it is read, and can break part-way."""

    def __init__(self, data: bytes, break_after: int | None = None) -> None:
        self.data = io.BytesIO(data)
        self.sizes: list[int | None] = []
        self.break_after = break_after

    def read(self, size: int | None = None) -> bytes:
        self.sizes.append(size)
        if self.break_after is not None and len(self.sizes) > self.break_after:
            raise OSError("connection reset by peer")
        return self.data.read(size)

    def close(self) -> None:
        pass


class Client:
    def __init__(self, body: Body) -> None:
        self.body = body
        self.calls: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"Body": self.body, "ETag": '"0123abcd"'}


@pytest.mark.parametrize("gzipped", [False, True])
def test_an_s3_object_is_read_in_pieces_while_it_loads(tmp_path: Path, gzipped: bool) -> None:
    raw = commands_body(12000)  # 3.5 MB
    body = Body(gzip.compress(raw, 1) if gzipped else raw)
    client = Client(body)
    loader = BatchLoader(open_database(f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    result = load_record(S3Record("bucket", KEY, None, None), S3ObjectStore(client, "bucket"), loader)
    assert result is not None and result.applied == 12000
    assert len(client.calls) == 1
    assert None not in body.sizes and max(s for s in body.sizes if s is not None) <= READ_BYTES
    assert len(body.sizes) >= 2


def test_a_body_cut_short_is_unavailable_and_does_not_count_against_the_object(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    client = Client(Body(commands_body(12000), break_after=1))
    with pytest.raises(ObjectUnavailable):
        load_record(S3Record("bucket", KEY, None, None), S3ObjectStore(client, "bucket"), BatchLoader(db))
    assert db.query("SELECT COUNT(*) FROM todos") == [(0,)]
    assert db.query("SELECT attempts FROM ingest_attempts") == [(0,)]  # S3 failed, not the object
