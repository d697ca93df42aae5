"""The process's cache of decoded pending entries (`pending_entry.PARSED`, used by `entries_of`):
keyed by the owner's hash and the exact bytes, so a changed entry is parsed again, two owners
never share an entry, and an entry that cannot be used is never kept (it is logged every time)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.ids import VersionClock, new_op_id, uuid7
from chalicelib.models import validate_todo
from chalicelib.readers import pending_entry
from chalicelib.readers.pending_entry import PARSED, Bounded, entries_of, entry_for, pending_key
from chalicelib.resources import TODOS

CLOCK = VersionClock()
ALICE, BOB = pending_key("alice", "test:v1"), pending_key("bob", "test:v1")


@pytest.fixture(autouse=True)
def empty_cache() -> Any:
    PARSED.clear()
    yield
    PARSED.clear()


def reply(*commands: Any) -> list[bytes]:
    """An HGETALL reply holding the commands' entries, as RECORD writes them."""
    out: list[bytes] = []
    for command in commands:
        field, state, version, op_id, payload = entry_for(command)
        out += [
            field.encode(),
            b"|".join([state, str(version).encode(), op_id.encode(), str(version).encode(), payload]),
        ]
    return out


def put(todo_id: str, title: str, owner: str = "alice") -> Any:
    return make_command("put", "todos", owner, todo_id, CLOCK.next(), new_op_id(), validate_todo({"title": title}))


def test_an_unchanged_entry_is_parsed_once_per_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    todo_id, gone = uuid7(), uuid7()
    raw = reply(put(todo_id, "one"), make_command("delete", "todos", "alice", gone, CLOCK.next(), new_op_id(), None))
    first, _ = entries_of(raw, None, TODOS, 0, ALICE)
    calls: list[str] = []
    original = pending_entry.parse_pending

    def counted(field_id: str, raw: Any) -> Any:
        calls.append(field_id)
        return original(field_id, raw)

    monkeypatch.setattr(pending_entry, "parse_pending", counted)
    again, _ = entries_of(list(raw), None, TODOS, 0, ALICE)
    assert calls == [] and again == first and again[gone].data is None
    entries_of(raw, None, TODOS, 0, BOB)
    assert sorted(calls) == sorted([todo_id, gone])  # another owner's hash: parsed again


def test_a_changed_entry_is_parsed_again() -> None:
    todo_id = uuid7()
    before, _ = entries_of(reply(put(todo_id, "before")), None, TODOS, 0, ALICE)
    after, _ = entries_of(reply(put(todo_id, "after")), None, TODOS, 0, ALICE)
    assert before[todo_id].row["title"] == "before"  # type: ignore[index]
    assert after[todo_id].row["title"] == "after"  # type: ignore[index]
    assert after[todo_id].version > before[todo_id].version


def test_two_owners_with_the_same_bytes_never_share_an_entry() -> None:
    todo_id = uuid7()
    raw = reply(put(todo_id, "same"))
    alice, _ = entries_of(raw, None, TODOS, 0, ALICE)
    bob, _ = entries_of(raw, None, TODOS, 0, BOB)
    assert alice[todo_id] == bob[todo_id] and alice[todo_id] is not bob[todo_id]
    assert {k[0] for k in PARSED.entries} == {ALICE, BOB}


def test_a_shown_row_is_a_copy_the_cached_entry_does_not_share() -> None:
    todo_id = uuid7()
    raw = reply(put(todo_id, "mine"))
    entry = entries_of(raw, None, TODOS, 0, ALICE)[0][todo_id]
    shown = entry.shown(None)
    assert shown is not None
    shown["title"] = "changed by a caller"
    assert entries_of(raw, None, TODOS, 0, ALICE)[0][todo_id].shown(None)["title"] == "mine"  # type: ignore[index]


def test_an_expired_entry_stays_expired_when_cached() -> None:
    todo_id = uuid7()
    command = put(todo_id, "old")
    raw = reply(command)
    assert todo_id in entries_of(raw, None, TODOS, 0, ALICE)[0]
    pending, expired = entries_of(raw, None, TODOS, command.version + 1, ALICE)
    assert pending == {} and expired == [(todo_id, command.version, command.op_id)]


def test_an_entry_that_cannot_be_used_is_never_kept_and_logged_every_time(caplog: pytest.LogCaptureFixture) -> None:
    todo_id = uuid7()
    field, value = reply(put(todo_id, "spoilt"))
    spoilt = [field, value.rsplit(b"|", 1)[0] + b"|{not json"]
    caplog.set_level(logging.WARNING, logger="chalicelib.readers.pending")
    for _ in range(2):
        assert entries_of(spoilt, None, TODOS, 0, ALICE)[0] == {}
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 2
    assert PARSED.entries == {}


def test_without_a_hash_nothing_is_kept_and_the_cache_is_bounded() -> None:
    entries_of(reply(put(uuid7(), "no hash")), None, TODOS, 0)
    assert PARSED.entries == {}
    small: Bounded[tuple[str, str, bytes, bytes], None] = Bounded(2)
    for n in range(3):
        small.put((ALICE, "todos", b"t:%d" % n, b""), None)  # type: ignore[arg-type]
    assert [k[2] for k in small.entries] == [b"t:1", b"t:2"]


def test_an_entry_not_named_by_a_canonical_id_is_never_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    todo_id = uuid7()
    field, value = reply(put(todo_id, "odd name"))
    odd = "not-a-uuid"
    raw = [b"t:" + odd.encode(), value.replace(todo_id.encode(), odd.encode())]
    monkeypatch.setattr(pending_entry, "id_of", lambda resource, name: bytes(name[2:]).decode())
    assert odd in entries_of(raw, None, TODOS, 0, ALICE)[0]  # let through by the patched check only
    assert PARSED.entries == {}
    monkeypatch.undo()
    assert entries_of(raw, None, TODOS, 0, ALICE)[0] == {}
