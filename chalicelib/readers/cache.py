"""The Redis read cache (CACHE_URL): read-through for one row of any declared resource (a todo,
a list, a profile), kept right by the loader.

Entries
    `sluice:v1:{singular}.{shape}:{owner}:{id}` (`sluice:v1:todo.1a2b3c4d:{owner}:{id}`), or
    without `:{id}` for a resource with one row per owner (`sluice:v1:profile.{shape}:{owner}`),
    where {shape} is 8 hex digits of a digest of the resource's read shape (its read fields and
    their kinds): a release that changes what a row holds reads and writes other keys, so a row
    cached by the release before is never shown in place of one of the new shape (the old
    entries expire with their TTL). {owner} is the `sub` itself when it is made of [A-Za-z0-9_-]
    (Cognito subs are UUIDs) and otherwise `~` and 32 hex digits of its SHA-256 (so no owner can
    write into another's key space). A value is
    `STATE|VERSION|OP_ID|PAYLOAD`: STATE `p` (present, PAYLOAD is the row as JSON), `a` (absent:
    deleted or never written, PAYLOAD empty) or `m` (the loader wrote VERSION but did not say
    what the row is: a miss that still fences older fills; a fill at least as new replaces it).
    Every entry has a TTL.

Ordering
    Entries are ordered like the loader orders commands: by (version, op_id). One Lua script
    (GUARDED_SET in readers/scripts.py, sent with EVALSHA by `guarded_set`) writes entries only when
    they are newer than what is stored, atomically in Redis. The loader's writes
    (`CacheInvalidator`, after its transaction commits) carry the command's (version, op_id). The
    owner's reads fill entries through `PendingWrites`, from versioned reads that carry the stored
    row's op_id, so those fills are ordered exactly like the loader's entries. `CachedReader`'s own
    fills (a cache without pending writes) read rows without op_id and carry an empty one: such a
    fill never replaces an entry of the same version, and the loader's entry of a version always
    replaces it. An entry with an empty op_id (those fills, and every fill written before reads
    carried op_ids) is a state whose order within its version is unknown: a pending write of the
    same version never takes it for the winner of the tie (`PendingWrites` reads the replica
    instead).

created_at, whatever the versions
    A row's created_at is the earliest `at` of its commands (CONTRACT section 3), and a command
    older than the stored row still lowers it in the table (loader/apply.py). So the loader hands
    the cache every key of an object it committed, stale ones included, each with the earliest
    `at` of its commands in the object (the floor), and GUARDED_SET keeps, besides the (version,
    op_id) rule, the earliest created_at it meets: a write takes the stored entry's created_at
    when that is earlier (a fence or a tombstone carries one as its PAYLOAD, which reads ignore),
    and a write the guard refuses still lowers the stored entry's created_at to its own or its
    floor, keeping the entry's TTL. Every such value is an `at` of a committed command of the key
    (entries hold only what was loaded), and created_at only goes down: the earliest is never
    below the table's, and is the table's once every load's update has reached Redis, in
    whatever order two loaders' updates arrive. Only the created_at text of a row is rewritten
    (found as `"created_at":"`, which no JSON string holds unescaped): a payload is never decoded
    and encoded again in Lua, and reads pay nothing more.

The race this closes
    A reader misses, reads version 1 from a lagging replica; the loader commits version 2 and
    writes the entry; the reader then fills version 1. The script refuses the fill (1 < 2), so the
    cache keeps version 2. "Absent" is filled as version 0 and so never replaces anything the
    loader wrote: negative caching is safe under the same rule (with a shorter TTL).

What it does not promise
    The fence is the entry itself: if Redis drops the loader's entry (TTL, or eviction under an
    `allkeys-*` maxmemory policy) before a lagging reader's fill arrives, that fill can hold an old
    row, or a created_at a stale command has lowered since, for up to its TTL (while the loader's
    entry is there, a fill that replaces it takes its created_at when earlier). Loaders that write
    the master without the invalidator (CACHE_URL unset in that process) leave entries stale,
    created_at included, for up to the TTL. Run Redis with `noeviction` or `volatile-*` policies
    and keep CACHE_TTL_SECONDS short.

Outages
    Every Redis failure (refused, timed out, garbage) is logged and answered from the database. A
    failure opens a breaker for `cooldown` seconds, during which readers do not try Redis at all,
    so a dead cache costs one short timeout per cool-down, not one per request. The invalidator
    always tries (a skipped update would leave a stale entry) and reports to the same breaker.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from chalicelib.readers import Filters, Reader, Row, Seen
from chalicelib.readers.breaker import DEFAULT_COOLDOWN_SECONDS, Breaker
from chalicelib.readers.scripts import CacheClient, Entry, guarded_set
from chalicelib.resources import RESOURCES, Resource, on_change
from chalicelib.rows import ts_out

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)

KEY_PREFIX = "sluice:v1"
SAFE_OWNER = re.compile(r"[A-Za-z0-9_-]{1,64}")
PRESENT, ABSENT, UNKNOWN = b"p", b"a", b"m"
MAX_NEGATIVE_TTL_SECONDS = 60
INVALIDATE_CHUNK = 200  # keys per EVALSHA


class _RowUnknown:
    def __repr__(self) -> str:
        return "ROW_UNKNOWN"


# A change whose new row the loader does not give: the entry becomes a fence ("m"), a miss.
ROW_UNKNOWN: Final = _RowUnknown()

# What the loader hands over after its commit, one per key its object held:
# (resource, owner, id, version, op_id, row as GET shows it | None for a delete | ROW_UNKNOWN,
# and optionally the floor: the earliest `at` known for the key, as reads show timestamps)
Change = tuple[str, str, str, int, str, Any] | tuple[str, str, str, int, str, Any, str]


# -- keys and values ---------------------------------------------------------------------------
def owner_part(owner: str) -> str:
    if SAFE_OWNER.fullmatch(owner):
        return owner
    return "~" + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def shape(resource: Resource) -> str:
    """A digest of what a cached row of `resource` holds: its read fields and their kinds."""
    rules = resource.rules()
    described = ",".join(f"{name}:{rules[name].kind if name in rules else ''}" for name in resource.read_fields)
    return hashlib.sha256(described.encode("utf-8")).hexdigest()[:8]


_KINDS: dict[str, tuple[str, bool]] = {}  # resource -> (its entries' kind part, by_id)


def _kind(resource: str) -> tuple[str, bool]:
    made = _KINDS.get(resource)
    if made is None:
        declared = RESOURCES[resource]
        made = _KINDS[resource] = (f"{declared.singular}.{shape(declared)}", declared.by_id)
    return made


on_change(lambda name: _KINDS.pop(name, None))


def entry_key(resource: str, owner: str, id_: str, prefix: str = KEY_PREFIX) -> str:
    """The cache entry of a row of `resource` (module docstring)."""
    kind, by_id = _kind(resource)
    if by_id:
        return f"{prefix}:{kind}:{owner_part(owner)}:{id_}"
    return f"{prefix}:{kind}:{owner_part(owner)}"


def todo_key(owner: str, todo_id: str, prefix: str = KEY_PREFIX) -> str:
    return entry_key("todos", owner, todo_id, prefix)


def profile_key(owner: str, prefix: str = KEY_PREFIX) -> str:
    return entry_key("profiles", owner, owner, prefix)


def dump_row(row: Row) -> bytes:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
NOT_WHOLE: Final = object()  # scan_whole: the text is not one JSON value with nothing around it


def scan_whole(text: str) -> Any:
    """json.loads(text) by the C scanner alone when `text` is one JSON value with no whitespace
    around it (as dump_row writes a row), else NOT_WHOLE (the caller decodes it its own way). A
    value the scanner refuses raises its ValueError, as json.loads would."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return NOT_WHOLE
    return value if end == len(text) else NOT_WHOLE


