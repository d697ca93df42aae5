"""The system under test, as the history checker drives it: two API instances (two
`chalicelib.bootstrap.build` service sets, i.e. two Lambda processes) with clocks apart, one write
stream, one loader process, one Redis reached through a proxy that can be cut, and the database:
the embedded SQLite file, or the MariaDB master/replica pair (scripts/db-pair) with the master and
the replica reached through proxies too.

Nothing here checks anything: `runner.Runner` drives the system and holds every answer to the
model (`model.Model`).

Injected, so that a seed replays the same history
    - time: `SimTime`, read by each instance's version clock, its pending writes' expiry and its
      breakers (`InstanceClock`, a fixed offset per instance);
    - ids: the POST ids (UUIDv7) and the op_ids the service draws (`seeded_ids`);
    - faults: Redis, the replica and the master cut by `proxy.TcpProxy` (MariaDB); on SQLite an
      outage is a gate on the loader's connections (`SqliteGate`); a loader "SIGKILL" is an
      attempt that began and never finished (its connection dropped, as a dead process's).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random
from typing import Any

from tests.histories.proxy import TcpProxy

STREAM = "sluice-history"
BUCKET = "sluice-history-writes"
BASE_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: the simulated clock starts here
CACHE_TTL_SECONDS = 120
PENDING_TTL_SECONDS = 300
OUTAGE_SECONDS = 0.3  # how long an injected database outage during a load lasts (real time)
CONCURRENT_TIMEOUT = 120.0  # concurrent loads that have not ended by then are reported


def offsets(seed: int) -> tuple[int, int]:
    """The instances' clock offsets (µs): instance 1's clock ahead of or behind instance 0's by up
    to 3 s, under the 5 s bound of min_version."""
    return (0, (seed * 7919 % 6_000_001) - 3_000_000)


class Killed(BaseException):
    """A loader process dying (SIGKILL): no `except Exception` in the loader sees it."""


# -- clocks and ids ------------------------------------------------------------------------------
class SimTime:
    """The history's time, in nanoseconds since the epoch; moved on by the runner only."""

    def __init__(self, ns: int = BASE_NS) -> None:
        self.ns = ns

    def advance_us(self, us: int) -> None:
        self.ns += us * 1000


class InstanceClock:
    """One process's clock: the history's time plus a fixed offset (clocks of hosts disagree)."""

    def __init__(self, time: SimTime, offset_us: int) -> None:
        self.time = time
        self.offset_us = offset_us

    def __call__(self) -> int:  # time.time_ns's shape: VersionClock and PendingWrites read it
        return self.time.ns + self.offset_us * 1000

    def seconds(self) -> float:  # time.monotonic's shape: the breakers read it
        return self() / 1e9

    def now_us(self) -> int:
        return self() // 1000


@contextlib.contextmanager
def seeded_ids(rng: Random, time: SimTime) -> Iterator[None]:
    """The service's random ids drawn from `rng`: a POST's UUIDv7 (its time from the history's
    clock) and every command's op_id, so that a seed replays the same ids (and the same op_id
    order between tied versions)."""
    import chalicelib.service as service

    def uuid7(now_ms: int | None = None) -> str:
        ms = time.ns // 1_000_000 if now_ms is None else now_ms
        rand = rng.getrandbits(74)
        value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & (2**62 - 1))
        return str(uuid.UUID(int=value))

    def new_op_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    saved = service.uuid7, service.new_op_id
    service.uuid7, service.new_op_id = uuid7, new_op_id  # type: ignore[assignment]
    try:
        yield
    finally:
        service.uuid7, service.new_op_id = saved  # type: ignore[assignment]


# -- the write stream -----------------------------------------------------------------------------
@dataclass
class Record:
    """One PutRecordBatch entry: one request's commands, as lines."""

    instance: int
    data: bytes
    commands: list[dict[str, Any]]
    cmds: list[Any] = field(default_factory=list)  # the model's Cmds, once the answer is known


