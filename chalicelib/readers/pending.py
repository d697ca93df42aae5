"""Pending writes: what a caller wrote and the transport accepted, kept beside the read cache so
the caller's own reads show it before the loader and the replicas do (CONTRACT section 3).

Where they live
    One Redis hash per owner, beside the cache's entries: its fields, values and codec are
    `readers/pending_entry.py`; the Lua that writes and drops them, `readers/scripts.py`; the merge
    of a pending write with what is loaded, `readers/pending_merge.py`.

Writing
    After the transport accepted a request's commands (never instead of it), one EVALSHA
    (RECORD) writes each key's entry if its (version, op_id) is newer than the one stored, the
    rule the cache and the loader keep, and sets the hash to expire PENDING_TTL_SECONDS after
    its latest write. For a POST's new ids (nothing can be stored for them) it also sets their
    cache entries to "absent" unless one exists. A failure is logged and counted
    (`PendingRecordFailures`, EMF) and the write is still accepted: reads then fall back to what
    is loaded (eventual).

Expiring
    An entry is ignored, and removed by the next read that meets it, once its version is older
    than PENDING_TTL_SECONDS; it is removed sooner (DROP, guarded by (version, op_id): never a
    newer entry) once a replica read shows that write or a newer one, after that read filled the
    key's cache entry from what it showed (so no older cache entry outlives the pending one). An
    answer from the master (failover while replicas exist) is not enough: replicas lag behind.

Reading
    A loaded (or cached) state and a pending write are ordered as the loader orders their
    commands, by (version, op_id) (`ordering.loaded_wins`): reads carry the stored op_id, so two
    writes of one version (two instances, one `min_version`) show the op_id winner wherever it is.
    `GET /todos/{id}` and `GET /me`: one round trip (`scripts.read_pair`) returns the cache entry and the
    pending entry together, and the newer of the two answers (the keys and the two commands
    are built once per row and kept, bounded: `KEYS`). The replica is read (and the cache
    filled) when neither is there, or neither reaches `min_version`, or the pending write is a
    put and the cache does not hold what is stored (no entry, or a tombstone's, whose created_at
    the put shows), or the cache entry ties the pending write's version without an op_id (filled
    before reads carried op_ids: which of the two wins is not known); the newest of the three
    answers. A pending entry is the caller's newest recorded write, so a replica can only be
    newer when a later write was not recorded (reads are eventual then). `GET /todos`: one
    HGETALL, and `merge_page` merges the caller's pending todos into the keyset page, which
    always reads the replica: that is where most entries are seen and dropped. The first page
    query is sent first, naming the pending ids the process last saw for the owner
    (`readers/pending_guess.py`), and the HGETALL after it, its reply read while the database
    runs the query; the merge queries again where that guess did not cover the reply. A reply
    the same as the owner's last one is not parsed again (`readers/pending_reply.py`). A page
    reads no op_id: the rows that tie their pending write's version are read again with it
    (`Reader.seen_many`), only then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from chalicelib.ordering import loaded_wins
from chalicelib.readers import Filters, Row, Seen, ids_and_rows, state_filter
from chalicelib.readers.cache import ABSENT, PRESENT, CachedReader, cached_seen, dump_row, entry_key
from chalicelib.readers.pending_entry import (
    Bounded,
    PendingEntry,
    entries_of,
    entry_for,
    field_of,
    parse_pending,
    pending_key,
)
from chalicelib.readers.pending_guess import NO_GUESS, Guesses, Page, learn, plan, remember
from chalicelib.readers.pending_merge import Fetched, merge_page, newer_state, newest, without_replica
from chalicelib.readers.pending_reply import kept_reply, page_entries
from chalicelib.readers.scripts import DROP, RECORD, guarded_set, pair_payload, read_pair, run_script
from chalicelib.resources import RESOURCES, Resource, on_change

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)


class ReadKeys(NamedTuple):
    """What a read by key sends for one row: its cache entry, its owner's pending hash and field,
    the two commands encoded (`scripts.pair_payload`), and the resource declared."""

    key: str
    hash_key: str
    field: str
    payload: bytes
    resource: Resource


# (prefix, resource, owner, id) -> its ReadKeys, built once per process; the oldest goes first past
# its size, and all when a resource is (re)declared (its entries' keys name its shape).
KEYS: Bounded[tuple[str, str, str, str], ReadKeys] = Bounded(4096)


def keys_of(prefix: str, resource: str, owner: str, id_: str) -> ReadKeys:
    """The ReadKeys of a row, built and kept in KEYS (PendingWrites.get looks there first)."""
    declared = RESOURCES[resource]
    key, hash_key, field = entry_key(resource, owner, id_, prefix), pending_key(owner, prefix), field_of(declared, id_)
    made = ReadKeys(key, hash_key, field, pair_payload(key, hash_key, field), declared)
    KEYS.put((prefix, resource, owner, id_), made)
    return made


on_change(lambda name: KEYS.clear())


class PendingWrites:
    """Records accepted commands and answers the owner's reads with them (module docstring).

    Built over the CachedReader: it shares its Redis client, breaker and key prefix, fills its
    entries, and reads the database through its inner reader (replicas)."""

    def __init__(
        self,
        cache: CachedReader,
        ttl: float,
        *,
        clock: Callable[[], int] = time.time_ns,
        on_failure: Callable[[int], None] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("the pending TTL must be positive")
        self.cache = cache
        self.client = cache.client
        self.breaker = cache.breaker
        self.prefix = cache.prefix
        self.inner = cache.inner
        self.ttl_ms = int(ttl * 1000)
        self.ttl_us = int(ttl * 1_000_000)
        self.clock = clock
        self.on_failure = on_failure or _count_failure
        self.failures = 0
        # Per (owner's hash, resource): what this process last saw of the pending rows (Guess).
        self._guesses: Guesses = {}

    # -- writes --------------------------------------------------------------------------------
    def record(self, commands: Sequence[WriteCommand], new_ids: bool = False) -> bool:
        """Record accepted commands (one EVALSHA per owner: one per request). Never raises.

        `new_ids`: the rows are new (a POST's UUIDv7 ids, no Idempotency-Key), so nothing is
        stored for them: the same EVALSHA sets their cache entries to "absent" (unless one
        exists), and the writer's next read by key answers from Redis alone, without the
        database (a pending put otherwise reads what is stored, for its created_at)."""
        by_owner: dict[str, list[WriteCommand]] = {}
        for command in commands:
            by_owner.setdefault(command.owner, []).append(command)
        ok = True
        for owner, mine in by_owner.items():
            if not self.breaker.allows():
                self._failed(len(mine), None)
                ok = False
                continue
            args: list[Any] = [self.ttl_ms]
            for entry in map(entry_for, mine):
                args.extend(entry)
            keys = [pending_key(owner, self.prefix)]
            if new_ids:
                keys += [entry_key(c.resource, owner, c.id, self.prefix) for c in mine if RESOURCES[c.resource].by_id]
                args.append(self.cache.negative_ttl_ms)
            try:
                run_script(self.client, RECORD, keys, args)
            except Exception as exc:  # noqa: BLE001 - the write is accepted; reads fall back to eventual
                self.breaker.failed(exc, "recording pending writes")
                self._failed(len(mine), exc)
                ok = False
            else:
                self.breaker.succeeded()
                remember(self._guesses, pending_key(owner, self.prefix), mine)
        return ok

    def _failed(self, count: int, exc: BaseException | None) -> None:
        self.failures += count
        log.warning("%d pending write(s) not recorded; their writer reads what is loaded: %r", count, exc)
        self.on_failure(count)

    # -- reads by key --------------------------------------------------------------------------
    def get(self, resource: str, owner: str, id_: str, min_version: int | None = None) -> Seen:
        """The owner's row of `resource` by key: pending, cached and replica states (module docstring)."""
        keys = KEYS.get((self.prefix, resource, owner, id_))
        if keys is None:
            keys = keys_of(self.prefix, resource, owner, id_)
        breaker = self.breaker
        if breaker.open_until and not breaker.allows():
            return self.inner.seen(resource, owner, id_)
        try:
            raw_entry, raw_pending = read_pair(self.client, keys.key, keys.hash_key, keys.field, keys.payload)
        except Exception as exc:  # noqa: BLE001 - reads fall back to the database
            breaker.failed(exc, "reading")
            return self.inner.seen(resource, owner, id_)
        if breaker.open_until:
            breaker.succeeded()
        write = self._pending(keys, id_, raw_pending) if raw_pending else None
        cached = cached_seen(id_, raw_entry)
        best = cached if write is None else without_replica(write, cached)
        if best is not None and (min_version is None or best.version >= min_version):
            # The pending write is the caller's newest recorded one: the replica could only be
            # newer if a later write failed to be recorded (then reads are eventual anyway).
            if cached is not None:
                self.cache.hits += 1
            return best
        return self._loaded(keys, resource, owner, id_, write, cached)

    def get_todo(self, owner: str, todo_id: str, min_version: int | None = None) -> Seen:
        return self.get("todos", owner, todo_id, min_version)

    def get_profile(self, owner: str, min_version: int | None = None) -> Seen:
        return self.get("profiles", owner, owner, min_version)

    def _pending(self, keys: ReadKeys, id_: str, raw: Any) -> PendingEntry | None:
        """The usable pending write of a read by key's HGET reply; an expired one is dropped."""
        write = parse_pending(id_, raw)
        if write is not None and self._expired(write):
            self._drop(keys.hash_key, [(keys.field, write.version, write.op_id)])
            return None
        return None if write is None else write.decoded(keys.resource)

    def _loaded(
        self, keys: ReadKeys, resource: str, owner: str, id_: str, write: PendingEntry | None, cached: Seen | None
    ) -> Seen:
        """A read by key that Redis alone cannot answer: the replica's state, filled into the
        cache, and the pending write dropped once the replica shows it; the newest answers."""
        self.cache.misses += 1
        seen = self.inner.seen(resource, owner, id_)
        filled = self._fill((keys.key, seen))
        if write is not None and filled and seen.settled and loaded_wins(seen.order, write.order):
            self._drop(keys.hash_key, [(keys.field, seen.version, seen.op_id)])
        best = newest(write, seen if cached is None else newer_state(cached, seen))
        assert best is not None
        return best

    def _fill(self, *states: tuple[str, Seen]) -> bool:
        """Fill the cache entries (key, state) a read found, guarded by (version, op_id) so that
        nothing newer is replaced; whether Redis took them. A pending entry a read showed is
        dropped only after this: once it is gone, the cache must not hold an older state."""
        present = [(k, PRESENT, s.version, s.op_id, dump_row(s.row)) for k, s in states if s.row is not None]
        absent = [(k, ABSENT, s.version, s.op_id, b"") for k, s in states if s.row is None]
        try:
            for entries, ttl_ms in ((present, self.cache.ttl_ms), (absent, self.cache.negative_ttl_ms)):
                if entries:
                    guarded_set(self.client, "fill", ttl_ms, entries)
        except Exception as exc:  # noqa: BLE001 - the row is answered all the same
            self.breaker.failed(exc, "filling")
            return False
        return True

    # -- pages -----------------------------------------------------------------------------------
    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> list[Row]:
        return self.list_rows("todos", owner, after, limit, state_filter(state))

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        """The owner's page of `resource` with their pending writes merged (`limit` rows at most).

        With a client that can (RespClient.send), the page query is sent first, naming the
        pending ids this process last saw for the owner (none for an owner it knows nothing
        of), then the HGETALL; its reply is read and parsed (or taken from the owner's last one,
        `pending_reply`) while the database runs the query. In that order the database starts
        at once, and the HGETALL's send (the larger part of its cost on loopback, where the
        receiver's wakeup happens inside the sender's syscall) overlaps the query instead of
        delaying it: the merged page of the bench's row 7 measured 3-10 % nearer the uncached
        page in process, 2026-12-07 (6 A/B runs of the read, the two orders interleaved in one
        process; through app.app, 2 runs of 3 favoured it, the third was within noise). A Redis
        failure then finds the query sent: its rows are read (the connection clear) and the
        loaded page answers. merge_page queries again only when the reply holds a pending id
        in the page that the query did not name."""
        if not self.breaker.allows():
            return self.inner.list_rows(resource, owner, after, limit, filters)
        declared = RESOURCES[resource]
        hash_key = pending_key(owner, self.prefix)
        page = Page(declared, owner, after, limit, filters)
        send = getattr(self.client, "send", None)
        if send is None:
            try:
                raw = self.client.execute_command("HGETALL", hash_key)
            except Exception as exc:  # noqa: BLE001 - reads fall back to the database
                self.breaker.failed(exc, "reading")
                return self.inner.list_rows(resource, owner, after, limit, filters)
            self.breaker.succeeded()
            pending, expired = entries_of(raw, after, declared, self.clock() // 1000 - self.ttl_us, hash_key)
            return self._merged(hash_key, page, pending, expired, None)[0]
        guess = self._guesses.get((hash_key, resource), NO_GUESS)
        n, ids = plan(guess, page)
        rows = self.inner.start_list_seen(resource, owner, after, n, filters, ids)  # first (docstring)
        kept = kept_reply(hash_key, declared)
        try:  # while the database runs the page query (nothing between send and result)
            deferred = send("HGETALL", hash_key)
            raw = deferred.result(None if kept is None else kept.wire)  # SAME: the kept reply's bytes
        except Exception as exc:  # noqa: BLE001 - reads fall back to the database
            self.breaker.failed(exc, "reading")
            rows()  # the connection is read clear before it is used again
            return self.inner.list_rows(resource, owner, after, limit, filters)
        self.breaker.succeeded()
        made = page_entries(raw, after, declared, self.clock() // 1000 - self.ttl_us, hash_key, deferred.wire, kept)
        # Rows a newer pending write replaces need only their created_at (PendingEntry.shown):
        # only usable entries replace a row (those not decoded yet, past ID_CAP, come whole).
        first = Fetched(rows(made.replaced), n, frozenset(ids))
        shown, settled = self._merged(hash_key, page, made.pending, made.expired, first)
        if settled or guess.source is not made or guess.page != page.key:  # else: learnt from these very entries
            learn(self._guesses, hash_key, page, made.pending, first, shown, made.deletes, made)
        return shown

    def _merged(
        self,
        hash_key: str,
        page: Page,
        pending: dict[str, PendingEntry],
        expired: list[tuple[str, int, str]],
        first: Fetched | None,
    ) -> tuple[list[Row], bool]:
        """The merged page, and whether it met a pending write that is loaded (or expired): the
        first batch then taught something new (`learn`), and entries are dropped."""
        resource, owner, filters = page.resource, page.owner, page.filters
        name = resource.name
        drops: list[Seen] = []
        if not pending and first is None:
            rows = self.inner.list_rows(name, owner, page.after, page.limit, filters)
        elif not pending and first is not None and not first.ids:  # live rows matching the filters only
            rows = [r for r in ids_and_rows(first.rows)[1] if r is not None]
        else:
            rows, drops = merge_page(
                lambda cursor, n, ids: self.inner.list_seen(name, owner, cursor, n, filters, ids),
                pending,
                page.after,
                page.limit,
                filters,
                first=first,
                orders=lambda ids: self.inner.seen_many(name, owner, ids),
                resource=resource,
            )
        settled = bool(drops or expired)
        if drops and not self._fill(*((entry_key(name, owner, s.id, self.prefix), s) for s in drops)):
            drops = []  # the cache may still hold an older state: the entries stay (until their TTL)
        if expired or drops:
            shown = [(s.id, s.version, s.op_id) for s in drops]
            self._drop(hash_key, [(field_of(resource, i), v, op) for i, v, op in (*expired, *shown)])
        return rows, settled

    # -- housekeeping ----------------------------------------------------------------------------
    def _expired(self, write: PendingEntry) -> bool:
        return write.version + self.ttl_us < self.clock() // 1000

    def _drop(self, hash_key: str, fields: Sequence[tuple[str, int, str]]) -> None:
        """Remove the entries (field, version, op_id) a settled read showed, or that expired,
        unless a newer write was recorded since (DROP)."""
        args: list[Any] = []
        for field, version, op_id in fields:
            args += [field, version, op_id]
        try:
            run_script(self.client, DROP, [hash_key], args)
        except Exception as exc:  # noqa: BLE001 - the entry expires with its TTL all the same
            self.breaker.failed(exc, "dropping pending writes")


def _count_failure(count: int) -> None:
    from chalicelib import observe

    observe.metrics({"Stage": observe.stage()}, {"PendingRecordFailures": (count, "Count")}, type="pending")