def load_payload(payload: bytes) -> Any:
    """A present entry's row: json.loads(payload), through the C scanner alone when the payload is
    dump_row's (UTF-8, no whitespace around it); anything else is decoded (or refused) by json.loads."""
    try:
        row = scan_whole(payload.decode("utf-8", "surrogatepass"))
        if row is not NOT_WHOLE:
            return row
    except ValueError:
        pass
    return json.loads(payload)


def parse_entry(raw: Any) -> tuple[bytes, int, str, Row | None] | None:
    """(state, version, op_id, row) of a stored value, or None when it is not a readable entry."""
    if not raw:
        return None
    try:
        state, version, op_id, payload = (raw if type(raw) is bytes else bytes(raw)).split(b"|", 3)
        row = load_payload(payload) if state == PRESENT else None
        return state, int(version), op_id.decode("ascii"), row
    except (ValueError, UnicodeDecodeError):
        return None


def cached_seen(id_: str, raw: Any) -> Seen | None:
    """The state a stored value shows for row `id_` (as parse_entry reads it), or None when it is
    not a readable entry or is a fence (UNKNOWN): one pass, for a read by key."""
    if not raw:
        return None
    try:
        state, version, op_id, payload = (raw if type(raw) is bytes else bytes(raw)).split(b"|", 3)
        if state == UNKNOWN:
            return None
        row = load_payload(payload) if state == PRESENT else None
        # Seen(...) without its Python-level __new__ (the defaults: settled, no created_at)
        return tuple.__new__(Seen, (id_, row, int(version), op_id.decode("ascii"), True, None))
    except (ValueError, UnicodeDecodeError):
        return None


