"""The console's one script in real Chromium: the import form shows how much of the file is sent, and
the job page follows the job's counts in place (no reload) until it is done; without JavaScript the
plain form and the page's <noscript> refresh do the same work. Screenshots at 390 px in both languages.

The node's job runner is slowed in these tests (a pause after each chunk's checkpoint) so that a
20,000-row import runs long enough to be watched; the upload is throttled with Chromium's own
network emulation so that its progress can be seen."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from resolver.http.keys import STATE_KEY
from tests.resolver.console.conftest import Node, no_sideways_scroll, sign_in

ROWS = 20_000
PAUSE = 0.12  # seconds after each chunk's checkpoint: 40 chunks of 500 rows, about 5 s in all


def _slow_jobs(node: Node) -> None:
    runner = node.client.server.app[STATE_KEY].jobs
    assert runner is not None
    save = runner._save

    async def slow_save(*args: Any) -> None:
        await save(*args)
        await asyncio.sleep(PAUSE)

    runner._save = slow_save  # type: ignore[method-assign]


def _csv(path: Path, rows: int, *, bad_line: bool) -> Path:
    lines = ["suffix,URL"] + [f"LIVE-{n:05d},https://trace.example.com/live/{n:05d}" for n in range(1, rows + 1)]
    if bad_line:
        lines.append(",https://trace.example.com/no-suffix")  # rejected: no suffix
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def _number(page: Page, selector: str) -> int:
    return int((await page.inner_text(selector)).replace(",", ""))


@pytest.mark.parametrize("console_overrides", [{"job_chunk_rows": 500}])
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_upload_progress_and_live_counts_without_reloading(
    node: Node, browser: Browser, shots: Path, tmp_path: Path, lang: str
) -> None:
    _slow_jobs(node)
    csv_path = _csv(tmp_path / "live.csv", ROWS, bad_line=True)
    context = await browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto(node.url(f"/console/signin?lang={lang}"))
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    await page.goto(node.url("/console/imports"))
    assert await page.is_hidden("#upload")

    # The upload, throttled to about 250 KB/s (the file is about 1 MB): its progress shows as it goes.
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 250_000}
    await cdp.send("Network.emulateNetworkConditions", conditions)
    await page.set_input_files("#f-file", str(csv_path))
    await page.click("#import-form button[type=submit]")
    sent: list[int] = []
    texts: set[str] = set()
    for _ in range(400):
        if "/console/jobs/" in page.url:
            break
        try:
            percent = await page.get_attribute("#upload", "data-percent", timeout=500)
            text = await page.inner_text("#upload-text", timeout=500)
        except Exception:  # the job's page is loading
            await page.wait_for_timeout(50)
            continue
        if percent is not None and (not sent or sent[-1] != int(percent)):
            sent.append(int(percent))
            texts.add(text)
            if len(sent) == 3:
                assert await no_sideways_scroll(page)
                await page.screenshot(path=str(shots / f"console-390-{lang}-import-uploading.png"), full_page=True)
        await page.wait_for_timeout(50)
    await page.wait_for_url("**/console/jobs/*")
    await cdp.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": -1})
    assert len([p for p in sent if 0 < p < 100]) >= 2, sent  # seen part-way, more than once
    assert sent == sorted(sent), sent
    sent_word = "已上传" if lang == "zh" else "Sent"
    assert any(t.startswith(sent_word) and "KiB" in t for t in texts), texts

    # The job's page: the script asks for the counts every second and updates them in place.
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    assert await page.is_visible("#live") and not await page.is_visible("noscript")
    seen: list[int] = []
    reloads_while_running = 0
    for _ in range(300):
        state = await page.get_attribute("#job", "data-state")
        if state == "done":
            break
        processed = await _number(page, "#processed")
        reloads_while_running = len(navigations)
        if not seen or seen[-1] != processed:
            seen.append(processed)
            if len(seen) == 3:
                assert await no_sideways_scroll(page)
                await page.screenshot(path=str(shots / f"console-390-{lang}-job-live.png"), full_page=True)
        await page.wait_for_timeout(100)
    changes = [p for p in seen if 0 < p < ROWS + 1]
    assert len(changes) >= 2 and seen == sorted(seen), seen  # the count moved at least twice, forwards
    assert reloads_while_running == 0, navigations  # and the page was never reloaded for it
    assert 0 < await page.evaluate("document.getElementById('progress').value") <= 100

    # Done, with one rejected row: the page is loaded once more to list it, with its reason in the page's language.
    await expect(page.locator("#rejects")).to_be_visible(timeout=60_000)
    assert await page.get_attribute("#job", "data-state") == "done" and len(navigations) == 1
    assert await _number(page, "#created") == ROWS and await _number(page, "#rejected") == 1
    reason = await page.inner_text("#rejects tbody td.value")
    assert reason.startswith("标识格式无效：A handle is") if lang == "zh" else reason.startswith("A handle is")
    assert await page.is_hidden("#live") and await page.locator("#job[data-poll]").count() == 0
    assert await no_sideways_scroll(page)
    await page.screenshot(path=str(shots / f"console-390-{lang}-job-done.png"), full_page=True)
    await context.close()


@pytest.mark.parametrize("console_overrides", [{"job_chunk_rows": 100}])
async def test_without_javascript_the_import_and_its_page_still_work(
    node: Node, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    _slow_jobs(node)  # 2,000 rows: 20 chunks, about 2.5 s
    csv_path = _csv(tmp_path / "plain.csv", 2_000, bad_line=False)
    context = await browser.new_context(
        locale="zh-CN", viewport={"width": 390, "height": 844}, java_script_enabled=False
    )
    page = await context.new_page()
    await sign_in(page, node, node.a["prefix"], node.a["secret"])
    await page.goto(node.url("/console/imports"))
    assert await page.is_hidden("#upload")
    await page.set_input_files("#f-file", str(csv_path))
    async with page.expect_navigation():
        await page.click("#import-form button[type=submit]")
    assert "/console/jobs/" in page.url
    loads: list[str] = []
    page.on("load", lambda: loads.append(page.url))
    assert await page.get_attribute("#job", "data-state") in ("queued", "running")
    assert await page.is_hidden("#live")  # the script's line stays hidden; the <noscript> one shows
    assert "秒自动刷新" in await page.inner_text("#job")
    await page.screenshot(path=str(shots / "console-390-zh-job-nojs.png"), full_page=True)
    await expect(page.locator("#job")).to_have_attribute("data-state", "done", timeout=60_000)
    assert len(loads) >= 1  # the page reloaded itself (the <noscript> refresh) until the job was done
    assert await _number(page, "#created") == 2_000
    await context.close()