@dataclass(eq=False)
class Obj:
    """One object the stream delivered (the Firehose layout under writes/)."""

    key: str
    body: bytes
    records: list[Record]
    junk: int  # lines in it that are not commands
    gzipped: bool
    trailing: bool  # bytes after the GZIP member
    copy_of: Obj | None = None
    loaded: bool = False
    kills: int = 0
    outages: int = 0
    concurrent: int = 0
    loads: int = 0

    @property
    def etag(self) -> str:
        return hashlib.md5(self.body, usedforsecurity=False).hexdigest()

    @property
    def commands(self) -> int:
        return sum(len(r.commands) for r in self.records)

    @property
    def rejects(self) -> int:
        return self.junk + (1 if self.trailing else 0)

    def cmds(self) -> list[Any]:
        return [c for r in self.records for c in r.cmds]

    def label(self) -> str:
        return (
            f"object {self.key.rsplit('/', 1)[-1]} ({self.commands} commands; kills {self.kills}, "
            f"outages {self.outages}, concurrent loads {self.concurrent}, loads {self.loads})"
        )


class Stream:
    """The Firehose delivery stream: takes records (`StreamClient`) and, when the runner says,
    delivers the oldest as an object (`cut`), sometimes twice, GZIP or not, with a foreign line."""

    FOREIGN = b'{"v": 2, "op": "put"}\n'

    def __init__(self, time: SimTime, rng: Random) -> None:
        self.time = time
        self.rng = rng
        self.records: list[Record] = []
        self.buffer: list[Record] = []
        self.objects: list[Obj] = []

    def take(self, instance: int, data: bytes) -> None:
        commands = [json.loads(line) for line in data.splitlines() if line]
        record = Record(instance, data, commands)
        self.records.append(record)
        self.buffer.append(record)

    def mark(self) -> int:
        return len(self.records)

    def taken_since(self, mark: int, instance: int) -> list[Record]:
        return [r for r in self.records[mark:] if r.instance == instance]

    def cut(self, share: float, gzipped: bool, junk: bool, trailing: bool, twice: bool) -> list[Obj]:
        """Deliver the oldest `share` of the buffer (at least one record) as an object."""
        if not self.buffer:
            return []
        count = max(1, round(share * len(self.buffer)))
        records, self.buffer = self.buffer[:count], self.buffer[count:]
        parts = [r.data for r in records]
        if junk:
            parts.insert(self.rng.randint(1, len(parts)), self.FOREIGN)  # never first: GZIP is told by content
        body = b"".join(parts)
        if gzipped:
            body = gzip.compress(body, compresslevel=1, mtime=0)
            if trailing:
                body += b"trailing bytes after the GZIP member\n"
        made = [Obj(self._name(), body, records, 1 if junk else 0, gzipped, gzipped and trailing)]
        if twice:  # Firehose retried its S3 write: the same records under another name
            made.append(Obj(self._name(), body, records, made[0].junk, gzipped, made[0].trailing, copy_of=made[0]))
        self.objects += made
        return made

    def _name(self) -> str:
        when = datetime.fromtimestamp(self.time.ns / 1e9, UTC)
        name = f"{STREAM}-1-{when:%Y-%m-%d-%H-%M-%S}-{uuid.UUID(int=self.rng.getrandbits(128))}"
        return f"writes/{when:%Y/%m/%d/%H}/{name}"


