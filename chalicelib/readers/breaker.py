"""The cool-down breaker: after a failure, callers leave a dependency alone for `cooldown`
seconds, then try it once more. One class for every dependency a read may skip: each replica
(`ReplicaReader`, which then asks the next reader) and the Redis cache and pending writes
(`CachedReader`, `PendingWrites`, which then read the database)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_COOLDOWN_SECONDS = 5.0


class Breaker:
    """Open (skip the dependency) for `cooldown` seconds after each failure; closed again after a
    success. The first failure after a success is logged, naming the dependency and what callers
    do meanwhile; later failures while open are counted, not logged."""

    def __init__(
        self,
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "cache",
        fallback: str = "reading the database",
    ) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self.name = name
        self.fallback = fallback
        self.open_until = 0.0
        self.failures = 0
        self._lock = threading.Lock()

    def allows(self) -> bool:
        return self.open_until == 0.0 or self.clock() >= self.open_until

    def failed(self, exc: BaseException, doing: str) -> None:
        with self._lock:
            was_closed = self.open_until == 0.0
            self.open_until = self.clock() + self.cooldown
            self.failures += 1
        if was_closed:
            log.warning(
                "%s unavailable while %s, %s for %.0f s: %r", self.name, doing, self.fallback, self.cooldown, exc
            )

    def succeeded(self) -> None:
        if self.open_until:
            with self._lock:
                self.open_until = 0.0
            log.info("%s available again", self.name)
