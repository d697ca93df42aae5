"""Pending writes: what a caller wrote and the transport accepted, kept beside the read cache so
the caller's own reads show it before the loader and the replicas do (CONTRACT section 3).

Where they live
    One Redis hash per owner, `sluice:v1:pending:{owner}` (owner as in the cache's keys), beside
    the cache's entries. Field `{tag}:{id}` holds a row of the resource declared with that tag
    (`t:{id}` a todo, `l:{id}` a list), `{tag}` the row of a resource with one per owner (`p` the
    profile). The hash is not keyed by the schema: a write recorded by the release before an
    upgrade stays in sight of its writer, its row shown with the fields added since at their
    defaults (`upgraded`), and fields the reading release does not declare left out. A value is
    `STATE|VERSION|OP_ID|CREATED|PAYLOAD`: STATE `p` (a put; PAYLOAD is the row as GET will show
    it, `created_at` being the command's own instant) or `a` (a delete, PAYLOAD empty); CREATED is
    the version (the acceptance time in microseconds) of the earliest pending command of that key.
    A pending row shows as `created_at` the earliest of CREATED and the stored row's (a
    tombstone's included), so every route shows the created_at loading will give.
    An entry a read cannot use (its field's id is not a canonical UUID, its value does not parse,
    its row is not a JSON object with every field a read shows and the entry's own id and
    version: only something else writing into these keys makes one) is ignored and logged on
    every path; that key reads what is loaded, and its id never reaches SQL.

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
    `GET /todos/{id}` and `GET /me`: one EVALSHA (READ_PAIR) returns the cache entry and the
    pending entry together, and the newer of the two answers. The replica is read (and the cache
    filled) when neither is there, or neither reaches `min_version`, or the pending write is a
    put and the cache does not hold what is stored (no entry, or a tombstone's, whose created_at
    the put shows), or the cache entry ties the pending write's version without an op_id (filled
    before reads carried op_ids: which of the two wins is not known); the newest of the three
    answers. A pending entry is the caller's newest recorded write, so a replica can only be
    newer when a later write was not recorded (reads are eventual then). `GET /todos`: one
    HGETALL, and `merge_page` merges the caller's pending todos into the keyset page, which
    always reads the replica: that is where most entries are seen and dropped. The HGETALL's
    reply is read after the first page query, which names the pending ids the process last saw
    for the owner; the merge queries again where that guess did not cover the reply. A page
    reads no op_id: the rows that tie their pending write's version are read again with it
    (`Reader.seen_todos`), only then.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import logging
import re
import time
from bisect import bisect_right
from collections.abc import Callable, Collection, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

from chalicelib.ids import CANONICAL_UUID, version_to_ts
from chalicelib.ordering import LUA_NEWER, Order, loaded_wins, newer
from chalicelib.readers import Filters, Row, Seen, state_filter
from chalicelib.readers.cache import (
    ABSENT,
    PRESENT,
    UNKNOWN,
    CacheClient,
    CachedReader,
    dump_row,
    entry_key,
    owner_part,
    parse_entry,
)
from chalicelib.resources import RESOURCES, Resource, on_change

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)

PROFILE_FIELD = RESOURCES["profiles"].tag
_JSON = json.JSONDecoder()
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_JSON)  # type: ignore[arg-type]
ID_CAP = 64  # pending ids named to the database per page query
GUESSES = 1024  # owners whose pending ids a process remembers for its next page query


class Guess(NamedTuple):
    """What a process last saw of an owner's pending rows of one resource, for its next page
    query (sent before the HGETALL's reply is read): the ids it names, and how many rows to ask for."""

    ids: list[str]  # pending ids, ascending
    deletes: frozenset[str]  # the deletes among them: a loaded row each may take out of a page
    new: frozenset[str] = frozenset()  # puts of nothing stored that the last page showed
    page: tuple[str | None, tuple[tuple[str, str], ...], int] | None = None  # that page's (after, filters, limit)


_NO_GUESS = Guess([], frozenset())

_LUA_HELPERS = (
    LUA_NEWER
    + """
local function fields(value)
  local a = string.find(value, "|", 1, true)
  local b = a and string.find(value, "|", a + 1, true)
  local c = b and string.find(value, "|", b + 1, true)
  local d = c and string.find(value, "|", c + 1, true)
  if not d then return nil end
  local version_text = string.sub(value, a + 1, b - 1)
  return tonumber(version_text), string.sub(value, b + 1, c - 1), string.sub(value, c + 1, d - 1),
    string.sub(value, d + 1), version_text
end
"""
)

RECORD = (
    """
-- Pending writes of one owner (chalicelib/readers/pending.py). KEYS[1]: the owner's hash.
-- ARGV[1]: TTL in ms; then per entry: field, state, version, op_id, payload.
-- An entry is written when (version, op_id) is newer than the stored one; CREATED keeps the
-- smallest version seen for the field. Versions are compared as numbers (exact below 2^53) and
-- written back as the text they came in (Lua would print a large number as 1.8e+15).
-- KEYS[2..]: the cache entries of todos a POST made with new ids (nothing can be stored for
-- them): each is set to "absent" at version 0, unless it exists (any entry is as new), for the
-- last ARGV's milliseconds, so a read by key knows nothing is stored without the database."""
    + _LUA_HELPERS
    + """
local written = 0
local last = #ARGV
if #KEYS > 1 then last = #ARGV - 1 end
for i = 2, last, 5 do
  local field, state, version_text, op_id, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local version = tonumber(version_text)
  local created = version_text
  local write = true
  local current = redis.call("HGET", KEYS[1], field)
  if current then
    local cur_version, cur_op, cur_created, cur_rest, cur_text = fields(current)
    if cur_version then
      if tonumber(cur_created) < version then created = cur_created end
      write = newer(version, op_id, cur_version, cur_op)
      if not write and version < tonumber(cur_created) then
        local a = string.find(current, "|", 1, true)
        redis.call("HSET", KEYS[1], field, string.sub(current, 1, a) .. cur_text .. "|" .. cur_op .. "|" .. version_text .. "|" .. cur_rest)
      end
    end
  end
  if write then
    redis.call("HSET", KEYS[1], field, state .. "|" .. version_text .. "|" .. op_id .. "|" .. created .. "|" .. payload)
    written = written + 1
  end
end
redis.call("PEXPIRE", KEYS[1], ARGV[1])
for k = 2, #KEYS do
  redis.call("SET", KEYS[k], "a|0||", "PX", ARGV[#ARGV], "NX")
end
return written
"""
)

DROP = (
    """
-- Remove pending entries a replica has shown (or that expired). KEYS[1]: the owner's hash;
-- ARGV: field, version, op_id triples. A field is removed only while its entry is not newer, in
-- (version, op_id) order, than that: a write recorded since, or the winner of a version tie
-- the replica does not show yet, stays.
"""
    + _LUA_HELPERS
    + """
local dropped = 0
for i = 1, #ARGV, 3 do
  local current = redis.call("HGET", KEYS[1], ARGV[i])
  if current then
    local cur_version, cur_op = fields(current)
    if cur_version == nil or not newer(cur_version, cur_op, tonumber(ARGV[i + 1]), ARGV[i + 2]) then
      dropped = dropped + redis.call("HDEL", KEYS[1], ARGV[i])
    end
  end
end
return dropped
"""
)

READ_PAIR = """
-- One round trip for a read by key: the cache entry (KEYS[1]) and the pending entry (KEYS[2], ARGV[1]).
return {redis.call("GET", KEYS[1]), redis.call("HGET", KEYS[2], ARGV[1])}
"""

_SHAS = {
    text: hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest() for text in (RECORD, DROP, READ_PAIR)
}


def run_script(client: CacheClient, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """EVALSHA, and EVAL when the server does not have the script (restarted or flushed)."""
    try:
        return client.execute_command("EVALSHA", _SHAS[script], len(keys), *keys, *args)
    except Exception as exc:
        if type(exc).__name__ != "NoScriptError" and not str(exc).startswith("NOSCRIPT"):
            raise
    return client.execute_command("EVAL", script, len(keys), *keys, *args)


def pending_key(owner: str, prefix: str) -> str:
    return f"{prefix}:pending:{owner_part(owner)}"


# -- entries ------------------------------------------------------------------------------------
class PendingEntry(NamedTuple):
    """One accepted, not yet seen write. `data` is its row without created_at (None for a
    delete), or that row's JSON as stored, decoded only when the row is shown."""

    id: str
    version: int
    op_id: str
    created: int  # version of the earliest pending command of this key
    data: Row | bytes | None

    @property
    def order(self) -> Order:
        """(version, op_id): the write's place in the loader's order (`ordering.newer`)."""
        return (self.version, self.op_id)

    @property
    def row(self) -> Row | None:
        data = self.data
        if isinstance(data, bytes):
            text = data.decode("utf-8")
            try:  # the C scanner alone: dump_row's JSON has no whitespace around it
                row, end = _SCAN(text, 0)
            except StopIteration:
                end = -1
            if end != len(text):
                row = _JSON.decode(text)  # anything else: decoded (or refused) as before
            return row if type(row) is dict else dict(row)  # a new dict every time: the caller's own
        return None if data is None else dict(data)

    def decoded(self, resource: Resource) -> PendingEntry | None:
        """This entry with its stored row decoded once (reads of `row` then copy that dict), or
        None, logged, when what is stored is not a usable row of `resource` (`usable_row`): such
        an entry is ignored, like one whose fields do not parse. A row recorded by another
        release is shown in this one's shape (`upgraded`)."""
        if type(self.data) is not bytes:
            return self
        try:
            row = self.row
        except (ValueError, TypeError):  # UnicodeDecodeError, JSONDecodeError; TypeError: not an object
            row = None
        if type(row) is dict:
            row = upgraded(resource, row)
        if type(row) is not dict or not usable_row(resource, row, self.id, self.version):
            log.warning("pending entry %s is not a row of %s; ignored", self.id, resource.name)
            return None
        return tuple.__new__(PendingEntry, (self.id, self.version, self.op_id, self.created, row))

    def shown(self, base: Seen | None) -> Row | None:
        """The row GET shows for this write over `base` (the loaded state it replaces): its
        created_at is the earliest of the pending commands' and what is stored (a live row's or
        a tombstone's), as the loader will make it (CONTRACT section 3)."""
        data = self.data
        if data is None:
            return None
        row = dict(data) if type(data) is dict else self.row
        assert row is not None
        # The payload carries its own command's instant; an earlier pending command of the key,
        # or the stored row's created_at, is earlier still.
        if self.created != self.version or "created_at" not in row:
            row["created_at"] = _shown_ts(self.created)
        stored = base.stored_created_at if base is not None else None
        if stored is not None and _earlier(stored, row["created_at"]):
            row["created_at"] = stored
        return row


class _Shape(NamedTuple):
    fields: frozenset[str]
    choices: tuple[tuple[str, frozenset[str]], ...]
    defaults: dict[str, Any]  # of the fields added after the resource: a row recorded by an older release lacks them
    field_pattern: re.Pattern[bytes]  # the hash field of one of its rows: tag:id (or tag alone)


_SHAPES: dict[str, _Shape] = {}


def shape_of(resource: Resource) -> _Shape:
    made = _SHAPES.get(resource.name)
    if made is None:
        rules, defaults = resource.rules(), resource.defaults()
        tag = re.escape(resource.tag.encode("ascii"))
        added = {name: defaults[name] for name, rule in rules.items() if rule.since > resource.since}
        made = _SHAPES[resource.name] = _Shape(
            frozenset(resource.read_fields),
            tuple((name, frozenset(rule.choices)) for name, rule in rules.items() if rule.kind == "choice"),
            added,
            re.compile(tag + b":(" + CANONICAL_UUID.pattern.encode("ascii") + b")" if resource.by_id else tag),
        )
    return made


on_change(lambda name: _SHAPES.pop(name, None))


def upgraded(resource: Resource, row: Row) -> Row:
    """A pending row as this release shows `resource`: fields added after the resource appeared
    that it lacks (recorded by an older release) take their defaults, fields this release does
    not declare are left out. A row lacking any other field stays short, and unusable."""
    made = shape_of(resource)
    if row.keys() == made.fields:  # the usual case: recorded by this release
        return row
    out = {name: value for name, value in row.items() if name in made.fields}
    for name, value in made.defaults.items():
        if name not in out:
            out[name] = list(value) if type(value) is list else value
    return out


def usable_row(resource: Resource, row: Row, id_: str, version: int) -> bool:
    """Whether a pending entry's decoded row can be shown as `resource`'s row `id_` at `version`:
    every field a read shows is there, the id and version are the entry's own, each choice field
    holds one of its choices (the page's `state` filter) and the timestamps have the shape reads
    show (`_stamp`: what `_earlier` compares). Only RECORD writes these rows, from validated
    commands; this catches what anything else wrote into the keys without validating every field
    again on every read (a page decodes up to 64 entries while its query runs)."""
    shape = shape_of(resource)
    if not row.keys() >= shape.fields:
        return False
    if resource.by_id and row["id"] != id_:
        return False
    if type(row["version"]) is not int or row["version"] != version:
        return False
    for name, choices in shape.choices:
        value = row[name]
        if type(value) is not str or value not in choices:
            return False
    return _stamp(row["created_at"]) and _stamp(row["updated_at"])


def _stamp(value: Any) -> bool:
    """Whether `value` has the shape of a timestamp as reads show it (`_shown_ts`, sql.ts_out):
    YYYY-MM-DDTHH:MM:SS, then a 6-digit fraction or none, and Z."""
    return type(value) is str and len(value) in (20, 27) and value[10] == "T" and value[-1] == "Z"


def _earlier(a: str, b: str) -> bool:
    """Whether timestamp `a` is before `b`, both as reads show them."""
    if len(a) == len(b) == 27:  # both with a fraction (the usual case): as text
        return a < b
    return _ts_key(a) < _ts_key(b)


def _ts_key(text: str) -> tuple[str, str]:
    """Orders timestamps as reads show them (YYYY-MM-DDTHH:MM:SS, then a fraction or none)."""
    return (text[:19], text[20:26] if text[19] == "." else "")


def _shown_ts(version: int) -> str:
    """A version's instant as reads show a stored timestamp: RFC 3339 UTC, the fraction only
    when there is one (readers.sql.ts_out)."""
    at = version_to_ts(version)
    return at if version % 1_000_000 else at[:19] + "Z"


def parse_pending(field_id: str, raw: Any) -> PendingEntry | None:
    """The entry of a pending hash field, or None, logged, when its value does not parse (a
    state other than put or delete, a version or CREATED that is not an integer, an op_id that
    is not ASCII). The field's id is the caller's to check (`todo_id_of`)."""
    try:
        state, version, op_id, created, payload = (raw if type(raw) is bytes else bytes(raw)).split(b"|", 4)
        if state == PRESENT:
            data: bytes | None = payload
        elif state == ABSENT:
            data = None
        else:
            raise ValueError(f"state {state!r}")
        # PendingEntry(...) without its Python-level __new__: one per pending write of a page
        return tuple.__new__(PendingEntry, (field_id, int(version), op_id.decode("ascii"), int(created), data))
    except (ValueError, UnicodeDecodeError, TypeError):
        log.warning("pending entry %s does not parse; ignored", field_id)
        return None


def field_of(resource: Resource, id_: str) -> str:
    """The pending hash field of a row of `resource`: `{tag}:{id}`, or `{tag}` alone for a
    resource with one row per owner."""
    return f"{resource.tag}:{id_}" if resource.by_id else resource.tag


def id_of(resource: Resource, name: bytes) -> str | None:
    """The id of a pending hash field `{tag}:{id}` of `resource`, or None, logged, when it is
    not a canonical UUID: such an entry is ignored, and its id never reaches SQL."""
    matched = shape_of(resource).field_pattern.fullmatch(name)
    if matched is not None:
        return matched[1].decode("ascii")
    log.warning("pending entry %r is not named by a canonical id; ignored", bytes(name[:82]))
    return None


def entry_for(command: WriteCommand) -> tuple[str, bytes, int, str, bytes]:
    """(field, state, version, op_id, payload) of a command for RECORD."""
    from chalicelib.readers.cache import row_for_command

    field = field_of(RESOURCES[command.resource], command.id)
    row = row_for_command(command, command.stored_at)  # created_at: this command's instant
    if row is None:
        return (field, ABSENT, command.version, command.op_id, b"")
    return (field, PRESENT, command.version, command.op_id, dump_row(row))


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


# -- the page merge ------------------------------------------------------------------------------
Fetch = Callable[[str | None, int, Collection[str]], Sequence[Seen]]
Orders = Callable[[Collection[str]], Mapping[str, Seen]]  # Reader.seen_many for the owner


class Fetched(NamedTuple):
    """A batch fetched before the pending writes were known: `fetch(after, limit, ids)`'s answer."""

    rows: Sequence[Seen]
    limit: int
    ids: Collection[str]


_END = Seen("\U0010ffff", None, 0)  # after every id (ids are ASCII)
_seen_id = attrgetter("id")


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
    ahead = sorted(i for i in pending if after is None or i > after)
    out: list[Row] = []
    drops: list[Seen] = []
    reread: dict[str, Seen] = {}  # stored states read again with their op_ids (version ties)
    cursor = after
    while True:
        if first is not None:
            batch, limit, asked = first.rows, first.limit, first.ids
            first = None
            missing = next((i for i in ahead if i not in asked), None)
        else:
            ids = ahead[:id_cap]
            # Rows the pending writes may take out of the page (deletes; any, under a filter) are
            # fetched beyond it at once, so one query usually fills the page.
            slack = len(ids) if filters else sum(1 for i in ids if pending[i].data is None)
            limit = want - len(out) + slack
            batch = fetch(cursor, limit, ids)
            asked = ids
            missing = ahead[id_cap] if len(ahead) > id_cap else None
        upper = batch[-1].id if len(batch) >= limit else None  # None: nothing stored beyond
        if missing is not None and (upper is None or upper >= missing):
            # The stored state of `missing` (and later pending ids) is not known: the batch
            # answers up to the last id it knows below it.
            known = [b.id for b in batch if b.id < missing]
            known += [i for i in asked if i < missing and (cursor is None or i > cursor)]
            if not known:
                continue  # nothing known: fetch again, naming the pending ids
            upper = max(known)
        named = ahead if upper is None else [i for i in ahead if i <= upper]
        # Walk the fetched rows (up to `upper`) and the pending ids together, both in id order; the
        # end mark, after every id, takes in the pending ids beyond the last row.
        if upper is not None:
            batch = batch[: bisect_right(batch, upper, key=_seen_id)]
        j, last = 0, len(named)
        for base in (*batch, _END):
            key = base.id
            while j < last and named[j] < key:  # a pending write of a key with nothing stored
                entry = pending[named[j]]
                j += 1
                alone = entry.decoded(resource) if type(entry.data) is bytes else entry
                row = alone.shown(None) if alone is not None else None
                if row is not None and (not filters or matches(row, filters)):
                    out.append(row)
                    if len(out) == want:
                        return out, drops
            if base is _END:
                break
            if j < last and named[j] == key:
                entry = pending[key]
                j += 1
                write = entry.decoded(resource) if type(entry.data) is bytes else entry
                if write is not None and base.version == write.version and not base.op_id and orders is not None:
                    if key not in reread:  # a version tie: the op_ids of this batch's ties, at once
                        reread.update(orders(_ties(batch, named, pending)))
                    base = reread.get(key, base)
                if write is None:  # not a usable entry: what is loaded
                    row = base.row
                elif loaded_wins((base.version, base.op_id), (write.version, write.op_id)):  # loaded already
                    if base.settled:
                        drops.append(base)
                    row = base.row
                else:
                    row = write.shown(base)
            else:
                row = base.row  # the common case: a loaded row no pending write touches
            if row is not None and (not filters or matches(row, filters)):
                out.append(row)
                if len(out) == want:
                    return out, drops
        if upper is None:
            return out, drops
        cursor = upper
        ahead = [i for i in ahead if i > cursor]


def _ties(batch: Sequence[Seen], named: Sequence[str], pending: Mapping[str, PendingEntry]) -> list[str]:
    """The ids of `batch` rows without an op_id whose version ties the pending write of their id."""
    by_id = {s.id: s for s in batch}
    return [i for i in named if (s := by_id.get(i)) is not None and not s.op_id and s.version == pending[i].version]


# -- the store -----------------------------------------------------------------------------------
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
        self._guesses: dict[tuple[str, str], Guess] = {}

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
                self._remember(pending_key(owner, self.prefix), mine)
        return ok

    def _remember(self, hash_key: str, commands: Sequence[WriteCommand]) -> None:
        """Add recorded writes to the owner's guess of their resource (the writer's next page names them)."""
        for resource in {c.resource for c in commands if RESOURCES[c.resource].collection is not None}:
            key = (hash_key, resource)
            guess = self._guesses.pop(key, _NO_GUESS)
            ids = set(guess.ids)
            gone = set(guess.deletes)
            for command in commands:
                if command.resource == resource:
                    ids.add(command.id)
                    (gone.add if command.op == "delete" else gone.discard)(command.id)
            if len(self._guesses) >= GUESSES:
                self._guesses.pop(next(iter(self._guesses)), None)
            self._guesses[key] = Guess(sorted(ids), frozenset(gone), guess.new - gone, guess.page)

    def _failed(self, count: int, exc: BaseException | None) -> None:
        self.failures += count
        log.warning("%d pending write(s) not recorded; their writer reads what is loaded: %r", count, exc)
        self.on_failure(count)

    # -- reads by key --------------------------------------------------------------------------
    def get(self, resource: str, owner: str, id_: str, min_version: int | None = None) -> Seen:
        """The owner's row of `resource` by key: pending, cached and replica states (module docstring)."""
        declared = RESOURCES[resource]
        return self._one(
            entry_key(resource, owner, id_, self.prefix),
            owner,
            field_of(declared, id_),
            id_,
            declared,
            lambda: self.inner.seen(resource, owner, id_),
            min_version,
        )

    def get_todo(self, owner: str, todo_id: str, min_version: int | None = None) -> Seen:
        return self.get("todos", owner, todo_id, min_version)

    def get_profile(self, owner: str, min_version: int | None = None) -> Seen:
        return self.get("profiles", owner, owner, min_version)

    def _one(
        self,
        key: str,
        owner: str,
        field: str,
        id_: str,
        resource: Resource,
        load: Callable[[], Seen],
        min_version: int | None,
    ) -> Seen:
        if not self.breaker.allows():
            return load()
        hash_key = pending_key(owner, self.prefix)
        try:
            raw_entry, raw_pending = run_script(self.client, READ_PAIR, [key, hash_key], [field])
        except Exception as exc:  # noqa: BLE001 - reads fall back to the database
            self.breaker.failed(exc, "reading")
            return load()
        self.breaker.succeeded()
        write = parse_pending(id_, raw_pending) if raw_pending else None
        if write is not None and self._expired(write):
            self._drop(hash_key, [(field, write.version, write.op_id)])
            write = None
        if write is not None:
            write = write.decoded(resource)
        entry = parse_entry(raw_entry)
        cached = Seen(id_, entry[3], entry[1], entry[2]) if entry is not None and entry[0] != UNKNOWN else None
        best = cached if write is None else without_replica(write, cached)
        if best is not None and (min_version is None or best.version >= min_version):
            # The pending write is the caller's newest recorded one: the replica could only be
            # newer if a later write failed to be recorded (then reads are eventual anyway).
            if cached is not None:
                self.cache.hits += 1
            return best
        self.cache.misses += 1
        seen = load()
        filled = self._fill((key, seen))
        if write is not None and filled and seen.settled and loaded_wins(seen.order, write.order):
            self._drop(hash_key, [(field, seen.version, seen.op_id)])
        best = newest(write, seen if cached is None else _newer(cached, seen))
        assert best is not None
        return best

    def _fill(self, *states: tuple[str, Seen]) -> bool:
        """Fill the cache entries (key, state) a read found, guarded by (version, op_id) so that
        nothing newer is replaced; whether Redis took them. A pending entry a read showed is
        dropped only after this: once it is gone, the cache must not hold an older state."""
        from chalicelib.readers.cache import guarded_set

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
        pending ids this process last saw for the owner (none for an owner it knows nothing of);
        the HGETALL is sent, and its reply read and parsed, while the database runs the query.
        merge_page queries again only when the reply holds a pending id in the page that the
        query did not name."""
        if not self.breaker.allows():
            return self.inner.list_rows(resource, owner, after, limit, filters)
        declared = RESOURCES[resource]
        hash_key = pending_key(owner, self.prefix)
        page = _Page(declared, owner, after, limit, filters)
        send = getattr(self.client, "send", None)
        if send is None:
            try:
                raw = self.client.execute_command("HGETALL", hash_key)
            except Exception as exc:  # noqa: BLE001 - reads fall back to the database
                self.breaker.failed(exc, "reading")
                return self.inner.list_rows(resource, owner, after, limit, filters)
            self.breaker.succeeded()
            pending, expired = self._entries(raw, after, declared)
            return self._merged(hash_key, page, pending, expired, None)
        guess = self._guesses.get((hash_key, resource), _NO_GUESS)
        ids = [i for i in guess.ids if after is None or i > after][:ID_CAP]
        # Rows the guessed pending writes may take out of the page are fetched beyond it at once;
        # new rows the same page showed last time take places, so fewer loaded rows are asked
        # for. A wrong guess costs one more query in merge_page, never a wrong page.
        n = limit + (len(ids) if filters else sum(1 for i in ids if i in guess.deletes))
        if guess.new and guess.page == page.key:
            n = max(1, n - sum(1 for i in ids if i in guess.new))
        rows = self.inner.start_list_seen(resource, owner, after, n, filters, ids)
        try:  # while the database runs the page query
            raw = send("HGETALL", hash_key).result()
        except Exception as exc:  # noqa: BLE001 - reads fall back to the database
            self.breaker.failed(exc, "reading")
            rows()  # the connection is read clear before it is used again
            return self.inner.list_rows(resource, owner, after, limit, filters)
        self.breaker.succeeded()
        pending, expired = self._entries(raw, after, declared)
        # Rows a newer pending write replaces need only their created_at (PendingEntry.shown):
        # only usable entries replace a row (those not decoded yet, past ID_CAP, come whole).
        replaced = {i: w.version for i, w in pending.items() if type(w.data) is not bytes}
        first = Fetched(rows(replaced), n, frozenset(ids))
        shown = self._merged(hash_key, page, pending, expired, first)
        self._guess(hash_key, page, pending, first, shown)
        return shown

    def _entries(
        self, raw: Any, after: str | None, resource: Resource
    ) -> tuple[dict[str, PendingEntry], list[tuple[str, int, str]]]:
        """An HGETALL reply's entries of `resource` (their rows decoded when after the cursor, up
        to ID_CAP of them; merge_page decodes the others it meets) and the expired ones (id,
        version, op_id). An entry that cannot be used (its id is not a canonical UUID, its value
        does not parse, its row is not a usable row) is logged and left out: its key reads what
        is loaded, and its id never reaches SQL."""
        oldest = self.clock() // 1000 - self.ttl_us
        pending: dict[str, PendingEntry] = {}
        expired: list[tuple[str, int, str]] = []
        prefix = resource.tag.encode("ascii") + b":"
        width = len(prefix)
        for i in range(0, len(raw or ()), 2):
            name = raw[i]
            if name[:width] != prefix:
                continue
            id_ = id_of(resource, name)
            write = parse_pending(id_, raw[i + 1]) if id_ is not None else None
            if write is None:
                continue
            if write.version < oldest:
                expired.append((write.id, write.version, write.op_id))
            else:
                pending[write.id] = write
        if len(pending) <= ID_CAP:  # rows a page may show, decoded while the database works
            for key, write in list(pending.items()):
                if after is None or key > after:
                    usable = write.decoded(resource)
                    if usable is None:
                        del pending[key]
                    else:
                        pending[key] = usable
        return pending, expired

    def _merged(
        self,
        hash_key: str,
        page: _Page,
        pending: dict[str, PendingEntry],
        expired: list[tuple[str, int, str]],
        first: Fetched | None,
    ) -> list[Row]:
        resource, owner, filters = page.resource, page.owner, page.filters
        name = resource.name
        drops: list[Seen] = []
        if not pending and first is None:
            rows = self.inner.list_rows(name, owner, page.after, page.limit, filters)
        elif not pending and first is not None and not first.ids:  # live rows matching the filters only
            rows = [s.row for s in first.rows if s.row is not None]
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
        if drops and not self._fill(*((entry_key(name, owner, s.id, self.prefix), s) for s in drops)):
            drops = []  # the cache may still hold an older state: the entries stay (until their TTL)
        if expired or drops:
            shown = [(s.id, s.version, s.op_id) for s in drops]
            self._drop(hash_key, [(field_of(resource, i), v, op) for i, v, op in (*expired, *shown)])
        return rows

    def _guess(
        self, hash_key: str, page: _Page, pending: Mapping[str, PendingEntry], first: Fetched, shown: list[Row]
    ) -> None:
        guesses = self._guesses
        key = (hash_key, page.resource.name)
        guesses.pop(key, None)
        if not pending:
            return
        if len(guesses) >= GUESSES:
            guesses.pop(next(iter(guesses)), None)
        deletes = frozenset(i for i, w in pending.items() if w.data is None)
        # Named puts of which the page query found nothing stored (below the batch's last id,
        # when it was full): new rows, each in the page in place of a loaded row (learnt
        # without a filter only; with one, every named id is fetched beyond the page anyway).
        new: frozenset[str] | set[str] = frozenset()
        batch = first.rows
        if first.ids and not page.filters:
            top = batch[-1].id if batch and len(batch) >= first.limit else None
            end = shown[-1]["id"] if shown and len(shown) >= page.limit else None  # the page's last id, when full
            stored = {s.id for s in batch}
            new = {
                i
                for i in first.ids
                if i in pending
                and i not in deletes
                and i not in stored
                and (top is None or i < top)
                and (end is None or i <= end)
            }
        guesses[key] = Guess(sorted(pending), deletes, frozenset(new), page.key)

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


class _Page(NamedTuple):
    """One page read: whose, of what, from where, how many, filtered how."""

    resource: Resource
    owner: str
    after: str | None
    limit: int
    filters: Filters

    @property
    def key(self) -> tuple[str | None, tuple[tuple[str, str], ...], int]:
        """What makes it the same page as an earlier read (Guess.page)."""
        return (self.after, tuple(sorted(self.filters.items())), self.limit)


def _newer(cached: Seen, seen: Seen) -> Seen:
    """The newer of a cache entry and the replica's state, the replica's on an equal order (its
    op_id and a tombstone's created_at are known). A cached tombstone newer than a lagging
    replica takes the replica's created_at, the best known."""
    if not newer(cached.order, seen.order):
        return seen
    if cached.stored_created_at is None and seen.stored_created_at is not None:
        return cached._replace(created_at=seen.stored_created_at)
    return cached


def _count_failure(count: int) -> None:
    from chalicelib import observe

    observe.metrics({"Stage": observe.stage()}, {"PendingRecordFailures": (count, "Count")}, type="pending")
