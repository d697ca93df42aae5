"""The history checker's own parts (tests/histories), without I/O: the model's checks catch what
they are for and pass what the contract allows, the delta debugging finds a shortest failing
history, and a seed always draws the same history."""

from __future__ import annotations

from typing import Any

from tests.histories.model import Cmd, Model, View, instant_us, us_text
from tests.histories.steps import generate, shrink

OWNER = "ann"
ID = "0190b2a0-0000-7000-8000-000000000001"
OTHER = "0190b2a0-0000-7000-8000-000000000002"
KEY = ("todos", OWNER, ID)
T0 = 1_767_225_600_000_000
TTL = 300


def cmd(model: Model, version: int, op_id: str, op: str = "put", id_: str = ID, **extra: Any) -> Cmd:
    data = None if op == "delete" else {"title": f"t{len(model.cmds)}", "notes": "", "state": "open", "tags": []}
    if data is not None:
        data.update(due_at=None, priority=3, list_id=None)
        data.update(extra.pop("data", {}))
    made = Cmd(len(model.cmds) + 1, OWNER, "todos", id_, op, version, op_id, data, 0, len(model.cmds) + 1, **extra)
    model.accept(made)
    return made


def row(c: Cmd, created: int | None = None) -> dict[str, Any]:
    assert c.data is not None
    return {
        "id": c.id,
        **c.data,
        "version": c.version,
        "created_at": us_text(created or c.version),
        "updated_at": us_text(c.version),
    }


def view(now: int = T0 + 1_000_000, pending: bool = True, db: str = "master") -> View:
    return View(now, pending, db, real_now=0.0)


def test_timestamps_read_back_as_the_versions_they_stand_for() -> None:
    assert instant_us(us_text(T0 + 123)) == T0 + 123
    assert instant_us("2026-01-01T00:00:00Z") == T0


def test_a_read_older_than_the_kept_pending_write_is_a_session_problem_even_on_a_version_tie() -> None:
    model = Model(TTL)
    loser = cmd(model, T0, "1" * 8, recorded=True)
    winner = cmd(model, T0, "2" * 8, recorded=True)
    _, problems = model.check_row(KEY, row(loser), view(), "GET")
    assert [p[0] for p in problems] == ["session"]
    assert model.check_row(KEY, row(winner), view(), "GET")[1] == []


def test_the_session_floor_is_gone_once_redis_lost_the_entry_or_it_expired() -> None:
    model = Model(TTL)
    old = cmd(model, T0, "1" * 8, recorded=True)
    cmd(model, T0 + 1, "2" * 8, recorded=True)
    expired = view(now=T0 + 1 + TTL * 1_000_000 + 1)
    assert model.check_row(KEY, row(old), expired, "GET")[1] == []
    model.flushed([OWNER])
    assert model.check_row(KEY, row(old), view(), "GET")[1] == []
    assert model.check_row(KEY, row(old), view(pending=False), "GET")[1] == []


def test_a_deleted_answer_needs_a_delete_at_least_as_new_as_the_floor() -> None:
    model = Model(TTL)
    cmd(model, T0, "1" * 8, recorded=True)
    assert [p[0] for p in model.check_session(KEY, None, view(), "GET")] == ["session"]
    cmd(model, T0 + 1, "2" * 8, op="delete")
    assert model.check_session(KEY, None, view(), "GET") == []


def test_created_at_must_be_the_earliest_once_that_command_is_readable() -> None:
    model = Model(TTL)
    first = cmd(model, T0, "1" * 8)
    edit = cmd(model, T0 + 5_000_000, "2" * 8, recorded=True)
    model.committed([first])
    # loaded on the master, not yet on the replica: the edit's own instant is allowed there
    assert model.check_row(KEY, row(edit), view(db="replica"), "GET")[1] == []
    model.changed([OWNER])
    problems = model.check_row(KEY, row(edit), view(db="master"), "GET by id")[1]
    assert [p[0] for p in problems] == ["created_at"]
    model.changed([OWNER])
    assert model.check_row(KEY, row(edit, created=first.version), view(), "GET")[1] == []
    # a cache entry stale by the cache's own terms is not held to it
    model.changed([OWNER])
    assert model.check_row(KEY, row(edit), view(), "GET", cache_may_be_stale=True)[1] == []


