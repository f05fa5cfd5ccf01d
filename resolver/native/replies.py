"""Pre-encoded resolution replies: what a request asks, and reply templates per record and query.

A resolution reply is a 20-byte envelope, a 24-byte header, a body and an empty credential. Only
some of it depends on the request as a whole:

- the envelope's versions (from the request's suggested version), session and request ids;
- the header's flags and recursion count (copied from the request) and its expiration (the clock);
- a request digest before the body, when the request set RD.

The rest depends on the record and on the request's body bytes (the handle as the client wrote it,
and the index and type filters) alone: native callers are anonymous here, so the read right is
always the public one. So:

- :class:`Query` is what a request body asks, parsed once (the handler keeps them by body bytes): the
  handle, its cache key, and the read policy's filter, or the error reply when the handle is invalid
  or outside this node's namespace;
- :class:`Template` is a reply with everything but the per-request fields encoded: the response
  code, the message length, and the body-length, body and credential bytes;
- :class:`Templates` keeps a record's templates, one per query seen for it, keyed by the record object
  the :class:`~resolver.resolve.Resolver` hands out (as
  :class:`~resolver.cache.decoded.DecodedRecords` is by packed bytes): a write stores new packed
  bytes, which decode to a new record object, so a stale template is never found; it ages out.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from registry.model import Record
from registry.read_policy import ValueFilter
from resolver.native.codec import HEADER_SIZE, OC_RESOLUTION

__all__ = ["RECORDS_MAX", "TEMPLATES_PER_RECORD", "TEMPLATE_BYTES_MAX", "Query", "Template", "Templates", "text_bytes"]

RECORDS_MAX = 20_000  # records whose templates are kept (oldest first out), as DecodedRecords
TEMPLATES_PER_RECORD = 32  # distinct queries kept per record (its entry starts afresh beyond)
TEMPLATE_BYTES_MAX = 32 * 1024 * 1024  # request and reply bytes held by all templates
_TEMPLATE_OVERHEAD = 200  # rough bookkeeping bytes of one template (objects, dict slot)

_U32 = struct.Struct(">I")
_TWO_U32 = struct.Struct(">II")
_NO_CREDENTIAL = b"\0\0\0\0"


def text_bytes(text: str) -> bytes:
    """A UTF8-String on the wire: 4-byte length, then the bytes."""
    raw = text.encode("utf-8")
    return _U32.pack(len(raw)) + raw


class Template:
    """A resolution reply without its per-request fields. ``seq_length``: the envelope's sequence
    number (0) and message length; ``codes``: the header's opcode and response code; ``tail``: the
    header's body length, the body and the empty credential. ``body`` is kept for replies that carry
    a request digest before it."""

    __slots__ = ("body", "code", "codes", "seq_length", "tail")

    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.body = body
        self.seq_length = _TWO_U32.pack(0, HEADER_SIZE + len(body) + len(_NO_CREDENTIAL))
        self.codes = _TWO_U32.pack(OC_RESOLUTION, code)
        self.tail = _U32.pack(len(body)) + body + _NO_CREDENTIAL


@dataclass(frozen=True, slots=True)
class Query:
    """What one resolution request body asks: ``key`` and ``prefix`` of the handle (its cache key, and
    the prefix its resolutions count under) and ``wanted``, the read policy's selection; or ``error``,
    the reply to a handle that is invalid or not in this node's namespace (answered without a lookup)."""

    body: bytes  # the request's body bytes: what its templates are kept by
    handle: str  # as the client wrote it (the reply repeats it)
    key: str = ""
    prefix: str = ""
    wanted: ValueFilter | None = None
    error: Template | None = None


class Templates:
    """The templates of at most ``size`` records, holding at most ``max_bytes`` of reply bodies; the
    oldest record first out. See the module's docstring."""

    def __init__(self, size: int = RECORDS_MAX, max_bytes: int = TEMPLATE_BYTES_MAX) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.built = 0  # templates made (memo misses)
        # id(record) -> [record, request body -> template, bytes of those templates]; the entry holds
        # the record, so its id is not reused meanwhile
        self._records: OrderedDict[int, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, record: Record, body: bytes) -> Template | None:
        entry = self._records.get(id(record))
        if entry is None or entry[0] is not record:
            return None
        return entry[1].get(body)  # type: ignore[no-any-return]

    def put(self, record: Record, body: bytes, template: Template) -> Template:
        self.built += 1
        size = len(body) + len(template.tail) + _TEMPLATE_OVERHEAD
        if size > self.max_bytes:
            return template  # not kept
        entry = self._records.get(id(record))
        if entry is None or entry[0] is not record:
            if entry is not None:  # a record gone, whose id was taken again
                self._drop(id(record))
            entry = self._records[id(record)] = [record, {}, 0]
        elif len(entry[1]) >= TEMPLATES_PER_RECORD:
            self.bytes -= entry[2]
            entry[1].clear()
            entry[2] = 0
        old = entry[1].get(body)
        if old is not None:
            self.bytes -= len(body) + len(old.tail) + _TEMPLATE_OVERHEAD
            entry[2] -= len(body) + len(old.tail) + _TEMPLATE_OVERHEAD
        entry[1][body] = template
        entry[2] += size
        self.bytes += size
        while len(self._records) > self.size or self.bytes > self.max_bytes:
            self._drop(next(iter(self._records)))
        return template

    def _drop(self, key: int) -> None:
        self.bytes -= self._records.pop(key)[2]

    def clear(self) -> None:
        self._records.clear()
        self.bytes = 0
