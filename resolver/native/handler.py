"""Answers native Handle protocol requests (RFC 3652) from the node's read path.

One :class:`NativeHandler` serves the UDP and the TCP listeners: they hand it a request's envelope
and message bytes (``respond``) and send back the bytes it returns. Resolution goes through the same
:class:`~resolver.resolve.Resolver` (cache tiers, then the store) as ``GET /api/handles/…``, with the
same responsibility check and the same read policy (:mod:`registry.read_policy`: type and index
filters, then the values an anonymous caller may read).

Replies follow HANDLE.NET's ``HandleServer``:

- opcode 1 (resolution): the values, or an error response with HANDLE_NOT_FOUND (100), VALUES_NOT_FOUND
  (200: the index/type filters match nothing, or no value is publicly readable), SERVER_NOT_RESP (301:
  not in this node's namespace, answered before any cache or store is touched), INVALID_HANDLE (102),
  SERVER_TOO_BUSY (3: the store is unavailable and nothing is cached) or ERROR (2).
  Native requests are anonymous here (no challenge-response, no sessions): what is sent is what
  :mod:`registry.read_policy` serves an anonymous caller (values with PUBLIC_READ), whether or not
  the request set the PO flag.
  A handle without a slash names a prefix: ``88.118.8`` is resolved as ``0.NA/88.118.8``.
- opcode 2 (get-site-info): the node's HS_SITE data.
- anything else: OPERATION_NOT_SUPPORTED (5); opcode 0: PROTOCOL_ERROR (4). A message that does not
  decode gets PROTOCOL_ERROR; a response (not a request) gets nothing.

Every reply echoes the request and session ids, is written in the lower of the client's suggested
version and ours, and carries the request digest when the request set RD (SHA-256 for protocol 2.7
and later, SHA-1 before, as HANDLE.NET's ``AbstractResponse.takeDigestOfRequest``).

Two paths produce the same bytes. The general one decodes with :mod:`resolver.native.codec` and
builds :class:`~resolver.native.codec.Message` replies. The fast one covers the hot case, a plain
resolution request (no credential, not encrypted), reading the wire layout directly and answering
from reply templates (:mod:`resolver.native.replies`: per record object and request body, with the
ids, versions, flags, recursion count and expiration patched in); anything it does not recognise
goes the general way. The tests hold the two to identical output. ``respond_now`` is the fast path
without waiting: the listeners call it in their receive callback and only start a task (``respond``)
when it cannot answer there, i.e. when the record is not in the process's own cache tier.
``respond_ready`` comes before it: a success ``respond_now`` made from the local tier (without a
request digest) is kept whole, keyed by the request's bytes but its ids and expiration, and served
again with the new request's ids while the local tier holds the very packed bytes it was made from
(``TieredCache.local_hit``), its expiration remade once a second; so a repeated request costs one
dictionary lookup, the tier's check, the counts and a join (held byte-identical by the tests too).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from time import perf_counter

from registry.errors import (
    RC_ERROR,
    RC_HANDLE_NOT_FOUND,
    RC_INVALID_HANDLE,
    RC_OPERATION_NOT_SUPPORTED,
    RC_PROTOCOL_ERROR,
    RC_RESERVED,
    RC_SERVER_NOT_RESP,
    RC_SERVER_TOO_BUSY,
    RC_SUCCESS,
    RC_VALUES_NOT_FOUND,
    HandleError,
    InvalidHandle,
    InvalidValue,
    StoreUnavailable,
)
from registry.model import HandleName, HandleValue, Record
from registry.read_policy import ALL_PUBLIC, ValueFilter
from registry.service import Registry
from registry.valuedata import decode_site
from resolver.native.codec import (
    ENVELOPE_SIZE,
    HASH_MD5,
    HASH_SHA1,
    HASH_SHA256,
    HEADER_SIZE,
    MAX_HANDLE_LENGTH,
    MAX_MESSAGE,
    OC_GET_SITE_INFO,
    OC_RESOLUTION,
    PROTOCOL_VERSION,
    Body,
    CodecError,
    Envelope,
    ErrorResponse,
    GetSiteInfoResponse,
    Header,
    Message,
    OpFlag,
    ResolutionRequest,
    ResolutionResponse,
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_payload,
    encode_value,
    reply_to,
)
from resolver.native.replies import Query, Template, Templates, text_bytes
from resolver.ops.native_meter import NATIVE
from resolver.ops.resolutions import ResolutionCounter
from resolver.resolve import MISS, Resolver

__all__ = ["MESSAGE_TTL", "NativeHandler", "NativeStats", "header_is_response", "peek_request"]

log = logging.getLogger("idnode.native")

MESSAGE_TTL = 43_200  # HANDLE.NET AbstractMessage: a message expires twelve hours after it is made
_NA_PREFIX = "0.NA/"
_MSG_NOT_HOMED = "That prefix doesn't live here"  # HANDLE.NET HandleServer.MSG_NA_NOT_HOMED_HERE
_MSG_NOT_SUPPORTED = "this node answers resolution and get-site-info only; use the HTTP API for the rest"
_MSG_INTERNAL = "Internal Error"
_MSG_UNENCODABLE = "the response cannot be encoded as a Handle protocol message (too large?); use the HTTP API"

_ENVELOPE_IDS = struct.Struct(">BBBBII")
_HEADER = struct.Struct(">IIIHBBII")  # opcode, rc, flags, site serial, recursion, reserved, expiration, body length
_HEADER_CODES = struct.Struct(">II")
_TWO_U32 = _HEADER_CODES
_FLAGS_SERIAL_RECURSION = struct.Struct(">IHB")  # header bytes 8..15 (the reserved byte after them)
_RESOLUTION_REQUEST = _HEADER_CODES.pack(OC_RESOLUTION, RC_RESERVED)  # a request's first header bytes
_U32 = struct.Struct(">I")
_ENV_CP_EC = 0xC0  # compressed / encrypted envelope flags: never on the fast path
_AT = int(OpFlag.AT)
_RD = int(OpFlag.RD)
_REC = int(OpFlag.REC)
_REPLY_COPIED = int(OpFlag.AT | OpFlag.CT | OpFlag.ENC | OpFlag.CA | OpFlag.PO | OpFlag.RD | OpFlag.DNRF)
_DIGEST_NAMES = {HASH_MD5: "md5", HASH_SHA1: "sha1", HASH_SHA256: "sha256"}
_NO_CREDENTIAL = b"\0\0\0\0"
_FAST_MAX_FILTERS = 64  # requests with more indexes or types take the general path
_NAME_CACHE_MAX = 65_536
QUERY_CACHE_MAX = 32_768  # request bodies remembered (cleared whole when full: client handles vary)
QUERY_BODY_MAX = 512  # bytes of a request body remembered (a handle and a few filters)
_FLAGS_CACHE_MAX = 4096  # distinct request flags / envelope versions remembered (cleared whole when full)

_Flags = tuple[bytes, bool, bool]  # the reply's header bytes 8..16, digest wanted (RD), authoritative (AT)
_Version = tuple[bytes, bytes, str]  # the reply envelope's bytes 0..4, digest algorithm byte and name
_VALUE_CACHE_MAX = 16_384
_VALUE_CACHE_BYTES = 16 * 1024 * 1024
READY_MAX = 16_384  # requests whose whole reply is kept ready (cleared whole when full)
READY_BYTES_MAX = 16 * 1024 * 1024  # request keys and replies kept ready (cleared whole beyond)
READY_REPLY_MAX = 1_024  # bytes of a reply kept ready (larger ones take respond_now)
_READY_OVERHEAD = 300  # rough bookkeeping bytes of one ready reply (object, dict slot)


class _Ready:
    """A whole reply to one request but its ids (envelope bytes 4..12): ``head`` its envelope's
    versions, ``rest`` everything after the ids, with the expiration of ``second`` in it. Valid while
    the local cache tier still holds ``packed`` under ``key`` (``hit``: ``TieredCache.local_hit``)."""

    __slots__ = ("head", "hit", "key", "packed", "prefix", "rest", "second")

    def __init__(
        self, head: bytes, rest: bytes, second: int, key: str, packed: bytes, prefix: str, hit: Callable[..., bool]
    ) -> None:
        self.head, self.rest, self.second = head, rest, second
        self.key, self.packed, self.prefix, self.hit = key, packed, prefix, hit


@dataclass(slots=True)
class NativeStats:
    """Counters of one handler (shared by its listeners); plain ints, read by tests and metrics."""

    answered: int = 0  # requests answered but from ready replies (``requests`` counts all)
    fast_built: int = 0  # of which on the fast path
    errors: int = 0  # error replies to decoded requests (any response code but success)
    malformed: int = 0  # messages that could not be decoded (answered with PROTOCOL_ERROR when possible)
    dropped: int = 0  # datagrams / frames dropped without a reply
    internal: int = 0  # unexpected exceptions (answered with ERROR)
    truncated: int = 0  # UDP replies cut to a truncated ERROR (too large, or over the address's budget)
    immediate_built: int = 0  # of the fast ones, answered in the listener's callback but from ready replies
    ready: int = 0  # repeated requests answered from their ready replies (fast, at once)
    evicted: int = 0  # TCP connections closed to admit a new one (a connection cap was reached)
    idle_closed: int = 0  # TCP connections closed for going without a complete request too long

    # A ready reply counts once (``ready``): the totals add it up when read.
    @property
    def requests(self) -> int:
        """Decoded requests answered."""
        return self.answered + self.ready

    @property
    def fast(self) -> int:
        """Of which on the fast path."""
        return self.fast_built + self.ready

    @property
    def immediate(self) -> int:
        """Of the fast ones, answered in the listener's callback (no task: a cache hit)."""
        return self.immediate_built + self.ready


