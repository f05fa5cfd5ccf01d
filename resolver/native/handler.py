"""Answers native Handle protocol requests (RFC 3652) from the node's read path.

One :class:`NativeHandler` serves the UDP and the TCP listeners. It takes decoded requests and returns
reply :class:`~resolver.native.codec.Message` objects; the listeners own the framing. Resolution goes
through the same :class:`~resolver.resolve.Resolver` (cache tiers, then the store) as
``GET /api/handles/…``, with the same responsibility check and the same type/index filters.

Replies follow HANDLE.NET's ``HandleServer``:

- opcode 1 (resolution): the values, or an error response with HANDLE_NOT_FOUND (100), VALUES_NOT_FOUND
  (200: the index/type filters match nothing, or no value is publicly readable), SERVER_NOT_RESP (301:
  not in this node's namespace, answered before any cache or store is touched), INVALID_HANDLE (102),
  SERVER_TOO_BUSY (3: the store is unavailable and nothing is cached) or ERROR (2).
  Native requests are anonymous here (no challenge-response, no sessions), so only values with the
  PUBLIC_READ permission are ever sent, whether or not the request set the PO flag.
  A handle without a slash names a prefix: ``88.118.8`` is resolved as ``0.NA/88.118.8``.
- opcode 2 (get-site-info): the node's HS_SITE data.
- anything else: OPERATION_NOT_SUPPORTED (5); opcode 0: PROTOCOL_ERROR (4).

Every reply echoes the request and session ids, is written in the lower of the client's suggested
version and ours, and carries the request digest when the request set RD (SHA-256 for protocol 2.7
and later, SHA-1 before, as HANDLE.NET's ``AbstractResponse.takeDigestOfRequest``).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from registry.errors import HandleError, InvalidHandle, InvalidValue, StoreUnavailable
from registry.service import Registry
from registry.valuedata import decode_site
from resolver.native.codec import (
    ENVELOPE_SIZE,
    HASH_MD5,
    HASH_SHA1,
    HASH_SHA256,
    OC_GET_SITE_INFO,
    OC_RESOLUTION,
    PROTOCOL_VERSION,
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
    encode_payload,
    reply_to,
)
from resolver.resolve import Resolver

__all__ = ["MESSAGE_TTL", "NativeHandler", "NativeStats", "header_is_response", "peek_request"]

log = logging.getLogger("idnode.native")

MESSAGE_TTL = 43_200  # HANDLE.NET AbstractMessage: a message expires twelve hours after it is made
_NA_PREFIX = "0.NA/"
_MSG_NOT_HOMED = "That prefix doesn't live here"  # HANDLE.NET HandleServer.MSG_NA_NOT_HOMED_HERE
_MSG_NOT_SUPPORTED = "this node answers resolution and get-site-info only; use the HTTP API for the rest"
_ENVELOPE_IDS = struct.Struct(">BBBBII")  # versions, flags | suggested major, suggested minor, session, request
_HEADER_CODES = struct.Struct(">II")  # opcode, response code


@dataclass(slots=True)
class NativeStats:
    """Counters of one handler (shared by its listeners); plain ints, read by tests and metrics."""

    requests: int = 0  # decoded requests answered
    errors: int = 0  # error replies to decoded requests (any response code but success)
    malformed: int = 0  # messages that could not be decoded (answered with PROTOCOL_ERROR when possible)
    dropped: int = 0  # datagrams / frames dropped without a reply
    internal: int = 0  # unexpected exceptions (answered with ERROR)


def _digest_algorithm(version: tuple[int, int]) -> int:
    if version >= (2, 7):
        return HASH_SHA256
    if version >= (2, 1):
        return HASH_SHA1
    return HASH_MD5  # HANDLE.NET's pre-2.1 "old format" digest is MD5 (without the algorithm byte)


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


class NativeHandler:
    """Turns decoded requests into replies. ``handle`` never raises; ``encode`` never raises either
    (a reply that cannot be encoded, e.g. one over the 262,144-byte limit, becomes an ERROR reply)."""

    def __init__(
        self,
        resolver: Resolver,
        registry: Registry,
        site_data: bytes,
        *,
        clock: Callable[[], float] = time.time,
        version: tuple[int, int] = PROTOCOL_VERSION,
    ) -> None:
        self.resolver = resolver
        self.registry = registry
        self.clock = clock
        self.version = version
        self.stats = NativeStats()
        self._site = GetSiteInfoResponse(bytes(site_data))
        try:
            self.site_serial = decode_site(site_data).serial & 0xFFFF
        except InvalidValue:
            self.site_serial = 0

    # -- replies ----------------------------------------------------------------------------------
    def reply(self, request: Message, body: Body, response_code: int = RC_SUCCESS) -> Message:
        """The reply to ``request`` (ids, version, flags and digest as HANDLE.NET sets them)."""
        version = min(request.envelope.suggested_version, self.version)
        return reply_to(
            request,
            body,
            expiration=(int(self.clock()) + MESSAGE_TTL) & 0xFFFFFFFF,
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
        """The reply's message bytes (without the envelope)."""
        try:
            return encode_payload(reply)
        except CodecError as exc:
            log.debug("native: cannot encode the reply to request %d: %s", reply.envelope.request_id, exc)
            self.stats.internal += 1
            header = replace(reply.header, response_code=RC_ERROR)
            message = "the response does not fit a Handle protocol message; use the HTTP API"
            return encode_payload(replace(reply, header=header, body=ErrorResponse(message)))

    # -- requests ---------------------------------------------------------------------------------
    async def handle(self, request: Message) -> Message:
        """The reply to one decoded request."""
        self.stats.requests += 1
        try:
            opcode = request.header.opcode
            if opcode == OC_RESOLUTION and isinstance(request.body, ResolutionRequest):
                return await self._resolve(request, request.body)
            if opcode == OC_GET_SITE_INFO:
                return self.reply(request, self._site)
            if opcode == 0:
                return self.error(request, RC_PROTOCOL_ERROR, "Unknown opCode in message: 0")
            return self.error(request, RC_OPERATION_NOT_SUPPORTED, _MSG_NOT_SUPPORTED)
        except Exception as exc:  # never let one request take a listener down
            self.stats.internal += 1
            log.debug("native: error answering request %d: %r", request.envelope.request_id, exc)
            return self.error(request, RC_ERROR, "Internal Error")

    async def _resolve(self, request: Message, body: ResolutionRequest) -> Message:
        text = body.handle if "/" in body.handle else _NA_PREFIX + body.handle
        registry = self.registry
        try:
            name = registry.parse(text)
        except InvalidHandle as exc:
            return self.error(request, RC_INVALID_HANDLE, exc.message)
        if not registry.is_responsible(name):
            return self.error(request, RC_SERVER_NOT_RESP, _MSG_NOT_HOMED)
        try:
            record = await self.resolver.lookup(name.key, authoritative=bool(request.header.op_flags & OpFlag.AT))
        except StoreUnavailable:
            return self.error(request, RC_SERVER_TOO_BUSY, "store unavailable")
        except HandleError as exc:
            code = exc.code if exc.code not in (RC_RESERVED, RC_SUCCESS) else RC_ERROR
            return self.error(request, code, exc.message)
        if record is None:
            return self.error(request, RC_HANDLE_NOT_FOUND)
        values = record.values
        if body.indexes or body.types:
            indexes = frozenset(body.indexes)
            types = body.types
            values = tuple(v for v in values if v.index in indexes or any(v.type_matches(t) for t in types))
        values = tuple(v for v in values if v.public_read)
        if not values:
            return self.error(request, RC_VALUES_NOT_FOUND)
        return self.reply(request, ResolutionResponse(body.handle, values))


def header_is_response(payload: bytes) -> bool:
    """Does this message's header mark it as a response (which a server never answers)?"""
    return len(payload) >= 8 and _HEADER_CODES.unpack_from(payload)[1] != RC_RESERVED
