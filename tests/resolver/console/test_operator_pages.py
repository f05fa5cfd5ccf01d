"""The operator's day in a real headless Chromium: sign in as the node administrator, add a promoter,
onboard an enterprise (credit code checked beside its field; the new prefix and key shown once),
create a node template and publish its next version through the forms (every mistake beside its
input), the new enterprise registering an identifier with that template, the audit log showing
all of it (filtered by action and by actor, paged), the status page (readiness, store, cache tiers,
job queue, recent errors), sign out. Then over HTTP: forms without the token or from another site,
an enterprise on the operator's pages, the auditor (reads the log through the API, writes nothing).
Every page touched, at 390 px in Chinese and English, with screenshots."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from registry.audit import audit_record
from registry.stores.base import JobRecord
from resolver.http.keys import STATE_KEY
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc
from tests.resolver.console.conftest import Node, new_page, no_sideways_scroll, sign_in


@pytest.fixture
def console_overrides() -> dict[str, int]:
    return {"job_workers": 0}  # the jobs these tests queue stay as they are put in the store


async def _submit(page: Page, form: str, button: str = "button[type=submit]") -> None:
    async with page.expect_navigation():
        await page.click(f"{form} {button}")


async def _audit_actions(page: Page) -> list[str]:
    return await page.locator("#audit tbody tr td:nth-child(3)").all_inner_texts()


async def test_the_operators_day(node: Node, browser: Browser, shots: Path) -> None:
    context, page = await new_page(browser)
    await sign_in(page, node, NODE_ADMIN, ADMIN_SECRET)
    assert page.url.endswith("/console/enterprises")

    # A promoter, then an enterprise onboarded for it: the credit code checked beside its field.
    await page.goto(node.url("/console/promoters"))
    await page.fill("#f-name", "黄埔标识推广中心")
    await page.fill("#f-uscc", make_uscc(5, "92"))
    await _submit(page, "#promoter-form")
    assert await page.inner_text("#done") == "推广单位已添加。"
    await page.goto(node.url("/console/enterprises"))
    await page.fill("#f-name", "黄埔化妆品有限公司")
    await page.fill("#f-uscc", make_uscc(21)[:-1] + ("1" if make_uscc(21).endswith("0") else "0"))
    await page.select_option("#f-promoter", label="2 · 黄埔标识推广中心")
    await _submit(page, "#onboard-form")
    assert "统一社会信用代码无效" in await page.inner_text("#e-uscc")
    assert await page.get_attribute("#f-uscc", "aria-invalid") == "true"
    await page.fill("#f-uscc", make_uscc(21))
    await _submit(page, "#onboard-form")
    prefix, identity, secret = [await page.inner_text(s) for s in ("#prefix", "#identity", "#secret")]
    assert prefix == "88.118.8.1003" and identity == f"300:0.NA/{prefix}" and len(secret) >= 20
    async with page.expect_navigation():
        await page.click("#shown-once a.button")
    assert secret not in await page.content()  # shown once

    # A node template through its form: each mistake beside its input, nothing written until right.
    await page.goto(node.url("/console/templates"))
    assert "furniture" in await page.inner_text("#enterprise-templates")  # A's own, to read
    async with page.expect_navigation():
        await page.click("#new-template")
    await page.fill("#f-id", "cosmetics")
    await page.fill("#f-description", "化妆品 Cosmetics")
    await page.fill("#f0-index", "12")
    await page.fill("#f0-name", "licence")
    await page.fill("#f0-pattern", "(a+)+")
    await page.check("#f0-required")
    await page.fill("#f1-index", "2002")
    await page.fill("#f1-name", "shade")
    await page.fill("#f1-type", "SHADE")
    await page.fill("#f1-enum", "ivory, 象牙白，sand")
    await page.fill("#f1-min", "9")
    await page.fill("#f1-max", "3")
    await _submit(page, "#template-form", "#save")
    assert await page.inner_text("#e-f0-index") == "请填写 2000 及以上的整数。"
    assert await page.inner_text("#e-f0-type") == "此项必填。"
    assert "指数级" in await page.inner_text("#e-f0-pattern")
    assert await page.inner_text("#e-f1-max") == "不能小于最短长度。"
    assert await page.get_attribute("#f0-index", "aria-invalid") == "true"
    assert await page.input_value("#f1-enum") == "ivory, 象牙白，sand"  # what was typed stays
    assert await page.is_checked("#f0-required")
    await page.screenshot(path=str(shots / "console-template-errors.png"), full_page=True)
    r = await node.client.get("/api/templates/cosmetics")
    assert r.status == 404
    # One more row without sending anything; then the corrections.
    await _submit(page, "#template-form", "#more")
    assert await page.locator("fieldset.tfield").count() == 4 and await page.input_value("#f-id") == "cosmetics"
    await page.fill("#f0-index", "2001")
    await page.fill("#f0-type", "LICENCE")
    await page.fill("#f0-pattern", "^[A-Z]{2}[0-9]{6}$")
    await page.fill("#f1-min", "")
    await page.fill("#f1-max", "")
    await _submit(page, "#template-form", "#save")
    assert page.url.endswith("/console/templates/cosmetics?done=created")
    assert await page.inner_text("#version") == "v1"
    rows = await page.locator("#fields tbody tr").all_inner_texts()
    assert len(rows) == 2 and "licence" in rows[0] and "^[A-Z]{2}[0-9]{6}$" in rows[0]
    assert "ivory, 象牙白, sand" in rows[1]
    r = await node.client.get("/api/templates/cosmetics")
    body = await r.json()
    assert body["version"] == 1 and body["fields"][0]["required"] is True
    assert body["fields"][1]["enum"] == ["ivory", "象牙白", "sand"]

    # Version 2: a field disabled, one added; the earlier fields' indexes cannot be dropped.
    async with page.expect_navigation():
        await page.click("#publish")
    assert await page.get_attribute("#f0-index", "readonly") is not None
    await page.check("#f1-disabled")
    await page.fill("#f2-index", "2003")
    await page.fill("#f2-name", "batch")
    await page.fill("#f2-type", "BATCH_NO")
    await page.fill("#f2-max", "12")
    await _submit(page, "#template-form", "#save")
    assert await page.inner_text("#done") == "已发布第 2 版。"
    assert await page.inner_text("#versions") == "v2 · v1"
    assert "已停用" in (await page.locator("#fields tbody tr").all_inner_texts())[1]
    await page.screenshot(path=str(shots / "console-template.png"), full_page=True)

    # The new enterprise registers an identifier with the node's template, through its own form.
    ent_context, ent = await new_page(browser)
    await sign_in(ent, node, prefix, secret)
    await ent.goto(node.url("/console/identifiers/new?template=cosmetics"))
    await ent.fill("#f-suffix", "LIP-0001")
    await ent.fill("#f-field_2001", "GD123456")
    await ent.fill("#f-field_2003", "2026-12")
    await _submit(ent, "#identifier-form")
    assert await ent.inner_text("#template") == "cosmetics@2"
    await ent_context.close()

    # The audit log: what was just done, newest first, in Beijing time; by action and by actor.
    await page.goto(node.url("/console/audit"))
    actions = await _audit_actions(page)
    assert actions[:4] == ["template.version", "template.create", "enterprise.add", "promoter.add"]
    first = page.locator("#audit tbody tr").first
    assert (await first.locator("td").nth(1).inner_text()) == NODE_ADMIN
    assert await first.locator("td").nth(3).inner_text() == "cosmetics@2"
    assert "2026" in await first.locator("td.when").inner_text() or ":" in await first.locator("td.when").inner_text()
    await page.fill("#f-action", "enterprise.add")
    await _submit(page, "#audit-filter")
    assert await _audit_actions(page) == ["enterprise.add"] * 3  # the fixture's two and this one
    assert "黄埔化妆品有限公司" in await page.locator("#audit tbody tr").first.inner_text()
    await page.goto(node.url("/console/audit?action=Not+An+Action"))
    assert await page.is_visible("#e-action")
    await page.goto(node.url(f"/console/audit?actor={a_admin(node)}"))
    assert set(await _audit_actions(page)) == {"template.create"}  # enterprise A's own template
    await page.screenshot(path=str(shots / "console-audit.png"), full_page=True)

    # The status page: readiness, store, cache tiers, the job queue and recent errors.
    await page.goto(node.url("/console/status"))
    assert await page.inner_text("#ready") == "ok" and await page.inner_text("#store") == "ok"
    for state in ("queued", "running", "failed"):
        assert await page.inner_text(f"#jobs-{state}") == "0"
    assert await page.is_visible("#cache-title")

    await _submit(page, "#signout")
    assert page.url.endswith("/console/signin?done=signed-out")
    await page.goto(node.url("/console/audit"))
    assert page.url.endswith("/console/signin")
    await context.close()


def a_admin(node: Node) -> str:
    return str(node.a["admin"])


async def test_the_audit_log_pages_back(node: Node, browser: Browser) -> None:
    registry = node.client.app[STATE_KEY].registry
    assert registry is not None
    for n in range(60):
        await registry.audit.append(NODE_ADMIN, "store.backup", f"/srv/backups/{n:02d}.db", source="idnode CLI, test")
    context, page = await new_page(browser, "en-GB")
    await sign_in(page, node, NODE_ADMIN, ADMIN_SECRET)
    await page.goto(node.url("/console/audit?action=store.backup"))
    targets = await page.locator("#audit tbody tr td:nth-child(4)").all_inner_texts()
    assert targets == [f"/srv/backups/{n:02d}.db" for n in range(59, 9, -1)]  # 50 a page, newest first
    assert not await page.is_visible("#newest")
    async with page.expect_navigation():
        await page.click("#older")
    targets = await page.locator("#audit tbody tr td:nth-child(4)").all_inner_texts()
    assert targets == [f"/srv/backups/{n:02d}.db" for n in range(9, -1, -1)]
    assert not await page.is_visible("#older") and "action=store.backup" in page.url
    async with page.expect_navigation():
        await page.click("#newest")
    assert await page.locator("#audit tbody tr").count() == 50
    await page.goto(node.url("/console/audit?since=2026-13-01"))
    assert await page.inner_text("#e-since") == "A date written YYYY-MM-DD."
    await context.close()


async def test_the_status_page_shows_the_queue_and_recent_errors(node: Node, browser: Browser, shots: Path) -> None:
    registry = node.client.app[STATE_KEY].registry
    assert registry is not None
    store, now = registry.store, node.clock.now
    for n in range(3):
        job = JobRecord(
            f"{n + 1:032x}", 0, "import", node.a["prefix"], node.a["admin"], "queued", "csv", "{}", "a" * 64, 10, 1,
            created_at=now, updated_at=now,
        )  # fmt: skip
        await store.add_job(job, audit=audit_record(registry, NODE_ADMIN, "job.submit", job.id))
    claimed = await store.claim_job("elsewhere", now=now, lease_until=now + 600)
    assert claimed is not None
    failed = dataclasses.replace(claimed, state="failed", error="row 7: the store went away", finished_at=now)
    assert await store.finish_job(failed, audit=audit_record(registry, NODE_ADMIN, "job.failed", claimed.id))
    await store.claim_job("elsewhere", now=now, lease_until=now + 600)
    logging.getLogger("idnode.cache").warning("redis: connection refused (status page test)")

    context, page = await new_page(browser)
    await sign_in(page, node, NODE_ADMIN, ADMIN_SECRET)
    await page.goto(node.url("/console/status"))
    counts = {s: await page.inner_text(f"#jobs-{s}") for s in ("queued", "running", "failed")}
    assert counts == {"queued": "1", "running": "1", "failed": "1"}
    assert "row 7: the store went away" in await page.inner_text("#failed-jobs")
    assert "redis: connection refused (status page test)" in await page.inner_text("#problems")
    await page.screenshot(path=str(shots / "console-status-jobs.png"), full_page=True)
    await context.close()


async def test_operator_forms_refuse_missing_tokens_enterprises_and_the_auditor(node: Node, browser: Browser) -> None:
    template = {"id": "garments", "rows": "1", "f0-index": "2001", "f0-name": "size", "f0-type": "SIZE"}
    context, page = await new_page(browser)
    await sign_in(page, node, NODE_ADMIN, ADMIN_SECRET)
    token = await page.get_attribute("#signout input[name=csrf]", "value")
    for extra, headers in (({}, {}), ({"csrf": "wrong"}, {}), ({"csrf": token}, {"Origin": "https://evil.example"})):
        r = await page.request.post(node.url("/console/templates"), form={**template, **extra}, headers=headers)
        assert r.status == 403 and r.headers["content-type"].startswith("text/html")
        promoter = {"name": "x", "uscc": make_uscc(8, "92"), **extra}
        r = await page.request.post(node.url("/console/promoters"), form=promoter, headers=headers)
        assert r.status == 403
    assert (await node.client.get("/api/templates/garments")).status == 404
    r = await node.client.get("/api/promoters", headers=basic(NODE_ADMIN, ADMIN_SECRET))
    assert len((await r.json())["promoters"]) == 1
    r = await page.request.post(node.url("/console/templates"), form={**template, "csrf": token}, max_redirects=0)
    assert r.status == 303 and r.headers["location"] == "/console/templates/garments?done=created"
    r = await page.request.post(node.url("/console/templates"), form={**template, "csrf": token})
    assert r.status == 409  # exists already: the form again, nothing changed
    await context.close()

    # An enterprise's session: 403 on every operator page and form.
    context, page = await new_page(browser)
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    token = await page.get_attribute("#signout input[name=csrf]", "value")
    for path in ("/console/audit", "/console/templates", "/console/templates/garments", "/console/new-template",
                 "/console/templates/garments/version", "/console/status", "/console/auditors"):  # fmt: skip
        response = await page.goto(node.url(path))
        assert response is not None and response.status == 403, path
    for path in ("/console/templates", "/console/templates/garments/version"):
        r = await page.request.post(node.url(path), form={**template, "id": "mine", "csrf": token})
        assert r.status == 403, path
    assert (await node.client.get("/api/templates/mine")).status == 404
    r = await node.client.get("/api/templates/garments")
    assert (await r.json())["version"] == 1
    await context.close()

    # The auditor reads the audit log (the API; the console is not for it) and writes nothing.
    r = await node.client.post("/api/auditors", json={"name": "baiyun"}, headers=basic(NODE_ADMIN, ADMIN_SECRET))
    auditor = basic((body := await r.json())["identity"], body["secret"])
    r = await node.client.get(f"/api/audit?actor={NODE_ADMIN}&action=template.create", headers=auditor)
    assert r.status == 200 and [e["target"] for e in (await r.json())["entries"]] == ["garments@1"]
    r = await node.client.post("/api/templates", json={"id": "x", "fields": [template_field()]}, headers=auditor)
    assert r.status == 403
    r = await node.client.post("/api/promoters", json={"name": "x", "uscc": make_uscc(9, "92")}, headers=auditor)
    assert r.status == 403
    context, page = await new_page(browser)
    await page.goto(node.url("/console/signin"))
    await page.fill("#f-identity", body["identity"])
    await page.fill("#f-secret", body["secret"])
    async with page.expect_navigation() as nav:
        await page.click("#signin-form button[type=submit]")
    assert (await nav.value).status == 403  # type: ignore[union-attr]
    response = await page.goto(node.url("/console/audit"))
    assert page.url.endswith("/console/signin")
    await context.close()


def template_field() -> dict[str, object]:
    return {"index": 2001, "name": "size", "type": "SIZE"}


async def test_the_operators_pages_fit_a_phone_in_both_languages(node: Node, browser: Browser, shots: Path) -> None:
    r = await node.client.post(
        "/api/templates",
        json={"id": "garments", "description": "服装 Garments", "fields": [template_field()]},
        headers=basic(NODE_ADMIN, ADMIN_SECRET),
    )
    assert r.status == 201
    pages = [
        "/console/audit",
        "/console/audit?action=enterprise.add",
        "/console/templates",
        "/console/templates/garments",
        f"/console/templates/furniture?prefix={node.a['prefix']}",
        "/console/new-template",
        "/console/templates/garments/version",
        "/console/status",
    ]
    for lang in ("zh", "en"):
        context, page = await new_page(browser, "zh-CN", width=390)
        await page.goto(node.url(f"/console/signin?lang={lang}"))
        await sign_in(page, node, NODE_ADMIN, ADMIN_SECRET)
        for path in pages:
            response = await page.goto(node.url(path))
            assert response is not None and response.status == 200, path
            assert await page.get_attribute("html", "lang") == ("zh-CN" if lang == "zh" else "en"), path
            assert await no_sideways_scroll(page), (lang, path)
            name = path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-")[:60]
            await page.screenshot(path=str(shots / f"console-390-{lang}-{name}.png"), full_page=True)
        # A form with its problems shown, on the phone.
        await page.goto(node.url("/console/new-template"))
        await page.fill("#f-id", "bad id")
        await page.fill("#f0-name", "size")
        await _submit(page, "#template-form", "#save")
        assert await page.is_visible("#e-f-id") or await page.is_visible("#e-id")
        assert await no_sideways_scroll(page)
        await page.screenshot(path=str(shots / f"console-390-{lang}-new-template-errors.png"), full_page=True)
        await context.close()
    # The enterprise's overview keeps its prefix whole, and the chart's dates are readable on a phone.
    context, page = await new_page(browser, "en-GB", width=390)
    await page.goto(node.url("/console/signin?lang=en"))
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    box = await page.eval_on_selector("#prefix", "e => [e.getClientRects().length, e.scrollHeight, e.clientHeight]")
    line = await page.eval_on_selector("#prefix", "e => parseFloat(getComputedStyle(e).lineHeight)")
    assert box[1] <= line * 1.2, box  # one line: 88.118.8.1001 is not broken
    label = await page.eval_on_selector("#chart text:not(.value)", "e => e.getBoundingClientRect().height")
    assert label >= 9.5, label
    await page.screenshot(path=str(shots / "console-390-en-dashboard-prefix.png"), full_page=True)
    await context.close()
