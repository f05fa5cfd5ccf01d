"""The native Handle protocol over real UDP and TCP sockets on loopback, against the app on a real
SQLite store: resolution (filters, not found, values not found, not responsible, non-public values
withheld), get-site-info, multi-packet UDP replies and requests, the request digest, id and version
echo, malformed input, bounded connections and tasks, and a fuzzer aimed at the live UDP endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from registry.errors import (
    RC_ERROR,
    RC_HANDLE_NOT_FOUND,
    RC_INVALID_HANDLE,
    RC_OPERATION_NOT_SUPPORTED,
    RC_PROTOCOL_ERROR,
    RC_SERVER_NOT_RESP,
    RC_SERVER_TOO_BUSY,
    RC_SUCCESS,
    RC_VALUES_NOT_FOUND,
    StoreUnavailable,
)
from registry.model import HandleValue, Reference
from registry.stores.base import MUST_NOT_EXIST, HandleWrite
from registry.valuedata import PROTO_TCP, PROTO_UDP, decode_site
from resolver.cache.local_tier import LocalTier
from resolver.cache.tiered import TieredCache
from resolver.config import Config, load_config
from resolver.http.app import node_site
from resolver.http.keys import STATE_KEY
from resolver.native.codec import (
    DEFAULT_REQUEST_FLAGS,
    ENVELOPE_SIZE,
    HASH_SHA1,
    HASH_SHA256,
    MAX_MESSAGE,
    OC_CREATE_HANDLE,
    OC_SESSION_SETUP,
    Envelope,
    ErrorResponse,
    GetSiteInfoRequest,
    GetSiteInfoResponse,
    Message,
    OpFlag,
    RawBody,
    ResolutionRequest,
    ResolutionResponse,
    UdpReassembler,
    decode_envelope,
    decode_payload,
    encode_message,
    encode_payload,
    make_request,
    request_digest,
    split_udp,
)
from resolver.native.handler import NativeHandler
from resolver.native.server import NativeServer, start_native
from resolver.resolve import Resolver
from resolver.server import node_app
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX, basic

NODE_HANDLE = f"0.NA/{NODE_PREFIX}"
ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port free for both TCP and UDP on loopback."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind((LOOPBACK, 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def node_config(tmp_path: Any, port: int) -> Config:
    return load_config(
        env={},
        overrides={"data_dir": str(tmp_path), "store": f"sqlite:///{tmp_path}/idnode.db", "native_port": port},
    )


# ---------------------------------------------------------------------------------------------- clients


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


@dataclass
class Node:
    client: TestClient
    config: Config
    port: int
    native: NativeServer
    udp_transport: asyncio.DatagramTransport
    datagrams: _Datagrams

    @property
    def state(self) -> Any:
        return self.client.server.app[STATE_KEY]

    async def create(self, handle: str, values: list[dict[str, Any]]) -> None:
        r = await self.client.put(f"/api/handles/{handle}", json={"values": values}, headers=ADMIN)
        assert r.status in (200, 201), await r.text()

    def send(self, data: bytes) -> None:
        self.udp_transport.sendto(data)

    async def udp_packets(self, timeout: float = 3.0) -> list[bytes]:
        """The datagrams of the next reply (one message, maybe in several packets)."""
        ra = UdpReassembler()
        packets = []
        while True:
            data = await asyncio.wait_for(self.datagrams.queue.get(), timeout)
            packets.append(data)
            if ra.add("server", data, 0.0) is not None:
                return packets

    async def udp_reply(self, timeout: float = 3.0) -> Message:
        packets = await self.udp_packets(timeout)
        whole = UdpReassembler()
        for p in packets:
            got = whole.add("server", p, 0.0)
        assert got is not None
        return decode_payload(*got)

    async def udp(self, request: Message) -> Message:
        self.send(encode_message(request))
        return await self.udp_reply()

    async def no_udp_reply(self, wait: float = 0.3) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(self.datagrams.queue.get(), wait)

    async def tcp(self, request: Message | bytes) -> Message:
        async with tcp_connection(self.port) as (reader, writer):
            writer.write(request if isinstance(request, bytes) else encode_message(request))
            return await read_frame(reader)


@contextlib.asynccontextmanager
async def tcp_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_frame(reader: asyncio.StreamReader, timeout: float = 3.0) -> Message:
    env = decode_envelope(await asyncio.wait_for(reader.readexactly(ENVELOPE_SIZE), timeout))
    return decode_payload(env, await asyncio.wait_for(reader.readexactly(env.length), timeout))


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """Did the server close (or abort) the connection?"""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionError:
        return True


async def eventually(check: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def node(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    port = free_port()
    config = node_config(tmp_path, port)
    async with TestClient(TestServer(node_app(config))) as client:
        native = NativeServer.on_port(port)
        assert native is not None, "the app did not start the native listeners"
        loop = asyncio.get_running_loop()
        udp, datagrams = await loop.create_datagram_endpoint(_Datagrams, remote_addr=(LOOPBACK, port))
        try:
            yield Node(client, config, port, native, udp, datagrams)
        finally:
            udp.close()
        await eventually(lambda: not native.connections and native.inflight == 0)
    assert NativeServer.on_port(port) is None  # closed with the app


def resolution(handle: str, request_id: int = 1, **kw: Any) -> Message:
    indexes = tuple(kw.pop("indexes", ()))
    types = tuple(kw.pop("types", ()))
    return make_request(ResolutionRequest(handle, indexes, types), request_id=request_id, **kw)


def url(index: int, target: str) -> dict[str, Any]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": target}}


ITEM = f"{NODE_PREFIX}/native-item"
ITEM_VALUES = [
    url(1, "https://example.com/item"),
    {"index": 2, "type": "EMAIL", "data": {"format": "string", "value": "ops@example.com"}},
    {"index": 3, "type": "NOTE", "data": {"format": "string", "value": "internal-note"}, "permissions": "1100"},
    {"index": 4, "type": "HS_SITE.PREFIX", "data": {"format": "string", "value": "x"}},
]


def by_index(reply: Message) -> dict[int, Any]:
    assert reply.header.response_code == RC_SUCCESS, reply
    assert isinstance(reply.body, ResolutionResponse)
    return {v.index: v for v in reply.body.values}


# ---------------------------------------------------------------------------------------------- resolution


async def test_resolution_over_udp_and_tcp(node: Node) -> None:
    await node.create(ITEM, ITEM_VALUES)
    for ask in (node.udp, node.tcp):
        reply = await ask(resolution(ITEM, request_id=42))
        values = by_index(reply)
        assert set(values) == {1, 2, 4, 100}  # 3 is not publicly readable; 100 is the default HS_ADMIN
        assert values[1].type == "URL" and values[1].data == b"https://example.com/item"
        assert reply.body.handle == ITEM
        assert reply.envelope.request_id == 42
        assert reply.header.opcode == 1 and reply.header.site_serial == 1
        assert reply.header.expiration > time.time() + 3600
    rest = await (await node.client.get(f"/api/handles/{ITEM}")).json()
    assert {v["index"] for v in rest["values"]} == set(values)  # the same read path as REST


@pytest.mark.parametrize(
    ("indexes", "types", "expected"),
    [
        ((), ("URL",), {1}),
        ((), ("url",), {1}),  # types compare case-insensitively
        ((2,), (), {2}),
        ((2,), ("URL",), {1, 2}),  # index OR type, as HANDLE.NET and REST
        ((), ("HS_SITE.",), {4}),  # a trailing dot matches subtypes
        ((), ("HS_SITE",), set()),
        ((3,), (), set()),  # matches, but not public: values not found, never the value
        ((99,), (), set()),
        ((), ("NOPE",), set()),
    ],
)
async def test_type_and_index_filters(node: Node, indexes: tuple, types: tuple, expected: set[int]) -> None:
    await node.create(ITEM, ITEM_VALUES)
    for ask in (node.udp, node.tcp):
        reply = await ask(resolution(ITEM, indexes=indexes, types=types))
        if expected:
            assert set(by_index(reply)) == expected
        else:
            assert reply.header.response_code == RC_VALUES_NOT_FOUND
            assert isinstance(reply.body, ErrorResponse)


async def test_not_found_and_invalid(node: Node) -> None:
    reply = await node.udp(resolution(f"{NODE_PREFIX}/no-such-item", request_id=5))
    assert reply.header.response_code == RC_HANDLE_NOT_FOUND and reply.envelope.request_id == 5
    assert isinstance(reply.body, ErrorResponse)
    reply = await node.tcp(resolution(f"{NODE_PREFIX}.7/no-such-item"))
    assert reply.header.response_code == RC_HANDLE_NOT_FOUND
    for bad in (f"{NODE_PREFIX}/", f"{NODE_PREFIX}/a\x01b", "/x"):
        reply = await node.udp(resolution(bad))
        assert reply.header.response_code == RC_INVALID_HANDLE, bad


async def test_prefix_without_slash_means_its_prefix_handle(node: Node) -> None:
    reply = await node.udp(resolution(NODE_PREFIX))
    assert reply.body.handle == NODE_PREFIX
    assert "HS_SITE" in {v.type for v in by_index(reply).values()}


async def test_not_responsible_answers_without_touching_store_or_cache(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def must_not_be_called(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("looked up a handle outside the node's namespace")

    monkeypatch.setattr(node.state.resolver, "lookup", must_not_be_called)
    monkeypatch.setattr(node.state.registry.store, "get", must_not_be_called)
    for handle in ("20.500.123/x", "88.118.80/x", "0.NA/88.118", "88.118/x", "0.SITE/status"):
        for ask in (node.udp, node.tcp):
            reply = await ask(resolution(handle))
            assert reply.header.response_code == RC_SERVER_NOT_RESP, handle
            assert reply.body.message


async def test_store_unavailable_is_server_too_busy_and_failures_are_errors(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("store is closed")

    monkeypatch.setattr(node.state.resolver, "lookup", down)
    assert (await node.udp(resolution(ITEM))).header.response_code == RC_SERVER_TOO_BUSY

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(node.state.resolver, "lookup", broken)
    reply = await node.tcp(resolution(ITEM))
    assert reply.header.response_code == RC_ERROR and "boom" not in reply.body.message
    monkeypatch.undo()
    assert (await node.udp(resolution(NODE_HANDLE))).header.response_code == RC_SUCCESS


async def test_non_public_values_never_sent(node: Node) -> None:
    await node.create(ITEM, ITEM_VALUES)
    flag_sets = [DEFAULT_REQUEST_FLAGS, OpFlag.REC, OpFlag.AT, 0, 0xFFFFFFFF & ~OpFlag.RD]
    for flags in flag_sets:
        for ask in (node.udp, node.tcp):
            node_values = by_index(await ask(resolution(NODE_HANDLE, op_flags=flags)))
            assert "HS_SECKEY" not in {v.type for v in node_values.values()}
            assert 300 not in node_values and {"HS_SITE", "HS_ADMIN"} <= {v.type for v in node_values.values()}
            item = by_index(await ask(resolution(ITEM, op_flags=flags)))
            assert 3 not in item and all(v.public_read for v in item.values())
            secret = await ask(resolution(NODE_HANDLE, indexes=(300,), types=("HS_SECKEY",), op_flags=flags))
            assert secret.header.response_code == RC_VALUES_NOT_FOUND
    raw = encode_message(await node.udp(resolution(ITEM)))
    assert b"internal-note" not in raw


async def test_cache_hits_are_answered_at_once_and_a_write_is_seen(node: Node) -> None:
    """A resolution whose record is in the local tier is answered in the listener's receive callback
    (no task), from the reply template of that record and query, with this request's ids patched in;
    the next resolution after a write serves the new record, over both transports."""
    await node.create(ITEM, ITEM_VALUES)
    stats = node.native.stats
    found = node.state.resolutions._found["native"]
    for ask in (node.udp, node.tcp):
        first = await ask(resolution(ITEM, request_id=7, types=("URL",)))
        immediate, counted = stats.immediate, found.get(NODE_PREFIX, 0)
        again = await ask(resolution(ITEM, request_id=8, session_id=3, types=("URL",)))
        assert stats.immediate == immediate + 1  # answered at once: a cache hit
        assert found.get(NODE_PREFIX, 0) == counted + 1  # and counted in the resolution statistics
        assert (again.envelope.request_id, again.envelope.session_id) == (8, 3)
        assert again.body == first.body and set(by_index(again)) == {1}
        ready = stats.ready
        third = await ask(resolution(ITEM, request_id=9, session_id=4, types=("URL",)))
        assert stats.ready == ready + 1 and stats.immediate == immediate + 2  # from the ready reply
        assert found.get(NODE_PREFIX, 0) == counted + 2
        assert (third.envelope.request_id, third.envelope.session_id) == (9, 4) and third.body == first.body
        assert not node.native.inflight
    await node.create(ITEM, [url(1, "https://example.com/moved"), *ITEM_VALUES[1:]])
    for ask in (node.udp, node.tcp, node.udp):
        assert by_index(await ask(resolution(ITEM, types=("URL",))))[1].data == b"https://example.com/moved"
        private = await ask(resolution(ITEM, indexes=(3,)))  # templates hold public values only
        assert private.header.response_code == RC_VALUES_NOT_FOUND
    # Authoritative requests never take the cache's answer.
    immediate = stats.immediate
    assert by_index(await node.udp(resolution(ITEM, op_flags=DEFAULT_REQUEST_FLAGS | OpFlag.AT)))[1]
    assert stats.immediate == immediate


async def test_get_site_info(node: Node) -> None:
    expected = decode_site(node_site(node.config))
    for ask in (node.udp, node.tcp):
        reply = await ask(make_request(GetSiteInfoRequest(), request_id=77))
        assert reply.header.response_code == RC_SUCCESS and reply.envelope.request_id == 77
        assert isinstance(reply.body, GetSiteInfoResponse)
        site = reply.body.site
        assert site == expected
        ports = {(i.protocol, i.port) for i in site.servers[0].interfaces}
        assert {(PROTO_TCP, node.port), (PROTO_UDP, node.port)} <= ports
    # HANDLE.NET sends the handle field; an empty body is accepted as well.
    empty = make_request(GetSiteInfoRequest(), request_id=78)
    wire = encode_payload(empty)
    header = bytearray(wire[:24])
    header[20:24] = b"\0\0\0\0"
    payload = bytes(header) + b"\0\0\0\0"
    reply = await node.udp(decode_payload(Envelope(request_id=78, length=len(payload)), payload))
    assert reply.header.response_code == RC_SUCCESS and reply.body.site == expected


# ---------------------------------------------------------------------------------------------- wire details


async def test_large_record_is_split_into_udp_packets(node: Node) -> None:
    values = [url(i, f"https://example.com/{i}/" + "x" * 300) for i in range(1, 11)]  # ~3.6 KB: under 4,096
    await node.create(ITEM, values)
    node.send(encode_message(resolution(ITEM, request_id=9)))
    packets = await node.udp_packets()
    assert len(packets) > 6 and all(len(p) <= 512 for p in packets)
    envs = [decode_envelope(p) for p in packets]
    assert sorted(e.sequence for e in envs) == list(range(len(packets)))
    assert {e.request_id for e in envs} == {9} and not any(e.truncated for e in envs)
    ra = UdpReassembler()
    for p in packets:
        got = ra.add("server", p, 0.0)
    reply = decode_payload(*got)
    assert set(by_index(reply)) == {*range(1, 11), 100}
    assert reply.body == (await node.tcp(resolution(ITEM))).body


async def test_multi_packet_udp_request(node: Node) -> None:
    await node.create(ITEM, ITEM_VALUES)
    types = (*(f"NO-SUCH-TYPE-{i:04d}" for i in range(60)), "EMAIL")
    request = resolution(ITEM, request_id=31337, types=types)
    wire = encode_message(request)
    env, payload = decode_envelope(wire), wire[ENVELOPE_SIZE:]
    packets = split_udp(replace(env, truncated=True), payload)
    assert len(packets) >= 3
    random.Random(7).shuffle(packets)  # any order
    for packet in packets:
        node.send(packet)
    reply = await node.udp_reply()
    assert set(by_index(reply)) == {2} and reply.envelope.request_id == 31337
    assert len(node.native.udp_protocol.reassembler) == 0


async def test_request_digest_and_version_negotiation(node: Node) -> None:
    await node.create(ITEM, ITEM_VALUES)
    request = resolution(ITEM, op_flags=DEFAULT_REQUEST_FLAGS | OpFlag.RD)
    signed = encode_payload(request)[:-4]  # header + body, without the credential
    for ask in (node.udp, node.tcp):
        reply = await ask(request)
        assert reply.header.has(OpFlag.RD)
        assert reply.digest == request_digest(HASH_SHA256, signed)
        assert (reply.envelope.major, reply.envelope.minor) == (2, 10)
    old = resolution(ITEM, op_flags=OpFlag.RD, version=(2, 5))
    old = replace(old, envelope=replace(old.envelope, suggest_major=2, suggest_minor=5))
    reply = await node.udp(old)
    assert (reply.envelope.major, reply.envelope.minor) == (2, 5)  # the client's version
    assert reply.envelope.suggested_version == (2, 10)  # and ours on offer
    assert reply.digest == request_digest(HASH_SHA1, encode_payload(old)[:-4])
    plain = await node.tcp(resolution(ITEM))
    assert plain.digest is None and not plain.header.has(OpFlag.RD)


async def test_session_and_request_ids_are_echoed(node: Node) -> None:
    for session, request_id in ((0, 0), (0xDEADBEEF, 0xFFFFFFFF), (1, 123456)):
        for ask in (node.udp, node.tcp):
            for request in (
                resolution(NODE_HANDLE, request_id=request_id, session_id=session),
                resolution("20.500/x", request_id=request_id, session_id=session),
                make_request(GetSiteInfoRequest(), request_id=request_id, session_id=session),
            ):
                reply = await ask(request)
                assert (reply.envelope.session_id, reply.envelope.request_id) == (session, request_id)


async def test_unsupported_operations(node: Node) -> None:
    for opcode in (OC_CREATE_HANDLE, OC_SESSION_SETUP, 105, 1000, 0xFFFFFFFF):
        for ask in (node.udp, node.tcp):
            reply = await ask(make_request(RawBody(b"\0\0\0\0"), request_id=3, opcode=opcode))
            assert reply.header.response_code == RC_OPERATION_NOT_SUPPORTED, opcode
            assert reply.header.opcode == opcode and reply.envelope.request_id == 3
    reply = await node.udp(make_request(RawBody(), request_id=4, opcode=0))
    assert reply.header.response_code == RC_PROTOCOL_ERROR


async def test_tcp_connection_carries_several_requests(node: Node) -> None:
    await node.create(ITEM, ITEM_VALUES)
    async with tcp_connection(node.port) as (reader, writer):
        batch = b"".join(encode_message(resolution(ITEM, request_id=i, types=("URL",))) for i in range(1, 21))
        writer.write(batch[:37])  # in pieces that cut envelopes and bodies
        await asyncio.sleep(0.01)
        writer.write(batch[37:])
        for i in range(1, 21):
            reply = await read_frame(reader)
            assert reply.envelope.request_id == i and set(by_index(reply)) == {1}
        writer.write(encode_message(make_request(GetSiteInfoRequest(), request_id=99)))
        assert (await read_frame(reader)).envelope.request_id == 99
        assert len(node.native.connections) == 1
    await eventually(lambda: not node.native.connections)


# ---------------------------------------------------------------------------------------------- malformed input


def _envelope(request_id: int, length: int, sequence: int = 0) -> bytes:
    return struct.pack(">BBBBIIII", 2, 10, 2, 10, 0, request_id, sequence, length)


async def test_malformed_datagrams(node: Node) -> None:
    good = encode_message(resolution(NODE_HANDLE, request_id=1000))
    header_and_body = good[ENVELOPE_SIZE:]
    # Too short to hold a request id: dropped.
    for short in (b"", b"\x02", good[:19]):
        node.send(short)
        await node.no_udp_reply(0.1)
    # A request id can be read: PROTOCOL_ERROR, with that id.
    cases = {
        2001: _envelope(2001, 1000) + header_and_body[:10],  # announces more than it carries
        2002: _envelope(2002, 10) + header_and_body,  # announces less than it carries
        2003: _envelope(2003, MAX_MESSAGE + 1) + header_and_body,  # over the limit
        2004: _envelope(2004, 12) + header_and_body[:12],  # a header cut short
        2005: _envelope(2005, len(header_and_body)) + header_and_body[:24] + b"\xff" * (len(header_and_body) - 24),
        2006: _envelope(2006, 0, sequence=5),
        2007: struct.pack(">BBBBIIII", 2, 10, 0xC2, 10, 0, 2007, 0, len(header_and_body)) + header_and_body,  # EC|CP
    }
    for request_id, data in cases.items():
        node.send(data)
        reply = await node.udp_reply()
        assert reply.envelope.request_id == request_id
        assert reply.header.response_code == RC_PROTOCOL_ERROR, request_id
        assert isinstance(reply.body, ErrorResponse) and reply.body.message
    # A response (not a request) is never answered: two nodes cannot bounce errors at each other.
    response = encode_message(await node.udp(resolution(f"{NODE_PREFIX}/nope", request_id=3000)))
    node.send(response)
    await node.no_udp_reply()
    # The endpoint still answers good requests, and nothing is left behind.
    reply = await node.udp(resolution(NODE_HANDLE, request_id=4000))
    assert reply.header.response_code == RC_SUCCESS and reply.envelope.request_id == 4000
    await eventually(lambda: node.native.inflight == 0)
    assert node.native.stats.malformed >= len(cases) and node.native.stats.dropped >= 3


async def test_malformed_tcp_frames(node: Node) -> None:
    good = encode_message(resolution(NODE_HANDLE, request_id=1))
    body = good[ENVELOPE_SIZE:]
    async with tcp_connection(node.port) as (reader, writer):
        # A message whose header announces more body than there is: an error, and the stream goes on.
        bad = bytearray(body)
        bad[20:24] = (len(body) * 2).to_bytes(4, "big")
        writer.write(_envelope(11, len(bad)) + bytes(bad))
        writer.write(_envelope(12, 3) + b"abc")  # shorter than a header
        writer.write(encode_message(make_request(RawBody(b"zz"), request_id=13, opcode=77)))  # unknown opcode
        writer.write(encode_message(resolution(NODE_HANDLE, request_id=14)))
        codes = [(m.envelope.request_id, m.header.response_code) for m in [await read_frame(reader) for _ in range(4)]]
        assert codes == [(11, RC_PROTOCOL_ERROR), (12, RC_PROTOCOL_ERROR), (13, RC_OPERATION_NOT_SUPPORTED), (14, 1)]
    # An envelope announcing more than 262,144 bytes: an error reply, then the connection is closed.
    async with tcp_connection(node.port) as (reader, writer):
        writer.write(_envelope(21, MAX_MESSAGE + 1) + b"\0" * 100)
        reply = await read_frame(reader)
        assert (reply.envelope.request_id, reply.header.response_code) == (21, RC_PROTOCOL_ERROR)
        assert await closed_by_peer(reader)
    await eventually(lambda: not node.native.connections)
    assert (await node.tcp(resolution(NODE_HANDLE, request_id=22))).header.response_code == RC_SUCCESS


async def test_tcp_limits_and_timeouts(node: Node) -> None:
    """A server with short timeouts and two connections at most, on the app's handler."""
    server = await start_native(node.native.handler, node.config, port=0, idle_timeout=0.3, max_connections=2)
    port = server.tcp_addresses[0][1]
    try:
        # At the cap a new connection is admitted and the idlest one (c1, which never asked) is closed;
        # one that trickles a message without completing it is aborted after the timeout.
        async with tcp_connection(port) as (r1, _w1), tcp_connection(port) as (r2, w2):
            w2.write(_envelope(1, 500) + b"x" * 10)
            await eventually(lambda: len(server.connections) == 2)
            async with tcp_connection(port) as (r3, w3):
                assert await closed_by_peer(r1)
                w3.write(encode_message(resolution(NODE_HANDLE, request_id=3)))
                assert (await read_frame(r3)).envelope.request_id == 3
            for _ in range(5):
                await asyncio.sleep(0.1)
                with contextlib.suppress(OSError):
                    w2.write(b"y")
            assert await closed_by_peer(r2)
        await eventually(lambda: not server.connections)
        # A client that never reads its replies cannot make the server buffer without bound.
        big = [url(i, "https://example.com/" + "z" * 2000) for i in range(1, 60)]
        await node.create(ITEM, big)
        request = encode_message(resolution(ITEM))
        sock = socket.create_connection((LOOPBACK, port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(2000):
                sock.send(request)
        await eventually(lambda: len(server.connections) == 1)
        await asyncio.sleep(0.15)
        (conn,) = server.connections
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() <= 2 * MAX_MESSAGE  # one reply or so, not 2,000
        await eventually(lambda: not server.connections, timeout=5)  # no progress: aborted
        sock.close()
        assert (await node.tcp(resolution(NODE_HANDLE))).header.response_code == RC_SUCCESS
    finally:
        await server.close()
    assert not server.connections and server.inflight == 0


async def test_caps_evict_the_idlest_and_keep_counting_right(node: Node) -> None:
    """Per-address and total caps at their smallest: each new connection evicts one, and the newcomer
    (even the only one left of its address) is tracked and served."""

    async def served(source: str, request_id: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))
        writer.write(encode_message(resolution(NODE_HANDLE, request_id=request_id)))
        assert (await read_frame(reader)).envelope.request_id == request_id
        return reader, writer

    server = await start_native(node.native.handler, node.config, port=0, max_connections=2, max_per_address=1)
    port = server.tcp_addresses[0][1]
    writers = []
    try:
        r1, w1 = await served("127.0.0.2", 1)
        r2, w2 = await served("127.0.0.2", 2)  # the address's cap: the first one goes
        assert await closed_by_peer(r1)
        r3, w3 = await served("127.0.0.3", 3)
        writers += [w1, w2, w3]
        w2.write(encode_message(resolution(NODE_HANDLE, request_id=4)))  # the idlest is now 127.0.0.3's
        assert (await read_frame(r2)).envelope.request_id == 4
        _r5, w5 = await served("127.0.0.4", 5)  # the total cap: 127.0.0.3's only connection goes
        writers.append(w5)
        assert await closed_by_peer(r3)
        r6, w6 = await served("127.0.0.3", 6)  # its address again: a group of its own anew
        writers.append(w6)
        assert await closed_by_peer(r2)
        w6.write(encode_message(resolution(NODE_HANDLE, request_id=7)))
        assert (await read_frame(r6)).envelope.request_id == 7
        assert len(server.connections) == 2 and server.stats.evicted == 3
    finally:
        for w in writers:
            w.close()
        await server.close()


async def test_close_aborts_connections_and_stops_listening(node: Node) -> None:
    server = await start_native(node.native.handler, node.config, port=0)
    port = server.tcp_addresses[0][1]
    async with tcp_connection(port) as (reader, _writer):
        await eventually(lambda: len(server.connections) == 1)
        await server.close()
        assert not server.connections
        assert await closed_by_peer(reader)
    with pytest.raises(OSError):
        await asyncio.open_connection(LOOPBACK, port)
    await server.close()  # idempotent


async def test_port_in_use_only_warns(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOOPBACK, port))
        async with TestClient(TestServer(node_app(node_config(tmp_path, port)))) as client:
            assert NativeServer.on_port(port) is None
            r = await client.get(f"/api/handles/{NODE_HANDLE}")
            assert r.status == 200  # the HTTP API runs on
    assert "native Handle protocol not started" in caplog.text