@lru_cache(maxsize=1024)
def _value_filter(types: tuple[str, ...], indexes: tuple[int, ...]) -> ValueFilter:
    """The read policy's filter for a request's types and indexes (apps repeat the same few)."""
    return ValueFilter(types, frozenset(indexes))


def _digest_algorithm(version: tuple[int, int]) -> int:
    if version >= (2, 7):
        return HASH_SHA256
    if version >= (2, 1):
        return HASH_SHA1
    return HASH_MD5  # HANDLE.NET's pre-2.1 "old format" digest is MD5 (without the algorithm byte)


def _error_text(message: str) -> bytes | None:
    """An error reply's body, or None when the message cannot be encoded (lone surrogates)."""
    try:
        return text_bytes(message)
    except UnicodeEncodeError:
        return None


_NOT_FOUND = Template(RC_HANDLE_NOT_FOUND, text_bytes(""))
_VALUES_NOT_FOUND = Template(RC_VALUES_NOT_FOUND, text_bytes(""))
_INTERNAL = Template(RC_ERROR, text_bytes(_MSG_INTERNAL))
_UNENCODABLE = Template(RC_ERROR, text_bytes(_MSG_UNENCODABLE))
_STORE_UNAVAILABLE = Template(RC_SERVER_TOO_BUSY, text_bytes("store unavailable"))


