"""Fault injectors, a client workload and the last-writer-wins model for the fault-injection suites
(tests/integration/test_fault_injection.py on the MariaDB pair, tests/functional/
test_fault_injection_sqlite.py on SQLite).

The pieces, each seeded so a run is repeatable:
- `FakeFirehose`: a Firehose client for the real `FirehoseWriter`. `put_record_batch` refuses a
  share of records per call (`ErrorCode`, `FailedPutCount` > 0 on an HTTP 200), sometimes raises a
  throttling or a fatal `ClientError`, sometimes takes the records and loses its answer (a read
  timeout: the API answers 503 though the write will land), and buffers the accepted records (a
  record is one request's commands, a batch's included, as lines); when a size or interval
  threshold is reached it delivers them to S3 (moto) as Firehose does: concatenated, mostly GZIP,
  under `writes/YYYY/MM/DD/HH/NAME`, sometimes twice under two names, sometimes with a line that
  is not a command (a foreign producer), sometimes with a name that changes under URL encoding.
- `FlakyS3Client`: an S3 client whose GetObject fails now and then (500, 503 SlowDown, a read
  timeout, a body cut short), wrapped by the app's own `S3ObjectStore`.
- `EventDeliverer`: S3 notifications built by hand (URL-encoded keys, several records per event),
  some never sent, some sent twice; a handler that raises is retried a bounded number of times
  (Lambda's async retries), then left for the reconciler.
- `Workload` + `Driver` + `Model`: API calls through chalice's test client (puts, deletes, posts
  with and without Idempotency-Key, batches retried with their key after a 503, profiles, reads)
  over a bounded set of ids so keys collide; every 202 becomes a model command, and so does every
  command of a 503'd request that the stream took after all, which must be all of the request's
  commands or none (a batch lands whole or not at all). Two API containers (Lambda processes) share the stream, with
  clocks that agree to the tick, so one todo also gets equal versions and op_id decides.
- `TrippingApplier` + `PairControl`: a fault (kill or stop the master) fired inside a load's
  transaction, at its ledger claim, before a given statement, or before its commit.
- `verify`: the master's rows against the model (greatest (version, op_id) per key, tombstones
  included, created_at the earliest accepted version's instant, updated_at the winner's); counts
  lost, phantom and mismatched rows. `Run.check` adds the ledger and transport cross-checks.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any
from urllib.parse import quote_plus

from botocore.exceptions import ClientError, IncompleteReadError, ReadTimeoutError

from chalicelib.ids import derived_id
from chalicelib.loader.apply import Applier
from chalicelib.resources import RESOURCES
from chalicelib.rows import table
from tests.factories import random_body

Key = tuple[str, str, str]  # (resource, owner, id)
Ref = tuple[int, Key, int]  # (API container, key, version): one command (versions tie only across containers)

# Lines a foreign producer could put on the stream: each is one line the loader must quarantine.
GARBAGE_LINES = (
    b"not json at all\n",
    b'{"v": 2, "op": "put"}\n',
    b"[1, 2, 3]\n",
    b'{"v": 1, "op": "put", "resource": "todos"}\n',
    b"\xff\xfe broken utf-8\n",
    b'{"v":1,"op":"delete","resource":"todos","owner":"x","id":"NOT-A-UUID","version":1,'
    b'"op_id":"00000000-0000-4000-8000-000000000000","at":"2024-01-01T00:00:00.000000Z","data":null}\n',
)
# Object names whose key changes under URL encoding (space, plus, percent, non-ASCII).
ODD_SUFFIXES = (" copy", "+plus", " 100%25 sure", "-caf\u00e9 \u6771\u4eac", " a+b=c&d")


def client_error(code: str, status: int, operation: str, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message or code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


# -- Firehose ------------------------------------------------------------------------------------
@dataclass
class FirehoseFaults:
    reject_share: float = 0.1  # records refused per call with an ErrorCode
    throttle_share: float = 0.03  # calls raising a retryable throttling error
    fatal_share: float = 0.0  # calls raising an error no retry mends
    lost_answer_share: float = 0.0  # calls whose records are taken but whose answer times out


@dataclass(frozen=True)
class Delivery:
    key: str
    etag: str
    records: int  # commands in the object (a record holds one or more)
    garbage: int  # lines in it that are not commands
    copy_of: str | None = None  # the key this object repeats (Firehose delivered it twice)


class FakeFirehose:
    """`put_record_batch` of one Direct PUT delivery stream writing into `bucket` under `prefix`."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        stream: str,
        rng: Random,
        faults: FirehoseFaults | None = None,
        size_bytes: tuple[int, int] = (2_000, 60_000),
        interval_seconds: tuple[int, int] = (3, 40),
        large_share: float = 0.07,
        seconds_per_call: float = 1.0,
        start: datetime | None = None,
        prefix: str = "writes/",
        gzip_share: float = 0.8,
        duplicate_share: float = 0.08,
        garbage_share: float = 0.15,
        odd_name_share: float = 0.1,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.stream = stream
        self.rng = rng
        self.faults = faults or FirehoseFaults()
        self.size_bytes = size_bytes
        self.intervals = interval_seconds
        self.large_share = large_share  # buffers that grow big (hundreds of records: the fast path)
        self.step = timedelta(seconds=seconds_per_call)
        # Firehose names objects by arrival time; start a few hours back so keys span hours.
        self.now = start or (datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3))
        self.prefix = prefix
        self.gzip_share = gzip_share
        self.duplicate_share = duplicate_share
        self.garbage_share = garbage_share
        self.odd_name_share = odd_name_share
        self.buffer: list[bytes] = []
        self.buffer_bytes = 0
        self.buffer_since: datetime | None = None
        self.threshold, self.interval = self._next_thresholds()
        self.accepted: list[tuple[int, dict[str, Any]]] = []  # (container, command) of every command taken
        self._by_container_id_version: dict[tuple[int, str, int], dict[str, Any]] = {}
        self.deliveries: list[Delivery] = []
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _next_thresholds(self) -> tuple[int, timedelta]:
        """The next buffer's size and interval (a stream's traffic varies, and so do its objects)."""
        if self.rng.random() < self.large_share:
            return self.rng.randint(80_000, 200_000), timedelta(seconds=self.rng.randint(300, 600))
        return self.rng.randint(*self.size_bytes), timedelta(seconds=self.rng.randint(*self.intervals))

    # -- the API the writer calls ----------------------------------------------------------
    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
        return self.put_from(0, DeliveryStreamName, Records)

    def client(self, container: int) -> ContainerClient:
        """The client of API container `container` (another Lambda process on the same stream)."""
        return ContainerClient(self, container)

    def put_from(self, container: int, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
        with self._lock:
            self.stats["calls"] += 1
            if DeliveryStreamName != self.stream:
                raise client_error("ResourceNotFoundException", 400, "PutRecordBatch", "no such stream")
            if not 1 <= len(Records) <= 500:
                raise client_error("ValidationException", 400, "PutRecordBatch", "1 to 500 records")
            self.tick()
            roll = self.rng.random()
            faults = self.faults
            if roll < faults.throttle_share:
                self.stats["throttled_calls"] += 1
                code = self.rng.choice(("ThrottlingException", "ServiceUnavailableException"))
                raise client_error(code, 400 if code.startswith("Throttling") else 503, "PutRecordBatch", "Slow down.")
            if roll < faults.throttle_share + faults.fatal_share:
                self.stats["fatal_calls"] += 1
                raise client_error("AccessDeniedException", 400, "PutRecordBatch", "not allowed (injected)")
            lose_answer = self.rng.random() < faults.lost_answer_share
            entries: list[dict[str, str]] = []
            failed = 0
            for record in Records:
                data = bytes(record["Data"])
                if self.rng.random() < faults.reject_share:
                    failed += 1
                    entries.append({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."})
                    continue
                self._take(container, data)
                entries.append({"RecordId": uuid.UUID(int=self.rng.getrandbits(128)).hex * 2})
            self.stats["records_refused"] += failed
            self.stats["records_accepted"] += len(Records) - failed
            if self.buffer_bytes >= self.threshold:
                self._deliver()
            if lose_answer:
                self.stats["answers_lost"] += 1
                raise ReadTimeoutError(endpoint_url="https://firehose.us-east-1.amazonaws.com")
            return {
                "FailedPutCount": failed,
                "Encrypted": False,
                "RequestResponses": entries,
                "ResponseMetadata": {"HTTPStatusCode": 200},
            }

    def _take(self, container: int, data: bytes) -> None:
        if not self.buffer:
            self.buffer_since = self.now
        self.buffer.append(data)
        self.buffer_bytes += len(data)
        for line in data.splitlines():
            command = json.loads(line)
            self.accepted.append((container, command))
            self._by_container_id_version[(container, command["id"], command["version"])] = command

    # -- time and delivery -------------------------------------------------------------------
    def tick(self, steps: int = 1) -> None:
        """Let simulated time pass; a buffer older than the interval is delivered."""
        self.now += self.step * steps
        if self.buffer and self.buffer_since is not None and self.now - self.buffer_since >= self.interval:
            self._deliver()

    def hold(self) -> None:
        """Let the current buffer grow until `flush` (a quiet stream's long interval)."""
        self.threshold, self.interval = 10**12, timedelta(days=365)

    def flush(self) -> None:
        """Deliver whatever is buffered (the interval ran out)."""
        with self._lock:
            if self.buffer:
                self._deliver()

    def _name(self) -> str:
        when = self.now
        name = f"{self.stream}-1-{when:%Y-%m-%d-%H-%M-%S}-{uuid.UUID(int=self.rng.getrandbits(128))}"
        if self.rng.random() < self.odd_name_share:
            name += self.rng.choice(ODD_SUFFIXES)
        return f"{self.prefix}{when:%Y/%m/%d/%H}/{name}"

    def _deliver(self) -> None:
        lines = list(self.buffer)
        records = sum(record.count(b"\n") for record in lines)
        garbage = 0
        if self.rng.random() < self.garbage_share:
            garbage = self.rng.randint(1, 2)
            for _ in range(garbage):
                lines.insert(self.rng.randint(0, len(lines)), self.rng.choice(GARBAGE_LINES))
        body = b"".join(lines)
        if self.rng.random() < self.gzip_share:
            body = gzip.compress(body, compresslevel=1, mtime=0)
        key = self._name()
        etag = self._put(key, body)
        self.deliveries.append(Delivery(key, etag, records, garbage))
        self.stats["objects"] += 1
        if self.rng.random() < self.duplicate_share:
            # Firehose retried the S3 write: the same records once more, under another name.
            self.now += timedelta(seconds=self.rng.randint(1, 30))
            again = self._name()
            self.deliveries.append(Delivery(again, self._put(again, body), records, garbage, copy_of=key))
            self.stats["objects_delivered_twice"] += 1
        self.buffer = []
        self.buffer_bytes = 0
        self.buffer_since = None
        self.threshold, self.interval = self._next_thresholds()

    def _put(self, key: str, body: bytes) -> str:
        return str(self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["ETag"]).strip('"')

    def find(self, container: int, id_: str, version: int) -> dict[str, Any] | None:
        """The command the stream took from this container with this id and version, or None."""
        return self._by_container_id_version.get((container, id_, version))

    def mark(self) -> int:
        """Where the commands taken from now on start (see `taken_since`)."""
        return len(self.accepted)

    def taken_since(self, mark: int, container: int) -> list[dict[str, Any]]:
        """The commands this container's requests got onto the stream since `mark`, in order."""
        return [command for n, command in self.accepted[mark:] if n == container]


class ContainerClient:
    """One API container's Firehose client: the same stream, its records marked as its own."""

    def __init__(self, fake: FakeFirehose, container: int) -> None:
        self.fake = fake
        self.container = container

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
        return self.fake.put_from(self.container, DeliveryStreamName, Records)


# -- S3 -----------------------------------------------------------------------------------------
class _CutBody:
    """A GetObject body whose connection drops part-way (botocore checks the Content-Length)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def read(self, *args: Any) -> bytes:
        raise IncompleteReadError(actual_bytes=self.size // 2, expected_bytes=self.size)


class FlakyS3Client:
    """A boto3 S3 client whose GetObject fails with probability `failure_share`; all else passes."""

    KINDS = ("internal_error", "slow_down", "read_timeout", "cut_body")

    def __init__(self, client: Any, rng: Random, failure_share: float = 0.08) -> None:
        self._client = client
        self.rng = rng
        self.failure_share = failure_share
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get_object(self, **kwargs: Any) -> Any:
        with self._lock:
            kind = self.rng.choice(self.KINDS) if self.rng.random() < self.failure_share else None
            if kind:
                self.failures[kind] += 1
        if kind == "internal_error":
            raise client_error("InternalError", 500, "GetObject", "We encountered an internal error.")
        if kind == "slow_down":
            raise client_error("SlowDown", 503, "GetObject", "Please reduce your request rate.")
        if kind == "read_timeout":
            raise ReadTimeoutError(endpoint_url=f"https://s3.amazonaws.com/{kwargs.get('Bucket')}")
        response = self._client.get_object(**kwargs)
        if kind == "cut_body":
            response["Body"] = _CutBody(int(response.get("ContentLength") or 100))
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# -- S3 events -------------------------------------------------------------------------------------
def s3_event(
    bucket: str, deliveries: Iterable[Delivery], event_time: str = "2024-05-01T10:00:05.000Z"
) -> dict[str, Any]:
    """An S3 notification with one record per object; keys URL-encoded as S3 sends them."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": event_time,
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(d.key, safe="/"), "size": 1, "eTag": d.etag},
                },
            }
            for d in deliveries
        ]
    }


