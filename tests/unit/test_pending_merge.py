"""The page merge of GET /todos (chalicelib.readers.pending_merge.merge_page) against a model: any mix
of loaded rows (live or tombstones, either state) and pending puts and deletes, older or newer than
what is loaded, version ties either way, any page size, cursor and filter. The model is what the
caller would see were every pending write loaded: per id the newer of the two in the loader's
(version, op_id) order (`ordering.newer`); an equal order is the pending write itself, loaded."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.ordering import newer
from chalicelib.readers import Seen, SeenRows, state_filter
from chalicelib.readers.pending_entry import PendingEntry
from chalicelib.readers.pending_merge import Fetched, merge_page, newest
from chalicelib.resources import TODOS

IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(24)]
CREATED = "2026-01-01T00:00:00Z"
# op_ids that order a version tie either way (two writes of one version by two instances)
OPS = ("10000000-0000-4000-8000-000000000000", "20000000-0000-4000-8000-000000000000")

# version, op_id, deleted (a tombstone, or a pending delete), state
State = tuple[int, str, bool, str]
states = st.tuples(st.integers(1, 6), st.sampled_from(OPS), st.booleans(), st.sampled_from(["open", "done"]))
loaded_state = pending_state = states


def loaded_row(todo_id: str, version: int, state: str) -> dict[str, Any]:
    return {"id": todo_id, "title": f"loaded {version}", "state": state, "version": version, "created_at": CREATED}


class Store:
    """list_seen over a dict: rows matching `state`, and the stored state of each of `ids`; the
    rows carry no op_id, as a page query reads them, and `orders` (seen_todos) reads them again."""

    def __init__(self, loaded: dict[str, State], state: str | None, settled: bool) -> None:
        self.loaded = loaded
        self.state = state
        self.settled = settled
        self.calls = 0
        self.reread: list[str] = []  # the ids `orders` was asked for

    def orders(self, ids: Collection[str]) -> dict[str, Seen]:
        self.reread += ids
        return {i: self._seen(i, self.loaded[i][1]) for i in ids if i in self.loaded}

    def _seen(self, todo_id: str, op_id: str) -> Seen:
        version, _, deleted, state = self.loaded[todo_id]
        return Seen(todo_id, None if deleted else loaded_row(todo_id, version, state), version, op_id, self.settled)

    def fetch(self, after: str | None, limit: int, ids: Collection[str]) -> list[Seen]:
        self.calls += 1
        out = []
        for todo_id in sorted(self.loaded):
            version, op_id, deleted, state = self.loaded[todo_id]
            if after is not None and todo_id <= after:
                continue
            live = not deleted and (self.state is None or state == self.state)
            if live or todo_id in ids:
                out.append(self._seen(todo_id, ""))
        return out[:limit]


def as_seen_rows(batch: list[Seen], replaced: dict[str, int]) -> SeenRows:
    """A batch as SqlReader.start_list_seen gives it: a row older than the pending write that
    replaces it holds only its created_at."""
    rows = [
        {"created_at": s.row["created_at"]} if s.row is not None and replaced.get(s.id, 0) > s.version else s.row
        for s in batch
    ]
    made = SeenRows([s.id for s in batch], rows, [s.version for s in batch], {}, batch[0].settled if batch else True)
    if not replaced:
        assert made == batch and list(made[1:]) == batch[1:]  # the same states, one by one
    return made


def ties(loaded: dict[str, State], pending: dict[str, State]) -> set[str]:
    """Ids whose loaded and pending versions are equal: the only rows read again for op_ids."""
    return {i for i in pending if i in loaded and loaded[i][0] == pending[i][0]}


def entries(pending: dict[str, State]) -> dict[str, PendingEntry]:
    return {
        i: PendingEntry(i, v, op, v, None if gone else {"id": i, "title": f"pending {v}", "state": s, "version": v})
        for i, (v, op, gone, s) in pending.items()
    }


def model(loaded: dict[str, State], pending: dict[str, State], state: str | None) -> list[tuple[str, str]]:
    """(id, title) of every todo the caller sees, ascending id."""
    out = []
    for todo_id in sorted({*loaded, *pending}):
        was, will = loaded.get(todo_id), pending.get(todo_id)
        if will is None or (was is not None and not newer(will[:2], was[:2])):
            assert was is not None
            gone, row_state, title = was[2], was[3], f"loaded {was[0]}"
        else:
            gone, row_state, title = will[2], will[3], f"pending {will[0]}"
        if not gone and (state is None or row_state == state):
            out.append((todo_id, title))
    return out


mixes = st.tuples(
    st.dictionaries(st.sampled_from(IDS), loaded_state, max_size=20),
    st.dictionaries(st.sampled_from(IDS), pending_state, max_size=20),
    st.sampled_from([None, "open", "done"]),
)


@settings(max_examples=300, deadline=None)
@given(mix=mixes, limit=st.integers(1, 8), id_cap=st.integers(1, 6), settled=st.booleans())
def test_paging_through_the_merge_gives_the_model_with_no_repeat_and_no_gap(mix, limit, id_cap, settled):
    loaded, pending, state = mix
    store = Store(loaded, state, settled)
    expected = model(loaded, pending, state)
    seen: list[tuple[str, str]] = []
    after = None
    for _ in range(len(IDS) + 2):
        # as Service.list_todos asks: one row more than the page, to know whether more follow
        rows, drops = merge_page(
            store.fetch,
            entries(pending),
            after,
            limit + 1,
            state_filter(state),
            id_cap,
            orders=store.orders,
            resource=TODOS,
        )
        page = rows[:limit]
        assert len(page) == min(limit, len(expected) - len(seen))  # pages stay full-sized
        seen += [(r["id"], r["title"]) for r in page]
        for shown in drops:  # a settled loaded state as new as the pending write, or newer
            assert settled and shown.version == loaded[shown.id][0] and shown.op_id in ("", loaded[shown.id][1])
            assert not newer(pending[shown.id][:2], shown.order)  # what DROP is given
        if len(rows) <= limit:
            break
        after = page[-1]["id"]
    assert seen == expected
    assert set(store.reread) <= ties(loaded, pending)  # no read again without a version tie


@settings(max_examples=200, deadline=None)
@given(mix=mixes, want=st.integers(1, 10), cursor=st.sampled_from([None, *IDS]))
def test_any_cursor_starts_the_page_right_after_it(mix, want, cursor):
    loaded, pending, state = mix
    store = Store(loaded, state, True)
    rows, _ = merge_page(
        store.fetch, entries(pending), cursor, want, state_filter(state), 3, orders=store.orders, resource=TODOS
    )
    expected = [item for item in model(loaded, pending, state) if cursor is None or item[0] > cursor][:want]
    assert [(r["id"], r["title"]) for r in rows] == expected
    for r in rows:
        assert state is None or r["state"] == state
        assert "created_at" in r


@settings(max_examples=300, deadline=None)
@given(
    mix=mixes,
    want=st.integers(1, 10),
    cursor=st.sampled_from([None, *IDS]),
    guess=st.sets(st.sampled_from(IDS), max_size=12),
    guess_limit=st.integers(1, 14),
    plain=st.booleans(),
    kind=st.sampled_from(["list", "rows", "replaced"]),
)
def test_a_first_batch_fetched_on_a_guess_of_the_pending_ids_gives_the_model(
    mix, want, cursor, guess, guess_limit, plain, kind
):
    """PendingWrites reads the pending writes while the page query runs, naming the ids it last
    saw: whatever that guess (stale, partial, empty) and its limit, the page is the model's. The
    batch may come as Seen values, or as SqlReader gives it (SeenRows), its rows a newer pending
    write replaces holding only their created_at (as `replaced` asks)."""
    loaded, pending, state = mix
    store = Store(loaded, state, True)
    ids = sorted(i for i in guess if cursor is None or i > cursor)
    if plain:  # the live rows only, as list_todos answers when the guess is empty
        ids = []
        rows = [s for s in Store(loaded, state, False).fetch(cursor, guess_limit, ()) if s.row is not None]
    else:
        rows = store.fetch(cursor, guess_limit, ids)
    if kind != "list":
        older = {i: v for i, (v, *_) in pending.items()} if kind == "replaced" else {}
        rows = as_seen_rows(rows, older)
    first = Fetched(rows, guess_limit, frozenset(ids))
    got, drops = merge_page(
        store.fetch, entries(pending), cursor, want, state_filter(state), 3, first, store.orders, resource=TODOS
    )
    expected = [item for item in model(loaded, pending, state) if cursor is None or item[0] > cursor][:want]
    assert [(r["id"], r["title"]) for r in got] == expected
    for shown in drops:
        assert shown.version == loaded[shown.id][0] and shown.op_id in ("", loaded[shown.id][1])
        assert not newer(pending[shown.id][:2], shown.order)


def test_a_settled_read_that_shows_the_write_drops_it_and_an_unsettled_one_does_not():
    a, b, c = IDS[0], IDS[1], IDS[2]
    low, high = OPS
    loaded = {a: (5, low, False, "open"), b: (2, low, False, "open"), c: (4, low, False, "open")}
    pending = {a: (5, low, False, "open"), b: (3, low, False, "done"), c: (4, high, False, "done")}
    store = Store(loaded, None, True)
    rows, drops = merge_page(store.fetch, entries(pending), None, 10, {}, orders=store.orders, resource=TODOS)
    # b's pending version 3 is newer than the replica's 2, and c's wins the tie of version 4: kept
    assert [(shown.id, shown.order) for shown in drops] == [(a, (5, low))]
    assert [r["title"] for r in rows] == ["loaded 5", "pending 3", "pending 4"]
    assert sorted(store.reread) == [a, c]  # the two ties, read again in one call, b not
    store = Store(loaded, None, False)
    _, drops = merge_page(store.fetch, entries(pending), None, 10, {}, orders=store.orders, resource=TODOS)
    assert drops == []  # the master answered (failover): replicas may still lag


@pytest.mark.parametrize("replaced", [False, True])
def test_a_first_batch_as_sql_reads_it_keeps_ties_drops_and_created_at(replaced):
    """The first batch as SqlReader gives it (SeenRows, no op_ids; with `replaced`, the rows a newer
    pending write replaces hold only their created_at): ties are read again for op_ids and go to
    the greater, a settled state that shows the write (or a newer one) is dropped, and a newer
    write shows the earliest created_at of its own and what is stored (a tombstone's included)."""
    a, b, c, d, e = IDS[:5]
    low, high = OPS
    loaded = {
        a: (5, low, False, "open"),  # the pending write itself, loaded: dropped
        b: (2, low, False, "open"),  # older: the pending write shows, with this created_at
        c: (4, high, False, "open"),  # a tie the loaded op_id wins: loaded, and dropped
        d: (4, low, False, "open"),  # a tie the pending op_id wins: pending
        e: (3, low, True, "open"),  # a tombstone under a newer put: pending, with its created_at
    }
    pending = {a: (5, low, False, "open"), b: (3, low, False, "done"), c: (4, low, False, "done")}
    pending |= {d: (4, high, False, "done"), e: (6, low, False, "open")}
    store = Store(loaded, None, True)
    batch = store.fetch(None, 10, list(pending))
    older = {i: v for i, (v, *_) in pending.items()} if replaced else {}
    rows = as_seen_rows(batch, older)
    rows.created = {e: "1969-12-31T00:00:00Z"}  # before the pending put's own instant (version 6 µs)
    first = Fetched(rows, 10, frozenset(pending))
    got, drops = merge_page(store.fetch, entries(pending), None, 10, {}, 3, first, store.orders, resource=TODOS)
    assert [r["title"] for r in got] == ["loaded 5", "pending 3", "loaded 4", "pending 4", "pending 6"]
    assert [(shown.id, shown.order) for shown in drops] == [(a, (5, low)), (c, (4, high))]  # loaded, or newer
    assert sorted(store.reread) == [a, c, d]  # the ties, read again in one call
    # the earliest of the pending command's instant and what is stored (a live row's, a tombstone's)
    assert got[1]["created_at"] == "1970-01-01T00:00:00.000003Z" and got[4]["created_at"] == "1969-12-31T00:00:00Z"


def test_a_version_tie_goes_to_the_greater_op_id_whichever_side_holds_it():
    low, high = OPS
    write = PendingEntry(IDS[0], 7, high, 7, {"id": IDS[0], "title": "pending", "version": 7})
    loser = Seen(IDS[0], loaded_row(IDS[0], 7, "open"), 7, low)
    shown = newest(write, loser)
    assert shown is not None and shown.row is not None and shown.row["title"] == "pending"
    winner = Seen(IDS[0], loaded_row(IDS[0], 7, "open"), 7, high)  # the pending write itself, loaded
    assert newest(write, winner) is winner
    assert newest(write._replace(op_id=low), Seen(IDS[0], None, 7, high)) == Seen(IDS[0], None, 7, high)
    unknown = Seen(IDS[0], loaded_row(IDS[0], 7, "open"), 7, "")  # a cache entry filled without its op_id
    shown = newest(write, unknown)
    assert shown is not None and shown.row is not None and shown.row["title"] == "pending"


def test_a_pending_row_keeps_the_loaded_created_at_when_that_is_earlier():
    write = PendingEntry(IDS[0], 1_800_000_000_000_000, "op", 1_800_000_000_000_000, {"id": IDS[0], "version": 1})
    base = Seen(IDS[0], loaded_row(IDS[0], 1, "open"), 1, "op")
    shown = newest(write, base)
    assert shown is not None and shown.row is not None
    assert shown.row["created_at"] == CREATED and shown.version == write.version
    alone = newest(write, None)
    assert alone is not None and alone.row is not None and alone.row["created_at"] == "2027-01-15T08:00:00Z"
    # over a tombstone: the tombstone's created_at (deletes count, CONTRACT section 3)
    over = newest(write, Seen(IDS[0], None, 5, "op", True, CREATED))
    assert over is not None and over.row is not None and over.row["created_at"] == CREATED
    tie = Seen(IDS[0], None, write.version, "op")
    assert newest(write, tie) == tie  # the same write, loaded


VERSIONS = st.integers(0, 253402300799 * 1_000_000)  # up to the year 9999


@given(VERSIONS, VERSIONS)
def test_pending_timestamps_read_and_order_as_the_database_will_show_them(a, b):
    from chalicelib.ids import version_to_ts
    from chalicelib.readers.pending_entry import shown_ts, ts_key
    from chalicelib.readers.sql import ts_out

    at = version_to_ts(a)
    stored = f"{at[:10]} {at[11:26]}"  # the form the loader stores (commands.make_command)
    assert shown_ts(a) == ts_out(stored)
    assert (ts_key(shown_ts(a)) < ts_key(shown_ts(b))) == (a < b)
