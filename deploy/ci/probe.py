"""Checks deploy/ci/containers.sh runs inside the idnode image (``python - COMMAND … < probe.py``), so
the machine running the script needs neither Python packages nor a Handle client of its own.

    request METHOD URL STATUS [BODY]   one HTTP request; fails unless the reply has STATUS; prints the body.
                                       PROBE_AUTH=identity:secret sends Basic credentials (percent-encoded).
    native HOST PORT HANDLE ADDRESS    resolves HANDLE's HS_SITE over the native protocol, by UDP and by
                                       TCP; fails unless both answer and the site names ADDRESS.

Exit status 0 when the check holds, 1 (with the reason on standard error) when it does not.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10.0


def fail(message: str) -> None:
    print(f"probe: {message}", file=sys.stderr)
    sys.exit(1)


def request(method: str, url: str, status: str, body: str | None = None) -> None:
    headers = {"Accept": "application/json"}
    auth = os.environ.get("PROBE_AUTH")
    if auth:
        identity, _, secret = auth.partition(":")
        user = urllib.parse.quote(identity, safe="")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
    data = None
    if body is not None:
        data = body.encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as reply:
            got, text = reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        got, text = exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        fail(f"{method} {url}: {exc}")
    if str(got) != status:
        fail(f"{method} {url}: status {got}, expected {status}: {text[:500]}")
    print(text)


def native(host: str, port: str, handle: str, address: str) -> None:
    from registry.errors import RC_SUCCESS
    from registry.valuedata import decode_site
    from resolver.native.codec import (
        ENVELOPE_SIZE,
        ResolutionRequest,
        ResolutionResponse,
        decode_message,
        encode_message,
        make_request,
    )

    def check(kind: str, reply: bytes) -> None:
        message = decode_message(reply)
        if message.header.response_code != RC_SUCCESS or not isinstance(message.body, ResolutionResponse):
            fail(f"{kind} {host}:{port}: responseCode {message.header.response_code} for {handle}")
        sites = [decode_site(v.data) for v in message.body.values if v.type == "HS_SITE"]
        found = {str(server.address) for site in sites for server in site.servers}
        if address not in found:
            fail(f"{kind} {host}:{port}: HS_SITE of {handle} names {sorted(found)}, not {address}")
        print(f"{kind} {host}:{port}: {handle} resolved, HS_SITE at {', '.join(sorted(found))}")

    query = encode_message(make_request(ResolutionRequest(handle, types=("HS_SITE",)), request_id=7))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(TIMEOUT)
        udp.sendto(query, (host, int(port)))
        try:
            check("UDP", udp.recv(65535))
        except TimeoutError:
            fail(f"UDP {host}:{port}: no reply within {TIMEOUT:.0f} s")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as tcp:
        tcp.sendall(query)
        head = _read(tcp, ENVELOPE_SIZE)
        (length,) = struct.unpack_from(">I", head, 16)
        check("TCP", head + _read(tcp, length))


def _read(sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            fail(f"TCP: connection closed after {len(out)} of {size} bytes")
        out += chunk
    return out


def main(argv: list[str]) -> None:
    commands = {"request": (request, (3, 4)), "native": (native, (4, 4))}
    if not argv or argv[0] not in commands or not commands[argv[0]][1][0] <= len(argv) - 1 <= commands[argv[0]][1][1]:
        fail("usage: request METHOD URL STATUS [BODY] | native HOST PORT HANDLE ADDRESS\n" + json.dumps(argv))
    function, _ = commands[argv[0]]
    function(*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
