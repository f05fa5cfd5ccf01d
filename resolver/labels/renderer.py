"""PDF label sheets laid out in a process of their own, not on a thread of the serving process.

Laying out a label (its QR code, the text, fpdf2's drawing) is pure Python: ~4 ms a label, ~4 s for
a sheet of 1,000. On a worker thread it held the GIL that the serving process's event loop needs
after every system call, and a scan answered in ~1 ms waited 120 ms at the median (357 ms at worst)
while a 1,000-label sheet was made (benchmarks/README.md, "Resolution during bulk writes"). So the
sheet is made in one process started for it (``spawn``: the serving process has threads, which a
``fork`` would copy half-way), kept for the next sheet, at a lower scheduling priority than the
node's own, one sheet at a time (the routes bound how many wait: ``SHEETS_AT_ONCE``), and stopped
once idle for a while. ``spawn`` runs the serving program's main module again in the renderer, under
another name: it must start nothing unless ``__name__ == "__main__"`` (the ``idnode`` script, pytest).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from registry.errors import ServerBusy
from resolver.labels.fonts import unicode_font
from resolver.labels.layouts import Layout
from resolver.labels.sheet import Label, LabelSheet

__all__ = ["lay_out", "render_sheet"]

NICENESS = 5  # the renderer's priority below the node's: scans come first on a busy machine
IDLE_SECONDS = 300.0  # a renderer with no sheet for this long is stopped; the next sheet starts one

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_idle: asyncio.TimerHandle | None = None  # stops the renderer once it has been idle for IDLE_SECONDS
_busy = 0  # sheets being made (the idle timer starts when none is)


def lay_out(layout: Layout, title: str, font_setting: str, labels: Sequence[Label]) -> bytes:
    """The PDF of ``labels`` (run in the renderer process; also usable in-process, e.g. by the CLI)."""
    sheet = LabelSheet(layout, title, lambda: unicode_font(font_setting))
    sheet.add(labels)
    return sheet.finish()


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


async def render_sheet(layout: Layout, title: str, font_setting: str, labels: Sequence[Label]) -> bytes:
    """The PDF of ``labels``, made in the renderer process. A renderer that died (killed, out of
    memory) is replaced by the next sheet; this one is answered 503 with Retry-After. A renderer
    left idle for :data:`IDLE_SECONDS` is stopped (it holds ~125 MB after a sheet of 1,000 labels
    with Chinese text: the font's tables, fpdf2's pages)."""
    global _idle, _busy
    pool = _executor()
    loop = asyncio.get_running_loop()
    if _idle is not None:
        _idle.cancel()
        _idle = None
    _busy += 1
    try:
        return await loop.run_in_executor(pool, lay_out, layout, title, font_setting, list(labels))
    except BrokenProcessPool:
        _discard(pool)
        raise ServerBusy("the label renderer stopped; try again", retry_after=1) from None
    finally:
        _busy -= 1
        if not _busy and _pool is pool:
            _idle = loop.call_later(IDLE_SECONDS, _discard, pool)


def shutdown() -> None:
    """Stop the renderer process, if one was started (the node stopping), and wait for it: a serving
    process that exits with its renderer still waiting for work waits for ever (multiprocessing joins
    its children before the executor has told them to stop)."""
    global _idle, _pool
    if _idle is not None:
        _idle.cancel()
        _idle = None
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
