"""Quarantine.mark/reset: an object read again from its start (the fast path's StartOver) keeps
each of its rejects once, and cannot go back past rejects already written."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.loader.quarantine import Quarantine
from chalicelib.loader.reject_lines import Reject


class FakeDb:
    dialect = "mysql"

    def sql(self, text: str) -> str:
        return text


class FakeCursor:
    def __init__(self) -> None:
        self.written: list[tuple[Any, ...]] = []

    def executemany(self, _statement: str, rows: list[tuple[Any, ...]]) -> None:
        self.written.extend(rows)


def quarantine() -> tuple[Quarantine, FakeCursor]:
    cur = FakeCursor()
    return Quarantine(FakeDb(), cur, ("bid", "bucket", "key", "etag", "now")), cur  # type: ignore[arg-type]


def test_reset_forgets_the_rejects_added_since_the_mark():
    q, cur = quarantine()
    q.held = True
    q.add([Reject(1, "before", "x")])
    mark = q.mark()
    q.add([Reject(4, "first reading", "y"), Reject(4, "first reading, again", "y")])
    q.reset(mark)
    q.add([Reject(4, "second reading", "y"), Reject(4, "second reading, again", "y")])
    assert q.count == 3
    q.held = False
    q.flush()
    # line 4's parts are numbered from 0 again, as on the first reading
    assert [(r[1], r[2], r[6]) for r in cur.written] == [
        (1, 0, "before"),
        (4, 0, "second reading"),
        (4, 1, "second reading, again"),
    ]


def test_reset_refuses_to_go_back_past_rejects_already_written():
    q, cur = quarantine()
    mark = q.mark()
    q.add([Reject(2, "bad", "z")])
    q.flush()
    assert len(cur.written) == 1
    with pytest.raises(RuntimeError, match="written since the mark"):
        q.reset(mark)
