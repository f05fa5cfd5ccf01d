"""Pure-Python work of seconds, run in a helper process rather than on a thread of a serving process.

A thread that runs pure Python holds the GIL, and the serving process's event loop, which lets go
of the GIL at every system call, must wait to take it back each time: a scan answered in ~1 ms
waited up to 357 ms while a label sheet was laid out on a thread, 852 ms while an XLSX workbook
was opened (benchmarks/README.md, "Resolution during bulk writes"). Such work goes to :func:`run`:
one helper process per serving process, started on first use with ``spawn`` (the serving process
has threads, which a ``fork`` would copy half-way), at a lower scheduling priority than the node's
own, one task at a time, stopped once idle for :data:`IDLE_SECONDS` and when the node stops
(:func:`shutdown`, which stops a task in hand rather than wait for it). A helper that dies (killed,
out of memory) fails the tasks in hand and queued with :class:`HelperStopped` (a 503 with
Retry-After; a job is paused); one found dead before a task is handed to it is replaced at once.

What runs there must be a module-level function whose arguments and result pickle; let it return
errors as values (an exception whose ``__init__`` takes other arguments cannot be sent back).
``spawn`` runs the serving program's main module again in the helper, under another name: it must
start nothing unless ``__name__ == "__main__"`` (the ``idnode`` script and pytest do not).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from registry.errors import ServerBusy

__all__ = ["IDLE_SECONDS", "NICENESS", "HelperStopped", "run", "shutdown"]

T = TypeVar("T")
NICENESS = 5  # the helper's priority below the node's: scans come first on a busy machine
IDLE_SECONDS = 300.0  # a helper with no task for this long is stopped; the next task starts one

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_idle: asyncio.TimerHandle | None = None  # stops the helper once it has been idle for IDLE_SECONDS
_busy = 0  # tasks in hand (the idle timer starts when none is)


class HelperStopped(ServerBusy):
    """The helper process died while it had the task (or before it could start it)."""

    def __init__(self) -> None:
        super().__init__("the node's helper process stopped; try again", retry_after=1)


def _lower_priority() -> None:
    with contextlib.suppress(OSError):
        os.nice(NICENESS)


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_lower_priority)
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


async def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the helper process."""
    global _idle, _busy
    pool = _executor()
    loop = asyncio.get_running_loop()
    if _idle is not None:
        _idle.cancel()
        _idle = None
    _busy += 1
    try:
        try:
            future = loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:  # it died while idle (the OOM killer, say): a new one takes the task
            _discard(pool)
            pool = _executor()
            future = loop.run_in_executor(pool, fn, *args)
        return await future
    except BrokenProcessPool:
        _discard(pool)
        raise HelperStopped from None
    finally:
        _busy -= 1
        if not _busy and _pool is pool:
            _idle = loop.call_later(IDLE_SECONDS, _discard, pool)


def shutdown() -> None:
    """Stop the helper process, if one was started (the node stopping), and wait for it: a serving
    process that exits with its helper still waiting for work waits for ever (multiprocessing joins
    its children before the executor has told them to stop). A task in hand is not waited for: the
    helper is terminated (a workbook's rows are read again when the job resumes, a label sheet's
    request has ended with the node)."""
    global _idle, _pool
    if _idle is not None:
        _idle.cancel()
        _idle = None
    with _lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    if _busy:
        for process in list(getattr(pool, "_processes", {}).values()):  # no public way to stop a task
            with contextlib.suppress(Exception):
                process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
