"""AWS clients, one per process, made on first use (so boto3 is imported only by what calls AWS)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class ProcessClient:
    """Holds the client `make()` builds, built once (thread-safe) when first asked for.

    Each caller keeps its own `make`, with the literal `boto3.client("SERVICE", ...)` call and its
    timeouts: the policy test reads those calls to know which services the code uses.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
                client = self._client
        return client

    def reset(self) -> None:
        """Forget the client (tests)."""
        with self._lock:
            self._client = None


def make_s3_client() -> Any:
    """An S3 client with explicit timeouts and retries (boto3 imported only now), one per process
    (AWS_CLIENTS), made on first use."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 5, "mode": "standard"}),
    )


def _make_firehose() -> Any:
    from chalicelib.writers.firehose import make_firehose_client

    return make_firehose_client()


# -- the process's AWS clients: each made on first use (boto3 is imported only then), then kept ----
AWS_CLIENTS = {"firehose": ProcessClient(_make_firehose), "s3": ProcessClient(make_s3_client)}


def aws_client(service: str) -> Any:
    """The process's client for `service` ("firehose", "s3"), made on first use."""
    return AWS_CLIENTS[service].get()


def reset_aws_clients() -> None:
    """Forget the process's AWS clients (tests)."""
    for holder in AWS_CLIENTS.values():
        holder.reset()