def test_two_routes_showing_one_state_with_nothing_between_must_agree_on_created_at() -> None:
    model = Model(TTL)
    only = cmd(model, T0, "1" * 8)
    second = cmd(model, T0 + 1, "2" * 8)
    assert model.check_row(KEY, row(second, created=only.version), view(db="replica"), "GET /todos")[1] == []
    problems = model.check_row(KEY, row(second), view(db="replica"), "GET /todos/{id}")[1]
    assert [p[0] for p in problems] == ["created_at"]


def test_rows_no_write_made_and_fields_not_sent_are_caught() -> None:
    model = Model(TTL)
    put = cmd(model, T0, "1" * 8)
    ghost = {**row(put), "title": "ghost"}
    assert [p[0] for p in model.check_row(KEY, ghost, view(), "GET")[1]] == ["phantom"]
    changed = {**row(put), "notes": "not sent"}
    assert [p[0] for p in model.check_row(KEY, changed, view(), "GET")[1]] == ["content"]


def test_a_page_must_show_every_determinate_row_in_its_range_and_no_older_state() -> None:
    model = Model(TTL)
    a = cmd(model, T0, "1" * 8)
    b = cmd(model, T0 + 1, "2" * 8, id_=OTHER, recorded=True)
    model.committed([a])
    # b is the caller's kept pending write: a page over both ids must show both
    ids, problems = model.check_page(OWNER, [row(a)], None, None, None, view(), "GET /todos")
    assert ids == [ID] and [p[0] for p in problems] == ["paging"]
    # a page ending before b's id does not owe it
    assert model.check_page(OWNER, [row(a)], None, ID, None, view(), "GET /todos")[1] == []
    # under a filter that b does not match, it is not owed either
    assert model.check_page(OWNER, [], None, None, "done", view(), "GET /todos")[1] == []
    newer = cmd(model, T0 + 2, "3" * 8)
    model.committed([newer])
    problems = model.check_page(OWNER, [row(a), row(b)], None, None, None, view(), "GET /todos")[1]
    assert "determinate" in [p[0] for p in problems]


def test_min_version_answers() -> None:
    model = Model(TTL)
    put = cmd(model, T0, "1" * 8)
    # nothing that new anywhere: 503 is the answer, an older row is not
    assert model.check_min_version(KEY, 503, None, T0 + 10, view(), "GET") == []
    assert [p[0] for p in model.check_min_version(KEY, 200, put, T0 + 10, view(), "GET")] == ["min_version"]
    # 404 only for a tombstone at or after V
    assert [p[0] for p in model.check_min_version(KEY, 404, None, T0, view(), "GET")] == ["min_version"]
    cmd(model, T0 + 20, "2" * 8, op="delete")
    assert model.check_min_version(KEY, 404, None, T0 + 10, view(), "GET") == []
    # once loaded and readable, 503 is wrong
    model.committed(model.cmds)
    assert [p[0] for p in model.check_min_version(KEY, 503, None, T0 + 10, view(), "GET")] == ["min_version"]


def test_shrinking_finds_the_two_steps_that_fail_together() -> None:
    calls = []

    def fails(candidate: list[int]) -> bool:
        calls.append(candidate)
        return 3 in candidate and 17 in candidate

    assert shrink(list(range(40)), fails, lambda: True) == [3, 17]
    assert shrink(list(range(40)), fails, lambda: len(calls) < 5) != [3, 17]  # the budget stops it


def test_a_seed_always_draws_the_same_history() -> None:
    assert generate(7, 200) == generate(7, 200)
    assert generate(7, 200) != generate(8, 200)
    kinds = {s.kind for s in generate(7, 2000, replica_faults=True)}
    assert {"tie", "corrupt", "kill", "outage", "concurrent", "flush", "lag_start", "replica_down"} <= kinds
