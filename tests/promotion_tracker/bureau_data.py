"""A small bureau data set for the page, export and browser tests: three promoters, sixteen
enterprises, registrations spread over six months of 2025, under a scaled-down policy (5 enterprises,
2,000 identifiers, increments of 500) so the tests stay quick while every part of the award shows."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from resolver.config import load_config
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

BEIJING = dt.timezone(dt.timedelta(hours=8))
POLICY = {"base_enterprises": 5, "base_registrations": 2000, "increment_registrations": 500}
PERIOD = {"from": "2025-01-01", "to": "2026-01-01"}
SNAPSHOT = "2025-07-01T00:00"  # Beijing time, as the form sends it
NOW = int(dt.datetime(2025, 7, 2, 9, 0, tzinfo=BEIJING).timestamp())
PROMOTERS = [
    ("广州白云数字推广有限公司", [900, 700, 600, 400, 300, 200, 0]),
    ("白云区工业互联网服务中心", [300, 300, 300]),
    ("广东智造标识科技有限公司", [600] * 6),
]
CAPS = "3:150000"


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Bureau:
    client: TestClient
    clock: Clock
    admin: dict[str, str]
    promoters: list[int]


async def _post(client: TestClient, path: str, body: object, headers: dict[str, str]) -> dict:
    r = await client.post(path, json=body, headers=headers)
    assert r.status == 201, await r.text()
    return await r.json()


async def build(client: TestClient, clock: Clock) -> list[int]:
    """Promoters, enterprises and registrations spread over January to June 2025."""
    admin = basic(NODE_ADMIN, ADMIN_SECRET)
    clock.now = int(dt.datetime(2025, 1, 2, 10, 0, tzinfo=BEIJING).timestamp())
    ids = []
    n = 0
    for p, (name, counts) in enumerate(PROMOTERS, start=1):
        pid = (await _post(client, "/api/promoters", {"name": name, "uscc": make_uscc(p, "92")}, admin))["id"]
        ids.append(pid)
        for i, count in enumerate(counts):
            n += 1
            body = {"name": f"{name[:4]}应用企业{i + 1}号", "uscc": make_uscc(n), "promoter": pid}
            ent = await _post(client, "/api/enterprises", body, admin)
            headers = {**basic(ent["admin"], ent["secret"]), "Content-Type": "application/x-ndjson"}
            done = 0
            for month in range(1, 7):  # uneven months: more in spring
                share = count * month // 21 if month < 6 else count - done
                if share <= 0:
                    continue
                clock.now = int(dt.datetime(2025, month, 10 + i, 9, 0, tzinfo=BEIJING).timestamp())
                lines = (
                    json.dumps(
                        {
                            "handle": f"{ent['prefix']}/SKU-{k:06d}",
                            "values": [{"index": 1, "type": "URL", "data": f"https://e/{k}"}],
                        }
                    )
                    for k in range(done, done + share)
                )
                r = await client.post("/api/handles", data="\n".join(lines).encode(), headers=headers)
                assert r.status == 201, await r.text()
                done += share
            assert done == count
    clock.now = NOW
    return ids


@pytest.fixture
async def bureau(tmp_path, monkeypatch) -> AsyncIterator[Bureau]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY), encoding="utf-8")
    config = load_config(
        env={}, overrides={"data_dir": str(tmp_path / "data"), "native_port": 0, "policy_file": str(policy)}
    )
    clock = Clock(NOW)
    async with TestClient(TestServer(create_app(config, clock=clock))) as client:
        ids = await build(client, clock)
        yield Bureau(client, clock, basic(NODE_ADMIN, ADMIN_SECRET), ids)
