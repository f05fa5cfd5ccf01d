"""The stores' job tables on both backends: parts, claims under leases, progress only while the lease
is held, rejects by line (a row rejected again replaces its entry), the end with its audit entry in
the same transaction, release, requeue, listing and finding a rerun."""

from __future__ import annotations

import dataclasses

import pytest

from registry.stores import open_store
from registry.stores.base import AuditRecord, JobRecord, JobReject

NOW = 1_790_000_000


def audit(action: str, target: str) -> AuditRecord:
    return AuditRecord(NOW, "300:0.NA/88.118.8.1001", action, target, "test", "{}")


def job(n: int, prefix: str = "88.118.8.1001", sha: str = "a" * 64, owner: str = "300:0.NA/88.118.8.1001") -> JobRecord:
    return JobRecord(
        f"{n:032x}", 0, "import", prefix, owner, "queued", "csv", "{}", sha, 100, 2, created_at=NOW, updated_at=NOW
    )


@pytest.fixture
async def store(store_url):  # type: ignore[no-untyped-def]
    s = await open_store(store_url)
    yield s
    await s.close()


async def test_a_job_is_added_with_its_audit_entry_and_its_file(store):
    await store.add_job_part(job(1).id, 0, b"suffix,URL\n")
    await store.add_job_part(job(1).id, 1, b"A,https://x\n")
    added = await store.add_job(job(1), audit=audit("job.submit", job(1).id))
    assert added.seq > 0 and dataclasses.replace(added, seq=0) == job(1)
    assert await store.get_job(job(1).id) == added
    assert [await store.job_part(added.id, n) for n in range(3)] == [b"suffix,URL\n", b"A,https://x\n", None]
    (entry,) = await store.list_audit(limit=5)
    assert (entry.action, entry.target) == ("job.submit", added.id)
    assert await store.get_job("f" * 32) is None


async def test_claims_leases_progress_and_the_end(store):
    for n in (1, 2):
        await store.add_job(job(n), audit=audit("job.submit", job(n).id))
    first = await store.claim_job("runner-a", now=NOW, lease_until=NOW + 30)
    assert first is not None and (first.id, first.state, first.runner, first.started_at) == (
        job(1).id,
        "running",
        "runner-a",
        NOW,
    )
    second = await store.claim_job("runner-b", now=NOW, lease_until=NOW + 30)
    assert second is not None and second.id == job(2).id
    assert await store.claim_job("runner-c", now=NOW + 10, lease_until=NOW + 40) is None  # both held
    assert await store.unfinished_jobs("88.118.8.1001") == 2
    assert await store.job_counts() == {"running": 2}
    assert await store.job_counts_by_kind() == {("import", "running"): 2}

    progress = dataclasses.replace(first, total=10, processed=4, created=3, rejected=1, line=5, offset=80)
    rejects = [JobReject(3, "88.118.8.1001/x", 202, "bad value")]
    assert await store.save_job_progress(progress, rejects, lease_until=NOW + 60)
    again = [JobReject(3, "88.118.8.1001/x", 202, "bad value, again"), JobReject(9, None, 4, "not JSON")]
    later = dataclasses.replace(progress, processed=9, line=9)
    assert await store.save_job_progress(later, again, lease_until=NOW + 60)
    assert await store.job_rejects(first.id, after_line=0, limit=10) == again  # line 3 once, its latest reason
    assert await store.job_rejects(first.id, after_line=3, limit=10) == again[1:]
    stored = await store.get_job(first.id)
    assert stored is not None and (stored.total, stored.processed, stored.line, stored.offset) == (10, 9, 9, 80)

    # runner-a's lease runs out: runner-c takes the job over, and runner-a can no longer write its progress.
    taken = await store.claim_job("runner-c", now=NOW + 61, lease_until=NOW + 90)
    assert taken is not None and taken.id == first.id and taken.runner == "runner-c" and taken.line == 9
    assert not await store.save_job_progress(progress, rejects, lease_until=NOW + 99)
    assert not await store.renew_job(first.id, "runner-a", lease_until=NOW + 99)
    assert not await store.finish_job(dataclasses.replace(progress, state="done"), audit=audit("job.done", first.id))
    assert await store.renew_job(first.id, "runner-c", lease_until=NOW + 120)

    done = dataclasses.replace(taken, state="done", processed=10, created=9, finished_at=NOW + 70, updated_at=NOW + 70)
    await store.add_job_part(first.id, 0, b"data")
    assert await store.finish_job(done, audit=audit("job.done", first.id))
    ended = await store.get_job(first.id)
    assert ended is not None and (ended.state, ended.runner, ended.processed, ended.finished_at) == (
        "done",
        None,
        10,
        NOW + 70,
    )
    assert await store.job_part(first.id, 0) is None  # the file is dropped with the end
    assert [e.action for e in await store.list_audit(limit=10)] == ["job.done", "job.submit", "job.submit"]

    # Stopping: runner-b gives its job back, and the next claim takes it at once.
    assert await store.release_job(second.id, "runner-b", now=NOW + 5)
    assert not await store.release_job(second.id, "runner-b", now=NOW + 5)
    back = await store.claim_job("runner-d", now=NOW + 6, lease_until=NOW + 36)
    assert back is not None and back.id == second.id


