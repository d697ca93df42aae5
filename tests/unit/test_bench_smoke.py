"""The benchmark's row builders run on tiny sizes and give well-formed rows (no timing is judged
here), the report renders, and the batching writer the freshness row relies on behaves.

The row builders need the MariaDB pair (fixture `db_pair`) and Redis (`redis_server`): outside CI
those tests skip without them, in CI they fail.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.batching import BatchingWriter
from bench.common import Pair, row, target_met
from chalicelib.commands import WriteCommand, make_command
from chalicelib.errors import TransportUnavailable
from chalicelib.ids import VersionClock, new_op_id, uuid7
from chalicelib.models import validate_todo

ROW_KEYS = {"name", "ours", "baseline", "unit", "ratio", "target", "met", "note", "section"}
clock = VersionClock()


@pytest.fixture
def pair(db_pair: dict[str, str]) -> Pair:
    """The shared pair, made sure to be up for each test: fault-injection tests stop and kill
    its servers, and one that fails may leave a server down (`start` only starts what is down)."""
    done = subprocess.run([db_pair["script"], "start", db_pair["dir"]], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"scripts/db-pair start failed: {done.stderr.strip()[-400:]}", pytrace=False)
    return Pair.from_env_file(db_pair["dir"])


def check_rows(rows: list[dict[str, Any]], section: str, count: int) -> None:
    assert len(rows) == count
    for item in rows:
        assert set(item) == ROW_KEYS, item
        assert item["section"] == section
        assert not item["note"].startswith("did not run"), item["note"]
        assert isinstance(item["ours"], float) and item["ours"] >= 0, item
        assert isinstance(item["baseline"], float) and item["baseline"] > 0, item
        assert item["ratio"] == pytest.approx(item["ours"] / item["baseline"])
        assert item["met"] is target_met(item["ratio"], item["target"])


# -- row builders ---------------------------------------------------------------------------------
def test_master_load_rows(pair: Pair) -> None:
    from bench import master_load

    rows = master_load.run(pair, n=200, per_object=120)
    check_rows(rows, master_load.SECTION, 4)
    assert "the two databases ended identical" in rows[0]["note"]
    assert "2 objects" in rows[0]["note"]


def test_loader_rows(pair: Pair) -> None:
    """Every case runs (the counts are checked inside: all applied fresh, half stale), the
    preload and the baseline included, with the pair's replica paused and resumed."""
    from bench import loader
    from bench.__main__ import loader_rows

    rows = loader_rows(600, pair)  # the bench's own call: its pair's master, its replica paused
    check_rows(rows, loader.SECTION, 5)
    assert [(r["name"], r["target"]) for r in rows] == [
        ("loader, fresh table vs LOAD DATA", ">= 0.7"),
        ("loader, half the rows newer vs LOAD DATA (fresh)", ">= 0.5"),
        ("loader, todos and lists mixed vs LOAD DATA", ""),  # information: no issue set a target
        ("loader, objects of 150 rows vs LOAD DATA", ""),  # information: the small-object path
        ("loader, fresh table vs per-row autocommit", ""),  # issue 19 retired its target
    ]
    assert "600 rows in 1 GZIP objects" in rows[0]["note"]
    assert "120 lists" in rows[2]["note"]
    assert "600 of the same rows in 4 GZIP objects of 150 lines" in rows[3]["note"]
    assert "| loader, fresh table vs per-row autocommit |" in report.markdown(rows, {}, True, 1.0)
    assert all(report.verdict(r) == "—" for r in rows[2:])
    import pymysql

    replica = pymysql.connect(host="127.0.0.1", port=pair.replica_port, user="root")
    try:
        with replica.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS")
            status = cur.fetchone()
        assert status["Slave_SQL_Running"] == "Yes" and status["Slave_IO_Running"] in ("Yes", "Connecting")
    finally:
        replica.close()


def test_inprocess_rows(pair: Pair, redis_server: str) -> None:
    from bench import inprocess

    rows = inprocess.run(pair, quick=True)
    assert [r["name"] for r in rows] == [
        "GET /todos/{id} in process",
        "GET /lists/{id} in process",
        "GET /todos (page of 50) in process",
        "POST /todos in process, transport excluded",
        "GET /todos/{id}, warm Redis cache vs replica",
    ]
    check_rows(rows[:4], inprocess.SECTION_REQUESTS, 4)
    check_rows(rows[4:], inprocess.SECTION_CACHE, 1)
    assert [r["target"] for r in rows[:2]] == ["<= 1.15", "<= 1.15"]
    assert "lists table" in rows[1]["note"]


def test_cold_start_row(pair: Pair) -> None:
    from bench import cold_start

    rows = cold_start.run(pair, quick=True)
    check_rows(rows, cold_start.SECTION, 1)
    assert "boto3" not in rows[0]["note"].split("Heavy modules loaded by ours:")[1].split("(of")[0]


