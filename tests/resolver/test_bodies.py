"""resolver.http.bodies: gzip and deflate request bodies decoded in bounded pieces (HTTP behaviour is in
test_client_input.py)."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest

from registry.errors import InvalidRequest
from resolver.http.bodies import PIECE, BodyDecoder, decode_body

DATA = random.Random(7).randbytes(300_000) + b"a" * 1_000_000  # some incompressible, some not


def feed_all(coding: str, raw: bytes, chunk: int) -> list[bytes]:
    decoder = BodyDecoder(coding)
    out = []
    for start in range(0, len(raw), chunk):
        out.extend(decoder.feed(raw[start : start + chunk]))
    decoder.close()
    return out


@pytest.mark.parametrize(
    ("coding", "raw"),
    [
        ("gzip", gzip.compress(DATA)),
        ("gzip", gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]) + b"\0\0"),  # members, padding
        ("deflate", zlib.compress(DATA)),
        ("deflate", zlib.compress(DATA)[2:-4]),  # raw deflate, as some clients send it
    ],
)
@pytest.mark.parametrize("chunk", [1, 1000, 65536, 10**7])
def test_round_trip_in_bounded_pieces(coding: str, raw: bytes, chunk: int) -> None:
    if chunk == 1:
        raw = raw[:5000]  # byte by byte: the start of the stream is enough
        pieces = []
        decoder = BodyDecoder(coding)
        for n in range(len(raw)):
            pieces.extend(decoder.feed(raw[n : n + 1]))
        assert DATA.startswith(b"".join(pieces))
        return
    pieces = feed_all(coding, raw, chunk)
    assert b"".join(pieces) == DATA
    assert max(map(len, pieces)) <= PIECE


def test_a_bomb_is_stopped_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 200_000_000)
    assert len(bomb) < 250_000
    assert decode_body(bomb, "gzip", 1_000_000) is None
    assert decode_body(gzip.compress(b"x" * 1000), "gzip", 1000) == b"x" * 1000


@pytest.mark.parametrize(
    ("coding", "raw", "why"),
    [
        ("gzip", b'{"values": []}', "not valid gzip"),
        ("deflate", b'{"values": []}', "not valid deflate"),
        ("gzip", gzip.compress(b"abc" * 100)[:-5], "ends before"),
        ("deflate", zlib.compress(b"abc") + b"junk", "data after the end"),
        ("gzip", gzip.compress(b"abc") + b"junk", "not valid gzip"),
    ],
)
def test_corrupt_or_cut_streams_are_refused(coding: str, raw: bytes, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        decode_body(raw, coding, 10**6)


def test_identity_and_empty() -> None:
    assert decode_body(b"as is", None, 1) == b"as is"  # identity: the route's own limit applies
    assert decode_body(b"", "gzip", 10) == b""
