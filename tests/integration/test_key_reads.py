"""The loader's reads of listed keys (`(owner, id) IN ((...), ...)`) weigh only the primary key.

Left to itself, MariaDB's range optimizer also works through `todos_list` (owner, list_id, id),
whose first column the list names, in time that grows with the square of the list: 112 ms for
one read of 500 keys against 2.6 ms on the primary key alone (chalicelib/db/schema.py, BY_KEY).
What the optimizer weighed is read from its trace, not timed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.db.database import Database, open_master
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.loader.apply import SqlApplier
from chalicelib.loader.fast_statements import fast_table
from chalicelib.rows import table
from tests.loader_limits import commands_body

pytestmark = pytest.mark.mariadb

STORED = 300  # todos of alice, loaded; the lists below name some of them and some never stored


@pytest.fixture
def db(mysql_url: str) -> Iterator[Database]:
    database = open_master(mysql_url)
    database.migrate()
    body = commands_body(STORED)
    assert BatchLoader(database).load("bench", "stored", local_etag(body), body).applied == STORED
    yield database
    database.discard()


def stored_ids(db: Database) -> list[str]:
    return [r[0] for r in db.query("SELECT id FROM todos WHERE owner = %s ORDER BY id", ("alice",))]


def weighed(cur: Any) -> list[str]:
    """The indexes the optimizer weighed for the range read of the statement just run."""
    cur.execute("SELECT TRACE FROM information_schema.OPTIMIZER_TRACE")
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "potential_range_indexes":
                    found.extend(i["index"] for i in value if i.get("usable"))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(cur.fetchone()[0]))
    return found


def keys_listed(db: Database, count: int) -> list[tuple[str, str]]:
    """`count` keys: half of them stored, the rest never stored."""
    ids = stored_ids(db)
    keys = [("alice", ids[i]) for i in range(count // 2)]
    keys += [("alice", f"0190b2a0-0000-7000-9000-{i:012d}") for i in range(count - len(keys))]
    return keys


@pytest.mark.parametrize("statement", ["probe", "stored"])
def test_the_fast_paths_reads_of_listed_keys_weigh_only_the_primary_key(db: Database, statement: str) -> None:
    keys = keys_listed(db, 64)
    fast = fast_table("todos")
    with db.transaction() as cur:
        cur.execute("SET SESSION optimizer_trace = 'enabled=on'")
        cur.execute(getattr(fast, statement)(len(keys)), [part for key in keys for part in key])
        rows = cur.fetchall()
        assert weighed(cur) == ["PRIMARY"]
        cur.execute("SET SESSION optimizer_trace = 'enabled=off'")
    if statement == "probe":
        assert rows == ((32,),)
    else:
        assert sorted((r[0], r[1]) for r in rows) == sorted(keys[:32])


def test_the_upserts_read_of_stored_rows_weighs_only_the_primary_key(db: Database) -> None:
    keys = keys_listed(db, 500)
    with db.transaction() as cur:
        cur.execute("SET SESSION optimizer_trace = 'enabled=on'")
        stored = SqlApplier(db)._stored(cur, table("todos"), [("todos", owner, id_) for owner, id_ in keys])
        assert weighed(cur) == ["PRIMARY"]
        cur.execute("SET SESSION optimizer_trace = 'enabled=off'")
    assert sorted(stored) == sorted(keys[:250])
