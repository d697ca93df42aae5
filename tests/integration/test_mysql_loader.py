"""The loader of CONTRACT section 5 on MariaDB, through every way it writes there.

Each behaviour runs on the three write paths of `MySQLFastApplier` (chalicelib/loader/
mysql_fast.py), forced with tiny chunks so that a handful of lines already spans several chunks
and the worker thread:
- `fresh`: LOAD DATA ... IGNORE straight into `todos` (the probe found none of the keys);
- `keys`: the narrow key table, the locking decision and LOAD DATA ... REPLACE;
- `upsert`: the server refuses LOAD DATA LOCAL (the connection is opened without the local-infile
  capability, error 4166), so the object falls back to the multi-row guarded upsert.
Also the plain small-object path (`small`: below `min_rows`, the guarded upsert by design).
Counts (applied/stale/rejected/skipped) are asserted exactly, and every column of the rows.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.database import Database, open_master
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader import BatchLoader, LoadResult, fast_session, fast_worker, local_etag
from chalicelib.loader.mysql_fast import MySQLFastApplier
from chalicelib.rows import table
from tests.factories import make
from tests.loader_properties import Delivery, assert_split_invariance, deliveries, histories, truncate

pytestmark = pytest.mark.mariadb

A, B, C, D = (f"0190b2a0-0000-7000-8000-00000000000{x}" for x in "abcd")
V1, V2, V3, V4 = (1_800_000_000_000_000 + i for i in (1, 2, 3, 4))
OPS = sorted(str(uuid.uuid4()) for _ in range(4))
PATHS = ("fresh", "keys", "upsert", "small")
DATA_COLUMNS = table("todos").columns[2:]  # the todos row but its key, from the declaration
TODO_COLUMNS = ", ".join(DATA_COLUMNS)


def applier_for_path(db: Database, path: str) -> MySQLFastApplier:
    if path == "small":
        return MySQLFastApplier(db)  # default min_rows: these objects are below it
    return MySQLFastApplier(db, min_rows=1, chunk_lines=2, threaded=True, prefers_keys=path == "keys")


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(mysql_url: str, path: str) -> Iterator[Database]:
    database = open_master(mysql_url, local_infile=path != "upsert")
    database.migrate()
    yield database
    database.discard()


@pytest.fixture
def loader(db: Database, path: str) -> BatchLoader:
    return BatchLoader(db, applier_for_path(db, path))


def put(
    version: int, title: str = "t", todo_id: str = A, owner: str = "alice", op_id: str = OPS[0], **data: Any
) -> WriteCommand:
    return make_command("put", "todos", owner, todo_id, version, op_id, make("todos", title=title, **data))


def delete(version: int, todo_id: str = A, owner: str = "alice", op_id: str = OPS[0]) -> WriteCommand:
    return make_command("delete", "todos", owner, todo_id, version, op_id, None)


def body_of(*commands: WriteCommand, junk: tuple[bytes, ...] = (), gzipped: bool = False) -> bytes:
    raw = b"".join(c.to_line() for c in commands) + b"".join(line + b"\n" for line in junk)
    return gzip.compress(raw) if gzipped else raw


def load(loader: BatchLoader, body: bytes, key: str | None = None, force: bool = False) -> LoadResult:
    key = key or f"writes/2027/01/15/08/obj-{uuid.uuid4()}"
    return loader.load("bucket", key, local_etag(body), body, force=force)


def counts(result: LoadResult) -> tuple[int, int, int, int]:
    return result.applied, result.stale, result.rejected, result.skipped


def row(db: Database, todo_id: str = A, owner: str = "alice") -> tuple[Any, ...] | None:
    rows = db.query(f"SELECT {TODO_COLUMNS} FROM todos WHERE owner = %s AND id = %s", (owner, todo_id))
    return tuple(rows[0]) if rows else None


def stored(db: Database, command: WriteCommand, created_at: str | None = None) -> tuple[Any, ...]:
    """The row `command` should leave, in the form `row` reads it back (the table's generated
    row writer, timestamps as MariaDB returns them)."""
    from datetime import datetime

    written = table("todos").row(command, created_at or command.stored_at)[2:]
    return (*written[:-2], datetime.fromisoformat(written[-2]), datetime.fromisoformat(written[-1]))


# -- last writer wins -------------------------------------------------------------------------------
def test_the_greatest_version_wins_in_any_order_and_duplicates_count_as_stale(loader, db):
    commands = [put(V2, "two"), put(V1, "one"), put(V3, "three"), put(V2, "two"), put(V1, "one", todo_id=B)]
    first = load(loader, body_of(*commands))
    assert counts(first) == (2, 3, 0, 0)  # keys A and B applied; the other three lines lost to V3
    assert row(db) == stored(db, put(V3, "three"), created_at=put(V1).stored_at)
    # a later object with older and equal commands changes nothing
    again = load(loader, body_of(put(V2, "late"), put(V3, "three"), put(V1, "one", todo_id=B)))
    assert counts(again) == (0, 3, 0, 0)
    assert row(db) == stored(db, put(V3, "three"), created_at=put(V1).stored_at)


def test_equal_versions_are_ordered_by_op_id(loader, db):
    low, high = OPS[0], OPS[3]
    assert counts(load(loader, body_of(put(V1, "high", op_id=high), put(V1, "low", op_id=low)))) == (1, 1, 0, 0)
    assert row(db)[0] == "high"
    assert counts(load(loader, body_of(put(V1, "low again", op_id=low)))) == (0, 1, 0, 0)
    assert row(db)[0] == "high"


def test_a_key_seen_again_in_a_later_chunk_ends_with_its_winner_counted_once(loader, db):
    # chunk_lines=2: A's first command is in the first chunk, its winner and its earliest `at` later
    commands = [put(V2, "a2"), put(V1, "b1", todo_id=B), put(V2, "c2", todo_id=C), put(V4, "a4"), put(V1, "a1")]
    assert counts(load(loader, body_of(*commands))) == (3, 2, 0, 0)
    assert row(db) == stored(db, put(V4, "a4"), created_at=put(V1).stored_at)


def test_a_later_chunk_can_beat_a_row_that_was_stale_when_first_seen(loader, db):
    load(loader, body_of(put(V3, "stored")))
    # A is stale in the first chunk (V2 < V3) and wins in the third (V4); B is new
    commands = [
        put(V2, "a2"),
        put(V1, "b1", todo_id=B),
        put(V1, "c1", todo_id=C),
        put(V1, "d1", todo_id=D),
        put(V4, "a4"),
    ]
    assert counts(load(loader, body_of(*commands))) == (4, 1, 0, 0)
    assert row(db) == stored(db, put(V4, "a4"), created_at=put(V2).stored_at)


def test_each_path_really_writes_the_way_it_is_named(loader, path):
    load(loader, body_of(put(V1), put(V1, todo_id=B), put(V1, todo_id=C)))
    load(loader, body_of(put(V2), put(V2, todo_id=D)))
    expected = {
        "fresh": {"fresh": 1, "keys": 1},  # the second object finds A stored
        "keys": {"keys": 2},
        "upsert": {"fresh": 1, "refused": 1, "upsert": 1},  # tried, refused (4166), then remembered
        "small": {"small": 2},
    }[path]
    paths = dict(loader.applier.paths)
    # The refusal may come after the object let its commands go (then it is read again, counted
    # once by how it began): a race between the worker thread and the last chunk.
    assert paths.pop("started over", 0) <= (1 if path == "upsert" else 0)
    assert paths == expected


def test_owners_are_separate_keys(loader, db):
    assert counts(load(loader, body_of(put(V1, "alice's"), put(V1, "bob's", owner="bob")))) == (2, 0, 0, 0)
    assert row(db)[0] == "alice's" and row(db, owner="bob")[0] == "bob's"


# -- tombstones -------------------------------------------------------------------------------------
def test_a_delete_leaves_a_tombstone_that_older_puts_do_not_revive_but_newer_ones_do(loader, db):
    assert counts(load(loader, body_of(put(V1, "x"), delete(V2)))) == (1, 1, 0, 0)
    assert row(db) == stored(db, delete(V2), created_at=put(V1).stored_at)
    assert counts(load(loader, body_of(put(V1, "zombie"), put(V1, "zombie", todo_id=B)))) == (1, 1, 0, 0)
    assert row(db)[DATA_COLUMNS.index("deleted")] == 1
    assert counts(load(loader, body_of(put(V3, "back")))) == (1, 0, 0, 0)
    assert row(db) == stored(db, put(V3, "back"), created_at=put(V1).stored_at)


def test_a_delete_arriving_first_still_wins_over_older_puts(loader, db):
    assert counts(load(loader, body_of(delete(V3), put(V2, "b", todo_id=B)))) == (2, 0, 0, 0)
    assert counts(load(loader, body_of(put(V1, "old"), put(V2, "older")))) == (0, 2, 0, 0)
    assert row(db) == stored(db, delete(V3), created_at=put(V1).stored_at)


# -- created_at --------------------------------------------------------------------------------------
def test_created_at_is_the_earliest_at_seen_whatever_the_arrival_order(loader, db):
    load(loader, body_of(put(V3, "newest"), put(V2, "b", todo_id=B)))
    stale = load(loader, body_of(put(V1, "oldest")))  # stale, but it is the earliest `at` of A
    assert counts(stale) == (0, 1, 0, 0)
    assert row(db) == stored(db, put(V3, "newest"), created_at=put(V1).stored_at)
    newer = load(loader, body_of(put(V4, "four")))  # newer, later `at`: created_at stays
    assert counts(newer) == (1, 0, 0, 0)
    assert row(db) == stored(db, put(V4, "four"), created_at=put(V1).stored_at)


# -- ledger -------------------------------------------------------------------------------------------
def test_an_object_in_the_ledger_is_skipped_and_force_replays_it_without_changing_newer_rows(loader, db):
    body = body_of(put(V1, "one"), put(V1, "b", todo_id=B), gzipped=True)
    key = "prefix/writes/2027/01/15/08/obj"
    assert counts(load(loader, body, key)) == (2, 0, 0, 0)
    assert counts(load(loader, body, key)) == (0, 0, 0, 1)
    load(loader, body_of(put(V2, "two")))
    assert counts(load(loader, body, key, force=True)) == (0, 2, 0, 0)
    assert row(db)[0] == "two"
    ledger = db.query(
        "SELECT object_key, applied, stale, loads FROM ingest_batches WHERE object_key LIKE %s", ("%obj",)
    )
    assert ledger == [("writes/2027/01/15/08/obj", 0, 2, 2)]


# -- rejects ------------------------------------------------------------------------------------------
def test_bad_lines_are_quarantined_with_their_line_numbers_and_never_stop_the_rest(loader, db):
    junk = (b"not json", b'{"v": 2}', b"\xff\xfe broken")
    body = body_of(put(V1, "ok"), put(V1, "b", todo_id=B), junk=junk)
    key = "writes/2027/01/15/08/junk"
    assert counts(load(loader, body, key)) == (2, 0, 3, 0)
    rejects = db.query("SELECT object_key, line_no, reason FROM ingest_rejects ORDER BY line_no")
    assert [(k, n) for k, n, _ in rejects] == [(key, 3), (key, 4), (key, 5)]
    assert "not UTF-8" in rejects[2][2]
    assert counts(load(loader, body, key, force=True)) == (0, 2, 3, 0)
    assert len(db.query("SELECT 1 FROM ingest_rejects")) == 3  # not duplicated by the replay


@pytest.mark.parametrize("path", ["fresh", "keys", "upsert"])
def test_a_big_object_read_piece_by_piece_keeps_every_line_number(db, path):
    """Lines across the inflated pieces (LineStream) and the growing chunks: bad ones quarantined
    with their numbers in the whole object, escaped ones (not the line lane) written exactly."""
    applier = MySQLFastApplier(db, min_rows=1, chunk_lines=64, threaded=True, prefers_keys=path == "keys")
    loader = BatchLoader(db, applier)
    notes = "n" * 300  # ~3,000 lines of ~440 bytes: several 256 KiB pieces
    lines = [put(V1, f"t{i}", todo_id=str(uuid.UUID(int=i)), notes=notes).to_line() for i in range(3000)]
    bad = {1: b"not json", 700: b'{"v": 2}', 1501: b"\xff broken", 2999: b"{}"}
    escaped = {5: "tab\there", 1500: "back\\slash", 2998: "new\nline"}
    for number, junk in bad.items():
        lines[number - 1] = junk + b"\n"
    for number, title in escaped.items():
        lines[number - 1] = put(V1, title, todo_id=str(uuid.UUID(int=number - 1))).to_line()
    key = "writes/2027/01/15/08/big"
    result = load(loader, gzip.compress(b"".join(lines)), key)
    assert counts(result) == (3000 - len(bad), 0, len(bad), 0)
    assert [n for (n,) in db.query("SELECT line_no FROM ingest_rejects ORDER BY line_no")] == sorted(bad)
    for number, title in escaped.items():
        assert row(db, str(uuid.UUID(int=number - 1)))[0] == title
    assert row(db, str(uuid.UUID(int=1234))) == stored(
        db, put(V1, "t1234", todo_id=str(uuid.UUID(int=1234)), notes=notes)
    )
    assert applier.paths[path if path != "upsert" else "refused"] == 1


def test_text_with_tabs_newlines_backslashes_and_unicode_survives_the_tab_separated_files(loader, db):
    tricky = "tab\there\nnew line \\N back\\slash \\t NUL\x00 café 💧 \r end"
    commands = [put(V1, tricky, notes=tricky, owner="o\\wner"), put(V1, "b", todo_id=B, tags=["a", "b-c"])]
    commands.append(put(V1, "due", todo_id=C, due_at="2030-01-01T09:00:00Z"))
    result = load(loader, body_of(*commands))
    assert counts(result) == (3, 0, 0, 0)
    assert row(db, owner="o\\wner") == stored(db, commands[0])
    assert row(db, B) == stored(db, commands[1])
    assert row(db, C) == stored(db, commands[2])


# -- all of it at once, on every path ---------------------------------------------------------------
@st.composite
def cases(draw: st.DrawFn) -> tuple[list, Delivery]:  # type: ignore[type-arg]
    history = draw(histories(max_commands=16))
    return history, draw(deliveries(history))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_any_split_order_and_duplication_gives_the_rows_of_in_order_application_on_every_path(
    db: Database, path: str, monkeypatch: pytest.MonkeyPatch, case: tuple[list, Delivery]
) -> None:
    """tests/loader_properties.py's property, with every BatchLoader it makes on this path."""
    monkeypatch.setattr("chalicelib.loader.applier_for", lambda database: applier_for_path(database, path))
    history, delivery = case

    def fresh() -> Database:
        truncate(db)
        return db

    assert_split_invariance(fresh, history, delivery)


