"""The bureau page in a real headless Chromium (Debian's package), driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.promotion_tracker.test_bureau_api import (  # noqa: F401 (fixtures)
    PERIOD,
    admin,
    client,
    clock,
    make_enterprise,
    make_promoter,
    register,
)
from tests.resolver.conftest import NODE_ADMIN, basic

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


class Browser:
    """A minimal DevTools client: enough to navigate, evaluate and take a screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            if msg.get("id") == call_id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    async def wait_event(self, name: str) -> None:
        if any(e.get("method") == name for e in self.events):
            return
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            if msg.get("method") == name:
                return

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")


async def open_browser(tmp_path: Path) -> tuple[subprocess.Popen, Browser, aiohttp.ClientSession]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium must be installed (.ci/run installs it)"
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    for _ in range(300):
        if port_file.exists() and port_file.read_text().strip():
            break
        await asyncio.sleep(0.1)
    port = int(port_file.read_text().splitlines()[0])
    session = aiohttp.ClientSession()
    targets = await (await session.get(f"http://127.0.0.1:{port}/json/list")).json()
    page = next(t for t in targets if t["type"] == "page")
    ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
    return proc, Browser(ws), session


async def test_bureau_page_renders_progress_award_and_links(client, admin, clock, tmp_path):  # noqa: F811
    a = await make_promoter(client, admin, 1)
    await make_promoter(client, admin, 2)
    for n in range(1, 4):
        ent = await make_enterprise(client, admin, n, a)
        await register(client, ent, 50)
    clock.now += 7200
    url = str(client.make_url("/bureau")) + f"?from={PERIOD['from']}&to={PERIOD['to']}"
    proc, browser, session = await open_browser(tmp_path)
    try:
        await browser.call("Network.enable")
        await browser.call("Network.setExtraHTTPHeaders", headers=basic(NODE_ADMIN, "node-admin-secret-for-tests"))
        await browser.call("Page.enable")
        await browser.call("Page.navigate", url=url)
        await browser.wait_event("Page.loadEventFired")
        info = await browser.evaluate(
            """JSON.stringify({
              title: document.title,
              headers: [...document.querySelectorAll('#tally th')].map(th => th.innerText),
              rows: [...document.querySelectorAll('#tally tbody tr')].map(tr =>
                  [...tr.querySelectorAll('td')].map(td => td.innerText)),
              bars: [...document.querySelectorAll('[role=progressbar]')].map(b => ({
                  label: b.dataset.label,
                  now: +b.getAttribute('aria-valuenow'),
                  ratio: b.firstElementChild.getBoundingClientRect().width / b.getBoundingClientRect().width})),
              csv: document.querySelector('#csv-link').href,
              json: document.querySelector('#json-link').href,
              total: document.querySelector('#total').innerText,
            })"""
        )
        page = json.loads(info)
        assert "推广奖励" in page["title"] and "Promotion award" in page["title"]
        assert any("推广单位" in h and "Promoter" in h for h in page["headers"])
        assert any("奖励" in h and "Award" in h for h in page["headers"])
        assert len(page["rows"]) == 2
        first = page["rows"][0]
        assert "推广单位 1" in first[0] and first[3] == "3" and first[5] == "0"
        assert "Base not met" in first[7]
        bars = [b for b in page["bars"] if b["now"] > 0]
        # 3 of 20 enterprises and 150 of 200,000 identifiers, drawn to scale by the browser.
        ent_bar = next(b for b in bars if b["label"] == "enterprises")
        assert abs(ent_bar["ratio"] - 0.15) < 0.02
        reg_bar = next(b for b in bars if b["label"] == "registrations")
        assert reg_bar["now"] == 150 and reg_bar["ratio"] < 0.01
        assert page["total"] == "0"
        # The links the page offers work from the browser (same credentials).
        csv_status = await browser.evaluate(
            f"fetch({json.dumps(page['csv'])}).then(r => r.status + ' ' + r.headers.get('content-type'))"
        )
        assert csv_status.startswith("200 text/csv")
        signed = await browser.evaluate(
            f"fetch({json.dumps(page['json'])}).then(r => r.json()).then(d => d.signature.alg)"
        )
        assert signed == "Ed25519"
        shot = await browser.call("Page.captureScreenshot", format="png")
        png = tmp_path / "bureau.png"
        import os

        if os.environ.get("IDNODE_KEEP_SCREENSHOT"):
            png = Path(os.environ["IDNODE_KEEP_SCREENSHOT"])
        import base64

        png.write_bytes(base64.b64decode(shot["data"]))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    finally:
        await browser.ws.close()
        await session.close()
        proc.terminate()
        proc.wait(timeout=10)
