"""``bureau``: month-end at the district bureau. Its officials (each with their own auditor identity) go
through the month's figures: the ``/bureau`` page, the signed clause-8 tally of this month, last month
and the year (JSON, then the CSV and XLSX exports, per-enterprise and pooled readings), a promoter's
page and tally, last month's final snapshot (``as_of`` the first of this month, Beijing time), the
resolution statistics of every prefix, the business metrics and the audit log.

Each ``Official`` walks that round in order, one request per step with a think time between, starting
at a random step; the seed has 40 enterprises under 6 promoters and 3 auditor identities.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from locust import FastHttpUser, task

from benchmarks.profiles.common import AUDITORS, SEED, basic, judge, think

BEIJING = ZoneInfo("Asia/Shanghai")
_turn = itertools.count()


def _months() -> list[str]:
    """``from=…&to=…`` of this month, last month and the year so far (Beijing dates)."""
    today = dt.datetime.now(BEIJING).date()
    first = today.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    previous = (first - dt.timedelta(days=1)).replace(day=1)
    return [
        f"from={first}&to={following}",
        f"from={previous}&to={first}",
        f"from={first.replace(month=1)}&to={today + dt.timedelta(days=1)}",
    ]


def _json_code(r: Any) -> bool:
    return json.loads(r.text or "{}").get("responseCode") == 1


def _csv(r: Any) -> bool:
    """The tally's CSV: UTF-8 with a byte-order mark (its header row is in the page's language), and the
    SHA-256 of the signed JSON it was made from."""
    return (r.content or b"").startswith(b"\xef\xbb\xbf") and bool(r.headers.get("X-Report-SHA256"))


def _html(r: Any) -> bool:
    return "text/html" in (r.headers.get("Content-Type") or "")


class Official(FastHttpUser):
    wait_time = think(0.5, 2)
    network_timeout = 120.0

    def on_start(self) -> None:
        auditor = AUDITORS[next(_turn) % len(AUDITORS)]
        self.auth = basic(auditor["identity"], auditor["secret"])
        self.rng = random.Random()
        self.periods = itertools.cycle(_months())
        self.modes = itertools.cycle(["per_enterprise", "pooled"])
        self.period = next(self.periods)
        self.mode = next(self.modes)
        first = dt.datetime.now(BEIJING).date().replace(day=1)
        self.snapshot = f"from={(first - dt.timedelta(days=1)).replace(day=1)}&to={first}&as_of={first}T00:00"
        steps: list[Callable[[], None]] = [
            self.bureau_page, self.tally_json, self.tally_csv, self.tally_xlsx, self.promoter_page,
            self.promoter_tally, self.final_snapshot, self.statistics, self.business_metrics, self.audit_log,
        ]  # fmt: skip
        start = self.rng.randrange(len(steps))
        self.steps = itertools.cycle(steps[start:] + steps[:start])

    @task
    def step(self) -> None:
        next(self.steps)()

    def _get(self, path: str, name: str, ok: Callable[[Any], bool] | None, why: str = "") -> None:
        with self.client.get(path, headers=self.auth, name=name, catch_response=True) as r:
            judge(r, 200, ok, f"{name}: {why}")

    def bureau_page(self) -> None:
        self.period, self.mode = next(self.periods), next(self.modes)  # the next round reads another period
        self._get(f"/bureau?{self.period}&mode={self.mode}", "page /bureau", _html, "not a page")

    def tally_json(self) -> None:
        self._get(
            f"/api/promotion/tallies?{self.period}&mode={self.mode}", "tallies month (JSON)",
            lambda r: '"signature"' in (r.text or ""), "unsigned",
        )  # fmt: skip

    def tally_csv(self) -> None:
        self._get(
            f"/api/promotion/tallies?{self.period}&mode={self.mode}&format=csv", "tallies month (CSV)",
            _csv, "not the CSV",
        )  # fmt: skip

    def tally_xlsx(self) -> None:
        self._get(
            f"/api/promotion/tallies?{self.period}&mode={self.mode}&format=xlsx", "tallies month (XLSX)",
            lambda r: (r.content or b"").startswith(b"PK"), "not a workbook",
        )  # fmt: skip

    def promoter_page(self) -> None:
        promoter = self.rng.choice(SEED["promoters"])
        self._get(f"/bureau/promoters/{promoter}?{self.period}", "page /bureau/promoters/{id}", _html, "not a page")

    def promoter_tally(self) -> None:
        promoter = self.rng.choice(SEED["promoters"])
        self._get(f"/api/promotion/tallies/{promoter}?{self.period}", "one promoter (JSON)", None)

    def final_snapshot(self) -> None:
        self._get(
            f"/api/promotion/tallies?{self.snapshot}", "tallies snapshot (last month, final)",
            lambda r: '"signature"' in (r.text or ""), "unsigned",
        )  # fmt: skip

    def statistics(self) -> None:
        self._get("/api/stats/resolutions", "resolution statistics (every prefix)", _json_code, "no responseCode 1")

    def business_metrics(self) -> None:
        self._get(
            "/metrics/business", "business metrics",
            lambda r: "idnode_resolutions_total" in (r.text or ""), "no resolution counters",
        )  # fmt: skip

    def audit_log(self) -> None:
        self._get("/api/audit?limit=100", "audit log", _json_code, "no responseCode 1")