async def test_a_failed_job_is_queued_again_from_its_checkpoint(store):
    await store.add_job(job(1), audit=audit("job.submit", job(1).id))
    claimed = await store.claim_job("r", now=NOW, lease_until=NOW + 30)
    assert claimed is not None
    failed = dataclasses.replace(claimed, state="failed", error="boom", line=7, processed=6, finished_at=NOW)
    assert await store.finish_job(failed, audit=audit("job.failed", claimed.id))
    assert await store.job_counts() == {"failed": 1}
    assert await store.job_counts_by_kind() == {("import", "failed"): 1}
    assert not await store.requeue_job("f" * 32, parts=1, now=NOW, audit=audit("job.resume", "x"))
    assert await store.requeue_job(claimed.id, parts=3, now=NOW + 1, audit=audit("job.resume", claimed.id))
    assert not await store.requeue_job(claimed.id, parts=3, now=NOW + 1, audit=audit("job.resume", claimed.id))
    queued = await store.get_job(claimed.id)
    assert queued is not None and (queued.state, queued.error, queued.line, queued.file_parts) == ("queued", None, 7, 3)
    assert [e.action for e in await store.list_audit(limit=10)] == ["job.resume", "job.failed", "job.submit"]


async def test_listing_and_finding_reruns(store):
    await store.add_job(job(1), audit=audit("job.submit", "1"))
    await store.add_job(job(2, prefix="88.118.8.1002", owner="300:0.NA/88.118.8.1002"), audit=audit("job.submit", "2"))
    await store.add_job(job(3, sha="b" * 64), audit=audit("job.submit", "3"))
    ids = [j.id for j in await store.list_jobs(prefix=None, owner=None, limit=10)]
    assert ids == [job(3).id, job(2).id, job(1).id]
    assert [j.id for j in await store.list_jobs(prefix="88.118.8.1001", owner=None, limit=10)] == [job(3).id, job(1).id]
    second = await store.get_job(job(2).id)
    assert second is not None
    assert [j.id for j in await store.list_jobs(prefix=None, owner=None, limit=10, before_seq=second.seq)] == [
        job(1).id
    ]
    mine = await store.list_jobs(prefix=None, owner="300:0.NA/88.118.8.1002", limit=10)
    assert [j.id for j in mine] == [job(2).id]
    assert [j.id for j in await store.list_jobs(prefix=None, owner=None, limit=1)] == [job(3).id]
    found = await store.find_job("import", "88.118.8.1001", "a" * 64, "{}")
    assert found is not None and found.id == job(1).id
    assert await store.find_job("delete", "88.118.8.1001", "a" * 64, "{}") is None
    assert await store.find_job("import", "88.118.8.1001", "a" * 64, '{"template":"x@1"}') is None


async def test_counts_by_kind_and_state_cover_every_job(store):
    """Exact counts over the whole table (the jobs gauge reads them): not a window of the newest."""
    kinds = ["import", "replace", "delete"]
    for n in range(1, 31):
        queued = dataclasses.replace(job(n), kind=kinds[n % 3])
        await store.add_job(queued, audit=audit("job.submit", queued.id))
    claimed = await store.claim_job("r", now=NOW, lease_until=NOW + 30)  # the oldest: job 1, a replace
    assert claimed is not None and claimed.kind == "replace"
    assert await store.job_counts_by_kind() == {
        ("delete", "queued"): 10,
        ("import", "queued"): 10,
        ("replace", "queued"): 9,
        ("replace", "running"): 1,
    }
    assert await store.job_counts() == {"queued": 29, "running": 1}
