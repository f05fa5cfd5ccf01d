"""/metrics: the series operators and the bureau's dashboard use, bounded labels, multiprocess mode.

The in-process tests share prometheus-client's global registry with every other test of the run,
so they compare a scrape after the traffic with one before it.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from resolver.config import load_config
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET, REDIS_URL, free_port
from tests.resolver.conftest import NODE_PREFIX, basic

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
RESOLVE = "/api/handles/{handle}"
NDJSON = {"Content-Type": "application/x-ndjson"}


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(client: TestClient, path: str = "/metrics", headers: dict[str, str] | None = None) -> Samples:
    r = await client.get(path, headers=headers)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    return parse(await r.text())


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return val(after, name, **labels) - val(before, name, **labels)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


def url_value(n: int = 1) -> dict[str, Any]:
    return {"index": 1, "type": "URL", "data": f"https://trace.example.com/{n}"}


def ndjson(prefix: str, suffixes: list[str]) -> str:
    return "\n".join(json.dumps({"handle": f"{prefix}/{s}", "values": [url_value()]}) for s in suffixes) + "\n"


def assert_no_handle_in_labels(samples: Samples, handles: list[str]) -> None:
    suffixes = [h.split("/", 1)[1] for h in handles]
    for name, labels in samples:
        for key, value in labels:
            for needle in handles + suffixes:
                assert needle not in value, f"{name}{{{key}={value!r}}} carries a handle"


# == one process ==================================================================================


async def test_requests_writes_batches_and_errors_are_counted(client, admin, onboard) -> None:  # type: ignore[no-untyped-def]
    ent = await onboard()
    prefix = ent["prefix"]
    before = await scrape(client)
    business_before = await scrape(client, "/metrics/business", admin)
    single = f"{prefix}/metrics-single-Q7"
    r = await client.put(f"/api/handles/{single}", json=[url_value()], headers=ent["headers"])
    assert r.status == 201, await r.text()
    for _ in range(3):
        assert (await client.get(f"/api/handles/{single}")).status == 200
    unknown = [f"{prefix}/metrics-unknown-{i}" for i in range(2)]
    for h in unknown:
        assert (await client.get(f"/api/handles/{h}")).status == 404
    assert (await client.get("/api/handles/no-slash-metrics-bad")).status == 400
    assert (await client.get("/metrics-nowhere-path")).status == 404
    batch = [f"metrics-batch-{i}" for i in range(5)]
    r = await client.post("/api/handles", data=ndjson(prefix, batch), headers={**ent["headers"], **NDJSON})
    assert r.status == 201, await r.text()
    # A non-atomic batch with one item outside the enterprise's prefix: 2 created, 1 failed.
    mixed = ndjson(prefix, ["metrics-mixed-0", "metrics-mixed-1"]) + ndjson(NODE_PREFIX, ["metrics-foreign"])
    r = await client.post("/api/handles", params={"atomic": "false"}, data=mixed, headers={**ent["headers"], **NDJSON})
    assert r.status == 201, await r.text()
    assert (await r.json())["failed"] == 1
    after = await scrape(client)
    business_after = await scrape(client, "/metrics/business", admin)

    # Requests by route template, method and status.
    assert delta(before, after, "idnode_http_requests_total", route=RESOLVE, method="GET", status="200") == 3
    assert delta(before, after, "idnode_http_requests_total", route=RESOLVE, method="GET", status="404") == 2
    assert delta(before, after, "idnode_http_requests_total", route=RESOLVE, method="GET", status="400") == 1
    assert delta(before, after, "idnode_http_requests_total", route=RESOLVE, method="PUT", status="201") == 1
    assert delta(before, after, "idnode_http_requests_total", route="/api/handles", method="POST", status="201") == 2
    assert delta(before, after, "idnode_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not [s for s in series(after, "idnode_http_requests_total") if s["route"] == "/metrics"]
    # Latency histograms: buckets, sum and count, for resolves and writes.
    name = "idnode_http_request_duration_seconds"
    assert delta(before, after, f"{name}_count", route=RESOLVE, method="GET") == 6
    assert delta(before, after, f"{name}_count", route=RESOLVE, method="PUT") == 1
    assert delta(before, after, f"{name}_count", route="/api/handles", method="POST") == 2
    assert delta(before, after, f"{name}_bucket", route=RESOLVE, method="GET", le="+Inf") == 6
    les = {s["le"] for s in series(after, f"{name}_bucket") if s.get("route") == RESOLVE}
    assert {"0.001", "0.01", "0.1", "1.0", "+Inf"} <= les
    assert delta(before, after, f"{name}_sum", route=RESOLVE, method="GET") > 0
    # Batches: sizes and outcomes; registrations by enterprise prefix (single + batch).
    assert delta(before, after, "idnode_batch_size_items_count") == 2
    assert delta(before, after, "idnode_batch_size_items_sum") == 8
    assert delta(before, after, "idnode_batch_size_items_bucket", le="10.0") == 2
    assert delta(before, after, "idnode_batch_item_outcomes_total", outcome="created") == 7
    assert delta(before, after, "idnode_batch_item_outcomes_total", outcome="failed") == 1
    assert delta(business_before, business_after, "idnode_registrations_total", prefix=prefix) == 8
    assert not series(after, "idnode_registrations_total")  # a business figure: not on the open path
    # Store timings by operation.
    store_ops = {s["operation"] for s in series(after, "idnode_store_operation_duration_seconds_count")}
    assert store_ops, "no store timings"
    assert (
        sum(delta(before, after, "idnode_store_operation_duration_seconds_count", operation=op) for op in store_ops) > 0
    )
    assert "idnode_redis_breaker_state" in {n for n, _ in after}
    # Label values are bounded: never a handle, never a suffix, never a raw path.
    used = [single, *unknown, *(f"{prefix}/{s}" for s in batch), f"{NODE_PREFIX}/metrics-foreign", "x/metrics-mixed-0"]
    assert_no_handle_in_labels(after, used)
    assert_no_handle_in_labels(business_after, used)
    for _, labels in after:
        assert "metrics-nowhere-path" not in json.dumps(labels) and "no-slash-metrics-bad" not in json.dumps(labels)


async def test_promoter_gauges_follow_onboarding_and_registrations(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Per promoter: eligible enterprises, registrations and the current award (a small policy so
    that one promoter qualifies); per enterprise prefix: registrations."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "base_enterprises = 2\nbase_registrations = 5\nbase_award_yuan = 200000\n"
        "increment_registrations = 1000\nincrement_award_yuan = 10000\nmin_enterprise_registrations = 1\n"
    )
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    config = load_config(
        env={},
        overrides={
            "data_dir": str(tmp_path),
            "store": f"sqlite:///{tmp_path}/idnode.db",
            "native_port": 0,
            "policy_file": str(policy),
        },
    )
    admin = basic(f"300:0.NA/{NODE_PREFIX}", ADMIN_SECRET)
    async with TestClient(TestServer(create_app(config))) as client:

        async def promoter(n: int) -> int:
            from tests.resolver.conftest import make_uscc

            r = await client.post("/api/promoters", json={"name": f"P{n}", "uscc": make_uscc(n, "92")}, headers=admin)
            assert r.status == 201, await r.text()
            return (await r.json())["id"]

        async def enterprise(n: int, promoter_id: int) -> dict[str, Any]:
            from tests.resolver.conftest import make_uscc

            body = {"name": f"E{n}", "uscc": make_uscc(n), "promoter": promoter_id}
            r = await client.post("/api/enterprises", json=body, headers=admin)
            assert r.status == 201, await r.text()
            reply = await r.json()
            reply["headers"] = basic(reply["admin"], reply["secret"])
            return reply

        p1, p2 = await promoter(1), await promoter(2)
        e1, e2, e3 = await enterprise(1, p1), await enterprise(2, p1), await enterprise(3, p2)
        for ent, n in ((e1, 3), (e2, 2), (e3, 1)):
            suffixes = [f"gauge-{i}" for i in range(n)]
            r = await client.post(
                "/api/handles", data=ndjson(ent["prefix"], suffixes), headers={**ent["headers"], **NDJSON}
            )
            assert r.status == 201, await r.text()
        after = await scrape(client, "/metrics/business", admin)
        open_after = await scrape(client)

    assert not [name for name, _ in open_after if name.startswith(("idnode_promoter_", "idnode_enterprise_"))]
    pid1, pid2 = str(p1), str(p2)
    assert val(after, "idnode_promoter_eligible_enterprises", promoter=pid1) == 2
    assert val(after, "idnode_promoter_registrations", promoter=pid1) == 5
    assert val(after, "idnode_promoter_award_yuan", promoter=pid1) == 200_000
    assert val(after, "idnode_promoter_eligible_enterprises", promoter=pid2) == 1
    assert val(after, "idnode_promoter_registrations", promoter=pid2) == 1
    assert val(after, "idnode_promoter_award_yuan", promoter=pid2) == 0
    for ent, n in ((e1, 3), (e2, 2), (e3, 1)):
        assert val(after, "idnode_enterprise_registrations", prefix=ent["prefix"]) == n
    # Promoter labels are ids, never names or credit codes.
    assert {s["promoter"] for s in series(after, "idnode_promoter_award_yuan")} == {pid1, pid2}


async def test_cache_tiers_are_counted(tmp_path, monkeypatch, redis_prefix) -> None:  # type: ignore[no-untyped-def]
    """With the local and Redis tiers on, resolves count hits and misses per tier."""
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    config = load_config(
        env={},
        overrides={
            "data_dir": str(tmp_path),
            "store": f"sqlite:///{tmp_path}/idnode.db",
            "native_port": 0,
            "redis": REDIS_URL,
            "redis_key_prefix": redis_prefix,
        },
    )
    admin = basic(f"300:0.NA/{NODE_PREFIX}", ADMIN_SECRET)
    async with TestClient(TestServer(create_app(config))) as client:
        h = f"{NODE_PREFIX}/cache-metrics-probe"
        assert (await client.put(f"/api/handles/{h}", json=[url_value()], headers=admin)).status == 201
        before = await scrape(client)
        for _ in range(5):
            assert (await client.get(f"/api/handles/{h}")).status == 200
        for _ in range(3):
            assert (await client.get(f"/api/handles/{NODE_PREFIX}/cache-metrics-unknown")).status == 404
        after = await scrape(client)
    tiers = {s["tier"] for s in series(after, "idnode_cache_requests_total")}
    assert {"local", "redis"} <= tiers, tiers
    hits = sum(delta(before, after, "idnode_cache_requests_total", tier=t, result="hit") for t in tiers)
    assert hits >= 4  # the first lookup may miss; the others hit a tier
    assert sum(delta(before, after, "idnode_cache_requests_total", tier=t, result="negative") for t in tiers) >= 2
    assert_no_handle_in_labels(after, [h, f"{NODE_PREFIX}/cache-metrics-unknown"])


# == several worker processes =====================================================================


def _counts_by_pid(prom_dir: Path, route: str, method: str, status: str | None) -> dict[str, float]:
    """Per worker (pid), the idnode_http_requests_total samples of one route, read from the
    multiprocess files directly."""
    from prometheus_client.mmap_dict import MmapedDict

    out: dict[str, float] = {}
    for path in glob.glob(str(prom_dir / "counter_*.db")):
        pid = Path(path).stem.split("_", 1)[1]
        for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
            _, name, labels, _ = json.loads(key)
            if name != "idnode_http_requests_total" or labels.get("route") != route or labels.get("method") != method:
                continue
            if status is None or labels.get("status") == status:
                out[pid] = out.get(pid, 0.0) + value
    return out


@pytest.fixture
def two_workers(tmp_path) -> Iterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    """``idnode serve --workers 2`` in a subprocess: (base URL, its PROMETHEUS_MULTIPROC_DIR)."""
    port = free_port()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDNODE_", "PROMETHEUS_"))}
    env.update(IDNODE_ADMIN_SECRET=ADMIN_SECRET, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    cmd = [
        sys.executable, "-c", "from resolver.cli import main; main()",
        "serve", "--workers", "2", "--port", str(port), "--native-port", "0",
        "--data-dir", str(tmp_path / "data"), "--log-level", "warning",
    ]  # fmt: skip
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", prom_dir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


async def test_metrics_aggregate_the_workers(two_workers) -> None:  # type: ignore[no-untyped-def]
    base, prom_dir = two_workers
    # A new connection per request, so SO_REUSEPORT spreads them over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

        async def get(path: str, accept: str = "*/*") -> tuple[int, str]:
            async with http.get(base + path, headers={"Accept": accept}, allow_redirects=False) as r:
                return r.status, await r.text()

        deadline = time.monotonic() + 60
        while True:  # both workers up: each has counted /healthz requests of its own
            try:
                await get("/healthz")
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
            if len(_counts_by_pid(prom_dir, "/healthz", "GET", None)) >= 2:
                break
            assert time.monotonic() < deadline, "the two workers did not both come up"
        n = 60
        for i in range(n):
            status, _ = await get(f"/api/handles/{NODE_PREFIX}/multiprocess-{i}")
            assert status == 404
            # The web resolver's counters: children bound at import (303) and on first use (404 pages).
            assert (await get(f"/?hdl={NODE_PREFIX}/multiprocess-{i}"))[0] == 303
            assert (await get(f"/{NODE_PREFIX}/multiprocess-{i}", "text/html"))[0] == 404
        per_worker = _counts_by_pid(prom_dir, RESOLVE, "GET", "404")
        assert sum(per_worker.values()) == n
        assert len([c for c in per_worker.values() if c > 0]) == 2, per_worker  # both workers answered some
        for _ in range(6):  # whichever worker answers the scrape, it reports both workers' counts
            status, text = await get("/metrics")
            assert status == 200
            samples = parse(text)
            assert val(samples, "idnode_http_requests_total", route=RESOLVE, method="GET", status="404") == n
            assert val(samples, "idnode_http_request_duration_seconds_count", route=RESOLVE, method="GET") == n
            assert val(samples, "idnode_web_redirects_total", status="303") == n
            assert val(samples, "idnode_web_error_pages_total", status="404") == n
            assert ("idnode_jobs", (("kind", "import"), ("state", "queued"))) in samples  # read from the store
            assert_no_handle_in_labels(samples, [f"{NODE_PREFIX}/multiprocess-{i}" for i in range(n)])


# == business figures: only with credentials, on a real node ======================================

BUSINESS = ("idnode_registrations_total", "idnode_promoter_", "idnode_enterprise_registrations")


async def test_business_figures_need_admin_or_auditor_credentials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``idnode serve --workers 2``: anonymous /metrics carries no registrations per enterprise and
    no clause-8 figures; /metrics/business carries them (summed over the workers) for the node
    administrator and the auditor, and answers 401 without credentials, 403 to an enterprise."""
    from tests.nodeproc import NodeProcess
    from tests.resolver.conftest import make_uscc

    node = NodeProcess(tmp_path / "data", "--workers", "2").wait_ready()
    admin = basic(f"300:0.NA/{NODE_PREFIX}", ADMIN_SECRET)
    try:
        async with aiohttp.ClientSession(base_url=node.url) as http:

            async def call(method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
                async with http.request(method, path, headers=headers, **kw) as r:
                    return r.status, await r.text()

            status, text = await call("POST", "/api/promoters", admin, json={"name": "P", "uscc": make_uscc(7, "92")})
            assert status == 201, text
            promoter = json.loads(text)["id"]
            body = {"name": "E", "uscc": make_uscc(7), "promoter": promoter}
            status, text = await call("POST", "/api/enterprises", admin, json=body)
            assert status == 201, text
            ent = json.loads(text)
            ent_headers = basic(ent["admin"], ent["secret"])
            batch = ndjson(ent["prefix"], ["biz-1", "biz-2", "biz-3"])
            status, text = await call("POST", "/api/handles", {**ent_headers, **NDJSON}, data=batch)
            assert status == 201, text
            status, text = await call("POST", "/api/auditors", admin, json={"name": "prometheus"})
            assert status == 201, text
            auditor = json.loads(text)
            auditor_headers = basic(auditor["identity"], auditor["secret"])

            for _ in range(4):  # whichever worker answers
                status, text = await call("GET", "/metrics")
                assert status == 200
                open_samples = parse(text)
                assert not [n for n, _ in open_samples if n.startswith(BUSINESS)], "business series on /metrics"
                assert ent["prefix"] not in text
                assert "idnode_http_requests_total" in {n for n, _ in open_samples}  # operations stay open

            assert (await call("GET", "/metrics/business"))[0] == 401
            assert (await call("GET", "/metrics/business", ent_headers))[0] == 403
            for headers in (auditor_headers, admin, auditor_headers, admin):
                status, text = await call("GET", "/metrics/business", headers)
                assert status == 200, text
                samples = parse(text)
                assert val(samples, "idnode_registrations_total", prefix=ent["prefix"]) == 3
                assert val(samples, "idnode_enterprise_registrations", prefix=ent["prefix"]) == 3
                assert val(samples, "idnode_promoter_registrations", promoter=str(promoter)) == 3
                assert ("idnode_promoter_award_yuan", (("promoter", str(promoter)),)) in samples
                assert not [n for n, _ in samples if n.startswith("idnode_http_")]  # only business here
    finally:
        node.stop()


async def test_rows_of_idnode_import_count_in_the_registration_metric(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Registrations on /metrics/business come from the store's exact counters, not from request
    handlers: rows that ``idnode import`` writes from another process count beside the API's. The
    node's own write events feed ``idnode_handle_changes_total`` (its prefix handle, the enterprise's,
    the batch), never the import's."""
    from tests.nodeproc import IDNODE, NodeProcess
    from tests.resolver.conftest import make_uscc

    data = tmp_path / "data"
    node = NodeProcess(data).wait_ready()
    admin = basic(f"300:0.NA/{NODE_PREFIX}", ADMIN_SECRET)
    try:
        async with aiohttp.ClientSession(base_url=node.url) as http:

            async def call(method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
                async with http.request(method, path, headers=headers, **kw) as r:
                    return r.status, await r.text()

            status, text = await call("POST", "/api/promoters", admin, json={"name": "P", "uscc": make_uscc(3, "92")})
            assert status == 201, text
            body = {"name": "E", "uscc": make_uscc(3), "promoter": json.loads(text)["id"]}
            status, text = await call("POST", "/api/enterprises", admin, json=body)
            assert status == 201, text
            prefix = json.loads(text)["prefix"]
            status, text = await call(
                "POST", "/api/handles", {**admin, **NDJSON}, data=ndjson(prefix, ["api-1", "api-2"])
            )
            assert status == 201, text

            async def registered() -> float:
                status, text = await call("GET", "/metrics/business", admin)
                assert status == 200, text
                return val(parse(text), "idnode_registrations_total", prefix=prefix)

            assert await registered() == 2
            rows = tmp_path / "rows.ndjson"
            rows.write_text(
                "".join(json.dumps({"suffix": f"cli-{n}", "values": [url_value(n)]}) + "\n" for n in range(5))
            )
            done = subprocess.run(
                [IDNODE, "import", str(rows), "--data-dir", str(data), "--enterprise-prefix", prefix],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            # Another process wrote: this node reads the counters again within REGISTRATIONS_TTL.
            deadline = time.monotonic() + 60
            while (seen := await registered()) != 7 and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
            assert seen == 7
            status, text = await call("GET", "/metrics")
            assert status == 200
            assert val(parse(text), "idnode_handle_changes_total", change="created") == 4
    finally:
        node.stop()
