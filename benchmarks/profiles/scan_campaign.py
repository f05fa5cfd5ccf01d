"""``scan-campaign``: a promotion day. Shoppers scan the QR codes on products with their phones' cameras;
the phone's browser opens ``https://<node>/<prefix>/<suffix>`` (``GET /{handle}`` with a browser's
``Accept``): a 302 to the product's page, or the node's landing page for an identifier without a URL
(and for ``?noredirect``, the "about this code" link). The campaign's site and print shop fetch the QR
images (``/api/qr/…``, SVG and PNG, revalidated with ``If-None-Match``): one user, always on.

The load comes in bursts (``BurstShape``): a calm fifth of the users, then every cycle a burst to all
of them (a TV spot, a live stream's coupon) — Locust's ``--users`` is the peak.
Every other user is a ``Phone``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

from locust import FastHttpUser, LoadTestShape, task

from benchmarks.profiles.common import ENTERPRISES, HANDLES, LANDING, Zipf, judge, think

BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Mobile Safari/537.36",
}
ZH = {**BROWSER, "Accept-Language": "zh-CN,zh;q=0.9"}
EN = {**BROWSER, "Accept-Language": "en-US,en;q=0.9"}
_PRODUCTS = Zipf(HANDLES)
_PAGES = Zipf(LANDING or HANDLES)


def _html_naming(handle: str) -> Callable[[Any], bool]:
    suffix = handle.split("/", 1)[1]
    return lambda r: "text/html" in (r.headers.get("Content-Type") or "") and suffix in (r.text or "")


class Phone(FastHttpUser):
    """A phone scanning codes: mostly products with a URL (302), some landing pages, a few unknown codes."""

    wait_time = think(0.2, 1.0)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.headers = ZH if self.rng.random() < 0.8 else EN

    @task(14)
    def scan_product(self) -> None:
        handle = _PRODUCTS.draw(self.rng)
        with self.client.get(
            f"/{handle}", headers=self.headers, allow_redirects=False, name="scan → 302", catch_response=True
        ) as r:
            judge(r, 302, lambda r: (r.headers.get("Location") or "").endswith(handle), "302 without the URL value")

    @task(4)
    def scan_landing(self) -> None:
        handle = _PAGES.draw(self.rng)
        with self.client.get(
            f"/{handle}", headers=self.headers, allow_redirects=False, name="scan → landing page", catch_response=True
        ) as r:
            judge(r, 200, _html_naming(handle), "not the identifier's landing page")

    @task(1)
    def about_this_code(self) -> None:
        handle = _PRODUCTS.draw(self.rng)
        with self.client.get(
            f"/{handle}?noredirect", headers=self.headers, name="scan → landing page ?noredirect", catch_response=True
        ) as r:
            judge(r, 200, _html_naming(handle), "not the identifier's landing page")

    @task(1)
    def scan_unknown(self) -> None:  # 1 scan in 20: a misprint, a counterfeit
        prefix = self.rng.choice(ENTERPRISES)["prefix"]
        with self.client.get(
            f"/{prefix}/FAKE-{uuid.uuid4().hex[:12]}", headers=self.headers, name="scan unknown (404 page)",
            catch_response=True,
        ) as r:  # fmt: skip
            judge(r, 404, lambda r: "text/html" in (r.headers.get("Content-Type") or ""), "404 without a page")


class CampaignSite(FastHttpUser):
    """The campaign's web site and print shop: QR images of the products, cached and revalidated."""

    fixed_count = 1
    wait_time = think(0.1, 0.5)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.etags: dict[str, str] = {}

    @task(3)
    def qr_svg(self) -> None:
        handle = _PRODUCTS.draw(self.rng)
        with self.client.get(f"/api/qr/{handle}", name="QR svg", catch_response=True) as r:
            judge(r, 200, lambda r: (r.text or "").lstrip().startswith("<?xml"), "not an SVG")
            if r.status_code == 200 and r.headers.get("ETag"):
                self.etags[handle] = r.headers["ETag"]

    @task(1)
    def qr_png(self) -> None:
        handle = _PRODUCTS.draw(self.rng)
        with self.client.get(f"/api/qr/{handle}?format=png&scale=4", name="QR png", catch_response=True) as r:
            judge(r, 200, lambda r: (r.content or b"").startswith(b"\x89PNG"), "not a PNG")

    @task(2)
    def qr_revalidate(self) -> None:
        if not self.etags:
            return self.qr_svg()
        handle = self.rng.choice(list(self.etags))
        headers = {"If-None-Match": self.etags[handle]}
        with self.client.get(
            f"/api/qr/{handle}", headers=headers, name="QR revalidate (304)", catch_response=True
        ) as r:
            judge(r, 304)


class BurstShape(LoadTestShape):
    """Calm (a fifth of ``--users``), then a burst to ``--users``: cycles of a third of the run (4–20 s),
    the last 40 % of each a burst; users start and stop at ``--spawn-rate`` per second."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        opts = self.runner.environment.parsed_options
        peak, rate, run_time = opts.num_users, opts.spawn_rate, opts.run_time or 60
        now = self.get_run_time()
        if now >= run_time:
            return None
        cycle = min(20.0, max(4.0, run_time / 3))
        burst = (now % cycle) >= 0.6 * cycle
        return (peak if burst else max(1, peak // 5)), rate