@dataclass
class EventDeliverer:
    """Sends S3 events for delivered objects through `handle_s3_event`, at least once or not at all."""

    services: Any
    store: Any  # the ObjectStore the handler reads with
    bucket: str
    rng: Random
    drop_share: float = 0.1
    duplicate_share: float = 0.15
    lambda_retries: int = 2  # Lambda retries a failed async invocation twice
    max_records: int = 3
    sent_upto: int = 0  # deliveries[:sent_upto] have had their chance of an event
    stats: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def pending(self, deliveries: list[Delivery]) -> list[Delivery]:
        fresh = deliveries[self.sent_upto :]
        self.sent_upto = len(deliveries)
        return fresh

    def plan(self, deliveries: list[Delivery]) -> list[list[Delivery]]:
        """Events to send: objects grouped up to `max_records` per event; some never, some twice."""
        kept = []
        for delivery in deliveries:
            if self.rng.random() < self.drop_share:
                self.stats["events_dropped"] += 1
                continue
            kept.append(delivery)
        events: list[list[Delivery]] = []
        while kept:
            size = self.rng.randint(1, self.max_records)
            events.append(kept[:size])
            kept = kept[size:]
        out: list[list[Delivery]] = []
        for event in events:
            out.append(event)
            if self.rng.random() < self.duplicate_share:
                self.stats["events_duplicated"] += 1
                out.insert(self.rng.randint(0, len(out)), list(event))  # sent again, maybe earlier or later
        return out

    def deliver(self, deliveries: list[Delivery], before: Callable[[int, int], None] | None = None) -> int:
        """Plan and send events for the deliveries not yet seen; `before(i, n)` runs before event i
        of n. Returns n."""
        planned = self.plan(self.pending(deliveries))
        for index, event in enumerate(planned):
            if before is not None:
                before(index, len(planned))
            self.invoke(event)
        return len(planned)

    def invoke(self, records: list[Delivery]) -> bool:
        """One event, with Lambda's bounded retries. True when it finally succeeded."""
        from chalicelib.loader.events import RetryLater, handle_s3_event

        event = s3_event(self.bucket, records)
        for attempt in range(1 + self.lambda_retries):
            self.stats["invocations"] += 1
            if attempt:
                self.stats["event_retries"] += 1
            try:
                handle_s3_event(event, self.services, store_for=lambda bucket: self.store)
                self.stats["events_ok"] += 1
                return True
            except RetryLater:
                self.stats["invocation_failures"] += 1
            except Exception as exc:  # noqa: BLE001 - Lambda would retry too; the suite reports it
                self.stats["invocation_failures"] += 1
                self.unexpected.append(f"{type(exc).__name__}: {exc}"[:300])
        self.stats["events_left_for_reconciler"] += 1
        return False