# -- the fast path's own machinery ---------------------------------------------------------------------
def many(n: int, version: int = V1, owner: str = "alice", title: str = "t") -> list[WriteCommand]:
    return [put(version, f"{title}{i}", todo_id=str(uuid.UUID(int=i + 1)), owner=owner) for i in range(n)]


@pytest.mark.parametrize("path", ["fresh"])
def test_keys_found_after_the_probe_redo_the_object_the_keys_way(loader, db):
    # The first chunk is all new (the probe says "fresh"); a later one holds stored keys.
    stored_rows = many(30, V1)[20:]
    load(loader, body_of(*stored_rows))
    incoming = many(30, V2, title="new")  # 20 new keys, then the 10 stored ones (all newer)
    assert counts(load(loader, body_of(*incoming))) == (30, 0, 0, 0)
    for command in incoming:
        assert row(db, command.id)[:7] == stored(db, command)[:7]
    old_created = {c.id: c.stored_at for c in stored_rows}
    for command in incoming[20:]:
        assert row(db, command.id)[8] == stored(db, command, old_created[command.id])[8]


def results_only_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk results are collected only once every chunk is handed over (Session.finish), after the
    object's parsed commands were let go: what a slow server does to the last chunks."""
    monkeypatch.setattr(fast_worker.Worker, "finished", lambda self: iter(()))


