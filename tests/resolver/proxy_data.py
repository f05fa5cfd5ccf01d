"""A manufacturer's product for the proxy's tests: an enterprise, its metadata template and one
identifier as a QR code on a power tool would name it, registered over the API like any client."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from resolver.config import load_config
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

BEIJING = dt.timezone(dt.timedelta(hours=8))
REGISTERED = int(dt.datetime(2025, 11, 18, 9, 30, tzinfo=BEIJING).timestamp())
CHANGED = int(dt.datetime(2025, 12, 2, 14, 5, tzinfo=BEIJING).timestamp())
ENTERPRISE_NAME = "广州白云智能装备有限公司"
PRODUCT_PAGE = "https://www.baiyun-tools.example.cn/products/sd-200"
TRACE_PAGE = "https://trace.baiyun-tools.example.cn/t/B2025-11-A"
MANUAL = "https://www.baiyun-tools.example.cn/manuals/SD-200使用说明.pdf"
SECRET_QC = "合格（内部编号 QC-7781）"
SECRET_URL = "https://erp.baiyun-tools.example.cn/internal/sd-200"
TEMPLATE = {
    "id": "power-tool",
    "description": "电动工具产品信息",
    "fields": [
        {"index": 2001, "name": "产品名称", "type": "PRODUCT_NAME", "required": True},
        {"index": 2002, "name": "型号", "type": "MODEL"},
        {"index": 2003, "name": "batch", "type": "BATCH_NO"},
        {"index": 2004, "name": "color", "type": "COLOR"},
        {"index": 2005, "name": "生产日期", "type": "PRODUCTION_DATE"},
        {"index": 2006, "name": "质检结果", "type": "QC_RESULT"},
        {"index": 2010, "name": "gs1:traceability", "type": "URL"},
        {"index": 2011, "name": "gs1:instructions", "type": "URL"},
    ],
}


def product_values() -> list[dict[str, Any]]:
    """The identifier's values: public product information, one private field and a private URL."""
    return [
        {"index": 1, "type": "URL", "data": PRODUCT_PAGE},
        {"index": 2, "type": "URL", "data": SECRET_URL, "permissions": "1100"},
        {"index": 3, "type": "EMAIL", "data": "service@baiyun-tools.example.cn"},
        {"index": 1001, "type": "TEMPLATE", "data": "power-tool@1"},
        {"index": 2001, "type": "PRODUCT_NAME", "data": "智能电动螺丝刀"},
        {"index": 2002, "type": "MODEL", "data": "SD-200"},
        {"index": 2003, "type": "BATCH_NO", "data": "B2025-11-A"},
        {"index": 2004, "type": "COLOR", "data": "曜石黑"},
        {"index": 2005, "type": "PRODUCTION_DATE", "data": "2025-11-18"},
        {"index": 2006, "type": "QC_RESULT", "data": SECRET_QC, "permissions": "1100"},
        {"index": 2010, "type": "URL", "data": TRACE_PAGE},
        {"index": 2011, "type": "URL", "data": MANUAL},
    ]


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Node:
    client: TestClient
    clock: Clock
    admin: dict[str, str]
    prefix: str  # the enterprise's
    owner: dict[str, str]  # the enterprise administrator's credentials
    handle: str  # the product's identifier

    def path(self, handle: str | None = None) -> str:
        return "/" + quote(handle or self.handle, safe="/")

    async def put(self, handle: str, values: list[dict[str, Any]]) -> None:
        path = "/api/handles/" + quote(handle, safe="/")
        r = await self.client.put(path, json={"values": values}, headers=self.owner)
        assert r.status in (200, 201), await r.text()


async def build(client: TestClient, clock: Clock) -> Node:
    admin = basic(NODE_ADMIN, ADMIN_SECRET)
    promoter_body = {"name": "白云区工业互联网服务中心", "uscc": make_uscc(1, "92")}
    r = await client.post("/api/promoters", json=promoter_body, headers=admin)
    assert r.status == 201, await r.text()
    promoter = (await r.json())["id"]
    body = {"name": ENTERPRISE_NAME, "uscc": make_uscc(7), "promoter": promoter}
    r = await client.post("/api/enterprises", json=body, headers=admin)
    assert r.status == 201, await r.text()
    enterprise = await r.json()
    r = await client.post("/api/templates", json=TEMPLATE, headers=admin)
    assert r.status == 201, await r.text()
    node = Node(client, clock, admin, enterprise["prefix"], basic(enterprise["admin"], enterprise["secret"]), "")
    node.handle = f"{node.prefix}/SKU-2025-000001"
    clock.now = REGISTERED
    await node.put(node.handle, product_values()[:4] + product_values()[4:6])
    clock.now = CHANGED
    await node.put(node.handle, product_values())
    return node


@pytest.fixture
async def node(tmp_path, monkeypatch) -> AsyncIterator[Node]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    # Counts stay in memory for the test's length (test_proxy.py reads them there).
    overrides = {"data_dir": str(tmp_path / "data"), "native_port": 0, "stats_flush_seconds": 3600}
    config = load_config(env={}, overrides=overrides)
    clock = Clock(REGISTERED)
    async with TestClient(TestServer(create_app(config, clock=clock))) as client:
        yield await build(client, clock)