# -- the database pair -------------------------------------------------------------------------------
class PairControl:
    """scripts/db-pair on one pair; remembers what it stopped so that `restore` undoes it."""

    def __init__(self, script: str, directory: str) -> None:
        self.script = script
        self.directory = directory
        self.master_up = True
        self.replica_up = True
        self.master_restarts = 0
        self.log: list[str] = []

    def _run(self, command: str) -> None:
        done = subprocess.run(
            [self.script, command, self.directory], capture_output=True, text=True, timeout=120, check=False
        )
        self.log.append(f"{command}: rc={done.returncode}")
        if done.returncode != 0:
            raise RuntimeError(f"db-pair {command} failed: {done.stderr.strip()[-800:]}")

    def stop_master(self, kill: bool = False) -> None:
        self._run("kill-master" if kill else "stop-master")
        self.master_up = False

    def start_master(self) -> None:
        self._run("start-master")
        self.master_up = True
        self.master_restarts += 1

    def stop_replica(self, kill: bool = False) -> None:
        self._run("kill-replica" if kill else "stop-replica")
        self.replica_up = False

    def start_replica(self) -> None:
        self._run("start-replica")
        self.replica_up = True

    def sync(self) -> None:
        self._run("sync")

    def restore(self) -> None:
        """Start whatever is down: the master first, so the replica can catch up."""
        if not self.master_up:
            self.start_master()
        if not self.replica_up:
            self.start_replica()


