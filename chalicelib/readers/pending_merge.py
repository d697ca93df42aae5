"""The merge of pending writes with what is loaded, in the loader's order (`ordering.loaded_wins`):
for a read by key, a pending write with the cache entry (`without_replica`) or with the stored
state (`newest`, `newer_state`); for a page, the caller's pending writes with the keyset page
read from the replica (`merge_page`, which also names the settled states whose entries are to
be dropped). The reads that use it are `readers/pending.py`; the entries,
`readers/pending_entry.py`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import NamedTuple

from chalicelib.ordering import loaded_wins, newer
from chalicelib.readers import Filters, Row, Seen, SeenRows, ids_and_rows
from chalicelib.readers.pending_entry import ID_CAP, PendingEntry
from chalicelib.resources import Resource


def newest(pending: PendingEntry | None, loaded: Seen | None) -> Seen | None:
    """The newer of a pending write and a loaded (or cached) state, in the loader's order
    (`loaded_wins`: the loaded one when it is the pending write itself, or newer)."""
    if pending is None:
        return loaded
    if loaded is not None and loaded_wins(loaded.order, pending.order):
        return loaded
    return tuple.__new__(Seen, (pending.id, pending.shown(loaded), pending.version, pending.op_id, False, None))


def without_replica(write: PendingEntry, cached: Seen | None) -> Seen | None:
    """What a read by key answers from a (usable) pending write and the cache entry alone, or
    None when the stored state is needed: a put with no cache entry, or over a cached tombstone
    (its created_at is what the put will show, and neither holds it), and a version tie with an
    entry filled without its op_id (which of the two wins is not known)."""
    if cached is None:
        return newest(write, None) if write.data is None else None
    if cached.version == write.version and not cached.op_id:
        return None
    if write.data is not None and cached.version and cached.stored_created_at is None:
        if not loaded_wins(cached.order, write.order):
            return None
    return newest(write, cached)


def newer_state(cached: Seen, seen: Seen) -> Seen:
    """The newer of a cache entry and the replica's state, the replica's on an equal order (its
    op_id and a tombstone's created_at are known). A cached tombstone newer than a lagging
    replica takes the replica's created_at, the best known."""
    if not newer(cached.order, seen.order):
        return seen
    if cached.stored_created_at is None and seen.stored_created_at is not None:
        return cached._replace(created_at=seen.stored_created_at)
    return cached


# -- the page merge ------------------------------------------------------------------------------
Fetch = Callable[[str | None, int, Collection[str]], Sequence[Seen]]
Orders = Callable[[Collection[str]], Mapping[str, Seen]]  # Reader.seen_many for the owner


class Fetched(NamedTuple):
    """A batch fetched before the pending writes were known: `fetch(after, limit, ids)`'s answer."""

    rows: Sequence[Seen]
    limit: int
    ids: Collection[str]


def matches(row: Row, filters: Filters) -> bool:
    """Whether a row holds every filtered field's value (a page's `state`, `list_id`)."""
    for field, value in filters.items():
        if row.get(field) != value:
            return False
    return True


def merge_page(
    fetch: Fetch,
    pending: Mapping[str, PendingEntry],
    after: str | None,
    want: int,
    filters: Filters,
    id_cap: int = ID_CAP,
    first: Fetched | None = None,
    orders: Orders | None = None,
    *,
    resource: Resource,
) -> tuple[list[Row], list[Seen]]:
    """The first `want` rows of `resource` with id > after, as the caller would see them were
    every pending write loaded, and the settled loaded states that show a pending write or a
    newer one (whose entries are to be dropped).
    A loaded state and a pending write are ordered as the loader orders commands (`loaded_wins`);
    a pending entry whose row is not usable (`PendingEntry.decoded`) is ignored: its key shows
    what is loaded.

    `fetch(after, limit, ids)` is `Reader.list_seen` for the owner and `filters`: loaded rows
    matching them and the stored state (tombstones included) of each of `ids`. Rows are fetched
    until the page is full: a pending delete or a change of a filtered field can take rows out.
    `first`, when given, is the first batch, fetched from `after` while the pending writes were
    read (naming the ids a guess gave): it is used as far as it knows every pending id's state.
    Its rows replaced by a pending write (`SeenLater`'s `replaced`) must be of usable entries.
    A page's rows need not carry their op_id: a row whose version ties its pending write's and
    has none is read again with it by `orders` (`Reader.seen_many`), once for all such rows
    of its batch, only when there is one.
    """
    ahead = sorted(pending) if after is None else sorted(i for i in pending if i > after)
    out: list[Row] = []
    drops: list[Seen] = []
    reread: dict[str, Seen] = {}  # stored states read again with their op_ids (version ties)
    cursor = after
    while True:
        if first is not None:
            asked = first.ids if type(first.ids) is frozenset else frozenset(first.ids)
            missing = None if asked.issuperset(ahead) else next(i for i in ahead if i not in asked)
            known = _known(first.rows, first.limit, first.ids, missing, cursor)
            first = None
        else:
            known = _fetched(fetch, pending, ahead, cursor, want - len(out), filters, id_cap)
        if known is None:
            continue  # nothing known: fetch again, naming the pending ids
        batch, upper = known
        named = ahead if upper is None or not ahead or ahead[-1] <= upper else [i for i in ahead if i <= upper]
        if _walk(batch, named, pending, filters, orders, resource, want, out, drops, reread) or upper is None:
            return out, drops
        cursor = upper
        ahead = [i for i in ahead if i > cursor]


Known = tuple[Sequence[Seen], str | None]  # a batch's rows up to `upper`, and upper (None: the end)


def _fetched(
    fetch: Fetch,
    pending: Mapping[str, PendingEntry],
    ahead: list[str],
    cursor: str | None,
    room: int,
    filters: Filters,
    id_cap: int,
) -> Known | None:
    """The next batch after `cursor`, naming the first `id_cap` pending ids ahead, as far as it
    answers (`_known`); `room`: how many rows the page still wants."""
    ids = ahead[:id_cap]
    # Rows the pending writes may take out of the page (deletes; any, under a filter) are
    # fetched beyond it at once, so one query usually fills the page.
    slack = len(ids) if filters else sum(1 for i in ids if pending[i].data is None)
    limit = room + slack
    missing = ahead[id_cap] if len(ahead) > id_cap else None
    return _known(fetch(cursor, limit, ids), limit, ids, missing, cursor)


def _known(
    batch: Sequence[Seen], limit: int, asked: Collection[str], missing: str | None, cursor: str | None
) -> Known | None:
    """A batch fetched with `limit` rows at most, naming `asked`, cut to what it answers: its
    rows up to `upper`, the last id up to which the stored state of every pending id is known
    (None: nothing is stored beyond the batch), and upper; None when it knows nothing.
    `missing` is the first pending id the batch did not name."""
    ids = ids_and_rows(batch)[0]
    upper = ids[-1] if len(ids) >= limit else None  # None: nothing stored beyond
    if missing is not None and (upper is None or upper >= missing):
        # The stored state of `missing` (and later pending ids) is not known: the batch
        # answers up to the last id it knows below it.
        known = [b.id for b in batch if b.id < missing]
        known += [i for i in asked if i < missing and (cursor is None or i > cursor)]
        if not known:
            return None
        upper = max(known)
    if upper is not None:
        cut = bisect_right(ids, upper)
        if cut < len(ids):
            batch = batch[:cut]
    return batch, upper


def _walk(
    batch: Sequence[Seen],
    named: Sequence[str],
    pending: Mapping[str, PendingEntry],
    filters: Filters,
    orders: Orders | None,
    resource: Resource,
    want: int,
    out: list[Row],
    drops: list[Seen],
    reread: dict[str, Seen],
) -> bool:
    """Add to `out` (and `drops`) the rows of a batch and of the pending ids `named` up to its
    end, both in id order; whether the page is full (`want` rows). The rows between two pending
    ids go in as one slice (`_unnamed`); only a pending id's place is looked for (bisect)."""
    ids, rows = ids_and_rows(batch)
    versions = batch.versions if type(batch) is SeenRows else None
    whole = not filters and None not in rows  # every row no pending write names goes in
    pos, size = 0, len(batch)
    for key in named:
        at = bisect_left(ids, key, pos)
        if at > pos:
            if whole:
                out += rows[pos : min(at, pos + want - len(out))]  # type: ignore[arg-type]  # whole: no None
                if len(out) == want:
                    return True
            elif _unnamed(rows, pos, at, filters, want, out):
                return True
        entry = pending[key]
        write = entry.decoded(resource) if type(entry.data) is bytes else entry
        if at < size and ids[at] == key:  # a pending write over a stored state
            pos = at + 1
            if versions is not None and write is not None and versions[at] < write.version:
                # The common case: the pending write is newer, whatever the op_ids; of what is
                # stored it shows only the created_at (a live row's, or a tombstone's).
                stored = rows[at]
                row = write.shown_at(stored["created_at"] if stored is not None else batch.created.get(key))  # type: ignore[attr-defined]
            else:
                row = _over(batch[at], write, batch, named, pending, orders, drops, reread)
        else:  # a pending write of a key with nothing stored
            pos = at
            row = write.shown(None) if write is not None else None
        if row is not None and (not filters or matches(row, filters)):
            out.append(row)
            if len(out) == want:
                return True
    if whole:
        out += rows[pos : pos + want - len(out)]  # type: ignore[arg-type]  # whole: no None
        return len(out) == want
    return pos < size and _unnamed(rows, pos, size, filters, want, out)


def _unnamed(rows: list[Row | None], start: int, stop: int, filters: Filters, want: int, out: list[Row]) -> bool:
    """Add to `out` the rows `rows[start:stop]`, which no pending write names (tombstones, of
    ids named to the query, and rows a filter takes out left out); whether the page is full."""
    out += [r for r in rows[start:stop] if r is not None and (not filters or matches(r, filters))][: want - len(out)]
    return len(out) == want


def _over(
    base: Seen,
    write: PendingEntry | None,
    batch: Sequence[Seen],
    named: Sequence[str],
    pending: Mapping[str, PendingEntry],
    orders: Orders | None,
    drops: list[Seen],
    reread: dict[str, Seen],
) -> Row | None:
    """The row of a pending write (None: not a usable entry) over the stored state `base`, in
    the loader's order; a settled state that shows the write, or a newer one, goes to `drops`."""
    key = base.id
    if write is not None and base.version == write.version and not base.op_id and orders is not None:
        if key not in reread:  # a version tie: the op_ids of this batch's ties, at once
            reread.update(orders(_ties(batch, named, pending)))
        base = reread.get(key, base)
    if write is None:  # not a usable entry: what is loaded
        return base.row
    if loaded_wins((base.version, base.op_id), (write.version, write.op_id)):  # loaded already
        if base.settled:
            drops.append(base)
        return base.row
    return write.shown(base)


def _ties(batch: Sequence[Seen], named: Sequence[str], pending: Mapping[str, PendingEntry]) -> list[str]:
    """The ids of `batch` rows without an op_id whose version ties the pending write of their id."""
    by_id = {s.id: s for s in batch}
    return [i for i in named if (s := by_id.get(i)) is not None and not s.op_id and s.version == pending[i].version]
