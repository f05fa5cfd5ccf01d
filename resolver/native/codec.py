"""The native Handle protocol wire format (RFC 3652 section 2), byte-compatible with HANDLE.NET.

A message on the wire is a 20-byte envelope (section 2.2.1) followed by the message proper: a 24-byte
header (2.2.2), the body (2.2.3) and the credential (2.2.4, a 4-byte length then that many bytes). All
integers are big-endian; strings are UTF-8 with a 4-byte length prefix (2.1.4, "UTF8-String").

This module is pure: no sockets, no asyncio, no clock (callers pass ``now`` and expiration times). Every
decoder raises :class:`CodecError` and nothing else, whatever the input bytes.

Bodies understood: resolution request and response (opcode 1, section 3.2; values as in RFC 3651
section 3.1), get-site-info request and response (opcode 2), error responses (section 3.3: a message
string). Other opcodes / response codes decode to :class:`RawBody` so a server can still answer them
(e.g. with RC_OPERATION_NOT_SUPPORTED).
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from enum import IntFlag

from registry.errors import (
    RC_AUTHENTICATION_NEEDED,
    RC_ERROR,
    RC_PREFIX_REFERRAL,
    RC_RESERVED,
    RC_SERVICE_REFERRAL,
    RC_SUCCESS,
    InvalidValue,
)
from registry.model import HandleValue, Reference
from registry.valuedata import SiteInfo, decode_site, encode_site
from registry.wire import Reader, blob, utf8

__all__ = [
    "DEFAULT_REQUEST_FLAGS",
    "ENVELOPE_SIZE",
    "HASH_MD5",
    "HASH_SHA1",
    "HASH_SHA256",
    "HEADER_SIZE",
    "MAX_HANDLE_LENGTH",
    "MAX_MESSAGE",
    "MAX_VALUES",
    "OC_ADD_VALUE",
    "OC_CREATE_HANDLE",
    "OC_DELETE_HANDLE",
    "OC_GET_SITE_INFO",
    "OC_LIST_HANDLES",
    "OC_MODIFY_VALUE",
    "OC_REMOVE_VALUE",
    "OC_RESOLUTION",
    "OC_RESPONSE_TO_CHALLENGE",
    "OC_SESSION_SETUP",
    "OC_VERIFY_CHALLENGE",
    "PROTOCOL_VERSION",
    "UDP_PACKET_SIZE",
    "Body",
    "CodecError",
    "Envelope",
    "ErrorResponse",
    "GetSiteInfoRequest",
    "GetSiteInfoResponse",
    "Header",
    "Message",
    "OpFlag",
    "RawBody",
    "RequestDigest",
    "ResolutionRequest",
    "ResolutionResponse",
    "UdpReassembler",
    "decode_envelope",
    "decode_header",
    "decode_message",
    "decode_payload",
    "decode_value",
    "encode_envelope",
    "encode_header",
    "encode_message",
    "encode_payload",
    "encode_value",
    "make_request",
    "reply_to",
    "request_digest",
    "split_udp",
    "truncated_reply",
]

MAX_MESSAGE = 262_144  # Common.MAX_MESSAGE_LENGTH: the largest message, envelope excluded
ENVELOPE_SIZE = 20
HEADER_SIZE = 24
UDP_PACKET_SIZE = 512  # Common.MAX_UDP_PACKET_SIZE: envelope + up to 492 message bytes per datagram
PROTOCOL_VERSION = (2, 10)
MAX_HANDLE_LENGTH = 2048  # Common.MAX_HANDLE_LENGTH (bytes)
MAX_VALUES = 2048  # Common.MAX_HANDLE_VALUES

# Opcodes (RFC 3652 section 2.2.2.1; HANDLE.NET AbstractMessage.OC_*).
OC_RESOLUTION = 1
OC_GET_SITE_INFO = 2
OC_CREATE_HANDLE = 100
OC_DELETE_HANDLE = 101
OC_ADD_VALUE = 102
OC_REMOVE_VALUE = 103
OC_MODIFY_VALUE = 104
OC_LIST_HANDLES = 105
OC_RESPONSE_TO_CHALLENGE = 200
OC_VERIFY_CHALLENGE = 201
OC_SESSION_SETUP = 400

# Request digest algorithms (Common.HASH_CODE_*) and their digest sizes.
HASH_MD5 = 1
HASH_SHA1 = 2
HASH_SHA256 = 3
_DIGESTS = {HASH_MD5: ("md5", 16), HASH_SHA1: ("sha1", 20), HASH_SHA256: ("sha256", 32)}

# Envelope message flags (section 2.2.1.3): high bits of byte 2. Its low two bits carry the suggested
# major version and byte 3 the suggested minor version (HANDLE.NET Encoder.encodeEnvelope, protocol 2.x).
_ENV_CP = 0x80
_ENV_EC = 0x40
_ENV_TC = 0x20
_ENV_SUGGEST_MASK = 0x03

_TTL_RELATIVE = 0
_TTL_ABSOLUTE = 1


class CodecError(ValueError):
    """Malformed, truncated, oversized or unsupported wire data."""


class OpFlag(IntFlag):
    """Header OpFlag bits (RFC 3652 section 2.2.2.3; OVRW, MINT, DNRF are HANDLE.NET additions)."""

    AT = 0x80000000  # authoritative: bypass caches
    CT = 0x40000000  # certified: sign the response
    ENC = 0x20000000  # encrypt the response
    REC = 0x10000000  # recursive resolution wanted
    CA = 0x08000000  # cache authentication: caches should sign
    CN = 0x04000000  # continuous: more parts follow
    KC = 0x02000000  # keep the connection open
    PO = 0x01000000  # public values only
    RD = 0x00800000  # request digest wanted / present
    OVRW = 0x00400000  # overwrite existing values
    MINT = 0x00200000  # mint a new suffix on create
    DNRF = 0x00100000  # do not refer


DEFAULT_REQUEST_FLAGS = OpFlag.REC | OpFlag.CA | OpFlag.PO  # HANDLE.NET AbstractMessage defaults
_REPLY_COPIED_FLAGS = OpFlag.AT | OpFlag.CT | OpFlag.ENC | OpFlag.CA | OpFlag.PO | OpFlag.RD | OpFlag.DNRF


# ---------------------------------------------------------------------------------------------- writers


def _text(text: str, what: str) -> bytes:
    return blob(utf8(text, what, CodecError))


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise CodecError(f"{what} {value} does not fit 4 unsigned bytes")
    return struct.pack(">I", value)


# ---------------------------------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class Envelope:
    """Message envelope (RFC 3652 section 2.2.1). ``sequence`` numbers the UDP packets of a message from
    0; ``length`` counts the message bytes after the envelope (the whole message, in every packet)."""

    major: int = PROTOCOL_VERSION[0]
    minor: int = PROTOCOL_VERSION[1]
    compressed: bool = False  # CP
    encrypted: bool = False  # EC
    truncated: bool = False  # TC
    suggest_major: int = PROTOCOL_VERSION[0]
    suggest_minor: int = PROTOCOL_VERSION[1]
    session_id: int = 0
    request_id: int = 0
    sequence: int = 0
    length: int = field(default=0, compare=False)  # recomputed by encode_message

    @property
    def suggested_version(self) -> tuple[int, int]:
        """The highest version the sender speaks (HANDLE.NET: a zero suggestion means the message's own)."""
        if self.suggest_major == 0:
            return self.major, self.minor
        return self.suggest_major, self.suggest_minor


def decode_envelope(data: bytes) -> Envelope:
    """Decode the first 20 bytes of ``data`` (section 2.2.1)."""
    if len(data) < ENVELOPE_SIZE:
        raise CodecError(f"envelope: {len(data)} bytes, need {ENVELOPE_SIZE}")
    major, minor, flags, suggest_minor, session, request, seq, length = struct.unpack_from(">BBBBIIII", data)
    if length > MAX_MESSAGE:
        raise CodecError(f"envelope: message length {length} exceeds the {MAX_MESSAGE}-byte limit")
    return Envelope(
        major=major,
        minor=minor,
        compressed=bool(flags & _ENV_CP),
        encrypted=bool(flags & _ENV_EC),
        truncated=bool(flags & _ENV_TC),
        suggest_major=flags & _ENV_SUGGEST_MASK,
        suggest_minor=suggest_minor,
        session_id=session,
        request_id=request,
        sequence=seq,
        length=length,
    )


def encode_envelope(env: Envelope) -> bytes:
    """The 20 envelope bytes: versions, flags | suggested major, suggested minor, session id, request id,
    sequence number, message length."""
    for name, value, hi in (
        ("major version", env.major, 255),
        ("minor version", env.minor, 255),
        ("suggested major version", env.suggest_major, _ENV_SUGGEST_MASK),
        ("suggested minor version", env.suggest_minor, 255),
        ("session id", env.session_id, 0xFFFFFFFF),
        ("request id", env.request_id, 0xFFFFFFFF),
        ("sequence number", env.sequence, 0xFFFFFFFF),
        ("message length", env.length, MAX_MESSAGE),
    ):
        if not 0 <= value <= hi:
            raise CodecError(f"envelope: {name} {value} out of range 0..{hi}")
    flags = (
        (_ENV_CP if env.compressed else 0)
        | (_ENV_EC if env.encrypted else 0)
        | (_ENV_TC if env.truncated else 0)
        | env.suggest_major
    )
    return struct.pack(
        ">BBBBIIII",
        env.major,
        env.minor,
        flags,
        env.suggest_minor,
        env.session_id,
        env.request_id,
        env.sequence,
        env.length,
    )


# ---------------------------------------------------------------------------------------------- header


@dataclass(frozen=True, slots=True)
class Header:
    """Message header (section 2.2.2)."""

    opcode: int
    response_code: int = RC_RESERVED
    op_flags: int = 0
    site_serial: int = 0
    recursion_count: int = 0
    expiration: int = 0  # seconds since the epoch
    body_length: int = field(default=0, compare=False)  # recomputed by encode_payload

    @property
    def is_request(self) -> bool:
        return self.response_code == RC_RESERVED

    def has(self, flag: OpFlag) -> bool:
        return bool(self.op_flags & flag)


def decode_header(data: bytes) -> Header:
    """Opcode u32, response code u32, op flags u32, site serial u16, recursion count u8, reserved u8,
    expiration u32, body length u32."""
    if len(data) < HEADER_SIZE:
        raise CodecError(f"header: {len(data)} bytes, need {HEADER_SIZE}")
    opcode, rc, flags, serial, recursion, _reserved, expiration, body_len = struct.unpack_from(">IIIHBBII", data)
    return Header(opcode, rc, flags, serial, recursion, expiration, body_len)


def encode_header(header: Header, body_length: int | None = None) -> bytes:
    length = header.body_length if body_length is None else body_length
    try:
        return struct.pack(
            ">IIIHBBII",
            header.opcode,
            header.response_code,
            int(header.op_flags),
            header.site_serial,
            header.recursion_count,
            0,
            header.expiration,
            length,
        )
    except struct.error as exc:
        raise CodecError(f"header: field out of range: {exc}") from None


# ---------------------------------------------------------------------------------------------- bodies


@dataclass(frozen=True, slots=True)
class ResolutionRequest:
    """Query request (section 3.2.1): the handle, and optional index and type filters."""

    handle: str
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResolutionResponse:
    """Successful query response (section 3.2.2): the handle and its values (RFC 3651 section 3.1)."""

    handle: str
    values: tuple[HandleValue, ...] = ()


@dataclass(frozen=True, slots=True)
class GetSiteInfoRequest:
    """Get-site-info request. HANDLE.NET encodes it as a generic request carrying a handle (usually
    blank); an empty body is accepted too and decodes to ``handle=""``."""

    handle: str = ""


@dataclass(frozen=True, slots=True)
class GetSiteInfoResponse:
    """Get-site-info response: the body is an HS_SITE record (RFC 3651 section 3.2.2)."""

    site_data: bytes

    @classmethod
    def from_site(cls, site: SiteInfo) -> GetSiteInfoResponse:
        try:
            return cls(encode_site(site))
        except InvalidValue as exc:
            raise CodecError(f"site info: {exc.message}") from None

    @property
    def site(self) -> SiteInfo:
        try:
            return decode_site(self.site_data)
        except InvalidValue as exc:
            raise CodecError(f"site info: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Error response (section 3.3): the response code is in the header, the body holds a message."""

    message: str = ""


@dataclass(frozen=True, slots=True)
class RawBody:
    """The body of a message this codec does not interpret (after any request digest)."""

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class RequestDigest:
    """Digest of the request (header + body) that a response answers (RRDG / RD flag)."""

    algorithm: int
    digest: bytes


Body = ResolutionRequest | ResolutionResponse | GetSiteInfoRequest | GetSiteInfoResponse | ErrorResponse | RawBody


@dataclass(frozen=True, slots=True)
class Message:
    """A whole message. ``header_and_body`` holds the received header and body bytes (what a request
    digest or a signature covers); it is empty for locally built messages."""

    envelope: Envelope
    header: Header
    body: Body
    digest: RequestDigest | None = None
    credential: bytes = b""
    header_and_body: bytes = field(default=b"", compare=False, repr=False)


# ---------------------------------------------------------------------------------------------- values


def encode_value(value: HandleValue) -> bytes:
    """One handle value (RFC 3651 section 3.1; HANDLE.NET Encoder.encodeHandleValue): index u32,
    timestamp u32, TTL type u8 (0 relative, 1 absolute), TTL (signed when relative), permission u8,
    type string, data blob, reference count u32, references (handle string, index u32)."""
    if value.ttl_absolute:
        ttl = _u32(value.ttl, "value TTL")
    elif -(2**31) <= value.ttl < 2**31:
        ttl = struct.pack(">i", value.ttl)
    else:
        raise CodecError(f"value TTL {value.ttl} does not fit 4 signed bytes")
    parts = [
        _u32(value.index, "value index"),
        _u32(value.timestamp, "value timestamp"),
        bytes([_TTL_ABSOLUTE if value.ttl_absolute else _TTL_RELATIVE]),
        ttl,
        bytes([value.permissions & 0x0F]),
        _text(value.type, "value type"),
        blob(bytes(value.data)),
        _u32(len(value.references), "reference count"),
    ]
    for ref in value.references:
        parts.append(_text(ref.handle, "reference handle"))
        parts.append(_u32(ref.index, "reference index"))
    return b"".join(parts)


def decode_value(data: bytes, offset: int = 0) -> tuple[HandleValue, int]:
    """Decode one value at ``offset``; returns it and the offset after it."""
    if not 0 <= offset <= len(data):
        raise CodecError(f"handle value: offset {offset} outside the {len(data)}-byte buffer")
    r = Reader(data, "handle value", CodecError)
    r.pos = offset
    value = _read_value(r)
    return value, r.pos


def _read_value(r: Reader) -> HandleValue:
    index = r.u32()
    timestamp = r.u32()
    ttl_type = r.u8()
    ttl_raw = r.take(4)
    if ttl_type not in (_TTL_RELATIVE, _TTL_ABSOLUTE):
        raise CodecError(f"{r.what}: unknown TTL type {ttl_type}")
    ttl = struct.unpack(">i" if ttl_type == _TTL_RELATIVE else ">I", ttl_raw)[0]
    perms = r.u8() & 0x0F
    type_ = r.text("value type")
    data = r.blob()
    refs = tuple(
        Reference(r.text("reference handle", MAX_HANDLE_LENGTH), r.u32())
        for _ in range(r.count("reference", 8, MAX_VALUES))
    )
    return HandleValue(index, type_, data, ttl, ttl_type == _TTL_ABSOLUTE, timestamp, perms, refs)


# ---------------------------------------------------------------------------------------------- body codec


def _decode_body(header: Header, body: bytes) -> tuple[Body, RequestDigest | None]:
    r = Reader(body, f"opcode {header.opcode} body", CodecError)
    op, rc = header.opcode, header.response_code
    if rc == RC_RESERVED:
        if op == OC_RESOLUTION:
            handle = r.text("handle", MAX_HANDLE_LENGTH)
            indexes = tuple(r.u32() for _ in range(r.count("index", 4, MAX_MESSAGE)))
            types = tuple(r.text("type", MAX_HANDLE_LENGTH) for _ in range(r.count("type", 4, MAX_MESSAGE)))
            r.done()
            return ResolutionRequest(handle, indexes, types), None
        if op == OC_GET_SITE_INFO:
            handle = r.text("handle", MAX_HANDLE_LENGTH) if r.rest() else ""
            r.done()
            return GetSiteInfoRequest(handle), None
        return RawBody(body), None

    digest = None
    if header.op_flags & OpFlag.RD:
        alg = r.u8()
        if alg not in _DIGESTS:
            raise CodecError(f"{r.what}: unknown request digest algorithm {alg}")
        digest = RequestDigest(alg, r.take(_DIGESTS[alg][1]))
    if rc == RC_SUCCESS and op == OC_RESOLUTION:
        handle = r.text("handle", MAX_HANDLE_LENGTH)
        values = tuple(_read_value(r) for _ in range(r.count("value", 26, MAX_VALUES)))
        r.done()
        return ResolutionResponse(handle, values), digest
    if rc == RC_SUCCESS and op == OC_GET_SITE_INFO:
        site_data = r.take(r.rest())
        try:
            decode_site(site_data)
        except InvalidValue as exc:
            raise CodecError(f"site info response: {exc.message}") from None
        return GetSiteInfoResponse(site_data), digest
    if rc in (RC_SUCCESS, RC_AUTHENTICATION_NEEDED, RC_SERVICE_REFERRAL, RC_PREFIX_REFERRAL):
        return RawBody(r.take(r.rest())), digest
    # Error response. Protocol 2.0 (and "5.0") servers may omit the message entirely.
    message = r.blob().decode("utf-8", "replace") if r.rest() else ""
    r.done()
    return ErrorResponse(message), digest


_BODY_KINDS: dict[type, tuple[int, bool]] = {  # body class → (opcode, is a request)
    ResolutionRequest: (OC_RESOLUTION, True),
    ResolutionResponse: (OC_RESOLUTION, False),
    GetSiteInfoRequest: (OC_GET_SITE_INFO, True),
    GetSiteInfoResponse: (OC_GET_SITE_INFO, False),
}


def _encode_body(header: Header, body: Body) -> bytes:
    op, rc = header.opcode, header.response_code
    if isinstance(body, RawBody):
        return bytes(body.data)
    if isinstance(body, ErrorResponse):
        if rc in (RC_RESERVED, RC_SUCCESS):
            raise CodecError(f"an error response needs an error response code, not {rc}")
        return _text(body.message, "error message")
    expected = _BODY_KINDS.get(type(body))
    if expected is None:
        raise CodecError(f"cannot encode a {type(body).__name__} body")
    if (op, rc == RC_RESERVED) != expected or (not expected[1] and rc != RC_SUCCESS):
        raise CodecError(f"{type(body).__name__} does not match opcode {op} / response code {rc}")
    if isinstance(body, ResolutionRequest):
        return b"".join(
            [
                _text(body.handle, "handle"),
                _u32(len(body.indexes), "index count"),
                *(_u32(i, "index") for i in body.indexes),
                _u32(len(body.types), "type count"),
                *(_text(t, "type") for t in body.types),
            ]
        )
    if isinstance(body, ResolutionResponse):
        return b"".join(
            [
                _text(body.handle, "handle"),
                _u32(len(body.values), "value count"),
                *(encode_value(v) for v in body.values),
            ]
        )
    if isinstance(body, GetSiteInfoRequest):
        return _text(body.handle, "handle")
    return bytes(body.site_data)


# ---------------------------------------------------------------------------------------------- messages


def decode_payload(envelope: Envelope, payload: bytes) -> Message:
    """Decode the message that follows ``envelope`` (header, body, credential)."""
    payload = bytes(payload)
    if len(payload) > MAX_MESSAGE:
        raise CodecError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    if len(payload) != envelope.length:
        raise CodecError(f"envelope announces {envelope.length} message bytes, got {len(payload)}")
    if envelope.encrypted or envelope.compressed:
        raise CodecError("encrypted or compressed messages are not supported")
    header = decode_header(payload)
    end = HEADER_SIZE + header.body_length
    if end > len(payload):
        raise CodecError(f"header announces a {header.body_length}-byte body, only {len(payload) - 24} follow")
    tail = payload[end:]
    credential = b""
    if tail:
        if len(tail) < 4:
            raise CodecError(f"credential: {len(tail)} bytes where a 4-byte length is due")
        cred_len = int.from_bytes(tail[:4], "big")
        if cred_len != len(tail) - 4:
            raise CodecError(f"credential announces {cred_len} bytes, {len(tail) - 4} follow")
        credential = tail[4:]
    body, digest = _decode_body(header, payload[HEADER_SIZE:end])
    return Message(envelope, header, body, digest, credential, payload[:end])


def decode_message(data: bytes) -> Message:
    """Decode envelope + message (one TCP frame, or one complete UDP datagram)."""
    if len(data) > ENVELOPE_SIZE + MAX_MESSAGE:
        raise CodecError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    env = decode_envelope(data)
    return decode_payload(env, data[ENVELOPE_SIZE:])


def encode_payload(message: Message) -> bytes:
    """Header + body + credential. For responses the RD flag is set exactly when a digest is present."""
    header = message.header
    flags = int(header.op_flags)
    prefix = b""
    if header.response_code != RC_RESERVED:
        flags &= 0xFFFFFFFF ^ OpFlag.RD
        if message.digest is not None:
            size = _DIGESTS.get(message.digest.algorithm, (None, -1))[1]
            if len(message.digest.digest) != size:
                raise CodecError(f"request digest: bad algorithm {message.digest.algorithm} or length")
            flags |= OpFlag.RD
            prefix = bytes([message.digest.algorithm]) + message.digest.digest
    elif message.digest is not None:
        raise CodecError("a request cannot carry a request digest")
    body = prefix + _encode_body(header, message.body)
    out = encode_header(replace(header, op_flags=flags), len(body)) + body + blob(bytes(message.credential))
    if len(out) > MAX_MESSAGE:
        raise CodecError(f"message of {len(out)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return out


def encode_message(message: Message) -> bytes:
    """Envelope (with ``length`` filled in) + message."""
    payload = encode_payload(message)
    return encode_envelope(replace(message.envelope, length=len(payload))) + payload


def request_digest(algorithm: int, header_and_body: bytes) -> RequestDigest:
    """Digest of a request's header + body, as a response carries it when the request set RD."""
    if algorithm not in _DIGESTS:
        raise CodecError(f"unknown request digest algorithm {algorithm}")
    return RequestDigest(algorithm, hashlib.new(_DIGESTS[algorithm][0], header_and_body).digest())


def make_request(
    body: Body,
    *,
    request_id: int,
    opcode: int | None = None,
    op_flags: int = DEFAULT_REQUEST_FLAGS,
    session_id: int = 0,
    site_serial: int = 0,
    recursion_count: int = 0,
    expiration: int = 0,
    version: tuple[int, int] = PROTOCOL_VERSION,
) -> Message:
    """A request message (the opcode follows from the body unless it is a :class:`RawBody`)."""
    op = _BODY_KINDS[type(body)][0] if type(body) in _BODY_KINDS else opcode
    if op is None:
        raise CodecError(f"make_request: opcode needed for {type(body).__name__}")
    env = Envelope(version[0], version[1], session_id=session_id, request_id=request_id)
    header = Header(op, RC_RESERVED, int(op_flags), site_serial, recursion_count, expiration)
    return Message(env, header, body)


def reply_to(
    request: Message,
    body: Body,
    *,
    expiration: int,
    response_code: int = RC_SUCCESS,
    site_serial: int = 0,
    digest_algorithm: int = HASH_SHA1,
    version: tuple[int, int] = PROTOCOL_VERSION,
) -> Message:
    """The response to ``request``, as HANDLE.NET builds it: same request and session ids, the lower of
    the client's suggested version and ours, the request's AT/CT/ENC/CA/PO/RD/DNRF flags (plus REC),
    and the request digest when the request asked for it (RD)."""
    req_env, req_header = request.envelope, request.header
    major, minor = min(req_env.suggested_version, version)
    env = Envelope(
        major,
        minor,
        suggest_major=version[0],
        suggest_minor=version[1],
        session_id=req_env.session_id,
        request_id=req_env.request_id,
    )
    flags = (req_header.op_flags & _REPLY_COPIED_FLAGS) | OpFlag.REC
    header = Header(req_header.opcode, response_code, int(flags), site_serial, req_header.recursion_count, expiration)
    digest = None
    if req_header.op_flags & OpFlag.RD:
        signed = request.header_and_body or encode_payload(replace(request, credential=b""))[:-4]
        digest = request_digest(digest_algorithm, signed)
    return Message(env, header, body, digest)


# ---------------------------------------------------------------------------------------------- UDP


def split_udp(envelope: Envelope, message_bytes: bytes, max_packet: int = UDP_PACKET_SIZE) -> list[bytes]:
    """Datagrams for a message (section 2.3): each carries its own envelope with ``sequence`` 0, 1, …
    and ``length`` = the whole message; every packet but the last holds ``max_packet - 20`` bytes.

    The envelope's flags are kept as given: HANDLE.NET clients set TC on multi-packet requests,
    HANDLE.NET servers leave it clear on multi-packet responses.
    """
    chunk = max_packet - ENVELOPE_SIZE
    if chunk <= 0:
        raise CodecError(f"UDP packet size {max_packet} leaves no room after the envelope")
    if len(message_bytes) > MAX_MESSAGE:
        raise CodecError(f"message of {len(message_bytes)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    count = max(1, -(-len(message_bytes) // chunk))
    return [
        encode_envelope(replace(envelope, sequence=i, length=len(message_bytes)))
        + message_bytes[i * chunk : (i + 1) * chunk]
        for i in range(count)
    ]


def truncated_reply(reply: bytes, message: str) -> bytes:
    """The stand-in for a reply too large to send over UDP: same ids, versions, opcode and request
    digest as ``reply`` (envelope + message), response code ERROR with ``message``, and the TC flag.

    HANDLE.NET's client ignores TC on responses but treats ERROR from an interface as a failure of that
    interface and asks the next one (TCP after UDP), which then carries the whole reply; a client that
    honours TC retries over TCP on the flag."""
    env = decode_envelope(reply)
    header = decode_header(reply[ENVELOPE_SIZE:])
    body = reply[ENVELOPE_SIZE + HEADER_SIZE :]
    digest = b""
    flags = header.op_flags & (0xFFFFFFFF ^ OpFlag.RD)
    if header.op_flags & OpFlag.RD and body and body[0] in _DIGESTS:
        digest = bytes(body[: 1 + _DIGESTS[body[0]][1]])
        flags |= OpFlag.RD
    text = digest + _text(message, "error message")
    payload = encode_header(replace(header, response_code=RC_ERROR, op_flags=flags), len(text)) + text + b"\0\0\0\0"
    return encode_envelope(replace(env, truncated=True, sequence=0, length=len(payload))) + payload


@dataclass(slots=True)
class _Pending:
    envelope: Envelope
    count: int
    deadline: float
    chunks: dict[int, bytes] = field(default_factory=dict)


class UdpReassembler:
    """Joins the datagrams of multi-packet UDP messages (as HANDLE.NET's HdlUdpPendingRequest does:
    packet ``n`` sits at offset ``n * (max_packet - 20)``), keyed by (source, request id).

    Memory is bounded: at most ``max_pending`` partial messages and ``max_bytes`` announced bytes; when
    full the oldest partial message is dropped (counted in ``dropped``). Partial messages expire
    ``timeout`` seconds after their first packet, judged by the ``now`` the caller passes.
    """

    def __init__(
        self,
        *,
        max_pending: int = 256,
        max_bytes: int = 8 * MAX_MESSAGE,
        timeout: float = 10.0,
        max_packet: int = UDP_PACKET_SIZE,
    ) -> None:
        if max_packet <= ENVELOPE_SIZE or max_pending < 1 or max_bytes < 1:
            raise ValueError("UdpReassembler: bad limits")
        self._chunk = max_packet - ENVELOPE_SIZE
        self._max_pending = max_pending
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._pending: OrderedDict[tuple[Hashable, int], _Pending] = OrderedDict()
        self._bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def _drop(self, key: tuple[Hashable, int]) -> None:
        self._bytes -= self._pending.pop(key).envelope.length

    def expire(self, now: float) -> int:
        """Forget partial messages whose deadline has passed; returns how many."""
        gone = [k for k, p in self._pending.items() if p.deadline <= now]
        for key in gone:
            self._drop(key)
        self.dropped += len(gone)
        return len(gone)

    def add(self, source: Hashable, packet: bytes, now: float) -> tuple[Envelope, bytes] | None:
        """Take one datagram. Returns ``(envelope, message bytes)`` once the message is complete, else
        ``None``. A datagram that cannot belong to a well-formed message raises :class:`CodecError`."""
        self.expire(now)
        env = decode_envelope(packet)
        data = bytes(packet[ENVELOPE_SIZE:])
        if env.sequence == 0 and len(data) == env.length:
            return env, data  # the whole message in one datagram (of any size)
        count = max(1, -(-env.length // self._chunk))
        if env.sequence >= count:
            raise CodecError(f"UDP packet {env.sequence} of a {count}-packet message")
        expected = self._chunk if env.sequence < count - 1 else env.length - self._chunk * (count - 1)
        if len(data) != expected:
            raise CodecError(f"UDP packet {env.sequence} carries {len(data)} bytes, expected {expected}")
        key = (source, env.request_id)
        pending = self._pending.get(key)
        if pending is None:
            if env.length > self._max_bytes:
                raise CodecError(f"message of {env.length} bytes exceeds the reassembly buffer")
            while self._pending and (
                len(self._pending) >= self._max_pending or self._bytes + env.length > self._max_bytes
            ):
                self._drop(next(iter(self._pending)))
                self.dropped += 1
            pending = _Pending(replace(env, sequence=0), count, now + self._timeout)
            self._pending[key] = pending
            self._bytes += env.length
        else:
            first = pending.envelope
            if (env.length, env.major, env.minor, env.session_id) != (
                first.length,
                first.major,
                first.minor,
                first.session_id,
            ):
                raise CodecError(f"UDP packet {env.sequence} does not match the message it continues")
        pending.chunks.setdefault(env.sequence, data)
        if len(pending.chunks) < pending.count:
            return None
        self._drop(key)
        return pending.envelope, b"".join(pending.chunks[i] for i in range(pending.count))
