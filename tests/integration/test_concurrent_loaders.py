"""Several loader processes at once over objects that share keys (CONTRACT section 5: the rows are
then the same as if the objects had been loaded one after another, in any order).

Each round writes a workload (objects of todo and profile commands over a small key space, so
every process writes keys the others write too; one junk line per object; one object given to two
processes), starts N loader processes on the real MariaDB (or a SQLite file) and, once they are
all done, compares every column of every row with the last-writer-wins model of
tests/loader_properties.py: the greatest (version, op_id) wins, deletes are tombstones,
created_at is the earliest `at` of any command seen for the key, updated_at the winner's. Every
load must succeed (deadlocks and lock waits are retried inside the loader), every object is in the
ledger once, and the counts add up.

Ways through the loader (`ROUNDS`):
- `cli`: `python -m chalicelib.cli load` with its defaults: objects over `min_rows` lines take the
  fast path (fresh on an empty table, the keys way once keys are stored, a fresh start redone the
  keys way when another loader got there first); smaller ones the guarded upsert;
- `keys`, `fresh`, `upsert`, `sqlapplier`: tests/integration/loader_worker.py, with tiny chunks
  (keys repeat across chunks, so the end-of-object fix-ups run), or the fast path refused (no
  LOAD DATA LOCAL: the multi-row guarded upsert), or `SqlApplier` alone;
- profiles are mixed in (they always take the guarded upsert, after the todos).
A round may mix ways: each process takes the next way of its list. The workers report which way
each object went, and a round checks that its way was taken.

Then the interleavings that went wrong are forced, one by one, with a second loader on a thread.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.database import Database, open_database, open_master
from chalicelib.loader import BatchLoader, fast_session, fast_statements, local_etag
from chalicelib.loader.apply import SqlApplier
from chalicelib.loader.mysql_fast import MySQLFastApplier
from chalicelib.models import validate_profile, validate_todo
from tests.conftest import ROOT
from tests.loader_properties import check_against_model, model, snapshot, truncate

OWNERS = ("alice", "bob", "carol-ü")
BASE_VERSION = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
JUNK = b'{"v": 1, "op": "put"}'
TIMEOUT = 240


def todo_id(number: int) -> str:
    return f"0190b2a0-0000-7000-8000-{number:012x}"


@dataclass
class Workload:
    history: list[WriteCommand] = field(default_factory=list)  # every distinct command
    files: list[list[Path]] = field(default_factory=list)  # per process, in load order
    commands: dict[Path, int] = field(default_factory=dict)  # valid commands per object
    junk: dict[Path, int] = field(default_factory=dict)


class Maker:
    """Commands over `keys` todo ids per owner and the owners' profiles, `at` following version
    (as the API writes them), versions colliding now and then (then op_id decides)."""

    def __init__(self, seed: int, keys: int) -> None:
        self.rng = random.Random(seed)
        self.keys = keys

    def command(self) -> WriteCommand:
        rng = self.rng
        owner = rng.choice(OWNERS)
        version = BASE_VERSION + rng.randrange(400) * 1_000_000 + rng.choice((0, 0, rng.randrange(1, 10**6)))
        op_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        op = "delete" if rng.random() < 0.1 else "put"
        if rng.random() < 0.02:
            data = None if op == "delete" else validate_profile({"display_name": f"P {version}", "locale": "fr"})
            return make_command(op, "profiles", owner, owner, version, op_id, data)
        title = rng.choice(("t", "buy milk", "tab\there", "back\\slash", "line\nbreak", "ü")) + f" {version}"
        data = validate_todo({"title": title, "state": rng.choice(("open", "done")), "tags": ["x"][: rng.randrange(2)]})
        if op == "delete":
            data = None
        return make_command(op, "todos", owner, todo_id(rng.randrange(self.keys)), version, op_id, data)

    def body(self, commands: list[WriteCommand], junk: bool) -> bytes:
        lines = [c.to_line() for c in commands]
        if junk:
            lines.insert(self.rng.randrange(len(lines) + 1), JUNK + b"\n")
        raw = b"".join(lines)
        return gzip.compress(raw, mtime=0) if self.rng.random() < 0.3 else raw


def write_workload(
    folder: Path, seed: int, processes: int, objects: int, lines: int, keys: int, maker: Maker | None = None
) -> Workload:
    """`objects` objects of `lines` commands per process; the last process also loads the first
    process's first object (the same file: one of the two loads is skipped by the ledger)."""
    maker = maker or Maker(seed, keys)
    work = Workload()
    folder = folder / "writes" / f"seed-{seed}"
    folder.mkdir(parents=True)
    for process in range(processes):
        paths = []
        for number in range(objects):
            commands = [maker.command() for _ in range(lines)]
            path = folder / f"p{process}-o{number}"
            path.write_bytes(maker.body(commands, junk=True))
            work.history.extend(commands)
            work.commands[path] = len(commands)
            work.junk[path] = 1
            paths.append(path)
        work.files.append(paths)
    work.files[-1].append(work.files[0][0])
    return work


