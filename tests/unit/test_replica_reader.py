"""ReplicaReader's choice and failover, with readers that are plain fakes (subclasses of
Reader): one replica per process, the next on failure, the master last, a cool-down before a
failed reader is asked again, and 503 only when nobody answers."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.errors import DatabaseUnavailable
from chalicelib.readers import Filters, Reader, Row
from chalicelib.readers.replicas import ReplicaReader


class FakeReader(Reader):
    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.calls = 0

    def _answer(self) -> Any:
        self.calls += 1
        if self.down:
            raise DatabaseUnavailable(f"{self.name} is down")
        return self.name

    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        return {"from": self._answer()}

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        return [{"from": self._answer()}]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def who(reader: ReplicaReader) -> str:
    row = reader.get_todo("alice", "x")
    assert row is not None
    return str(row["from"])


@pytest.fixture
def pair() -> tuple[list[FakeReader], Clock, ReplicaReader]:
    fakes = [FakeReader("r1"), FakeReader("r2"), FakeReader("master")]
    clock = Clock()
    return fakes, clock, ReplicaReader(fakes, choose=lambda n: 1, cooldown=10, clock=clock)


def test_one_replica_is_chosen_per_process_and_the_master_is_last(pair):
    fakes, _, reader = pair
    assert [r.name for r in reader.readers] == ["r2", "r1", "master"]  # type: ignore[attr-defined]
    assert {who(reader) for _ in range(5)} == {"r2"}
    assert fakes[2].calls == 0


def test_a_down_replica_fails_over_to_the_next_then_to_the_master(pair):
    fakes, _, reader = pair
    fakes[1].down = True
    assert who(reader) == "r1"
    fakes[0].down = True
    assert who(reader) == "master"
    assert reader.list_todos("alice", None, 10, None) == [{"from": "master"}]
    assert reader.get_profile("alice") == {"from": "master"}


def test_a_failed_reader_is_not_asked_again_until_its_cool_down_ends(pair):
    fakes, clock, reader = pair
    fakes[1].down = True
    for _ in range(5):
        assert who(reader) == "r1"
    assert fakes[1].calls == 1  # asked once, then skipped
    clock.now += 9
    who(reader)
    assert fakes[1].calls == 1
    clock.now += 2  # cool-down over: asked again; back up, so preferred again
    fakes[1].down = False
    assert who(reader) == "r2"
    assert fakes[1].calls == 2


def test_when_every_reader_is_cooling_down_all_are_still_asked_before_giving_up(pair):
    fakes, clock, reader = pair
    for fake in fakes:
        fake.down = True
    with pytest.raises(DatabaseUnavailable, match="no replica and no master"):
        who(reader)
    assert [f.calls for f in fakes] == [1, 1, 1]
    fakes[2].down = False  # the master comes back within everyone's cool-down
    assert who(reader) == "master"


def test_errors_other_than_unavailable_are_not_failed_over():
    class Broken(FakeReader):
        def get(self, resource: str, owner: str, id_: str) -> Row | None:
            raise KeyError("a bug")

    master = FakeReader("master")
    reader = ReplicaReader([Broken("r1"), master])
    with pytest.raises(KeyError):
        reader.get_todo("alice", "x")
    assert master.calls == 0


def test_from_urls_skips_the_master_among_the_replicas_and_reads_it_last():
    opened: list[str] = []

    class Db:
        def sql(self, text: str) -> str:
            return text

    def open_db(url: str) -> Any:
        opened.append(url)
        return Db()

    reader = ReplicaReader.from_urls(
        ["mysql://r1/db", "mysql://m/db", "mysql://r1/db"], "mysql://m/db", open_db=open_db
    )
    assert opened == ["mysql://r1/db", "mysql://m/db"] and len(reader.readers) == 2


def test_needs_a_reader():
    with pytest.raises(ValueError):
        ReplicaReader([])
