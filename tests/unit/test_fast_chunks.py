"""The MySQL fast path without a server: how it cuts the end of an object into chunks, its worker
thread, and a row's text with another created_at."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.loader.fast_rows import full_sizes, tail_sizes
from chalicelib.loader.fast_worker import Worker
from tests.factories import make


@given(st.integers(0, 50_000), st.integers(1, 8000))
def test_the_end_of_an_object_is_covered_exactly_once(total: int, size: int) -> None:
    for sizes in (tail_sizes(total, size), full_sizes(total, size)):
        assert sum(sizes) == total
        assert all(0 < n <= size for n in sizes)
    full = full_sizes(total, size)
    assert full[:-1] == [size] * (len(full) - 1)  # only the last one is short


def test_the_tail_comes_down_in_steps_when_the_server_waits() -> None:
    assert tail_sizes(10_000, 4000) == [4000, 2500, 2000, 1000, 500]
    assert tail_sizes(300, 4000) == [300]


def test_the_worker_reports_its_backlog() -> None:
    import threading

    gate = threading.Event()
    worker = Worker(threaded=True)
    try:
        worker.submit("a", gate.wait, 5)
        worker.submit("b", lambda: 1)
        assert worker.backlog() == 2
        gate.set()
        assert [tag for tag, _ in worker.drain()] == ["a", "b"]
        assert worker.backlog() == 0
    finally:
        gate.set()
        worker.close()


def test_a_rows_created_at_is_replaced_in_its_text_as_tsv_line_would_write_it() -> None:
    from chalicelib.commands import make_command
    from chalicelib.loader.fast_rows import with_created_at
    from chalicelib.rows import table

    tsv_line = table("todos").tsv
    data = make("todos", title="t\tab", notes="x" * 50, tags=["a"])
    for command in (
        make_command(
            "put", "todos", "al\\ice", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 1767225600123456, "o" * 36, data
        ),
        make_command("delete", "todos", "bob", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 7, "o" * 36, None),
    ):
        line = tsv_line(command, command.stored_at)
        assert with_created_at(line, "2001-02-03 04:05:06.000007") == tsv_line(command, "2001-02-03 04:05:06.000007")


def test_before_a_rollback_to_the_savepoint_a_chunk_that_failed_is_raised_and_a_refusal_is_not() -> None:
    # A deadlock in one chunk ends the whole transaction (and its savepoint): rolling back to
    # the savepoint then would fail with "SAVEPOINT does not exist" instead of the deadlock,
    # which the loader retries. A refusal leaves the transaction as it was.
    from chalicelib.loader.fast_worker import LoadRefused

    def refused() -> None:
        raise LoadRefused("4166")

    def deadlock() -> None:
        raise RuntimeError("1213 deadlock")

    worker = Worker(True)
    try:
        for task in (refused, deadlock, refused, lambda: 1):
            worker.submit("chunk", task)
        with pytest.raises(RuntimeError, match="deadlock"):
            worker.finish_all()
        assert worker.backlog() == 0
        worker.submit("chunk", refused)
        worker.finish_all()  # nothing raised
    finally:
        worker.close()
