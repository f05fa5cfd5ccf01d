"""Big-endian wire primitives of the Handle System formats: one reader, and the writers of blobs and strings.

Both binary layers read and write with these: the typed value data (:mod:`registry.valuedata`, RFC 3651
section 3.2) and the native protocol messages (``resolver.native.codec``, RFC 3652). All integers are
big-endian; a "blob" is a 4-byte length followed by that many bytes, a "string" a UTF-8 blob (RFC 3652
section 2.1.4, "UTF8-String").

Every failure raises the error its caller names: :class:`registry.errors.InvalidValue` for value data
(the default), the codec's ``CodecError`` for messages. Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from registry.errors import InvalidValue

__all__ = ["MAX_ARRAY", "ErrorFactory", "Reader", "blob", "utf8"]

MAX_ARRAY = 1_048_576  # HANDLE.NET Common.MAX_ARRAY_SIZE: the most items a count may announce

ErrorFactory = Callable[[str], Exception]


class Reader:
    """Bounds-checked reader over one buffer; every failure raises ``error(message)``, the message
    naming ``what`` is being read and where it went wrong."""

    __slots__ = ("buf", "error", "pos", "what")

    def __init__(self, buf: bytes, what: str, error: ErrorFactory = InvalidValue) -> None:
        self.buf = bytes(buf)
        self.pos = 0
        self.what = what
        self.error = error

    def take(self, n: int) -> bytes:
        left = len(self.buf) - self.pos
        if n > left:
            raise self.error(f"{self.what}: truncated at byte {self.pos} (needs {n} bytes, {left} left)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def blob(self) -> bytes:
        return self.take(self.u32())

    def text(self, name: str, limit: int | None = None) -> str:
        """A string; ``limit`` bounds its length in bytes."""
        raw = self.blob()
        if limit is not None and len(raw) > limit:
            raise self.error(f"{self.what}: {name} longer than {limit} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{self.what}: {name} is not valid UTF-8") from None

    def count(self, name: str, min_item: int, limit: int = MAX_ARRAY) -> int:
        """An item count: at most ``limit``, and no more items of ``min_item`` bytes than the bytes left hold."""
        n = self.u32()
        if n > limit or n * min_item > len(self.buf) - self.pos:
            raise self.error(f"{self.what}: {name} count {n} does not fit the data")
        return n

    def rest(self) -> int:
        return len(self.buf) - self.pos

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise self.error(f"{self.what}: {len(self.buf) - self.pos} unexpected bytes after the end")


def blob(data: bytes) -> bytes:
    """``data`` with its 4-byte length in front."""
    return struct.pack(">I", len(data)) + data


def utf8(text: str, what: str, error: ErrorFactory = InvalidValue) -> bytes:
    """``text`` as UTF-8 (a lone surrogate cannot be encoded: ``error`` names ``what``)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what}: not encodable as UTF-8 (lone surrogate?)") from None
