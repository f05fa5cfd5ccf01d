"""Requests the HTTP parser refuses are answered with the node's JSON error (``resolver.http.parser_errors``),
as every other error, without quoting what was sent. Against a real ``idnode serve``: the parser's
answers come from the connection, not the app, so only the served node shows them."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator

import pytest

from tests.nodeproc import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("http-errors")).wait_ready()
    try:
        yield proc
    finally:
        proc.stop()


def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a fresh connection; the status, headers and body of the reply (read until the
    node closes the connection, which it does after a parse error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split(" ", 2)[1]), headers, body


def _secret_token() -> str:
    return base64.b64encode(b"300%3A0.NA%2F88.118.8:parse-error-probe-secret").decode()


@pytest.mark.parametrize(
    ("case", "raw", "kind"),
    [
        (
            "a request line of more than 8,190 bytes",
            f"GET /api/promotion/tallies?from={'9' * 9000} HTTP/1.1\r\nHost: node\r\n\r\n",
            "line too long (limit 8190 bytes)",
        ),
        (
            "a header of more than 8,190 bytes",
            f"GET /healthz HTTP/1.1\r\nHost: node\r\nAuthorization: Basic {_secret_token()}{'A' * 9000}\r\n\r\n",
            "line too long (limit 8190 bytes)",
        ),
        (
            "a control character in a header",
            f"GET /healthz HTTP/1.1\r\nHost: node\r\nAuthorization: Basic {_secret_token()}\x01\r\n\r\n",
            None,
        ),
    ],
)
def test_malformed_http_is_answered_with_a_json_error(node: NodeProcess, case: str, raw: str, kind: str | None) -> None:
    status, headers, body = _exchange(node.port, raw.encode("latin-1"))
    assert status == 400, (case, body[:200])
    assert headers["content-type"].startswith("application/json"), (case, headers)
    error = json.loads(body)
    assert error["responseCode"] == 4 and set(error) == {"responseCode", "message"}
    assert error["message"].startswith("malformed HTTP request: ")
    if kind is not None:
        assert error["message"] == f"malformed HTTP request: {kind}"
    # Nothing the client sent comes back: no query digits, no credential.
    assert b"9999" not in body and _secret_token()[:16].encode() not in body and b"AAAA" not in body


def test_the_node_still_answers_after_a_malformed_request(node: NodeProcess) -> None:
    assert _exchange(node.port, b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Bad: a\x01b\r\n\r\n")[0] == 400
    status, _, body = _exchange(node.port, b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body) == {"status": "alive"}
