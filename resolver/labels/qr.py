"""QR codes of handles' public URLs, made with segno (ISO/IEC 18004).

Error correction level M (about 15 % of the code may be damaged or dirty and it still scans), exactly
M (segno is not allowed to raise it) so that a code of a given URL is always the same symbol, with the
standard quiet zone of 4 modules. Choosing the mask is most of the cost (about 4 ms for a typical
URL, pure Python): callers make codes off the event loop.
"""

from __future__ import annotations

import io

import segno

from registry.errors import InvalidRequest

__all__ = ["ERROR_LEVEL", "MAX_PNG_SIDE", "MAX_SCALE", "QUIET_ZONE", "make_qr", "png_bytes", "side", "svg_bytes"]

ERROR_LEVEL = "M"
QUIET_ZONE = 4  # modules of light border, as ISO/IEC 18004 asks
MAX_SCALE = 32  # pixels (SVG: user units) per module
MAX_PNG_SIDE = 4096  # pixels, quiet zone included


def make_qr(url: str) -> segno.QRCode:
    """The QR code of ``url``; InvalidRequest if it does not fit (version 40 at level M holds 2,331 bytes,
    which a long suffix of Chinese characters, each 9 bytes percent-encoded, can exceed)."""
    try:
        return segno.make_qr(url, error=ERROR_LEVEL, boost_error=False)
    except segno.DataOverflowError:
        raise InvalidRequest(
            f"the handle's URL ({len(url.encode())} bytes) is too long for a QR code at error correction level M"
        ) from None


def side(code: segno.QRCode, scale: int) -> int:
    """Width and height of the image in pixels (SVG: user units), quiet zone included."""
    return code.symbol_size(scale=scale, border=QUIET_ZONE)[0]


def svg_bytes(code: segno.QRCode, scale: int, title: str) -> bytes:
    """A standalone SVG document (one path), ``title`` as its accessible name."""
    out = io.BytesIO()
    code.save(out, kind="svg", scale=scale, border=QUIET_ZONE, title=title, encoding="utf-8")
    return out.getvalue()


def png_bytes(code: segno.QRCode, scale: int) -> bytes:
    """A 1-bit greyscale PNG of ``scale`` pixels a module; InvalidRequest beyond MAX_PNG_SIDE pixels."""
    pixels = side(code, scale)
    if pixels > MAX_PNG_SIDE:
        most = MAX_PNG_SIDE // side(code, 1)
        raise InvalidRequest(f"a PNG of this code at scale {scale} is {pixels} px wide; scale at most {most}")
    out = io.BytesIO()
    code.save(out, kind="png", scale=scale, border=QUIET_ZONE)
    return out.getvalue()
