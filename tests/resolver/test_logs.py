"""Structured logs: one JSON line per event, request ids, the access log switch, no secrets ever."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from resolver.config import load_config
from resolver.http.access import claimed_identity
from resolver.http.app import create_app
from resolver.ops.logs import JsonFormatter, RequestIdFilter, sane_request_id
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX, basic

HEX_ID = re.compile(r"[0-9a-f]{32}")
test_log = logging.getLogger("idnode.test")


class Capture(logging.Handler):
    """Formats records the way the node does (JSON formatter + request id filter) and keeps the lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def events(self, logger: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in self.lines]
        return [e for e in out if logger is None or e["logger"] == logger]


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def _log_here(request: web.Request) -> web.Response:
    test_log.info("inside the handler", extra={"step": 1})

    async def child() -> None:  # a task started by the request inherits its context
        test_log.info("inside a child task")

    await asyncio.create_task(child())
    return web.json_response({"ok": True})


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("something broke\nover two lines")


async def _client(tmp_path, monkeypatch, **overrides: Any) -> TestClient:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    config = load_config(
        env={},
        overrides={
            "data_dir": str(tmp_path),
            "store": f"sqlite:///{tmp_path}/idnode.db",
            "native_port": 0,
            **overrides,
        },
    )
    app = create_app(config)
    app.router.add_get("/_test/log", _log_here)
    app.router.add_get("/_test/boom", _boom)
    return TestClient(TestServer(app))


@pytest.fixture
async def quiet(tmp_path, monkeypatch) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    """A node with the default settings: access log off."""
    async with await _client(tmp_path, monkeypatch) as c:
        yield c


@pytest.fixture
async def loud(tmp_path, monkeypatch) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    """A node with the access log on."""
    async with await _client(tmp_path, monkeypatch, access_log=True) as c:
        yield c


def _one_line_json(capture: Capture) -> None:
    for line in capture.lines:
        assert "\n" not in line
        assert isinstance(json.loads(line), dict)


# == request ids ==================================================================================


def test_sane_request_ids_are_kept_others_replaced() -> None:
    for good in ("abc-123", "0f8e2c1a-7d7b-4c53-9d3b-0d1f2e3a4b5c", "trace:01HX/span=7", "a" * 128):
        assert sane_request_id(good) == good
    for bad in (None, "", " ", "has space", 'quo"te', "x" * 129, "naïve", "-leading-dash", "a\tb", "{json}"):
        rid = sane_request_id(bad)
        assert HEX_ID.fullmatch(rid), (bad, rid)


async def test_request_id_generated_echoed_and_on_every_line(quiet: TestClient, capture: Capture) -> None:
    r = await quiet.get("/_test/log")
    assert r.status == 200
    rid = r.headers["X-Request-Id"]
    assert HEX_ID.fullmatch(rid)
    mine = capture.events("idnode.test")
    assert [e["event"] for e in mine] == ["inside the handler", "inside a child task"]
    assert all(e["request_id"] == rid for e in mine)
    assert mine[0]["step"] == 1
    # Another request gets another id; lines outside any request carry none.
    r2 = await quiet.get("/_test/log")
    assert r2.headers["X-Request-Id"] != rid
    test_log.info("outside any request")
    assert "request_id" not in capture.events("idnode.test")[-1]
    _one_line_json(capture)


async def test_incoming_request_id_is_kept_when_sane(quiet: TestClient, capture: Capture) -> None:
    r = await quiet.get("/_test/log", headers={"X-Request-Id": "lb-7f3a:42"})
    assert r.headers["X-Request-Id"] == "lb-7f3a:42"
    assert {e["request_id"] for e in capture.events("idnode.test")} == {"lb-7f3a:42"}
    r = await quiet.get("/_test/log", headers={"X-Request-Id": "x" * 500})
    assert HEX_ID.fullmatch(r.headers["X-Request-Id"])
    r = await quiet.get("/_test/log", headers={"X-Request-Id": '", "level": "forged'})
    assert HEX_ID.fullmatch(r.headers["X-Request-Id"])


