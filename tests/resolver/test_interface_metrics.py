"""Each interface's series move when it is used (a real node, real requests): the web resolver
(redirects, landing pages, linksets, error pages, the home page's form, GS1 Digital Link), QR codes
and label sheets, and jobs (queued and running from the store, rows by outcome, finished by state,
duration). The native protocol's series have theirs in test_native_metrics.py (UDP and TCP sockets).

The tests share prometheus-client's global registry with every other test of the run, so they compare
a scrape after the traffic with one before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from resolver.http.keys import STATE_KEY
from resolver.ops import job_metrics
from tests.deploy.test_deploy_files import known_metric_names
from tests.resolver.test_metrics import Samples, delta, scrape, val

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
LINKSET = {"Accept": "application/linkset+json"}
GTIN = "06901234567892"  # company prefix 6901234


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"job_workers": 0}  # the test starts the job runner itself, once it has seen the queue


def assert_all_known(samples: Samples) -> None:
    """What a real scrape shows is what the dashboard's check knows the code exports."""
    shown = {name for name, _ in samples if name.startswith("idnode_")}
    assert shown <= known_metric_names(), sorted(shown - known_metric_names())


async def put_url(client: TestClient, handle: str, target: str, headers: dict[str, str]) -> None:
    body = {"values": [{"index": 1, "type": "URL", "data": target}]}
    r = await client.put(f"/api/handles/{handle}", json=body, headers=headers)
    assert r.status in (200, 201), await r.text()


async def test_web_resolver_series(client: TestClient, onboard: Callable[..., Any]) -> None:
    e = await onboard()
    prefix = e["prefix"]
    handle = f"{prefix}/web-metrics-1"
    await put_url(client, handle, "https://trace.example.com/1", e["headers"])
    assert (await client.put(f"/api/enterprises/{prefix}/gs1-prefixes/6901234", headers=e["headers"])).status == 201
    await put_url(client, f"{prefix}/01/{GTIN}", "https://trace.example.com/product", e["headers"])
    before = await scrape(client)

    async def get(path: str, status: int, headers: dict[str, str] = BROWSER, **params: str) -> None:
        r = await client.get(path, headers=headers, params=params, allow_redirects=False)
        assert r.status == status, (path, await r.text())

    for _ in range(3):
        await get(f"/{handle}", 302)
    await get(f"/{handle}", 200, noredirect="")  # rendered (Chinese, the default) …
    await get(f"/{handle}", 200, noredirect="")  # … then from the memo: counted as well
    await get(f"/{handle}", 200, noredirect="", lang="en")
    await get(f"/{handle}", 200, LINKSET)
    await get(f"/{prefix}/web-metrics-none", 404)
    await get(f"/{prefix}/web-metrics-none-2", 404)
    await get("/99.1/elsewhere", 400)  # another node's prefix: a page that says why
    await get(f"/{prefix}/web-metrics-none", 404, {"Accept": "application/json"})  # JSON: no page
    await get("/", 303, hdl=handle)
    await get(f"/01/{GTIN}", 302)
    await get(f"/01/{GTIN}/10/LOT1", 302)  # no handle for the batch: the product's
    await get("/01/05012345678900", 404)  # a company prefix nobody registered
    await get("/01/06901234567890", 400)  # a wrong check digit
    after = await scrape(client)

    assert delta(before, after, "idnode_web_redirects_total", status="302") == 5  # 3 handle + 2 GS1
    assert delta(before, after, "idnode_web_redirects_total", status="303") == 1
    assert delta(before, after, "idnode_web_landing_pages_total", lang="zh") == 2
    assert delta(before, after, "idnode_web_landing_pages_total", lang="en") == 1
    assert delta(before, after, "idnode_web_linksets_total") == 1
    assert delta(before, after, "idnode_web_error_pages_total", status="404") == 3  # 2 handles + the GTIN
    assert delta(before, after, "idnode_web_error_pages_total", status="400") == 2  # the prefix, the check digit
    assert delta(before, after, "idnode_gs1_resolutions_total", outcome="resolved") == 2
    assert delta(before, after, "idnode_gs1_resolutions_total", outcome="not_found") == 1
    assert delta(before, after, "idnode_gs1_resolutions_total", outcome="invalid") == 1
    assert_all_known(after)


