"""The web console in a real headless Chromium: an enterprise's day (sign in, register through its
template's form, find, edit, delete, a new key, sign out), the operator's (promoters, onboarding with
the key shown once, disabling, moving, auditors, status), and what must never work: guessing keys
(429), forms from elsewhere (CSRF, 403, nothing changed), a signed-out cookie, an idle session,
another enterprise's identifiers, an auditor. The pages fit a 390 px phone in both languages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Page

from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc
from tests.resolver.console.conftest import Node, new_page, no_sideways_scroll, sign_in


async def _api_get(node: Node, handle: str, headers: dict[str, str] | None = None) -> int:
    r = await node.client.get(f"/api/handles/{quote(handle, safe='/')}", headers=headers or {})
    return r.status


async def _submit(page: Page, form: str) -> None:
    async with page.expect_navigation():
        await page.click(f"{form} button[type=submit]")


async def test_an_enterprise_registers_finds_edits_deletes_and_rotates_its_key(
    node: Node, browser: Browser, shots: Path
) -> None:
    a = node.a
    context, page = await new_page(browser)
    await sign_in(page, node, a["prefix"], a["secret"])  # the prefix alone names 300:0.NA/<prefix>
    assert page.url.endswith("/console/dashboard")
    assert await page.inner_text("#prefix") == a["prefix"]
    assert await page.inner_text("#signed-in-as") == a["admin"]
    assert await page.inner_text("#total") == "0"
    assert "furniture" in await page.inner_text("#templates")
    assert "管理控制台" in await page.title()

    # Register through the template's form: every mistake is shown beside its field, nothing is written.
    await page.click("#templates a")
    assert await page.is_visible("#f-field_2001") and await page.is_visible("select#f-field_2002")
    await page.fill("#f-field_2001", "table 7")  # not ^[A-Z]{2}-[0-9]{3}$
    await page.fill("#f-field_2003", "2026-12")
    await page.fill("#f-url", "ftp://example.com/x")
    await _submit(page, "#identifier-form")
    assert await page.inner_text("#e-suffix") == "此项必填。"
    assert await page.inner_text("#e-field_2001") == "格式不符合要求。"
    assert await page.inner_text("#e-url") == "请填写以 https:// 或 http:// 开头的网址。"
    assert not await page.is_visible("#e-field_2003")
    assert await page.get_attribute("#f-field_2001", "aria-invalid") == "true"
    assert await page.input_value("#f-field_2003") == "2026-12"  # what was typed stays
    await page.fill("#f-suffix", "TABLE-0001")
    await page.screenshot(path=str(shots / "console-register-errors.png"), full_page=True)
    assert await _api_get(node, f"{a['prefix']}/TABLE-0001") == 404
    await page.fill("#f-field_2001", "TB-007")
    await page.select_option("#f-field_2002", "oak")
    await page.fill("#f-url", "https://trace.example.com/table-1")
    await _submit(page, "#identifier-form")
    assert "/console/identifier?suffix=TABLE-0001" in page.url
    assert await page.inner_text("#done") == "标识已注册。"
    assert await page.inner_text("#template") == "furniture@1"
    cells = await page.locator("#values tbody tr").all_inner_texts()
    assert any("TB-007" in c and "model" in c for c in cells) and any("oak" in c for c in cells)
    assert await page.evaluate("document.querySelector('#qr').naturalWidth") > 0  # the code of its public URL
    await page.screenshot(path=str(shots / "console-identifier.png"), full_page=True)
    r = await node.client.get(f"/api/handles/{a['prefix']}/TABLE-0001")
    values = {v["index"]: v["data"]["value"] for v in (await r.json())["values"]}
    assert values[1] == "https://trace.example.com/table-1" and values[1001] == "furniture@1"
    assert values[2001] == "TB-007" and values[2002] == "oak"

    # A few more through the same form, then the list: filtered by the start of the suffix, paged.
    for n in range(2, 5):
        await page.goto(node.url("/console/identifiers/new?template=furniture"))
        await page.fill("#f-suffix", f"CHAIR-{n:04d}")
        await page.fill("#f-field_2001", f"CH-{n:03d}")
        await _submit(page, "#identifier-form")
    await page.goto(node.url("/console/identifiers"))
    assert await page.locator("#identifiers tbody tr").count() == 4
    assert "共 4 个标识" in await page.inner_text("#count")
    await page.fill("#f-q", "CHAIR-000")
    await _submit(page, "#search")
    found = await page.locator("#identifiers tbody td:nth-child(2)").all_inner_texts()
    assert found == ["CHAIR-0002", "CHAIR-0003", "CHAIR-0004"]
    await page.screenshot(path=str(shots / "console-list.png"), full_page=True)
    await page.goto(node.url("/console/dashboard"))
    assert await page.inner_text("#total") == "4" and await page.inner_text("#recent") == "4"
    today = await page.locator("#chart rect.bar").last.get_attribute("data-value")
    assert today == "4"
    await page.screenshot(path=str(shots / "console-dashboard.png"), full_page=True)

    # Edit: the form holds the values; a change is saved, other values stay.
    await page.goto(node.url("/console/identifier?suffix=TABLE-0001"))
    async with page.expect_navigation():
        await page.click("#edit")
    assert await page.input_value("#f-field_2001") == "TB-007"
    await page.fill("#f-field_2001", "TB-008")
    await page.select_option("#f-field_2002", "bamboo")
    await _submit(page, "#identifier-form")
    assert await page.inner_text("#done") == "修改已保存。"
    r = await node.client.get(f"/api/handles/{a['prefix']}/TABLE-0001", headers=basic(a["admin"], a["secret"]))
    values = {v["index"]: v for v in (await r.json())["values"]}
    assert values[2001]["data"]["value"] == "TB-008" and values[2002]["data"]["value"] == "bamboo"
    assert values[100]["type"] == "HS_ADMIN"  # kept

    # Delete, after a confirmation page.
    async with page.expect_navigation():
        await page.click("#delete")
    assert await page.inner_text("#handle") == f"{a['prefix']}/TABLE-0001"
    assert await _api_get(node, f"{a['prefix']}/TABLE-0001") == 200  # asking changed nothing
    await _submit(page, "#delete-form")
    assert await page.inner_text("#done") == "标识已删除。"
    assert "TABLE-0001" not in await page.inner_text("#identifiers")
    assert await _api_get(node, f"{a['prefix']}/TABLE-0001") == 404

    # A new secret key: shown once; the old one fails in the API, the new one works; this session goes on.
    await page.goto(node.url("/console/key"))
    await _submit(page, "#rotate-form")
    secret = await page.inner_text("#secret")
    assert len(secret) >= 40 and secret != a["secret"]
    await page.screenshot(path=str(shots / "console-key.png"), full_page=True)
    r = await node.client.get(f"/api/handles?prefix={a['prefix']}", headers=basic(a["admin"], a["secret"]))
    assert r.status == 401
    r = await node.client.get(f"/api/handles?prefix={a['prefix']}", headers=basic(a["admin"], secret))
    assert r.status == 200
    await page.goto(node.url("/console/key"))
    assert secret not in await page.content()  # never shown again
    await page.goto(node.url("/console/dashboard"))
    assert page.url.endswith("/console/dashboard")

    # Sign out: the pages ask to sign in again.
    await _submit(page, "#signout")
    assert page.url.endswith("/console/signin?done=signed-out")
    assert await page.is_visible("#signed-out")
    await page.goto(node.url("/console/identifiers"))
    assert page.url.endswith("/console/signin")
    await context.close()


async def test_the_operator_onboards_moves_and_manages_auditors(node: Node, browser: Browser, shots: Path) -> None:
    context, page = await new_page(browser)
    await sign_in(page, node, NODE_ADMIN, ADMIN_SECRET)
    assert page.url.endswith("/console/enterprises")
    assert await page.locator("#enterprises tbody tr").count() == 2

    # Promoters: a bad credit code is named beside its field.
    await page.goto(node.url("/console/promoters"))
    await page.fill("#f-name", "广东智造标识科技有限公司")
    good = make_uscc(2, "92")
    await page.fill("#f-uscc", good[:-1] + ("1" if good.endswith("0") else "0"))  # a wrong check character
    await _submit(page, "#promoter-form")
    assert "统一社会信用代码无效" in await page.inner_text("#e-uscc")
    await page.fill("#f-uscc", good)
    await _submit(page, "#promoter-form")
    assert await page.locator("#promoters tbody tr").count() == 2

    # Onboard: the credit code checked in the form, then the new prefix and its key shown once.
    await page.goto(node.url("/console/enterprises"))
    await page.fill("#f-name", "白云服装有限公司")
    await page.fill("#f-uscc", "91440111000000999X")
    await page.select_option("#f-promoter", str(node.promoter))
    await _submit(page, "#onboard-form")
    assert "统一社会信用代码无效" in await page.inner_text("#e-uscc")
    await page.fill("#f-uscc", make_uscc(11))  # enterprise A's
    await _submit(page, "#onboard-form")
    assert "已接入" in await page.inner_text("#e-uscc")
    await page.fill("#f-uscc", make_uscc(13))
    await _submit(page, "#onboard-form")
    prefix = await page.inner_text("#prefix")
    identity = await page.inner_text("#identity")
    secret = await page.inner_text("#secret")
    assert prefix == "88.118.8.1003" and identity == f"300:0.NA/{prefix}"
    await page.screenshot(path=str(shots / "console-onboarded.png"), full_page=True)
    r = await node.client.get(f"/api/handles?prefix={prefix}", headers=basic(identity, secret))
    assert r.status == 200
    async with page.expect_navigation():
        await page.click("#shown-once a.button")
    assert secret not in await page.content()

    # Disable and enable; move to another promoter from a later date.
    await _submit(page, "#status-form")
    assert await page.inner_text("#status") == "已停用"
    body = {"values": [{"index": 1, "type": "URL", "data": "https://e.example.com/1"}]}
    r = await node.client.put(f"/api/handles/{prefix}/X-1", json=body, headers=basic(identity, secret))
    assert r.status == 403  # a disabled enterprise registers nothing
    await _submit(page, "#status-form")
    assert await page.inner_text("#status") == "启用"
    tomorrow = (dt.datetime.fromtimestamp(node.clock.now, dt.timezone(dt.timedelta(hours=8))).date()) + dt.timedelta(
        days=1
    )
    await page.select_option("#move-form select", index=1)
    await page.fill("#f-from", tomorrow.isoformat())
    await _submit(page, "#move-form")
    assert await page.inner_text("#done") == "推广单位变更已记录。"
    history = await page.locator("#history li").all_inner_texts()
    assert len(history) == 2 and "广东智造标识科技有限公司" in history[1] and "待生效" in history[1]
    assert await page.inner_text("#promoter") == "白云推广中心"  # in force until the day of the move
    await page.screenshot(path=str(shots / "console-enterprise.png"), full_page=True)

    # A new key for the enterprise: the old one stops working.
    await _submit(page, "#reset-form")
    new_secret = await page.inner_text("#secret")
    assert (await node.client.get(f"/api/handles?prefix={prefix}", headers=basic(identity, secret))).status == 401
    assert (await node.client.get(f"/api/handles?prefix={prefix}", headers=basic(identity, new_secret))).status == 200

    # Auditors: created (key shown once), listed, revoked.
    await page.goto(node.url("/console/auditors"))
    await page.fill("#f-name", "Bad Name")
    await _submit(page, "#auditor-form")
    assert await page.is_visible("#e-name")
    await page.fill("#f-name", "baiyun")
    await _submit(page, "#auditor-form")
    auditor, auditor_secret = await page.inner_text("#identity"), await page.inner_text("#secret")
    assert auditor == "300:88.118.8/auditor/baiyun"
    tallies = "/api/promotion/tallies"
    assert (await node.client.get(tallies, headers=basic(auditor, auditor_secret))).status == 200
    await page.goto(node.url("/console/auditors"))
    (row,) = await page.locator("#auditors tbody tr").all_inner_texts()
    assert "baiyun" in row and auditor in row
    await page.screenshot(path=str(shots / "console-auditors.png"), full_page=True)
    async with page.expect_navigation():
        await page.click("#auditors button")
    assert await page.is_visible("#done") and "baiyun" not in await page.inner_text("#auditors")
    assert (await node.client.get(tallies, headers=basic(auditor, auditor_secret))).status == 401

    await page.goto(node.url("/console/status"))
    assert await page.inner_text("#ready") == "ok" and await page.inner_text("#store") == "ok"
    assert await page.inner_text("#store-kind") == "sqlite"
    await page.screenshot(path=str(shots / "console-status.png"), full_page=True)
    await context.close()


@pytest.fixture
def console_overrides() -> dict[str, int]:
    return {"auth_throttle_failures": 3, "console_idle_timeout": 600, "console_session_lifetime": 1800}


async def test_wrong_sign_ins_until_429(node: Node, browser: Browser, shots: Path) -> None:
    context, page = await new_page(browser)
    statuses = []
    for _ in range(4):
        await page.goto(node.url("/console/signin"))
        await page.fill("#f-identity", node.a["prefix"])
        await page.fill("#f-secret", "not-the-key")
        async with page.expect_navigation() as nav:
            await page.click("#signin-form button[type=submit]")
        response = await nav.value
        assert response is not None
        statuses.append(response.status)
    assert statuses == [401, 401, 401, 429]
    assert int(response.headers["retry-after"]) > 0
    assert "请等待" in await page.inner_text("#wait") and "分钟" in await page.inner_text("#wait")
    await page.screenshot(path=str(shots / "console-429.png"), full_page=True)
    # The right key is refused too while the limit holds (a right guess cannot be told from a wrong one) …
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    assert "/console/signin" in page.url and await page.is_visible("#wait")
    # … and the API counts the same failures: it answers 429 as well.
    r = await node.client.get(f"/api/handles?prefix={node.a['prefix']}", headers=basic(node.a["admin"], "nope"))
    assert r.status == 429
    # Another enterprise is not locked out.
    await sign_in(page, node, node.b["prefix"], node.b["secret"])
    assert page.url.endswith("/console/dashboard")
    await context.close()


async def test_forms_without_the_token_or_from_elsewhere_change_nothing(node: Node, browser: Browser) -> None:
    context, page = await new_page(browser)
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    token = await page.get_attribute("#signout input[name=csrf]", "value")
    form = {"suffix": "CSRF-1", "url": "https://evil.example.com/"}
    for extra, headers in (
        ({}, {}),
        ({"csrf": "wrong"}, {}),
        ({"csrf": token}, {"Origin": "https://evil.example.com"}),
    ):
        r = await page.request.post(node.url("/console/identifiers/new"), form={**form, **extra}, headers=headers)
        assert r.status == 403 and r.headers["content-type"].startswith("text/html")
        assert "操作未执行" in await r.text()
    assert await _api_get(node, f"{node.a['prefix']}/CSRF-1") == 404
    r = await page.request.post(node.url("/console/key"), form={})
    assert r.status == 403
    r = await node.client.get(
        f"/api/handles?prefix={node.a['prefix']}", headers=basic(node.a["admin"], node.a["secret"])
    )
    assert r.status == 200  # the key was not rotated
    # With the token, from the page, it works.
    r = await page.request.post(node.url("/console/identifiers/new"), form={**form, "csrf": token}, max_redirects=0)
    assert r.status == 303 and await _api_get(node, f"{node.a['prefix']}/CSRF-1") == 200
    await context.close()


async def test_cookie_flags_and_sign_out_ends_the_session_on_the_server(node: Node, browser: Browser) -> None:
    context, page = await new_page(browser)
    # A session id planted before sign-in (session fixation) is not the one signing in gets.
    host = node.client.make_url("/").host
    planted = {"name": "idnode_console", "value": "planted-by-someone", "domain": host, "path": "/console"}
    await context.add_cookies([planted])  # type: ignore[list-item]
    await sign_in(page, node, node.a["admin"], node.a["secret"])
    (cookie,) = [c for c in await context.cookies() if c["name"] == "idnode_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    assert cookie["value"] != "planted-by-someone"
    assert cookie["secure"] is False  # plain HTTP on loopback; over TLS it is Secure
    assert await page.evaluate("document.cookie") == ""  # out of scripts' reach
    # A second sign-in gets a new session id.
    await sign_in(page, node, node.a["admin"], node.a["secret"])
    (again,) = [c for c in await context.cookies() if c["name"] == "idnode_console"]
    assert again["value"] != cookie["value"]
    stale = await browser.new_context()
    await stale.add_cookies([cookie])
    stale_page = await stale.new_page()
    await stale_page.goto(node.url("/console/dashboard"))
    assert stale_page.url.endswith("/console/signin")  # the first session ended at the second sign-in
    await _submit(page, "#signout")
    assert not [c for c in await context.cookies() if c["name"] == "idnode_console"]
    await stale.clear_cookies()
    await stale.add_cookies([again])  # the signed-out cookie, replayed
    await stale_page.goto(node.url("/console/dashboard"))
    assert stale_page.url.endswith("/console/signin")
    await stale.close()
    await context.close()


async def test_sessions_end_when_idle_and_after_their_lifetime(node: Node, browser: Browser) -> None:
    """``console_idle_timeout`` 600 s and ``console_session_lifetime`` 1800 s (the fixture's)."""
    context, page = await new_page(browser)
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    node.clock.now += 599
    await page.goto(node.url("/console/dashboard"))
    assert page.url.endswith("/console/dashboard")  # used within the idle time
    node.clock.now += 600
    await page.goto(node.url("/console/dashboard"))
    assert page.url.endswith("/console/signin")  # idle too long
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    for _ in range(3):  # busy, but 1,800 s after signing in the session ends all the same
        node.clock.now += 500
        await page.goto(node.url("/console/identifiers"))
        assert page.url.endswith("/console/identifiers")
    node.clock.now += 301
    await page.goto(node.url("/console/identifiers"))
    assert page.url.endswith("/console/signin")
    await context.close()


async def test_an_enterprise_sees_and_changes_only_its_own(node: Node, browser: Browser) -> None:
    a, b = node.a, node.b
    body = {"values": [{"index": 1, "type": "URL", "data": "https://b.example.com/1"}]}
    r = await node.client.put(f"/api/handles/{b['prefix']}/SOAP-1", json=body, headers=basic(b["admin"], b["secret"]))
    assert r.status == 201
    context, page = await new_page(browser)
    await sign_in(page, node, a["prefix"], a["secret"])
    token = await page.get_attribute("#signout input[name=csrf]", "value")
    await page.goto(node.url("/console/identifiers"))
    assert "SOAP-1" not in await page.inner_text("#identifiers")
    # Every identifier page names a suffix under A's own prefix: B's suffix is no identifier of A's.
    response = await page.goto(node.url("/console/identifier?suffix=SOAP-1"))
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    await page.goto(node.url(f"/console/identifiers?after={b['prefix']}/A"))  # a cursor into B's: ignored
    assert "SOAP-1" not in await page.inner_text("#identifiers")
    r = await page.request.post(
        node.url("/console/identifier/delete"), form={"suffix": "SOAP-1", "csrf": token}, max_redirects=0
    )
    assert r.status == 404
    r = await page.request.post(
        node.url("/console/identifier/delete"),
        form={"suffix": f"../{b['prefix']}/SOAP-1", "csrf": token},
        max_redirects=0,
    )
    assert r.status == 404
    assert await _api_get(node, f"{b['prefix']}/SOAP-1") == 200
    # The operator's pages are not an enterprise's.
    response = await page.goto(node.url("/console/enterprises"))
    assert response is not None and response.status == 403
    r = await page.request.post(node.url("/console/promoters"), form={"name": "x", "uscc": make_uscc(9), "csrf": token})
    assert r.status == 403
    await context.close()


async def test_an_auditor_cannot_sign_in(node: Node, browser: Browser) -> None:
    r = await node.client.post("/api/auditors", json={"name": "baiyun"}, headers=basic(NODE_ADMIN, ADMIN_SECRET))
    auditor = await r.json()
    context, page = await new_page(browser)
    await page.goto(node.url("/console/signin"))
    await page.fill("#f-identity", auditor["identity"])
    await page.fill("#f-secret", auditor["secret"])
    async with page.expect_navigation() as nav:
        await page.click("#signin-form button[type=submit]")
    response = await nav.value
    assert response is not None and response.status == 403
    assert "/bureau" in await page.inner_text("#signin-error")
    assert not [c for c in await context.cookies() if c["name"] == "idnode_console"]
    response = await page.goto(node.url("/console/identifiers/new"))
    assert page.url.endswith("/console/signin")
    await context.close()


async def test_every_page_fits_a_phone_in_both_languages(node: Node, browser: Browser, shots: Path) -> None:
    body = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/a-rather-long-path/0001"}]}
    handle = f"{node.a['prefix']}/长长的中文后缀-批次-2026-12-0001"
    r = await node.client.put(
        f"/api/handles/{quote(handle)}", json=body, headers=basic(node.a["admin"], node.a["secret"])
    )
    assert r.status == 201
    pages = {
        "enterprise": [
            "/console/dashboard",
            "/console/identifiers",
            "/console/identifiers/new?template=furniture",
            f"/console/identifier?suffix={quote(handle.partition('/')[2])}",
            "/console/key",
            "/console/no-such-page",
        ],
        "operator": [
            "/console/enterprises",
            "/console/enterprises/1",
            "/console/promoters",
            "/console/auditors",
            "/console/status",
        ],
    }
    for lang in ("zh", "en"):
        context, page = await new_page(browser, "zh-CN", width=390)
        await page.goto(node.url(f"/console/signin?lang={lang}"))
        assert await no_sideways_scroll(page)
        await page.screenshot(path=str(shots / f"console-390-{lang}-signin.png"), full_page=True)
        await sign_in(page, node, node.a["prefix"], node.a["secret"])
        for path in pages["enterprise"]:
            await page.goto(node.url(path))  # the language chosen once is remembered (a cookie)
            assert await page.get_attribute("html", "lang") == ("zh-CN" if lang == "zh" else "en"), path
            assert await no_sideways_scroll(page), (lang, path)
            name = path.strip("/").split("?")[0].replace("/", "-")
            await page.screenshot(path=str(shots / f"console-390-{lang}-{name}.png"), full_page=True)
        await context.close()
        context, page = await new_page(browser, "zh-CN", width=390)
        await page.goto(node.url(f"/console/signin?lang={lang}"))
        await sign_in(page, node, NODE_ADMIN, ADMIN_SECRET)
        for path in pages["operator"]:
            await page.goto(node.url(path))
            assert await no_sideways_scroll(page), (lang, path)
            name = path.strip("/").replace("/", "-")
            await page.screenshot(path=str(shots / f"console-390-{lang}-{name}.png"), full_page=True)
        await context.close()