async def test_request_id_on_errors_and_on_every_route(quiet: TestClient, capture: Capture) -> None:
    for path, status in (("/api/handles/88.118.8/missing", 404), ("/api/handles/bad", 400), ("/nowhere", 404)):
        r = await quiet.get(path)
        assert r.status == status
        assert HEX_ID.fullmatch(r.headers["X-Request-Id"])
        assert "responseCode" in await r.json()


async def test_unhandled_error_is_one_json_line_with_the_request_id(quiet: TestClient, capture: Capture) -> None:
    r = await quiet.get("/_test/boom", headers={"X-Request-Id": "boom-1"})
    assert r.status == 500
    assert r.headers["X-Request-Id"] == "boom-1"
    body = await r.json()
    assert body["message"] == "internal server error" and "Traceback" not in json.dumps(body)
    errors = [e for e in capture.events("idnode") if e["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "boom-1"
    assert "RuntimeError: something broke" in errors[0]["error"]
    _one_line_json(capture)


# == access log ===================================================================================


async def test_access_log_is_off_by_default(quiet: TestClient, capture: Capture) -> None:
    for _ in range(3):
        await quiet.get(f"/api/handles/0.NA/{NODE_PREFIX}")
    assert capture.events("idnode.access") == []


async def test_access_log_one_line_per_request(loud: TestClient, capture: Capture, admin) -> None:  # type: ignore[no-untyped-def]
    handle = f"{NODE_PREFIX}/access-log-probe-7781"
    value = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com"}}
    r1 = await loud.put(f"/api/handles/{handle}", json={"values": [value]}, headers=admin)
    assert r1.status in (200, 201), await r1.text()
    r2 = await loud.get(f"/api/handles/{handle}", headers={"X-Request-Id": "resolve-1"})
    r3 = await loud.get(f"/api/handles/{NODE_PREFIX}/missing-suffix-7781")
    lines = capture.events("idnode.access")
    assert len(lines) == 3
    put, get, miss = lines
    assert put["method"] == "PUT" and put["route"] == "/api/handles/{handle}" and put["status"] == r1.status
    assert put["identity"] == NODE_ADMIN
    assert put["request_id"] == r1.headers["X-Request-Id"]
    assert get["request_id"] == "resolve-1" and get["status"] == 200 and get["identity"] is None
    assert miss["status"] == 404 and miss["request_id"] == r3.headers["X-Request-Id"]
    for line in lines:
        assert line["event"] == "request" and line["level"] == "info"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert set(line) >= {"method", "route", "status", "duration_ms", "request_id", "identity"}
        # Route templates, never the handle (the raw path, query and body are not logged).
        assert "access-log-probe" not in json.dumps(line) and "missing-suffix" not in json.dumps(line)
    assert r2.status == 200
    _one_line_json(capture)


async def test_access_log_names_the_identity_not_the_secret(loud: TestClient, capture: Capture) -> None:
    bad = "definitely-the-wrong-secret"
    r = await loud.get("/api/promoters", headers=basic(NODE_ADMIN, bad))
    assert r.status in (401, 403)
    (line,) = capture.events("idnode.access")
    assert line["identity"] == NODE_ADMIN and line["status"] == r.status
    assert bad not in json.dumps(capture.lines)


def test_claimed_identity_shapes() -> None:
    def b(user_pass: str) -> str:
        return "Basic " + base64.b64encode(user_pass.encode()).decode()

    assert claimed_identity(b(f"{quote(NODE_ADMIN, safe='')}:s3cret")) == NODE_ADMIN
    assert claimed_identity(b(f"{NODE_ADMIN}:s3cret")) == NODE_ADMIN  # raw, split at its own ':'
    assert claimed_identity(b("300%3A88.118.8%2Fauditor%2Fbaiyun:x")) == "300:88.118.8/auditor/baiyun"
    # A secret typed into the user field, or anything that is not index:handle, is never echoed.
    assert claimed_identity(b("just-a-secret-no-colon")) is None
    assert claimed_identity(b("my-secret-password:")) is None
    assert claimed_identity("Bearer abc.def") is None
    assert claimed_identity("Basic !!!notbase64") is None
    assert claimed_identity(None) is None


# == secrets ======================================================================================


async def test_secrets_never_logged_nor_echoed(loud: TestClient, capture: Capture, admin, onboard) -> None:  # type: ignore[no-untyped-def]
    """Credentials (right and wrong, percent-encoded and raw) and HS_SECKEY values in single and batch
    writes: neither a secret nor a base64 token shows in any log line or any error reply."""
    ent = await onboard()
    seckey_plain = "hs-seckey-plaintext-9Vq2mZ"
    batch_seckey = "batch-seckey-plaintext-4Rt8"
    wrong = "wrong-secret-Xk29Lp"
    tokens = [admin["Authorization"], ent["headers"]["Authorization"], basic(NODE_ADMIN, wrong)["Authorization"]]
    raw_auth = "Basic " + base64.b64encode(f"{NODE_ADMIN}:{ADMIN_SECRET}".encode()).decode()
    tokens.append(raw_auth)
    secrets = [ADMIN_SECRET, ent["secret"], seckey_plain, batch_seckey, wrong]
    needles = secrets + [t.split(" ", 1)[1] for t in tokens]
    seckey = {"index": 300, "type": "HS_SECKEY", "data": seckey_plain, "permissions": "1100"}
    url_value = {"index": 1, "type": "URL", "data": "https://example.com/x"}
    replies: list[tuple[int, str, dict[str, str]]] = []

    async def send(method: str, path: str, **kw: Any) -> None:
        r = await loud.request(method, path, **kw)
        replies.append((r.status, await r.text(), dict(r.headers)))

    h = f"{ent['prefix']}/with-a-key"
    await send("PUT", f"/api/handles/{h}", json={"values": [url_value, seckey]}, headers=ent["headers"])
    await send("GET", f"/api/handles/{h}", headers=ent["headers"])
    await send("GET", "/api/promoters", headers={"Authorization": raw_auth})
    # Refused writes carrying a secret: outside the enterprise's prefix, bad credentials, bad values.
    await send("PUT", f"/api/handles/{NODE_PREFIX}/not-yours", json=[url_value, seckey], headers=ent["headers"])
    await send("PUT", f"/api/handles/{h}", json=[url_value, seckey], headers=basic(NODE_ADMIN, wrong))
    await send("PUT", f"/api/handles/{h}", json=[{**seckey, "index": "x"}], headers=ent["headers"])
    await send("PUT", f"/api/handles/{h}", json=[{**seckey, "type": ""}], headers={"Authorization": raw_auth})
    batch = "\n".join(
        json.dumps({"handle": f"{p}/batch-key-{i}", "values": [url_value, {**seckey, "data": batch_seckey}]})
        for i, p in enumerate([ent["prefix"], NODE_PREFIX, ent["prefix"]])
    )
    await send("POST", "/api/handles", data=batch, headers={**ent["headers"], "Content-Type": "application/x-ndjson"})
    await send(
        "POST",
        "/api/handles",
        data=batch,
        headers={**basic(ent["admin"], wrong), "Content-Type": "application/x-ndjson"},
    )
    statuses = [s for s, _, _ in replies]
    assert statuses[0] in (200, 201) and statuses[1:3] == [200, 200]
    assert all(s >= 400 for s in statuses[3:]), statuses
    # The stored key is a hash; what comes back is never the plain text.
    assert seckey_plain not in replies[1][1] and "scrypt$" in replies[1][1]
    assert len(capture.events("idnode.access")) == len(replies)
    assert any(e.get("identity") == ent["admin"] for e in capture.events("idnode.access"))
    _one_line_json(capture)
    everything = "\n".join(capture.lines)
    for needle in needles:
        assert needle not in everything, f"secret material in the logs: {needle[:6]}…"
        for status, text, headers in replies:
            assert needle not in text, f"secret material in a {status} reply"
            assert needle not in json.dumps(headers)


async def test_secret_in_the_user_field_is_not_echoed(loud: TestClient, capture: Capture) -> None:
    token = base64.b64encode(f"{ADMIN_SECRET}:".encode()).decode()
    r = await loud.get("/api/promoters", headers={"Authorization": f"Basic {token}"})
    assert r.status in (401, 403)
    text = await r.text()
    everything = "\n".join(capture.lines)
    assert ADMIN_SECRET not in everything and token not in everything
    assert ADMIN_SECRET not in text and token not in text