def test_freshness_rows(pair: Pair) -> None:
    from bench import freshness

    rows = freshness.run(pair, count=12, interval=0.2, intervals=(0.0, 0.2))
    check_rows(rows, freshness.SECTION, 8)
    assert rows[0]["ours"] <= rows[1]["ours"]  # median <= p99 of the same samples
    names = [r["name"] for r in rows[2:]]
    assert names == [
        f"buffer interval {v} s: {what}"
        for v in ("0", "0.2", "60")
        for what in ("master commits per 10k writes", "202 → replica p99")
    ]
    assert all("COMPUTED" in r["note"] for r in rows[-2:]) and rows[-2]["ours"] == 10_000 / (freshness.RATE * 60)
    assert "| 60 s |" in report.markdown(rows, {}, True, 1.0)  # the trade-off table


def test_own_writes_rows(pair: Pair, redis_server: str) -> None:
    from bench import own_writes

    rows = own_writes.run(pair, quick=True, samples=12)
    check_rows(rows, own_writes.SECTION, 3)


def test_missing_loader_module_is_a_row_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from bench.__main__ import loader_rows

    real = importlib.import_module

    def fake(name: str, *args: Any) -> Any:
        if name == "bench.loader":
            raise ModuleNotFoundError("No module named 'bench.loader'", name="bench.loader")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    rows = loader_rows(10)
    assert len(rows) == 1 and rows[0]["ours"] is None and "NOT MEASURED" in rows[0]["note"]


# -- the report -----------------------------------------------------------------------------------
def test_report_renders_misses_and_unknowns() -> None:
    rows = [
        row("GET /todos/{id} in process", 390.0, 200.0, "µs", "<= 1.3", "note a", "3. Per-request cost in process"),
        row("master commits per 10k writes", 3.0, 10000.0, "commits", "<= 0.002", "", "1. Master write load"),
        report.normalise(
            {"name": "loader fresh", "ours": 60.0, "baseline": 100.0, "unit": "rows/s", "target": ">= 0.6"}, "2"
        ),
        row("not run", None, None, "", "", "did not run: boom", "6. End-to-end freshness"),
    ]
    assert [r["met"] for r in rows] == [False, True, True, None]
    text = report.table(rows)
    assert "NO, 50% over" in text and "yes" in text
    page = report.markdown(rows, {"date": "today", "cpu": "x"}, quick=True, seconds=1.0)
    assert "| 3 | GET /todos/{id} in process | 390 | 200 | µs | 1.95 | <= 1.3 | NO, 50% over |" in page
    assert "What stands in the way" in page and "QUICK" in page


def test_target_parsing() -> None:
    assert target_met(0.4, "<= 0.5") is True
    assert target_met(0.6, "≤ 0.5") is False
    assert target_met(16.0, ">= 15x") is True
    assert target_met(1.0, "") is None and target_met(None, "<= 1") is None


# -- the batching writer -----------------------------------------------------------------------------
def command(title: str) -> WriteCommand:
    return make_command("put", "todos", "alice", uuid7(), clock.next(), new_op_id(), validate_todo({"title": title}))


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.loaded: list[tuple[str, bytes]] = []
        self.fail = fail
        self.event = threading.Event()

    def __call__(self, key: str, body: bytes) -> None:
        self.loaded.append((key, body))
        self.event.set()
        if self.fail:
            raise RuntimeError("database down")


def test_size_limit_makes_one_object_of_many_requests(tmp_path: Path) -> None:
    sink = Recorder()
    commands = [command(f"t{i}") for i in range(5)]
    size = sum(len(c.to_line()) for c in commands)
    writer = BatchingWriter(str(tmp_path), sink, max_bytes=size, max_interval=3600)
    for c in commands:
        writer.write([c])
    assert writer.flush(10)
    writer.close()

    assert len(sink.loaded) == 1
    key, body = sink.loaded[0]
    assert body == b"".join(c.to_line() for c in commands)
    assert key.startswith("writes/") and len(key.split("/")) == 6
    assert (tmp_path / key).read_bytes() == body
    assert os.listdir(tmp_path / "spool") == []


def test_interval_seals_a_partial_buffer(tmp_path: Path) -> None:
    sink = Recorder()
    writer = BatchingWriter(str(tmp_path), sink, max_interval=0.1)
    first = command("soon")
    writer.write([first])
    assert sink.event.wait(5)
    writer.close()
    assert sink.loaded[0][1] == first.to_line()


def test_a_write_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    writer = BatchingWriter(str(tmp_path), Recorder(), max_interval=3600)
    c = command("durable")
    writer.write([c])
    spooled = list((tmp_path / "spool").iterdir())
    assert len(spooled) == 1 and spooled[0].read_bytes() == c.to_line()
    writer.close()