def let_go_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = fast_session.Session.let_go

    def counted(self: fast_session.Session) -> None:
        calls.append(self.fold.commands)
        real(self)

    monkeypatch.setattr(fast_session.Session, "let_go", counted)
    return calls


@pytest.mark.parametrize("path", ["fresh"])
def test_an_object_lets_its_commands_go_before_its_last_chunks_are_written(loader, db, monkeypatch):
    calls = let_go_calls(monkeypatch)
    commands = many(12) + [put(V2, "again", todo_id=str(uuid.UUID(int=1)))]  # a key seen again: a fixup
    assert counts(load(loader, body_of(*commands, junk=(b"{not json",)))) == (12, 1, 1, 0)
    assert calls == [13]
    assert loader.applier.paths == {"fresh": 1}
    assert row(db, str(uuid.UUID(int=1)))[0] == "again"
    assert db.query("SELECT COUNT(*) FROM todos") == [(12,)]


@pytest.mark.parametrize("path", ["fresh"])
def test_with_a_cache_wanting_the_winners_the_commands_stay(db, monkeypatch):
    calls = let_go_calls(monkeypatch)
    handed: list[Any] = []
    loader = BatchLoader(db, applier_for_path(db, "fresh"), on_commit=handed.append)
    assert counts(load(loader, body_of(*many(12)))) == (12, 0, 0, 0)
    assert calls == []
    assert len(handed) == 1 and len(handed[0]) == 12


