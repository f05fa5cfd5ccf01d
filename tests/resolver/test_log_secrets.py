"""Credentials never reach a log: malformed HTTP carrying them is logged without header values, at
info level; a client that goes away mid-body is not an error. Against a real ``idnode serve``."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess

NODE_ADMIN = "300:0.NA/88.118.8"


def _credential(identity: str, secret: str) -> str:
    return base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()


def _exchange(port: int, raw: bytes, *, then_close: bool = False) -> bytes:
    """Send ``raw`` on a fresh connection; the reply (until the node closes), or b"" with
    ``then_close`` (the client hangs up without waiting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        if then_close:
            time.sleep(0.2)  # the node has read the headers and waits for the rest of the body
            return b""
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _events(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def _requests_by_status(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "idnode_http_requests_total":
                out[s.labels["status"]] = out.get(s.labels["status"], 0) + s.value
    return out


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "data", "--log-level", "debug", "--access-log").wait_ready()
    try:
        yield proc
    finally:
        proc.stop()


def test_malformed_authorization_headers_never_reach_the_log(node: NodeProcess) -> None:
    # A secret and identity that appear nowhere else, in every form a log could show them.
    secret = f"leak-probe-{uuid.uuid4().hex}"
    identity = "300:0.NA/88.118.8.7777"
    token = _credential(identity, secret)
    forms = [secret, token, token[:24], quote(identity, safe=""), base64.b64encode(secret.encode()).decode()[:20]]
    request = "GET /api/handles/0.NA/88.118.8 HTTP/1.1\r\nHost: node\r\n"
    bad = {
        "trailing control character": f"Authorization: Basic {token}\x01\r\n",
        "trailing DEL": f"Authorization: Basic {token}\x7f\r\n",
        "longer than 8,190 bytes": f"Authorization: Basic {token}{'A' * 9000}\r\n",
        "Handle scheme, too long": f'Authorization: Handle id="{identity}", signature="{token}{"B" * 9000}"\r\n',
        "bare CR in the value": f"Authorization: Basic {token}\rX\r\n",
        "control character in the name": f"Authoriz\x01ation: Basic {token}\r\n",
    }
    for case, header in bad.items():
        reply = _exchange(node.port, (request + header + "\r\n").encode("latin-1"))
        assert reply.startswith(b"HTTP/1.1 400") or reply.startswith(b"HTTP/1.0 400"), (case, reply[:200])
    # A well-formed request with the same (wrong) credential: refused, logged by identity only.
    reply = _exchange(node.port, (request + f"Authorization: Basic {token}\r\nConnection: close\r\n\r\n").encode())
    assert reply.split(b" ", 2)[1] in (b"401", b"403"), reply[:200]
    node.stop()

    log = node.log()
    for form in forms:
        assert form not in log, f"{form!r} is in the log"
    events = _events(log)
    assert not [e for e in events if e["level"] in ("error", "critical", "warning")], log
    malformed = [e for e in events if e["event"].startswith("malformed HTTP request from 127.0.0.1")]
    assert len(malformed) == len(bad), log
    assert all(e["level"] == "info" and e["status"] == 400 and "error" not in e for e in malformed)
    assert any("line too long (limit 8190 bytes)" in e["event"] for e in malformed)


def test_malformed_requests_are_not_logged_at_warning_level(tmp_path: Path) -> None:
    """With ``log_level = warning`` the rewritten records (info) are dropped, not shown at error level."""
    node = NodeProcess(tmp_path / "data", "--log-level", "warning").wait_ready()
    try:
        token = _credential(NODE_ADMIN, ADMIN_SECRET)
        raw = f"GET /healthz HTTP/1.1\r\nHost: node\r\nAuthorization: Basic {token}\x01\r\n\r\n"
        assert _exchange(node.port, raw.encode()).startswith(b"HTTP/1.")
    finally:
        node.stop()
    log = node.log()
    assert token not in log and "malformed HTTP request" not in log
    assert not _events(log), log


def test_client_leaving_mid_body_is_not_an_unhandled_error(node: NodeProcess) -> None:
    token = _credential(NODE_ADMIN, ADMIN_SECRET)
    head = f"Host: node\r\nAuthorization: Basic {token}\r\nContent-Length: 100000\r\n"
    before = _requests_by_status(node.url)
    put = f"PUT /api/handles/88.118.8/mid-body HTTP/1.1\r\n{head}Content-Type: application/json\r\n\r\n"
    _exchange(node.port, (put + '[{"index":1').encode(), then_close=True)
    post = f"POST /api/handles HTTP/1.1\r\n{head}Content-Type: application/x-ndjson\r\n\r\n"
    _exchange(node.port, (post + '{"handle":"88.118.8/a"').encode(), then_close=True)
    deadline = time.monotonic() + 20
    while True:  # the node counts both as 499 (client closed request) once it notices
        after = _requests_by_status(node.url)
        if after.get("499", 0) - before.get("499", 0) >= 2:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
    assert after.get("500", 0) == before.get("500", 0)
    node.stop()
    log = node.log()
    events = _events(log)
    assert not [e for e in events if e["level"] in ("error", "critical")], log
    assert "unhandled" not in log.lower()
    gone = [e for e in events if e["event"].startswith("client went away")]
    assert len(gone) == 2 and all(e["level"] == "debug" for e in gone), log
    assert token not in log
