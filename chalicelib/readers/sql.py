"""The SQL reader: `SqlReader` reads one database (the master, a replica or the embedded SQLite
file) over every declared resource. `ReplicaReader` (replica choice, failover to the next and
then the master) is in `readers/replicas.py`.

Each resource's read statements name their columns (its read fields, from the declaration) and
its rows are decoded by column name (`rows.decoder`, generated once per process), so a field
added to a declaration is read with no statement written here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from operator import itemgetter
from typing import Any

from chalicelib.db.database import Database
from chalicelib.readers import Filters, Reader, Row, Seen, SeenLater, SeenRows
from chalicelib.resources import RESOURCES, Resource, on_change
from chalicelib.rows import Decoder, decoder, ts_out

UUID_CHARS = "0123456789abcdef-"
TEXTS = 256  # page texts kept per resource (`Statements.texts`), each naming the ids a guess gave


class Statements:
    """A resource's read statements and the positions and decoders of their columns."""

    def __init__(self, resource: Resource) -> None:
        name, columns = resource.name, resource.read_fields
        listed = ", ".join(columns)
        key = "owner = %s AND id = %s" if resource.by_id else "owner = %s"
        self.resource = resource
        self.by_id = resource.by_id
        self.filters = frozenset(resource.collection.filters) if resource.collection else frozenset()
        self.get = f"SELECT {listed} FROM {name} WHERE {key} AND deleted = 0"
        self.row: Decoder = decoder(name, columns)
        # Versioned reads see tombstones too (their version answers min_version and pending
        # deletes), and the winning command's op_id (a pending write of its version is ordered by it).
        self.seen = f"SELECT {listed}, deleted, op_id FROM {name} WHERE {key}"
        self.seen_many = f"SELECT {listed}, deleted, op_id FROM {name} WHERE owner = %s AND id IN "
        self.version, self.created_at = columns.index("version"), columns.index("created_at")
        self.id = columns.index("id") if resource.by_id else -1
        self.deleted, self.op_id = len(columns), len(columns) + 1
        # A page's rows: their ids and versions taken out at once.
        self.id_of, self.version_of = itemgetter(self.id), itemgetter(self.version)
        self.list = f"SELECT {listed} FROM {name} WHERE owner = %s AND id > %s AND deleted = 0"
        # A page's versioned read: a tombstone's version comes negated (versions are positive), so
        # the rows carry no `deleted` column (one field fewer per row of a page), and no op_id
        # either: only a row whose version ties the caller's pending write needs it, and
        # `seen_many` reads those again (pending_merge.merge_page).
        signed = ("CASE WHEN deleted = 0 THEN version ELSE -version END" if c == "version" else c for c in columns)
        self.list_seen = f"SELECT {', '.join(signed)} FROM {name} WHERE owner = %s AND id > %s"
        # (filter fields, ids) -> a page's versioned read, and whether the ids are written out in it
        self.texts: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, bool]] = {}

    def where(self, filters: Filters) -> tuple[str, list[Any]]:
        """` AND field = %s` for each filter, and their values; a filter not declared is a bug."""
        if not filters:
            return "", []
        unknown = set(filters) - self.filters
        if unknown:
            raise ValueError(f"{self.resource.name} has no filter {sorted(unknown)}")
        return "".join(f" AND {field} = %s" for field in filters), list(filters.values())

    def seen_of(self, id_: str, stored: Sequence[Any]) -> Seen:
        """A `seen` row: the live row, or a tombstone with its created_at."""
        version = int(stored[self.version])
        if stored[self.deleted]:
            return Seen(id_, None, version, stored[self.op_id], True, ts_out(stored[self.created_at]))
        return Seen(id_, self.row(stored), version, stored[self.op_id])


_STATEMENTS: dict[str, Statements] = {}


def statements(resource: str) -> Statements:
    made = _STATEMENTS.get(resource)
    if made is None:
        made = _STATEMENTS[resource] = Statements(RESOURCES[resource])
    return made


on_change(lambda name: _STATEMENTS.pop(name, None))


