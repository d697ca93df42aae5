"""The time a scheduled reconciler run may spend loading (`Budget`, from its Lambda context), and the
watchdog that cuts a load still running at the budget's margin (`LoadWatchdog`). See reconciler.py
for why a load is cut rather than left to the Lambda timeout."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class Budget:
    """The time a scheduled run may spend loading, from its Lambda context's remaining time.

    MARGIN_SECONDS stay free before the function's timeout: a load still running when only they
    are left is cut (`LoadWatchdog`); what follows the cut fits in them (the load gives its
    attempt back, at most 5 s; the rest of the walk lists S3 only; the metrics line, with one
    count of poisoned objects, at most the loader's 40 s read timeout). A load is started only
    with at least LOAD_SECONDS, or twice the longest load of this run, left before the margin."""

    MARGIN_SECONDS = 60.0
    LOAD_SECONDS = 60.0

    def __init__(self, remaining_ms: Callable[[], int]) -> None:
        self._remaining_ms = remaining_ms
        self.longest = 0.0  # the longest load so far, in seconds

    @classmethod
    def of(cls, context: Any) -> Budget | None:
        """The budget of a Lambda invocation; None without a context (the CLI, tests, local)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return cls(remaining) if callable(remaining) else None

    def remaining(self) -> float:
        """Seconds left before the function's timeout."""
        return self._remaining_ms() / 1000

    def for_loads(self) -> float:
        """Seconds left before the margin."""
        return self.remaining() - self.MARGIN_SECONDS

    def may_start_load(self) -> bool:
        return self.for_loads() >= max(self.LOAD_SECONDS, 2 * self.longest)

    def spent(self) -> bool:
        """Only the margin is left: no more loads and no more ledger reads."""
        return self.for_loads() <= 0

    def loaded(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)


class LoadWatchdog:
    """Cuts a load still running at the budget's margin, before the Lambda timeout freezes it.

    MySQL/MariaDB: the load's connection is killed from a connection of the watchdog's own
    (`KILL CONNECTION`, allowed on a connection of the same user): the server rolls the load's
    transaction back and frees its locks, the attempt's lock among them, and the load fails with a
    lost connection, which gives its attempt back without counting (attempts.py). SQLite has no
    server to ask and is never run with a deadline (a Lambda stage uses MySQL): no watchdog."""

    def __init__(self, db: Any) -> None:
        self.db = db  # None: no watchdog (a run without a budget)
        self.fired = False

    @contextmanager
    def guard(self, seconds: float | None) -> Iterator[None]:
        """Around one load: cut it if it still runs after `seconds` (None: never)."""
        self.fired = False
        if seconds is None or self.db is None or self.db.dialect == "sqlite":
            yield
            return
        thread_id = self.db.connection().thread_id()  # the connection this thread's load uses
        timer = threading.Timer(max(0.0, seconds), self._cut, (thread_id,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()
            if self.fired:
                self.db.discard()  # killed (or about to be): this thread connects afresh

    def _cut(self, thread_id: int) -> None:
        self.fired = True
        log.warning("the reconciler's time is nearly up: cutting the load still running (connection %s)", thread_id)
        try:
            with self.db.transaction() as cur:  # this timer thread's own connection
                cur.execute("KILL CONNECTION %s", (thread_id,))
        except Exception:  # gone already, or the server does not answer: the load's own timeouts end it
            log.warning("could not cut the load's connection %s", thread_id, exc_info=True)
        finally:
            self.db.discard()