def preload(db: Database, maker: Maker, lines: int) -> list[WriteCommand]:
    """Some keys stored before the round (one object, loaded alone), so loads take the keys way."""
    commands = [maker.command() for _ in range(lines)]
    body = b"".join(c.to_line() for c in commands)
    result = BatchLoader(db).load("local", "writes/preload", local_etag(body), body)
    assert result.applied > 0
    return commands


# -- running the processes --------------------------------------------------------------------------
def start(way: str, url: str, files: list[Path]) -> subprocess.Popen[str]:
    env = {**os.environ, "SLUICE_LOG": "0", "DATABASE_URL": url}
    if way == "cli":
        argv = [sys.executable, "-m", "chalicelib.cli", "load", *map(str, files)]
        stdin = subprocess.DEVNULL
    else:
        argv = [sys.executable, "-m", "tests.integration.loader_worker", url, way, *map(str, files)]
        stdin = subprocess.PIPE
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_all(url: str, ways: list[str], work: Workload) -> tuple[list[dict[str, int]], Counter[str]]:
    """Start every process, release the workers at once, wait; the counts each process printed,
    and the ways the workers' objects went (MySQLFastApplier.paths, added up)."""
    processes = [start(way, url, files) for way, files in zip(ways, work.files, strict=True)]
    try:
        for process in processes:
            if process.stdin is not None:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready", process.stderr and process.stderr.read()
        for process in processes:
            if process.stdin is not None:
                process.stdin.write("go\n")
                process.stdin.flush()  # communicate() closes it
        outputs = [process.communicate(timeout=TIMEOUT) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    failures = [
        f"{way} #{n}: exit {p.returncode}: {(out + err).strip()[-2000:]}"
        for n, (way, p, (out, err)) in enumerate(zip(ways, processes, outputs, strict=True))
        if p.returncode != 0
    ]
    assert not failures, "\n".join(failures)
    retries = sum(err.count("retried after") for _, err in outputs)
    print(f"{' '.join(ways)}: {retries} loads retried by the workers")  # -s, SLUICE_WORKER_LOG=1
    return counted(ways, [out for out, _ in outputs])


def counted(ways: list[str], outputs: list[str]) -> tuple[list[dict[str, int]], Counter[str]]:
    """The counts each process printed, and the ways the workers' objects went."""
    totals = []
    paths: Counter[str] = Counter()
    for way, out in zip(ways, outputs, strict=True):
        if way == "cli":  # applied=.. stale=.. rejected=.. skipped=..
            totals.append({k: int(v) for k, v in (part.split("=") for part in out.split())})
            continue
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        loads = [line for line in lines if "paths" not in line]
        totals.append({k: sum(load[k] for load in loads) for k in ("applied", "stale", "rejected", "skipped")})
        paths.update(*(line["paths"] for line in lines if "paths" in line))
    return totals, paths


def differences(rows: dict[str, list[tuple[Any, ...]]], history: list[WriteCommand]) -> list[str]:
    """Rows whose (version, op_id, deleted, created_at, updated_at) differ from the model's, in
    words (check_against_model, which also compares the data, only says that one differs)."""
    expected = model(history)
    out = []
    for table, rest in (("todos", 2), ("profiles", 1)):
        for row in rows[table]:
            owner, id_ = row[0], row[1] if rest == 2 else row[0]
            want = expected.get((table, owner, id_))
            got = tuple(row[-5:])
            if want is None:
                out.append(f"{table} {owner} {id_}: a row the model does not have")
                continue
            wanted = (want["version"], want["op_id"], want["deleted"], want["created_at"], want["updated_at"])
            if (int(got[0]), got[1], int(got[2]), got[3], got[4]) != wanted:
                out.append(f"{table} {owner} {id_}: stored {got}, model {wanted}")
    return out


def check_round(db: Database, work: Workload, totals: list[dict[str, int]]) -> None:
    rows = snapshot(db)
    wrong = differences(rows, work.history)
    assert not wrong, f"{len(wrong)} rows differ from the model:\n" + "\n".join(wrong[:10])
    check_against_model(rows, work.history)
    objects = set(work.commands)
    assert sum(t["skipped"] for t in totals) == 1, "the object given to two processes is loaded once"
    assert sum(t["applied"] + t["stale"] for t in totals) == sum(work.commands.values())
    assert sum(t["rejected"] for t in totals) == sum(work.junk.values())
    ledger = db.query("SELECT COUNT(*), SUM(rejected) FROM ingest_batches WHERE object_key <> 'writes/preload'")
    assert (int(ledger[0][0]), int(ledger[0][1])) == (len(objects), sum(work.junk.values()))
    rejects = db.query("SELECT COUNT(*) FROM ingest_rejects")
    assert int(rejects[0][0]) == sum(work.junk.values())


# -- MariaDB ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Round:
    ways: tuple[str, ...]  # one per process
    objects: int  # per process
    lines: int  # per object
    keys: int  # todo ids per owner
    preload: int = 0  # commands loaded before the round (0: the table starts empty)


ROUNDS = {
    # cli defaults, objects above min_rows: fresh starts racing each other (redone the keys way)
    "cli-fresh": Round(("cli",) * 4, objects=3, lines=700, keys=120),
    # cli defaults with keys stored: the keys way, fix-ups of keys seen again in later chunks
    "cli-keys": Round(("cli",) * 4, objects=3, lines=700, keys=120, preload=300),
    # cli defaults, objects below min_rows: the guarded multi-row upsert
    "cli-small": Round(("cli",) * 5, objects=6, lines=60, keys=40, preload=60),
    "keys": Round(("keys",) * 4, objects=3, lines=250, keys=60, preload=100),
    "fresh": Round(("fresh",) * 4, objects=3, lines=250, keys=60),
    "upsert": Round(("upsert",) * 4, objects=3, lines=250, keys=60, preload=100),
    "mixed": Round(("cli", "keys", "upsert", "sqlapplier", "fresh"), objects=3, lines=250, keys=60, preload=100),
}
SEEDS = (1, 2)
# The `paths` count each worker way must show at least once: fresh (in a round without preload the
# first probe finds nothing stored, as no load can commit before it), keys (forced), refused (no
# LOAD DATA LOCAL).
WORKER_PATHS = {"fresh": "fresh", "keys": "keys", "upsert": "refused"}


@pytest.mark.mariadb
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(ROUNDS))
def test_concurrent_loaders_on_mariadb_end_in_the_last_writer_wins_rows(
    name: str, seed: int, mysql_url: str, mysql_db: Database, tmp_path: Path
) -> None:
    spec = ROUNDS[name]
    maker = Maker(seed * 1000 + len(name), spec.keys)
    before = preload(mysql_db, maker, spec.preload) if spec.preload else []
    work = write_workload(tmp_path, seed, len(spec.ways), spec.objects, spec.lines, spec.keys, maker)
    totals, paths = run_all(mysql_url, list(spec.ways), work)
    work.history.extend(before)
    check_round(mysql_db, work, totals)
    taken = {WORKER_PATHS[way] for way in spec.ways if way in WORKER_PATHS} - ({"fresh"} if spec.preload else set())
    assert all(paths[path] >= 1 for path in taken), (taken, paths)  # the round went its ways


