"""The font for label text outside Latin-1 (Chinese suffixes and field values).

Latin-1 text is set in the PDF's built-in Helvetica: nothing to embed, nothing to load. Other text
needs a font file, embedded as a subset of the glyphs used: ``label_font`` when set (``path`` or
``path#N`` for face N of a ``.ttc`` collection), else the font fontconfig picks for Simplified Chinese
(``fc-match :lang=zh-cn``; on Debian, ``fonts-noto-cjk``'s Noto Sans CJK SC), else Noto Sans CJK at
Debian's path. A candidate must hold the glyphs of 标识 (checked with fontTools). Found once per
process and setting; without one, such text is printed percent-encoded (as in the URL) and a warning
names the setting.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("idnode")

__all__ = ["FontFile", "unicode_font"]

DEBIAN_NOTO_CJK = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc#2"  # face 2: Simplified Chinese
PROBE = "标识"


@dataclass(frozen=True, slots=True)
class FontFile:
    path: str
    index: int = 0  # face in a collection

    @classmethod
    def parse(cls, text: str) -> FontFile:
        path, sep, index = text.rpartition("#")
        if sep and index.isascii() and index.isdigit():
            return cls(path, int(index))
        return cls(text)


def _covers(font: FontFile) -> bool:
    """Whether the file opens as a font and holds the probe's glyphs."""
    from fontTools.ttLib import TTFont  # fpdf2's own dependency; loaded only when a font is looked for

    try:
        with TTFont(font.path, fontNumber=font.index, lazy=True) as face:
            cmap = face.getBestCmap() or {}
    except Exception as exc:  # fontTools raises many kinds for a file that is no font
        log.debug("label font %s#%d unusable: %s", font.path, font.index, exc)
        return False
    return all(ord(ch) in cmap for ch in PROBE)


def _fontconfig_choice() -> FontFile | None:
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        out = subprocess.run(
            [fc_match, "--format=%{file}\n%{index}\n", ":lang=zh-cn"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    if not out[0]:
        return None
    index = out[1] if len(out) > 1 else "0"
    return FontFile(out[0], int(index) if index.isdigit() else 0)


@functools.lru_cache(maxsize=4)
def unicode_font(setting: str) -> FontFile | None:
    """The font for non-Latin-1 label text under the ``label_font`` setting (None: none found)."""
    if setting:
        candidates = [FontFile.parse(setting)]
    else:
        candidates = [c for c in (_fontconfig_choice(), FontFile.parse(DEBIAN_NOTO_CJK)) if c is not None]
    for candidate in candidates:
        if Path(candidate.path).is_file() and _covers(candidate):
            return candidate
    where = f"label_font {setting!r}" if setting else "fontconfig and " + DEBIAN_NOTO_CJK
    log.warning(
        "no font for Chinese label text (%s): such text is printed percent-encoded; "
        "install fonts-noto-cjk or set label_font",
        where,
    )
    return None
