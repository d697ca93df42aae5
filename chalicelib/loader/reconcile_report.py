"""What a reconciler run did (`ReconcileReport`: its counts, and the backlog it leaves), and the line
and metrics each scheduled run emits from it (`emit_run`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from chalicelib import observe
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader import LoadResult
from chalicelib.loader.budget import Budget

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    result: LoadResult = field(default_factory=LoadResult)
    missing: int = 0  # objects found missing from the ledger (loaded now or left for later)
    left: int = 0  # missing objects not loaded in this run (bound reached or a read failed)
    failed: int = 0
    poisoned: int = 0  # poisoned objects left alone (loads kept failing; `replay --force` retries them)
    unchecked: int = 0  # objects listed but not checked against the ledger (it could not be read, or no time)
    stopped: str = ""  # why loading stopped early: "time" (the budget) or "database" (it stopped answering)
    error: DatabaseUnavailable | None = None  # the database's failure, raised once the rest is counted
    waiting: int = 0  # deferred objects left alone: what they wait for is still missing

    @property
    def backlog(self) -> int:
        """Objects that may still be missing from the ledger: those found missing and not loaded,
        and those the run could not check (an upper bound when the ledger could not be read)."""
        return self.left + self.unchecked

    def as_dict(self) -> dict[str, int]:
        r = self.result
        return {
            "applied": r.applied,
            "stale": r.stale,
            "rejected": r.rejected,
            "skipped": r.skipped,
            "deferred": r.deferred,
            "objects": r.objects,
            "missing": self.missing,
            "left": self.left,
            "failed": self.failed,
            "poisoned": self.poisoned,
            "waiting": self.waiting,
        }


def emit_run(report: ReconcileReport, budget: Budget | None, values: dict[str, tuple[float, str]]) -> dict[str, int]:
    """The run's line and metrics: the backlog, whether loads stopped early, and `values`."""
    counts = {**report.as_dict(), "unchecked": report.unchecked}
    remaining = round(budget.remaining(), 1) if budget is not None else None
    if report.stopped:
        log.warning(
            "reconciler stopped loading (%s): %d object(s) left for the next run, %s s of its time left",
            report.stopped,
            report.backlog,
            remaining,
        )
    observe.metrics(
        {"Stage": observe.stage()},
        {
            "ReconcilerBacklog": (report.backlog, "Count"),
            "ReconcilerStopped": (1 if report.stopped else 0, "Count"),
            **values,
        },
        type="reconcile",
        stopped=report.stopped or None,
        remaining_seconds=remaining,
        **counts,
    )
    return counts
