"""Chromium for the browser tests: Debian's package (``playwright install`` cannot download browsers
here), driven by Playwright. The ``browser`` fixture (tests/conftest.py) opens one per test with
:func:`chromium`; the ``shots`` fixture says where screenshots go (``IDNODE_SCREENSHOTS=DIR`` keeps them)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

__all__ = ["CHROMIUM", "chromium"]

CHROMIUM = "/usr/bin/chromium"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Debian Chromium, closed on leaving."""
    assert shutil.which("chromium") == CHROMIUM, "Debian's chromium must be installed (.ci/run installs it)"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            await b.close()
