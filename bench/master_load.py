"""Row 1: what the same stream of accepted writes costs the master.

(a) baseline: a write Lambda talking to RDS: one guarded upsert per request, autocommit, on one
    warm connection (the same last-writer-wins statement the loader uses, one row at a time).
(b) ours: the writes travel through Firehose; objects hold 60 s of traffic at an assumed
    steady 50 writes/s (3,000 commands, about 1 MiB before GZIP: under the 5 MiB buffer), GZIP as
    the delivery stream writes them, and the loader applies each object in one transaction.

Measured on the bench pair's master: transactions committed (SHOW GLOBAL STATUS Binlog_commits:
every committed write transaction goes through the binlog), with Handler_commit (which MariaDB
also bumps at the end of each statement inside a transaction, so it is not a transaction count)
and Com_commit (explicit COMMITs only: autocommit statements never send one) beside it, InnoDB
fsyncs (Innodb_data_fsyncs), CPU time of the mariadbd process (/proc/PID/stat utime+stime, every thread: InnoDB
background work and the binlog included) and wall time, scaled to 10,000 writes. Both start from
an empty, migrated database, and must end with the same rows.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Callable
from typing import Any

from bench.common import (
    Pair,
    Row,
    admin,
    fresh_database,
    global_status,
    process_cpu_seconds,
    production_loader,
    raw_connection,
    row,
)
from bench.events import write_stream

SECTION = "1. Master write load"
COUNTERS = ("Binlog_commits", "Handler_commit", "Com_commit", "Innodb_data_fsyncs")
PER_OBJECT = 3000
WRITES_PER_SECOND = 50
PER = 10_000


def naive_sql(table: Any) -> str:
    cols = ", ".join(table.columns)
    marks = ", ".join(["%s"] * len(table.columns))
    newer = "((VALUES(version), VALUES(op_id)) > (version, op_id))"
    sets = [f"{c} = IF({newer}, VALUES({c}), {c})" for c in (*table.data_columns, "deleted", "updated_at")]
    sets += [
        "created_at = LEAST(created_at, VALUES(created_at))",
        f"op_id = IF({newer}, VALUES(op_id), op_id)",
        f"version = IF({newer}, VALUES(version), version)",
    ]
    return f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {', '.join(sets)}"


def apply_per_request(url: str, commands: list[Any]) -> Callable[[], None]:
    from chalicelib.resources import RESOURCES
    from chalicelib.rows import table

    conn = raw_connection(url)
    tables = {name: table(name) for name in RESOURCES}
    statements = {name: naive_sql(made) for name, made in tables.items()}
    rows = [(statements[c.resource], tables[c.resource].row(c, c.stored_at)) for c in commands]

    def work() -> None:
        with conn.cursor() as cur:
            for sql, values in rows:
                cur.execute(sql, values)
        conn.close()

    return work


def firehose_objects(commands: list[Any], per_object: int) -> list[tuple[str, bytes]]:
    out = []
    for index, start in enumerate(range(0, len(commands), per_object)):
        body = b"".join(c.to_line() for c in commands[start : start + per_object])
        key = f"writes/2026/01/01/00/sluice-bench-1-2026-01-01-00-{index:02d}-00-{index:08d}"
        out.append((key, gzip.compress(body, 6)))
    return out


def apply_by_loader(url: str, objects: list[tuple[str, bytes]]) -> Callable[[], None]:
    from chalicelib.loader import local_etag

    loader = production_loader(url)
    prepared = [(key, local_etag(body), body) for key, body in objects]

    def work() -> None:
        for key, etag, body in prepared:
            loader.load("sluice-bench-writes", key, etag, body)
        loader.db.discard()

    return work


def measure(pair: Pair, work: Callable[[], None]) -> dict[str, float]:
    conn = admin(pair)
    pid = pair.master_pid()
    try:
        probe = _probe_cost(conn)
        before, cpu0, t0 = global_status(conn, COUNTERS), process_cpu_seconds(pid), time.perf_counter()
        work()
        wall, cpu1, after = time.perf_counter() - t0, process_cpu_seconds(pid), global_status(conn, COUNTERS)
    finally:
        conn.close()
    out: dict[str, float] = {name: after[name] - before[name] - probe[name] for name in COUNTERS}
    out["cpu"] = cpu1 - cpu0
    out["wall"] = wall
    return out


def _probe_cost(conn: Any) -> dict[str, int]:
    """What reading the counters itself adds to them."""
    first = global_status(conn, COUNTERS)
    second = global_status(conn, COUNTERS)
    return {name: second[name] - first[name] for name in COUNTERS}


def table_digest(url: str) -> str:
    from chalicelib.db.database import open_database

    db = open_database(url)
    rows = db.query("SELECT owner, id, version, op_id, deleted, title, tags, created_at FROM todos ORDER BY owner, id")
    db.discard()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def run(pair: Pair, n: int = PER, per_object: int = PER_OBJECT) -> list[Row]:
    commands = write_stream(n)
    objects = firehose_objects(commands, per_object)
    raw_bytes = sum(len(c.to_line()) for c in commands[:per_object])
    with fresh_database(pair) as (url_a, _):
        naive = measure(pair, apply_per_request(url_a, commands))
        digest_a = table_digest(url_a)
    with fresh_database(pair) as (url_b, _):
        ours = measure(pair, apply_by_loader(url_b, objects))
        digest_b = table_digest(url_b)
    scale = PER / n
    same = "the two databases ended identical" if digest_a == digest_b else "WARNING: the two databases differ"
    setup = (
        f"{n:,} writes ({len(objects)} objects of up to {per_object:,} commands: 60 s at {WRITES_PER_SECOND}/s, "
        f"{raw_bytes / 2**20:.2f} MiB raw, {len(objects[0][1]) / 2**10:.0f} KiB gzip); {same}"
    )

    def per(stats: dict[str, float], name: str) -> float:
        return stats[name] * scale

    commits_note = (
        f"SHOW GLOBAL STATUS Binlog_commits. Handler_commit: ours {per(ours, 'Handler_commit'):,.0f}, baseline "
        f"{per(naive, 'Handler_commit'):,.0f} (ratio {per(ours, 'Handler_commit') / max(per(naive, 'Handler_commit'), 1):.5f}); "
        f"Com_commit: ours {per(ours, 'Com_commit'):,.0f}, baseline {per(naive, 'Com_commit'):,.0f}. {setup}"
    )
    return [
        row(
            "master commits per 10k writes",
            per(ours, "Binlog_commits"),
            per(naive, "Binlog_commits"),
            "commits",
            "<= 0.002",
            commits_note,
            SECTION,
        ),
        row(
            "master InnoDB fsyncs per 10k writes",
            per(ours, "Innodb_data_fsyncs"),
            per(naive, "Innodb_data_fsyncs"),
            "fsyncs",
            "",
            "Innodb_data_fsyncs (innodb_flush_log_at_trx_commit=1)",
            SECTION,
        ),
        row(
            "master CPU per 10k writes",
            ours["cpu"] * scale,
            naive["cpu"] * scale,
            "s",
            "<= 0.2",
            "mariadbd utime+stime, all threads (10 ms ticks)",
            SECTION,
        ),
        row(
            "wall time per 10k writes",
            ours["wall"] * scale,
            naive["wall"] * scale,
            "s",
            "",
            "one client, sequential; ours includes inflating, parsing and validating every command",
            SECTION,
        ),
    ]