@pytest.mark.parametrize("path", ["fresh"])
def test_keys_stored_met_after_the_commands_went_read_the_object_again_the_keys_way(loader, db, monkeypatch):
    stored_rows = many(30, V1)[20:]
    load(loader, body_of(*stored_rows))
    results_only_at_the_end(monkeypatch)
    calls = let_go_calls(monkeypatch)
    incoming = many(30, V2, title="new")  # 20 new keys, then the 10 stored ones (all newer)
    junk = (b"{not json", b'{"v":2}')
    result = load(loader, body_of(*incoming, junk=junk))
    assert counts(result) == (30, 0, 2, 0)  # each reject counted once although read twice
    assert calls == [30]
    assert loader.applier.paths["started over"] == 1 and loader.applier.paths["redo"] == 1
    assert loader.applier.paths["fresh"] == 2 and loader.applier.paths["keys"] == 0  # counted by how it began
    old_created = {c.id: c.stored_at for c in stored_rows}
    for command in incoming:
        assert row(db, command.id) == stored(db, command, old_created.get(command.id))
    assert db.query("SELECT COUNT(*) FROM ingest_rejects") == [(2,)]
    assert db.query("SELECT applied, stale, rejected FROM ingest_batches WHERE applied = 30") == [(30, 0, 2)]


