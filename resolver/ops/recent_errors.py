"""The node's recent warnings and errors, kept in memory for the console's status page.

:data:`RECENT` is a logging handler holding the last :data:`KEEP` records of level WARNING and up
logged under ``idnode`` and ``registry`` (the node's own loggers): their time, logger, level and
message (the message only, at most :data:`MAX_MESSAGE` characters; tracebacks stay in the log).
Log records never carry secrets (resolver.ops.logs), so neither does this. :func:`install` adds it
once per process.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["KEEP", "RECENT", "LoggedProblem", "RecentProblems", "install"]

KEEP = 50
MAX_MESSAGE = 500
LOGGERS = ("idnode", "registry")


@dataclass(frozen=True)
class LoggedProblem:
    at: float  # UNIX seconds
    logger: str
    level: str
    message: str


class RecentProblems(logging.Handler):
    """The last ``keep`` records it was handed, newest last."""

    def __init__(self, keep: int = KEEP) -> None:
        super().__init__(logging.WARNING)
        self._kept: deque[LoggedProblem] = deque(maxlen=keep)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format
            message = str(record.msg)
        problem = LoggedProblem(record.created, record.name, record.levelname, message[:MAX_MESSAGE])
        with self._guard:
            self._kept.append(problem)

    def newest(self, n: int = KEEP) -> list[LoggedProblem]:
        """Up to ``n`` records, newest first."""
        with self._guard:
            kept = list(self._kept)
        return kept[::-1][:n]


RECENT = RecentProblems()


def install() -> None:
    """Hand the node's loggers' warnings and errors to :data:`RECENT` (once; later calls do nothing)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if RECENT not in logger.handlers:
            logger.addHandler(RECENT)
