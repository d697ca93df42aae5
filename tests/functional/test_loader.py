"""The loader of CONTRACT section 5 on the embedded SQLite database."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.db.database import open_database
from chalicelib.loader import BatchLoader, batch_id, ledger_key, local_etag
from tests.factories import make

A = "0190b2a0-0000-7000-8000-00000000000a"
B = "0190b2a0-0000-7000-8000-00000000000b"
OPS = sorted(str(uuid.uuid4()) for _ in range(4))


def put(version: int, title: str = "t", todo_id: str = A, owner: str = "alice", op_id: str = OPS[0]) -> bytes:
    data = make("todos", title=title, notes="", state="open", tags=[])
    return make_command("put", "todos", owner, todo_id, version, op_id, data).to_line()


def delete(version: int, todo_id: str = A, owner: str = "alice", op_id: str = OPS[0]) -> bytes:
    return make_command("delete", "todos", owner, todo_id, version, op_id, None).to_line()


def profile(version: int, name: str, owner: str = "alice") -> bytes:
    data = {"display_name": name, "locale": "en", "timezone": "UTC"}
    return make_command("put", "profiles", owner, owner, version, OPS[0], data).to_line()


V1, V2, V3 = 1_800_000_000_000_001, 1_800_000_000_000_002, 1_800_000_000_000_003


@pytest.fixture
def loader(tmp_path) -> BatchLoader:  # type: ignore[no-untyped-def]
    return BatchLoader(open_database(f"sqlite:///{tmp_path}/db.sqlite3"))


def load(loader: BatchLoader, body: bytes, key: str | None = None, force: bool = False) -> Any:
    key = key or f"writes/2027/01/15/08/obj-{uuid.uuid4()}"
    return loader.load("bucket", key, local_etag(body), body, force=force)


def row(loader: BatchLoader, todo_id: str = A, owner: str = "alice") -> Any:
    rows = loader.db.query(
        "SELECT title, version, op_id, deleted, created_at, updated_at FROM todos WHERE owner = %s AND id = %s",
        (owner, todo_id),
    )
    return rows[0] if rows else None


def test_counts_and_rows(loader):
    result = load(loader, put(V1) + put(V1, todo_id=B))
    assert (result.applied, result.stale, result.rejected, result.skipped) == (2, 0, 0, 0)
    assert row(loader)[0] == "t" and row(loader, B)[1] == V1


def test_newer_wins_whatever_the_order_of_objects(loader):
    load(loader, put(V2, "new"))
    result = load(loader, put(V1, "old"))
    assert (result.applied, result.stale) == (0, 1)
    assert row(loader)[:2] == ("new", V2)


def test_newer_wins_inside_one_object_and_losers_count_as_stale(loader):
    result = load(loader, put(V2, "new") + put(V1, "old") + put(V3, "newest") + put(V1, "old"))
    assert (result.applied, result.stale) == (1, 3)
    assert row(loader)[:2] == ("newest", V3)


def test_equal_versions_are_ordered_by_op_id(loader):
    low, high = OPS[0], OPS[3]
    load(loader, put(V1, "high", op_id=high))
    load(loader, put(V1, "low", op_id=low))
    assert row(loader)[0] == "high"
    other = BatchLoader(open_database(f"sqlite:///{loader.db.url.path}.2"))
    load(other, put(V1, "low", op_id=low))
    load(other, put(V1, "high", op_id=high))
    assert row(other)[0] == "high"


def test_tombstone_stops_an_older_put_and_a_newer_put_revives(loader):
    load(loader, put(V1, "first"))
    load(loader, delete(V2))
    assert row(loader)[3] == 1 and row(loader)[1] == V2
    assert load(loader, put(V1, "late")).stale == 1
    assert row(loader)[3] == 1
    assert load(loader, put(V3, "back")).applied == 1
    assert row(loader)[:2] == ("back", V3) and row(loader)[3] == 0


def test_delete_arriving_before_its_put_wins(loader):
    load(loader, delete(V2))
    load(loader, put(V1, "older"))
    assert row(loader)[3] == 1


def test_tombstones_clear_the_data(loader):
    load(loader, put(V1, "secret"))
    load(loader, delete(V2))
    assert row(loader)[0] == ""


def test_repeated_object_is_skipped_by_the_ledger(loader):
    body = put(V1)
    key = "writes/2027/01/15/08/same"
    assert load(loader, body, key).applied == 1
    again = load(loader, body, key)
    assert (again.applied, again.stale, again.rejected, again.skipped) == (0, 0, 0, 1)


def test_force_applies_again_but_changes_nothing_newer(loader):
    old = put(V1, "old")
    load(loader, old, "writes/k1")
    load(loader, put(V2, "new"), "writes/k2")
    forced = load(loader, old, "writes/k1", force=True)
    assert (forced.applied, forced.stale, forced.skipped) == (0, 1, 0)
    assert row(loader)[0] == "new"
    loads = loader.db.query("SELECT loads FROM ingest_batches WHERE object_key = %s", ("writes/k1",))
    assert loads == [(2,)]


def test_ledger_is_keyed_from_writes_on_with_etag_and_records_the_bucket(loader):
    body = put(V1)
    loader.load("b1", "prefix/above/writes/2027/01/15/08/x", "abc", body)
    again = loader.load("b2", "other/writes/2027/01/15/08/x", '"abc"', body)
    assert again.skipped == 1
    assert ledger_key("a/writes/x") == "writes/x"
    assert batch_id("writes/x", '"e"') == batch_id("q/writes/x", "e")
    rows = loader.db.query("SELECT bucket, object_key, etag, applied FROM ingest_batches")
    assert rows == [("b1", "writes/2027/01/15/08/x", "abc", 1)]
    different_etag = loader.load("b1", "writes/2027/01/15/08/x", "def", body)
    assert different_etag.skipped == 0


def test_bad_lines_are_quarantined_and_the_rest_applied(loader):
    body = put(V1) + b"garbage\n" + b'{"v":1}\n' + put(V1, todo_id=B)
    result = load(loader, body, "writes/2027/01/15/08/bad")
    assert (result.applied, result.rejected) == (2, 2)
    rejects = loader.db.query("SELECT object_key, line_no, reason, line FROM ingest_rejects ORDER BY line_no")
    assert [(r[0], r[1]) for r in rejects] == [("writes/2027/01/15/08/bad", 2), ("writes/2027/01/15/08/bad", 3)]
    assert rejects[0][3] == "garbage" and rejects[1][2]
    forced = load(loader, body, "writes/2027/01/15/08/bad", force=True)
    assert forced.rejected == 2
    assert len(loader.db.query("SELECT 1 FROM ingest_rejects")) == 2  # not duplicated by the replay


def test_gzip_and_concatenated_objects(loader):
    body = gzip.compress(put(V1).rstrip(b"\n") + put(V1, todo_id=B).rstrip(b"\n"))
    assert load(loader, body).applied == 2


def test_created_at_is_the_earliest_at_whatever_the_order(loader):
    load(loader, put(V3, "c"))
    load(loader, put(V1, "a"))  # stale, but earlier
    created, updated = row(loader)[4], row(loader)[5]
    assert (created, updated) == ("2027-01-15 08:00:00.000001", "2027-01-15 08:00:00.000003")
    other = BatchLoader(open_database(f"sqlite:///{loader.db.url.path}.2"))
    load(other, put(V1, "a"))
    load(other, put(V3, "c"))
    assert row(other)[4:] == row(loader)[4:]


def test_profiles_follow_the_same_rules(loader):
    load(loader, profile(V2, "New"))
    assert load(loader, profile(V1, "Old")).stale == 1
    rows = loader.db.query("SELECT display_name, version FROM profiles WHERE owner = %s", ("alice",))
    assert rows == [("New", V2)]


def test_owners_are_isolated(loader):
    load(loader, put(V1, "alice's") + put(V2, "bob's", owner="bob"))
    assert row(loader)[0] == "alice's" and row(loader, owner="bob")[0] == "bob's"


def test_database_failure_applies_nothing_of_the_object(loader, monkeypatch):
    from chalicelib.errors import DatabaseUnavailable

    applier = loader.applier

    class Boom:
        def apply(self, cur, commands, changes=None):  # type: ignore[no-untyped-def]
            applier.apply(cur, commands, changes)  # the rows are written in the transaction...
            import sqlite3

            raise sqlite3.OperationalError("disk I/O error")  # ...then the server fails

    loader.applier = Boom()  # type: ignore[assignment]
    body = put(V1) + put(V1, todo_id=B)
    with pytest.raises(DatabaseUnavailable):
        load(loader, body, "writes/x")
    loader.applier = applier
    assert row(loader) is None and loader.db.query("SELECT COUNT(*) FROM ingest_batches") == [(0,)]
    assert load(loader, body, "writes/x").applied == 2


def test_large_object_in_chunks(loader):
    ids = [str(uuid.uuid4()) for _ in range(1700)]
    body = b"".join(put(V1, f"t{i}", todo_id=i_d) for i, i_d in enumerate(ids))
    assert load(loader, body).applied == 1700
    newer = b"".join(put(V2 if i % 2 else V1, f"u{i}", todo_id=i_d) for i, i_d in enumerate(ids))
    result = load(loader, newer)
    assert (result.applied, result.stale) == (850, 850)


def test_reject_text_is_stored_even_if_not_utf8(loader):
    result = load(loader, b"\xff\xfe garbage \x00\n" + put(V1))
    assert (result.applied, result.rejected) == (1, 1)
    stored = loader.db.query("SELECT line FROM ingest_rejects")[0][0]
    assert "garbage" in stored


def test_objects_with_nothing_but_noise(loader):
    result = load(loader, b"\n\n   \n")
    assert (result.applied, result.rejected) == (0, 0)
    assert load(loader, json.dumps([1, 2]).encode()).rejected == 1