async def test_native_port_zero_disables(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    before = set(NativeServer.running)
    config = node_config(tmp_path, 0)
    async with TestClient(TestServer(node_app(config))):
        assert set(NativeServer.running) == before
    ports = {(i.protocol, i.port) for i in decode_site(node_site(config)).servers[0].interfaces}
    assert not any(proto in (PROTO_TCP, PROTO_UDP) for proto, _ in ports)


# ---------------------------------------------------------------------------------------------- fuzzing


class _ThreadNode:
    """The app running on an event loop in a thread, so a synchronous hypothesis test can aim
    datagrams at its UDP endpoint."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.native: NativeServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        runner = web.AppRunner(node_app(self.config))
        await runner.setup()  # runs the lifecycle: store, registry, resolver, then the native listeners
        self._stop = asyncio.Event()
        self.native = NativeServer.on_port(self.config.native_port)
        if self.native is not None:
            await self.native.handler.registry.store.write(EQ_WRITES, now=int(time.time()))
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the node's loop and return its result."""
        done: list[Any] = []
        ev = threading.Event()

        def run() -> None:
            done.append(fn())
            ev.set()

        self.loop.call_soon_threadsafe(run)
        assert ev.wait(5)
        return done[0]

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the node's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_ThreadNode, socket.socket]]:
    old = os.environ.get("IDNODE_ADMIN_SECRET")
    os.environ["IDNODE_ADMIN_SECRET"] = ADMIN_SECRET
    try:
        tmp = tmp_path_factory.mktemp("fuzz")
        # No per-address UDP budget here: thousands of datagrams come from one socket (the budget is
        # tested in test_native_limits).
        n = _ThreadNode(replace(node_config(tmp, free_port()), native_udp_budget=0))
        n.thread.start()
        assert n.ready.wait(30) and n.native is not None
    finally:
        if old is None:
            os.environ.pop("IDNODE_ADMIN_SECRET", None)
        else:
            os.environ["IDNODE_ADMIN_SECRET"] = old
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((LOOPBACK, n.config.native_port))
    yield n, sock
    sock.close()
    n.stop()


EQ_VALUES = (
    HandleValue(1, "URL", b"https://example.com/eq", timestamp=1_700_000_000),
    HandleValue(2, "EMAIL", b"eq@example.com", ttl=60, timestamp=1_700_000_001),
    HandleValue(3, "NOTE", b"private", permissions=0b1100, timestamp=1_700_000_002),
    HandleValue(
        5, "REF", b"", ttl=0xF0000000, ttl_absolute=True, references=(Reference("a/b", 7), Reference("c/d", 1))
    ),
    HandleValue(6, "HS_SITE.PREFIX", b"\0\1", ttl=-1, permissions=0b1111),
    HandleValue(100, "HS_ADMIN", b"\x0f\xff\0\0\0\x0d0.NA/88.118.8\0\0\x01\x2c"),
)
EQ_WRITES = [
    HandleWrite(f"{NODE_PREFIX}/eq-1", f"{NODE_PREFIX}/eq-1", NODE_PREFIX, EQ_VALUES, MUST_NOT_EXIST),
    # the same values but the one with a negative TTL (never cached): kept in the local tier
    HandleWrite(
        f"{NODE_PREFIX}/eq-2", f"{NODE_PREFIX}/eq-2", NODE_PREFIX, EQ_VALUES[:4] + EQ_VALUES[5:], MUST_NOT_EXIST
    ),
    HandleWrite(
        f"{NODE_PREFIX}/eq-private",
        f"{NODE_PREFIX}/eq-private",
        NODE_PREFIX,
        (HandleValue(1, "NOTE", b"x", permissions=0b1000),),
        MUST_NOT_EXIST,
    ),
]


def _valid_requests() -> list[bytes]:
    out = [
        encode_message(resolution(NODE_HANDLE, request_id=5)),
        encode_message(resolution(f"{NODE_PREFIX}/x", request_id=6, types=("URL", "HS_SITE."), indexes=(1, 2))),
        encode_message(make_request(GetSiteInfoRequest(), request_id=7, op_flags=OpFlag.RD)),
        encode_message(make_request(RawBody(b"abc"), request_id=8, opcode=100)),
    ]
    big = encode_message(resolution(NODE_HANDLE, request_id=9, types=tuple("T" * 40 for _ in range(30))))
    out += split_udp(replace(decode_envelope(big), truncated=True), big[ENVELOPE_SIZE:])
    return out


VALID = _valid_requests()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "grow", "length", "count"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "grow":
            data += draw(st.binary(max_size=64))
        elif kind in ("length", "count") and len(data) >= 24:
            at = 16 if kind == "length" else draw(st.integers(20, len(data) - 4))
            value = draw(st.sampled_from([0, 1, 23, 24, 492, 493, MAX_MESSAGE, MAX_MESSAGE + 1, 2**31, 2**32 - 1]))
            data[at : at + 4] = value.to_bytes(4, "big")
    return bytes(data)


def _good_reply(sock: socket.socket, request_id: int) -> Message:
    sock.send(encode_message(resolution(NODE_HANDLE, request_id=request_id)))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(70_000)
        if len(data) >= ENVELOPE_SIZE and decode_envelope(data).request_id == request_id:
            ra = UdpReassembler()
            got = ra.add("s", data, 0.0)
            while got is None:
                got = ra.add("s", sock.recv(70_000), 0.0)
            return decode_payload(*got)
    raise AssertionError("no reply to a good request")


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(datagrams=st.lists(st.one_of(st.binary(max_size=600), mutated()), min_size=1, max_size=8))
def test_fuzz_live_udp_endpoint(fuzz_node: tuple[_ThreadNode, socket.socket], datagrams: list[bytes]) -> None:
    node, sock = fuzz_node
    for data in datagrams:
        sock.send(data)
    request_id = random.randrange(1 << 20, 1 << 31)
    reply = _good_reply(sock, request_id)
    assert reply.header.response_code == RC_SUCCESS
    native = node.native
    assert native is not None
    assert node.call(lambda: len(native.udp_protocol.reassembler)) <= 256
    assert node.call(lambda: native.udp_protocol.reassembler.pending_bytes) <= 8 * MAX_MESSAGE


def test_fuzz_left_nothing_behind(fuzz_node: tuple[_ThreadNode, socket.socket]) -> None:
    node, sock = fuzz_node
    native = node.native
    assert native is not None
    assert _good_reply(sock, 424242).header.response_code == RC_SUCCESS
    deadline = time.monotonic() + 5
    while node.call(lambda: native.inflight) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.call(lambda: native.inflight) == 0
    assert node.call(lambda: native.stats.internal) == 0  # no unexpected exception on any input


# ---------------------------------------------------------------------------------------------- fast path


def _twin_handlers(node: _ThreadNode) -> tuple[NativeHandler, NativeHandler]:
    native = node.native
    assert native is not None
    resolver, registry = native.handler.resolver, native.handler.registry
    site = node_site(node.config)
    return (
        NativeHandler(resolver, registry, site, clock=lambda: 1_800_000_000.0),
        NativeHandler(resolver, registry, site, clock=lambda: 1_800_000_000.0, fast_path=False),
    )


_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
_known_handles = st.sampled_from(
    [
        f"{NODE_PREFIX}/eq-1",
        f"{NODE_PREFIX}/eq-2",
        f"{NODE_PREFIX}/eq-private",
        f"{NODE_PREFIX}/none",
        NODE_HANDLE,
        NODE_PREFIX,
        "0.na/88.118.8",
        "20.500/x",
        f"{NODE_PREFIX}/",
        "",
        "/x",
        f"{NODE_PREFIX}/a\x00b",
    ]
)
_handles = st.one_of(_known_handles, st.just(f"{NODE_PREFIX}/eq-1"), st.just(f"{NODE_PREFIX}/eq-2"), _text)
_type_names = st.sampled_from(["URL", "url", "EMAIL", "HS_SITE.", "HS_SITE", "NOTE", "REF"])
_types = st.lists(st.one_of(_type_names, _text), max_size=4)
_flags = st.one_of(
    st.lists(st.sampled_from(list(OpFlag)), max_size=5).map(lambda fs: sum({int(f) for f in fs})),
    st.integers(0, 2**32 - 1),
)
_indexes = st.lists(st.one_of(st.sampled_from([0, 1, 2, 3, 5, 6, 100, 300]), st.integers(0, 2**32 - 1)), max_size=4)
_versions = st.sampled_from([(2, 10), (2, 11), (2, 7), (2, 6), (2, 1), (2, 0), (1, 0), (3, 0), (0, 0)])


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    handle=_handles,
    types=_types,
    indexes=_indexes,
    flags=_flags,
    rd=st.booleans(),
    version=_versions,
    suggest=_versions,
    ids=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    recursion=st.integers(0, 255),
    credential=st.booleans(),
)
def test_fast_path_answers_exactly_as_the_codec_path(
    fuzz_node: tuple[_ThreadNode, socket.socket],
    handle: str,
    types: list[str],
    indexes: list[int],
    flags: int,
    rd: bool,
    version: tuple[int, int],
    suggest: tuple[int, int],
    ids: tuple[int, int],
    recursion: int,
    credential: bool,
) -> None:
    node, _ = fuzz_node
    fast, slow = _twin_handlers(node)
    request = make_request(
        ResolutionRequest(handle, tuple(indexes), tuple(types)),
        request_id=ids[1],
        session_id=ids[0],
        op_flags=(flags | (OpFlag.RD if rd else 0))
        & ~OpFlag.AT,  # the authoritative path is the same code; keep the store out of it
        recursion_count=recursion,
        version=version,
    )
    request = replace(request, envelope=replace(request.envelope, suggest_major=suggest[0], suggest_minor=suggest[1]))
    wire = encode_message(request)
    if not credential:  # HANDLE.NET always sends the 4-byte empty credential; accept its absence too
        wire = wire[:16] + struct.pack(">I", len(wire) - 24) + wire[20:-4]
    envelope, payload = wire[:ENVELOPE_SIZE], wire[ENVELOPE_SIZE:]
    got = node.run(fast.respond(envelope, payload))
    assert got == node.run(slow.respond(envelope, payload))
    assert fast.stats.fast == 1 and slow.stats.fast == 0
    # Answered at once (from the cache tier, or without a lookup), the reply is the same bytes, from
    # a template made by respond() or now, and again from that template.
    for _ in range(2):
        now = node.call(lambda: fast.respond_now(envelope, payload))
        assert now is None or now == got
    event(f"answered at once: {now is not None}")
    # Asked again with other ids and another request expiration, a reply kept ready (a success from
    # the local tier, no digest) is the same bytes as the codec path's for that request.
    again = wire[:4] + struct.pack(">II", ids[1], ids[0] ^ 0x5A5A5A5A) + wire[12:36] + b"\1\2\3\4" + wire[40:]
    expected = node.run(slow.respond(again[:ENVELOPE_SIZE], again[ENVELOPE_SIZE:]))
    for _ in range(2):
        ready = node.call(lambda: fast.respond_ready(again))
        assert ready is None or ready == expected
    event(f"answered from a ready reply: {ready is not None}")
    reply = decode_payload(decode_envelope(got), got[ENVELOPE_SIZE:])
    event(f"responseCode {reply.header.response_code}, digest {reply.digest is not None}")
    if now is not None and reply.header.response_code == RC_SUCCESS and reply.digest is None:
        assert ready is not None  # (the replies these requests get are far below READY_REPLY_MAX)
    assert (reply.envelope.session_id, reply.envelope.request_id) == ids
    if reply.header.response_code == RC_SUCCESS:
        assert all(v.public_read for v in reply.body.values)