def peek_request(raw: bytes) -> tuple[Envelope, int, bool] | None:
    """Read what an error reply needs from the start of a message that does not decode: the envelope
    ids and versions, the opcode (0 when the header is cut short) and whether the header marks it as
    a response (never answered, so two nodes cannot bounce errors at each other).

    Returns None when fewer than 20 bytes are there (no request id to answer to). Never raises."""
    if len(raw) < ENVELOPE_SIZE:
        return None
    major, minor, flags, suggest_minor, session, request = _ENVELOPE_IDS.unpack_from(raw)
    env = Envelope(
        major, minor, suggest_major=flags & 0x03, suggest_minor=suggest_minor, session_id=session, request_id=request
    )
    opcode, rc = 0, RC_RESERVED
    if len(raw) >= ENVELOPE_SIZE + 8:
        opcode, rc = _HEADER_CODES.unpack_from(raw, ENVELOPE_SIZE)
    return env, opcode, rc != RC_RESERVED


def header_is_response(payload: bytes) -> bool:
    """Does this message's header mark it as a response (which a server never answers)?"""
    return len(payload) >= 8 and _HEADER_CODES.unpack_from(payload)[1] != RC_RESERVED


def _plain_resolution(envelope: bytes, payload: bytes) -> int | None:
    """The fast path's header check: where the body of a plain resolution request ends (opcode 1,
    no credential, not encrypted or compressed, the body length consistent), or None for anything
    else (the general path decides what it is)."""
    size = len(payload)
    if size < HEADER_SIZE + 12 or not payload.startswith(_RESOLUTION_REQUEST) or envelope[2] & _ENV_CP_EC:
        return None
    end = HEADER_SIZE + _U32.unpack_from(payload, 20)[0]
    if end == size or (end + 4 == size and payload.endswith(_NO_CREDENTIAL)):
        return end
    return None


