"""Pending writes: what a caller wrote and the transport accepted, kept beside the read cache so
the caller's own reads show it before the loader and the replicas do (CONTRACT section 3).

Where they live
    One Redis hash per owner, `sluice:v1:pending:{owner}` (owner as in the cache's keys), beside
    the cache's entries. Field `t:{id}` holds a todo, `p` the profile. A value is
    `STATE|VERSION|OP_ID|CREATED|PAYLOAD`: STATE `p` (a put; PAYLOAD is the row as GET will show
    it, `created_at` being the command's own instant) or `a` (a delete, PAYLOAD empty); CREATED is
    the version (the acceptance time in microseconds) of the earliest pending command of that key.
    A pending row shows as `created_at` the earliest of CREATED and the loaded row's.

Writing
    After the transport accepted a request's commands (never instead of it), one EVALSHA
    (RECORD) writes each key's entry if its (version, op_id) is newer than the one stored, the
    rule the cache and the loader keep, and sets the hash to expire PENDING_TTL_SECONDS after
    its latest write. A failure is logged and counted (`PendingRecordFailures`, EMF) and the
    write is still accepted: reads then fall back to what is loaded (eventual).

Expiring
    An entry is ignored, and removed by the next read that meets it, once its version is older
    than PENDING_TTL_SECONDS; it is removed sooner (DROP, version-guarded: never a newer entry)
    once a replica read shows its version or a newer one. An answer from the master (failover
    while replicas exist) is not enough: replicas lag behind the master.

Reading
    `GET /todos/{id}` and `GET /me`: one EVALSHA (READ_PAIR) returns the cache entry and the
    pending entry together, and the newer of the two answers; the replica is read (and the cache
    filled) only when neither is there or neither reaches `min_version`, and the newest of the
    three answers. A pending entry is the caller's newest recorded write, so a replica can only
    be newer when a later write was not recorded (reads are eventual then). `GET /todos`: one
    HGETALL, and `merge_page` merges the caller's pending todos into the keyset page, which
    always reads the replica: that is where most entries are seen and dropped. The HGETALL's
    reply is read after the first page query, which names the pending ids the process last saw
    for the owner; the merge queries again where that guess did not cover the reply.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from chalicelib.ids import version_to_ts
from chalicelib.ordering import LUA_NEWER
from chalicelib.readers import Row, Seen
from chalicelib.readers.cache import (
    ABSENT,
    PRESENT,
    UNKNOWN,
    CacheClient,
    CachedReader,
    dump_row,
    owner_part,
    parse_entry,
    profile_key,
    todo_key,
)

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)

PROFILE_FIELD = "p"
_JSON = json.JSONDecoder()
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_JSON)  # type: ignore[arg-type]
ID_CAP = 64  # pending ids named to the database per page query
GUESSES = 1024  # owners whose pending ids a process remembers for its next page query
_NO_GUESS: tuple[list[str], frozenset[str]] = ([], frozenset())

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
-- written back as the text they came in (Lua would print a large number as 1.8e+15)."""
    + _LUA_HELPERS
    + """
local written = 0
for i = 2, #ARGV, 5 do
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
return written
"""
)

