"""The one retry policy (chalicelib/retry.py), with a fake clock and sleep: the pauses it takes,
where its tries and its time end, and which failures it retries."""

from __future__ import annotations

import pytest

from chalicelib.retry import RetryPolicy, full_jitter, half_jitter, no_jitter


class FakeTime:
    """A clock that only the recorded pauses move (and `pass_` for a slow try)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def pass_(self, seconds: float) -> None:
        self.now += seconds


def policy(time: FakeTime, **kwargs: object) -> RetryPolicy:
    options: dict[str, object] = {"jitter": no_jitter, "sleep": time.sleep, "clock": time.clock}
    options.update(kwargs)
    return RetryPolicy(**options)  # type: ignore[arg-type]


class Flaky:
    """Fails with `error` `failures` times, then returns "done"."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"try {self.calls}")
        return "done"


def test_the_pauses_double_from_base_up_to_the_cap() -> None:
    # GIVEN a policy of 6 tries, pauses from 0.1 s doubled up to 0.5 s, drawn at their ceiling
    time = FakeTime()
    flaky = Flaky(5)
    # WHEN the action fails 5 times
    result = policy(time, attempts=6, base=0.1, cap=0.5).call(flaky, lambda exc: True)
    # THEN it paused 0.1, 0.2, 0.4, then 0.5 twice, and the sixth try's answer came back
    assert result == "done" and flaky.calls == 6
    assert time.pauses == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_linear_pauses_grow_by_base() -> None:
    time = FakeTime()
    policy(time, attempts=5, base=0.05, linear=True).call(Flaky(4), lambda exc: True)
    assert time.pauses == pytest.approx([0.05, 0.1, 0.15, 0.2])


def test_the_last_tries_failure_is_raised_after_attempts_tries() -> None:
    time = FakeTime()
    flaky = Flaky(10)
    with pytest.raises(ConnectionError, match="try 3"):
        policy(time, attempts=3).call(flaky, lambda exc: True)
    assert flaky.calls == 3 and len(time.pauses) == 2  # no pause after the last try


def test_a_failure_the_caller_does_not_retry_is_raised_at_once() -> None:
    time = FakeTime()
    flaky = Flaky(1, ValueError)
    with pytest.raises(ValueError):
        policy(time, attempts=5).call(flaky, lambda exc: isinstance(exc, ConnectionError))
    assert flaky.calls == 1 and time.pauses == []


def test_retryable_failures_then_another_kind() -> None:
    # GIVEN an action that fails twice with a retried error, then with one that is not retried
    time = FakeTime()
    errors = iter([ConnectionError("a"), ConnectionError("b"), KeyError("c")])

    def action() -> str:
        raise next(errors)

    # THEN the third failure is raised as it is, after two pauses
    with pytest.raises(KeyError):
        policy(time, attempts=10).call(action, lambda exc: isinstance(exc, ConnectionError))
    assert len(time.pauses) == 2


def test_the_budget_starts_no_try_past_it() -> None:
    # GIVEN a 1 s budget and a first try that took 0.95 s
    time = FakeTime()
    run = policy(time, attempts=5, base=0.1, budget=1.0).start()
    time.pass_(0.95)
    # THEN no pause is taken: 0.95 s + 0.1 s of pause would start the next try past the budget
    assert run.next_pause() is None and time.pauses == []


def test_the_budget_allows_a_try_that_starts_within_it() -> None:
    time = FakeTime()
    run = policy(time, attempts=5, base=0.1, budget=1.0).start()
    time.pass_(0.85)
    assert run.again() and time.pauses == pytest.approx([0.1]) and run.tries == 2


def test_give_up_after_ends_the_run_at_the_first_failure_past_it() -> None:
    # GIVEN unbounded tries, pauses of 0.1 s doubled up to 1 s, given up after 5 s
    time = FakeTime()
    flaky = Flaky(1000)
    with pytest.raises(ConnectionError):
        policy(time, attempts=None, base=0.1, cap=1.0, give_up_after=5.0).call(flaky, lambda exc: True)
    # THEN it paused until 5 s had passed, the last pause starting before them (and ending past)
    assert time.pauses[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert sum(time.pauses[:-1]) < 5.0 <= sum(time.pauses)
    assert flaky.calls == len(time.pauses) + 1


def test_resume_keeps_the_tries_and_starts_the_time_anew() -> None:
    # GIVEN a run of 2 tries that failed both, after 10 s
    time = FakeTime()
    first = policy(time, attempts=2, base=0.1)
    run = first.start()
    assert run.again()
    time.pass_(10.0)
    assert run.next_pause() is None
    # WHEN a run with no bound on tries but 1 s of time goes on from it
    second = policy(time, attempts=None, base=0.1, give_up_after=1.0).resume(run)
    # THEN its pauses go on growing from the tries made, and its time counts from now
    assert second.tries == 2 and second.next_pause() == pytest.approx(0.2)
    time.pass_(1.0)
    assert second.next_pause() is None


def test_the_clock_is_read_only_by_a_policy_bounded_in_time() -> None:
    reads: list[int] = []

    def clock() -> float:
        reads.append(1)
        return 0.0

    RetryPolicy(attempts=3, jitter=no_jitter, sleep=lambda s: None, clock=clock).call(Flaky(2), lambda exc: True)
    assert reads == []


def test_jitter_draws_under_the_ceiling() -> None:
    drawn: list[float] = []

    def jitter(ceiling: float) -> float:
        drawn.append(ceiling)
        return ceiling / 4

    time = FakeTime()
    policy(time, attempts=3, base=0.2, jitter=jitter).call(Flaky(2), lambda exc: True)
    assert drawn == pytest.approx([0.2, 0.4]) and time.pauses == pytest.approx([0.05, 0.1])
    for _ in range(200):
        assert 0.0 <= full_jitter(1.0) <= 1.0
        assert 0.5 <= half_jitter(1.0) <= 1.0


def test_a_policy_makes_at_least_one_try() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
