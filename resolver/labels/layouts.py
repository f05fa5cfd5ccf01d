"""Label sheet layouts: A4 sheets of pre-cut self-adhesive labels, as sold in China and Europe.

Sizes in millimetres. Each label holds the QR code (a square as tall as the label allows, quiet zone
included) on the left and the identifier's text on the right.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.errors import InvalidRequest

__all__ = ["DEFAULT_LAYOUT", "LAYOUTS", "Layout", "layout_named"]

A4 = (210.0, 297.0)


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    columns: int
    rows: int
    width: float  # one label
    height: float
    left: float  # page edge to the first column
    top: float  # page edge to the first row
    gap_x: float = 0.0  # between columns
    gap_y: float = 0.0  # between rows
    padding: float = 2.0  # label edge to the code and the text
    font_sizes: tuple[float, ...] = (9.0, 8.0, 7.0, 6.0)  # points, largest that fits first

    @property
    def per_page(self) -> int:
        return self.columns * self.rows

    def origin(self, slot: int) -> tuple[float, float]:
        """Top-left corner of label ``slot`` (0 … per_page-1, row by row)."""
        row, column = divmod(slot, self.columns)
        return self.left + column * (self.width + self.gap_x), self.top + row * (self.height + self.gap_y)


LAYOUTS = {
    layout.name: layout
    for layout in (
        # 24 a sheet, edge to edge: the commonest A4 label sheet (A4 24 格; Avery 3474, Herma 4453).
        Layout("a4-3x8", 3, 8, 70.0, 37.0, left=0.0, top=0.5),
        # 21 a sheet, edge to edge (Avery 3652, Herma 4620).
        Layout("a4-3x7", 3, 7, 70.0, 42.3, left=0.0, top=0.45),
        # 14 a sheet with margins (Avery L7163).
        Layout("a4-2x7", 2, 7, 99.1, 38.1, left=4.65, top=15.15, gap_x=2.5),
        # 40 a sheet of small labels (Avery 3657).
        Layout("a4-4x10", 4, 10, 48.5, 25.4, left=8.0, top=21.5, padding=1.5, font_sizes=(7.0, 6.0, 5.0)),
    )
}
DEFAULT_LAYOUT = "a4-3x8"


def layout_named(name: str | None) -> Layout:
    if name is None or name == "":
        return LAYOUTS[DEFAULT_LAYOUT]
    layout = LAYOUTS.get(name.strip().lower())
    if layout is None:
        raise InvalidRequest(f"layout must be one of {', '.join(LAYOUTS)}")
    return layout
