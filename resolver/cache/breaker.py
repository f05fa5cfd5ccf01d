"""A circuit breaker for the shared cache: fail fast while Redis is away, probe it, close by itself.

States: ``closed`` (calls go through), ``open`` (calls are refused at once for ``cooldown`` seconds),
``half-open`` (one probe is running; calls are still refused). ``threshold`` consecutive failures,
or one timeout, open it. Lookups only ever go through a *closed* breaker; the probe is run by the
cache's own maintenance task (which first re-applies the invalidations that could not be sent), so
the breaker closes by itself even when no request arrives. Time comes from an injected monotonic
``clock``: the state is a pure function of the calls made and the clock readings.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(self, threshold: int = 5, cooldown: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.opened_count = 0  # how many times it opened (for status and tests)

    @property
    def state(self) -> str:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    def allow(self) -> bool:
        """May a call go to Redis now? Only when closed: open and half-open fail fast."""
        return self._state == CLOSED

    def success(self) -> None:
        if self._state == CLOSED:
            self._failures = 0

    def failure(self, *, timeout: bool = False) -> None:
        """A call failed. A timeout opens at once (it already cost a request its latency budget)."""
        if self._state != CLOSED:
            return
        self._failures += 1
        if timeout or self._failures >= self.threshold:
            self._open()

    def trip(self) -> None:
        """Open now (e.g. the invalidation subscription was lost)."""
        if self._state == CLOSED:
            self._open()

    def probe_due(self) -> bool:
        """If open and the cool-down is over, go half-open and return True: the caller probes."""
        if self._state == OPEN and self.clock() - self._opened_at >= self.cooldown:
            self._state = HALF_OPEN
            return True
        return False

    def probe_result(self, ok: bool) -> None:
        if self._state != HALF_OPEN:
            return
        if ok:
            self._state = CLOSED
            self._failures = 0
        else:
            self._state = OPEN
            self._opened_at = self.clock()

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self.clock()
        self._failures = 0
        self.opened_count += 1