@pytest.mark.parametrize("path", ["fresh"])
def test_a_refusal_met_after_the_commands_went_reads_the_object_again_with_the_upsert(loader, db, monkeypatch):
    from chalicelib.loader.fast_worker import LoadRefused

    results_only_at_the_end(monkeypatch)
    calls = let_go_calls(monkeypatch)
    real = fast_session.load_file
    sent = {"n": 0}

    def refusing(cur: Any, statement: str, text: str) -> int:
        sent["n"] += 1
        if sent["n"] == 3:  # a later chunk: the first two went in
            raise LoadRefused("(4166) LOAD DATA LOCAL is not allowed")
        return real(cur, statement, text)

    monkeypatch.setattr(fast_session, "load_file", refusing)
    incoming = many(12)
    assert counts(load(loader, body_of(*incoming, junk=(b"{not json",)))) == (12, 0, 1, 0)
    assert calls == [12]
    paths = loader.applier.paths
    assert (paths["fresh"], paths["refused"], paths["started over"], paths["upsert"]) == (1, 1, 1, 0)
    assert not loader.applier.fast_allowed
    for command in incoming:
        assert row(db, command.id) == stored(db, command)
    assert db.query("SELECT COUNT(*) FROM ingest_rejects") == [(1,)]
    assert db.query("SELECT COUNT(*) FROM ingest_attempts") == [(0,)]  # a success, not a failed attempt


