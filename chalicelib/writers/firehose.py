"""The production transport: write commands to a Kinesis Data Firehose delivery stream.

One write (one request's commands: a single todo, a profile, or a whole batch) is ONE record:
the commands' lines concatenated, each ending in a newline (Firehose adds no delimiter). Firehose
delivers a record whole into one S3 object, and the loader applies an object in one transaction,
so a batch lands whole or not at all. The record goes out with PutRecordBatch (one entry). A call
can succeed as a whole while its entry fails (`FailedPutCount` 1, an `ErrorCode`, on an HTTP 200):
the record is sent again after a bounded exponential backoff with full jitter (chalicelib.retry's
`RetryPolicy`, its time budget included); a whole call that
is throttled or meets an unavailable or failing service is retried the same way; any other error
fails at once. Whatever is left unconfirmed raises `TransportUnavailable`: the record may still
have been taken (a timeout can hide an acceptance), so the answer is "all or none may land".

The boto3 client is made once per process (held by chalicelib.bootstrap), on the first write: a
process that only serves reads never imports boto3.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from chalicelib.errors import RecordTooLarge, TransportUnavailable
from chalicelib.retry import RetryPolicy, full_jitter
from chalicelib.writers import CommandWriter

if TYPE_CHECKING:  # commands are made by the write routes, which import them themselves
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)

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
# errors and throttling inside one call; our attempts above it resend a refused record. With
# these timeouts one call takes at most 3 x (1 + 3) s, and no attempt starts after the budget, so a
# write stays well inside API Gateway's 29 s.
CONNECT_TIMEOUT_SECONDS = 1
READ_TIMEOUT_SECONDS = 3
BOTOCORE_MAX_ATTEMPTS = 2
DEFAULT_BUDGET_SECONDS = 8.0


def record_of(commands: Sequence[WriteCommand]) -> bytes:
    """One write's record: its commands' lines, in order. RecordTooLarge beyond Firehose's limit."""
    record = b"".join(c.to_line() for c in commands)
    if len(record) > MAX_RECORD_BYTES:
        raise RecordTooLarge(
            f"{len(commands)} command(s) make a record of {len(record)} bytes; "
            f"Firehose takes at most {MAX_RECORD_BYTES} per record"
        )
    return record


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

        At most `max_attempts` calls (the first included); no further attempt starts once
        `budget_seconds` would have passed since the write began (API Gateway allows 29 s in all).
        """
        if client is None and client_factory is None:
            raise ValueError("give a client or a client_factory")
        self._client = client
        self._client_factory = client_factory
        self.stream = stream
        self.retry = RetryPolicy(
            attempts=max_attempts,
            base=base_delay,
            cap=max_delay,
            jitter=jitter,
            budget=budget_seconds,
            sleep=sleep,
            clock=clock,
        )

    @classmethod
    def from_settings(cls, settings: Any, client_factory: Callable[[], Any]) -> FirehoseWriter:
        """The writer for FIREHOSE_STREAM; `client_factory` (the process's client, held by
        chalicelib.bootstrap) is called on the first write."""
        return cls(None, settings.firehose_stream, client_factory=client_factory)

    @property
    def client(self) -> Any:
        if self._client is None:
            assert self._client_factory is not None
            self._client = self._client_factory()
        return self._client

    def write(self, commands: Sequence[WriteCommand]) -> None:
        if not commands:
            return
        record = record_of(commands)  # refused before anything is sent when too large
        run = self.retry.start()
        while True:
            try:
                if self._put(record):
                    return
            except _CallFailed as exc:
                raise TransportUnavailable(f"firehose {self.stream}: {exc.__cause__}") from exc.__cause__
            log.warning(
                "firehose %s: record of %d command(s) not accepted (attempt %d of %d)",
                self.stream,
                len(commands),
                run.tries,
                self.retry.attempts,
            )
            if not run.again():
                raise TransportUnavailable(
                    f"firehose {self.stream}: the record of {len(commands)} command(s) not accepted"
                )

    def _put(self, record: bytes) -> bool:
        """One PutRecordBatch of the one record: True when Firehose took it, False to send it again.

        Raises _CallFailed (from the botocore error) when the call failed and is not worth retrying.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.put_record_batch(DeliveryStreamName=self.stream, Records=[{"Data": record}])
        except ClientError as exc:
            if not _retryable(exc):
                log.error("firehose %s: call failed, not retried: %s", self.stream, exc)
                raise _CallFailed() from exc
            log.warning("firehose %s: call failed, will retry: %s", self.stream, _code(exc))
            return False
        except BotoCoreError as exc:
            log.error("firehose %s: call failed, not retried: %s", self.stream, exc)
            raise _CallFailed() from exc
        entries = response.get("RequestResponses") or []
        if len(entries) != 1:
            # Not expected from the service; count the call as not accepted rather than guess.
            log.error("firehose %s: %d answers for one record", self.stream, len(entries))
            return False
        return not entries[0].get("ErrorCode")


class _CallFailed(Exception):
    """A PutRecordBatch call failed in a way another attempt will not mend (its cause says how)."""


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _retryable(exc: Any) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return _code(exc) in RETRYABLE_CODES or status == 429 or status >= 500


# -- the client ------------------------------------------------------------------------------------
def make_firehose_client() -> Any:
    """A Firehose client with explicit timeouts and retries (boto3 imported only now). The
    composition root (chalicelib.bootstrap) makes one per process, on the first write."""
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
