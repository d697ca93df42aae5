"""Pending writes' entries and their codec: where an accepted write is kept in Redis, a command
as RECORD's arguments (`entry_for`), a hash field and its value as a `PendingEntry`
(`id_of`, `parse_pending`, `PendingEntry.decoded`), an HGETALL reply as a page's entries
(`entries_of`, which keeps the entries it decoded in a bounded per-process cache, `PARSED`, keyed
by the owner's hash and the exact bytes), and a pending row's timestamps as reads show them
(`shown_ts`, `ts_key`).
The reads that use them are `readers/pending.py`; their Lua, `readers/scripts.py`.

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
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from chalicelib.ids import CANONICAL_UUID, version_to_ts
from chalicelib.ordering import Order
from chalicelib.readers import Row, Seen
from chalicelib.readers.cache import ABSENT, NOT_WHOLE, PRESENT, dump_row, owner_part, row_for_command, scan_whole
from chalicelib.resources import RESOURCES, Resource, on_change

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand

# The pending writes' one logger (readers/pending.py's name): an entry ignored is logged under it
# on every path.
log = logging.getLogger("chalicelib.readers.pending")

PROFILE_FIELD = RESOURCES["profiles"].tag
ID_CAP = 64  # pending ids named to the database per page query (and entries decoded while it runs)


def pending_key(owner: str, prefix: str) -> str:
    """The owner's hash of pending writes: `{prefix}:pending:{owner}`, owner as in the cache's keys."""
    return f"{prefix}:pending:{owner_part(owner)}"


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
            row = scan_whole(text)  # the C scanner alone: dump_row's JSON has no whitespace around it
            if row is NOT_WHOLE:
                row = json.loads(text)  # anything else: decoded (or refused) as before
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
        return self.shown_at(base.stored_created_at if base is not None else None)

    def shown_at(self, stored: str | None) -> Row | None:
        """`shown` over what is stored with created_at `stored` (None: nothing stored, or not known)."""
        data = self.data
        if data is None:
            return None
        row = dict(data) if type(data) is dict else self.row
        assert row is not None
        # The payload carries its own command's instant; an earlier pending command of the key,
        # or the stored row's created_at, is earlier still.
        created = row.get("created_at")
        if self.created != self.version or created is None:
            created = row["created_at"] = shown_ts(self.created)
        if stored is not None and _earlier(stored, created):
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
    """Whether `value` has the shape of a timestamp as reads show it (`shown_ts`, sql.ts_out):
    YYYY-MM-DDTHH:MM:SS, then a 6-digit fraction or none, and Z."""
    return type(value) is str and len(value) in (20, 27) and value[10] == "T" and value[-1] == "Z"


def _earlier(a: str, b: str) -> bool:
    """Whether timestamp `a` is before `b`, both as reads show them."""
    if len(a) == len(b) == 27:  # both with a fraction (the usual case): as text
        return a < b
    return ts_key(a) < ts_key(b)


def ts_key(text: str) -> tuple[str, str]:
    """Orders timestamps as reads show them (YYYY-MM-DDTHH:MM:SS, then a fraction or none)."""
    return (text[:19], text[20:26] if text[19] == "." else "")


def shown_ts(version: int) -> str:
    """A version's instant as reads show a stored timestamp: RFC 3339 UTC, the fraction only
    when there is one (readers.sql.ts_out)."""
    at = version_to_ts(version)
    return at if version % 1_000_000 else at[:19] + "Z"


def parse_pending(field_id: str, raw: Any) -> PendingEntry | None:
    """The entry of a pending hash field, or None, logged, when its value does not parse (a
    state other than put or delete, a version or CREATED that is not an integer, an op_id that
    is not ASCII). The field's id is the caller's to check (`id_of`)."""
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


def entries_of(
    raw: Any, after: str | None, resource: Resource, oldest: int, hash_key: str | None = None
) -> tuple[dict[str, PendingEntry], list[tuple[str, int, str]]]:
    """An HGETALL reply's entries of `resource` (their rows decoded when after the cursor, up
    to ID_CAP of them; merge_page decodes the others it meets) and the expired ones (id,
    version, op_id). An entry that cannot be used (its id is not a canonical UUID, its value
    does not parse, its row is not a usable row) is logged and left out: its key reads what
    is loaded, and its id never reaches SQL. An entry whose version is below `oldest` has
    expired (PENDING_TTL_SECONDS).
    With `hash_key` (the owner's hash), an entry met before in the same hash with the same field
    and exact value is taken from the process's cache (`PARSED`) as it was kept there: a put
    decoded, a delete; wherever it falls (merge_page takes a decoded entry as it is)."""
    pending: dict[str, PendingEntry] = {}
    expired: list[tuple[str, int, str]] = []
    prefix = resource.tag.encode("ascii") + b":"
    width = len(prefix)
    known = PARSED.get if hash_key is not None else None
    named = shape_of(resource).field_pattern.fullmatch
    keys: dict[str, tuple[str | None, str, bytes, bytes]] = {}  # the cache's keys of the entries parsed here
    for i in range(0, len(raw or ()), 2):
        name = raw[i]
        if name[:width] != prefix:
            continue
        value = raw[i + 1]
        write = None
        if known is not None:
            key = (hash_key, resource.name, bytes(name), value if type(value) is bytes else bytes(value))
            write = known(key)
        if write is None:
            id_ = id_of(resource, name)
            write = parse_pending(id_, value) if id_ is not None else None
            if write is None:
                continue
            if known is not None and named(key[2]):  # kept only when named by a canonical id
                if write.data is None:  # a delete: nothing to decode
                    PARSED.put(key, write)
                else:
                    keys[write.id] = key  # kept once its row is decoded
        if write.version < oldest:
            expired.append((write.id, write.version, write.op_id))
        else:
            pending[write.id] = write
    if len(pending) <= ID_CAP:  # rows a page may show, decoded while the database works
        for id_, write in list(pending.items()):
            if type(write.data) is bytes and (after is None or id_ > after):
                usable = write.decoded(resource)
                if usable is None:
                    del pending[id_]
                else:
                    pending[id_] = usable
                    if id_ in keys:
                        PARSED.put(keys[id_], usable)
    return pending, expired


K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A bounded per-process cache: past `size` entries the oldest goes first (a change by
    another thread meanwhile empties it). The read side keeps two: `PARSED` here and
    `readers.pending.KEYS`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[K, V] = {}
        self.get = self.entries.get

    def put(self, key: K, value: V) -> None:
        entries = self.entries
        if len(entries) >= self.size:
            try:
                del entries[next(iter(entries))]
            except (StopIteration, RuntimeError, KeyError):  # changed by another thread meanwhile
                entries.clear()
        entries[key] = value

    def clear(self) -> None:
        self.entries.clear()


# Decoded pending entries (`entries_of`), keyed by the owner's hash, the resource, the field and
# the value's exact bytes, so that a changed entry is parsed again and two owners never share
# one. Until the owner's next write, every page read meets the same bytes. Only usable entries
# named by a canonical id are kept: one that cannot be used is parsed and logged on every read.
# A kept entry's row is shared by the reads that meet it and never changed in place
# (`PendingEntry.shown` and `row` return a new dict; its lists, such as tags, go to JSON as they
# are). Forgotten when a resource is (re)declared.
PARSED: Bounded[tuple[str | None, str, bytes, bytes], PendingEntry] = Bounded(1024)
on_change(lambda name: PARSED.clear())


def entry_for(command: WriteCommand) -> tuple[str, bytes, int, str, bytes]:
    """(field, state, version, op_id, payload) of a command for RECORD."""
    field = field_of(RESOURCES[command.resource], command.id)
    row = row_for_command(command, command.stored_at)  # created_at: this command's instant
    if row is None:
        return (field, ABSENT, command.version, command.op_id, b"")
    return (field, PRESENT, command.version, command.op_id, dump_row(row))
