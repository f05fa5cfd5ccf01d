"""Native Handle protocol messages over HTTP, as HANDLE.NET's client sends them to the HTTP interface
the node's HS_SITE lists, on a real ``idnode serve`` without UDP/TCP (``native_port`` 0: the case
where the client has nothing else): codec-built requests, HANDLE.NET's URI and headers, the same
answers as UDP/TCP, the same limits, and every other route as before."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from registry.errors import RC_HANDLE_NOT_FOUND, RC_OPERATION_NOT_SUPPORTED, RC_PROTOCOL_ERROR, RC_SUCCESS
from registry.valuedata import PROTO_HTTP, PROTO_TCP, PROTO_UDP
from resolver.native.codec import (
    DEFAULT_REQUEST_FLAGS,
    ENVELOPE_SIZE,
    HASH_SHA256,
    MAX_MESSAGE,
    GetSiteInfoRequest,
    GetSiteInfoResponse,
    OpFlag,
    RawBody,
    decode_message,
    encode_message,
    encode_payload,
    make_request,
    request_digest,
)
from tests.nodeproc import NodeProcess
from tests.resolver.native_client import (
    HDL_MIME,
    get_json,
    native_over_http,
    post_native,
    put_handle,
    resolution,
)

ITEM = "88.118.8/over-http"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("native-http")).wait_ready()  # --native-port 0
    put_handle(
        proc.url,
        ITEM,
        [
            {"index": 1, "type": "URL", "data": "https://example.com/over-http"},
            {"index": 2, "type": "NOTE", "data": "private", "permissions": "1100"},
        ],
    )
    yield proc
    proc.stop()


def test_resolution_over_http_matches_the_rest_api(node: NodeProcess) -> None:
    reply = native_over_http(node.url, resolution(ITEM, request_id=31))
    assert reply.header.response_code == RC_SUCCESS and reply.envelope.request_id == 31
    values = {v.index: v for v in reply.body.values}
    assert values[1].data == b"https://example.com/over-http" and 2 not in values  # non-public withheld
    rest = get_json(f"{node.url}/api/handles/{ITEM}?index=1")
    assert rest["values"][0]["data"]["value"] == values[1].data.decode()
    missing = native_over_http(node.url, resolution("88.118.8/nope", request_id=32))
    assert missing.header.response_code == RC_HANDLE_NOT_FOUND


def test_site_over_http_lists_only_the_http_interface(node: NodeProcess) -> None:
    reply = native_over_http(node.url, make_request(GetSiteInfoRequest(), request_id=33), handle="")
    assert isinstance(reply.body, GetSiteInfoResponse)
    interfaces = {(i.protocol, i.port) for i in reply.body.site.servers[0].interfaces}
    assert interfaces == {(PROTO_HTTP, node.port)}  # native_port 0: no UDP/TCP listed
    assert not {p for p, _ in interfaces} & {PROTO_TCP, PROTO_UDP}


def test_request_digest_and_unsupported_operations(node: NodeProcess) -> None:
    request = resolution(ITEM, request_id=34, op_flags=DEFAULT_REQUEST_FLAGS | OpFlag.RD)
    reply = native_over_http(node.url, request)
    assert reply.digest == request_digest(HASH_SHA256, encode_payload(request)[:-4])
    create = make_request(RawBody(b"\0\0\0\0"), request_id=35, opcode=100)
    reply = native_over_http(node.url, create, handle=ITEM)
    assert reply.header.response_code == RC_OPERATION_NOT_SUPPORTED and reply.envelope.request_id == 35


def test_any_path_and_a_leading_newline(node: NodeProcess) -> None:
    """HANDLE.NET puts the handle in the path (and a site's ``path`` attribute before it); the path is
    not what is answered, the message is. Its servlet skips one CR or LF before the envelope."""
    wire = encode_message(resolution(ITEM, request_id=36))
    for path in ("/", "/" + quote(ITEM, safe=""), "/hdl/some/where", "/api/handles/" + ITEM):
        status, ctype, body = post_native(node.url, b"\n" + wire, path)
        assert (status, ctype) == (200, HDL_MIME), (path, status, body[:200])
        assert decode_message(body).envelope.request_id == 36


def test_malformed_and_oversized_bodies(node: NodeProcess) -> None:
    wire = encode_message(resolution(ITEM, request_id=37))
    # The envelope announces more than the body holds: PROTOCOL_ERROR, with the request id.
    status, _, body = post_native(node.url, wire[:-3])
    reply = decode_message(body)
    assert status == 200 and reply.header.response_code == RC_PROTOCOL_ERROR and reply.envelope.request_id == 37
    # Garbage after a good envelope and header: PROTOCOL_ERROR too.
    bad = wire[: ENVELOPE_SIZE + 24] + b"\xff" * (len(wire) - ENVELOPE_SIZE - 24)
    assert decode_message(post_native(node.url, bad)[2]).header.response_code == RC_PROTOCOL_ERROR
    # Too short to carry a request id, a response rather than a request, more than the limit.
    for body, expected in (
        (b"\x02\x0a", 400),
        (encode_message(native_over_http(node.url, resolution(ITEM, request_id=38))), 400),
        (wire[:16] + (MAX_MESSAGE + 10).to_bytes(4, "big") + bytes(MAX_MESSAGE + 10), 413),
    ):
        status, ctype, answer = post_native(node.url, body)
        assert status == expected and ctype.startswith("application/json"), (status, answer[:200])
        assert json.loads(answer)["message"]
    # One byte over the message limit but within the body limit: PROTOCOL_ERROR, as over TCP.
    over = wire[:16] + (MAX_MESSAGE + 1).to_bytes(4, "big") + bytes(MAX_MESSAGE + 1)
    status, _, body = post_native(node.url, over)
    assert status == 200 and decode_message(body).header.response_code == RC_PROTOCOL_ERROR
    assert "Traceback" not in node.log()


def test_other_routes_are_unaffected(node: NodeProcess) -> None:
    def status_of(method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> int:
        req = urllib.request.Request(f"{node.url}{path}", data=body, method=method, headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status_of("GET", "/healthz") == 200
    assert status_of("GET", f"/api/handles/{ITEM}") == 200
    assert status_of("POST", "/0.NA%2F88.118.8", b"{}") == 405  # JSON to a handle path: it takes GET (the proxy)
    assert status_of("POST", f"/api/handles/{ITEM}", b"{}") == 405  # a route without POST: as before
    assert status_of("GET", "/0.NA%2F88.118.8", None, HDL_MIME) == 200  # GET is the proxy's page, not a message
    assert status_of("GET", "/no-handle-here", None, HDL_MIME) == 404  # only POST takes native messages
    assert status_of("POST", "/api/sessions", b"") in (200, 201)  # a JSON POST route works as before