def _parse_body(payload: bytes, end: int) -> tuple[str, tuple[int, ...], tuple[str, ...]] | None:
    """The fast path's reader of a resolution request body (handle, indexes, types), or None when it
    is not well formed (or has more filters than the fast path takes)."""
    unpack = _U32.unpack_from
    length = unpack(payload, HEADER_SIZE)[0]
    pos = HEADER_SIZE + 4
    if length > MAX_HANDLE_LENGTH or pos + length + 8 > end:
        return None
    try:
        handle = payload[pos : pos + length].decode("utf-8")
    except UnicodeDecodeError:
        return None
    pos += length
    count = unpack(payload, pos)[0]
    pos += 4
    indexes: tuple[int, ...] = ()
    if count:
        if count > _FAST_MAX_FILTERS or pos + 4 * count + 4 > end:
            return None
        indexes = struct.unpack_from(f">{count}I", payload, pos)
        pos += 4 * count
    count = unpack(payload, pos)[0]
    pos += 4
    types: tuple[str, ...] = ()
    if count:
        if count > _FAST_MAX_FILTERS:
            return None
        found = []
        for _ in range(count):
            if pos + 4 > end:
                return None
            length = unpack(payload, pos)[0]
            pos += 4
            if length > MAX_HANDLE_LENGTH or pos + length > end:
                return None
            try:
                found.append(payload[pos : pos + length].decode("utf-8"))
            except UnicodeDecodeError:
                return None
            pos += length
        types = tuple(found)
    if pos != end:
        return None
    return handle, indexes, types


