"""Locust users that behave like idnode's real callers.

- ``TraceabilityApp``: scans product codes and resolves them. Which handle is scanned follows a Zipf
  law over the seeded population (a few products are scanned a lot, most rarely); a share of the
  codes are unknown (a misprint, a counterfeit), answered 404 — expected, so not a failure. Some
  apps ask only for the URL value (``type=URL``), like a redirecting scanner.
- ``Enterprise``: a production line registering identifiers with its own credentials: NDJSON
  batches (with an ``Idempotency-Key``) and single ``PUT``s.
- ``Bureau``: the district bureau pulling the clause-8 tallies with its auditor identity.
- ``Prometheus``: scrapes ``/metrics`` every few seconds.

This is the ``mixed`` profile (``make bench``); the others are in ``benchmarks/profiles/``. The node
and the seed (handles, enterprises' and the auditor's credentials) come from
``benchmarks/run_locust.py``, which writes a JSON seed file and passes its path in
``IDNODE_BENCH_SEED``; ``benchmarks/profiles/common.py`` reads it and writes the final statistics.
Tunables (environment): ``IDNODE_BENCH_ZIPF_S`` (default 1.1), ``IDNODE_BENCH_UNKNOWN`` (share of
unknown codes, default 0.05), ``IDNODE_BENCH_BATCH`` (items per batch, default 200).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import random
import uuid
from typing import Any

from locust import FastHttpUser, between, constant, task

from benchmarks.profiles.common import ENTERPRISES, HANDLES, RUN, SEED, UNKNOWN_SHARE, Zipf, basic

BATCH_ITEMS = int(os.environ.get("IDNODE_BENCH_BATCH", "200"))
_ZIPF = Zipf(HANDLES)
_enterprise_turn = itertools.count()


def zipf_handle(rng: random.Random) -> str:
    return _ZIPF.draw(rng)


def url_value(where: str) -> dict[str, Any]:
    return {"index": 1, "type": "URL", "data": f"https://trace.example.com/{where}"}


class TraceabilityApp(FastHttpUser):
    weight = 20
    wait_time = between(0.02, 0.1)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def scan(self) -> None:
        rng = self.rng
        if rng.random() < UNKNOWN_SHARE:
            prefix = rng.choice(ENTERPRISES)["prefix"]
            handle = f"{prefix}/UNKNOWN-{uuid.uuid4().hex[:12]}"
            with self.client.get(f"/api/handles/{handle}", name="resolve unknown (404)", catch_response=True) as r:
                if r.status_code == 404:
                    r.success()
                else:
                    r.failure(f"unknown code answered {r.status_code}")
            return
        handle = zipf_handle(rng)
        url_only = rng.random() < 0.3
        path = f"/api/handles/{handle}" + ("?type=URL" if url_only else "")
        name = "resolve known ?type=URL" if url_only else "resolve known"
        with self.client.get(path, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"seeded handle answered {r.status_code}")
            elif '"responseCode":1' not in (r.text or ""):
                r.failure("reply without responseCode 1")
            else:
                r.success()


class Enterprise(FastHttpUser):
    weight = 2
    wait_time = between(1, 3)

    def on_start(self) -> None:
        ent = ENTERPRISES[next(_enterprise_turn) % len(ENTERPRISES)]
        self.prefix = ent["prefix"]
        self.auth = basic(ent["identity"], ent["secret"])
        self.me = uuid.uuid4().hex[:8]
        self.serial = itertools.count()

    def _suffix(self) -> str:
        return f"LT-{RUN}-{self.me}-{next(self.serial):07d}"

    @task(1)
    def register_batch(self) -> None:
        lines = []
        for _ in range(BATCH_ITEMS):
            suffix = self._suffix()
            lines.append(json.dumps({"handle": f"{self.prefix}/{suffix}", "values": [url_value(suffix)]}))
        body = ("\n".join(lines) + "\n").encode()
        headers = {**self.auth, "Content-Type": "application/x-ndjson", "Idempotency-Key": uuid.uuid4().hex}
        with self.client.post(
            "/api/handles",
            data=body,
            headers=headers,
            name=f"register batch ({BATCH_ITEMS}, NDJSON)",
            catch_response=True,
        ) as r:
            if r.status_code != 201:
                r.failure(f"batch answered {r.status_code}: {(r.text or '')[:200]}")
            elif json.loads(r.text or "{}").get("created") != BATCH_ITEMS:
                r.failure(f"batch created {json.loads(r.text or '{}').get('created')} of {BATCH_ITEMS}")
            else:
                r.success()

    @task(4)
    def register_one(self) -> None:
        suffix = self._suffix()
        headers = {**self.auth, "Content-Type": "application/json"}
        body = json.dumps({"values": [url_value(suffix)]}).encode()
        with self.client.put(
            f"/api/handles/{self.prefix}/{suffix}", data=body, headers=headers, name="register one (PUT)",
            catch_response=True,
        ) as r:  # fmt: skip
            if r.status_code == 201:
                r.success()
            else:
                r.failure(f"PUT answered {r.status_code}: {(r.text or '')[:200]}")


class Bureau(FastHttpUser):
    fixed_count = 1
    wait_time = between(5, 10)

    def on_start(self) -> None:
        self.auth = basic(SEED["auditor"]["identity"], SEED["auditor"]["secret"])
        year = dt.datetime.now(dt.UTC).year
        self.period = f"from={year}-01-01&to={year + 1}-01-01"

    @task(3)
    def tallies(self) -> None:
        with self.client.get(
            f"/api/promotion/tallies?{self.period}", headers=self.auth, name="bureau tallies (JSON)",
            catch_response=True,
        ) as r:  # fmt: skip
            if r.status_code == 200 and '"signature"' in (r.text or ""):
                r.success()
            else:
                r.failure(f"tallies answered {r.status_code}")

    @task(1)
    def tallies_csv(self) -> None:
        with self.client.get(
            f"/api/promotion/tallies?{self.period}&format=csv", headers=self.auth, name="bureau tallies (CSV)",
            catch_response=True,
        ) as r:  # fmt: skip
            # UTF-8 with a byte-order mark (the header row is Chinese by default) and the signed JSON's SHA-256
            if (
                r.status_code == 200
                and (r.content or b"").startswith(b"\xef\xbb\xbf")
                and r.headers.get("X-Report-SHA256")
            ):
                r.success()
            else:
                r.failure(f"CSV tallies answered {r.status_code}")

    @task(1)
    def one_promoter(self) -> None:
        promoter = random.choice(SEED["promoters"])
        with self.client.get(
            f"/api/promotion/tallies/{promoter}?{self.period}", headers=self.auth, name="bureau one promoter",
            catch_response=True,
        ) as r:  # fmt: skip
            if r.status_code == 200:
                r.success()
            else:
                r.failure(f"promoter tally answered {r.status_code}")


class Prometheus(FastHttpUser):
    fixed_count = 1
    wait_time = constant(5)

    @task
    def scrape(self) -> None:
        with self.client.get("/metrics", name="prometheus scrape", catch_response=True) as r:
            if r.status_code == 200 and "idnode_http_requests_total" in (r.text or ""):
                r.success()
            else:
                r.failure(f"/metrics answered {r.status_code}")