class StreamClient:
    """The Firehose client of one API instance (the real FirehoseWriter calls it)."""

    def __init__(self, stream: Stream, instance: int) -> None:
        self.stream = stream
        self.instance = instance

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
        assert DeliveryStreamName == STREAM
        for record in Records:
            self.stream.take(self.instance, bytes(record["Data"]))
        return {
            "FailedPutCount": 0,
            "RequestResponses": [{"RecordId": uuid.uuid4().hex} for _ in Records],
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Instance:
    """One API process: its services (made current for its requests) and its clock."""

    number: int
    services: Any
    clock: InstanceClock

    @property
    def redis_breaker(self) -> Any:
        return self.services.reader.breaker  # shared by its cache reads and its pending writes

    @property
    def pending(self) -> Any:
        return self.services.service.pending

    @property
    def replica_breaker(self) -> Any | None:
        readers = getattr(self.services.reader.inner, "breakers", None)
        return readers[0] if readers and len(readers) > 1 else None


def build_instance(number: int, env: dict[str, str], stream: Stream, clock: InstanceClock) -> Instance:
    from chalicelib import bootstrap
    from chalicelib.config import Settings
    from chalicelib.ids import VersionClock
    from chalicelib.writers.firehose import FirehoseWriter

    writer = FirehoseWriter(StreamClient(stream, number), STREAM, sleep=lambda _s: None, jitter=lambda cap: cap)
    services = bootstrap.build(Settings.from_env(env), writer=writer)
    services.service.clock = VersionClock(clock)
    pending = services.service.pending
    assert pending is not None, "the checker needs CACHE_URL: pending writes are what it checks"
    pending.clock = clock
    services.reader.breaker.clock = clock.seconds
    for breaker in getattr(services.reader.inner, "breakers", ()):
        breaker.clock = clock.seconds
    return Instance(number, services, clock)


class GatedAttempts:
    """The loader's `Attempts` with the concurrent deliveries' schedule: each load records its
    attempt, then waits until every load of the round has recorded its own (or `wait` seconds
    passed), as when S3 events for one object arrive together. All else passes through."""

    def __init__(self, inner: Any, parties: int, wait: float = 1.0) -> None:
        self.inner = inner
        self.parties = parties
        self.wait = wait
        self.began = 0
        self._cond = threading.Condition()

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.inner.begin(*args, **kwargs)
        finally:
            with self._cond:
                self.began += 1
                self._cond.notify_all()
                self._cond.wait_for(lambda: self.began >= self.parties, timeout=self.wait)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class SqliteGate:
    """An outage of the embedded database as the loader sees it: while down, every connection the
    loader's `Database` hands out is refused (DatabaseUnavailable), and the statement running when
    it went down fails as a lost disk or server would."""

    def __init__(self, db: Any) -> None:
        self.down = False
        real = db.connection

        def connection() -> Any:
            if self.down:
                from chalicelib.errors import DatabaseUnavailable

                raise DatabaseUnavailable("injected outage: the database is unreachable")
            return real()

        db.connection = connection  # this Database object only: the loader's process

    def cut(self) -> None:
        self.down = True
        raise sqlite3.OperationalError("disk I/O error (injected outage)")

    def restore(self) -> None:
        self.down = False


# -- the system ------------------------------------------------------------------------------------
class System:
    """What both tiers share; `SqliteSystem` and `PairSystem` add the database and its faults."""

    dialect = ""
    replica_faults = False
    lagging = False
    replica_is_up = True

    def __init__(self, env: dict[str, str], redis_url: str, seed: int, offsets_us: tuple[int, int]) -> None:
        from chalicelib import bootstrap
        from chalicelib.config import Settings
        from chalicelib.readers.resp import RespClient
        from tests.integration.faults import TrippingApplier

        self.time = SimTime()
        self.rng = Random(seed ^ 0x5EED)
        self.stream = Stream(self.time, Random(seed ^ 0x57EA))
        host, port = redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
        self.redis_proxy = TcpProxy(host, int(port))
        self.redis = RespClient.from_url(redis_url, timeout=5, connect_timeout=2)  # the checker's own, direct
        cache = f"redis://127.0.0.1:{self.redis_proxy.port}/0?timeout=2&connect_timeout=1"
        self.env = {
            **env,
            "CACHE_URL": cache,
            "CACHE_TTL_SECONDS": str(CACHE_TTL_SECONDS),
            "PENDING_TTL_SECONDS": str(PENDING_TTL_SECONDS),
            "WRITE_TRANSPORT": "firehose",
            "FIREHOSE_STREAM": STREAM,
            "WRITES_BUCKET": BUCKET,
        }
        self.clocks = [InstanceClock(self.time, offset) for offset in offsets_us]
        self.instances = [build_instance(n, self.env, self.stream, c) for n, c in enumerate(self.clocks)]
        # The loader: a process of its own (the S3 event handler), its clock the history's.
        self.loader_clock = InstanceClock(self.time, 0)
        self.loader_services = bootstrap.build(Settings.from_env(self.loader_env()))
        self.loader = self.loader_services.loader
        invalidator = self.loader.on_commit
        self.invalidator_breaker = invalidator.breaker
        self.invalidator_breaker.clock = self.loader_clock.seconds
        self.tripping = TrippingApplier(self.loader.applier)
        self.loader.applier = self.tripping
        # Redis keys under a prefix of this history's own, so that its "FLUSHDB" and "TTL expiry"
        # touch nothing of anyone else's (the owners' names repeat from run to run).
        self.prefix = f"sluice-history:{uuid.uuid4().hex[:12]}"
        for instance in self.instances:
            instance.services.reader.prefix = self.prefix
            instance.pending.prefix = self.prefix
        invalidator.prefix = self.prefix
        self.admin = self.open_admin()

    def loader_env(self) -> dict[str, str]:
        return self.env

    def open_admin(self) -> Any:
        """The checker's own connection to the master (ledger and rows), never cut."""
        raise NotImplementedError

    def killable_loader(self) -> tuple[Any, Any]:
        """(a BatchLoader in a process of its own, its Database): for an attempt that dies."""
        from chalicelib.db.database import open_master
        from chalicelib.loader import BatchLoader

        db = open_master(self.loader_env()["DATABASE_URL"])
        return BatchLoader(db), db

    # -- faults --------------------------------------------------------------------------------
    def outage_fault(self) -> tuple[Callable[[], None], Callable[[], None]]:
        """(cut, restore): the database goes away during a load, and comes back."""
        raise NotImplementedError

    def redis_down(self) -> None:
        self.redis_proxy.down()

    def redis_up(self) -> None:
        self.redis_proxy.up()

    @property
    def redis_is_up(self) -> bool:
        return self.redis_proxy.is_up

    def scan(self, pattern: str) -> list[bytes]:
        keys: list[bytes] = []
        cursor: Any = b"0"
        while True:
            cursor, found = self.redis.execute_command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys += found
            if int(cursor) == 0:
                return keys

    def delete(self, pattern: str, keep: bytes | None = None) -> int:
        """Delete the keys matching `pattern`, but those starting with `keep`."""
        keys = [k for k in self.scan(pattern) if keep is None or not k.startswith(keep)]
        for start in range(0, len(keys), 500):
            self.redis.execute_command("DEL", *keys[start : start + 500])
        return len(keys)

    def flush_redis(self) -> None:
        """What FLUSHDB does to the history: every key under its own prefix gone (the shared
        Redis itself is never flushed)."""
        self.delete(f"{self.prefix}:*")

    def expire_cache(self) -> None:
        """What CACHE_TTL_SECONDS does to the cache entries (the pending hashes stay): every key
        under the prefix but `{prefix}:pending:*` (a cache entry's kind holds its read shape's
        digest, `cache.entry_key`: `todo:*` and `profile:*` matched none since schema version 2)."""
        self.delete(f"{self.prefix}:*", keep=f"{self.prefix}:pending:".encode())

    def corrupt_pending(self, owner: str, how: str, rng: Random) -> None:
        """Write an entry no read may use into `owner`'s pending hash, beside the real ones (their
        fields untouched): not JSON, a JSON list, not UTF-8, an object missing a todo's fields, a
        header that does not parse, an id that is not a UUID, an id that is not ASCII."""
        from chalicelib.readers.pending import pending_key

        version = self.clocks[0].now_us()
        op_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        field_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if how == "not_uuid_id":
            field_id = "not-a-uuid-" + field_id[:8]
        elif how == "non_ascii_id":
            field_id = "\u00fc" + field_id[1:]
        when = datetime.fromtimestamp(version / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row = {
            "id": field_id,
            "title": f"ghost {how}",
            "notes": "",
            "state": "open",
            "tags": [],
            "due_at": None,
            "version": version,
            "created_at": when,
            "updated_at": when,
        }
        payload = {
            "not_json": b'{"title": "ghost",',
            "json_list": b'["ghost", 1]',
            "not_utf8": b'{"title": "gh\xffost"}',
            "missing_fields": b'{"title": "ghost"}',
        }.get(how, json.dumps(row, ensure_ascii=False).encode())
        header = b"p|%d|%s|%d|" % (version, op_id.encode(), version)
        if how == "bad_header":
            header = b"p|%d.5|%s|x|" % (version, op_id.encode())
        key = pending_key(owner, self.prefix)
        self.redis.execute_command("HSET", key, ("t:" + field_id).encode(), header + payload)

    def heal(self) -> None:
        """Every fault undone (the end of a history)."""
        self.redis_up()

    # -- loads ---------------------------------------------------------------------------------------
    def load(self, obj: Obj, force: bool = False) -> Any:
        """One load of `obj` by the loader process: its LoadResult, or the exception it raised."""
        try:
            return self.loader.load(BUCKET, obj.key, obj.etag, obj.body, force=force)
        except Exception as exc:  # noqa: BLE001 - the runner judges it
            return exc

    def load_together(self, objs: list[Obj]) -> list[Any] | None:
        """Loads on threads at once, each recording its attempt before any begins its transaction
        (`GatedAttempts`); their results, or None when some did not end in CONCURRENT_TIMEOUT."""
        loader = self.loader
        gated = GatedAttempts(loader.attempts, len(objs))
        loader.attempts = gated
        results: list[Any] = [None] * len(objs)

        def run(index: int) -> None:
            try:
                results[index] = self.load(objs[index])
            finally:
                loader.db.discard()  # this thread's connection: its "process" ends

        threads = [threading.Thread(target=run, args=(i,), name=f"history-load-{i}") for i in range(len(objs))]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(CONCURRENT_TIMEOUT)
        finally:
            loader.attempts = gated.inner
        return None if any(t.is_alive() for t in threads) else results

    def load_killed(self, obj: Obj, at: str) -> tuple[bool, Any]:
        """A load whose process dies (at its ledger claim, part-way, or before its commit): its
        attempt began and never finished, its connection gone with it. (killed, the result of a
        load that ended first: None when killed)."""
        from tests.integration.faults import TrippingApplier

        loader, db = self.killable_loader()
        tripping = TrippingApplier(loader.applier)
        loader.applier = tripping

        def die() -> None:
            raise Killed()

        tripping.arm(die, at=at)
        try:
            return False, loader.load(BUCKET, obj.key, obj.etag, obj.body)
        except Killed:
            return True, None
        except Exception as exc:  # noqa: BLE001 - the runner judges it
            return False, exc
        finally:
            db.discard()

    def load_cut_off(self, obj: Obj, at: str) -> tuple[Any, bool]:
        """A load during which the database goes away (at its ledger claim, part-way, or before
        its commit) and comes back OUTAGE_SECONDS later: (its result or exception, whether the
        outage happened)."""
        cut, restore = self.outage_fault()
        timers: list[threading.Timer] = []

        def fault() -> None:
            timer = threading.Timer(OUTAGE_SECONDS, restore)
            timers.append(timer)
            timer.start()
            cut()

        self.tripping.arm(fault, at=at)
        try:
            result = self.load(obj)
        finally:
            self.tripping.arm(None)
            for timer in timers:
                timer.join()
        return result, bool(timers)

    def invalidator_failures(self) -> int:
        return int(self.invalidator_breaker.failures)

    # -- database --------------------------------------------------------------------------------
    def ledger(self) -> dict[tuple[str, str], tuple[int, int, int, int]]:
        """(object_key, etag) -> (applied, stale, rejected, loads) of every ledger row."""
        rows = self.admin.query("SELECT object_key, etag, applied, stale, rejected, loads FROM ingest_batches")
        return {(k, e): (int(a), int(s), int(r), int(n)) for k, e, a, s, r, n in rows}

    def poisoned(self) -> list[tuple[str, int, str]]:
        rows = self.admin.query(
            "SELECT object_key, attempts, last_error FROM ingest_attempts WHERE poisoned_at IS NOT NULL"
        )
        return [(str(k), int(a), str(e)) for k, a, e in rows]

    def sync_replica(self) -> bool:
        """Wait until the replica shows everything loaded; False when it is not replicating."""
        return True

    def close(self) -> None:
        from chalicelib import bootstrap

        for services in [*(i.services for i in self.instances), self.loader_services]:
            with contextlib.suppress(Exception):
                services.master.discard()
        with contextlib.suppress(Exception):
            self.admin.discard()
        self.redis_proxy.close()
        with contextlib.suppress(Exception):
            self.flush_redis()
        self.redis.close()
        bootstrap.reset()


class SqliteSystem(System):
    """The embedded tier: one SQLite file for everyone (each process its own connections)."""

    dialect = "sqlite"

    def __init__(self, directory: str, redis_url: str, seed: int, offsets_us: tuple[int, int]) -> None:
        self.path = os.path.join(directory, "history.sqlite3")
        env = {"LOCAL_DATA_DIR": directory, "DATABASE_URL": f"sqlite:///{self.path}"}
        super().__init__(env, redis_url, seed, offsets_us)
        self.gate = SqliteGate(self.loader.db)

    def open_admin(self) -> Any:
        from chalicelib.db.database import open_master

        db = open_master(self.env["DATABASE_URL"])
        db.migrate()
        return db

    def outage_fault(self) -> tuple[Callable[[], None], Callable[[], None]]:
        return self.gate.cut, self.gate.restore


class PairSystem(System):
    """The MariaDB tier: a database of its own on the master/replica pair; the API instances and
    the loader reach the master, and the instances the replica, through proxies this system can
    cut (the servers themselves are shared with the rest of the run, so they stay up). A lagging
    replica is replication stopped on it (STOP SLAVE SQL_THREAD), and started again."""

    dialect = "mysql"
    replica_faults = True

    def __init__(
        self, pair: dict[str, str], database: str, redis_url: str, seed: int, offsets_us: tuple[int, int]
    ) -> None:
        from chalicelib.db.database import open_database

        self.database = database
        self.master_root = pair["SLUICE_MASTER_URL"].rsplit("/", 1)[0]
        self.replica_root = pair["SLUICE_REPLICA_URL"].rsplit("/", 1)[0]
        admin = open_database(pair["SLUICE_MASTER_URL"])
        admin.query(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        admin.discard()
        self.master_direct = f"{self.master_root}/{database}"
        master_port = int(self.master_root.rsplit(":", 1)[1])
        replica_port = int(self.replica_root.rsplit(":", 1)[1])
        self.master_proxy = TcpProxy("127.0.0.1", master_port)
        self.replica_proxy = TcpProxy("127.0.0.1", replica_port)
        self.lagging = False
        migrated = open_database(self.master_direct)
        migrated.migrate()
        migrated.discard()
        # The server, not the database: the replica may not have replayed CREATE DATABASE yet.
        self.replica_admin = open_database(f"{self.replica_root}/test")
        self._sync()
        env = {
            "LOCAL_DATA_DIR": os.path.join("/tmp", database),
            "DATABASE_URL": f"mysql://root@127.0.0.1:{self.master_proxy.port}/{database}",
            "REPLICA_URLS": f"mysql://root@127.0.0.1:{self.replica_proxy.port}/{database}",
        }
        super().__init__(env, redis_url, seed, offsets_us)

    def open_admin(self) -> Any:
        from chalicelib.db.database import open_database

        return open_database(self.master_direct)

    def outage_fault(self) -> tuple[Callable[[], None], Callable[[], None]]:
        return self.master_proxy.down, self.master_proxy.up

    # -- the replica -------------------------------------------------------------------------------
    @property  # type: ignore[override]
    def replica_is_up(self) -> bool:
        return self.replica_proxy.is_up

    def replica_down(self) -> None:
        self.replica_proxy.down()

    def replica_up(self) -> None:
        self.replica_proxy.up()

    def lag_start(self) -> None:
        self.replica_admin.query("STOP SLAVE SQL_THREAD")
        self.lagging = True

    def lag_end(self) -> None:
        self.replica_admin.query("START SLAVE SQL_THREAD")
        self.lagging = False

    def _sync(self) -> None:
        ((position,),) = self.admin_query_master("SELECT @@gtid_binlog_pos")
        ((reached,),) = self.replica_admin.query("SELECT MASTER_GTID_WAIT(%s, 30)", (position,))
        if int(reached) != 0:
            raise RuntimeError(f"the replica did not reach the master's position {position} in 30 s")

    def admin_query_master(self, text: str) -> list[tuple[Any, ...]]:
        admin = getattr(self, "admin", None)
        if admin is None:
            from chalicelib.db.database import open_database

            admin = open_database(self.master_direct)
            try:
                return admin.query(text)
            finally:
                admin.discard()
        return list(admin.query(text))

    def heal(self) -> None:
        super().heal()
        self.replica_up()
        self.master_proxy.up()
        if self.lagging:
            self.lag_end()

    def sync_replica(self) -> bool:
        if self.lagging:
            return False
        self._sync()
        return True

    def close(self) -> None:
        from chalicelib.db.database import open_database

        with contextlib.suppress(Exception):
            if self.lagging:
                self.lag_end()
        self.master_proxy.up()
        self.replica_proxy.up()
        super().close()
        with contextlib.suppress(Exception):
            self.replica_admin.discard()
        self.master_proxy.close()
        self.replica_proxy.close()
        admin = open_database(self.master_root + "/test")
        try:
            admin.query(f"DROP DATABASE IF EXISTS {self.database}")
        finally:
            admin.discard()
