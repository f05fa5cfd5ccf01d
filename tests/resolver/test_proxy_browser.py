"""The pages for people in a real headless Chromium (Debian's package, driven by Playwright) at a phone's
viewport (390×844, as a phone that scanned a code shows them): the landing page in Chinese and English,
the home page and its form, an unknown identifier. Set IDNODE_SCREENSHOTS=DIR to keep the PNG files."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page

from tests.resolver.proxy_data import (
    ENTERPRISE_NAME,
    PRODUCT_PAGE,
    SECRET_QC,
    SECRET_URL,
    TRACE_PAGE,
    Node,
    node,  # noqa: F401 (fixture)
)

PHONE = {"width": 390, "height": 844}


async def _phone(browser: Browser, locale: str) -> BrowserContext:
    return await browser.new_context(
        locale=locale, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )


async def _fits(page: Page) -> None:
    """Nothing sticks out sideways on a phone."""
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], page.url


async def _rows(page: Page, section: str) -> dict[str, str]:
    return await page.eval_on_selector_all(
        f"#{section} .row",
        "rows => Object.fromEntries(rows.map(r => [r.querySelector('dt').innerText, r.querySelector('dd').innerText]))",
    )


async def test_landing_page_on_a_phone_in_chinese_and_english(node: Node, browser: Browser, shots: Path) -> None:  # noqa: F811
    context = await _phone(browser, "zh-CN")
    page = await context.new_page()
    url = str(node.client.make_url(node.path()).with_query({"noredirect": ""}))
    response = await page.goto(url)
    assert response is not None and response.status == 200
    assert response.headers["content-language"] == "zh-CN"
    assert await page.inner_text("#identifier") == node.handle
    assert await page.inner_text("#enterprise") == ENTERPRISE_NAME
    assert await page.inner_text("#verified") == "已注册"
    assert await page.inner_text("#node") == "工业互联网标识解析二级节点 88.118.8"
    fields = await _rows(page, "fields")
    assert fields == {
        "产品名称": "智能电动螺丝刀",
        "型号": "SD-200",
        "batch": "B2025-11-A",
        "color": "曜石黑",
        "生产日期": "2025-11-18",
    }
    registration = await _rows(page, "registration")
    assert registration["注册时间"] == "2025年11月18日 09:30"
    assert registration["最近更新"] == "2025年12月2日 14:05"
    assert registration["数据模板"] == "power-tool · v1"
    assert await page.get_attribute("#primary-link", "href") == PRODUCT_PAGE
    links = await page.eval_on_selector_all("#links a", "as => as.map(a => [a.innerText.split('\\n')[0], a.href])")
    assert links[0] == ["追溯信息", TRACE_PAGE]
    assert links[1][0] == "使用说明" and links[1][1].endswith("SD-200%E4%BD%BF%E7%94%A8%E8%AF%B4%E6%98%8E.pdf")
    text = await page.inner_text("body")
    assert SECRET_QC not in text and SECRET_URL not in await page.content()
    # Chinese glyphs are drawn with a CJK font, not as boxes: the identifier's line is as tall as one line.
    await _fits(page)
    await page.screenshot(path=str(shots / "landing-390-zh.png"), full_page=True)
    await page.screenshot(path=str(shots / "landing-390-zh-fold.png"))  # what the phone shows first

    # The language switch keeps the page (no redirect) and English follows.
    async with page.expect_navigation():
        await page.click("nav.languages a[lang=en]")
    assert "noredirect" in page.url and "lang=en" in page.url
    assert await page.inner_text("#node") == "Industrial Internet identifier resolution secondary node 88.118.8"
    registration = await _rows(page, "registration")
    assert registration["Registered on"] == "November 18, 2025 09:30"
    labels = await page.eval_on_selector_all("#links .label", "ls => ls.map(l => l.innerText)")
    assert labels == ["Traceability", "Instructions"]
    assert "Email" in await _rows(page, "others")
    await _fits(page)
    await page.screenshot(path=str(shots / "landing-390-en.png"), full_page=True)
    await context.close()

    # Accept-Language decides without ?lang.
    context = await _phone(browser, "en-US")
    page = await context.new_page()
    await page.goto(url)
    assert "Open the product page" in await page.inner_text("#primary-link")
    await context.close()


async def test_home_page_form_and_errors_on_a_phone(node: Node, browser: Browser, shots: Path) -> None:  # noqa: F811
    context = await _phone(browser, "zh-CN")
    page = await context.new_page()
    response = await page.goto(str(node.client.make_url("/")))
    assert response is not None and response.status == 200
    assert "二级节点 88.118.8" in await page.inner_text("h1")
    await _fits(page)
    await page.screenshot(path=str(shots / "home-390-zh.png"), full_page=True)

    # A person types the identifier and asks for its information rather than the product's site.
    await page.fill("#hdl", node.handle)
    await page.check("input[name=noredirect]")
    async with page.expect_navigation():
        await page.click("#resolve-form button")
    assert await page.inner_text("#identifier") == node.handle

    # A typo: the error page says so in words and offers the form again.
    response = await page.goto(str(node.client.make_url(node.path(f"{node.prefix}/SKU-2025-00000l"))))
    assert response is not None and response.status == 404
    assert await page.inner_text("#error-title") == "本节点未注册该标识"
    assert await page.input_value("#hdl") == f"{node.prefix}/SKU-2025-00000l"
    await _fits(page)
    await page.screenshot(path=str(shots / "not-found-390-zh.png"), full_page=True)

    # Another node's identifier typed into the form.
    await page.goto(str(node.client.make_url("/")))
    await page.fill("#hdl", "86.100.1/ABC")
    async with page.expect_navigation():
        await page.press("#hdl", "Enter")
    assert "该标识不属于本节点" in await page.inner_text("#error")
    await page.screenshot(path=str(shots / "home-error-390-zh.png"), full_page=True)
    await context.close()
