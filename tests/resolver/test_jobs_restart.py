"""A job survives its node: real ``idnode serve`` processes on one store.

A 20,000-row import is submitted to node A; node B, on the same store and running no jobs itself,
reports its progress (the state lives in the store); A is killed (SIGKILL) mid-job; the restarted A
resumes the job from its checkpoint once the dead worker's lease has run out. Every row is
registered exactly once: handles, registration counters and the job's counts agree. Stopped
gracefully (SIGTERM), a node puts its running job back in the queue at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from registry.stores import open_store
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic
from tests.resolver.test_shared_cache import call, enterprise

ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)
ROWS = 20_000  # enough that a loaded machine still sees the job running after its first checkpoint
SETTINGS = ("--job-lease-seconds", "3", "--job-chunk-rows", "100")


def upload(node: NodeProcess, prefix: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{node.url}/api/jobs?prefix={prefix}",
        data=body,
        method="POST",
        headers={**headers, "Content-Type": "text/csv"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.status == 202
        return json.loads(r.read())


def status(node: NodeProcess, url: str, headers: dict[str, str]) -> dict[str, Any]:
    code, body = call(f"{node.url}{url}", headers=headers)
    assert code == 200, body
    return body


def until(node: NodeProcess, url: str, headers: dict[str, str], done: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = status(node, url, headers)
        if done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {job}")


def csv_rows(start: int = 0, count: int = ROWS) -> bytes:
    lines = ["suffix,URL"] + [f"R-{n:05d},https://trace.example.com/{n}" for n in range(start, start + count)]
    return ("\n".join(lines) + "\n").encode()


async def _stored(data: Path, prefix: str, job_id: str) -> tuple[int, int, Any]:
    store = await open_store(f"sqlite:///{data}/idnode.db")
    try:
        total, _ = await store.list_handles(prefix, 0, 0)
        counts = await store.registration_counts(19700101, 99991231, 2**40)
        return total, sum(counts.values()), await store.get_job(job_id)
    finally:
        await store.close()


def stored(data: Path, prefix: str, job_id: str) -> tuple[int, int, Any]:
    return asyncio.run(_stored(data, prefix, job_id))


def test_a_job_resumes_after_its_node_was_killed_and_registers_every_row_once(tmp_path):
    data = tmp_path / "data"
    a = NodeProcess(data, *SETTINGS).wait_ready()
    b = NodeProcess(data, "--job-workers", "0").wait_ready()  # another worker of the store
    try:
        ent = enterprise(a, 1)
        headers = basic(ent["admin"], ent["secret"])
        job = upload(a, ent["prefix"], csv_rows(), headers)
        seen = until(b, job["status_url"], headers, lambda j: j["processed"] >= 100)  # progress, through B
        assert seen["state"] == "running" and seen["processed"] < ROWS, "the job ended before it could be stopped"
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=30)
        before = status(b, job["status_url"], headers)
        assert before["state"] == "running" and 100 <= before["processed"] < ROWS  # held by a dead worker

        restarted = NodeProcess(data, *SETTINGS).wait_ready()
        try:
            done = until(b, job["status_url"], headers, lambda j: j["state"] in ("done", "failed"))
        finally:
            restarted.stop()
        assert done["state"] == "done", done
        assert done["processed"] == done["total"] == ROWS and done["rejected"] == 0
        # Rows written after the last checkpoint the killed node saved are found present, never twice.
        assert done["created"] + done["present"] == ROWS and done["present"] < 1000
    finally:
        b.stop()
        a.stop()
    handles, registered, record = stored(data, ent["prefix"].upper(), job["id"])
    assert handles == registered == ROWS
    assert record.state == "done" and record.runner is None


def test_a_node_stopped_gracefully_gives_its_job_back_at_once(tmp_path):
    data = tmp_path / "data"
    a = NodeProcess(data, "--job-chunk-rows", "100").wait_ready()
    ent = enterprise(a, 1)
    headers = basic(ent["admin"], ent["secret"])
    try:
        job = upload(a, ent["prefix"], csv_rows(), headers)
        until(a, job["status_url"], headers, lambda j: j["processed"] >= 500)
    finally:
        assert a.stop() == 0
    handles, registered, record = stored(data, ent["prefix"].upper(), job["id"])
    assert (record.state, record.runner, record.lease_until) == ("queued", None, 0)  # back in the queue
    assert 500 <= record.processed < ROWS and handles == registered == record.created  # at its checkpoint
    b = NodeProcess(data, "--job-chunk-rows", "100").wait_ready()  # the default 30 s lease does not delay it
    try:
        done = until(b, job["status_url"], headers, lambda j: j["state"] == "done", timeout=60)
    finally:
        b.stop()
    assert (done["created"], done["present"]) == (ROWS, 0)
    assert stored(data, ent["prefix"].upper(), job["id"])[:2] == (ROWS, ROWS)
