"""The enterprise administrator's import, search, label and dashboard pages over plain HTTP: what
they do, and what they refuse (a file that is none, one too large, another enterprise's job, a form
without its token) without changing anything."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
from typing import Any

import aiohttp
import pytest
from openpyxl import Workbook
from pypdf import PdfReader

from resolver.http.keys import STATE_KEY
from tests.resolver.conftest import basic
from tests.resolver.console.conftest import Node
from tests.resolver.console.test_units import _signed_in_session

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


async def _upload(
    http: aiohttp.ClientSession,
    node: Node,
    body: bytes,
    *,
    csrf: str | None,
    filename: str = "items.csv",
    template: str = "",
    content_type: str = "text/csv",
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    if csrf is not None:
        form.add_field("csrf", csrf)
    form.add_field("template", template)
    form.add_field("file", body, filename=filename, content_type=content_type)
    async with http.post(node.url("/console/imports"), data=form, allow_redirects=False) as r:
        await r.read()
        return r


async def _finished(http: aiohttp.ClientSession, node: Node, job_path: str) -> str:
    """The job page once the job has ended. Until then its script asks for the counts (JSON) and, for
    browsers without scripts, a <noscript> refresh reloads it; never a Refresh header (that would
    reload it under the script too)."""
    for _ in range(600):
        async with http.get(node.url(job_path)) as r:
            assert r.status == 200 and "Refresh" not in r.headers
            page = await r.text()
        state = re.search(r'id="job" data-state="(\w+)"', page)
        assert state is not None
        if state.group(1) in ("done", "failed"):
            assert "http-equiv" not in page and "data-poll" not in page and "<script" not in page
            return page
        assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
        assert f'data-poll="{job_path}/progress"' in page and '<script src="/console/static/progress.js?v=' in page
        async with http.get(node.url(job_path + "/progress"), headers={"Accept-Language": "en"}) as r:
            assert r.status == 200 and r.content_type == "application/json"
            counts = await r.json()
            assert counts["state"] in ("queued", "running", "done") and counts["state_label"] in (
                "Queued",
                "Running",
                "Done",
            )
            assert counts["processed"] == counts["created"] + counts["present"] + counts["rejected"]
        await asyncio.sleep(0.1)
    raise AssertionError("the job did not end")


def _count(page: str, what: str) -> int:
    found = re.search(rf'<strong id="{what}">([^<]*)</strong>', page)
    assert found is not None, what
    return int(found.group(1).replace(",", ""))


async def _handle(node: Node, handle: str) -> dict[int, str] | None:
    r = await node.client.get(f"/api/handles/{handle}")
    if r.status == 404:
        return None
    return {v["index"]: v["data"]["value"] for v in (await r.json())["values"] if v["data"]["format"] == "string"}


async def test_an_import_runs_as_a_job_and_a_rerun_registers_nothing_twice(node: Node) -> None:
    prefix = node.a["prefix"]
    http, csrf = await _signed_in_session(node, prefix, node.a["secret"])
    try:
        rows = [["suffix", "URL"]] + [[f"IMP-{n}", f"https://trace.example.com/imp/{n}"] for n in range(1, 6)]
        rows.insert(3, ["", "https://trace.example.com/no-suffix"])  # line 4 of the file
        body = _csv(rows)
        r = await _upload(http, node, body, csrf=csrf)
        assert r.status == 303
        job_path = r.headers["Location"]
        assert re.fullmatch(r"/console/jobs/[0-9a-f]{32}", job_path)
        page = await _finished(http, node, job_path)
        counts = {k: _count(page, k) for k in ("total", "processed", "created", "present", "rejected")}
        assert counts == {"total": 6, "processed": 6, "created": 5, "present": 0, "rejected": 1}
        assert (await _handle(node, f"{prefix}/IMP-3") or {})[1] == "https://trace.example.com/imp/3"

        async with http.get(node.url(job_path + "/rejects.csv")) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            assert r.headers["Content-Disposition"].startswith("attachment;")
            rejected = list(csv.reader(io.StringIO((await r.read()).decode("utf-8-sig"))))
        assert rejected[0] == ["line", "handle", "responseCode", "reason", "localizedReason"]
        assert len(rejected) == 2 and rejected[1][0] == "4" and rejected[1][3]  # the file's line, and why
        # The reason in the page's language (Chinese by default), the registry's own words kept after it.
        assert rejected[1][4] == "标识格式无效：" + rejected[1][3] and "suffix" in rejected[1][3]
        assert html.escape("标识格式无效：" + rejected[1][3], quote=False) in page
        async with http.get(node.url(job_path), params={"lang": "en"}) as r:
            english = await r.text()
        assert (
            f'<td class="value">{html.escape(rejected[1][3], quote=False)}</td>' in english
            and "标识格式无效" not in english
        )

        # The same file again: a new job that finds every good row registered and registers none twice.
        r = await _upload(http, node, body, csrf=csrf)
        assert r.status == 303
        again = await _finished(http, node, r.headers["Location"])
        assert (_count(again, "created"), _count(again, "present"), _count(again, "rejected")) == (0, 5, 1)
        assert 'id="present-note"' in again
        async with http.get(node.url("/console/imports")) as r:
            listing = await r.text()
        assert listing.count("/console/jobs/") == 2
    finally:
        await http.close()


@pytest.mark.parametrize("console_overrides", [{"job_workers": 0}])
async def test_a_rerun_of_an_unfinished_import_continues_its_job(node: Node) -> None:
    """While a job waits (this node runs none), sending its file again continues it: no second job."""
    http, csrf = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        body = _csv([["suffix", "URL"], ["Q-1", "https://trace.example.com/q/1"]])
        first = await _upload(http, node, body, csrf=csrf)
        second = await _upload(http, node, body, csrf=csrf)
        assert first.status == second.status == 303
        assert second.headers["Location"] == first.headers["Location"] + "?continued=1"
        async with http.get(node.url(second.headers["Location"])) as r:
            page = await r.text()
            assert 'id="continued"' in page and 'data-state="queued"' in page and "data-poll=" in page
    finally:
        await http.close()


async def test_an_xlsx_import_with_the_templates_columns(node: Node) -> None:
    prefix = node.a["prefix"]
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["suffix", "URL", "model", "material"])
    sheet.append(["DESK-1", "https://trace.example.com/desk/1", "DK-001", "oak"])
    sheet.append(["DESK-2", "https://trace.example.com/desk/2", "desk two", "oak"])  # model breaks the pattern
    out = io.BytesIO()
    book.save(out)
    http, csrf = await _signed_in_session(node, prefix, node.a["secret"])
    try:
        r = await _upload(
            http, node, out.getvalue(), csrf=csrf, filename="desks.xlsx", template="furniture@1", content_type=XLSX_TYPE
        )
        assert r.status == 303, r.status
        page = await _finished(http, node, r.headers["Location"])
        assert (_count(page, "created"), _count(page, "rejected")) == (1, 1)
        assert "XLSX" in page and "furniture@1" in page
        assert re.search(r"<tr><td>3</td>", page)  # the rejected row, by its row in the sheet
    finally:
        await http.close()
    values = await _handle(node, f"{prefix}/DESK-1")
    assert values is not None and values[2001] == "DK-001" and values[2002] == "oak" and values[1001] == "furniture@1"


async def test_files_that_cannot_be_imported_get_a_page_saying_why(node: Node) -> None:
    http, csrf = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        cases = [
            (_csv([["suffix", "colour"], ["X-1", "red"]]), "x.csv", "colour"),  # a column the import does not know
            (b"\x89PNG\r\n\x1a\n", "photo.png", "不是 CSV 或 XLSX 文件"),
            (b"not a workbook", "sheet.xlsx", "不是 CSV 或 XLSX 文件"),
            (b"PK\x03\x04 broken zip", "sheet.xlsx", "未导入"),
            (b"", "empty.csv", "请选择要导入的文件"),
        ]
        for body, name, shown in cases:
            form = aiohttp.FormData()
            form.add_field("csrf", csrf)
            form.add_field("file", body, filename=name)
            async with http.post(node.url("/console/imports"), data=form) as r:
                assert (r.status, r.content_type) == (400, "text/html"), name
                assert shown in await r.text(), name
        async with http.get(node.url("/console/imports")) as page:
            assert "/console/jobs/" not in await page.text()  # no job
        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("template", "nosuch@1")
        form.add_field("file", b"suffix,URL\nA,https://a.example\n", filename="a.csv")
        async with http.post(node.url("/console/imports"), data=form) as r:
            assert r.status == 400 and "请选择列出的模板之一" in await r.text()
        async with http.post(node.url("/console/imports"), data={"csrf": csrf}) as r:
            assert r.status == 415 and r.content_type == "text/html"  # not the upload form
        for content_type, body in (
            ("multipart/form-data", b"x"),  # no boundary
            ("multipart/form-data; boundary=zz", b"--zz\r\nbroken"),
        ):
            async with http.post(node.url("/console/imports"), data=body, headers={"Content-Type": content_type}) as r:
                assert r.status == 400 and r.content_type == "text/html", body
    finally:
        await http.close()


@pytest.mark.parametrize("console_overrides", [{"job_max_bytes": 4096}])
async def test_a_file_over_the_limit_is_refused_with_the_limit_named(node: Node) -> None:
    http, csrf = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        rows = [["suffix", "URL"]] + [[f"BIG-{n}", f"https://trace.example.com/big/{n}"] for n in range(400)]
        r = await _upload(http, node, _csv(rows), csrf=csrf)
        assert r.status == 413
        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("file", _csv(rows), filename="big.csv")
        async with http.post(node.url("/console/imports"), data=form, params={"lang": "en"}) as r:
            text = await r.text()
        assert r.status == 413 and "The file is larger than 4 KiB" in text
        assert await _handle(node, f"{node.a['prefix']}/BIG-1") is None
    finally:
        await http.close()


async def test_jobs_of_another_enterprise_and_forms_without_their_token(node: Node) -> None:
    a_http, a_csrf = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    b_http, _ = await _signed_in_session(node, node.b["prefix"], node.b["secret"])
    try:
        body = _csv([["suffix", "URL"], ["A-1", "https://trace.example.com/a/1"]])
        r = await _upload(a_http, node, body, csrf=a_csrf)
        job_path = r.headers["Location"]
        await _finished(a_http, node, job_path)
        others = (job_path + "/rejects.csv", job_path + "/progress", "/console/jobs/" + "0" * 32 + "/progress")
        for path in (job_path, *others, "/console/jobs/" + "0" * 32, "/console/jobs/nonsense"):
            async with b_http.get(node.url(path)) as r:
                assert r.status == 404 and r.content_type == "text/html", path
        async with b_http.get(node.url("/console/imports")) as r:
            assert job_path not in await r.text()

        # No token, a wrong one: 403, no job, no labels.
        for token in (None, "wrong"):
            r = await _upload(a_http, node, _csv([["suffix", "URL"], ["A-2", "https://a.example/2"]]), csrf=token)
            assert r.status == 403
            async with a_http.post(node.url("/console/labels"), data={"layout": "a4-3x8", "count": "3"}) as r:
                assert r.status == 403 and r.content_type == "text/html"
        assert await _handle(node, f"{node.a['prefix']}/A-2") is None
        async with a_http.get(node.url("/console/imports")) as r:
            assert (await r.text()).count("/console/jobs/") == 1
    finally:
        await a_http.close()
        await b_http.close()


async def _register(node: Node, owner: dict[str, Any], suffix: str, url: str) -> None:
    values = [{"index": 1, "type": "URL", "data": {"format": "string", "value": url}}]
    r = await node.client.put(
        f"/api/handles/{owner['prefix']}/{suffix}",
        json={"values": values},
        headers=basic(owner["admin"], owner["secret"]),
    )
    assert r.status == 201, await r.text()


async def _all_indexed(http: aiohttp.ClientSession, node: Node, count: int) -> None:
    """Wait until the value index holds ``count`` URLs under the prefix (pages of 50)."""
    last = (count - 1) // 50
    for _ in range(300):
        params = {"type": "URL", "value": "http*", "page": str(last)}
        async with http.get(node.url("/console/search"), params=params) as r:
            if len(_found(await r.text())) == count - 50 * last:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the value index did not catch up")


def _found(page: str) -> list[str]:
    return re.findall(r'name="suffix" value="([^"]+)"', page)


async def test_search_by_suffix_and_by_value_stays_under_the_own_prefix(node: Node) -> None:
    for n in range(1, 61):
        await _register(node, node.a, f"LAMP-{n:03d}", f"https://shop.example.com/lamp/{n}")
    await _register(node, node.a, "SOFA-001", "https://other.example.net/sofa")
    await _register(node, node.b, "LAMP-001", "https://shop.example.com/b-lamp")  # enterprise B's
    http, _ = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        async with http.get(node.url("/console/search"), params={"q": "LAMP-"}) as r:
            page = await r.text()
        assert r.status == 200 and len(_found(page)) == 50 and 'id="next"' in page
        async with http.get(node.url("/console/search"), params={"q": "LAMP-", "after": "LAMP-050"}) as r:
            assert _found(await r.text()) == [f"LAMP-{n:03d}" for n in range(51, 61)]

        await _all_indexed(http, node, 61)  # the value index follows writes about a second later
        async with http.get(
            node.url("/console/search"), params={"type": "URL", "value": "*shop.example.com/lamp/1*"}
        ) as r:
            found = _found(await r.text())
        assert found == ["LAMP-001", *[f"LAMP-{n:03d}" for n in range(10, 20)]]
        async with http.get(
            node.url("/console/search"), params={"type": "url", "value": "https://shop.example.com/lamp/*"}
        ) as r:
            page = await r.text()
        assert len(_found(page)) == 50 and "page=1" in page
        async with http.get(
            node.url("/console/search"), params={"type": "URL", "value": "*shop.example.com/lamp/*", "page": "1"}
        ) as r:
            page = await r.text()
        assert len(_found(page)) == 10 and 'id="prev"' in page and 'id="next"' not in page
        async with http.get(node.url("/console/search"), params={"type": "URL", "value": "*b-lamp*"}) as r:
            assert _found(await r.text()) == []  # B's identifier: not A's to find
        for params in (
            {"type": "HS_SECKEY", "value": "x"},
            {"type": "URL", "value": ""},
            {"type": "URL", "value": "*a*"},
        ):
            async with http.get(node.url("/console/search"), params=params) as r:
                assert r.status == 400 and 'id="search-error"' in await r.text(), params
    finally:
        await http.close()


async def test_labels_for_a_selection_or_a_run_come_as_a_pdf(node: Node) -> None:
    for n in range(1, 31):
        await _register(node, node.a, f"CUP-{n:02d}", f"https://trace.example.com/cup/{n}")
    http, csrf = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        form = [("csrf", csrf), ("layout", "a4-3x8")] + [("suffix", f"CUP-{n:02d}") for n in range(1, 26)]
        async with http.post(node.url("/console/labels"), data=form) as r:
            assert r.status == 200 and r.content_type == "application/pdf"
            assert r.headers["Content-Disposition"].startswith("attachment;")
            assert len(PdfReader(io.BytesIO(await r.read())).pages) == 2  # 25 labels, 24 a page
        run = {"csrf": csrf, "layout": "a4-4x10", "from": "CUP-05", "count": "26"}
        async with http.post(node.url("/console/labels"), data=run) as r:
            assert r.status == 200 and len(PdfReader(io.BytesIO(await r.read())).pages) == 1
        too_many = [("csrf", csrf), ("layout", "a4-3x8")] + [("suffix", f"CUP-{n}") for n in range(1001)]
        async with http.post(node.url("/console/labels"), data=too_many, params={"lang": "en"}) as r:
            assert r.status in (400, 413) and "At most 1000 labels a sheet" in await r.text()
        for bad in ({"count": "0"}, {"count": "1001"}, {"count": "x"}, {"layout": "a5"}, {"from": "NOSUCH"}):
            async with http.post(node.url("/console/labels"), data={**run, **bad}) as r:
                assert r.status in (400, 404) and r.content_type == "text/html", bad
    finally:
        await http.close()
    b_http, b_csrf = await _signed_in_session(node, node.b["prefix"], node.b["secret"])
    try:  # the same suffixes name nothing under B's prefix
        async with b_http.post(
            node.url("/console/labels"), data={"csrf": b_csrf, "layout": "a4-3x8", "suffix": "CUP-01"}
        ) as r:
            assert r.status == 404 and r.content_type == "text/html"
    finally:
        await b_http.close()


async def test_the_dashboard_charts_resolutions_per_day(node: Node) -> None:
    await _register(node, node.a, "LOOKED-UP", "https://trace.example.com/looked-up")
    for _ in range(3):
        assert (await node.client.get(f"/api/handles/{node.a['prefix']}/LOOKED-UP")).status == 200
    flusher = node.client.app[STATE_KEY].resolution_flusher
    assert flusher is not None
    await flusher.tick()
    http, _ = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        async with http.get(node.url("/console/dashboard")) as r:
            page = await r.text()
    finally:
        await http.close()
    chart = page[page.index('id="resolutions-chart"') :]
    bars = re.findall(r'data-value="(\d+)"', chart[: chart.index("</svg>")])
    assert len(bars) == 30 and bars[-1] == "3" and set(bars[:-1]) == {"0"}
    assert 'id="chart"' in page  # beside the registrations


async def test_labels_print_a_template_field_under_the_code(node: Node) -> None:
    """``field`` on the console's label forms prints that template field's value, as GET /api/labels?field=."""
    for n, model in ((1, "DK-101"), (2, "DK-102")):
        values = [
            {"index": 1, "type": "URL", "data": {"format": "string", "value": f"https://trace.example.com/desk/{n}"}},
            {"index": 1001, "type": "TEMPLATE", "data": {"format": "string", "value": "furniture@1"}},
            {"index": 2001, "type": "MODEL", "data": {"format": "string", "value": model}},
        ]
        r = await node.client.put(
            f"/api/handles/{node.a['prefix']}/DESK-{n}",
            json={"values": values},
            headers=basic(node.a["admin"], node.a["secret"]),
        )
        assert r.status == 201, await r.text()
    http, csrf = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        async with http.get(node.url("/console/labels")) as r:
            page = await r.text()
        assert all(f'<option value="{f}">{f}</option>' in page for f in ("model", "material", "batch"))
        chosen = [("csrf", csrf), ("layout", "a4-3x8"), ("field", "model"), ("suffix", "DESK-2")]
        run = {"csrf": csrf, "layout": "a4-3x8", "from": "DESK-1", "count": "2", "field": "model"}
        for form, models in ((chosen, ["DK-102"]), (run, ["DK-101", "DK-102"])):
            async with http.post(node.url("/console/labels"), data=form) as r:
                assert r.status == 200 and r.content_type == "application/pdf"
                text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(await r.read())).pages)
            assert all(m in text for m in models) and ("DK-101" in text) == ("DK-101" in models), text
        async with http.post(node.url("/console/labels"), data={**run, "field": "colour"}, params={"lang": "en"}) as r:
            assert r.status == 400 and "Choose one of the fields listed." in await r.text()
    finally:
        await http.close()
