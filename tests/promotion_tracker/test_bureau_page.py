"""The bureau's pages in a real headless Chromium (Debian's package, driven by Playwright): the page, the
drill-down and the print view, with screenshots. Set IDNODE_SCREENSHOTS=DIR to keep the PNG and PDF
files for looking at them."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Browser, BrowserContext, Page

from promotion_tracker.signing import verify_document
from tests.conftest import ADMIN_SECRET
from tests.promotion_tracker.bureau_data import CAPS, PERIOD, SNAPSHOT, bureau  # noqa: F401 (fixture)
from tests.resolver.conftest import NODE_ADMIN

A4_WIDTH = 794  # CSS pixels at 96 dpi


async def _context(browser: Browser, locale: str) -> BrowserContext:
    return await browser.new_context(
        locale=locale,
        http_credentials={"username": NODE_ADMIN, "password": ADMIN_SECRET},
        viewport={"width": 1400, "height": 900},
    )


def _page_url(bureau, path: str = "/bureau", **extra: str) -> str:  # noqa: F811
    query = {**PERIOD, "as_of": SNAPSHOT, "cap": CAPS, **extra}
    return str(bureau.client.make_url(path).with_query(query))


async def _href(page: Page, selector: str) -> str:
    return await page.eval_on_selector(selector, "a => a.href")


async def _fetch(page: Page, url: str) -> dict:
    return await page.evaluate(
        """async url => { const r = await fetch(url);
           const b = new Uint8Array(await r.arrayBuffer());
           return {status: r.status, type: r.headers.get('content-type'), size: b.length,
                   head: Array.from(b.slice(0, 4))}; }""",
        url,
    )


async def test_page_drill_down_and_print_view(bureau, browser, shots):  # noqa: F811
    context = await _context(browser, "zh-CN")
    page = await context.new_page()
    response = await page.goto(_page_url(bureau))
    assert response is not None and response.status == 200
    assert response.headers["content-language"] == "zh-CN"

    # The signed report the page was made from: every number on the page is compared with it.
    document = json.loads(await (await page.request.get(await _href(page, "#json-link"))).text())
    verify_document(document)
    report = document["report"]
    assert report["final"] is True and report["policy"]["base_enterprises"] == 5

    assert "推广奖励" in await page.title()
    assert await page.inner_text("#mark") == "定稿 final"
    assert "2025年7月1日 00:00" in await page.inner_text("#as-of") and "北京时间" in await page.inner_text("#as-of")
    assert "2025年1月1日至2025年12月31日" in await page.inner_text("#period")
    rule = await page.inner_text("#rule")
    assert "逐家计算" in rule and "per-enterprise reading" in rule and "合并计算" not in rule
    headers = await page.locator("#tally thead th").all_inner_texts()
    assert headers[:3] == ["推广单位", "有效企业", "标识注册量"] and "奖励金额" in headers

    rows = page.locator("#tally tbody tr.promoter")
    assert await rows.count() == 3
    for i, p in enumerate(report["promoters"]):
        cells = await rows.nth(i).locator("td").all_inner_texts()
        assert p["promoter"]["name"] in cells[0] and p["promoter"]["uscc"] in cells[0]
        assert cells[3] == f"{p['award']['increment_enterprises']:,}"
        assert cells[4] == f"{p['award']['base_yuan']:,} 元"
        assert cells[6].startswith(f"{p['award_yuan']:,} 元")
        explanation = await page.locator("#tally tbody tr.explain").nth(i).inner_text()
        assert p["explanation"]["zh"] in explanation and p["explanation"]["en"] in explanation
    awards = [p["award_yuan"] for p in report["promoters"]]
    assert awards == [210_000, 0, 150_000]
    assert "第十七条限额 150,000 元" in await rows.nth(2).inner_text()
    assert await page.inner_text("#total") == "360,000 元"

    # Progress bars drawn to scale by the browser: 3 of 5 enterprises, 900 of 2,000 identifiers.
    bars = (
        await rows.nth(1)
        .locator("[role=progressbar]")
        .evaluate_all(
            """bs => bs.map(b => ({label: b.dataset.label, now: +b.getAttribute('aria-valuenow'),
              ratio: b.firstElementChild.getBoundingClientRect().width / b.getBoundingClientRect().width}))"""
        )
    )
    assert [b["label"] for b in bars] == ["enterprises", "registrations"]
    assert bars[0]["now"] == 3 and abs(bars[0]["ratio"] - 0.6) < 0.02
    assert bars[1]["now"] == 900 and abs(bars[1]["ratio"] - 0.45) < 0.02

    # Every link keeps the request's cap, and each download answers from the browser.
    for link in ("#csv-link", "#csv-en-link", "#xlsx-link", "#json-link"):
        href = await _href(page, link)
        assert parse_qs(urlsplit(href).query)["cap"] == [CAPS], link
        got = await _fetch(page, href)
        assert got["status"] == 200, (link, got)
    assert (await _fetch(page, await _href(page, "#csv-link")))["head"][:3] == [0xEF, 0xBB, 0xBF]
    xlsx = await _fetch(page, await _href(page, "#xlsx-link"))
    assert xlsx["head"] == [0x50, 0x4B, 0x03, 0x04] and "spreadsheetml" in xlsx["type"]

    # The form shows the request in Beijing time and asks again with what the officer changes.
    assert await page.input_value("input[name=as_of]") == SNAPSHOT
    assert await page.input_value("input[name=cap]") == CAPS
    await page.screenshot(path=str(shots / "bureau.png"), full_page=True)
    await page.select_option("select[name=mode]", "pooled")
    async with page.expect_navigation():
        await page.click("#tally-form button")
    assert "合并计算" in await page.inner_text("#rule") and "逐家计算" not in await page.inner_text("#rule")
    assert "mode=pooled" in page.url and "cap=3%3A150000" in page.url

    # Drill-down: every enterprise and the registrations per month.
    await page.go_back()
    async with page.expect_navigation():
        await rows.nth(0).locator("a").click()
    assert urlsplit(page.url).path == f"/bureau/promoters/{bureau.promoters[0]}"
    detail = json.loads(await (await page.request.get(await _href(page, "#json-link"))).text())
    verify_document(detail)
    (p,) = detail["report"]["promoters"]
    assert await page.inner_text("#promoter-name") == f"{p['promoter']['name']} {p['promoter']['uscc']}"
    ent_rows = await page.locator("#enterprises tbody tr").evaluate_all(
        "trs => trs.map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText))"
    )
    assert len(ent_rows) == len(p["enterprise_rows"]) == 7
    for cells, e in zip(ent_rows, p["enterprise_rows"], strict=True):
        assert cells == [
            e["name"],
            e["uscc"],
            e["prefix"],
            f"{e['registrations']:,}",
            "是" if e["eligible"] else "否",
            "是" if e["increment"] else "否",
        ]
    assert [r[5] for r in ent_rows].count("是") == 1 and [r[4] for r in ent_rows].count("否") == 1
    bars = await page.locator("#chart rect").evaluate_all(
        "rs => rs.map(r => ({month: r.dataset.month, value: +r.dataset.value, h: r.getBoundingClientRect().height}))"
    )
    assert [b["month"] for b in bars] == detail["report"]["months"] == [f"2025-{m:02d}" for m in range(1, 13)]
    assert [b["value"] for b in bars] == p["registrations_by_month"]
    assert sum(p["registrations_by_month"]) == sum(e["registrations"] for e in p["enterprise_rows"]) == 3100
    tallest = max(bars, key=lambda b: b["value"])
    assert tallest["h"] > 50 and all(b["h"] == 0 for b in bars if b["value"] == 0)
    assert "2025年3月" in (await page.text_content("#chart") or "")
    await page.screenshot(path=str(shots / "promoter.png"), full_page=True)

    # The print view: A4, no form or links, the signature's key id and fingerprint on paper.
    await page.go_back()
    await page.set_viewport_size({"width": A4_WIDTH, "height": 1123})
    await page.emulate_media(media="print")
    assert not await page.is_visible("#tally-form") and not await page.is_visible("#csv-link")
    assert not await page.is_visible("header.site") and await page.is_visible("#signature")
    assert await page.inner_text("#key-id") == document["signature"]["key_id"]
    fingerprint = await page.inner_text("#fingerprint")
    assert len(fingerprint.replace(" ", "")) == 32
    assert (
        await page.inner_text("#digest")
        == (await page.request.get(await _href(page, "#json-link"))).headers["x-report-sha256"]
    )
    await page.screenshot(path=str(shots / "print.png"), full_page=True)
    pdf = await page.pdf(path=str(shots / "print.pdf"), format="A4", print_background=False)
    assert pdf[:5] == b"%PDF-" and pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages") >= 1
    await context.close()


async def test_page_in_english_and_errors_on_the_page(bureau, browser, shots):  # noqa: F811
    context = await _context(browser, "en-US")
    page = await context.new_page()
    response = await page.goto(_page_url(bureau))
    assert response is not None and response.headers["content-language"] == "en"
    assert "Promotion award" in await page.title()
    headers = await page.locator("#tally thead th").all_inner_texts()
    assert headers[:3] == ["Promoter", "Eligible enterprises", "Registrations"]
    assert await page.inner_text("#total") == "CNY 360,000"
    assert "July 1, 2025 00:00" in await page.inner_text("#as-of")
    # The explanation comes in English first, then Chinese; the final mark is bilingual.
    document = json.loads(await (await page.request.get(await _href(page, "#json-link"))).text())
    first = await page.locator("#tally tr.explain").first.locator("p").all_inner_texts()
    explanation = document["report"]["promoters"][0]["explanation"]
    assert first == [explanation["en"], explanation["zh"]]
    assert first[0].startswith("6 eligible enterprises (5 or more required) registered 3,100 identifiers")
    assert await page.inner_text("#mark") == "定稿 final"
    # ?lang= wins over Accept-Language.
    await page.goto(_page_url(bureau, lang="zh"))
    assert "推广奖励" in await page.title()
    await page.screenshot(path=str(shots / "bureau-en-then-zh.png"))
    # On a phone the page itself never scrolls sideways (the wide table scrolls in its own box).
    await page.set_viewport_size({"width": 390, "height": 844})
    drill_down = f"/bureau/promoters/{bureau.promoters[0]}"
    for path in ("/bureau", drill_down):
        for lang in ("zh", "en"):
            url = _page_url(bureau, path=path, lang=lang)
            await page.goto(url)
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390, url
            name = "bureau" if path == "/bureau" else "promoter"
            await page.screenshot(path=str(shots / f"{name}-390-{lang}.png"), full_page=True)
    await page.set_viewport_size({"width": 1400, "height": 900})
    # A bad value is explained on the page, with the form to correct it.
    response = await page.goto(_page_url(bureau, **{"from": "2025-13-01"}))
    assert response is not None and response.status == 400
    assert "from" in await page.inner_text("#error") and await page.is_visible("#tally-form")
    response = await page.goto(_page_url(bureau, path="/bureau/promoters/999"))
    assert response is not None and response.status == 404
    await context.close()