# -- five loaders on the same keys, round after round ----------------------------------------------------
FIVE = ("keys", "keys", "keys", "sqlapplier", "upsert")
FIVE_ROUNDS = 20


@pytest.mark.mariadb
def test_five_loaders_on_the_same_keys_all_get_through_round_after_round(
    mysql_url: str, mysql_db: Database, tmp_path: Path
) -> None:
    """docs/operations.md promises that five loaders on the same keys all get through. Twenty
    rounds of five worker processes (kept between rounds), each loading two objects of 300
    commands over 20 ids per owner on top of stored rows: the keys way in chunks of 48, whose
    locking reads take an object's keys chunk by chunk in the object's order, deadlocks with
    every other load again and again. A load used to give up after its eighth try (1213
    "Deadlock found"; one in 32 loads in a review). Here the workers get two tries before the
    gate (SLUICE_LOAD_ATTEMPTS=2), so that nearly every load needs it: getting through must not
    rest on how many tries the retries are given."""
    env = {**os.environ, "SLUICE_LOG": "0", "SLUICE_LOAD_ATTEMPTS": "2"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.loader_worker", mysql_url, way],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for way in FIVE
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for number in range(FIVE_ROUNDS):
            truncate(mysql_db)
            maker = Maker(5000 + number, 20)
            before = preload(mysql_db, maker, 60)
            work = write_workload(tmp_path / f"round-{number}", number, len(FIVE), 2, 300, 20, maker)
            outputs = run_round(workers, work)
            work.history.extend(before)
            totals, _ = counted(list(FIVE), outputs)
            check_round(mysql_db, work, totals)
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate()


def run_round(workers: list[subprocess.Popen[str]], work: Workload) -> list[str]:
    """Each worker's files of the round, sent to all at once; what each printed until `done`."""
    for worker, files in zip(workers, work.files, strict=True):
        assert worker.stdin is not None
        worker.stdin.write(" ".join(map(str, files)) + "\n")
        worker.stdin.flush()
    outputs = []
    for worker in workers:
        assert worker.stdout is not None
        lines = list(iter(worker.stdout.readline, "done\n"))
        assert lines and not lines[-1].startswith("error"), "".join(lines)[-2000:]
        outputs.append("".join(lines))
    return outputs


# -- the two interleavings that went wrong, made to happen ----------------------------------------------
def put(resource: str, number: int, version: int, owner: str = "alice") -> WriteCommand:
    op_id = str(uuid.UUID(int=version, version=4))
    if resource == "profiles":
        data = validate_profile({"display_name": f"P {version}"})
        return make_command("put", "profiles", owner, owner, version, op_id, data)
    data = validate_todo({"title": f"t {version}"})
    return make_command("put", "todos", owner, todo_id(number), version, op_id, data)


def load_commands(db: Database, commands: list[WriteCommand], applier: Any = None, attempts: int = 0) -> Any:
    body = b"".join(c.to_line() for c in commands)
    loader = BatchLoader(db, applier)
    if attempts:  # that many tries, and no more through the gate
        loader.ATTEMPTS, loader.EXCLUSIVE_SECONDS = attempts, 0
    return loader.load("local", f"writes/{uuid.uuid4()}", local_etag(body), body)


def beside(url: str, commands: list[WriteCommand]) -> threading.Thread:
    """Another loader (its own connection, on a thread) loads `commands`; returns once it has
    committed or is waiting for a lock this test's loader holds."""
    other = open_master(url)
    ids: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ids.append(int(other.query("SELECT CONNECTION_ID()")[0][0]))
            # One attempt: should the wait go unseen, its lock wait timeout ends the test, not 8.
            load_commands(other, commands, SqlApplier(other), attempts=1)
        except BaseException as exc:  # noqa: BLE001 - checked by the caller through .errors
            errors.append(exc)
        finally:
            other.discard()

    thread = threading.Thread(target=run)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    watcher = open_master(url)
    try:
        while thread.is_alive():
            if (
                ids
                and watcher.query(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX "
                    "WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'",
                    (ids[0],),
                )[0][0]
            ):
                break
            # INNODB_TRX is a cache refreshed only when last read over 0.1 s ago: poll slower.
            thread.join(0.25)
    finally:
        watcher.discard()
    return thread


def beside_after_the_first_read(
    applier: SqlApplier, url: str, commands: list[WriteCommand], monkeypatch: pytest.MonkeyPatch
) -> list[threading.Thread]:
    """Once `applier` has read (and locked) its first chunk of stored rows, another loader loads
    `commands` beside it (see `beside`); the list holds its thread from then on."""
    read = applier._stored
    others: list[threading.Thread] = []

    def read_then_another_loader(cur: Any, table: Any, keys: Any) -> Any:
        rows = read(cur, table, keys)
        if not others:
            others.append(beside(url, commands))
        return rows

    monkeypatch.setattr(applier, "_stored", read_then_another_loader)
    return others


def stored_row(db: Database, resource: str, number: int) -> tuple[Any, ...]:
    if resource == "profiles":
        rows = db.query("SELECT version, created_at, updated_at FROM profiles WHERE owner = 'alice'")
    else:
        rows = db.query(
            "SELECT version, created_at, updated_at FROM todos WHERE owner = 'alice' AND id = %s", (todo_id(number),)
        )
    version, created, updated = rows[0]
    return int(version), str(created), str(updated)


def stamp(command: WriteCommand) -> str:
    return str(datetime.fromisoformat(command.stored_at))


@pytest.mark.mariadb
def test_a_key_another_loader_commits_after_the_load_began_is_read_where_it_is_locked(
    mysql_url: str, mysql_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys way, a key first seen after another loader committed it (the decision's locking
    read sees it, newer and created earlier: left alone) and seen again in a later chunk: the
    end of the object reads it once more to count. That read was a plain SELECT in the
    REPEATABLE READ snapshot of the probe, from before the other loader's commit: KeyError, and
    the load failed every time."""
    key, v = 0x20, BASE_VERSION
    load_commands(mysql_db, [put("todos", 0x10, v)])  # a stored row, so the probe's gap locks miss `key`
    ours = [put("todos", 1, v + 1), put("todos", 2, v + 1), put("todos", key, v + 3)]
    ours += [put("todos", 0x30 + n, v + 1) for n in range(4)] + [put("todos", key, v + 4)]
    ours += [put("todos", 0x40, v + 1)]
    newer, first = put("todos", key, v + 9), put("todos", key, v)  # the other loader's
    applier = MySQLFastApplier(mysql_db, min_rows=1, chunk_lines=2, threaded=False, prefers_keys=True)
    started = fast_session.Session._start
    others: list[threading.Thread] = []

    def start_then_another_loader_commits(session: Any, rows: Any) -> None:
        started(session, rows)
        if not others:
            others.append(beside(mysql_url, [newer, first]))

    monkeypatch.setattr(fast_session.Session, "_start", start_then_another_loader_commits)
    result = load_commands(mysql_db, ours, applier)
    others[0].join()
    assert not others[0].errors  # type: ignore[attr-defined]
    assert applier.paths["keys"] == 1
    assert (result.applied, result.stale) == (7, 2)
    assert stored_row(mysql_db, "todos", key) == (newer.version, stamp(first), stamp(newer))


@pytest.mark.mariadb
@pytest.mark.parametrize("resource", ["todos", "profiles"])
def test_created_at_is_the_earliest_at_when_another_loader_lowers_it_meanwhile(
    resource: str, mysql_url: str, mysql_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarded upsert reads the stored row, finds its own command stale but earlier than the
    stored created_at, and lowers created_at. Another loader with an even earlier command commits
    in between: `SET created_at = %s` put the later `at` back. created_at must end the earliest
    `at` of the three, whatever the interleaving."""
    v = BASE_VERSION
    stored, ours, earliest = put(resource, 5, v + 9), put(resource, 5, v + 5), put(resource, 5, v)
    load_commands(mysql_db, [stored])
    applier = SqlApplier(mysql_db)
    others = beside_after_the_first_read(applier, mysql_url, [earliest], monkeypatch)
    result = load_commands(mysql_db, [ours], applier)
    others[0].join()
    assert not others[0].errors  # type: ignore[attr-defined]
    assert (result.applied, result.stale) == (0, 1)
    assert stored_row(mysql_db, resource, 5) == (stored.version, stamp(earliest), stamp(stored))


@pytest.mark.mariadb
def test_loads_of_the_upsert_path_lock_their_rows_in_one_order(
    mysql_url: str, mysql_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarded upsert reads (locking) and writes an object's keys 500 at a time. It took them
    in the order the object held them: a load of 600 stored keys in descending order locked the
    last 500 first, another load in ascending order the first 500, and each then wanted the
    other's (1213, one of them rolled back). In primary-key order, the second waits instead."""
    v, ids = BASE_VERSION, range(1, 601)
    load_commands(mysql_db, [put("todos", n, v) for n in ids])  # stored rows: row locks, not gap locks
    # Other owners' rows, as a real table has: the server then reads the 500 keys by range, locking
    # just them (on a table of little else it scans, and locks, the whole index)
    load_commands(mysql_db, [put("todos", n, v, owner="bob") for n in range(10_000)])
    mysql_db.query("ANALYZE TABLE todos")
    ours = [put("todos", n, v + 1) for n in reversed(ids)]
    theirs = [put("todos", n, v + 2) for n in ids]
    applier = SqlApplier(mysql_db)
    others = beside_after_the_first_read(applier, mysql_url, theirs, monkeypatch)  # waits, or deadlocks with us
    body = b"".join(c.to_line() for c in ours)
    loader = BatchLoader(mysql_db, applier)
    pauses: list[float] = []
    loader.sleep = pauses.append  # type: ignore[method-assign]
    result = loader.load("local", "writes/descending", local_etag(body), body)
    others[0].join()
    assert not others[0].errors and pauses == []  # type: ignore[attr-defined]
    assert (result.applied, result.stale) == (600, 0)
    assert mysql_db.query("SELECT MIN(version), MAX(version) FROM todos WHERE owner = 'alice'") == [(v + 2, v + 2)]


@pytest.mark.mariadb
def test_a_deadlock_in_a_chunk_queued_behind_a_fresh_start_that_must_be_redone_is_retried(
    mysql_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fresh way, threaded: a chunk inserts fewer rows than sent (a key was stored after all), so
    the object is rolled back to the savepoint and redone the keys way; a chunk queued behind it
    was a deadlock victim, which rolls back the whole transaction, savepoint included. That error
    was ignored and the rollback to the savepoint failed (1305, not retryable): the load failed
    instead of running again."""
    import pymysql

    v = BASE_VERSION
    load_commands(mysql_db, [put("todos", 3, v)])
    ours = [put("todos", n, v + 1) for n in range(1, 12)]
    applier = MySQLFastApplier(mysql_db, min_rows=1, chunk_lines=2, threaded=True)
    real = fast_session.load_file
    fresh_chunks = [0]

    def third_fresh_chunk_deadlocks_once(cur: Any, statement: str, text: str) -> int:
        if statement == fast_statements.fast_table("todos").load_new:
            fresh_chunks[0] += 1
            if fresh_chunks[0] == 3:  # [k1], [k2, k3 (stored)], then this one
                cur.connection.rollback()  # what the server does to a deadlock victim
                raise pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
        return real(cur, statement, text)

    monkeypatch.setattr(fast_session, "load_file", third_fresh_chunk_deadlocks_once)
    result = load_commands(mysql_db, ours, applier)
    assert (result.applied, result.stale) == (11, 0)  # k3's stored row is older: ours wins
    assert applier.paths["redo"] == 2  # the first attempt and the one after the deadlock
    assert int(mysql_db.query("SELECT COUNT(*) FROM todos")[0][0]) == 11


# -- SQLite -----------------------------------------------------------------------------------------
def test_concurrent_cli_loads_on_sqlite_wait_for_the_lock_and_end_in_the_last_writer_wins_rows(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/concurrent.sqlite3"
    db = open_database(url)
    truncate(db)  # creates the schema
    maker = Maker(7, 40)
    before = preload(db, maker, 60)
    work = write_workload(tmp_path, 7, 4, objects=3, lines=300, keys=40, maker=maker)
    totals, _ = run_all(url, ["cli"] * 4, work)
    work.history.extend(before)
    check_round(db, work, totals)
