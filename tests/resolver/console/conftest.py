"""A node for the console's browser tests: served in this process on a real socket, with a clock the
tests move, a promoter, two enterprises (A with a template of its own), and Chromium (Debian's, driven
by Playwright: the shared ``browser`` and ``shots`` fixtures of tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser, BrowserContext, Page

from resolver.config import load_config
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

TEMPLATE = {
    "id": "furniture",
    "description": "Furniture 家具",
    "fields": [
        {"index": 2001, "name": "model", "type": "MODEL", "required": True, "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        {"index": 2002, "name": "material", "type": "MATERIAL", "enum": ["oak", "pine", "bamboo"]},
        {"index": 2003, "name": "batch", "type": "BATCH_NO", "max_length": 12},
    ],
}


class Clock:
    """UNIX seconds the node reads (sessions, writes, counters); tests move it forward."""

    def __init__(self) -> None:
        self.now = int(time.time())

    def __call__(self) -> int:
        return self.now


@dataclass
class Node:
    client: TestClient
    clock: Clock
    a: dict[str, Any]  # enterprise A's onboarding reply (prefix, admin, secret)
    b: dict[str, Any]
    promoter: int

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))


async def _post(client: TestClient, path: str, body: object, headers: dict[str, str]) -> dict[str, Any]:
    r = await client.post(path, json=body, headers=headers)
    assert r.status == 201, await r.text()
    return await r.json()


@pytest.fixture
def console_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, console_overrides: dict[str, Any]
) -> AsyncIterator[Node]:
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    clock = Clock()
    config = load_config(
        env={}, overrides={"data_dir": str(tmp_path), "native_port": 0, "auth_scrypt_threads": 2, **console_overrides}
    )
    async with TestClient(TestServer(create_app(config, clock=clock))) as client:
        admin = basic(NODE_ADMIN, ADMIN_SECRET)
        promoter = (await _post(client, "/api/promoters", {"name": "白云推广中心", "uscc": make_uscc(1, "92")}, admin))[
            "id"
        ]
        a = await _post(
            client,
            "/api/enterprises",
            {"name": "广州木艺家具有限公司", "uscc": make_uscc(11), "promoter": promoter},
            admin,
        )
        b = await _post(
            client, "/api/enterprises", {"name": "白云日化有限公司", "uscc": make_uscc(12), "promoter": promoter}, admin
        )
        await _post(client, "/api/templates", {**TEMPLATE, "prefix": a["prefix"]}, basic(a["admin"], a["secret"]))
        yield Node(client, clock, a, b, promoter)


async def new_page(browser: Browser, locale: str = "zh-CN", width: int = 1280) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(locale=locale, viewport={"width": width, "height": 900})
    return context, await context.new_page()


async def sign_in(page: Page, node: Node, identity: str, secret: str) -> None:
    await page.goto(node.url("/console/signin"))
    await page.fill("#f-identity", identity)
    await page.fill("#f-secret", secret)
    async with page.expect_navigation():
        await page.click("#signin-form button[type=submit]")


async def no_sideways_scroll(page: Page) -> bool:
    return await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