class _StaleFlag:
    """A worker hub's stale flag (``TieredCache.peers``), set by hand."""

    def __init__(self) -> None:
        self.set = False

    def stale(self) -> bool:
        was, self.set = self.set, False
        return was


def test_ready_replies_last_while_the_local_tier_holds_their_record(
    fuzz_node: tuple[_ThreadNode, socket.socket],
) -> None:
    """A ready reply is served only while the local tier holds the very packed record it was made
    from: not after the worker hub's stale flag dropped the tier, nor after the entry was replaced
    (a write stores new bytes) or removed; never for an authoritative request."""
    node, _ = fuzz_node
    native = node.native
    assert native is not None
    flag = _StaleFlag()
    cache = TieredCache(local=LocalTier(100, 1 << 20))
    cache.peers = flag  # type: ignore[assignment]  # in place of the worker bus: its stale flag alone
    resolver = Resolver(native.handler.resolver.store, cache)
    site = node_site(node.config)
    fast = NativeHandler(resolver, native.handler.registry, site, clock=lambda: 1_800_000_000.0)
    slow = NativeHandler(resolver, native.handler.registry, site, clock=lambda: 1_800_000_000.0, fast_path=False)
    wire = encode_message(resolution(f"{NODE_PREFIX}/eq-2", request_id=5))
    envelope, payload = wire[:ENVELOPE_SIZE], wire[ENVELOPE_SIZE:]
    other = wire[:4] + struct.pack(">II", 9, 10) + wire[12:]
    expected = node.run(slow.respond(other[:ENVELOPE_SIZE], other[ENVELOPE_SIZE:]))

    def ready_again() -> bytes | None:
        assert node.call(lambda: fast.respond_ready(other)) is None  # nothing ready yet
        assert node.run(fast.respond(envelope, payload)) is not None  # the lookup fills the tier
        assert node.call(lambda: fast.respond_now(envelope, payload)) is not None  # a hit: kept ready
        return node.call(lambda: fast.respond_ready(other))  # type: ignore[no-any-return]

    assert ready_again() == expected and fast.stats.ready == 1
    # A request with a sequence number (TCP answers any; over UDP, a fragment) is not kept ready.
    fragment = wire[:12] + struct.pack(">I", 5) + wire[16:]
    assert node.call(lambda: fast.respond_now(fragment[:ENVELOPE_SIZE], fragment[ENVELOPE_SIZE:])) is not None
    assert node.call(lambda: fast.respond_ready(fragment)) is None
    flag.set = True  # another worker wrote: the whole tier goes, and the ready replies with it
    assert node.call(lambda: fast.respond_ready(other)) is None and len(cache.local) == 0
    assert ready_again() == expected
    key = f"{NODE_PREFIX}/eq-2".lower()
    packed = cache.local.get(key, cache.clock())
    assert isinstance(packed, bytes)
    cache.local.put(key, bytes(bytearray(packed)), 60, cache.clock())  # equal bytes, another object
    assert node.call(lambda: fast.respond_ready(other)) is None
    assert ready_again() == expected
    cache.local.discard(key)
    assert node.call(lambda: fast.respond_ready(other)) is None
    authoritative = encode_message(
        resolution(f"{NODE_PREFIX}/eq-1", request_id=5, op_flags=DEFAULT_REQUEST_FLAGS | OpFlag.AT)
    )
    node.run(fast.respond(authoritative[:ENVELOPE_SIZE], authoritative[ENVELOPE_SIZE:]))
    assert node.call(lambda: fast.respond_ready(authoritative)) is None
    assert fast.stats.ready == 3