class SqlReader(Reader):
    """Reads one database (the master, a replica, or the embedded SQLite file)."""

    def __init__(self, db: Database) -> None:
        self.db = db  # db.query rewrites the %s placeholders for SQLite (cached per statement)

    @staticmethod
    def _key(made: Statements, owner: str, id_: str) -> tuple[str, ...]:
        return (owner, id_) if made.by_id else (owner,)

    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        made = statements(resource)
        rows = self.db.query(made.get, self._key(made, owner, id_))
        return made.row(rows[0]) if rows else None

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        made = statements(resource)
        where, values = made.where(filters)
        rows = self.db.query(made.list + where + " ORDER BY id LIMIT %s", [owner, after or "", *values, limit])
        decode = made.row
        return [decode(r) for r in rows]

    def seen(self, resource: str, owner: str, id_: str) -> Seen:
        made = statements(resource)
        rows = self.db.query(made.seen, self._key(made, owner, id_))
        return made.seen_of(id_, rows[0]) if rows else Seen(id_, None, 0)

    def seen_many(self, resource: str, owner: str, ids: Collection[str]) -> dict[str, Seen]:
        if not ids:
            return {}
        made = statements(resource)
        rows = self.db.query(made.seen_many + f"({', '.join(['%s'] * len(ids))})", (owner, *ids))
        return {r[made.id]: made.seen_of(r[made.id], r) for r in rows}

    def list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> list[Seen]:
        return list(self.start_list_seen(resource, owner, after, limit, filters, ids)())

    def start_list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> SeenLater:
        made = statements(resource)
        text, params = list_seen_statement(made, owner, after, limit, filters, ids)
        rows = self.db.send_query(text, params)
        id_of, version_of, at_created, decode = made.id_of, made.version_of, made.created_at, made.row

        def seen(replaced: Mapping[str, int] | None = None) -> SeenRows:
            # The rows a newer pending write replaces are not decoded: of them a page shows only
            # their created_at. (Reading only those columns off the packets, as an earlier
            # release did, cost more per row of the page than it saved: measured 2026-12-07.)
            got = rows()
            ids = list(map(id_of, got))
            versions = list(map(version_of, got))
            # A tombstone comes with its version negated (list_seen): no extra column per row. A
            # row of a version older than a pending write's (which replaces it whatever the
            # op_ids) needs only its created_at; a tie keeps the whole row. Every other row is
            # decoded as list_rows decodes it.
            apart: dict[int, Row | None] = {}  # index -> what stands for the row (None: a tombstone)
            created: dict[str, str] = {}
            if versions and min(versions) < 0:
                for k, version in enumerate(versions):
                    if version < 0:
                        apart[k] = None
                        versions[k] = -version
                        created[ids[k]] = ts_out(got[k][at_created])
            if replaced:
                for id_, newer in replaced.items():
                    k = bisect_left(ids, id_)  # the rows come in id order
                    if k < len(ids) and ids[k] == id_ and k not in apart and newer > versions[k]:
                        apart[k] = {"created_at": ts_out(got[k][at_created])}
            if not apart:
                return SeenRows(ids, list(map(decode, got)), versions, created)
            out: list[Row | None] = []
            start = 0
            for k in sorted(apart):
                out += map(decode, got[start:k])
                out.append(apart[k])
                start = k + 1
            out += map(decode, got[start:])
            return SeenRows(ids, out, versions, created)

        return seen


def list_seen_statement(
    made: Statements, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
) -> tuple[str, list[Any]]:
    """A page's versioned read: live rows matching `filters`, and the stored state of each of
    `ids`, tombstones included. Its text is made once per filter fields and ids (`Statements.texts`)."""
    where, values = made.where(filters)
    params: list[Any] = [owner, after or "", *values]
    key = (tuple(filters), tuple(ids))
    known = made.texts.get(key)
    if known is None:
        known = made.texts[key] = _list_seen_text(made, where, ids)
        if len(made.texts) > TEXTS:
            made.texts.clear()
    text, inlined = known
    if ids and not inlined:
        params.extend(ids)
    params.append(limit)
    return text, params


def _list_seen_text(made: Statements, where: str, ids: Collection[str]) -> tuple[str, bool]:
    live = "deleted = 0" + where
    text = made.list_seen
    inlined = False
    if ids:
        if all(len(i) == 36 and not i.strip(UUID_CHARS) for i in ids):  # written out: nothing to escape
            listed = "', '".join(ids)
            text += f" AND ({live} OR id IN ('{listed}'))"
            inlined = True
        else:
            text += f" AND ({live} OR id IN ({', '.join(['%s'] * len(ids))}))"
    else:
        text += f" AND {live}"
    return text + " ORDER BY id LIMIT %s", inlined
