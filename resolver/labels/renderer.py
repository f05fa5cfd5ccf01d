"""PDF label sheets laid out in the node's helper process (:mod:`registry.offload`), not on a thread.

Laying out a label (its QR code, the text, fpdf2's drawing) is pure Python: ~4 ms a label, ~4 s for
a sheet of 1,000. On a worker thread it held the GIL that the serving process's event loop needs
after every system call, and a scan answered in ~1 ms waited 120 ms at the median (357 ms at worst)
while a 1,000-label sheet was made (benchmarks/README.md, "Resolution during bulk writes"). The
helper holds ~125 MB after such a sheet with Chinese text (the font's tables, fpdf2's pages) until
it has been idle for a while.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry import offload
from resolver.labels.fonts import unicode_font
from resolver.labels.layouts import Layout
from resolver.labels.sheet import Label, LabelSheet

__all__ = ["lay_out", "render_sheet"]


def lay_out(layout: Layout, title: str, font_setting: str, labels: Sequence[Label]) -> bytes:
    """The PDF of ``labels`` (run in the helper process; also usable in-process)."""
    sheet = LabelSheet(layout, title, lambda: unicode_font(font_setting))
    sheet.add(labels)
    return sheet.finish()


async def render_sheet(layout: Layout, title: str, font_setting: str, labels: Sequence[Label]) -> bytes:
    """The PDF of ``labels``, made in the helper process (503 with Retry-After if it died meanwhile)."""
    return await offload.run(lay_out, layout, title, font_setting, list(labels))
