"""What the CLI changes reaches a running node's caches through Redis invalidations."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from resolver.cli import main
from resolver.config import load_config
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET, REDIS_URL
from tests.resolver.conftest import NODE_ADMIN, basic


async def test_cli_import_with_overwrite_invalidates_the_running_node(tmp_path, monkeypatch, redis_prefix):
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    store = f"sqlite:///{tmp_path}/idnode.db"
    settings = {
        "data_dir": str(tmp_path),
        "store": store,
        "redis": REDIS_URL,
        "redis_key_prefix": redis_prefix,
        "native_port": 0,
    }
    config = load_config(env={}, overrides=settings)
    async with TestClient(TestServer(create_app(config))) as client:
        admin = basic(NODE_ADMIN, ADMIN_SECRET)
        r = await client.post("/api/promoters", json={"name": "P", "uscc": "91350100M000100Y43"}, headers=admin)
        promoter = (await r.json())["id"]
        body = {"name": "E", "uscc": "91440300708461136T", "promoter": promoter}
        ent = await (await client.post("/api/enterprises", json=body, headers=admin)).json()
        handle = f"{ent['prefix']}/SKU-1"
        r = await client.put(
            f"/api/handles/{handle}",
            json=[{"index": 1, "type": "URL", "data": "https://old"}],
            headers=basic(ent["admin"], ent["secret"]),
        )
        assert r.status == 201
        for _ in range(3):  # now in the local and Redis tiers
            assert (await (await client.get(f"/api/handles/{handle}")).json())["values"][0]["data"][
                "value"
            ] == "https://old"

        path = tmp_path / "update.ndjson"
        path.write_text(json.dumps({"suffix": "SKU-1", "values": [{"index": 1, "type": "URL", "data": "https://new"}]}))
        args = ["import", str(path), "--store", store, "--enterprise-prefix", ent["prefix"], "--overwrite"]
        env = {"IDNODE_REDIS": REDIS_URL, "IDNODE_REDIS_KEY_PREFIX": redis_prefix, "IDNODE_DATA_DIR": str(tmp_path)}
        result = await asyncio.get_running_loop().run_in_executor(None, lambda: CliRunner().invoke(main, args, env=env))
        assert result.exit_code == 0, result.output
        assert "replaced 1" in result.output
        got = await (await client.get(f"/api/handles/{handle}")).json()
        assert got["values"][0]["data"]["value"] == "https://new"
