"""The LOAD DATA fast path's SQL (`mysql_fast`): the narrow TEMPORARY key table a chunk's keys go
into, the locking join that decides which of them are new, newer or stale, the created_at fix of
stale rows, the savepoint; and `FastTable`, a resource's statements made from its declaration
(`chalicelib.rows`): LOAD DATA straight in (`IGNORE`) or over stored rows (`REPLACE`), and the
locking reads of its keys. `main_resource` picks the resource an object's fast path takes.

Every read of the resource's table here is a locking read (`FOR UPDATE`): docs/architecture.md,
"Concurrent loaders".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from chalicelib.commands import WriteCommand
from chalicelib.db.schema import BY_KEY, OWNER_COLLATION
from chalicelib.resources import RESOURCES
from chalicelib.rows import table

KEYS = "sluice_load_keys"
LOAD_KEYS = (
    f"LOAD DATA LOCAL INFILE %s INTO TABLE {KEYS} CHARACTER SET utf8mb4 (seq, owner, id, version, op_id, created_at)"
)
# MEMORY: the rows are scratch (a chunk's keys, emptied once decided), and a heap table takes them
# several times faster than InnoDB. InnoDB when the server has no MEMORY engine.
# The owner column takes the table's owner collation (schema migration 2: NO PAD), or the join fails.
KEYS_COLUMNS = f"""seq INT UNSIGNED NOT NULL,
        owner VARCHAR(128) CHARACTER SET utf8mb4 COLLATE {OWNER_COLLATION} NOT NULL,
        id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        version BIGINT NOT NULL,
        op_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        created_at DATETIME(6) NOT NULL"""
CREATE_KEYS = (
    f"DROP TEMPORARY TABLE IF EXISTS {KEYS}",
    f"CREATE TEMPORARY TABLE {KEYS} ({KEYS_COLUMNS}, PRIMARY KEY USING BTREE (seq)) ENGINE=MEMORY",
)
CREATE_KEYS_INNODB = f"CREATE TEMPORARY TABLE {KEYS} ({KEYS_COLUMNS}, PRIMARY KEY (seq)) ENGINE=InnoDB"
EMPTY_KEYS = f"DELETE FROM {KEYS}"
DROP_KEYS = f"DROP TEMPORARY TABLE IF EXISTS {KEYS}"
NEW, NEWER, OLDER_CREATED = 0, 1, 2
# Which keys of a chunk need a write: "seq|state|stored created_at if earlier" items in one
# string (one result row instead of thousands: PyMySQL decodes rows in Python), with their count
# to prove nothing was cut at group_concat_max_len. The read locks what it reads (the stored rows,
# and the gaps where the new keys go) until commit, so the unguarded REPLACE below cannot
# overwrite another loader's newer row.
DECIDE = (
    f"SELECT COUNT(*), GROUP_CONCAT(s.seq, '|', CASE WHEN t.id IS NULL THEN {NEW} "
    f"WHEN (s.version, s.op_id) > (t.version, t.op_id) THEN {NEWER} ELSE {OLDER_CREATED} END, '|', "
    "IF(t.created_at < s.created_at, CAST(t.created_at AS CHAR), '') SEPARATOR ',') "
    f"FROM {KEYS} s LEFT JOIN @TABLE@ t ON t.owner = s.owner AND t.id = s.id "
    "WHERE s.seq BETWEEN %s AND %s "
    "AND (t.id IS NULL OR (s.version, s.op_id) > (t.version, t.op_id) OR s.created_at < t.created_at) "
    "FOR UPDATE"
)
# Stale rows whose `at` is earlier than the stored created_at: just that column.
LOWER_CREATED = (
    f"UPDATE {KEYS} s STRAIGHT_JOIN @TABLE@ t ON t.owner = s.owner AND t.id = s.id "
    "SET t.created_at = s.created_at "
    "WHERE s.seq BETWEEN %s AND %s AND s.created_at < t.created_at "
    "AND (s.version, s.op_id) <= (t.version, t.op_id)"
)
GROUP_CONCAT_MAX = "SET SESSION group_concat_max_len = 67108864"
SAVEPOINT = "SAVEPOINT sluice_fast"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT sluice_fast"


class FastTable:
    """A resource's table on the fast path: its columns (chalicelib.rows, from the declaration)
    and every statement the fast path runs on it. Defaults of LOAD DATA: fields end at a tab,
    lines at a newline, backslash escapes (\\t \\n \\\\ \\N)."""

    def __init__(self, name: str) -> None:
        made = table(name)
        self.name = name
        self.table = made
        self.tsv = made.tsv  # the row text of a command the lanes did not write (the reference)
        columns = ", ".join(made.columns)
        self.load_new = f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE {name} CHARACTER SET utf8mb4 ({columns})"
        self.load_replace = f"LOAD DATA LOCAL INFILE %s REPLACE INTO TABLE {name} CHARACTER SET utf8mb4 ({columns})"
        self.decide = DECIDE.replace("@TABLE@", name)
        self.lower_created = LOWER_CREATED.replace("@TABLE@", name)

    def probe(self, count: int) -> str:
        marks = ", ".join(["(%s, %s)"] * count)
        return f"SELECT COUNT(*) FROM {self.name} {BY_KEY} WHERE (owner, id) IN ({marks}) FOR UPDATE"

    def stored(self, count: int) -> str:
        marks = ", ".join(["(%s, %s)"] * count)
        return f"SELECT owner, id, version, op_id FROM {self.name} {BY_KEY} WHERE (owner, id) IN ({marks}) FOR UPDATE"


_FAST_TABLES: dict[str, FastTable] = {}


def fast_table(name: str) -> FastTable:
    made = _FAST_TABLES.get(name)
    if made is None or made.table is not table(name):
        made = _FAST_TABLES[name] = FastTable(name)
    return made


def main_resource(commands: Sequence[WriteCommand]) -> str:
    """The resource keyed by (owner, id) that most of these commands name (todos when none)."""
    counts = Counter(c.resource for c in commands if c.resource == "todos" or RESOURCES[c.resource].by_id)
    return counts.most_common(1)[0][0] if counts else "todos"
