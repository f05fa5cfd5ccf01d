"""Reply templates of the native fast path: the bytes a template holds, and the bounds of the memo
that keeps them per record object and request body."""

from __future__ import annotations

from registry.errors import RC_SUCCESS, RC_VALUES_NOT_FOUND
from registry.model import HandleValue, Record
from resolver.native.codec import (
    ENVELOPE_SIZE,
    ResolutionRequest,
    ResolutionResponse,
    decode_envelope,
    decode_payload,
    encode_message,
    make_request,
    reply_to,
)
from resolver.native.replies import TEMPLATES_PER_RECORD, Template, Templates, text_bytes


def record(n: int, data: bytes = b"https://example.com/") -> Record:
    return Record(f"88.118.8/r{n}", (HandleValue(1, "URL", data + str(n).encode()),), version=n)


def test_a_template_is_the_reply_but_its_per_request_fields() -> None:
    request = make_request(ResolutionRequest("88.118.8/r1"), request_id=9, session_id=4)
    value = HandleValue(1, "URL", b"https://example.com/1")
    reply = encode_message(
        reply_to(request, ResolutionResponse("88.118.8/r1", (value,)), expiration=1_800_000_000, version=(2, 10))
    )
    body = reply[ENVELOPE_SIZE + 24 : -4]
    template = Template(RC_SUCCESS, body)
    # envelope bytes 12..20, header bytes 0..8, then from the header's body length to the end
    assert template.seq_length == reply[12:20]
    assert template.codes == reply[ENVELOPE_SIZE : ENVELOPE_SIZE + 8]
    assert template.tail == reply[ENVELOPE_SIZE + 20 :]
    decoded = decode_payload(decode_envelope(reply), reply[ENVELOPE_SIZE:])
    assert decoded.body == ResolutionResponse("88.118.8/r1", (value,))


def test_templates_are_kept_per_record_object_and_body() -> None:
    memo = Templates()
    one = record(1)
    found = memo.put(one, b"q", Template(RC_SUCCESS, text_bytes("x")))
    assert memo.get(one, b"q") is found
    assert memo.get(one, b"other") is None
    assert memo.get(record(1), b"q") is None  # an equal record, but another object: a write made it


def test_templates_are_bounded_in_records_queries_and_bytes() -> None:
    memo = Templates(size=3)
    records = [record(n) for n in range(5)]
    for r in records:
        memo.put(r, b"q", Template(RC_VALUES_NOT_FOUND, text_bytes("")))
    assert len(memo) == 3 and memo.get(records[0], b"q") is None and memo.get(records[4], b"q") is not None

    one = records[4]
    for i in range(TEMPLATES_PER_RECORD + 5):
        memo.put(one, b"q%d" % i, Template(RC_VALUES_NOT_FOUND, text_bytes("")))
    assert sum(memo.get(one, b"q%d" % i) is not None for i in range(TEMPLATES_PER_RECORD + 5)) <= TEMPLATES_PER_RECORD

    small = Templates(max_bytes=10_000)
    big = [record(n, b"x" * 3000) for n in range(10)]
    for r in big:
        small.put(r, b"q", Template(RC_SUCCESS, text_bytes(r.values[0].data.decode())))
    assert small.bytes <= 10_000 and 0 < len(small) < 10
    assert small.get(big[-1], b"q") is not None  # the newest stays
    huge = record(99, b"y" * 20_000)
    small.put(huge, b"q", Template(RC_SUCCESS, text_bytes(huge.values[0].data.decode())))
    assert small.get(huge, b"q") is None and small.bytes <= 10_000  # larger than the bound: not kept
