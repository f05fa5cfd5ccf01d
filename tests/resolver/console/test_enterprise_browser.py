"""The enterprise administrator's whole day in a real headless Chromium: sign in, register one
identifier, import 10,000 rows from a CSV and watch the job reach done, find identifiers by suffix and
by value, print labels for the ones found (a PDF of the right number of pages), sign out. And the new
pages on a 390 px phone, in Chinese and English, without sideways scrolling."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, expect
from pypdf import PdfReader

from tests.resolver.console.conftest import Node, new_page, no_sideways_scroll, sign_in

ROWS = 10_000


async def _submit(page: Page, form: str) -> None:
    async with page.expect_navigation():
        await page.click(f"{form} button[type=submit]")


async def _pdf_pages(page: Page, button: str) -> int:
    async with page.expect_download() as info:
        await page.click(button)
    download = await info.value
    path = await download.path()
    assert download.suggested_filename.endswith(".pdf")
    data = Path(path).read_bytes()
    assert data.startswith(b"%PDF-")
    return len(PdfReader(io.BytesIO(data)).pages)


@pytest.mark.parametrize("console_overrides", [{"job_chunk_rows": 500}])
async def test_sign_in_register_import_search_print_labels_sign_out(
    node: Node, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    a = node.a
    context, page = await new_page(browser)
    await sign_in(page, node, a["prefix"], a["secret"])
    assert page.url.endswith("/console/dashboard")
    assert await page.is_visible("#chart") and await page.is_visible("#resolutions-chart")

    # Register one, with a URL alone.
    await page.goto(node.url("/console/identifiers/new"))
    await page.fill("#f-suffix", "ONE-0001")
    await page.fill("#f-url", "https://trace.example.com/one")
    await _submit(page, "#identifier-form")
    assert await page.inner_text("#done") == "标识已注册。"

    # Import 10,000 rows; the job page follows the job (it reloads itself) until it is done.
    csv_path = tmp_path / "items.csv"
    lines = ["suffix,URL"] + [f"ITEM-{n:05d},https://trace.example.com/item/{n:05d}" for n in range(1, ROWS + 1)]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    await page.goto(node.url("/console/imports"))
    await page.set_input_files("#f-file", str(csv_path))
    await _submit(page, "#import-form")
    assert "/console/jobs/" in page.url
    job_url = page.url
    seen: list[tuple[str, int]] = []
    for _ in range(600):
        try:
            state = await page.get_attribute("#job", "data-state", timeout=2000)
            processed = int((await page.inner_text("#processed", timeout=2000)).replace(",", ""))
        except Exception:  # the page was reloading between the two reads
            await page.wait_for_timeout(100)
            continue
        if not seen or seen[-1] != (state or "", processed):
            seen.append((state or "", processed))
            if len(seen) == 1:
                await page.screenshot(path=str(shots / "console-job-running.png"), full_page=True)
        if state == "done":
            break
        await page.wait_for_timeout(200)
    await expect(page.locator("#job")).to_have_attribute("data-state", "done")
    counts = [p for _, p in seen]
    assert seen[0][0] in ("queued", "running")  # the page showed the job under way, then followed it
    assert counts == sorted(counts) and seen[-1] == ("done", ROWS)  # progress only goes forward, to the end
    assert await page.inner_text("#total") == "10,000" and await page.inner_text("#created") == "10,000"
    assert await page.inner_text("#rejected") == "0"
    assert await page.get_attribute("#progress", "value") == "100"
    await page.screenshot(path=str(shots / "console-job-done.png"), full_page=True)

    # The same file again registers nothing twice: every row is already there.
    await page.goto(node.url("/console/imports"))
    await page.set_input_files("#f-file", str(csv_path))
    await _submit(page, "#import-form")
    assert page.url != job_url
    await expect(page.locator("#job")).to_have_attribute("data-state", "done", timeout=120_000)
    assert await page.inner_text("#created") == "0" and await page.inner_text("#present") == "10,000"
    await page.goto(node.url("/console/imports"))
    assert await page.locator("#jobs tbody tr").count() == 2
    await page.goto(node.url("/console/dashboard"))
    assert await page.inner_text("#total") == "10,001"

    # Search by suffix, then by value (the value index follows the import within seconds).
    await page.goto(node.url("/console/search"))
    await page.fill("#f-search-q", "ITEM-0999")
    await _submit(page, "#search-suffix")
    found = await page.locator("#identifiers tbody td:nth-child(2)").all_inner_texts()
    assert found == [f"ITEM-0999{n}" for n in range(10)]
    for _ in range(100):
        await page.goto(node.url("/console/search"))
        await page.select_option("#f-search-type", "URL")
        await page.fill("#f-search-value", "*example.com/item/041*")
        await _submit(page, "#search-value")
        found = await page.locator("#identifiers tbody td:nth-child(2)").all_inner_texts()
        if len(found) == 50:
            break
        await page.wait_for_timeout(300)
    assert found == [f"ITEM-041{n:02d}" for n in range(50)]  # of 100: the first page
    assert await page.is_visible("#next")
    await page.screenshot(path=str(shots / "console-search.png"), full_page=True)

    # Labels for the checked results: 30 labels on the 3×8 sheet is two pages, on the 4×10 sheet one.
    for n in range(1, 31):
        await page.check(f"#s-{n}")
    await page.select_option("#sel-layout", "a4-3x8")
    assert await _pdf_pages(page, "#print-selected") == 2
    await page.select_option("#sel-layout", "a4-4x10")
    assert await _pdf_pages(page, "#print-selected") == 1
    # A run from the labels page: 30 from ITEM-00001 on the 3×8 sheet is two pages.
    await page.goto(node.url("/console/labels"))
    await page.fill("#l-from", "ITEM-00001")
    await page.fill("#l-count", "30")
    await page.select_option("#l-layout", "a4-3x8")
    assert await _pdf_pages(page, "#labels button[type=submit]") == 2
    assert page.url.endswith("/console/labels")  # a download; the page stays

    # Sign out.
    await _submit(page, "#signout")
    assert page.url.endswith("/console/signin?done=signed-out")
    await page.goto(node.url("/console/imports"))
    assert page.url.endswith("/console/signin")
    await context.close()


async def test_the_new_pages_fit_a_phone_in_both_languages(node: Node, browser: Browser, shots: Path) -> None:
    a = node.a
    lines = "suffix,URL\n" + "".join(f"PHONE-{n},https://trace.example.com/phone/{n}\n" for n in range(1, 30))
    lines += ",https://trace.example.com/no-suffix\n"  # one rejected row
    for lang in ("zh", "en"):
        context, page = await new_page(browser, "zh-CN", width=390)
        await page.goto(node.url(f"/console/signin?lang={lang}"))
        await sign_in(page, node, a["prefix"], a["secret"])
        await page.goto(node.url("/console/imports"))
        await page.set_input_files(
            "#f-file", files=[{"name": "p.csv", "mimeType": "text/csv", "buffer": lines.encode()}]
        )
        await _submit(page, "#import-form")
        await expect(page.locator("#job")).to_have_attribute("data-state", "done", timeout=60_000)
        job = urlsplit(page.url).path
        pages = [
            "/console/dashboard",
            "/console/imports",
            job,
            "/console/search?q=PHONE",
            "/console/search?type=URL&value=*phone/1*",
            "/console/labels",
            "/console/identifiers",
        ]
        for path in pages:
            await page.goto(node.url(path))
            assert await page.get_attribute("html", "lang") == ("zh-CN" if lang == "zh" else "en"), path
            assert await no_sideways_scroll(page), (lang, path)
            name = path.strip("/").split("?")[0].replace("/", "-")
            if name.startswith("console-jobs-"):
                name = "console-job"
            suffix = "-value" if "value=" in path else ""
            await page.screenshot(path=str(shots / f"console-390-{lang}-{name}{suffix}.png"), full_page=True)
        await context.close()