class TrippingApplier(Applier):
    """The loader's own applier, with a fault that fires once inside a load's transaction.

    `arm(fault, at)` makes the next load (of an object of at least `min_lines` lines) run `fault`
    (e.g. kill the master): right after its ledger claim (`at="claim"`), before its
    `statement`-th statement (`at="work"`: part-way through its rows, LOAD DATA included), or
    after all its rows are written and before the ledger update and commit (`at="commit"`).
    """

    def __init__(self, inner: Applier) -> None:
        self.inner = inner
        self._fault: Callable[[], None] | None = None
        self._at = ""
        self._statement = 0
        self._min_lines = 0
        self._starting = ""
        self.tripped: list[str] = []
        self.statements: list[str] = []  # the statement each "work" fault came before

    def arm(
        self,
        fault: Callable[[], None] | None,
        at: str = "commit",
        statement: int = 1,
        starting: str = "",
        min_lines: int = 0,
    ) -> None:
        """Fire `fault` in the next load that qualifies (None: disarm); with at="work", before its
        `statement`-th statement that starts with `starting`."""
        assert at in ("claim", "work", "commit")
        self._fault, self._at, self._statement, self._min_lines = fault, at, statement, min_lines
        self._starting = starting

    def _trip(self, where: str) -> None:
        if self._fault is not None and self._at == where:
            fault, self._fault = self._fault, None
            self.tripped.append(where)
            fault()

    def apply(self, cur: Any, commands: Any, changes: Any = None) -> tuple[int, int]:
        if len(commands) < self._min_lines:
            return self.inner.apply(cur, commands, changes)
        self._trip("claim")
        result = self.inner.apply(self._cursor(cur), commands, changes)
        self._trip("commit")
        self._missed_work()
        return result

    def apply_stream(self, cur: Any, stream: Any, *rest: Any) -> Any:
        if self._min_lines and stream.fill(self._min_lines) < self._min_lines:
            return self.inner.apply_stream(cur, stream, *rest)
        self._trip("claim")
        result = self.inner.apply_stream(self._cursor(cur), stream, *rest)
        self._trip("commit")
        self._missed_work()
        return result

    def _missed_work(self) -> None:
        """A "work" fault whose statement never came still fires, before the commit."""
        if self._fault is not None and self._at == "work":
            self.statements.append("(no such statement: before the commit)")
            self._trip("work")

    def _cursor(self, cur: Any) -> Any:
        if self._fault is None or self._at != "work":
            return cur
        return _CountingCursor(cur, self._statement, self._starting, self._trip_before)

    def _trip_before(self, statement: str) -> None:
        self.statements.append(" ".join(statement.split())[:60])
        self._trip("work")