@pytest.mark.parametrize("path", ["upsert"])
def test_a_refused_load_data_falls_back_and_is_remembered(loader, db):
    applier = loader.applier
    assert isinstance(applier, MySQLFastApplier) and applier.fast_allowed
    assert counts(load(loader, body_of(*many(7)))) == (7, 0, 0, 0)
    assert not applier.fast_allowed  # 4166 from the server: upserts for a while
    assert counts(load(loader, body_of(*many(7, V2)))) == (7, 0, 0, 0)
    assert db.query("SELECT COUNT(*), MIN(version) FROM todos") == [(7, V2)]


@pytest.mark.parametrize("path", ["fresh", "keys"])
def test_a_failure_in_the_middle_of_an_object_leaves_nothing_of_it(loader, db, monkeypatch):
    import pymysql

    real = fast_session.load_file
    calls = {"n": 0}

    def failing(cur: Any, statement: str, text: str) -> int:
        calls["n"] += 1
        if calls["n"] == 3:  # after the first chunk's rows went in
            raise pymysql.err.OperationalError(2013, "Lost connection to server during query")
        return real(cur, statement, text)

    monkeypatch.setattr(fast_session, "load_file", failing)
    body = body_of(*many(12))
    with pytest.raises(DatabaseUnavailable):
        load(loader, body, "writes/2027/01/15/08/cut")
    assert db.query("SELECT COUNT(*) FROM todos") == [(0,)]
    assert db.query("SELECT COUNT(*) FROM ingest_batches") == [(0,)]
    monkeypatch.setattr(fast_session, "load_file", real)
    assert counts(load(loader, body, "writes/2027/01/15/08/cut")) == (12, 0, 0, 0)


@pytest.mark.parametrize("path", ["fresh", "keys"])
def test_a_big_object_through_the_threaded_pipeline(db, path):
    applier = MySQLFastApplier(db, chunk_lines=500, prefers_keys=path == "keys")
    loader = BatchLoader(db, applier)
    first = many(3000)
    assert counts(load(loader, body_of(*first, gzipped=True))) == (3000, 0, 0, 0)
    # half newer, half older (stale; their `at` is earlier, so created_at moves back)
    second = [put(V2 if i % 2 else V1 - 1, f"u{i}", todo_id=c.id) for i, c in enumerate(first)]
    assert counts(load(loader, body_of(*second, gzipped=True))) == (1500, 1500, 0, 0)
    groups = db.query("SELECT version, created_at, COUNT(*) FROM todos GROUP BY version, created_at ORDER BY version")
    assert [(v, n) for v, _, n in groups] == [(V1, 1500), (V2, 1500)]
    assert row(db, first[1].id) == stored(db, second[1], created_at=put(V1).stored_at)  # newer: data moves
    assert row(db, first[0].id) == stored(db, first[0], created_at=put(V1 - 1).stored_at)  # stale: only created_at


def test_profiles_ride_along_in_the_same_transaction(loader, db):
    profile = make_command("put", "profiles", "alice", "alice", V2, OPS[0], {"display_name": "A"})
    older = make_command("put", "profiles", "alice", "alice", V1, OPS[0], {"display_name": "old"})
    result = load(loader, body_of(put(V1), profile, put(V1, todo_id=B), older))
    assert counts(result) == (3, 1, 0, 0)
    assert db.query("SELECT display_name, version FROM profiles") == [("A", V2)]


def test_the_fast_path_writes_what_the_upsert_writes(mysql_url: str) -> None:
    """Same objects, one database per path: identical tables, column for column."""
    from tests.loader_properties import snapshot

    commands = many(40) + many(40, V2, title="v2")[::3] + [delete(V3, todo_id=str(uuid.UUID(int=5)))]
    bodies = [body_of(*commands[:50]), body_of(*commands[50:]), body_of(*commands[:10])]
    snapshots = []
    for path in ("fresh", "keys", "upsert"):
        database = open_master(mysql_url, local_infile=path != "upsert")
        database.migrate()
        truncate(database)
        loader = BatchLoader(database, applier_for_path(database, path))
        results = [counts(load(loader, b, f"writes/x/{i}")) for i, b in enumerate(bodies)]
        snapshots.append((results, snapshot(database)))
        database.discard()
    assert snapshots[0] == snapshots[1] == snapshots[2]