def test_a_crashed_writers_spool_is_loaded_by_the_next(tmp_path: Path) -> None:
    crashed = BatchingWriter(str(tmp_path), Recorder(), max_interval=3600)  # never closed: "crashes"
    lost = command("left in the spool")
    crashed.write([lost])
    sink = Recorder()
    successor = BatchingWriter(str(tmp_path), sink, max_interval=3600)
    assert successor.flush(10)
    successor.close()
    assert [body for _, body in sink.loaded] == [lost.to_line()]


def test_a_failed_load_keeps_the_object_and_the_writer_goes_on(tmp_path: Path) -> None:
    sink = Recorder(fail=True)
    writer = BatchingWriter(str(tmp_path), sink, max_bytes=1, max_interval=3600)
    writer.write([command("one")])
    writer.write([command("two")])
    assert writer.flush(10)
    writer.close()
    assert len(sink.loaded) == 2
    assert all((tmp_path / key).exists() for key, _ in sink.loaded)
    with pytest.raises(TransportUnavailable):
        writer.write([command("after close")])


def test_batched_objects_load_with_the_real_loader(tmp_path: Path) -> None:
    from chalicelib.db.database import open_database
    from chalicelib.loader import BatchLoader, local_etag
    from chalicelib.readers.sql import SqlReader

    db = open_database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    loader = BatchLoader(db)
    writer = BatchingWriter(
        str(tmp_path / "local"), lambda key, body: loader.load("local", key, local_etag(body), body), max_interval=3600
    )
    a, b = command("a"), command("b")
    writer.write([a])
    writer.write([b])
    assert SqlReader(db).get_todo("alice", a.id) is None  # still buffered, like Firehose
    started = time.monotonic()
    assert writer.flush(10)
    writer.close()
    assert time.monotonic() - started < 10
    assert SqlReader(db).get_todo("alice", a.id)["title"] == "a"  # type: ignore[index]
    assert SqlReader(db).get_todo("alice", b.id)["title"] == "b"  # type: ignore[index]
    assert len(writer.objects) == 1


def test_a_zero_interval_seals_whatever_arrived_while_the_last_object_loaded(tmp_path: Path) -> None:
    gate = threading.Event()
    sink = Recorder()

    def slow(key: str, body: bytes) -> None:
        sink(key, body)
        gate.wait(5)  # the first load takes until the test lets it go

    writer = BatchingWriter(str(tmp_path), slow, max_interval=0)
    first = command("first")
    writer.write([first])
    assert sink.event.wait(5)  # sealed and loading at once: no interval to wait for
    later = [command("second"), command("third")]
    for c in later:
        writer.write([c])
    gate.set()
    assert writer.flush(10)
    writer.close()
    assert [body for _, body in sink.loaded] == [first.to_line(), b"".join(c.to_line() for c in later)]


def test_sustained_rate_rows(pair: Pair) -> None:
    """Objects arrive at two rates for a short window (small objects, so that several do), the
    heartbeat is read on the replica, and each rate gets its row with the cores each part used."""
    from bench import sustained

    rows = sustained.run(pair, rates=(1_000, 2_000), window=2.0, warmup=0.5, object_bytes=64 * 1024)
    assert [r["name"] for r in rows] == [
        "sustained write rate (replica and objects within 1 s for 2 s)",
        "1,000 rows/s: replica lag, max",
        "2,000 rows/s: replica lag, max",
    ]
    for item in rows:
        assert set(item) == ROW_KEYS and item["section"] == sustained.SECTION
        assert item["baseline"] is None and item["ratio"] is None and item["met"] is None
    assert rows[0]["ours"] in (0.0, 1_000.0, 2_000.0)
    for item in rows[1:]:
        assert isinstance(item["ours"], float) and item["ours"] >= 0  # heartbeats were read on the replica
        assert "sustained" in item["note"] and "cores used over the window: master" in item["note"]
        assert " objects loaded" in item["note"] and not item["note"].startswith("0 objects")


def test_a_rate_is_sustained_only_with_the_replica_within_a_second_and_the_loader_keeping_up() -> None:
    from bench.sustained import RateResult

    def result(replica: list[float], waiting: int = 0, left: int = 0) -> RateResult:
        return RateResult(2_000, replica, [0.8, 1.2], 2, waiting, left, (0.5, 0.3, 0.4))

    assert result([0.1, 0.9]).sustained  # an object's load may take over a second: it kept up
    assert not result([0.1, 1.0]).sustained  # the replica a second behind
    assert not result([0.1], waiting=1).sustained  # an object arrived while another still waited
    assert not result([0.1], left=1).sustained  # an object still waiting at the end
    assert not result([]).sustained  # no heartbeat read: nothing shows the replica current
