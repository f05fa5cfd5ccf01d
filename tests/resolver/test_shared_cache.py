"""Every writer to a shared store tells the nodes' shared cache: nodes started with ``--redis``
record it in the store, and the CLI and nodes started without a redis setting use it. Real
``idnode`` processes, the machine's Redis."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_SECRET, REDIS_URL, free_port
from tests.nodeproc import IDNODE, NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def url_of(node: NodeProcess, handle: str) -> str | None:
    status, body = call(f"{node.url}/api/handles/{handle}")
    if status == 404:
        return None
    assert status == 200, body
    return next(v["data"]["value"] for v in body["values"] if v["type"] == "URL")


def enterprise(node: NodeProcess, n: int) -> dict[str, Any]:
    status, p = call(f"{node.url}/api/promoters", "POST", {"name": f"P{n}", "uscc": make_uscc(n, "92")}, ADMIN)
    assert status == 201, p
    body = {"name": f"E{n}", "uscc": make_uscc(n), "promoter": p["id"]}
    status, ent = call(f"{node.url}/api/enterprises", "POST", body, ADMIN)
    assert status == 201, ent
    ent["headers"] = basic(ent["admin"], ent["secret"])
    return ent


def put(node: NodeProcess, handle: str, target: str, headers: dict[str, str]) -> None:
    values = [{"index": 1, "type": "URL", "data": target}]
    status, body = call(f"{node.url}/api/handles/{handle}", "PUT", values, headers)
    assert status in (200, 201), body


def cli(*args: str, data: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``idnode …`` with the node's data directory and no IDNODE_REDIS."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")}
    full |= {"IDNODE_DATA_DIR": str(data), **env}
    return subprocess.run([IDNODE, *args], capture_output=True, text=True, env=full, timeout=120)


def import_one(data: Path, tmp: Path, prefix: str, suffix: str, target: str) -> subprocess.CompletedProcess[str]:
    rows = tmp / f"{suffix}-{abs(hash(target))}.ndjson"
    rows.write_text(json.dumps({"suffix": suffix, "values": [{"index": 1, "type": "URL", "data": target}]}) + "\n")
    return cli("import", str(rows), "--enterprise-prefix", prefix, "--overwrite", data=data)


def test_cli_without_redis_setting_reaches_the_nodes_cache(tmp_path: Path, redis_prefix: str) -> None:
    data = tmp_path / "data"
    node = NodeProcess(data, "--redis", REDIS_URL, "--redis-key-prefix", redis_prefix).wait_ready()
    try:
        ent = enterprise(node, 1)
        handle = f"{ent['prefix']}/SKU-1"
        put(node, handle, "https://old.example/1", ent["headers"])
        for _ in range(3):  # now in the node's local tier and in Redis
            assert url_of(node, handle) == "https://old.example/1"

        done = import_one(data, tmp_path, ent["prefix"], "SKU-1", "https://new.example/1")
        assert done.returncode == 0, done.stderr
        assert "replaced 1" in done.stdout
        assert f"shared cache {REDIS_URL} (key prefix {redis_prefix!r})" in done.stderr
        assert url_of(node, handle) == "https://new.example/1"  # at once, not after cache_redis_max_ttl

        shown = cli("cache", "show", "--json", data=data)
        assert shown.returncode == 0 and json.loads(shown.stdout)["redis"] == REDIS_URL, shown
        assert json.loads(shown.stdout)["key_prefix"] == redis_prefix

        # The contrast: once the record is forgotten, a CLI write leaves the node serving the old
        # record (what the record is there to prevent).
        assert cli("cache", "forget", data=data).returncode == 0
        done = import_one(data, tmp_path, ent["prefix"], "SKU-1", "https://newer.example/1")
        assert done.returncode == 0, done.stderr
        assert "shared cache" not in done.stderr
        assert url_of(node, handle) == "https://new.example/1"
    finally:
        node.stop()


def test_node_without_redis_setting_uses_the_recorded_cache(tmp_path: Path, redis_prefix: str) -> None:
    store = f"sqlite:///{tmp_path}/shared.db"
    a = NodeProcess(tmp_path / "a", "--store", store, "--redis", REDIS_URL, "--redis-key-prefix", redis_prefix)
    b = None
    try:
        a.wait_ready()
        ent = enterprise(a, 2)
        handle = f"{ent['prefix']}/SKU-2"
        put(a, handle, "https://old.example/2", ent["headers"])
        for _ in range(3):
            assert url_of(a, handle) == "https://old.example/2"
        b = NodeProcess(tmp_path / "b", "--store", store).wait_ready()  # no --redis
        put(b, handle, "https://new.example/2", ent["headers"])
        assert url_of(a, handle) == "https://new.example/2"
        assert url_of(b, handle) == "https://new.example/2"
        status, ready = call(f"{b.url}/readyz")
        assert status == 200 and ready["status"] == "ok", ready
    finally:
        a.stop()
        if b is not None:
            b.stop()
    assert "using the shared cache" in b.log()


def test_writers_refuse_when_the_recorded_cache_cannot_be_reached(tmp_path: Path, redis_prefix: str) -> None:
    data = tmp_path / "data"
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    node = NodeProcess(data, "--redis", dead, "--redis-key-prefix", redis_prefix).wait_ready()
    try:
        ent = enterprise(node, 3)
    finally:
        node.stop()

    refused = import_one(data, tmp_path, ent["prefix"], "SKU-3", "https://never.example/3")
    assert refused.returncode != 0
    assert f"cannot reach the shared cache {dead}" in refused.stderr, refused.stderr
    assert "Nothing was written" in refused.stderr and "idnode cache forget" in refused.stderr
    refused = cli("enterprise", "disable", ent["prefix"], data=data)
    assert refused.returncode != 0 and "cannot reach" in refused.stderr
    assert cli("enterprise", "list", data=data).returncode == 0  # reading needs no cache

    # A node started without a redis setting says so clearly, and still serves from the store.
    node = NodeProcess(data).wait_ready()
    try:
        assert url_of(node, f"{ent['prefix']}/SKU-3") is None  # the refused import wrote nothing
        status, body = call(f"{node.url}/api/enterprises", headers=ADMIN)
        assert status == 200 and all(e["status"] == "active" for e in body["enterprises"]), body
    finally:
        node.stop()
    errors = [json.loads(x) for x in node.log().splitlines() if x.startswith("{") and '"error"' in x]
    assert any(f"cannot reach the shared Redis cache {dead}" in e["event"] for e in errors), node.log()

    # Once the operator says no node uses it any more, writers go ahead.
    assert cli("cache", "forget", data=data).returncode == 0
    done = import_one(data, tmp_path, ent["prefix"], "SKU-3", "https://now.example/3")
    assert done.returncode == 0, done.stderr


def test_a_redis_password_is_never_recorded_in_the_store(tmp_path: Path, redis_prefix: str) -> None:
    data = tmp_path / "data"
    with_password = f"redis://:pw-{redis_prefix[-9:-1]}@127.0.0.1:{free_port()}/0"
    node = NodeProcess(data, "--redis", with_password, "--redis-key-prefix", redis_prefix).wait_ready()
    try:
        ent = enterprise(node, 4)
    finally:
        node.stop()
    with sqlite3.connect(data / "idnode.db") as conn:
        values = [v for (v,) in conn.execute("SELECT value FROM meta")]
    assert not [v for v in values if f"pw-{redis_prefix[-9:-1]}" in v]
    shown = cli("cache", "show", "--json", data=data)
    assert json.loads(shown.stdout)["needs_password"] is True
    refused = import_one(data, tmp_path, ent["prefix"], "SKU-4", "https://x.example/4")
    assert refused.returncode != 0
    assert "needs a password that is not kept in the store" in refused.stderr and "IDNODE_REDIS" in refused.stderr
    node = NodeProcess(data)  # a node without the setting refuses to start for the same reason
    try:
        assert node.proc.wait(60) != 0
    finally:
        node.stop()
    assert "needs a password" in node.log()


def test_passwords_are_taken_out_of_recorded_urls() -> None:
    from resolver.cache.shared import without_password

    cases = {
        "redis://127.0.0.1:6379/0": ("redis://127.0.0.1:6379/0", False),
        "redis://:s3cret@cache:6379/0": ("redis://cache:6379/0", True),
        "rediss://idnode:s3cret@cache:6380/1": ("rediss://idnode@cache:6380/1", True),
        "redis+cluster://:s3cret@redis-0.redis:6379": ("redis+cluster://redis-0.redis:6379", True),
        "redis://cache:6379/0?password=s3cret&ssl_cert_reqs=none": ("redis://cache:6379/0?ssl_cert_reqs=none", True),
        "redis://idnode@cache:6379/0": ("redis://idnode@cache:6379/0", False),
        "unix:///run/redis.sock?db=2": ("unix:///run/redis.sock?db=2", False),
    }
    for url, expected in cases.items():
        assert without_password(url) == expected, url
