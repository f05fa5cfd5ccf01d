"""Native Handle protocol codec: golden bytes written out from RFC 3652 / HANDLE.NET layouts, round trips,
bad input, UDP packets and reassembly, and fuzzing (only CodecError may escape)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import struct
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.model import HandleValue, Reference
from registry.valuedata import Interface, ServerInfo, SiteInfo, encode_site
from resolver.native.codec import (
    ENVELOPE_SIZE,
    HASH_MD5,
    HASH_SHA1,
    HASH_SHA256,
    MAX_MESSAGE,
    OC_GET_SITE_INFO,
    OC_RESOLUTION,
    CodecError,
    Envelope,
    ErrorResponse,
    GetSiteInfoRequest,
    GetSiteInfoResponse,
    Header,
    OpFlag,
    RawBody,
    RequestDigest,
    ResolutionRequest,
    ResolutionResponse,
    UdpReassembler,
    decode_envelope,
    decode_header,
    decode_message,
    decode_payload,
    decode_value,
    encode_envelope,
    encode_header,
    encode_message,
    encode_payload,
    encode_value,
    make_request,
    reply_to,
    request_digest,
    split_udp,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw


# A resolution request for 88.118.8/1, index 100, type URL; request id 0x01020304; flags REC|CA|PO.
REQ_ENVELOPE = h("02 0a | 02 0a | 00000000 | 01020304 | 00000000 | 0000003d")  # 2.10, suggest 2.10, len 61
REQ_HEADER = h("00000001 | 00000000 | 19000000 | 0000 | 00 | 00 | 00000000 | 00000021")  # opcode 1, body 33
REQ_BODY = s("88.118.8/1") + h("00000001 00000064") + h("00000001") + s("URL")
REQ_WIRE = REQ_ENVELOPE + REQ_HEADER + REQ_BODY + h("00000000")  # empty credential


def test_resolution_request_golden() -> None:
    msg = make_request(ResolutionRequest("88.118.8/1", (100,), ("URL",)), request_id=0x01020304)
    assert encode_message(msg) == REQ_WIRE
    got = decode_message(REQ_WIRE)
    assert got == msg
    assert got.envelope.length == 61 and got.header.body_length == 33
    assert got.header.has(OpFlag.PO) and got.header.has(OpFlag.REC) and not got.header.has(OpFlag.AT)
    assert got.header_and_body == REQ_HEADER + REQ_BODY
    assert MAX_MESSAGE == 262144


def test_op_flag_bits_follow_rfc3652_order() -> None:
    order = [OpFlag.AT, OpFlag.CT, OpFlag.ENC, OpFlag.REC, OpFlag.CA, OpFlag.CN, OpFlag.KC, OpFlag.PO, OpFlag.RD]
    assert [int(f) for f in order] == [1 << (31 - i) for i in range(9)]  # bit 0 is the most significant
    assert (OpFlag.OVRW, OpFlag.MINT, OpFlag.DNRF) == (0x00400000, 0x00200000, 0x00100000)  # HANDLE.NET


def test_envelope_flags_and_suggested_version() -> None:
    raw = h("02 05 | e2 0b | 00000009 | 0000000a | 00000003 | 00000100")
    env = decode_envelope(raw)
    assert (env.major, env.minor, env.compressed, env.encrypted, env.truncated) == (2, 5, True, True, True)
    assert env.suggested_version == (2, 11)
    assert (env.session_id, env.request_id, env.sequence, env.length) == (9, 10, 3, 256)
    assert encode_envelope(env) == raw
    old = decode_envelope(h("02 01 00 00") + bytes(16))  # a 2.1 client suggests nothing
    assert old.suggested_version == (2, 1)


def test_header_golden() -> None:
    raw = h("00000002 | 00000001 | 80800000 | 0102 | 03 | 00 | 5f5e1000 | 00000000")
    hd = decode_header(raw)
    assert hd == Header(OC_GET_SITE_INFO, 1, OpFlag.AT | OpFlag.RD, 0x0102, 3, 0x5F5E1000)
    assert encode_header(hd) == raw


VALUE = HandleValue(
    index=1,
    type="URL",
    data=b"http://x",
    ttl=86400,
    timestamp=0x67F84A1A,
    permissions=0b1110,
    references=(Reference("a/b", 7),),
)
VALUE_WIRE = (
    h("00000001 | 67f84a1a | 00 | 00015180 | 0e")  # index, timestamp, relative TTL 86400, perms 1110
    + s("URL")
    + s("http://x")
    + h("00000001")
    + s("a/b")
    + h("00000007")
)


def test_handle_value_golden() -> None:
    assert encode_value(VALUE) == VALUE_WIRE
    assert decode_value(b"xx" + VALUE_WIRE, 2) == (VALUE, 2 + len(VALUE_WIRE))
    absolute = replace(VALUE, ttl=0xF0000000, ttl_absolute=True, references=())
    wire = encode_value(absolute)
    assert wire[8:13] == h("01 f0000000")
    assert decode_value(wire)[0] == absolute
    negative = replace(VALUE, ttl=-1)
    assert decode_value(encode_value(negative))[0].ttl == -1


def test_resolution_response_golden_with_digest() -> None:
    request = decode_message(REQ_WIRE[:-4] + h("00000000"))
    request = replace(request, header=replace(request.header, op_flags=request.header.op_flags | OpFlag.RD))
    digest = hashlib.sha256(request.header_and_body).digest()
    body = h("03") + digest + s("88.118.8/1") + h("00000001") + VALUE_WIRE
    header = h("00000001 | 00000001 | 19800000 | 0001 | 00 | 00 | 00000064") + struct.pack(">I", len(body))
    payload = header + body + h("00000000")
    wire = h("02 0a 02 0a 00000000 01020304 00000000") + struct.pack(">I", len(payload)) + payload
    msg = decode_message(wire)
    assert msg.body == ResolutionResponse("88.118.8/1", (VALUE,))
    assert msg.digest == RequestDigest(HASH_SHA256, digest)
    reply = reply_to(
        request,
        ResolutionResponse("88.118.8/1", (VALUE,)),
        expiration=100,
        site_serial=1,
        digest_algorithm=HASH_SHA256,
    )
    assert encode_message(reply) == wire


def test_error_response_golden() -> None:
    body = s("handle not found")  # RFC 3652 section 3.3: the error message as a UTF8-String
    payload = h("00000001 | 00000064 | 10000000 | 0000 00 00 | 00000000 | 00000014") + body + h("00000000")
    wire = h("02 0a 02 0a | 00000000 | 00000007 | 00000000 | 00000030") + payload
    msg = decode_message(wire)
    assert msg.header.response_code == 100
    assert msg.body == ErrorResponse("handle not found")
    assert encode_message(msg) == wire


def test_error_response_without_message_and_bad_utf8() -> None:
    payload = h("00000001 00000002 00000000 0000 00 00 00000000 00000000")  # protocol 2.0: no message
    msg = decode_payload(Envelope(length=len(payload)), payload)
    assert msg.body == ErrorResponse("")
    body = h("00000002 ff fe")
    payload = h("00000001 00000002 00000000 0000 00 00 00000000 00000006") + body
    assert decode_payload(Envelope(length=len(payload)), payload).body == ErrorResponse("\ufffd\ufffd")


def test_get_site_info_request_forms() -> None:
    # HANDLE.NET sends a generic request carrying a handle; an empty body is accepted as well.
    for body, handle in ((s("/"), "/"), (b"", "")):
        payload = h("00000002 00000000 19000000 0000 00 00 00000000") + struct.pack(">I", len(body)) + body
        msg = decode_payload(Envelope(length=len(payload)), payload)
        assert msg.body == GetSiteInfoRequest(handle)
    msg = make_request(GetSiteInfoRequest("/"), request_id=5)
    assert encode_payload(msg)[24:] == s("/") + h("00000000")


SITE = SiteInfo(
    serial=2,
    primary=True,
    servers=(ServerInfo(1, ipaddress.IPv4Address("192.0.2.7"), b"", (Interface(2, 0, 2641),)),),
)


def test_get_site_info_response() -> None:
    request = decode_message(encode_message(make_request(GetSiteInfoRequest(), request_id=9)))
    reply = reply_to(request, GetSiteInfoResponse.from_site(SITE), expiration=0, site_serial=2)
    wire = encode_message(reply)
    assert wire[20 + 24 :] == encode_site(SITE) + h("00000000")
    got = decode_message(wire)
    assert got.body.site == SITE  # type: ignore[union-attr]
    broken = replace(reply, body=GetSiteInfoResponse(b"\x00\x01"))
    with pytest.raises(CodecError, match="site info"):
        decode_message(encode_message(broken))


def test_unknown_opcodes_are_raw_bodies() -> None:
    create = make_request(RawBody(s("88.118.8/x") + h("00000000")), request_id=1, opcode=100)
    got = decode_message(encode_message(create))
    assert got.header.opcode == 100 and got.body == create.body
    challenge = replace(got, header=replace(got.header, response_code=402), body=RawBody(s("nonce")))
    assert decode_message(encode_message(challenge)).body == RawBody(s("nonce"))


def test_credential_section() -> None:
    msg = replace(decode_message(REQ_WIRE), credential=b"\x00\x00\x00\x00sig")
    wire = encode_message(msg)
    assert wire.endswith(h("00000007") + b"\0\0\0\0sig")
    assert decode_message(wire).credential == b"\x00\x00\x00\x00sig"
    no_credential = REQ_WIRE[:-4]
    no_credential = no_credential[:16] + struct.pack(">I", len(no_credential) - 20) + no_credential[20:]
    assert decode_message(no_credential).body == ResolutionRequest("88.118.8/1", (100,), ("URL",))


def test_reply_to_negotiates_version_and_copies_flags() -> None:
    req = make_request(
        ResolutionRequest("a/b"),
        request_id=77,
        session_id=5,
        op_flags=OpFlag.AT | OpFlag.PO | OpFlag.KC | OpFlag.OVRW,
        version=(2, 5),
        recursion_count=2,
    )
    req = replace(req, envelope=replace(req.envelope, suggest_major=2, suggest_minor=5))
    reply = reply_to(req, ErrorResponse("gone"), response_code=100, expiration=9)
    assert (reply.envelope.major, reply.envelope.minor) == (2, 5)
    assert (reply.envelope.suggest_major, reply.envelope.suggest_minor) == (2, 10)
    assert (reply.envelope.request_id, reply.envelope.session_id) == (77, 5)
    assert reply.header.op_flags == OpFlag.AT | OpFlag.PO | OpFlag.REC
    assert reply.header.recursion_count == 2 and reply.digest is None
    newer = replace(req, envelope=replace(req.envelope, suggest_major=3, suggest_minor=0))
    assert reply_to(newer, ErrorResponse(), response_code=2, expiration=0).envelope.minor == 10


def test_request_digest_of_locally_built_request() -> None:
    req = make_request(ResolutionRequest("a/b"), request_id=1, op_flags=OpFlag.RD)
    reply = reply_to(req, ResolutionResponse("a/b"), expiration=0, digest_algorithm=HASH_MD5)
    decoded = decode_message(encode_message(req))
    assert reply.digest == request_digest(HASH_MD5, decoded.header_and_body)
    assert reply.digest is not None and len(reply.digest.digest) == 16
    assert decode_message(encode_message(reply)).digest == reply.digest
    assert request_digest(HASH_SHA1, b"").digest == hashlib.sha1(b"").digest()


def _fix_lengths(data: bytes) -> bytes:
    """Make the envelope length tell the truth so mutations reach the body decoders."""
    if len(data) < 20:
        return data
    return data[:16] + struct.pack(">I", len(data) - 20) + data[20:]


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"", "envelope"),
        (REQ_WIRE[:19], "envelope"),
        (REQ_WIRE[:20], "announces 61"),
        (REQ_WIRE[:-1], "announces 61"),  # lying envelope length
        (REQ_WIRE + b"\0", "announces 61"),
        (REQ_WIRE[:16] + h("00040001") + REQ_WIRE[20:], "limit"),  # length beyond 256 KiB
        (REQ_WIRE[:2] + h("40") + REQ_WIRE[3:], "encrypted"),
        (REQ_WIRE[:2] + h("82") + REQ_WIRE[3:], "compressed"),
        (REQ_WIRE[:16] + h("0000000a") + REQ_WIRE[20:30], "header"),
        (REQ_WIRE[:40] + h("00000026") + REQ_WIRE[44:], "38-byte body, only 37 follow"),
        (_fix_lengths(REQ_WIRE[:-4] + h("0000")), "credential: 2 bytes"),
        (REQ_WIRE[:-4] + h("00000001"), "credential announces 1"),
        (_fix_lengths(REQ_WIRE + b"\0"), "credential announces 0"),
    ],
)
def test_decode_message_rejects(wire: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_message(wire)


def _with_body(body: bytes, rc: int = 0, flags: int = 0x19000000, opcode: int = OC_RESOLUTION) -> bytes:
    payload = struct.pack(">IIIHBBII", opcode, rc, flags, 0, 0, 0, 0, len(body)) + body + b"\0\0\0\0"
    return h("02 0a 02 0a 00000000 00000001 00000000") + struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize(
    ("body", "rc", "flags", "match"),
    [
        (REQ_BODY + b"\0", 0, 0x19000000, "unexpected bytes"),
        (REQ_BODY[:-1], 0, 0x19000000, "truncated"),
        (h("00000002 ff fe") + h("00000000 00000000"), 0, 0x19000000, "not valid UTF-8"),
        (struct.pack(">I", 2049) + b"a" * 2049 + h("00000000 00000000"), 0, 0x19000000, "longer than 2048"),
        (s("a/b") + h("7fffffff"), 0, 0x19000000, "index count"),
        (s("a/b") + h("00000801"), 1, 0, "value count"),
        (s("a/b") + h("00000001") + VALUE_WIRE[:8] + h("02") + VALUE_WIRE[9:], 1, 0, "TTL type"),
        (h("07") + bytes(20), 1, 0x00800000, "digest algorithm 7"),
        (h("02") + bytes(5), 1, 0x00800000, "truncated"),
        (h("00000005 ab"), 2, 0, "truncated"),
    ],
)
def test_decode_body_rejects(body: bytes, rc: int, flags: int, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_message(_with_body(body, rc, flags))


def test_encode_rejects() -> None:
    req = make_request(ResolutionRequest("a/b"), request_id=1)
    with pytest.raises(CodecError, match="limit"):
        encode_message(replace(req, body=ResolutionRequest("a/b", types=("x" * 1000,) * 300)))
    with pytest.raises(CodecError, match="does not match"):
        encode_message(replace(req, body=ResolutionResponse("a/b")))
    with pytest.raises(CodecError, match="error response code"):
        encode_message(replace(req, body=ErrorResponse("x")))
    with pytest.raises(CodecError, match="request digest"):
        encode_message(replace(req, digest=RequestDigest(HASH_SHA1, bytes(20))))
    resp = reply_to(req, ResolutionResponse("a/b", (replace(VALUE, ttl=2**31),)), expiration=0)
    with pytest.raises(CodecError, match="TTL"):
        encode_message(resp)
    with pytest.raises(CodecError, match="bad algorithm"):
        encode_message(replace(resp, body=ResolutionResponse("a/b"), digest=RequestDigest(HASH_SHA1, b"x")))
    with pytest.raises(CodecError, match="suggested major"):
        encode_envelope(Envelope(suggest_major=4))
    with pytest.raises(CodecError, match="header"):
        encode_header(Header(opcode=-1))
    with pytest.raises(CodecError, match="opcode needed"):
        make_request(RawBody(), request_id=1)
    with pytest.raises(CodecError, match="UTF-8"):
        encode_message(replace(req, body=ResolutionRequest("\ud800")))
    with pytest.raises(CodecError, match="cannot encode"):
        encode_message(replace(req, body="nonsense"))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="offset"):
        decode_value(VALUE_WIRE, -1)


# ---------------------------------------------------------------------------------------------- round trips

utf8_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
values = st.builds(
    HandleValue,
    index=st.integers(0, 2**32 - 1),
    type=utf8_text,
    data=st.binary(max_size=60),
    ttl=st.integers(0, 2**31 - 1),
    ttl_absolute=st.booleans(),
    timestamp=st.integers(0, 2**32 - 1),
    permissions=st.integers(0, 15),
    references=st.lists(st.builds(Reference, handle=utf8_text, index=st.integers(0, 2**32 - 1)), max_size=3).map(tuple),
)
bodies = st.one_of(
    st.builds(
        ResolutionRequest,
        handle=utf8_text,
        indexes=st.lists(st.integers(0, 2**32 - 1), max_size=5).map(tuple),
        types=st.lists(utf8_text, max_size=4).map(tuple),
    ),
    st.builds(GetSiteInfoRequest, handle=utf8_text),
)


@settings(max_examples=200)
@given(body=bodies, request_id=st.integers(0, 2**32 - 1), flags=st.integers(0, 2**32 - 1))
def test_request_round_trip(body: ResolutionRequest | GetSiteInfoRequest, request_id: int, flags: int) -> None:
    msg = make_request(body, request_id=request_id, op_flags=flags)
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=150)
@given(
    vals=st.lists(values, max_size=5),
    handle=utf8_text,
    rd=st.sampled_from([None, HASH_MD5, HASH_SHA1, HASH_SHA256]),
)
def test_response_round_trip(vals: list[HandleValue], handle: str, rd: int | None) -> None:
    flags = OpFlag.RD if rd else 0
    req = decode_message(encode_message(make_request(ResolutionRequest(handle), request_id=3, op_flags=flags)))
    reply = reply_to(req, ResolutionResponse(handle, tuple(vals)), expiration=1, digest_algorithm=rd or HASH_SHA1)
    got = decode_message(encode_message(reply))
    assert got == reply
    assert (got.digest is not None) == bool(rd)


# ---------------------------------------------------------------------------------------------- UDP


def _big_response() -> tuple[Envelope, bytes]:
    req = decode_message(REQ_WIRE)
    vals = tuple(replace(VALUE, index=i, data=b"x" * 300) for i in range(12))
    wire = encode_message(reply_to(req, ResolutionResponse("88.118.8/1", vals), expiration=0))
    return decode_envelope(wire), wire[ENVELOPE_SIZE:]


def test_split_udp_packets() -> None:
    env, payload = _big_response()
    packets = split_udp(env, payload)
    assert len(packets) == -(-len(payload) // 492) > 1
    assert all(len(p) == 512 for p in packets[:-1])
    assert len(packets[-1]) == 20 + len(payload) - 492 * (len(packets) - 1)
    for i, p in enumerate(packets):
        penv = decode_envelope(p)
        assert (penv.sequence, penv.length, penv.request_id) == (i, len(payload), 0x01020304)
    assert b"".join(p[20:] for p in packets) == payload
    single = split_udp(env, payload[:100])
    assert len(single) == 1 and decode_envelope(single[0]).length == 100
    with pytest.raises(CodecError):
        split_udp(env, payload, max_packet=20)


@settings(max_examples=60)
@given(order=st.permutations(range(8)), dup=st.integers(0, 7))
def test_reassembly_any_order(order: list[int], dup: int) -> None:
    env, payload = _big_response()
    packets = split_udp(replace(env, truncated=True), payload[: 492 * 7 + 10])
    assert len(packets) == 8
    ra = UdpReassembler()
    results = []
    for i in [*order[:-1], order[dup % 7], order[-1]]:  # one packet arrives twice
        out = ra.add(("10.0.0.1", 5000), packets[i], now=0.0)
        if out is not None:
            results.append(out)
    assert len(results) == 1 and results[0][1] == payload[: 492 * 7 + 10]
    assert results[0][0].sequence == 0 and len(ra) == 0 and ra.pending_bytes == 0


def test_reassembly_single_and_jumbo_datagrams() -> None:
    ra = UdpReassembler()
    assert ra.add("a", REQ_WIRE, 0.0) == (decode_envelope(REQ_WIRE), REQ_WIRE[20:])
    env, payload = _big_response()
    jumbo = encode_envelope(replace(env, length=len(payload))) + payload  # one oversized datagram
    assert ra.add("a", jumbo, 0.0) == (env, payload)


def test_reassembly_rejects_inconsistent_packets() -> None:
    env, payload = _big_response()
    packets = split_udp(env, payload)
    ra = UdpReassembler()
    with pytest.raises(CodecError, match="carries"):
        ra.add("a", packets[0][:-1], 0.0)
    with pytest.raises(CodecError, match="packet 99"):
        ra.add("a", encode_envelope(replace(env, sequence=99, length=len(payload))) + b"x", 0.0)
    assert ra.add("a", packets[0], 0.0) is None
    other = encode_envelope(replace(env, sequence=1, length=len(payload), session_id=4)) + packets[1][20:]
    with pytest.raises(CodecError, match="does not match"):
        ra.add("a", other, 0.0)
    with pytest.raises(CodecError, match="envelope"):
        ra.add("a", b"short", 0.0)


def test_reassembly_expiry_and_bounds() -> None:
    env, payload = _big_response()
    packets = split_udp(env, payload)
    ra = UdpReassembler(timeout=5.0, max_pending=2)
    assert ra.add("a", packets[0], now=100.0) is None
    assert ra.add("b", packets[0], now=101.0) is None
    assert ra.add("c", packets[0], now=102.0) is None  # evicts "a", the oldest
    assert len(ra) == 2 and ra.dropped == 1
    assert ra.expire(106.5) == 1  # "b" (deadline 106) goes, "c" (deadline 107) stays
    assert len(ra) == 1 and ra.dropped == 2
    assert ra.expire(1000.0) == 1 and len(ra) == 0 and ra.pending_bytes == 0
    small = UdpReassembler(max_bytes=len(payload) + 10)
    assert small.add("a", packets[0], 0.0) is None
    assert small.add("b", packets[0], 0.0) is None  # byte budget: "a" evicted
    assert len(small) == 1 and small.dropped == 1
    tiny = UdpReassembler(max_bytes=100)
    with pytest.raises(CodecError, match="reassembly buffer"):
        tiny.add("a", packets[0], 0.0)


# ---------------------------------------------------------------------------------------------- fuzz


def _valid_messages() -> list[bytes]:
    req = decode_message(REQ_WIRE)
    rd_req = decode_message(
        encode_message(make_request(ResolutionRequest("a/b", (1, 2)), request_id=2, op_flags=OpFlag.RD))
    )
    site_req = decode_message(encode_message(make_request(GetSiteInfoRequest("/"), request_id=3)))
    return [
        REQ_WIRE,
        encode_message(reply_to(req, ResolutionResponse("88.118.8/1", (VALUE, VALUE)), expiration=5)),
        encode_message(reply_to(rd_req, ErrorResponse("nope"), response_code=100, expiration=5)),
        encode_message(reply_to(site_req, GetSiteInfoResponse.from_site(SITE), expiration=5)),
        encode_message(make_request(RawBody(b"abc"), opcode=104, request_id=4)),
    ]


VALID = _valid_messages()


def _mutated() -> st.SearchStrategy[bytes]:
    def mutate(base: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
        out = bytearray(base)
        for kind, pos, blob in ops:
            pos %= len(out) + 1
            if kind == 0:
                out[pos : pos + len(blob)] = blob  # overwrite
            elif kind == 1:
                out[pos:pos] = blob  # insert
            elif kind == 2:
                del out[pos : pos + len(blob) + 1]  # delete
            else:
                del out[pos:]  # truncate
        return bytes(out)

    op = st.tuples(st.integers(0, 3), st.integers(0, 500), st.binary(min_size=1, max_size=5))
    return st.builds(mutate, st.sampled_from(VALID), st.lists(op, min_size=1, max_size=4))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=400), _mutated(), _mutated().map(_fix_lengths)))
def test_fuzz_decoders_only_raise_codec_error(data: bytes) -> None:
    for decode in (decode_message, decode_envelope, decode_header, decode_value):
        with contextlib.suppress(CodecError):
            decode(data)
    with contextlib.suppress(CodecError):
        decode_payload(Envelope(length=len(data)), data)
    with contextlib.suppress(CodecError):
        msg = decode_message(data)
        # whatever decodes must encode again, to a message that decodes to the same thing
        assert decode_message(encode_message(msg)) == msg
        if isinstance(msg.body, GetSiteInfoResponse):
            assert isinstance(msg.body.site, SiteInfo)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(st.one_of(st.binary(max_size=80), _mutated()), max_size=12), now=st.floats(0, 100))
def test_fuzz_reassembler_only_raises_codec_error(packets: list[bytes], now: float) -> None:
    ra = UdpReassembler(max_pending=3, max_bytes=5000, max_packet=60)
    for i, p in enumerate(packets):
        with contextlib.suppress(CodecError):
            ra.add(i % 3, p, now + i)
        assert len(ra) <= 3 and ra.pending_bytes <= 5000