# -- reading -----------------------------------------------------------------------------------
class CachedReader(Reader):
    """Read-through cache in front of another reader (usually ReplicaReader), for rows read by
    key; pages are not cached."""

    def __init__(
        self,
        inner: Reader,
        redis_client: CacheClient,
        ttl: float,
        *,
        negative_ttl: float | None = None,
        breaker: Breaker | None = None,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if ttl <= 0:
            raise ValueError("the cache TTL must be positive")
        self.inner = inner
        self.client = redis_client
        self.ttl_ms = int(ttl * 1000)
        negative = min(ttl, MAX_NEGATIVE_TTL_SECONDS) if negative_ttl is None else negative_ttl
        self.negative_ttl_ms = max(1, int(negative * 1000))
        self.breaker = breaker or Breaker()
        self.prefix = prefix
        self.hits = 0
        self.misses = 0

    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        key = entry_key(resource, owner, id_, self.prefix)
        return self._read(key, lambda: self.inner.get(resource, owner, id_))

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        return self.inner.list_rows(resource, owner, after, limit, filters)

    def _read(self, key: str, load: Callable[[], Row | None]) -> Row | None:
        use_cache = self.breaker.allows()
        if use_cache:
            try:
                raw = self.client.execute_command("GET", key)
            except Exception as exc:  # noqa: BLE001 - any cache failure degrades to the database
                self.breaker.failed(exc, "reading")
                use_cache = False
            else:
                self.breaker.succeeded()
                entry = parse_entry(raw)
                if entry is not None and entry[0] != UNKNOWN:
                    self.hits += 1
                    return entry[3]
        self.misses += 1
        row = load()
        if use_cache:
            self._fill(key, row)
        return row

    def _fill(self, key: str, row: Row | None) -> None:
        if row is None:
            entry = (key, ABSENT, 0, "", b"")
            ttl_ms = self.negative_ttl_ms
        else:
            entry = (key, PRESENT, int(row["version"]), "", dump_row(row))
            ttl_ms = self.ttl_ms
        try:
            guarded_set(self.client, "fill", ttl_ms, [entry])
        except Exception as exc:  # noqa: BLE001 - the row is answered all the same
            self.breaker.failed(exc, "filling")
        else:
            self.breaker.succeeded()


# -- the loader's side -----------------------------------------------------------------------------
class CacheInvalidator:
    """Called by the loader after its transaction commits, with the keys it changed. Writes each
    key's new entry (version-guarded), a tombstone for a delete, or a fence when the row is not
    given. Never raises: returns how many entries it wrote (0 when Redis failed)."""

    def __init__(
        self,
        redis_client: CacheClient,
        ttl: float,
        *,
        breaker: Breaker | None = None,
        prefix: str = KEY_PREFIX,
        chunk: int = INVALIDATE_CHUNK,
    ) -> None:
        self.client = redis_client
        self.ttl_ms = int(ttl * 1000)
        self.breaker = breaker or Breaker()
        self.prefix = prefix
        self.chunk = chunk

    def __call__(self, changes: Iterable[Change]) -> int:
        return self.apply(changes)

    def apply(self, changes: Iterable[Change]) -> int:
        entries = [self._entry(change) for change in changes]
        written = 0
        try:
            for start in range(0, len(entries), self.chunk):
                written += guarded_set(self.client, "load", self.ttl_ms, entries[start : start + self.chunk])
        except Exception as exc:  # noqa: BLE001 - the load is committed; the TTL bounds staleness
            self.breaker.failed(exc, "updating after a load")
            log.warning(
                "cache not updated for %d keys; entries may be stale for up to %d s", len(entries), self.ttl_ms // 1000
            )
            return written
        self.breaker.succeeded()
        return written

    def _entry(self, change: Change) -> Entry:
        resource, owner, id_, version, op_id, row = change[:6]
        floor = change[6] if len(change) > 6 else ""
        key = entry_key(resource, owner, id_, self.prefix)
        if row is ROW_UNKNOWN:
            return (key, UNKNOWN, int(version), op_id, b"", floor)
        if row is None:
            return (key, ABSENT, int(version), op_id, b"", floor)
        return (key, PRESENT, int(version), op_id, dump_row(row), floor)


def row_for_command(command: WriteCommand, created_at: str) -> Row | None:
    """The row GET shows after `command` won, given the key's stored `created_at` (the loader's
    fixed-width text, or a datetime), in its resource's declared read shape. None for a delete."""
    if command.op == "delete" or command.data is None:
        return None
    data = command.data
    resource = RESOURCES[command.resource]
    row: Row = {"id": command.id} if resource.by_id else {}
    for name in resource.field_names:
        value = data[name]
        row[name] = list(value) if type(value) is list else value
    row["version"] = command.version
    row["created_at"] = ts_out(created_at)
    row["updated_at"] = ts_out(command.stored_at)
    return row


def change_for(command: WriteCommand, created_at: str | None = None, earliest: str | None = None) -> Change:
    """The Change for a command the loader committed (the winner of its key in an object). With
    created_at (the key's stored one, as the loader wrote it) the row is known; without, the
    entry becomes a fence (the next read goes to the database). Its floor, the earliest `at`
    known for the key, is created_at, else `earliest` (the earliest `at` of the key's commands
    in the object, the loader's fixed-width text), else the command's own: the Lua lowers a
    stored entry's created_at to it even when the command is older than the entry."""
    row = ROW_UNKNOWN if created_at is None else row_for_command(command, created_at)
    if command.op == "delete":
        row = None
    if type(row) is dict:
        floor = row["created_at"]
    else:
        floor = shown_at(created_at if created_at is not None else earliest or command.stored_at)
    return (command.resource, command.owner, command.id, command.version, command.op_id, row, floor)


def shown_at(stored: Any) -> str:
    """A stored timestamp (the loader's fixed-width text, YYYY-MM-DD HH:MM:SS.ffffff, or a
    datetime) as reads show it: RFC 3339 UTC, the fraction only when there is one, as the
    readers' ts_out writes it. The loader's text is sliced (it hands one per key it loaded)."""
    if type(stored) is str and len(stored) == 26 and stored[10] == " " and stored[19] == ".":
        if stored[20:] == "000000":
            return f"{stored[:10]}T{stored[11:19]}Z"
        return f"{stored[:10]}T{stored[11:]}Z"
    from datetime import datetime

    from chalicelib.ids import format_ts

    return format_ts(stored if isinstance(stored, datetime) else datetime.fromisoformat(stored))


# -- composition -------------------------------------------------------------------------------------
def build_cache(
    client: CacheClient, ttl: float, cooldown: float = DEFAULT_COOLDOWN_SECONDS
) -> tuple[Callable[[Reader], CachedReader], CacheInvalidator]:
    """(wrap a reader, the loader's invalidator), sharing one client and one breaker. The
    composition root (chalicelib.bootstrap) builds the client from CACHE_URL, parsed once."""
    breaker = Breaker(cooldown)

    def wrap(inner: Reader) -> CachedReader:
        return CachedReader(inner, client, ttl, breaker=breaker)

    return wrap, CacheInvalidator(client, ttl, breaker=breaker)
