"""A blocking native Handle protocol client for tests against a node process: a port free for UDP
and TCP, requests built with the codec, TCP frames and UDP datagrams read off real sockets, native
messages posted over HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from typing import Any
from urllib.parse import quote

from resolver.native.codec import (
    ENVELOPE_SIZE,
    Message,
    ResolutionRequest,
    decode_envelope,
    decode_message,
    decode_payload,
    encode_message,
    make_request,
)
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic

HDL_MIME = "application/x-hdl-message"


def free_native_port() -> int:
    """A loopback port free for both TCP and UDP."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def resolution(handle: str, request_id: int = 1, **kw: Any) -> Message:
    indexes = tuple(kw.pop("indexes", ()))
    types = tuple(kw.pop("types", ()))
    return make_request(ResolutionRequest(handle, indexes, types), request_id=request_id, **kw)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    """A TCP connection to the node from ``source`` (any 127/8 address: a client of its own)."""
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the node")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> Message:
    env = decode_envelope(_exactly(sock, ENVELOPE_SIZE))
    return decode_payload(env, _exactly(sock, env.length))


def ask(sock: socket.socket, request: Message) -> Message:
    sock.sendall(encode_message(request))
    return read_frame(sock)


def tcp_ask(port: int, request: Message, source: str = "127.0.0.1") -> Message:
    with connect(port, source) as sock:
        return ask(sock, request)


def closed_by_node(sock: socket.socket, wait: float = 0.0) -> bool:
    """Has the node closed (or reset) this connection? Reads and drops what is pending (replies never
    read), and waits up to ``wait`` seconds for the close."""
    deadline = time.monotonic() + wait
    while True:
        sock.settimeout(max(0.01, min(0.1, deadline - time.monotonic())))
        try:
            if sock.recv(65_536) == b"":
                return True
            continue  # data: drop it and look again
        except TimeoutError:
            pass
        except OSError:  # reset
            return True
        if time.monotonic() >= deadline:
            return False


def udp_datagrams(port: int, request: Message | bytes, source: str = "127.0.0.1", wait: float = 1.0) -> list[bytes]:
    """Every datagram the node sends back within ``wait`` seconds of one request."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(request if isinstance(request, bytes) else encode_message(request), ("127.0.0.1", port))
        return receive_all(sock, wait)


def receive_all(sock: socket.socket, wait: float) -> list[bytes]:
    got = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65_536))
        except TimeoutError:
            break
    return got


def post_native(
    base_url: str, body: bytes, path: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """POST ``body`` as HANDLE.NET's client does; (status, content type, body)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        heads = {"Content-Type": HDL_MIME, "Accept": HDL_MIME, **(headers or {})}
        conn.request("POST", path or "/0.NA%2F88.118.8", body=body, headers=heads)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        conn.close()


def native_over_http(base_url: str, request: Message, handle: str | None = None) -> Message:
    handle = handle if handle is not None else getattr(request.body, "handle", "")
    status, ctype, body = post_native(base_url, encode_message(request), "/" + quote(handle, safe=""))
    assert status == 200 and ctype.startswith(HDL_MIME), (status, ctype, body[:200])
    return decode_message(body)


def put_handle(base_url: str, handle: str, values: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        f"{base_url}/api/handles/{handle}",
        data=json.dumps({"values": values}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", **basic(NODE_ADMIN, ADMIN_SECRET)},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status in (200, 201)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)
