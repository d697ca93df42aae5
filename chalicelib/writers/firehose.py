"""The production transport: write commands to a Kinesis Data Firehose delivery stream.

Each command's line (JSON ending in a newline; Firehose adds no delimiter) is one record. Records
go out with PutRecordBatch in calls within its limits (500 records and 4 MiB per call, 1,000 KiB
per record). A call can succeed as a whole while some entries fail (`FailedPutCount` > 0 on an
HTTP 200): only the entries whose response carries an `ErrorCode` are sent again, after a bounded
exponential backoff with full jitter. A whole call that is throttled or meets an unavailable or
failing service is retried the same way; any other error fails at once. When records still fail,
`TransportUnavailable` names the positions that were accepted, so a batch answer can say which
todos got through (a retry of the batch with the same Idempotency-Key names the same ids, and
the loader's last-writer-wins makes the repeats harmless).

The boto3 client is made once per process, on the first write: a process that only serves reads
never imports boto3.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from chalicelib.aws import ProcessClient
from chalicelib.errors import TransportUnavailable
from chalicelib.writers import CommandWriter

if TYPE_CHECKING:  # commands are made by the write routes, which import them themselves
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024  # botocore's model: Data is at most 1,024,000 bytes

# Whole-call errors worth another attempt: throttling, an unavailable or failing service.
RETRYABLE_CODES = frozenset(
    (
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "LimitExceededException",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalFailureException",
        "InternalServerError",
        "InternalError",
    )
)

# botocore's own retries ("max_attempts" counts retries, so 3 tries at most) cover connection
# errors and throttling inside one call; our rounds above it resend only refused entries. With
# these timeouts one call takes at most 3 x (1 + 3) s, and no round starts after the budget, so a
# write stays well inside API Gateway's 29 s.
CONNECT_TIMEOUT_SECONDS = 1
READ_TIMEOUT_SECONDS = 3
BOTOCORE_MAX_ATTEMPTS = 2
DEFAULT_BUDGET_SECONDS = 8.0


class RecordTooLarge(ValueError):
    """A command whose line exceeds Firehose's record limit (never true of a validated command)."""


def plan_calls(sizes: Sequence[int], positions: Sequence[int] | None = None) -> list[list[int]]:
    """Split records (by size in bytes) into PutRecordBatch calls within the limits, in order.

    Returns lists of positions (indexes into `sizes`), restricted to `positions` when given.
    Raises RecordTooLarge for a record over MAX_RECORD_BYTES (before anything is sent).
    """
    chosen = range(len(sizes)) if positions is None else positions
    calls: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for position in chosen:
        size = sizes[position]
        if size > MAX_RECORD_BYTES:
            raise RecordTooLarge(
                f"record {position} is {size} bytes; Firehose takes at most {MAX_RECORD_BYTES} per record"
            )
        if current and (len(current) >= MAX_RECORDS_PER_CALL or current_bytes + size > MAX_BYTES_PER_CALL):
            calls.append(current)
            current, current_bytes = [], 0
        current.append(position)
        current_bytes += size
    if current:
        calls.append(current)
    return calls


def full_jitter(cap: float) -> float:
    return random.uniform(0.0, cap)


class FirehoseWriter(CommandWriter):
    def __init__(
        self,
        client: Any,
        stream: str,
        max_attempts: int = 3,
        base_delay: float = 0.1,
        max_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float], float] = full_jitter,
        budget_seconds: float = DEFAULT_BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        """`client`: a boto3 Firehose client, or None with `client_factory` to make it when first used.

        At most `max_attempts` rounds of calls (the first included); no further round starts once
        `budget_seconds` would have passed since the write began (API Gateway allows 29 s in all).
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if client is None and client_factory is None:
            raise ValueError("give a client or a client_factory")
        self._client = client
        self._client_factory = client_factory
        self.stream = stream
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.jitter = jitter
        self.budget_seconds = budget_seconds
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Any) -> FirehoseWriter:
        """The writer for FIREHOSE_STREAM; the process's client is made on the first write."""
        return cls(None, settings.firehose_stream, client_factory=firehose_client)

    @property
    def client(self) -> Any:
        if self._client is None:
            assert self._client_factory is not None
            self._client = self._client_factory()
        return self._client

    def write(self, commands: Sequence[WriteCommand]) -> None:
        records = [c.to_line() for c in commands]
        if not records:
            return
        sizes = [len(r) for r in records]
        plan_calls(sizes)  # refuses an oversized record before anything is sent
        pending = list(range(len(records)))
        accepted: list[int] = []
        started = self.clock()
        for attempt in range(self.max_attempts):
            if attempt:
                delay = self.jitter(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
                if self.clock() + delay - started > self.budget_seconds:
                    break
                self.sleep(delay)
            failed: list[int] = []
            for call in plan_calls(sizes, pending):
                try:
                    ok, not_ok = self._put(records, call)
                except _CallFailed as exc:
                    raise TransportUnavailable(
                        f"firehose {self.stream}: {exc.__cause__}", accepted=sorted(accepted)
                    ) from exc.__cause__
                accepted.extend(ok)
                failed.extend(not_ok)
            if not failed:
                return
            log.warning(
                "firehose %s: %d of %d record(s) not accepted (attempt %d of %d)",
                self.stream,
                len(failed),
                len(pending),
                attempt + 1,
                self.max_attempts,
            )
            pending = failed
        raise TransportUnavailable(
            f"firehose {self.stream}: {len(pending)} of {len(records)} record(s) not accepted",
            accepted=sorted(accepted),
        )

    def _put(self, records: Sequence[bytes], call: list[int]) -> tuple[list[int], list[int]]:
        """One PutRecordBatch: (accepted positions, positions to send again).

        Raises _CallFailed (from the botocore error) when the call failed and is not worth retrying.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.put_record_batch(
                DeliveryStreamName=self.stream,
                Records=[{"Data": records[p]} for p in call],
            )
        except ClientError as exc:
            if not _retryable(exc):
                log.error("firehose %s: call failed, not retried: %s", self.stream, exc)
                raise _CallFailed() from exc
            log.warning("firehose %s: call failed, will retry: %s", self.stream, _code(exc))
            return [], list(call)
        except BotoCoreError as exc:
            log.error("firehose %s: call failed, not retried: %s", self.stream, exc)
            raise _CallFailed() from exc
        entries = response.get("RequestResponses") or []
        if len(entries) != len(call):
            # Not expected from the service; count the whole call as not accepted rather than guess.
            log.error("firehose %s: %d answers for %d records", self.stream, len(entries), len(call))
            return [], list(call)
        ok = [p for p, entry in zip(call, entries, strict=True) if not entry.get("ErrorCode")]
        not_ok = [p for p, entry in zip(call, entries, strict=True) if entry.get("ErrorCode")]
        return ok, not_ok


class _CallFailed(Exception):
    """A PutRecordBatch call failed in a way another attempt will not mend (its cause says how)."""


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _retryable(exc: Any) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return _code(exc) in RETRYABLE_CODES or status == 429 or status >= 500


# -- the client, one per process ---------------------------------------------------------------
def _make_firehose_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "firehose",
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": BOTOCORE_MAX_ATTEMPTS, "mode": "standard"},
        ),
    )


_FIREHOSE = ProcessClient(_make_firehose_client)


def firehose_client() -> Any:
    """The process's Firehose client: explicit timeouts and retries, boto3 imported only now."""
    return _FIREHOSE.get()


reset_client = _FIREHOSE.reset
