"""Job events: what the job runner tells whoever watches it (the node's metrics), as write events
tell the write service's subscribers.

:class:`registry.job_runner.JobRunner` calls its :class:`JobObserver` after each chunk's checkpoint
is stored (the rows it processed, by outcome) and when a job ends (done or failed). The observer is
called on the event loop and must not block; the registry knows nothing of what it does with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["ROW_OUTCOMES", "JobObserver", "row_counts"]

# The counts of registry.job_run.Tally that say what became of a row.
ROW_OUTCOMES = ("created", "replaced", "deleted", "present", "absent", "rejected")


class JobObserver(Protocol):
    def rows(self, kind: str, counts: Mapping[str, int]) -> None:
        """A job of ``kind`` processed more rows: how many more of each outcome (only those > 0)."""

    def ended(self, kind: str, state: str, seconds: float) -> None:
        """A job of ``kind`` ended in ``state`` (done or failed), ``seconds`` after it first started."""


def row_counts(before: object, after: object) -> dict[str, int]:
    """The outcomes ``after`` (a Tally) has more of than ``before``."""
    out: dict[str, int] = {}
    for outcome in ROW_OUTCOMES:
        n = getattr(after, outcome) - getattr(before, outcome)
        if n > 0:
            out[outcome] = n
    return out