@pytest.mark.parametrize("path", ["keys"])
def test_a_deadlock_victim_is_loaded_again_and_a_lasting_failure_is_not(loader, db, monkeypatch):
    import pymysql

    real = fast_session.load_file
    failures = {"left": 1}

    def deadlocked_once(cur: Any, statement: str, text: str) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise pymysql.err.OperationalError(
                1213, "Deadlock found when trying to get lock; try restarting transaction"
            )
        return real(cur, statement, text)

    monkeypatch.setattr(fast_session, "load_file", deadlocked_once)
    pauses: list[float] = []
    now = [0.0]

    def pause(seconds: float) -> None:  # recorded, and the loader's clock moved on by them
        pauses.append(seconds)
        now[0] += seconds

    loader.sleep, loader.clock = pause, lambda: now[0]  # type: ignore[method-assign]
    assert counts(load(loader, body_of(*many(5)), "writes/x/deadlock")) == (5, 0, 0, 0)
    assert len(pauses) == 1
    failures["left"] = 10_000
    pauses.clear()
    gate = loader.gate.close

    def closes_the_gate() -> bool:  # (taken by the loader's connection: seen from another one)
        closed = gate()
        assert db.query("SELECT IS_USED_LOCK(CONCAT('sluice_gate_', SHA1(DATABASE())))")[0][0] is not None
        return closed

    monkeypatch.setattr(loader.gate, "close", closes_the_gate)
    once, tried = loader._load_once, [0]

    def counted_try(*args: Any) -> Any:  # (a try may send more than one chunk before it fails)
        tried[0] += 1
        return once(*args)

    monkeypatch.setattr(loader, "_load_once", counted_try)
    with pytest.raises(DatabaseUnavailable):
        load(loader, body_of(*many(5, V2)), "writes/x/stuck")
    tries = tried[0]
    # a bounded number of tries: ATTEMPTS, then with the gate closed until EXCLUSIVE_SECONDS passed
    assert len(pauses) == tries - 1 and tries > BatchLoader.ATTEMPTS
    behind_the_gate = sum(pauses[BatchLoader.ATTEMPTS - 1 :])
    assert BatchLoader.EXCLUSIVE_SECONDS <= behind_the_gate < BatchLoader.EXCLUSIVE_SECONDS + 2.0
    for attempt, pause_ in enumerate(pauses, 1):  # a growing random pause between them
        most = min(BatchLoader.RETRY_PAUSE_MAX_SECONDS, BatchLoader.RETRY_PAUSE_SECONDS * 2 ** (attempt - 1))
        assert most / 2 <= pause_ <= most
    assert db.query("SELECT IS_USED_LOCK(CONCAT('sluice_gate_', SHA1(DATABASE())))") == [(None,)]  # open again
    assert db.query("SELECT COUNT(*) FROM ingest_batches") == [(1,)]  # nothing of it applied
    assert db.query("SELECT MAX(version) FROM todos") == [(V1,)]


def test_concurrent_loads_of_overlapping_objects_end_in_the_last_writer_wins_state(mysql_url: str) -> None:
    import threading

    from tests.loader_properties import snapshot

    ids = [str(uuid.UUID(int=i + 1)) for i in range(300)]
    objects = [
        body_of(
            *[
                put(V1 + k, f"o{k}-{n}", todo_id=i, op_id=OPS[k % 4])
                for n, i in enumerate(ids[k * 50 :] + ids[: k * 50])
            ]
        )
        for k in range(4)
    ]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        database = open_master(mysql_url)
        try:
            worker = BatchLoader(database, MySQLFastApplier(database, min_rows=1, chunk_lines=40))
            load(worker, objects[k], f"writes/x/concurrent-{k}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            database.discard()

    database = open_master(mysql_url)
    database.migrate()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    rows = snapshot(database)["todos"]
    columns = table("todos").columns
    version, created_at = columns.index("version"), columns.index("created_at")
    assert len(rows) == 300 and {row[version] for row in rows} == {V1 + 3}  # the greatest version everywhere
    assert {row[created_at] for row in rows} == {put(V1).stored_at}  # created_at: the earliest `at` of each key
