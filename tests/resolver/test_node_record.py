"""What the node publishes on its prefix handle, checked on real ``idnode serve`` processes: HS_SITE
lists UDP/TCP only when this start actually bound them (one process, and workers), and the report
key is an IDNODE_REPORT_KEY value (PEM) at index 301, replacing the Ed25519 HS_PUBKEY that earlier
versions put there."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry import valuedata
from registry.model import HandleValue
from registry.service import Registry
from registry.stores import open_store
from resolver.config import load_config
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import IDNODE, NodeProcess
from tests.resolver.native_client import free_native_port, get_json, resolution, tcp_ask

PREFIX_HANDLE = "0.NA/88.118.8"


def _interfaces(node: NodeProcess) -> set[tuple[str, int]]:
    record = get_json(f"{node.url}/api/handles/{PREFIX_HANDLE}?type=HS_SITE")
    (site,) = record["values"]
    return {(i["protocol"], i["port"]) for s in site["data"]["value"]["servers"] for i in s["interfaces"]}


@pytest.mark.parametrize(("workers", "taken"), [(1, True), (1, False), (2, True), (2, False)])
def test_site_lists_udp_and_tcp_only_when_bound(tmp_path: Path, workers: int, taken: bool) -> None:
    port = free_native_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if taken:
        blocker.bind(("127.0.0.1", port))  # another program holds the UDP port
    node = NodeProcess(tmp_path, "--native-port", str(port), "--workers", str(workers))
    try:
        node.wait_ready()
        listed = _interfaces(node)
        assert ("HTTP", node.port) in listed
        if taken:
            assert not {p for p, _ in listed} & {"UDP", "TCP"}, listed
            assert "native Handle protocol not started" in node.log()
        else:
            assert {("UDP", port), ("TCP", port)} <= listed
            assert tcp_ask(port, resolution(PREFIX_HANDLE)).header.response_code == 1
    finally:
        node.stop()
        blocker.close()


def test_report_key_is_its_own_type_and_replaces_an_old_hs_pubkey(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path).wait_ready()
    key = get_json(f"{node.url}/api/promotion/public-key")
    node.stop()

    # What an earlier version left in the store: the report key as an Ed25519 HS_PUBKEY at 301.
    async def plant_old_value() -> None:
        config = load_config(env={}, overrides={"data_dir": str(tmp_path)})
        store = await open_store(config.store_url)
        try:
            registry = Registry(store, config.node_settings())
            data = valuedata.encode_public_key(Ed25519PrivateKey.generate().public_key())
            await registry.set_node_value(HandleValue(index=301, type="HS_PUBKEY", data=data, timestamp=1))
            record = await registry.read_record(f"0.NA/{config.prefix}".upper())
            assert record is not None and record.value_at(301).type == "HS_PUBKEY"
        finally:
            await store.close()

    asyncio.run(plant_old_value())
    node = NodeProcess(tmp_path).wait_ready()
    try:
        record = get_json(f"{node.url}/api/handles/{PREFIX_HANDLE}")
        by_index: dict[int, Any] = {v["index"]: v for v in record["values"]}
        assert by_index[301]["type"] == "IDNODE_REPORT_KEY"
        assert by_index[301]["data"] == {"format": "string", "value": key["pem"]}
        assert not [v for v in record["values"] if v["type"] == "HS_PUBKEY"]  # nothing HANDLE.NET cannot read
        assert get_json(f"{node.url}/api/promotion/public-key")["key_id"] == key["key_id"]  # the same key
    finally:
        node.stop()


def test_a_one_off_get_beside_a_running_node_leaves_its_site_alone(tmp_path: Path) -> None:
    """``idnode serve --get`` on the node's store (as an operator runs it beside the node) neither
    binds the native port nor rewrites HS_SITE: the site keeps the UDP/TCP interfaces the node bound."""
    port = free_native_port()
    node = NodeProcess(tmp_path, "--native-port", str(port)).wait_ready()
    try:
        env = {**os.environ, "IDNODE_ADMIN_SECRET": ADMIN_SECRET}
        args = [IDNODE, "serve", "--data-dir", str(tmp_path), "--native-port", str(port), "--get"]
        for _ in range(2):
            out = subprocess.run(
                [*args, f"/api/handles/{PREFIX_HANDLE}?type=HS_SITE"], env=env, capture_output=True, timeout=60
            )
            assert out.returncode == 0, out.stderr.decode()
            site = json.loads(out.stdout)["values"][0]["data"]["value"]
            protocols = {i["protocol"] for s in site["servers"] for i in s["interfaces"]}
            assert {"UDP", "TCP"} <= protocols, site
        assert tcp_ask(port, resolution(PREFIX_HANDLE)).header.response_code == 1  # the node still answers
    finally:
        node.stop()