def test_fast_path_leaves_other_messages_to_the_codec_path(fuzz_node: tuple[_ThreadNode, socket.socket]) -> None:
    node, _ = fuzz_node
    fast, slow = _twin_handlers(node)
    plain = encode_message(resolution(f"{NODE_PREFIX}/eq-1", request_id=5))
    encrypted = plain[:2] + bytes([plain[2] | 0x40]) + plain[3:]
    with_credential = plain[:16] + struct.pack(">I", len(plain) - 16) + plain[20:-4] + b"\0\0\0\4abcd"
    many_types = encode_message(resolution(f"{NODE_PREFIX}/eq-1", types=tuple(f"T{i}" for i in range(70))))
    cut = plain[:16] + struct.pack(">I", len(plain) - 22) + plain[20:-2]
    others = [
        encrypted,
        with_credential,
        many_types,
        cut,
        encode_message(make_request(GetSiteInfoRequest(), request_id=6)),
        encode_message(make_request(RawBody(b"x"), request_id=7, opcode=100)),
    ]
    for wire in others:
        envelope, payload = wire[:ENVELOPE_SIZE], wire[ENVELOPE_SIZE:]
        assert node.run(fast.respond(envelope, payload)) == node.run(slow.respond(envelope, payload))
    assert fast.stats.fast == 0
    assert node.run(fast.respond(plain[:ENVELOPE_SIZE], plain[ENVELOPE_SIZE:])) is not None and fast.stats.fast == 1