async def test_qr_codes_and_label_sheets(client: TestClient, onboard: Callable[..., Any]) -> None:
    e = await onboard()
    handles = [f"{e['prefix']}/label-metrics-{i}" for i in range(5)]
    for h in handles:
        await put_url(client, h, "https://trace.example.com/l", e["headers"])
    before = await scrape(client)
    for params in ({}, {}, {"format": "png"}, {"format": "png", "scale": "3"}):
        r = await client.get(f"/api/qr/{handles[0]}", params=params)
        assert r.status == 200, await r.text()
    assert (await client.get(f"/api/qr/{e['prefix']}/label-metrics-none")).status == 404
    r = await client.get("/api/labels", params={"prefix": e["prefix"]}, headers=e["headers"])
    assert r.status == 200 and r.content_type == "application/pdf", await r.text()
    r = await client.get("/api/labels", params={"prefix": e["prefix"], "count": "2"}, headers=e["headers"])
    assert r.status == 200, await r.text()
    after = await scrape(client)

    assert delta(before, after, "idnode_qr_codes_total", format="svg", rendered="true") == 1
    assert delta(before, after, "idnode_qr_codes_total", format="svg", rendered="false") == 1  # the code cache
    assert delta(before, after, "idnode_qr_codes_total", format="png", rendered="true") == 2  # two scales
    assert delta(before, after, "idnode_label_sheets_total") == 2
    assert delta(before, after, "idnode_labels_total") == 5 + 2
    assert delta(before, after, "idnode_label_sheet_duration_seconds_count") == 2
    assert delta(before, after, "idnode_label_sheet_duration_seconds_sum") > 0
    assert_all_known(after)


def jobs_now(samples: Samples, state: str, kind: str = "import") -> float:
    return val(samples, "idnode_jobs", state=state, kind=kind)


