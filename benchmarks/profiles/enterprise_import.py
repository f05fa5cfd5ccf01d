"""``enterprise-import``: enterprises load their production in bulk while the public keeps resolving.

- ``BatchLine`` (1 user): an ERP pushing ``IDNODE_BENCH_BATCH_ROWS`` (default 100,000, the node's
  ``batch_max_items``) new identifiers in one NDJSON ``POST /api/handles`` with an ``Idempotency-Key``;
  checks 201 and the created count.
- ``ImportJob`` (2 users, each its own enterprise): uploads a CSV of ``IDNODE_BENCH_JOB_ROWS`` (default
  20,000) rows as ``POST /api/jobs?kind=import``, then polls ``GET /api/jobs/{id}`` every half second
  until it is done; ``job to done`` is reported as a request of its own (submission to done) that
  fails when the job failed, rejected rows or created fewer handles than the file has.
- ``Resolver`` (the other users): ``GET /api/handles/…`` of seeded identifiers (Zipf), as ever.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from collections.abc import Callable

import gevent
from locust import FastHttpUser, task

from benchmarks.profiles.common import ENTERPRISES, HANDLES, RUN, Zipf, basic, env_int, judge, think

BATCH_ROWS = env_int("IDNODE_BENCH_BATCH_ROWS", 100_000)
JOB_ROWS = env_int("IDNODE_BENCH_JOB_ROWS", 20_000)
JOB_TIMEOUT = env_int("IDNODE_BENCH_JOB_TIMEOUT", 600)
_CODES = Zipf(HANDLES)
_turn = itertools.count()


def _enterprise() -> tuple[str, dict[str, str]]:
    ent = ENTERPRISES[next(_turn) % len(ENTERPRISES)]
    return ent["prefix"], basic(ent["identity"], ent["secret"])


def _batch_body(prefix: str, tag: str, rows: int) -> bytes:
    return "".join(
        f'{{"handle":"{prefix}/B-{tag}-{n:07d}","values":[{{"index":1,"type":"URL",'
        f'"data":"https://erp.example.com/{tag}/{n}"}}]}}\n'
        for n in range(rows)
    ).encode()


def _csv_body(tag: str, rows: int) -> bytes:
    lines = "".join(f"J-{tag}-{n:07d},https://erp.example.com/{tag}/{n}\n" for n in range(rows))
    return ("suffix,URL\n" + lines).encode()


def _off_the_loop(make: Callable[..., bytes], *args: object) -> bytes:
    """Build a large body in a thread of gevent's pool: built in a greenlet it would hold every other
    user for a few hundred milliseconds, and their requests' times would count that wait as the node's."""
    return gevent.get_hub().threadpool.apply(make, args)


class BatchLine(FastHttpUser):
    fixed_count = 1
    wait_time = think(1, 3)
    network_timeout = 900.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        self.prefix, self.auth = _enterprise()

    @task
    def batch(self) -> None:
        body = _off_the_loop(_batch_body, self.prefix, f"{RUN}-{uuid.uuid4().hex[:6]}", BATCH_ROWS)
        headers = {**self.auth, "Content-Type": "application/x-ndjson", "Idempotency-Key": uuid.uuid4().hex}
        with self.client.post(
            "/api/handles", data=body, headers=headers, name=f"batch ({BATCH_ROWS:,} rows, NDJSON)",
            catch_response=True,
        ) as r:  # fmt: skip
            judge(r, 201, lambda r: json.loads(r.text or "{}").get("created") == BATCH_ROWS, "created count is off")


class ImportJob(FastHttpUser):
    fixed_count = 2
    wait_time = think(1, 3)
    network_timeout = 300.0

    def on_start(self) -> None:
        self.prefix, self.auth = _enterprise()

    @task
    def import_file(self) -> None:
        body = _off_the_loop(_csv_body, f"{RUN}-{uuid.uuid4().hex[:6]}", JOB_ROWS)
        started = time.perf_counter()
        with self.client.post(
            f"/api/jobs?kind=import&prefix={self.prefix}", data=body, headers={**self.auth, "Content-Type": "text/csv"},
            name="job submit (CSV)", catch_response=True,
        ) as r:  # fmt: skip
            judge(r, 202, lambda r: json.loads(r.text or "{}").get("state") in ("queued", "running"), "not queued")
            if r.status_code != 202:
                return
            job_id = json.loads(r.text)["id"]
        job: dict = {}
        error: Exception | None = None
        while time.perf_counter() - started < JOB_TIMEOUT:
            time.sleep(0.5)
            with self.client.get(f"/api/jobs/{job_id}", headers=self.auth, name="job poll", catch_response=True) as r:
                judge(r, 200)
                if r.status_code != 200:
                    error = RuntimeError(f"job poll answered {r.status_code}")
                    break
                job = json.loads(r.text)
            if job["state"] in ("done", "failed"):
                break
        else:
            error = TimeoutError(f"job not done after {JOB_TIMEOUT} s: {job.get('state')}, {job.get('processed')} rows")
        if error is None and (job["state"] != "done" or job["rejected"] or job["created"] != JOB_ROWS):
            error = RuntimeError(
                f"job {job['state']}: created {job['created']} of {JOB_ROWS}, rejected {job['rejected']}, "
                f"error {job.get('error')}"
            )
        self.environment.events.request.fire(
            request_type="JOB",
            name=f"job to done ({JOB_ROWS:,} rows)",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


class Resolver(FastHttpUser):
    wait_time = think(0.02, 0.1)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def resolve(self) -> None:
        handle = _CODES.draw(self.rng)
        with self.client.get(f"/api/handles/{handle}", name="resolve during import", catch_response=True) as r:
            judge(r, 200, lambda r: '"responseCode":1' in (r.text or ""), "reply without responseCode 1")