class NativeHandler:
    """Turns requests into replies. ``respond``, ``handle`` and ``encode`` never raise: whatever goes
    wrong becomes an error reply (ERROR for failures of our own, PROTOCOL_ERROR for bad input)."""

    def __init__(
        self,
        resolver: Resolver,
        registry: Registry,
        site_data: bytes,
        *,
        clock: Callable[[], float] = time.time,
        version: tuple[int, int] = PROTOCOL_VERSION,
        fast_path: bool = True,
    ) -> None:
        self.resolver = resolver
        self.registry = registry
        self.clock = clock
        self.version = version
        self.fast_path = fast_path
        self.stats = NativeStats()
        self.resolutions = ResolutionCounter()  # the app's lifecycle gives it the node's counter
        self._flags: dict[bytes, _Flags] = {}  # request header bytes 8..16 -> the reply's
        self._versions: dict[bytes, _Version] = {}  # request envelope bytes 0..4 -> the reply's
        self._expires_for, self._expires = -1, b""  # the second the expiration bytes were made for
        self._ready: dict[bytes, _Ready] = {}  # request bytes but ids and expiration -> its reply
        self._ready_bytes = 0
        self.set_site(site_data)
        self._names: dict[str, tuple[HandleName | None, str]] = {}  # text -> (name, error or "" or not-homed)
        self._values: dict[HandleValue, bytes] = {}
        self._values_bytes = 0
        self._queries: dict[bytes, Query] = {}  # request body bytes -> what it asks
        self.templates = Templates()  # replies per record and request body

    def set_site(self, site_data: bytes) -> None:
        """The HS_SITE data get-site-info answers with (and whose serial replies carry)."""
        self._site = GetSiteInfoResponse(bytes(site_data))
        try:
            self.site_serial = decode_site(site_data).serial & 0xFFFF
        except InvalidValue:
            self.site_serial = 0
        self._flags.clear()  # they carry the serial
        self._ready.clear()

    # -- the listeners' entry points ----------------------------------------------------------------
    async def respond(self, envelope: bytes, payload: bytes) -> bytes | None:
        """The whole reply (envelope and message) to the message ``payload`` that followed the 20
        ``envelope`` bytes, or None when it gets no reply (it is a response, not a request)."""
        started = perf_counter()
        end = _plain_resolution(envelope, payload) if self.fast_path else None
        if end is not None:
            query = self._query(payload, end)
            if query is not None:
                return await self._respond_fast(envelope, payload, end, query, started)
        if header_is_response(payload):
            self.stats.dropped += 1
            return None
        try:
            message = decode_payload(decode_envelope(envelope), payload)
        except CodecError as exc:
            log.debug("native: malformed message: %s", exc)
            opcode = _HEADER_CODES.unpack_from(payload)[0] if len(payload) >= 8 else 0
            env = peek_request(envelope)
            assert env is not None
            return self._counted(self.wire(self.protocol_error(env[0], opcode, str(exc))), started)
        return self._counted(self.wire(await self.handle(message)), started)

    def refuse(self, raw: bytes, reason: str) -> bytes | None:
        """The PROTOCOL_ERROR reply to a message that cannot even be framed (``raw``: its first bytes),
        or None when no request id can be read or it is a response."""
        started = perf_counter()
        peeked = peek_request(raw)
        if peeked is None or peeked[2]:
            self.stats.dropped += 1
            return None
        return self._counted(self.wire(self.protocol_error(peeked[0], peeked[1], reason)), started)

    @staticmethod
    def _counted(wire: bytes, started: float) -> bytes:
        """``wire``, counted in the native metrics by its opcode and responseCode (as sent)."""
        opcode, code = _HEADER_CODES.unpack_from(wire, ENVELOPE_SIZE)
        NATIVE.answered(opcode, code, perf_counter() - started)
        return wire

    # -- replies as messages (the general path) -----------------------------------------------------
    def _expiration(self) -> int:
        return (int(self.clock()) + MESSAGE_TTL) & 0xFFFFFFFF

    def reply(self, request: Message, body: Body, response_code: int = RC_SUCCESS) -> Message:
        """The reply to ``request`` (ids, version, flags and digest as HANDLE.NET sets them)."""
        version = min(request.envelope.suggested_version, self.version)
        return reply_to(
            request,
            body,
            expiration=self._expiration(),
            response_code=response_code,
            site_serial=self.site_serial,
            digest_algorithm=_digest_algorithm(version),
            version=self.version,
        )

    def error(self, request: Message, code: int, message: str = "") -> Message:
        self.stats.errors += 1
        return self.reply(request, ErrorResponse(message), code)

    def protocol_error(self, envelope: Envelope, opcode: int, message: str) -> Message:
        """A PROTOCOL_ERROR reply for a message that did not decode (no flags, no digest)."""
        self.stats.malformed += 1
        request = Message(envelope, Header(opcode & 0xFFFFFFFF), ErrorResponse())
        return self.reply(request, ErrorResponse(message[:200]), RC_PROTOCOL_ERROR)

    def encode(self, reply: Message) -> bytes:
        """The reply's message bytes (without the envelope); one over the size limit becomes ERROR."""
        try:
            return encode_payload(reply)
        except CodecError as exc:
            log.debug("native: cannot encode the reply to request %d: %s", reply.envelope.request_id, exc)
            self.stats.internal += 1
            header = replace(reply.header, response_code=RC_ERROR)
            return encode_payload(replace(reply, header=header, body=ErrorResponse(_MSG_UNENCODABLE)))

    def wire(self, reply: Message) -> bytes:
        """Envelope and message bytes of ``reply``."""
        payload = self.encode(reply)
        return encode_envelope(replace(reply.envelope, length=len(payload))) + payload

    async def handle(self, request: Message) -> Message:
        """The reply to one decoded request."""
        self.stats.answered += 1
        try:
            opcode = request.header.opcode
            if opcode == OC_RESOLUTION and isinstance(request.body, ResolutionRequest):
                body = request.body
                code, text, values = await self._resolve(
                    body.handle, body.indexes, body.types, bool(request.header.op_flags & _AT)
                )
                if values is None:
                    return self.error(request, code, text)
                return self.reply(request, ResolutionResponse(body.handle, values))
            if opcode == OC_GET_SITE_INFO:
                return self.reply(request, self._site)
            if opcode == 0:
                return self.error(request, RC_PROTOCOL_ERROR, "Unknown opCode in message: 0")
            return self.error(request, RC_OPERATION_NOT_SUPPORTED, _MSG_NOT_SUPPORTED)
        except Exception as exc:  # never let one request take a listener down
            self.stats.internal += 1
            log.debug("native: error answering request %d: %r", request.envelope.request_id, exc)
            return self.error(request, RC_ERROR, _MSG_INTERNAL)

    # -- resolution (both paths) --------------------------------------------------------------------
    def _name(self, text: str) -> tuple[HandleName | None, str]:
        """(parsed name, "") / (None, why it is invalid) / (name, _MSG_NOT_HOMED); memoised (pure)."""
        hit = self._names.get(text)
        if hit is not None:
            return hit
        try:
            name = self.registry.parse(text if "/" in text else _NA_PREFIX + text)
        except InvalidHandle as exc:
            entry: tuple[HandleName | None, str] = (None, exc.message)
        else:
            entry = (name, "" if self.registry.is_responsible(name) else _MSG_NOT_HOMED)
        if len(self._names) >= _NAME_CACHE_MAX:
            self._names.clear()
        self._names[text] = entry
        return entry

    async def _resolve(
        self, handle: str, indexes: tuple[int, ...], types: tuple[str, ...], authoritative: bool
    ) -> tuple[int, str, tuple[HandleValue, ...] | None]:
        """(RC_SUCCESS, "", public values) or (error code, message, None)."""
        name, problem = self._name(handle)
        if name is None:
            return RC_INVALID_HANDLE, problem, None
        if problem:
            return RC_SERVER_NOT_RESP, problem, None
        try:
            record = await self.resolver.lookup(name.key, authoritative=authoritative)
        except StoreUnavailable:
            return RC_SERVER_TOO_BUSY, "store unavailable", None
        except HandleError as exc:
            return (exc.code if exc.code not in (RC_RESERVED, RC_SUCCESS) else RC_ERROR), exc.message, None
        self.resolutions.count(name.prefix, "native", record is not None)
        if record is None:
            return RC_HANDLE_NOT_FOUND, "", None
        # Native callers are anonymous (no challenge-response here): never a private reader.
        wanted = _value_filter(types, indexes) if indexes or types else ALL_PUBLIC
        values = self.resolver.served(record, request=wanted)
        if not values:
            return RC_VALUES_NOT_FOUND, "", None
        return RC_SUCCESS, "", values

    # -- the fast path ------------------------------------------------------------------------------
    def respond_ready(self, data: bytes) -> bytes | None:
        """The reply to the whole request ``data`` (envelope and message) when it repeats one that was
        answered from the local cache tier before, else None (then ``respond_now``): one dictionary
        lookup by the request's bytes without its ids and expiration (envelope bytes 0..4 and 12..20,
        header bytes 0..16, then the body length, body and credential), and the check
        that the local tier still holds the very packed record the reply was made from (a write, an
        expiry, an eviction or the worker hub's stale flag all fail it). Counted as ``respond_now``
        counts (resolution statistics, the local hit, the native metrics). The bytes are those
        ``respond`` would send."""
        started = perf_counter()
        ready = self._ready.get(data[:4] + data[12:36] + data[40:])
        if ready is None or not ready.hit(ready.key, ready.packed):
            return None
        now = int(self.clock())
        if now != ready.second:
            if now != self._expires_for:
                self._expires_for, self._expires = now, _U32.pack((now + MESSAGE_TTL) & 0xFFFFFFFF)
            rest = ready.rest
            ready.rest, ready.second = rest[:24] + self._expires + rest[28:], now
        self.resolutions.count(ready.prefix, "native", True)
        self.stats.ready += 1
        wire = b"".join((ready.head, data[4:12], ready.rest))
        seconds = perf_counter() - started
        meter = NATIVE
        if seconds <= meter.first_bound and meter.ready_replies:  # the common case, inline (its timer is set)
            meter.ready_replies += 1
            meter.ready_first += 1
            meter.ready_seconds += seconds
        else:
            meter.ready(seconds)
        return wire

    def _keep_ready(self, envelope: bytes, payload: bytes, key: str, packed: bytes, prefix: str, wire: bytes) -> None:
        """Keep ``wire``, the reply to a request answered from the local tier's ``packed``, ready for
        ``respond_ready`` (only replies with no request digest: the caller checks)."""
        hit = getattr(self.resolver.cache, "local_hit", None)
        if (
            hit is None
            or len(wire) > READY_REPLY_MAX
            or len(payload) > QUERY_BODY_MAX + HEADER_SIZE
            or envelope[12:16] != b"\0\0\0\0"  # a sequence number (TCP takes any): a UDP fragment's
        ):
            return
        request = envelope[:4] + envelope[12:] + payload[:16] + payload[20:]
        size = len(request) + len(wire) + _READY_OVERHEAD
        if len(self._ready) >= READY_MAX or self._ready_bytes + size > READY_BYTES_MAX:
            self._ready.clear()
            self._ready_bytes = 0
        old = self._ready.get(request)
        if old is not None:
            self._ready_bytes -= len(request) + len(old.rest) + 12 + _READY_OVERHEAD
        self._ready[request] = _Ready(wire[:4], wire[12:], self._expires_for, key, packed, prefix, hit)
        self._ready_bytes += size

    def respond_now(self, envelope: bytes, payload: bytes) -> bytes | None:
        """The reply to a request that can be answered without waiting for anything, else None (then
        ``respond``): a plain resolution request (not authoritative) whose handle is invalid, not in
        this node's namespace, or in the process's own cache tier. The listeners call it in their
        receive callback, so a cache hit costs no task. The bytes are those ``respond`` would send."""
        started = perf_counter()
        end = _plain_resolution(envelope, payload) if self.fast_path else None
        if end is None:
            return None
        flags = self._flags.get(payload[8:16]) or self._request_flags(payload)
        if flags[2]:  # authoritative: past the caches
            return None
        query = self._queries.get(payload[HEADER_SIZE:end]) or self._query(payload, end)
        if query is None:
            return None
        template = query.error
        packed = None
        if template is None:
            cache = self.resolver.cache
            if cache is None:
                return None
            try:
                packed = cache.cached(query.key)
                if packed is MISS:
                    return None
                record = None if packed is None else self.resolver.decode(packed)  # type: ignore[arg-type]
            except Exception:  # cached bytes that do not unpack: respond() answers as it always does
                return None
            if record is None:
                NATIVE.local_negative += 1  # idnode_cache_requests_total, counted in bulk
            else:
                NATIVE.local_hits += 1
            template = self._outcome(query, record)
        self.stats.immediate_built += 1
        wire = self._reply(envelope, payload, end, flags, template, started)
        if packed is not None and template.code == RC_SUCCESS and not flags[1]:
            self._keep_ready(envelope, payload, query.key, packed, query.prefix, wire)  # type: ignore[arg-type]
        return wire

    async def _respond_fast(self, envelope: bytes, payload: bytes, end: int, query: Query, started: float) -> bytes:
        flags = self._flags.get(payload[8:16]) or self._request_flags(payload)
        template = query.error
        if template is None:
            try:
                record = await self.resolver.lookup(query.key, authoritative=flags[2])
            except StoreUnavailable:
                template = _STORE_UNAVAILABLE
            except HandleError as exc:
                code = exc.code if exc.code not in (RC_RESERVED, RC_SUCCESS) else RC_ERROR
                body = _error_text(exc.message)
                template = Template(code, body) if body is not None else self._internal()
            except Exception as exc:
                log.debug("native: error answering a resolution of %r: %r", query.handle, exc)
                template = self._internal()
            else:
                template = self._outcome(query, record)
        return self._reply(envelope, payload, end, flags, template, started)

    def _internal(self) -> Template:
        self.stats.internal += 1
        return _INTERNAL

    def _request_flags(self, payload: bytes) -> _Flags:
        """The reply's header bytes 8..16 for a request's (its op flags, with the site serial and the
        recursion count), whether to digest the request, whether it is authoritative; memoised."""
        key = payload[8:16]
        flags, _serial, recursion = _FLAGS_SERIAL_RECURSION.unpack(key[:7])
        entry = (
            _FLAGS_SERIAL_RECURSION.pack((flags & _REPLY_COPIED) | _REC, self.site_serial, recursion) + b"\0",
            bool(flags & _RD),
            bool(flags & _AT),
        )
        if len(self._flags) >= _FLAGS_CACHE_MAX:
            self._flags.clear()
        self._flags[key] = entry
        return entry

    def _query(self, payload: bytes, end: int) -> Query | None:
        """What the request body ``payload[24:end]`` asks (memoised by those bytes), or None when the
        fast path does not read it."""
        body = payload[HEADER_SIZE:end]
        query = self._queries.get(body)
        if query is not None:
            return query
        parsed = _parse_body(payload, end)
        if parsed is None:
            return None
        handle, indexes, types = parsed
        name, problem = self._name(handle)
        if name is None or problem:
            error = _error_text(problem)
            if error is None:  # the general path answers it
                return None
            query = Query(
                body, handle, error=Template(RC_INVALID_HANDLE if name is None else RC_SERVER_NOT_RESP, error)
            )
        else:
            wanted = _value_filter(types, indexes) if indexes or types else ALL_PUBLIC
            query = Query(body, handle, name.key, name.prefix, wanted)
        if len(body) <= QUERY_BODY_MAX:  # (a larger one is read again each time: memory stays bounded)
            if len(self._queries) >= QUERY_CACHE_MAX:
                self._queries.clear()
            self._queries[body] = query
        return query

    def _outcome(self, query: Query, record: Record | None) -> Template:
        """The reply to ``query`` when the lookup found ``record`` (None: no such handle), counted in
        the resolution statistics; from ``templates`` when it was made before."""
        self.resolutions.count(query.prefix, "native", record is not None)
        if record is None:
            return _NOT_FOUND
        template = self.templates.get(record, query.body)
        if template is not None:
            return template
        try:
            # Native callers are anonymous (no challenge-response here): never a private reader.
            values = self.resolver.served(record, request=query.wanted or ALL_PUBLIC)
            if not values:
                return self.templates.put(record, query.body, _VALUES_NOT_FOUND)
            body = self._resolution_body(query.handle, values)
            if HEADER_SIZE + len(body) + 4 > MAX_MESSAGE:
                raise CodecError(f"a {len(body)}-byte body exceeds the message limit")
        except CodecError as exc:  # a value that cannot be encoded
            log.debug("native: cannot encode the values of %r: %s", query.handle, exc)
            self.stats.internal += 1
            return _UNENCODABLE
        except Exception as exc:
            log.debug("native: error answering a resolution of %r: %r", query.handle, exc)
            return self._internal()
        return self.templates.put(record, query.body, Template(RC_SUCCESS, body))

    def _resolution_body(self, handle: str, values: tuple[HandleValue, ...]) -> bytes:
        return b"".join([text_bytes(handle), _U32.pack(len(values)), *[self._value_bytes(v) for v in values]])

    def _value_bytes(self, value: HandleValue) -> bytes:
        encoded = self._values.get(value)
        if encoded is None:
            encoded = encode_value(value)
            if len(self._values) >= _VALUE_CACHE_MAX or self._values_bytes > _VALUE_CACHE_BYTES:
                self._values.clear()
                self._values_bytes = 0
            self._values[value] = encoded
            self._values_bytes += len(encoded) + len(value.data)
        return encoded

    def _reply(
        self, envelope: bytes, payload: bytes, end: int, flags: _Flags, template: Template, started: float
    ) -> bytes:
        """The whole reply: ``template`` under the request's ids, version, flags and recursion count,
        the expiration, and the request digest when asked for, as ``reply_to`` and the codec write it."""
        stats = self.stats
        stats.answered += 1
        stats.fast_built += 1
        version = self._versions.get(envelope[:4]) or self._version(envelope)
        now = int(self.clock())
        if now != self._expires_for:
            self._expires_for, self._expires = now, _U32.pack((now + MESSAGE_TTL) & 0xFFFFFFFF)
        if flags[1]:  # RD: the request's digest goes before the body
            digest = version[1] + hashlib.new(version[2], payload[:end]).digest()
            if HEADER_SIZE + len(digest) + len(template.body) + 4 > MAX_MESSAGE:
                stats.internal += 1
                template = _UNENCODABLE
            body = digest + template.body
            seq_length = _TWO_U32.pack(0, HEADER_SIZE + len(body) + 4)
            tail = _U32.pack(len(body)) + body + _NO_CREDENTIAL
        else:
            seq_length, tail = template.seq_length, template.tail
        code = template.code
        if code != RC_SUCCESS:
            stats.errors += 1
        NATIVE.resolution(code, perf_counter() - started)
        return b"".join((version[0], envelope[4:12], seq_length, template.codes, flags[0], self._expires, tail))

    def _version(self, envelope: bytes) -> _Version:
        """The reply envelope's first four bytes for a request's (the lower of the client's suggested
        version and ours, then ours), and the digest algorithm byte and name of that version."""
        key = envelope[:4]
        major, minor, env_flags, suggest_minor = key
        suggested = (env_flags & 0x03, suggest_minor) if env_flags & 0x03 else (major, minor)
        version = min(suggested, self.version)
        algorithm = _digest_algorithm(version)
        entry = (bytes((*version, *self.version)), bytes([algorithm]), _DIGEST_NAMES[algorithm])
        if len(self._versions) >= _FLAGS_CACHE_MAX:
            self._versions.clear()
        self._versions[key] = entry
        return entry