async def wait_for(client: TestClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(2000):
        job = await (await client.get(url, headers=headers)).json()
        if job["state"] in ("done", "failed"):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {url} did not end")


async def test_jobs_queued_running_rows_and_ends(
    client: TestClient, admin: dict[str, str], onboard: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_metrics, "JOB_STATE_TTL", 0.0)  # every scrape reads the job table
    e, other = await onboard(), await onboard()
    prefix, headers = e["prefix"], e["headers"]
    await put_url(client, f"{prefix}/JOB-0001", "https://trace.example.com/1", headers)  # present in the file
    rows = ["suffix,URL"] + [f"JOB-{n:04d},https://trace.example.com/{n}" for n in range(1, 41)]
    rows.append(",https://trace.example.com/no-suffix")  # rejected
    csv = ("\n".join(rows) + "\n").encode()
    before = await scrape(client)
    business_before = await scrape(client, "/metrics/business", admin)

    # Jobs queued on a node that runs none yet: the gauge reads the store.
    r = await client.post(f"/api/jobs?prefix={prefix}", data=csv, headers={**headers, "Content-Type": "text/csv"})
    assert r.status == 202, await r.text()
    done_url = (await r.json())["status_url"]
    failing = b"suffix,URL\nX-1,https://trace.example.com/x\n"
    r = await client.post(
        f"/api/jobs?prefix={other['prefix']}", data=failing, headers={**other["headers"], "Content-Type": "text/csv"}
    )
    assert r.status == 202, await r.text()
    failed_url = (await r.json())["status_url"]
    queued = await scrape(client)
    assert jobs_now(queued, "queued") - jobs_now(before, "queued") == 2
    assert jobs_now(queued, "running") == jobs_now(before, "running")
    # The second enterprise is disabled before its job runs: the job fails (its owner's rights now).
    r = await client.patch(f"/api/enterprises/{other['prefix']}", json={"status": "disabled"}, headers=admin)
    assert r.status == 200, await r.text()

    runner = client.server.app[STATE_KEY].jobs
    assert runner is not None and runner.observer is job_metrics.JOB_METER
    runner.workers = 1
    runner.start()
    job = await wait_for(client, done_url, headers)
    assert (job["state"], job["created"], job["present"], job["rejected"]) == ("done", 39, 1, 1), job
    assert (await wait_for(client, failed_url, other["headers"]))["state"] == "failed"
    after = await scrape(client)
    business_after = await scrape(client, "/metrics/business", admin)

    assert delta(before, after, "idnode_job_rows_total", kind="import", outcome="created") == 39
    # Registrations are the store's counts: a job's rows count as the API's do.
    assert delta(business_before, business_after, "idnode_registrations_total", prefix=prefix) == 39
    assert delta(before, after, "idnode_job_rows_total", kind="import", outcome="present") == 1
    assert delta(before, after, "idnode_job_rows_total", kind="import", outcome="rejected") == 1
    assert delta(before, after, "idnode_jobs_finished_total", kind="import", state="done") == 1
    assert delta(before, after, "idnode_jobs_finished_total", kind="import", state="failed") == 1
    assert delta(before, after, "idnode_job_duration_seconds_count", kind="import", state="done") == 1
    assert delta(before, after, "idnode_job_duration_seconds_bucket", kind="import", state="done", le="+Inf") == 1
    assert jobs_now(after, "queued") == jobs_now(before, "queued")
    assert jobs_now(after, "running") == jobs_now(before, "running")
    for kind in ("import", "replace", "delete"):  # every kind and state has a series, 0 or not
        assert ("idnode_jobs", (("kind", kind), ("state", "queued"))) in after
    assert_all_known(after)


class _DownStore:
    async def job_counts_by_kind(self) -> dict[tuple[str, str], int]:
        from registry.errors import StoreUnavailable

        raise StoreUnavailable("the store is down")


async def test_a_scrape_answers_while_the_job_table_cannot_be_read() -> None:
    """The jobs gauge is left out and the failure counted; the rest of /metrics is served."""
    from aiohttp.test_utils import make_mocked_request
    from prometheus_client import REGISTRY
    from prometheus_client.parser import text_string_to_metric_families

    from resolver.ops.metrics import metrics_handler

    def failures() -> float:
        return REGISTRY.get_sample_value("idnode_store_errors_total", {"operation": "jobs"}) or 0.0

    before = failures()
    handler = metrics_handler([job_metrics.JobStateCollector(lambda: _DownStore())])
    reply = await handler(make_mocked_request("GET", "/metrics"))
    assert reply.status == 200 and isinstance(reply.body, bytes)
    names = {f.name for f in text_string_to_metric_families(reply.body.decode())}
    assert "idnode_http_requests" in names and "idnode_jobs" not in names
    assert failures() == before + 1


class _CountingStore:
    """A store whose job table holds far more unfinished jobs than any window of the newest."""

    async def job_counts_by_kind(self) -> dict[tuple[str, str], int]:
        return {("import", "queued"): 1500, ("import", "running"): 2, ("delete", "done"): 7, ("other", "queued"): 3}


async def test_the_jobs_gauge_counts_every_unfinished_job_by_kind_and_state() -> None:
    collector = job_metrics.JobStateCollector(lambda: _CountingStore())
    await collector.refresh()
    (family,) = collector.collect()
    got = {(s.labels["state"], s.labels["kind"]): s.value for s in family.samples}
    assert got[("queued", "import")] == 1500 and got[("running", "import")] == 2
    assert got[("queued", "delete")] == 0 and ("done", "delete") not in got  # queued and running only
    assert ("queued", "other") not in got  # kinds the node does not run have no series