class _CountingCursor:
    """A cursor that runs `before_nth()` before its n-th statement starting with `starting`; all
    else passes through."""

    def __init__(self, cur: Any, n: int, starting: str, before_nth: Callable[[str], None]) -> None:
        self._cur = cur
        self._left = n
        self._starting = starting
        self._before_nth = before_nth

    def _count(self, statement: Any) -> None:
        if not str(statement).lstrip().startswith(self._starting):
            return
        self._left -= 1
        if self._left == 0:
            self._before_nth(str(statement))

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._count(statement)
        return self._cur.execute(statement, *args, **kwargs)

    def executemany(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._count(statement)
        return self._cur.executemany(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


# -- the model ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    """A command the API accepted: what was sent plus the id and version of its 202."""

    resource: str
    owner: str
    id: str
    version: int
    op: str
    data: dict[str, Any] | None  # the fields as the loader must store them (defaults, UTC due_at)
    container: int = 0  # the API container that answered (its versions strictly increase)

    @property
    def key(self) -> Key:
        return (self.resource, self.owner, self.id)

    @property
    def ref(self) -> Ref:
        return (self.container, self.key, self.version)


@dataclass
class Model:
    accepted: list[Sent] = field(default_factory=list)  # answered 202, or answered 503 yet taken
    rejected: int = 0  # commands answered 503 that the stream never took
    landed_after_503: int = 0  # commands answered 503 that the stream took (a lost answer)
    batches_503_absent: int = 0  # batches answered 503: none of their todos on the stream
    batches_503_present: int = 0  # batches answered 503: all of their todos on the stream
    half_written: list[str] = field(default_factory=list)  # 503'd requests with only part on the stream
    statuses: Counter[str] = field(default_factory=Counter)  # "METHOD kind status"
    server_errors: list[str] = field(default_factory=list)  # any 5xx but 503
    unexpected: list[str] = field(default_factory=list)  # any other answer a valid request must not get

    @staticmethod
    def op_ids(transported: list[tuple[int, dict[str, Any]]]) -> dict[Ref, str]:
        """Each command's op_id, from the records the transport took (the API does not return it)."""
        return {(n, (c["resource"], c["owner"], c["id"]), c["version"]): c["op_id"] for n, c in transported}

    def winners(self, op_ids: dict[Ref, str]) -> dict[Key, tuple[Sent, str]]:
        """The greatest (version, op_id) per key among the accepted commands; tombstones included."""
        best: dict[Key, tuple[Sent, str]] = {}
        for sent in self.accepted:
            op_id = op_ids.get(sent.ref, "")
            have = best.get(sent.key)
            if have is None or (sent.version, op_id) > (have[0].version, have[1]):
                best[sent.key] = (sent, op_id)
        return best

    def version_ties(self) -> int:
        """Keys written by two containers with the same version (op_id decides between them)."""
        seen = Counter((s.key, s.version) for s in self.accepted)
        return sum(1 for n in seen.values() if n > 1)


class Workload:
    """Valid API requests over a bounded set of users, ids and Idempotency-Keys."""

    def __init__(
        self, rng: Random, users: tuple[str, ...], ids_per_user: int = 25, keys_per_user: int = 10, batch_keys: int = 5
    ) -> None:
        self.rng = rng
        self.users = users
        # Idempotency-Keys are printable ASCII: named by the user's position, not the user
        self.keys = {u: [f"key-{i}-{n}" for n in range(keys_per_user)] for i, u in enumerate(users)}
        self.batch_keys = {u: [f"batch {i}/{n}" for n in range(batch_keys)] for i, u in enumerate(users)}
        self.ids = {
            u: [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(ids_per_user)]
            # ids that POSTs with a key also name, so puts, deletes and posts collide
            + [derived_id(u, k) for k in self.keys[u][:3]]
            for u in users
        }

    def todo(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(body to send, fields as stored): every declared field of a todo (tests/factories.py)."""
        return random_body("todos", self.rng)

    def profile(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(body to send, fields as stored): every declared field of a profile."""
        return random_body("profiles", self.rng)


class Driver:
    """Sends the workload through chalice's test client and records every answer in the model."""

    def __init__(
        self,
        client: Any,
        workload: Workload,
        model: Model,
        headers_for: Callable[[str], dict[str, str]],
        stream: FakeFirehose,
        pick_container: Callable[..., int] | None = None,
        conflict_share: float = 0.04,
    ) -> None:
        """`stream`: the Firehose the API writes to (what it took, request by request);
        `pick_container(number=None, tick=True)`: make an API container current for the next
        request, return its number (see `Run.pick_container`); `conflict_share`: requests that are
        a conflict, one todo written by two containers in the same clock tick."""
        self.stream = stream
        self.pick_container = pick_container or (lambda number=None, tick=True: 0)
        self.conflict_share = conflict_share
        self.container = 0
        self.client = client
        self.workload = workload
        self.model = model
        self.headers_for = headers_for

    def run(self, requests: int, read_share: float = 0.1, batch_retry_share: float = 0.7) -> Counter[str]:
        """Send `requests` requests; returns this run's statuses ("write 202", "read 503", ...)."""
        seen: Counter[str] = Counter()
        rng = self.workload.rng
        for _ in range(requests):
            self.container = self.pick_container()
            user = rng.choice(self.workload.users)
            roll = rng.random()
            if roll < read_share:
                seen[f"read {self.read(user)}"] += 1
                continue
            if rng.random() < self.conflict_share:
                for status in self.conflict(user):
                    seen[f"write {status}"] += 1
                continue
            roll = rng.random()
            if roll < 0.38:
                status = self.put(user)
            elif roll < 0.55:
                status = self.delete(user)
            elif roll < 0.72:
                status = self.post(user, with_key=True)
            elif roll < 0.77:
                status = self.post(user, with_key=False)
            elif roll < 0.94:
                status = self.batch(user, retry_share=batch_retry_share)
            elif roll < 0.97:
                status = self.put_me(user)
            else:
                status = self.put(user, resource="lists")  # ids of lists and todos are apart
            seen[f"write {status}"] += 1
        return seen

    # -- answers -------------------------------------------------------------------------------
    def _answer(self, what: str, response: Any, allowed: tuple[int, ...]) -> int:
        status = int(response.status_code)
        self.model.statuses[f"{what} {status}"] += 1
        if status >= 500 and status != 503:
            self.model.server_errors.append(f"{what} -> {status}: {response.body[:300]!r}")
        elif status == 503:
            if response.headers.get("Retry-After") is None or response.json_body.get("error") != "unavailable":
                self.model.unexpected.append(f"{what} -> 503 without Retry-After or error=unavailable")
        elif status not in allowed:
            self.model.unexpected.append(f"{what} -> {status}: {response.body[:300]!r}")
        return status

    def _accepted(self, sent: Sent, response: Any) -> None:
        answer = response.json_body
        if answer.get("id") != sent.id or answer.get("status") != "accepted":
            self.model.unexpected.append(f"202 body {answer!r} for {sent.key}")
        self.model.accepted.append(sent)

    def _after_503(self, mark: int, what: str, expected: list[tuple[str, str, str, dict[str, Any] | None]]) -> None:
        """A write answered 503: all or none of its commands may be on the stream (a lost answer),
        never part. Those taken become model commands: they will land. `expected` holds each
        command's (resource, owner, op, stored fields), in the order the request sent them."""
        taken = self.stream.taken_since(mark, self.container)
        if not taken:
            self.model.rejected += len(expected)
            return
        if len(taken) != len(expected):
            self.model.half_written.append(
                f"{what}: {len(taken)} of {len(expected)} commands on the stream after a 503"
            )
        for command, (resource, owner, op, stored) in zip(taken, expected, strict=False):
            self.model.accepted.append(
                Sent(resource, owner, command["id"], int(command["version"]), op, stored, self.container)
            )
        self.model.landed_after_503 += len(taken)

    # -- writes --------------------------------------------------------------------------------
    def conflict(self, user: str) -> list[int]:
        """One todo written by container 0 and then container 1 in the same clock tick (two
        devices, two Lambdas): both versions are equal, and op_id decides which one wins."""
        rng = self.workload.rng
        todo_id = rng.choice(self.workload.ids[user])
        statuses = []
        for number in (0, 1):
            self.container = self.pick_container(number, tick=number == 0)
            if rng.random() < 0.7:
                statuses.append(self.put(user, todo_id))
            else:
                statuses.append(self.delete(user, todo_id))
        return statuses

    def put(self, user: str, todo_id: str | None = None, resource: str = "todos") -> int:
        """A todo (or a list: `resource`) replaced or made at one of the user's ids."""
        todo_id = todo_id or self.workload.rng.choice(self.workload.ids[user])
        body, stored = random_body(resource, self.workload.rng)
        mark = self.stream.mark()
        path = RESOURCES[resource].path
        what = f"PUT {path}/{{id}}"
        response = self.client.http.put(f"{path}/{todo_id}", headers=self.headers_for(user), body=json.dumps(body))
        status = self._answer(what, response, (202,))
        if status == 202:
            self._accepted(
                Sent(resource, user, todo_id, int(response.json_body["version"]), "put", stored, self.container),
                response,
            )
        elif status == 503:
            self._after_503(mark, what, [(resource, user, "put", stored)])
        return status

    def delete(self, user: str, todo_id: str | None = None) -> int:
        todo_id = todo_id or self.workload.rng.choice(self.workload.ids[user])
        mark = self.stream.mark()
        response = self.client.http.delete(f"/todos/{todo_id}", headers=self.headers_for(user))
        status = self._answer("DELETE /todos/{id}", response, (202,))
        if status == 202:
            self._accepted(
                Sent("todos", user, todo_id, int(response.json_body["version"]), "delete", None, self.container),
                response,
            )
        elif status == 503:
            self._after_503(mark, "DELETE /todos/{id}", [("todos", user, "delete", None)])
        return status

    def post(self, user: str, with_key: bool) -> int:
        headers = self.headers_for(user)
        key = None
        if with_key:
            key = self.workload.rng.choice(self.workload.keys[user])
            headers = {**headers, "Idempotency-Key": key}
        body, stored = self.workload.todo()
        mark = self.stream.mark()
        response = self.client.http.post("/todos", headers=headers, body=json.dumps(body))
        status = self._answer("POST /todos", response, (202,))
        if status == 202:
            answer = response.json_body
            if key is not None and answer["id"] != derived_id(user, key):
                self.model.unexpected.append(f"POST with key {key!r} named {answer['id']}")
            self._accepted(
                Sent("todos", user, answer["id"], int(answer["version"]), "put", stored, self.container), response
            )
        elif status == 503:
            self._after_503(mark, "POST /todos", [("todos", user, "put", stored)])
        return status

    def batch(self, user: str, retry_share: float) -> int:
        rng = self.workload.rng
        items = [self.workload.todo() for _ in range(rng.randint(1, 8))]
        key = rng.choice(self.workload.batch_keys[user]) if rng.random() < 0.6 else None
        status = self._batch_once(user, items, key)
        if status == 503 and key is not None and rng.random() < retry_share:
            # What the 503 asks for: the whole batch again, with the same key (same ids).
            status = self._batch_once(user, items, key)
        return status

    def _batch_once(self, user: str, items: list[tuple[dict[str, Any], dict[str, Any]]], key: str | None) -> int:
        headers = self.headers_for(user)
        if key is not None:
            headers = {**headers, "Idempotency-Key": key}
        payload = {"todos": [body for body, _ in items]}
        mark = self.stream.mark()
        response = self.client.http.post("/todos/batch", headers=headers, body=json.dumps(payload))
        status = self._answer("POST /todos/batch", response, (202,))
        if status == 503:
            # The answer names nothing: the batch is wholly on the stream (a lost answer) or not at all.
            if set(response.json_body) != {"error", "message"}:
                self.model.unexpected.append(f"batch 503 body {response.json_body!r}")
            expected = [("todos", user, "put", stored) for _, stored in items]
            self._after_503(mark, "POST /todos/batch", expected)
            taken = len(self.stream.taken_since(mark, self.container))
            if taken == 0:
                self.model.batches_503_absent += 1
            elif taken == len(items):
                self.model.batches_503_present += 1
            return status
        if status != 202:
            return status
        members = response.json_body.get("accepted")
        if not isinstance(members, list) or len(members) != len(items):
            self.model.unexpected.append(f"batch 202 with accepted={members!r}")
            return status
        for position, (member, (_, stored)) in enumerate(zip(members, items, strict=True)):
            if key is not None and member["id"] != derived_id(user, key, position):
                self.model.unexpected.append(f"batch with key {key!r} named {member['id']}")
            self.model.accepted.append(
                Sent("todos", user, member["id"], int(member["version"]), "put", stored, self.container)
            )
        return status

    def put_me(self, user: str) -> int:
        body, stored = self.workload.profile()
        mark = self.stream.mark()
        response = self.client.http.put("/me", headers=self.headers_for(user), body=json.dumps(body))
        status = self._answer("PUT /me", response, (202,))
        if status == 202:
            self._accepted(
                Sent("profiles", user, user, int(response.json_body["version"]), "put", stored, self.container),
                response,
            )
        elif status == 503:
            self._after_503(mark, "PUT /me", [("profiles", user, "put", stored)])
        return status

    # -- reads ---------------------------------------------------------------------------------
    def read(self, user: str) -> int:
        rng = self.workload.rng
        headers = self.headers_for(user)
        roll = rng.random()
        if roll < 0.6:
            todo_id = rng.choice(self.workload.ids[user])
            return self._answer(
                "GET /todos/{id}", self.client.http.get(f"/todos/{todo_id}", headers=headers), (200, 404)
            )
        if roll < 0.85:
            return self._answer("GET /todos", self.client.http.get("/todos?limit=20", headers=headers), (200,))
        return self._answer("GET /me", self.client.http.get("/me", headers=headers), (200, 404))


# -- checking --------------------------------------------------------------------------------------
@dataclass
class Verdict:
    lost: int = 0  # accepted commands whose effect is missing (row absent or older than the command)
    phantom: int = 0  # rows whose (version, op_id) no accepted command has (a 503'd or unknown write)
    mismatched: int = 0  # rows at the winner's version whose fields differ from what was sent
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def stored_text(value: Any) -> str:
    """A stored timestamp (DATETIME(6) from MariaDB, fixed-width text from SQLite) as text."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)


def version_text(version: int) -> str:
    """The instant a version stands for (microseconds since the epoch), as the tables keep it."""
    seconds, micros = divmod(version, 1_000_000)
    moment = datetime(1970, 1, 1) + timedelta(seconds=seconds, microseconds=micros)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def master_rows(db: Any) -> dict[Key, dict[str, Any]]:
    """Every row of every declared resource's table, tombstones included, read by column name."""
    rows: dict[Key, dict[str, Any]] = {}
    for name, resource in RESOURCES.items():
        columns = table(name).columns
        lists = {field for field, rule in resource.rules().items() if rule.kind == "list"}
        for stored in db.query(f"SELECT {', '.join(columns)} FROM {name}"):
            row = dict(zip(columns, stored, strict=True))
            data = {f: json.loads(row[f]) if f in lists else row[f] for f in resource.field_names}
            rows[(name, row["owner"], row["id"] if resource.by_id else row["owner"])] = {
                "version": int(row["version"]),
                "op_id": row["op_id"],
                "deleted": int(row["deleted"]),
                "data": data,
                "created_at": stored_text(row["created_at"]),
                "updated_at": stored_text(row["updated_at"]),
            }
    return rows


def verify(rows: dict[Key, dict[str, Any]], model: Model, op_ids: dict[Ref, str]) -> Verdict:
    """The rows against the model: each key's row is its accepted command with the greatest
    (version, op_id) (a tombstone for a delete), holding what was sent, updated_at at that
    command's version and created_at at the key's earliest accepted version."""
    verdict = Verdict()
    known = {(s.key, s.version, op_ids.get(s.ref, "")) for s in model.accepted}
    first: dict[Key, int] = {}
    for sent in model.accepted:
        first[sent.key] = min(first.get(sent.key, sent.version), sent.version)
        op_id = op_ids.get(sent.ref)
        row = rows.get(sent.key)
        if op_id is None:
            verdict.lost += 1
            verdict.note(f"202 for {sent.key} v{sent.version} but the transport never took it")
        elif row is None or (row["version"], row["op_id"]) < (sent.version, op_id):
            verdict.lost += 1
            verdict.note(f"lost {sent.op} {sent.key} v{sent.version}; stored {row and (row['version'], row['op_id'])}")
    winners = model.winners(op_ids)
    for key, row in rows.items():
        if (key, row["version"], row["op_id"]) not in known:
            verdict.phantom += 1
            verdict.note(f"row {key} v{row['version']} op {row['op_id']} is no accepted write")
            continue
        winner, op_id = winners[key]
        if (row["version"], row["op_id"]) != (winner.version, op_id):
            continue  # older than the winner: counted as lost above
        deleted = winner.op == "delete"
        wrong = []
        if row["deleted"] != int(deleted) or (not deleted and row["data"] != winner.data):
            wrong.append(f"is {row['data']} deleted={row['deleted']}, the winner sent {winner.op} {winner.data}")
        if row["updated_at"] != version_text(winner.version):
            wrong.append(f"updated_at {row['updated_at']} is not the winner's {version_text(winner.version)}")
        if row["created_at"] != version_text(first[key]):
            wrong.append(f"created_at {row['created_at']} is not the earliest {version_text(first[key])}")
        if wrong:
            verdict.mismatched += 1
            verdict.note(f"row {key}: " + "; ".join(wrong))
    return verdict


def ledger_totals(db: Any) -> dict[str, int]:
    ((objects, applied, stale, rejected, loads),) = db.query(
        "SELECT COUNT(*), COALESCE(SUM(applied), 0), COALESCE(SUM(stale), 0), COALESCE(SUM(rejected), 0), "
        "COALESCE(MAX(loads), 0) FROM ingest_batches"
    )
    ((quarantined,),) = db.query("SELECT COUNT(*) FROM ingest_rejects")
    return {
        "objects": int(objects),
        "applied": int(applied),
        "stale": int(stale),
        "rejected": int(rejected),
        "max_loads": int(loads),
        "quarantined_rows": int(quarantined),
    }


def counts_line(counts: dict[str, int]) -> str:
    first = (
        "accepted",
        "rejected_by_api",
        "loaded",
        "stale",
        "quarantined",
        "lost",
        "duplicates_delivered",
        "events_dropped",
        "master_restarts",
    )
    parts = [f"{name}={counts.get(name, 0)}" for name in first]
    parts += [f"{name}={value}" for name, value in counts.items() if name not in first]
    return "fault-injection: " + " ".join(parts)


# -- the end of a run ---------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything one fault-injection run drives and counts."""

    services: Any
    fake: FakeFirehose
    s3: FlakyS3Client
    store: Any
    events: EventDeliverer
    model: Model
    api: list[Any] = field(default_factory=list)  # the API containers' TodoServices
    chooser: Random = field(default_factory=Random)
    clock: TickingClock | None = None
    counts: Counter[str] = field(default_factory=Counter)

    def pick_container(self, number: int | None = None, tick: bool = True) -> int:
        """Make API container `number` (None: one at random) current for the next request, the
        clock moved on unless `tick` is false; returns the container's number."""
        if self.clock is not None and tick:
            self.clock.tick()
        if number is None:
            number = self.chooser.randrange(len(self.api)) if len(self.api) > 1 else 0
        if self.api:
            self.services.service = self.api[number % len(self.api)]
        return number % max(1, len(self.api))

    def reconcile(self, max_objects: int | None = None) -> int:
        """One scheduled reconciler run; returns how many objects it loaded (ledger rows added)."""
        from chalicelib.loader.reconciler import reconcile

        before = ledger_totals(self.services.master)["objects"]
        report = reconcile(self.store, self.services.loader, ["writes/"], max_objects=max_objects)
        loaded = ledger_totals(self.services.master)["objects"] - before
        self.counts["reconciler_runs"] += 1
        self.counts["reconciled_objects"] += loaded
        return report.left

    def settle(self, runs: int = 30) -> None:
        """Firehose delivers what it buffered, its events go out (with the same faults), and the
        reconciler runs until no object is missing from the ledger."""
        self.fake.flush()
        self.events.deliver(self.fake.deliveries)
        for _ in range(runs):
            if self.reconcile() == 0:
                return
        raise AssertionError(f"the reconciler still had a backlog after {runs} runs")

    def check(self, rows: dict[Key, dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
        """(counts, problems): the rows against the model, the ledger against what was delivered,
        the transport's records against the 202s."""
        model, fake = self.model, self.fake
        transported = fake.accepted
        op_ids = model.op_ids(transported)
        verdict = verify(rows, model, op_ids)
        ledger = ledger_totals(self.services.master)
        delivered = fake.deliveries
        counts: dict[str, int] = {
            "accepted": len(model.accepted),
            "rejected_by_api": model.rejected,
            "landed_after_503": model.landed_after_503,
            "batches_503_absent": model.batches_503_absent,
            "batches_503_present": model.batches_503_present,
            "half_written": len(model.half_written),
            "firehose_answers_lost": fake.stats["answers_lost"],
            "loaded": ledger["applied"],
            "stale": ledger["stale"],
            "quarantined": ledger["quarantined_rows"],
            "lost": verdict.lost,
            "duplicates_delivered": fake.stats["objects_delivered_twice"] + self.events.stats["events_duplicated"],
            "events_dropped": self.events.stats["events_dropped"],
            "phantom": verdict.phantom,
            "mismatched": verdict.mismatched,
            "objects": len(delivered),
            "objects_delivered_twice": fake.stats["objects_delivered_twice"],
            "events_duplicated": self.events.stats["events_duplicated"],
            "event_invocations": self.events.stats["invocations"],
            "event_invocation_failures": self.events.stats["invocation_failures"],
            "events_left_for_reconciler": self.events.stats["events_left_for_reconciler"],
            "s3_get_failures": sum(self.s3.failures.values()),
            "firehose_calls": fake.stats["calls"],
            "firehose_throttled_calls": fake.stats["throttled_calls"],
            "firehose_fatal_calls": fake.stats["fatal_calls"],
            "firehose_records_refused": fake.stats["records_refused"],
            "objects_of_200_lines_or_more": sum(1 for d in delivered if d.records + d.garbage >= 200),
            "version_ties": model.version_ties(),
            "rows": len(rows),
            "tombstones": sum(1 for r in rows.values() if r["deleted"]),
        }
        counts.update(self.counts)
        problems: list[str] = []
        if verdict.lost or verdict.phantom or verdict.mismatched:
            problems.append(f"{verdict.lost} lost, {verdict.phantom} phantom, {verdict.mismatched} mismatched")
            problems += verdict.examples
        problems += [f"5xx other than 503: {e}" for e in model.server_errors[:5]]
        problems += [f"unexpected answer: {e}" for e in model.unexpected[:5]]
        problems += [f"half-written: {e}" for e in model.half_written[:5]]
        problems += [f"event handler raised: {e}" for e in self.events.unexpected[:5]]
        # The transport took exactly the commands answered 202 and those of 503'd requests it took
        # whole (a lost answer): nothing accepted that the stream does not hold.
        taken = Counter((n, (c["resource"], c["owner"], c["id"]), c["version"]) for n, c in transported)
        answered = Counter(s.ref for s in model.accepted)
        if taken != answered:
            extra = list((taken - answered).items())[:3]
            missing = list((answered - taken).items())[:3]
            problems.append(f"the transport took {extra} that no 202 names, and not {missing}")
        # Every delivered object loaded exactly once, every command in it applied or stale,
        # every foreign line quarantined.
        if ledger["objects"] != len(delivered) or ledger["max_loads"] > 1:
            problems.append(
                f"ledger holds {ledger['objects']} objects (max loads {ledger['max_loads']}), "
                f"{len(delivered)} were delivered"
            )
        commands = sum(d.records for d in delivered)
        if ledger["applied"] + ledger["stale"] != commands:
            problems.append(f"applied {ledger['applied']} + stale {ledger['stale']} != {commands} commands delivered")
        garbage = sum(d.garbage for d in delivered)
        if not ledger["rejected"] == ledger["quarantined_rows"] == garbage:
            problems.append(
                f"quarantined {ledger['quarantined_rows']} lines (ledger says {ledger['rejected']}), "
                f"{garbage} foreign lines were delivered"
            )
        return counts, problems


def build_run(
    env: dict[str, str], s3: Any, bucket: str, stream: str, seed: int, faults: FirehoseFaults, containers: int = 2
) -> Run:
    """Services from `env` made current for the app (undo with bootstrap.reset()), writing with the
    real FirehoseWriter to a FakeFirehose; the flaky S3 store and the event deliverer beside them.

    `containers` API containers (Lambda processes) share the stream, each with its own writer and
    version clock. Their clocks read one `TickingClock`, as two hosts' clocks may agree, so that
    two containers give one todo the same version and op_id has to decide (CONTRACT section 3).
    `Run.pick_container` makes one current before each request.
    """
    from chalicelib import bootstrap
    from chalicelib.config import Settings
    from chalicelib.ids import VersionClock
    from chalicelib.loader.sources import S3ObjectStore
    from chalicelib.service import Service
    from chalicelib.writers.firehose import FirehoseWriter

    fake = FakeFirehose(s3, bucket, stream, Random(seed + 1), faults)
    clock = TickingClock()

    def writer(container: int) -> FirehoseWriter:
        return FirehoseWriter(fake.client(container), stream, sleep=lambda _seconds: None, jitter=lambda cap: cap)

    services = bootstrap.build(Settings.from_env(env), writer=writer(0))
    bootstrap.use(services)
    api = [services.service] + [Service(services.reader, writer(n), VersionClock(clock)) for n in range(1, containers)]
    if containers > 1:
        api[0] = Service(services.reader, services.writer, VersionClock(clock))
    flaky = FlakyS3Client(s3, Random(seed + 2))
    store = S3ObjectStore(flaky, bucket)
    events = EventDeliverer(services, store, bucket, Random(seed + 3))
    return Run(services, fake, flaky, store, events, Model(), api=api, chooser=Random(seed + 5), clock=clock)


class TickingClock:
    """The containers' clock: nanoseconds since the epoch, from the start time, advancing 1 ms per
    request (`tick`). Within one request every container's first version is the tick's value, so
    two containers writing one todo in the same tick give it the same version."""

    STEP_NS = 1_000_000  # more than the versions one request takes (a batch of 100, retried)

    def __init__(self) -> None:
        self.now = time.time_ns() // self.STEP_NS * self.STEP_NS

    def tick(self) -> None:
        self.now += self.STEP_NS

    def __call__(self) -> int:
        return self.now


def report(counts: dict[str, int], problems: list[str], out_dir: Any, name: str) -> str:
    """The counts line, printed and written to `out_dir/name`; with the problems, the assertion text."""
    line = counts_line(counts)
    print(line)
    (out_dir / name).write_text(line + "\n" + "\n".join(problems) + "\n")
    return line + ("\n" + "\n".join(problems) if problems else "")
