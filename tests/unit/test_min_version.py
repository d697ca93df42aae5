"""min_version (CONTRACT section 3): how it is read from a query, how a write's version is raised
above it without moving the clock other callers use, and which reads may drop pending writes."""

from __future__ import annotations

import pytest

from chalicelib.errors import ApiError, DatabaseUnavailable
from chalicelib.http import parse_min_version
from chalicelib.ids import MAX_VERSION, VersionClock
from chalicelib.readers import Filters, Reader, Row, Seen, state_filter
from chalicelib.readers.replicas import ReplicaReader

NOW = 1_800_000_000_000_000  # microseconds


@pytest.mark.parametrize("raw", ["1", str(NOW), str(NOW + 5_000_000)])
def test_a_positive_version_up_to_5_s_ahead_is_taken(raw):
    assert parse_min_version(raw, NOW) == int(raw)


def test_absent_is_none():
    assert parse_min_version(None, NOW) is None


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "0",
        "-1",
        "+5",
        " 5",
        "5 ",
        "1.0",
        "1e3",
        "abc",
        "٣",
        "１",
        str(MAX_VERSION + 1),
        str(NOW + 5_000_001),
        "9" * 40,
    ],
)
def test_anything_else_is_invalid_query(raw):
    with pytest.raises(ApiError) as caught:
        parse_min_version(raw, NOW)
    assert (caught.value.status, caught.value.code) == (400, "invalid_query")


def test_a_write_after_min_version_is_newer_than_it_and_the_clock_does_not_move():
    # GIVEN a clock at NOW and a client whose last version came from a clock 3 s ahead
    clock = VersionClock(lambda: NOW * 1000)
    ahead = NOW + 3_000_000
    # WHEN that client writes with min_version
    mine = clock.next(after=ahead)
    # THEN its version is newer than what it saw, and other callers' versions stay on this clock
    assert mine == ahead + 1
    assert clock.next() == NOW + 1  # strictly after the last clock reading, not after `ahead`
    assert clock.next(after=NOW - 10) == NOW + 2  # a min_version in the past changes nothing


class Fixed(Reader):
    def __init__(self, version: int) -> None:
        self.version = version
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise DatabaseUnavailable("down")

    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        self._check()
        return {"id": id_, "version": self.version} if resource == "todos" else None

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        self._check()
        return [{"id": "a", "version": self.version}]


def test_only_a_replica_or_the_only_database_settles_a_read():
    replica, master = Fixed(1), Fixed(2)
    reader = ReplicaReader([replica, master])
    assert reader.seen_todo("o", "a") == Seen("a", {"id": "a", "version": 1}, 1, settled=True)
    replica.down = True  # failover: the master answers, newer than the replicas may be
    assert reader.seen_todo("o", "a").settled is False
    assert [s.settled for s in reader.list_seen("todos", "o", None, 5, state_filter(None), ())] == [False]
    assert reader.seen_profile("o") == Seen("o", None, 0, settled=False)
    assert ReplicaReader([master]).seen_todo("o", "a").settled is True
