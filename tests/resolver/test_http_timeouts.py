"""HTTP read timeouts on a real ``idnode serve`` with short limits (header 1 s, body 1 s between two
arrivals, idle keep-alive 2 s), over raw sockets: a connection that sends nothing, dribbles its
headers or stops half-way through a body is not held; a slow but steady body and a keep-alive
connection within its limit are served."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator

import pytest

from registry.errors import RC_SUCCESS
from resolver.native.codec import decode_message, encode_message
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic
from tests.resolver.native_client import HDL_MIME, closed_by_node, resolution
from tests.resolver.test_config import _self_signed

HEADER, BODY, KEEPALIVE = 1, 1, 2


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(
        tmp_path_factory.mktemp("http-timeouts"),
        *("--http-header-timeout", str(HEADER), "--http-body-timeout", str(BODY)),
        *("--http-keepalive-timeout", str(KEEPALIVE)),
    ).wait_ready()
    yield proc
    proc.stop()


def _connect(node: NodeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), timeout=10)


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the node sends until it closes the connection, and when it closed (seconds)."""
    start = time.monotonic()
    data = b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65_536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s; got {data[:200]!r}") from None
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def _native_post_head(length: int) -> bytes:
    return (
        f"POST /0.NA%2F88.118.8 HTTP/1.1\r\nHost: x\r\nContent-Type: {HDL_MIME}\r\nAccept: {HDL_MIME}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_connection_that_sends_nothing_gets_408(node: NodeProcess) -> None:
    with _connect(node) as sock:
        data, closed = _read_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert HEADER - 0.2 <= closed <= HEADER + 1.5, closed


def test_dribbled_headers_get_408(node: NodeProcess) -> None:
    with _connect(node) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        while not closed_by_node(sock, 0.2):  # one header byte every 0.2 s: never a whole head
            assert time.monotonic() - start < HEADER + 2, "the dribbler was not cut off"
            try:
                sock.sendall(b"X")
            except OSError:
                break
        assert time.monotonic() - start <= HEADER + 1.5


def test_408_after_the_first_byte_of_the_next_request(node: NodeProcess) -> None:
    with _connect(node) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65_536).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.5)  # idle between requests (the keep-alive clock, 2 s, runs)
        sock.sendall(b"GET /hea")  # the header clock starts now
        data, closed = _read_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert HEADER - 0.2 <= closed <= HEADER + 1.5, closed


def test_idle_keepalive_connection_is_closed_after_its_timeout(node: NodeProcess) -> None:
    with _connect(node) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65_536).startswith(b"HTTP/1.1 200 ")
        data, closed = _read_until_closed(sock, 10)
    assert data == b""
    assert KEEPALIVE - 0.3 <= closed <= KEEPALIVE + 1.5, closed


@pytest.mark.parametrize("route", ["native", "json", "json-anonymous"])
def test_a_body_that_stops_arriving_is_cut_off(node: NodeProcess, route: str) -> None:
    """Read by the handler (native, an admin's PUT), or answered 401 without being read (then aiohttp
    drains it, for no longer than the body limit)."""
    if route == "native":
        head = _native_post_head(1000)
    else:
        auth = (
            ""
            if route == "json-anonymous"
            else f"Authorization: {basic(NODE_ADMIN, ADMIN_SECRET)['Authorization']}\r\n"
        )
        head = (
            "PUT /api/handles/88.118.8/stalled HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: 1000\r\n\r\n"
        ).encode()
    with _connect(node) as sock:
        sock.sendall(head + b'{"values": [')
        data, closed = _read_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 401 ") if route == "json-anonymous" else data == b""
    assert BODY - 0.2 <= closed <= BODY + 2.5, closed


def test_a_slow_but_steady_body_is_served(node: NodeProcess) -> None:
    """Eight pieces 0.4 s apart: 3 s for the body, but never 1 s without a byte."""
    body = encode_message(resolution("0.NA/88.118.8", request_id=77))
    pieces = [body[i * len(body) // 8 : (i + 1) * len(body) // 8] for i in range(8)]
    with _connect(node) as sock:
        sock.sendall(_native_post_head(len(body)))
        for piece in pieces:
            time.sleep(0.4)
            sock.sendall(piece)
        sock.settimeout(10)
        response = b""
        while b"\r\n\r\n" not in response or len(response.partition(b"\r\n\r\n")[2]) < 20:
            response += sock.recv(65_536)
        head, _, rest = response.partition(b"\r\n\r\n")
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1])
        while len(rest) < length:
            rest += sock.recv(65_536)
    assert head.startswith(b"HTTP/1.1 200 ")
    reply = decode_message(rest)
    assert reply.envelope.request_id == 77 and reply.header.response_code == RC_SUCCESS


def test_ordinary_requests_are_unaffected(node: NodeProcess) -> None:
    with _connect(node) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65_536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.5)
    assert "unhandled error on POST /0.NA/88.118.8" not in node.log()  # the native route's cut-off body


def test_timeouts_hold_over_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The watchdog sits inside TLS: it sees the decrypted stream, so a TLS client that dribbles its
    headers is cut off the same way, and an ordinary HTTPS request is served."""
    cert, key = _self_signed(tmp_path)
    proc = NodeProcess(tmp_path / "tls", "--tls-cert", cert, "--tls-key", key, "--http-header-timeout", "1")
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.proc.poll() is None, proc.log()
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{proc.port}/healthz", context=ctx, timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", proc.port), timeout=10)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            data, closed = _read_until_closed(sock, 10)
        assert data.startswith(b"HTTP/1.1 408 ") and closed <= 2.5, (data[:100], closed)
    finally:
        proc.stop()
