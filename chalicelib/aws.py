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
