"""A page read's HGETALL reply kept per owner (`pending_reply.page_entries`) and compared unparsed
(`Deferred.result(same_as=...)`, SAME): the same reply gives the same entries without parsing
them again, a changed one (even by one byte, in any chunks) is parsed, an expired entry is never
taken from what is kept, and a reply holding an entry that cannot be used is never kept (logged
on every read)."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.ids import VersionClock, new_op_id, uuid7
from chalicelib.models import validate_todo
from chalicelib.readers import pending_entry
from chalicelib.readers.pending_entry import PARSED, pending_key
from chalicelib.readers.pending_reply import KEPT, kept_reply, page_entries
from chalicelib.readers.resp import RespClient
from chalicelib.readers.resp_reply import SAME
from chalicelib.resources import TODOS
from tests.unit.test_pending_parsed import reply  # an HGETALL reply, as RECORD writes the entries

CLOCK = VersionClock()
ALICE = pending_key("alice", "test:v1")


@pytest.fixture(autouse=True)
def empty_caches() -> Any:
    KEPT.clear()
    PARSED.clear()
    yield
    KEPT.clear()
    PARSED.clear()


def wire_of(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%b\r\n" % (len(i), i) for i in items)


def put(title: str) -> Any:
    return make_command("put", "todos", "alice", uuid7(), CLOCK.next(), new_op_id(), validate_todo({"title": title}))


def delete() -> Any:
    return make_command("delete", "todos", "alice", uuid7(), CLOCK.next(), new_op_id(), None)


def test_the_same_reply_gives_the_same_entries_without_parsing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = reply(put("one"), delete(), put("two"))
    first = page_entries(raw, None, TODOS, 0, ALICE, wire_of(raw))
    assert len(first.pending) == 3 and len(first.deletes) == 1 and set(first.replaced) == set(first.pending)
    calls: list[Any] = []
    monkeypatch.setattr(pending_entry, "parse_pending", lambda *a: calls.append(a))
    assert page_entries(list(raw), None, TODOS, 0, ALICE) is first  # equal bytes, parsed
    kept = kept_reply(ALICE, TODOS)
    assert kept is not None and kept.wire == wire_of(raw)
    assert page_entries(SAME, None, TODOS, 0, ALICE, kept=kept) is first and calls == []  # equal bytes, unparsed


def test_same_answers_the_reply_kept_when_it_was_read_even_if_another_is_kept_since() -> None:
    """Another thread may keep another reply of the owner between the read and its entries."""
    one, two = put("one"), put("two")
    page_entries(reply(one), None, TODOS, 0, ALICE, b"wire one")
    kept = kept_reply(ALICE, TODOS)
    page_entries(reply(one, two), None, TODOS, 0, ALICE, b"wire two")  # kept meanwhile
    made = page_entries(SAME, None, TODOS, 0, ALICE, kept=kept)
    assert list(made.pending) == [one.id]  # the reply read (the first), not the one kept since


def test_a_changed_reply_another_cursor_or_owner_is_parsed_again() -> None:
    one, two = put("one"), put("two")
    raw = reply(one, two)
    first = page_entries(raw, None, TODOS, 0, ALICE)
    changed = reply(one, make_command("put", "todos", "alice", two.id, CLOCK.next(), new_op_id(), two.data))
    again = page_entries(changed, None, TODOS, 0, ALICE)
    assert again is not first and again.pending[two.id].version > first.pending[two.id].version
    assert page_entries(changed, one.id, TODOS, 0, ALICE) is not again  # another cursor
    assert page_entries(changed, None, TODOS, 0, pending_key("bob", "test:v1")) is not again


def test_an_entry_that_expired_since_is_never_taken_from_what_is_kept() -> None:
    old, new = put("old"), put("new")
    raw = reply(old, new)
    kept = page_entries(raw, None, TODOS, 0, ALICE)
    assert not kept.expired
    later = page_entries(SAME, None, TODOS, old.version + 1, ALICE, kept=kept_reply(ALICE, TODOS))  # `old` expired
    assert later is not kept and [e[0] for e in later.expired] == [old.id] and list(later.pending) == [new.id]


def test_a_reply_with_an_entry_that_cannot_be_used_is_never_kept(caplog: pytest.LogCaptureFixture) -> None:
    good = put("good")
    bad = uuid7()
    raw = reply(good) + [f"t:{bad}".encode(), b"p|1|op|1|{not json"]
    with caplog.at_level(logging.WARNING, "chalicelib.readers.pending"):
        for _ in range(2):
            made = page_entries(raw, None, TODOS, 0, ALICE, wire_of(raw))
            assert list(made.pending) == [good.id]
    assert kept_reply(ALICE, TODOS) is None
    assert sum(bad in r.getMessage() for r in caplog.records) == 2  # logged on every read


class ChunkedSocket:
    """A socket whose replies arrive in the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def sendall(self, data: bytes) -> None:
        pass

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def close(self) -> None:
        self.chunks = []


def client_over(chunks: list[bytes]) -> RespClient:
    client = RespClient(port=1)  # a retry (after a bad reply) finds no server
    client._sock, client._pid = ChunkedSocket(chunks), os.getpid()  # type: ignore[assignment]
    return client


RAW = [b"t:a", b"p|1|op|{}", b"t:b", b"a|2|op|"]
WIRE = wire_of(RAW)


@pytest.mark.parametrize("cut", [None, 1, 4, 9, len(WIRE) - 1])
def test_a_reply_the_same_as_an_earlier_one_is_read_past_unparsed_in_any_chunks(cut: int | None) -> None:
    chunks = [WIRE] if cut is None else [WIRE[:cut], WIRE[cut:]]
    client = client_over([*chunks, b"+OK\r\n"])
    assert client.send("HGETALL", "k").result(WIRE) is SAME
    assert client.execute_command("PING") == b"OK"  # read past exactly: the next reply is whole


@pytest.mark.parametrize("cut", [None, 3, 20])
@pytest.mark.parametrize(
    "other",
    [
        wire_of([*RAW[:3], b"a|3|op|"]),  # one byte changed
        wire_of(RAW[:2]),  # shorter
        wire_of([*RAW, b"t:c", b"a|4|op|"]),  # longer
        wire_of([*RAW[:3], b"a|2|op|x"]),  # a longer last value
    ],
)
def test_a_different_reply_is_parsed_whole(other: bytes, cut: int | None) -> None:
    chunks = [other] if cut is None else [other[:cut], other[cut:]]
    client = client_over([*chunks, b"+OK\r\n"])
    deferred = client.send("HGETALL", "k")
    got = deferred.result(WIRE)
    assert got is not SAME and wire_of(got) == other
    assert deferred.wire == other or (cut is not None and deferred.wire is None)  # whole, when read in one piece
    assert client.execute_command("PING") == b"OK"
