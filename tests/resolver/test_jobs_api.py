"""The jobs API in a node on both stores: a 10,000-row CSV import end to end (202 and Location,
progress while it runs, rejected rows with their line in the file, nothing registered twice),
XLSX and NDJSON files, bulk replace and delete, reruns of the same file, who may do what, and the
limits (413, 415, unknown columns, a full queue)."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import openpyxl
import pytest
from aiohttp.test_utils import TestClient, TestServer

from resolver.config import load_config
from resolver.http.app import create_app
from resolver.http.job_routes import XLSX_TYPE
from resolver.http.keys import STATE_KEY
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

CSV = {"Content-Type": "text/csv"}
ROWS = 10_000


async def _client(tmp_path: Any, monkeypatch: Any, store: str, **settings: Any) -> TestClient:
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    overrides = {"data_dir": str(tmp_path), "store": store, "native_port": 0, "job_chunk_rows": 500, **settings}
    return TestClient(TestServer(create_app(load_config(env={}, overrides=overrides))))


@pytest.fixture
async def node(tmp_path, monkeypatch, store_url) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    client = await _client(tmp_path, monkeypatch, store_url)
    async with client:
        yield client


@pytest.fixture
async def sqlite_node(tmp_path, monkeypatch) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    client = await _client(tmp_path, monkeypatch, f"sqlite:///{tmp_path}/idnode.db", job_max_bytes=50_000)
    async with client:
        yield client


ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)


async def onboard(client: TestClient, n: int) -> dict[str, Any]:
    r = await client.post("/api/promoters", json={"name": f"P{n}", "uscc": make_uscc(n, "92")}, headers=ADMIN)
    promoter = (await r.json())["id"]
    body = {"name": f"E{n}", "uscc": make_uscc(n), "promoter": promoter}
    r = await client.post("/api/enterprises", json=body, headers=ADMIN)
    assert r.status == 201, await r.text()
    reply = await r.json()
    return {**reply, "headers": basic(reply["admin"], reply["secret"])}


async def submit(
    client: TestClient, prefix: str, body: bytes, headers: dict[str, str], *, ctype: str = "text/csv", query: str = ""
) -> Any:
    r = await client.post(f"/api/jobs?prefix={prefix}{query}", data=body, headers={**headers, "Content-Type": ctype})
    return r


async def wait(client: TestClient, url: str, headers: dict[str, str], seen: list[int] | None = None) -> dict[str, Any]:
    for _ in range(3000):
        r = await client.get(url, headers=headers)
        assert r.status == 200, await r.text()
        job = await r.json()
        if seen is not None:
            seen.append(job["processed"])
        if job["state"] in ("done", "failed"):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {url} did not end: {job}")


def big_csv() -> bytes:
    """10,000 rows; three are rejected, at known lines of the file, and one repeats an earlier row."""
    lines = ["suffix,URL,colour"]
    for n in range(ROWS):
        lines.append(f"SKU-{n:05d},https://trace.example.com/{n},c{n % 5}")
    lines[101] = "SKU-bad-1,https://trace.example.com/x"  # line 102: a column short
    lines[2001] = ",https://trace.example.com/empty,c0"  # line 2002: no suffix
    lines[5001] = 'SKU-bad-3,"https://trace.example.com/\nspans, two lines",c1,extra'  # lines 5002-5003: 4 columns
    lines[7001] = "SKU-00010,https://trace.example.com/10,c0"  # line 7003: registered already (row of line 12)
    text = "\n".join(lines) + "\n"
    return text.encode()


async def test_a_10000_row_import_end_to_end(node):
    ent = await onboard(node, 1)
    prefix, headers = ent["prefix"], ent["headers"]
    body = big_csv()
    r = await submit(node, prefix, body, headers, query="&kind=import&column=colour=COLOUR")
    assert r.status == 202, await r.text()
    reply = await r.json()
    assert r.headers["Location"] == reply["status_url"] == f"/api/jobs/{reply['id']}"
    assert reply["rejects_url"] == f"/api/jobs/{reply['id']}/rejects"
    assert reply["state"] in ("queued", "running") and reply["continued"] is False
    seen: list[int] = []
    job = await wait(node, reply["status_url"], headers, seen)
    assert job["state"] == "done", job
    assert seen == sorted(seen) and any(0 < p < ROWS for p in seen), "progress is visible while the job runs"
    assert (job["total"], job["processed"]) == (ROWS, ROWS)
    assert (job["created"], job["present"], job["rejected"]) == (ROWS - 4, 1, 3), job
    assert job["line"] == ROWS + 2  # the last line of the file (one record spans two lines)

    r = await node.get(job["rejects_url"], headers=headers)
    rejects = (await r.json())["rejects"]
    assert [x["line"] for x in rejects] == [102, 2002, 5002]
    assert "2 columns, the header 3" in rejects[0]["message"]
    assert rejects[1]["handle"] == f"{prefix}/" and rejects[1]["responseCode"] == 102
    assert "4 columns" in rejects[2]["message"]
    r = await node.get(f"{job['rejects_url']}?limit=2", headers=headers)
    page = await r.json()
    assert [x["line"] for x in page["rejects"]] == [102, 2002] and "after=2002" in page["next"]
    r = await node.get(f"{job['rejects_url']}?format=csv", headers=headers)
    assert r.content_type == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    text = (await r.read()).decode("utf-8-sig")
    assert text.splitlines()[0] == "line,handle,responseCode,message" and text.count("\r\n") == 4

    r = await node.get(f"/api/handles?prefix={prefix}&pageSize=1", headers=headers)
    assert (await r.json())["totalCount"] == str(ROWS - 4)
    r = await node.get(f"/api/handles/{prefix}/SKU-00042")
    values = {v["index"]: v for v in (await r.json())["values"]}
    assert values[2]["type"] == "COLOUR" and values[2]["data"]["value"] == "c2"

    # The same file again: a new job (the first is done), and every row is present.
    r = await submit(node, prefix, body, headers, query="&kind=import&column=colour=COLOUR")
    again = await wait(node, (await r.json())["status_url"], headers)
    assert (again["created"], again["present"], again["rejected"]) == (0, ROWS - 3, 3)
    r = await node.get("/api/audit?action=job.done", headers=ADMIN)
    done = (await r.json())["entries"]
    assert [e["target"] for e in done] == [again["id"], job["id"]]
    assert done[1]["detail"]["created"] == ROWS - 4 and done[1]["actor"] == ent["admin"]


def workbook(rows: list[list[Any]]) -> bytes:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_a_workbook_that_keeps_killing_the_helper_fails_its_job(sqlite_node, monkeypatch):
    """The helper process dying under a job pauses it (taken up again); dying under it every time (a
    workbook that runs it out of memory, say) fails it after HELPER_DEATHS tries, not in a loop."""
    from registry import offload
    from registry.job_runner import HELPER_DEATHS
    from registry.rows import write_cells

    node = sqlite_node
    real_run = offload.run
    deaths: list[str] = []

    async def dying_run(fn, *args):  # type: ignore[no-untyped-def]
        if fn is write_cells:
            deaths.append(args[0])
            raise offload.HelperStopped
        return await real_run(fn, *args)

    monkeypatch.setattr(offload, "run", dying_run)
    ent = await onboard(node, 1)
    rows: list[list[Any]] = [["suffix", "URL"], ["K-1", "https://e.com/1"]]
    r = await submit(node, ent["prefix"], workbook(rows), ent["headers"], ctype=XLSX_TYPE)
    assert r.status == 202, await r.text()
    job = await wait(node, (await r.json())["status_url"], ent["headers"])
    assert job["state"] == "failed" and len(deaths) == HELPER_DEATHS
    assert job["error"] == f"the node's helper process stopped {HELPER_DEATHS} times reading this file"


async def test_xlsx_ndjson_replace_and_delete(node):
    ent = await onboard(node, 1)
    prefix, headers = ent["prefix"], ent["headers"]
    rows: list[list[Any]] = [["suffix", "URL"]] + [[f"X-{n}", f"https://e.com/{n}"] for n in range(300)]
    rows[150] = ["X-149", "https://e.com/dup", "extra"]  # sheet row 151: a cell too many
    r = await submit(node, prefix, workbook(rows), headers, ctype=XLSX_TYPE)
    assert r.status == 202, await r.text()
    job = await wait(node, (await r.json())["status_url"], headers)
    assert (job["format"], job["total"], job["created"], job["rejected"]) == ("xlsx", 300, 299, 1)
    rejects = (await (await node.get(job["rejects_url"], headers=headers)).json())["rejects"]
    assert [(x["line"], x["message"]) for x in rejects] == [(151, "row 151 has 3 cells, the header 2")]
    # The workbook was read once in the helper process; nothing of it is left once the job is done.
    runner = node.app[STATE_KEY].jobs
    assert runner is not None
    for _ in range(100):  # removed just after the job is marked done
        if not os.listdir(runner.workdir):
            break
        await asyncio.sleep(0.05)
    assert not os.listdir(runner.workdir)

    ndjson = "".join(
        f'{{"suffix":"N-{n}","values":[{{"index":1,"type":"URL","data":"https://n/{n}"}}]}}\n' for n in range(40)
    )
    r = await submit(node, prefix, ndjson.encode(), headers, ctype="application/x-ndjson")
    job = await wait(node, (await r.json())["status_url"], headers)
    assert (job["format"], job["created"]) == ("ndjson", 40)

    changed = "suffix,URL\n" + "".join(f"X-{n},https://changed/{n}\n" for n in range(100))
    r = await submit(node, prefix, changed.encode(), headers, query="&kind=replace")
    job = await wait(node, (await r.json())["status_url"], headers)
    assert (job["kind"], job["replaced"], job["created"]) == ("replace", 100, 0)
    r = await node.get(f"/api/handles/{prefix}/X-7")
    assert (await r.json())["values"][0]["data"]["value"] == "https://changed/7"

    listed = "".join(f"N-{n}\n" for n in range(30)) + "\nno-such-one\n"
    r = await submit(node, prefix, listed.encode(), headers, ctype="text/plain", query="&kind=delete")
    assert r.status == 202, await r.text()
    job = await wait(node, (await r.json())["status_url"], headers)
    assert (job["kind"], job["deleted"], job["absent"], job["rejected"]) == ("delete", 30, 1, 0)
    assert (await node.get(f"/api/handles/{prefix}/N-3")).status == 404
    assert (await node.get(f"/api/handles/{prefix}/N-35")).status == 200

    r = await node.get(f"/api/jobs?prefix={prefix}", headers=headers)
    assert [j["kind"] for j in (await r.json())["jobs"]] == ["delete", "replace", "import", "import"]


async def test_who_may_submit_and_read_jobs(node):
    a, b = await onboard(node, 1), await onboard(node, 2)
    body = b"suffix,URL\nS-1,https://e.com/1\n"
    assert (await submit(node, a["prefix"], body, {})).status == 401
    r = await submit(node, a["prefix"], body, b["headers"])
    assert r.status == 403 and (await r.json())["responseCode"] == 400
    r = await node.post("/api/auditors", json={"name": "baiyun"}, headers=ADMIN)
    auditor = basic((await r.json())["identity"], (await r.json())["secret"])
    assert (await submit(node, a["prefix"], body, auditor)).status == 403

    r = await submit(node, a["prefix"], body, a["headers"])
    job = await wait(node, (await r.json())["status_url"], a["headers"])
    assert (await node.get(job["status_url"], headers=b["headers"])).status == 403
    assert (await node.get(job["rejects_url"], headers=b["headers"])).status == 403
    assert (await node.get(job["status_url"], headers=auditor)).status == 200  # state and counts
    assert (await node.get(job["rejects_url"], headers=auditor)).status == 403  # not the rows
    assert (await node.get(job["status_url"], headers=ADMIN)).status == 200
    assert (await node.get(job["status_url"])).status == 401
    assert (await node.get("/api/jobs/" + "0" * 32, headers=ADMIN)).status == 404
    assert (await node.get("/api/jobs/nope", headers=ADMIN)).status == 404
    r = await node.get("/api/jobs", headers=b["headers"])
    assert (await r.json())["jobs"] == []  # b submitted none
    assert (await node.get(f"/api/jobs?prefix={a['prefix']}", headers=b["headers"])).status == 403
    r = await node.get("/api/jobs", headers=auditor)
    assert [j["id"] for j in (await r.json())["jobs"]] == [job["id"]]

    # The node administrator imports into an enterprise's prefix: the enterprise administers the handles.
    r = await submit(node, a["prefix"], b"suffix,URL\nS-2,https://e.com/2\n", ADMIN)
    assert (await wait(node, (await r.json())["status_url"], ADMIN))["created"] == 1
    body2 = {"values": [{"index": 1, "type": "URL", "data": "https://e.com/mine"}]}
    r = await node.put(f"/api/handles/{a['prefix']}/S-2", json=body2, headers=a["headers"])
    assert r.status == 200, await r.text()

    r = await node.patch(f"/api/enterprises/{a['prefix']}", json={"status": "disabled"}, headers=ADMIN)
    assert r.status == 200
    assert (await submit(node, a["prefix"], body, a["headers"])).status == 403


async def test_rows_outside_the_prefix_are_rejected_not_written(node):
    a, b = await onboard(node, 1), await onboard(node, 2)
    text = f"handle,URL\n{a['prefix']}/in,https://e.com/in\n{b['prefix']}/stray,https://e.com/x\n88.118.8/stray,https://x\n"
    r = await submit(node, a["prefix"], text.encode(), ADMIN)
    job = await wait(node, (await r.json())["status_url"], ADMIN)
    assert (job["created"], job["rejected"]) == (1, 2)
    rejects = (await (await node.get(job["rejects_url"], headers=ADMIN)).json())["rejects"]
    assert [(x["line"], x["responseCode"]) for x in rejects] == [(3, 400), (4, 400)]
    assert (await node.get(f"/api/handles/{b['prefix']}/stray")).status == 404


async def test_limits_and_refusals(sqlite_node):
    node = sqlite_node
    ent = await onboard(node, 1)
    prefix, headers = ent["prefix"], ent["headers"]
    big = b"suffix,URL\n" + b"".join(b"S-%06d,https://e.com/%06d\n" % (n, n) for n in range(2000))  # > 50,000 bytes
    r = await submit(node, prefix, big, headers)
    assert r.status == 413 and "job_max_bytes" in (await r.json())["message"]
    r = await node.post(
        f"/api/jobs?prefix={prefix}",
        data=gzip.compress(big),
        headers={**headers, "Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    assert r.status == 413  # counted once decoded
    r = await submit(node, prefix, b"{}", headers, ctype="application/json")
    assert r.status == 415 and "text/csv" in (await r.json())["message"]
    r = await submit(node, prefix, b"suffix,URL\nA,B\n", {**headers, "Content-Encoding": "br"})
    assert r.status == 415 and r.headers["Accept-Encoding"] == "gzip, deflate"
    for query, body, words in (
        ("", b"suffix,URL,colour\nA,B,C\n", "column 'colour' is not known"),
        ("&template=nope@1", b"suffix,URL\nA,B\n", "no template nope@1"),
        ("&template=nope", b"suffix,URL\nA,B\n", "ID@VERSION"),
        ("&column=colour", b"suffix,URL\nA,B\n", "NAME=TYPE[@INDEX]"),
        ("&kind=bogus", b"suffix,URL\nA,B\n", "kind must be one of"),
        ("", b"", "the file is empty"),
        ("", b"id,URL\nA,B\n", "'suffix' (or 'handle')"),
    ):
        r = await submit(node, prefix, body, headers, query=query)
        assert r.status == 400, (query, await r.text())
        assert words in (await r.json())["message"], (query, await r.text())
    r = await submit(node, prefix, b"suffix\nA\n", headers, ctype="text/plain")
    assert r.status == 400 and "for bulk deletes" in (await r.json())["message"]
    r = await submit(node, "88.118.8.9999", b"suffix,URL\nA,B\n", ADMIN)
    assert r.status == 400 and "not allocated" in (await r.json())["message"]
    r = await node.post("/api/jobs", data=b"suffix,URL\nA,B\n", headers={**headers, **CSV})
    assert r.status == 400 and "prefix is required" in (await r.json())["message"]
    r = await submit(
        node, prefix, gzip.compress(b"suffix,URL\nG-1,https://e.com/g\n"), {**headers, "Content-Encoding": "gzip"}
    )
    assert r.status == 202 and (await wait(node, (await r.json())["status_url"], headers))["created"] == 1


@pytest.fixture
async def idle_node(tmp_path, monkeypatch) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    """A node whose workers run no jobs (job_workers 0): what is submitted stays queued."""
    client = await _client(tmp_path, monkeypatch, f"sqlite:///{tmp_path}/idnode.db", job_workers=0)
    async with client:
        yield client


async def test_the_same_file_while_its_job_waits_and_a_full_queue(idle_node):
    node = idle_node
    ent = await onboard(node, 1)
    prefix, headers = ent["prefix"], ent["headers"]
    body = b"suffix,URL\nQ-1,https://e.com/1\n"
    first = await (await submit(node, prefix, body, headers)).json()
    again = await submit(node, prefix, body, headers)
    assert again.status == 202
    second = await again.json()
    assert (second["id"], second["continued"], second["state"]) == (first["id"], True, "queued")
    other = await (await submit(node, prefix, body, headers, query="&kind=replace")).json()
    assert other["id"] != first["id"]  # another kind: another job
    for n in range(8):
        r = await submit(node, prefix, b"suffix,URL\nQ-%d,https://e.com/x\n" % n, headers)
        assert r.status == 202
    r = await submit(node, prefix, b"suffix,URL\nQ-full,https://e.com/x\n", headers)
    assert r.status == 503 and int(r.headers["Retry-After"]) > 0 and "queued or running" in (await r.json())["message"]

    # A worker of the store (another process in production) runs them.
    runner = node.app[STATE_KEY].jobs
    assert runner is not None
    runner.workers = 2
    runner.start()
    job = await wait(node, first["status_url"], headers)
    replaced = await wait(node, other["status_url"], headers)  # the same row: whichever ran first created it
    assert (job["state"], job["created"] + job["present"], replaced["created"] + replaced["replaced"]) == ("done", 1, 1)
