"""``traceability-app``: apps and back-ends resolving identifiers over REST (``GET /api/handles/…``), as a
distributor's warehouse scanner, a regulator's checker or an e-commerce listing would. Most ask for
the whole record, many only for the values they use: ``type=`` (``URL``; ``URL`` and ``EMAIL``; a type
the record does not hold, answered 200 with responseCode 200 and no values) and ``index=``. Which
identifier follows a Zipf law over the seeded ones (each with URL, EMAIL and DESC values); 1 request
in 20 is an unknown code (404, responseCode 100, expected).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from locust import FastHttpUser, task

from benchmarks.profiles.common import ENTERPRISES, HANDLES, Zipf, judge, think

_CODES = Zipf(HANDLES)
JSON = {"Accept": "application/json"}


def _values(code: int, check: Callable[[list[dict[str, Any]]], bool]) -> Callable[[Any], bool]:
    def ok(r: Any) -> bool:
        reply = json.loads(r.text or "{}")
        return reply.get("responseCode") == code and check(reply.get("values", []))

    return ok


class TraceabilityApp(FastHttpUser):
    wait_time = think(0.02, 0.1)

    def on_start(self) -> None:
        self.rng = random.Random()

    def _get(self, query: str, name: str, ok: Callable[[Any], bool]) -> None:
        handle = _CODES.draw(self.rng)
        with self.client.get(f"/api/handles/{handle}{query}", headers=JSON, name=name, catch_response=True) as r:
            judge(r, 200, ok, f"{name}: wrong values")

    @task(8)
    def whole(self) -> None:
        self._get("", "resolve whole", _values(1, lambda v: {x["type"] for x in v} >= {"URL", "EMAIL", "DESC"}))

    @task(4)
    def url_only(self) -> None:
        self._get("?type=URL", "resolve type=URL", _values(1, lambda v: [x["type"] for x in v] == ["URL"]))

    @task(2)
    def url_and_email(self) -> None:
        self._get(
            "?type=URL&type=EMAIL",
            "resolve type=URL&type=EMAIL",
            _values(1, lambda v: sorted(x["type"] for x in v) == ["EMAIL", "URL"]),
        )

    @task(1)
    def absent_type(self) -> None:
        self._get("?type=HS_SITE", "resolve type=HS_SITE (no such value)", _values(200, lambda v: v == []))

    @task(2)
    def index_one(self) -> None:
        self._get("?index=1", "resolve index=1", _values(1, lambda v: [x["index"] for x in v] == [1]))

    @task(2)
    def index_two(self) -> None:
        self._get(
            "?index=2&index=3", "resolve index=2&index=3", _values(1, lambda v: sorted(x["index"] for x in v) == [2, 3])
        )

    @task(1)
    def unknown(self) -> None:
        prefix = self.rng.choice(ENTERPRISES)["prefix"]
        with self.client.get(
            f"/api/handles/{prefix}/UNKNOWN-{uuid.uuid4().hex[:12]}", headers=JSON, name="resolve unknown (404)",
            catch_response=True,
        ) as r:  # fmt: skip
            judge(
                r, 404, lambda r: json.loads(r.text or "{}").get("responseCode") == 100, "404 without responseCode 100"
            )
