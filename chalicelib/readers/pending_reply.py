"""What a page read makes of an owner's HGETALL reply, kept per process for the next page read
of that owner (`Replies`): until the owner writes again, or an entry is dropped, every page read
gets the same reply, and parsing it again (`entries_of`) would give the same entries.

A reply is taken from what is kept only when it is the same list of bytes (or, unparsed, the
same bytes on the wire: `Deferred.result(same_as=...)`), read from the same cursor, and none of
its entries has expired since. Only a reply whose entries were all usable
and decoded, each named by a canonical id, is kept (an entry that cannot be used is logged on
every read, as everywhere), and only up to `ID_CAP` entries. Bounded per process (`pending_entry.Bounded`); forgotten when a
resource is (re)declared.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from chalicelib.readers.pending_entry import ID_CAP, Bounded, PendingEntry, entries_of, shape_of
from chalicelib.readers.resp_reply import SAME
from chalicelib.resources import Resource, on_change


class PageEntries(NamedTuple):
    """An HGETALL reply's entries of one resource, as a page read uses them."""

    pending: dict[str, PendingEntry]  # the usable entries by id (never changed once made)
    expired: list[tuple[str, int, str]]  # (id, version, op_id) of the entries past their TTL
    replaced: dict[str, int]  # id -> version of the decoded entries and deletes (rows they replace: created_at only)
    deletes: frozenset[str]  # the ids of the deletes among them


class Kept(NamedTuple):
    """A reply kept for an owner's hash, and the entries it made."""

    raw: list[Any]
    wire: bytes | None  # the reply's bytes (`Deferred.wire`): the next reply is compared with them unparsed
    after: str | None
    oldest: int  # the lowest version among the entries: they are all usable while it has not expired
    entries: PageEntries


# (owner's hash, resource) -> the last reply kept for it.
KEPT: Bounded[tuple[str, str], Kept] = Bounded(1024)
on_change(lambda name: KEPT.clear())


def kept_reply(hash_key: str, resource: Resource) -> Kept | None:
    """The reply kept for the owner's hash, if any: its bytes go to `Deferred.result(same_as=...)`,
    and it to `page_entries` (the same one: another thread may keep another reply meanwhile)."""
    return KEPT.get((hash_key, resource.name))


def page_entries(
    raw: Any,
    after: str | None,
    resource: Resource,
    oldest: int,
    hash_key: str,
    wire: bytes | None = None,
    kept: Kept | None = None,
) -> PageEntries:
    """`entries_of(raw, ...)` as PageEntries, from what is kept when `raw` is the reply kept
    for the owner's hash (module docstring). `raw` is SAME (`Deferred.result`) when the reply
    was the bytes of `kept` (`kept_reply`'s answer); `wire` is the bytes of a reply parsed
    into `raw`."""
    key = (hash_key, resource.name)
    if raw is SAME:
        assert kept is not None, "SAME answers the bytes of the reply kept"
        raw, wire = kept.raw, kept.wire
    else:
        kept = KEPT.get(key)
    if kept is not None and kept.after == after and kept.oldest >= oldest and kept.raw == raw:
        return kept.entries
    pending, expired = entries_of(raw, after, resource, oldest, hash_key)
    replaced = {i: w.version for i, w in pending.items() if type(w.data) is not bytes}
    made = PageEntries(pending, expired, replaced, frozenset(i for i, w in pending.items() if w.data is None))
    if type(raw) is list and len(raw) <= 4 * ID_CAP and not expired and len(replaced) == len(pending):
        # Every entry of the resource usable and decoded (none left as bytes, none ignored):
        # the same reply makes the same entries. Kept only when each is named by a canonical
        # id, as PARSED keeps entries: a kept reply's ids go to SQL unchecked.
        tag = resource.tag.encode("ascii") + b":"
        names = [name for name in raw[::2] if name[: len(tag)] == tag]
        canonical = shape_of(resource).field_pattern.fullmatch
        if len(names) == len(pending) <= ID_CAP and all(canonical(name) for name in names):
            low = min((w.version for w in pending.values()), default=oldest)
            KEPT.put(key, Kept(raw, wire, after, low, made))
    return made
