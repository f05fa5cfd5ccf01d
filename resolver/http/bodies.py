"""Request bodies and their ``Content-Encoding``: decoded here, within the body limits.

aiohttp's own decoding is switched off (``auto_decompress`` in resolver.http.app): a body that was not
what its Content-Encoding said reached the handlers as a 500 (or a ``text/plain`` 400 from the
parser), and which codings it decodes (br, zstd) depends on optional libraries being installed.
The rule here:

- no Content-Encoding, or ``identity``: the body as sent;
- ``gzip`` (``x-gzip``) and ``deflate`` (zlib, or raw deflate as some clients send it): decoded with
  the standard library, at most :data:`PIECE` bytes at a time, so a small compressed body that
  expands without end (a "zip bomb") is refused as too large as soon as the decoded bytes pass the
  route's limit (``max_body_bytes``, ``batch_max_bytes``); a stream that is not valid gzip/deflate
  or ends early is a 400 with a JSON body;
- anything else (``br``, ``zstd``, ``compress``, several codings): 415 with ``Accept-Encoding:
  gzip, deflate`` (RFC 9110 section 15.5.16).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from aiohttp import web

from registry.errors import InvalidRequest

__all__ = ["ACCEPTED_ENCODINGS", "PIECE", "BodyDecoder", "UnsupportedEncoding", "body_coding", "decode_body"]

ACCEPTED_ENCODINGS = "gzip, deflate"
PIECE = 64 * 1024  # the most one decompression step produces
_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class UnsupportedEncoding(InvalidRequest):
    """A Content-Encoding this node does not decode: answered 415 with ``Accept-Encoding``."""


def body_coding(request: web.Request) -> str | None:
    """``gzip``, ``deflate`` or None (identity) from the request's Content-Encoding."""
    raw = request.headers.get("Content-Encoding", "")
    name = raw.strip().lower()
    if name in ("", "identity"):
        return None
    coding = _CODINGS.get(name)
    if coding is None:
        shown = raw.strip()[:40].encode("ascii", "backslashreplace").decode("ascii")
        raise UnsupportedEncoding(
            f"Content-Encoding {shown!r} is not supported: send the body as it is, or with gzip or deflate"
        )
    return coding


class BodyDecoder:
    """Decodes a gzip or deflate body fed in chunks; each output piece is at most ``PIECE`` bytes,
    so the caller can stop (and count) long before an expanding body fills memory."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._inflater: zlib._Decompress | None = None

    def _refused(self, why: str = "") -> InvalidRequest:
        detail = f" ({why})" if why else ""
        return InvalidRequest(f"the body is not valid {self.coding} data{detail}; Content-Encoding was {self.coding}")

    def _start(self, first: bytes) -> zlib._Decompress:
        if self.coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # RFC 9110 says zlib format; raw deflate (no header) is common enough to accept, as browsers do.
        return zlib.decompressobj(zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            inflater = self._inflater
            if inflater is not None and inflater.eof:
                # gzip allows members one after another (and zero padding); nothing else may follow.
                if not data.strip(b"\x00"):
                    return
                if self.coding != "gzip":
                    raise self._refused("data after the end of the compressed stream")
            if inflater is None or inflater.eof:
                inflater = self._inflater = self._start(data)
            while True:
                try:
                    out = inflater.decompress(data, PIECE)
                except zlib.error:
                    raise self._refused() from None
                if out:
                    yield out
                if inflater.eof:
                    data = inflater.unused_data
                    break
                data = inflater.unconsumed_tail
                if not data and len(out) < PIECE:
                    return  # all input taken and no output pending: wait for the next chunk

    def close(self) -> None:
        """The body has ended: it must have ended the compressed stream too."""
        if self._inflater is not None and not self._inflater.eof:
            raise self._refused("it ends before the compressed stream does")


def decode_body(raw: bytes, coding: str | None, limit: int) -> bytes | None:
    """``raw`` decoded; None when the decoded body would pass ``limit`` bytes."""
    if coding is None:
        return raw
    decoder = BodyDecoder(coding)
    out: list[bytes] = []
    size = 0
    for piece in decoder.feed(raw):
        size += len(piece)
        if size > limit:
            return None
        out.append(piece)
    decoder.close()
    return b"".join(out)
