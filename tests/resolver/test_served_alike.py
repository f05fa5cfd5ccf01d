"""REST and the native protocol serve the same values of a record to the same class of caller: both ask
registry.read_policy. Checked on one node (real SQLite store, real UDP and TCP sockets) for every
interface at once — REST's hot path and its filtered path, native over UDP, TCP and HTTP — against
the policy applied to the stored record."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from registry.errors import RC_SUCCESS, RC_VALUES_NOT_FOUND
from registry.model import Record
from registry.read_policy import ValueFilter, served_values
from resolver.config import load_config
from resolver.http.keys import STATE_KEY
from resolver.native.codec import (
    ENVELOPE_SIZE,
    Message,
    ResolutionResponse,
    UdpReassembler,
    decode_envelope,
    decode_message,
    decode_payload,
    encode_message,
)
from resolver.server import node_app
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX, basic
from tests.resolver.native_client import HDL_MIME, free_native_port, resolution

ITEM = f"{NODE_PREFIX}/served-alike"
ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)


def _string(index: int, type_: str, text: str, permissions: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"index": index, "type": type_, "data": {"format": "string", "value": text}}
    if permissions is not None:
        value["permissions"] = permissions
    return value


VALUES = [
    _string(1, "URL", "https://example.com/p"),  # default 1110
    _string(2, "EMAIL", "ops@example.com", "0010"),  # public read only
    _string(3, "NOTE", "internal-note", "1100"),  # administrators only
    _string(4, "SECRET", "write-only", "0100"),  # nobody reads it
    _string(5, "HS_SITE.PREFIX", "public-subtype"),
    _string(6, "HS_SITE.MIRROR", "private-subtype", "1000"),
]
CASES: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
    ((), ()),
    (("URL",), ()),
    (("url",), (2,)),
    ((), (3,)),
    ((), (4,)),
    (("HS_SITE.",), ()),
    (("NOTE", "EMAIL"), ()),
    (("HS_ADMIN",), ()),
    (("NOPE",), (99,)),
]


@pytest.fixture
async def node(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient, int, Record]]:
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    port = free_native_port()
    overrides = {"data_dir": str(tmp_path), "store": f"sqlite:///{tmp_path}/idnode.db", "native_port": port}
    async with TestClient(TestServer(node_app(load_config(env={}, overrides=overrides)))) as client:
        r = await client.put(f"/api/handles/{ITEM}", json={"values": VALUES}, headers=ADMIN)
        assert r.status == 201, await r.text()
        registry = client.server.app[STATE_KEY].registry
        assert registry is not None
        record = await registry.read_record(registry.parse(ITEM).key)
        assert record is not None
        yield client, port, record


async def _udp(port: int, request: Message) -> Message:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, encode_message(request))
        packets = UdpReassembler()
        while True:
            whole = packets.add("node", await asyncio.wait_for(loop.sock_recv(sock, 65_536), 5), 0.0)
            if whole is not None:
                return decode_payload(*whole)


async def _tcp(port: int, request: Message) -> Message:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_message(request))
        envelope = decode_envelope(await asyncio.wait_for(reader.readexactly(ENVELOPE_SIZE), 5))
        return decode_payload(envelope, await asyncio.wait_for(reader.readexactly(envelope.length), 5))
    finally:
        writer.close()


async def _over_http(client: TestClient, request: Message) -> Message:
    headers = {"Content-Type": HDL_MIME, "Accept": HDL_MIME}
    r = await client.post("/" + quote(ITEM, safe=""), data=encode_message(request), headers=headers)
    assert r.status == 200
    return decode_message(await r.read())


def _native_indexes(reply: Message) -> list[int]:
    """The indexes served, in order; [] for VALUES_NOT_FOUND (the native word for "nothing left")."""
    if reply.header.response_code == RC_VALUES_NOT_FOUND:
        return []
    assert reply.header.response_code == RC_SUCCESS and isinstance(reply.body, ResolutionResponse)
    return [v.index for v in reply.body.values]


async def _rest_indexes(
    client: TestClient, types: tuple[str, ...], indexes: tuple[int, ...], **extra: str
) -> tuple[list[int], int]:
    params = [("type", t) for t in types] + [("index", str(i)) for i in indexes]
    headers = ADMIN if "publicOnly" in extra else None
    r = await client.get(f"/api/handles/{ITEM}", params=params + list(extra.items()), headers=headers)
    assert r.status == 200, await r.text()
    body = await r.json()
    return [v["index"] for v in body["values"]], body["responseCode"]


async def test_rest_and_native_serve_an_anonymous_caller_the_same_values(
    node: tuple[TestClient, int, Record],
) -> None:
    client, port, record = node
    for types, indexes in CASES:
        wanted = ValueFilter(types, frozenset(indexes))
        expected = [v.index for v in served_values(record.values, private_reader=False, request=wanted)]
        case = f"type={types} index={indexes}"
        request = resolution(ITEM, types=types, indexes=indexes)
        assert _native_indexes(await _udp(port, request)) == expected, case
        assert _native_indexes(await _tcp(port, request)) == expected, case
        assert _native_indexes(await _over_http(client, request)) == expected, case
        # REST: anonymous (no filters: the hot path), anonymous through the filtered path (auth=true
        # reads the store), and the node administrator asking for public values only.
        for extra in ({}, {"auth": "true"}, {"publicOnly": "true"}):
            served, code = await _rest_indexes(client, types, indexes, **extra)
            assert served == expected, (case, extra)
            assert code == (200 if wanted.selects and not served else 1), (case, extra)
    assert 3 not in [v.index for v in served_values(record.values, private_reader=False)]  # the case is real


async def test_a_private_reader_gets_admin_read_values_over_rest_only(node: tuple[TestClient, int, Record]) -> None:
    """The node administrator may read non-public values: REST serves those that grant ADMIN_READ
    (never 0100); the native protocol has no credentials here, so it serves what anyone gets."""
    client, port, record = node
    r = await client.get(f"/api/handles/{ITEM}", headers=ADMIN)
    admin = [v["index"] for v in (await r.json())["values"]]
    assert admin == [v.index for v in served_values(record.values, private_reader=True)]
    assert {3, 6} <= set(admin) and 4 not in admin
    anonymous = _native_indexes(await _udp(port, resolution(ITEM)))
    assert set(anonymous) == set(admin) - {3, 6}
