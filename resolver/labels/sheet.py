"""A PDF sheet of labels, made with fpdf2: per label the QR code of the handle's public URL and, beside
it, the identifier (and optionally one field's value), wrapped and shrunk to fit.

Not thread-safe and CPU-bound: one sheet is filled by one thread at a time, chunk by chunk
(:meth:`LabelSheet.add`), off the event loop. Codes are embedded as 1-bit images of one pixel a module
(CCITT G4 in the PDF, a few hundred bytes each), which PDF viewers and printers scale without
smoothing, so the modules stay sharp at any resolution.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from fpdf import FPDF

from registry.errors import InvalidRequest
from resolver.labels.fonts import FontFile
from resolver.labels.layouts import LAYOUTS, Layout
from resolver.labels.qr import QUIET_ZONE, make_qr

__all__ = ["Label", "LabelSheet"]

PT = 25.4 / 72  # millimetres in a point
LATIN = "helvetica"  # PDF base font: Latin-1, never embedded
UNICODE = "labeltext"  # the embedded font for other text
GAP = 2.0  # mm between the code (its dark modules) and the text
MIN_MODULE = 0.2  # mm: about the smallest module a 300 dpi printer and a phone camera handle (long URLs)
NOTE_CHARS = 120  # a field value longer than this is cut before it is laid out
BREAK_AFTER = "/-_.:; "


@dataclass(frozen=True, slots=True)
class Label:
    handle: str  # printed
    url: str  # encoded in the code
    note: str | None = None  # a template field's value, printed under the handle


class LabelSheet:
    """Labels laid out on A4 pages, in order, a new page whenever one is full."""

    def __init__(self, layout: Layout, title: str, font: Callable[[], FontFile | None]) -> None:
        """``font`` finds the font for text outside Latin-1, called once, when such text first comes."""
        self.layout = layout
        self._find_font = font
        self.count = 0
        pdf = self.pdf = FPDF(unit="mm", format="A4")
        pdf.set_auto_page_break(False)
        pdf.set_margin(0)
        pdf.set_title(title)
        pdf.set_creator("idnode")
        pdf.set_producer("idnode (fpdf2)")
        self._unicode: bool | None = None  # not looked for yet
        self._widths: dict[tuple[str, float, str], float] = {}

    def add(self, labels: Sequence[Label]) -> None:
        for label in labels:
            slot = self.count % self.layout.per_page
            if slot == 0:
                self.pdf.add_page()
            self._draw(label, *self.layout.origin(slot))
            self.count += 1

    def finish(self) -> bytes:
        return bytes(self.pdf.output())

    @property
    def pages(self) -> int:
        return self.pdf.pages_count

    # -- one label ---------------------------------------------------------------------------------
    def _draw(self, label: Label, x: float, y: float) -> None:
        layout, pdf = self.layout, self.pdf
        pad = layout.padding
        side = layout.height - 2 * pad
        try:
            code = make_qr(label.url)
        except InvalidRequest as exc:
            exc.handle = label.handle
            raise
        modules = code.symbol_size(border=QUIET_ZONE)[0]
        if side / modules < MIN_MODULE:
            roomy = [n for n, other in LAYOUTS.items() if (other.height - 2 * other.padding) / modules >= MIN_MODULE]
            raise InvalidRequest(
                f"the code of {label.handle} is {modules} modules wide: on {layout.name} labels a module would be "
                f"{side / modules:.2f} mm, below the {MIN_MODULE} mm printers and phone cameras need; "
                + (f"use layout {' or '.join(roomy)}" if roomy else "print it from GET /api/qr instead"),
                label.handle,
            )
        image = io.BytesIO()
        code.save(image, kind="png", scale=1, border=QUIET_ZONE)
        pdf.image(image, x=x + pad, y=y + pad, w=side, h=side)
        # The code's own quiet zone already separates it from the text.
        left = x + pad + side + GAP - QUIET_ZONE * side / code.symbol_size(border=QUIET_ZONE)[0]
        width = x + layout.width - pad - left
        height = layout.height - 2 * pad
        note = label.note[:NOTE_CHARS] if label.note else None
        block = self._fit(label.handle, note, width, height)
        top = y + (layout.height - sum(size * PT * 1.2 for _, _, size, _ in block)) / 2
        for family, line, size, grey in block:
            pdf.set_font(family, size=size)
            pdf.set_text_color(grey)
            pdf.text(left, top + size * PT * 0.95, line)
            top += size * PT * 1.2

    def _fit(self, handle: str, note: str | None, width: float, height: float) -> list[tuple[str, str, float, int]]:
        """Lines (font, text, size, grey level): the largest size at which the handle, then at most
        two lines of the note one size smaller, fit; at the smallest, cut with "..."."""
        family, text = self._face(handle)
        note_face = self._face(note) if note else None
        sizes = self.layout.font_sizes
        for number, size in enumerate(sizes):
            lines = self._wrap(family, size, text, width)
            note_size = max(size - 1, sizes[-1])
            rows = len(lines) * size * PT * 1.2
            note_lines: list[str] = []
            if note_face is not None:
                note_lines = self._wrap(note_face[0], note_size, note_face[1], width)
                rows += min(len(note_lines), 2) * note_size * PT * 1.2
            if rows <= height or number == len(sizes) - 1:
                break
        room = max(1, int(height // (size * PT * 1.2)))
        if len(lines) > room:
            lines = [*lines[: room - 1], self._cut(family, size, lines[room - 1], width)]
        block = [(family, line, size, 0) for line in lines]
        left = height - len(lines) * size * PT * 1.2
        if note_face is not None and note_lines:
            room = min(2, int(left // (note_size * PT * 1.2)))
            if room > 0:
                shown = note_lines[:room]
                if len(note_lines) > room:
                    shown[-1] = self._cut(note_face[0], note_size, shown[-1], width)
                block += [(note_face[0], line, note_size, 80) for line in shown]
        return block

    def _face(self, text: str) -> tuple[str, str]:
        """The font for ``text`` and the text to set in it."""
        try:
            text.encode("latin-1")
            return LATIN, text
        except UnicodeEncodeError:
            pass
        if self._unicode is None:
            font = self._find_font()
            if font is not None:
                self.pdf.add_font(UNICODE, fname=font.path, collection_font_number=font.index)
            self._unicode = font is not None
        if not self._unicode:  # no font for it: the text as the URL has it
            return LATIN, "".join(ch if ord(ch) < 256 else quote(ch) for ch in text)
        return UNICODE, text

    def _width(self, family: str, size: float, text: str) -> float:
        key = (family, size, text)
        width = self._widths.get(key)
        if width is None:
            self.pdf.set_font(family, size=size)
            width = self._widths[key] = self.pdf.get_string_width(text)
        return width

    def _wrap(self, family: str, size: float, text: str, width: float) -> list[str]:
        """Break ``text`` into lines no wider than ``width``: after a slash in the last two thirds of the
        line (the prefix on a line of its own), else after another separator in its second half, else
        between any two characters (handles have no spaces)."""
        lines: list[str] = []
        line, used = "", 0.0
        for ch in text:
            w = self._width(family, size, ch)
            if line and used + w > width:
                cut = line.rfind("/") + 1
                if cut <= len(line) // 3:
                    cut = max(line.rfind(c) for c in BREAK_AFTER) + 1
                    if cut <= len(line) // 2:
                        cut = len(line)
                lines.append(line[:cut])
                line = line[cut:]
                used = sum(self._width(family, size, c) for c in line)
            line += ch
            used += w
        if line:
            lines.append(line)
        return lines

    def _cut(self, family: str, size: float, line: str, width: float) -> str:
        """``line`` shortened to end in "..." within ``width``."""
        room = width - self._width(family, size, "...")
        while line and sum(self._width(family, size, c) for c in line) > room:
            line = line[:-1]
        return line + "..."