DROP = (
    """
-- Remove pending entries a replica has shown (or that expired). KEYS[1]: the owner's hash;
-- ARGV: field, version pairs. A field is removed only while its entry is that version or older.
"""
    + _LUA_HELPERS
    + """
local dropped = 0
for i = 1, #ARGV, 2 do
  local current = redis.call("HGET", KEYS[1], ARGV[i])
  if current then
    local cur_version = fields(current)
    if cur_version == nil or cur_version <= tonumber(ARGV[i + 1]) then
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

    def shown(self, base: Seen | None) -> Row | None:
        """The row GET shows for this write over `base` (the loaded state it replaces)."""
        row = self.row
        if row is None:
            return None
        # The payload carries its own command's instant; an earlier pending command of the key,
        # or the loaded row's created_at, is earlier still.
        if self.created != self.version or "created_at" not in row:
            row["created_at"] = _shown_ts(self.created)
        if base is not None and base.row is not None and _ts_key(base.row["created_at"]) < _ts_key(row["created_at"]):
            row["created_at"] = base.row["created_at"]
        return row


def _ts_key(text: str) -> tuple[str, str]:
    """Orders timestamps as reads show them (YYYY-MM-DDTHH:MM:SS, then a fraction or none)."""
    return (text[:19], text[20:26] if text[19] == "." else "")


def _shown_ts(version: int) -> str:
    """A version's instant as reads show a stored timestamp: RFC 3339 UTC, the fraction only
    when there is one (readers.sql.ts_out)."""
    at = version_to_ts(version)
    return at if version % 1_000_000 else at[:19] + "Z"


def parse_pending(field_id: str, raw: Any) -> PendingEntry | None:
    try:
        state, version, op_id, created, payload = (raw if type(raw) is bytes else bytes(raw)).split(b"|", 4)
        data = payload if state == PRESENT else None
        # PendingEntry(...) without its Python-level __new__: one per pending write of a page
        return tuple.__new__(PendingEntry, (field_id, int(version), op_id.decode("ascii"), int(created), data))
    except (ValueError, UnicodeDecodeError, TypeError):
        return None


def entry_for(command: WriteCommand) -> tuple[str, bytes, int, str, bytes]:
    """(field, state, version, op_id, payload) of a command for RECORD."""
    from chalicelib.readers.cache import row_for_command

    field = f"t:{command.id}" if command.resource == "todos" else PROFILE_FIELD
    row = row_for_command(command, command.stored_at)  # created_at: this command's instant
    if row is None:
        return (field, ABSENT, command.version, command.op_id, b"")
    return (field, PRESENT, command.version, command.op_id, dump_row(row))


def newest(pending: PendingEntry | None, loaded: Seen | None) -> Seen | None:
    """The newer of a pending write and a loaded (or cached) state; on equal versions the loaded."""
    if pending is None:
        return loaded
    if loaded is not None and loaded.version >= pending.version:
        return loaded
    return Seen(pending.id, pending.shown(loaded), pending.version, False)


# -- the page merge ------------------------------------------------------------------------------
Fetch = Callable[[str | None, int, Collection[str]], Sequence[Seen]]


class Fetched(NamedTuple):
    """A batch fetched before the pending writes were known: `fetch(after, limit, ids)`'s answer."""

    rows: Sequence[Seen]
    limit: int
    ids: Collection[str]


def merge_page(
    fetch: Fetch,
    pending: Mapping[str, PendingEntry],
    after: str | None,
    want: int,
    state: str | None,
    id_cap: int = ID_CAP,
    first: Fetched | None = None,
) -> tuple[list[Row], list[tuple[str, int]]]:
    """The first `want` todos with id > after, as the caller would see them were every pending
    write loaded, and the pending entries a settled read showed (todo id, version) to drop.

    `fetch(after, limit, ids)` is `TodoReader.list_seen` for the owner and `state`: loaded rows
    matching `state` and the stored state (tombstones included) of each of `ids`. Rows are fetched
    until the page is full: a pending delete or a change of `state` can take rows out of it.
    `first`, when given, is the first batch, fetched from `after` while the pending writes were
    read (naming the ids a guess gave): it is used as far as it knows every pending id's state.
    """
    ahead = sorted(i for i in pending if after is None or i > after)
    out: list[Row] = []
    drops: list[tuple[str, int]] = []
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
            slack = len(ids) if state is not None else sum(1 for i in ids if pending[i].data is None)
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
        # Walk the fetched rows and the pending ids together, both in id order.
        j, last = 0, len(named)
        for base in batch:
            key = base.id
            if upper is not None and key > upper:
                break
            while j < last and named[j] < key:
                if _take(out, newest(pending[named[j]], None), state) == want:
                    return out, drops
                j += 1
            if j < last and named[j] == key:
                write = pending[key]
                j += 1
                if base.settled and base.version >= write.version:
                    drops.append((key, write.version))
                shown = newest(write, base)
                if _take(out, shown, state) == want:
                    return out, drops
                continue
            row = base.row  # the common case, inline: a loaded row no pending write touches
            if row is not None and (state is None or row["state"] == state):
                out.append(row)
                if len(out) == want:
                    return out, drops
        while j < last:
            if _take(out, newest(pending[named[j]], None), state) == want:
                return out, drops
            j += 1
        if upper is None:
            return out, drops
        cursor = upper
        ahead = [i for i in ahead if i > cursor]


def _take(out: list[Row], seen: Seen | None, state: str | None) -> int:
    """Add the row a state shows when it is live and matches `state`; the page's length."""
    row = seen.row if seen is not None else None
    if row is not None and (state is None or row["state"] == state):
        out.append(row)
    return len(out)


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
        # Per owner's hash: the pending todo ids (sorted) and the deletes among them this process
        # last saw, named by the next page query before the HGETALL's reply is read. A guess.
        self._guesses: dict[str, tuple[list[str], frozenset[str]]] = {}

    # -- writes --------------------------------------------------------------------------------
    def record(self, commands: Sequence[WriteCommand]) -> bool:
        """Record accepted commands (one EVALSHA per owner: one per request). Never raises."""
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
            try:
                run_script(self.client, RECORD, [pending_key(owner, self.prefix)], args)
            except Exception as exc:  # noqa: BLE001 - the write is accepted; reads fall back to eventual
                self.breaker.failed(exc, "recording pending writes")
                self._failed(len(mine), exc)
                ok = False
            else:
                self.breaker.succeeded()
                self._remember(pending_key(owner, self.prefix), mine)
        return ok

    def _remember(self, hash_key: str, commands: Sequence[WriteCommand]) -> None:
        """Add recorded todo writes to the owner's guess (the writer's next page names them)."""
        guess, deletes = self._guesses.pop(hash_key, _NO_GUESS)
        ids = set(guess)
        gone = set(deletes)
        for command in commands:
            if command.resource == "todos":
                ids.add(command.id)
                (gone.add if command.op == "delete" else gone.discard)(command.id)
        if len(self._guesses) >= GUESSES:
            self._guesses.pop(next(iter(self._guesses)), None)
        self._guesses[hash_key] = (sorted(ids), frozenset(gone))

    def _failed(self, count: int, exc: BaseException | None) -> None:
        self.failures += count
        log.warning("%d pending write(s) not recorded; their writer reads what is loaded: %r", count, exc)
        self.on_failure(count)

    # -- reads by key --------------------------------------------------------------------------
    def get_todo(self, owner: str, todo_id: str, min_version: int | None = None) -> Seen:
        return self._one(
            todo_key(owner, todo_id, self.prefix),
            owner,
            f"t:{todo_id}",
            todo_id,
            lambda: self.inner.seen_todo(owner, todo_id),
            min_version,
        )

    def get_profile(self, owner: str, min_version: int | None = None) -> Seen:
        return self._one(
            profile_key(owner, self.prefix),
            owner,
            PROFILE_FIELD,
            owner,
            lambda: self.inner.seen_profile(owner),
            min_version,
        )

    def _one(
        self, key: str, owner: str, field: str, id_: str, load: Callable[[], Seen], min_version: int | None
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
            self._drop(hash_key, [(field, write.version)])
            write = None
        entry = parse_entry(raw_entry)
        cached = Seen(id_, entry[3], entry[1]) if entry is not None and entry[0] != UNKNOWN else None
        best = newest(write, cached)
        if best is not None and (min_version is None or best.version >= min_version):
            # The pending write is the caller's newest recorded one: the replica could only be
            # newer if a later write failed to be recorded (then reads are eventual anyway).
            if cached is not None:
                self.cache.hits += 1
            return best
        self.cache.misses += 1
        seen = load()
        self._fill(key, seen)
        if write is not None and seen.settled and seen.version >= write.version:
            self._drop(hash_key, [(field, write.version)])
        best = newest(write, newest(None, seen) if cached is None else _newer(cached, seen))
        assert best is not None
        return best

    def _fill(self, key: str, seen: Seen) -> None:
        if seen.row is None:
            entry = (key, ABSENT, seen.version, "", b"")
            ttl_ms = self.cache.negative_ttl_ms
        else:
            entry = (key, PRESENT, seen.version, "", dump_row(seen.row))
            ttl_ms = self.cache.ttl_ms
        from chalicelib.readers.cache import guarded_set

        try:
            guarded_set(self.client, "fill", ttl_ms, [entry])
        except Exception as exc:  # noqa: BLE001 - the row is answered all the same
            self.breaker.failed(exc, "filling")

    # -- pages -----------------------------------------------------------------------------------
    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> list[Row]:
        """The owner's page with their pending todos merged (`limit` rows at most).

        With a client that can (RespClient.send), the HGETALL is written first and its reply read
        after the page query, which names the pending ids this process last saw for the owner
        (none for an owner it knows nothing of); merge_page queries again only when the reply
        holds a pending id in the page that the query did not name."""
        if not self.breaker.allows():
            return self.inner.list_todos(owner, after, limit, state)
        hash_key = pending_key(owner, self.prefix)
        send = getattr(self.client, "send", None)
        first: Fetched | None = None
        plain: list[Row] | None = None
        try:
            if send is None:
                raw = self.client.execute_command("HGETALL", hash_key)
            else:
                guess, deletes = self._guesses.get(hash_key, _NO_GUESS)
                ids = [i for i in guess if after is None or i > after][:ID_CAP]
                deferred = send("HGETALL", hash_key)
                try:
                    if ids:
                        slack = len(ids) if state is not None else sum(1 for i in ids if i in deletes)
                        n = limit + slack
                        first = Fetched(self.inner.list_seen(owner, after, n, state, ids), n, frozenset(ids))
                    else:
                        plain = self.inner.list_todos(owner, after, limit, state)
                except BaseException:
                    deferred.abandon()
                    raise
                raw = deferred.result()
        except Exception as exc:  # noqa: BLE001 - reads fall back to the database
            self.breaker.failed(exc, "reading")
            if plain is not None:
                return plain
            return self.inner.list_todos(owner, after, limit, state)
        self.breaker.succeeded()
        oldest = self.clock() // 1000 - self.ttl_us
        pending: dict[str, PendingEntry] = {}
        expired: list[tuple[str, int]] = []
        for i in range(0, len(raw or ()), 2):
            name = raw[i]
            if name[:2] != b"t:":
                continue
            write = parse_pending(bytes(name[2:]).decode("ascii", "replace"), raw[i + 1])
            if write is None:
                continue
            if write.version < oldest:
                expired.append((write.id, write.version))
            else:
                pending[write.id] = write
        if send is not None:
            self._guess(hash_key, pending)
        drops: list[tuple[str, int]] = []
        if not pending and plain is not None:
            rows = plain
        elif not pending and first is None:
            rows = self.inner.list_todos(owner, after, limit, state)
        else:
            if plain is not None:  # fetched naming no id: it answers up to the first pending id
                first = Fetched([Seen(r["id"], r, r["version"], False) for r in plain], limit, ())
            rows, drops = merge_page(
                lambda cursor, n, ids: self.inner.list_seen(owner, cursor, n, state, ids),
                pending,
                after,
                limit,
                state,
                first=first,
            )
        if expired or drops:
            self._drop(hash_key, [(f"t:{i}", v) for i, v in (*expired, *drops)])
        return rows

    def _guess(self, hash_key: str, pending: Mapping[str, PendingEntry]) -> None:
        guesses = self._guesses
        guesses.pop(hash_key, None)
        if not pending:
            return
        if len(guesses) >= GUESSES:
            guesses.pop(next(iter(guesses)), None)
        guesses[hash_key] = (sorted(pending), frozenset(i for i, w in pending.items() if w.data is None))

    # -- housekeeping ----------------------------------------------------------------------------
    def _expired(self, write: PendingEntry) -> bool:
        return write.version + self.ttl_us < self.clock() // 1000

    def _drop(self, hash_key: str, fields: Sequence[tuple[str, int]]) -> None:
        args: list[Any] = []
        for field, version in fields:
            args += [field, version]
        try:
            run_script(self.client, DROP, [hash_key], args)
        except Exception as exc:  # noqa: BLE001 - the entry expires with its TTL all the same
            self.breaker.failed(exc, "dropping pending writes")


def _newer(a: Seen, b: Seen) -> Seen:
    return b if b.version >= a.version else a


def _count_failure(count: int) -> None:
    from chalicelib import observe

    observe.metrics({"Stage": observe.stage()}, {"PendingRecordFailures": (count, "Count")}, type="pending")
