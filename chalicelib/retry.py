"""The one retry policy of every retry loop in chalicelib: how many tries, the pauses between them,
and how long a run may go on.

A `RetryPolicy` is a value: its numbers, and the clock, sleep and random draw it uses (injected, so
that tests record the pauses and move time on themselves). Each loop starts a run of it (`start`)
and, after each failed try, asks the run for the pause before the next one (`next_pause`: None
when the policy allows no other) and waits it (`wait`); `again` does both. The loop itself keeps
deciding which failures are worth another try, and what it logs. `call` is the whole loop for the
plain case: one callable, and a test of which exceptions to retry.

The pause after the n-th failed try is drawn by `jitter` under a ceiling that starts at `base`
and doubles (`linear`: grows by `base`) each time, never above `cap`. A run ends when it has made
`attempts` tries, or with `give_up_after` seconds passed since it began (a failure after them is
final), or when the pause would start the next try past `budget` seconds since it began.

Users: writers/firehose.py (a refused record), loader/__init__.py (a deadlock victim: tries, then
more behind the load gate), loader/attempts.py (an attempt's record begins, or is given back),
loader/gate.py (waits for the gate, with no pause between them).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def full_jitter(ceiling: float) -> float:
    """A pause drawn between none and the whole ceiling."""
    return random.uniform(0.0, ceiling)


def half_jitter(ceiling: float) -> float:
    """A pause drawn between half the ceiling and all of it."""
    return random.uniform(ceiling / 2, ceiling)


def no_jitter(ceiling: float) -> float:
    """The ceiling itself."""
    return ceiling


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int | None = 3  # tries in all, the first included; None: bounded by time only
    base: float = 0.1  # the ceiling of the first pause, in seconds
    cap: float = math.inf  # no ceiling above it
    linear: bool = False  # ceilings base, 2 base, 3 base... instead of base, 2 base, 4 base...
    jitter: Callable[[float], float] = full_jitter  # the pause drawn under a ceiling
    give_up_after: float | None = None  # seconds from the run's start: a failure after them is final
    budget: float | None = None  # seconds from the run's start: no try starts after them
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def ceiling(self, failed: int) -> float:
        """The ceiling of the pause after `failed` failed tries (1 for the first pause)."""
        grown = self.base * failed if self.linear else self.base * 2 ** (failed - 1)
        return min(self.cap, grown)

    def start(self) -> Retrying:
        """A run of the policy, started now (its clock read only when the policy bounds time)."""
        return Retrying(self, 1, self.clock() if self._timed else 0.0)

    def resume(self, run: Retrying) -> Retrying:
        """A run of this policy that goes on from `run`: its tries so far count for the pauses
        and `attempts`; its time starts now."""
        return Retrying(self, run.tries, self.clock() if self._timed else 0.0)

    def call(self, action: Callable[[], T], retryable: Callable[[BaseException], bool]) -> T:
        """`action()` until it returns; an exception `retryable` refuses, or the one after which the
        policy allows no other try, is raised."""
        run = self.start()
        while True:
            try:
                return action()
            except Exception as exc:
                if not retryable(exc) or not run.again():
                    raise

    @property
    def _timed(self) -> bool:
        return self.give_up_after is not None or self.budget is not None


@dataclass
class Retrying:
    """One run of a policy: the try under way (1 for the first) and when the run began."""

    policy: RetryPolicy
    tries: int
    started: float

    def next_pause(self) -> float | None:
        """After the current try failed: the pause before the next one, or None when the policy
        allows no other."""
        policy = self.policy
        if policy.attempts is not None and self.tries >= policy.attempts:
            return None
        if policy.give_up_after is not None and policy.clock() - self.started >= policy.give_up_after:
            return None
        pause = policy.jitter(policy.ceiling(self.tries))
        if policy.budget is not None and policy.clock() + pause - self.started > policy.budget:
            return None
        return pause

    def wait(self, pause: float) -> None:
        """Pause, then count the next try."""
        self.policy.sleep(pause)
        self.tries += 1

    def again(self) -> bool:
        """After the current try failed: wait the pause before the next one and return True, or
        return False at once when the policy allows no other."""
        pause = self.next_pause()
        if pause is None:
            return False
        self.wait(pause)
        return True
