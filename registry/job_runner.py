"""The node's job runner: takes queued jobs from the store and runs them in the background.

Each worker process runs one (started by the app's lifecycle). It claims at most ``workers`` jobs
at a time from the store — the oldest queued, or one whose runner's lease ran out (that worker
died) — and holds each under a lease it renews every third of ``lease_seconds``. A job runs
through :func:`registry.job_run.run_rows` with the rights its owner has now, its checkpoint and
counts stored after every chunk (only while the lease is still this runner's), so every worker of
every node sharing the store sees its progress, and after a crash another runner — or the same
node, restarted — resumes it from the checkpoint once the lease has run out. Stopping the node
ends each job after the chunk being read and gives it back to the queue at once.

An ``observer`` (:class:`registry.job_events.JobObserver`; the node's metrics) hears of the rows
each stored checkpoint adds, by outcome, and of every job's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import hashlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from registry import offload
from registry.audit import audit_record, set_source
from registry.auth import Identity
from registry.errors import HandleError, InvalidRequest, ServerBusy, StoreUnavailable
from registry.job_events import JobObserver, row_counts
from registry.job_run import Tally, enterprise_admin, run_rows
from registry.jobs import JobService, job_file
from registry.offload import HelperStopped
from registry.private_files import private_dir
from registry.rows import cells_path, write_cells
from registry.stores.base import JobRecord, JobReject
from registry.tasks import cancel_and_wait

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)
HELPER_DEATHS = 3  # times the helper process may die under one job before the job fails
POLL_SECONDS = 2.0  # how often an idle runner looks for claimable jobs
STOP_WAIT = 30.0  # seconds close() waits for running jobs to end their chunk


class _LeaseLost(Exception):
    """Another runner holds the job now (this one was too slow to renew its lease)."""


class JobRunner:
    """Runs the store's jobs in this process, ``workers`` at a time."""

    def __init__(
        self,
        registry: Any,
        workdir: str,
        *,
        workers: int = 2,
        lease_seconds: int = 30,
        chunk: int = 1000,
        chunk_seconds: float = 1.0,
        observer: JobObserver | None = None,
    ) -> None:
        self.registry = registry
        self.jobs = JobService(registry)
        self.store = registry.store
        self.workdir = workdir
        self.workers = workers
        self.lease_seconds = lease_seconds
        self.chunk = chunk
        self.chunk_seconds = chunk_seconds
        self.observer = observer
        self._observed: dict[str, Tally] = {}  # per running job: the counts the observer heard of
        self._helper_deaths: dict[str, int] = {}  # per job: how often the helper process died under it
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[str, asyncio.Task[None]] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.workers > 0 and self._task is None:
            private_dir(self.workdir)
            self._sweep()
            self._task = asyncio.create_task(self._loop(), name="idnode-job-runner")

    def nudge(self) -> None:
        """A job was queued here: look for it now rather than at the next poll."""
        self._wake.set()

    def _sweep(self) -> None:
        """Files of jobs this machine ran before it stopped: their jobs are resumed from the store. A
        spool is left ten minutes: the workers of one node share the directory, and a worker that
        starts must not take one another is writing."""
        for path in glob.glob(os.path.join(self.workdir, "*")):
            with contextlib.suppress(OSError):
                age = time.time() - os.path.getmtime(path)
                if age > 3600 or (path.endswith(".spool") and age > 600):
                    os.remove(path)

    async def _loop(self) -> None:
        set_source(f"idnode job runner {self.runner_id}")
        while not self._closing:
            try:
                while len(self.running) < self.workers and not self._closing:
                    now = self.registry.clock()
                    job = await self.store.claim_job(self.runner_id, now=now, lease_until=now + self.lease_seconds)
                    if job is None:
                        break
                    self._stops[job.id] = asyncio.Event()
                    task = asyncio.create_task(self._run(job), name=f"idnode-job-{job.id}")
                    self.running[job.id] = task
                    task.add_done_callback(lambda _t, jid=job.id: self._done(jid))
            except HandleError as exc:
                log.warning("job runner: cannot claim jobs: %s", exc.message)
            except Exception:
                log.exception("job runner: unexpected error while claiming jobs")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()

    def _done(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        self._stops.pop(job_id, None)
        self._observed.pop(job_id, None)
        self._wake.set()  # a slot is free

    async def close(self) -> None:
        """Stop claiming; let each running job write the chunk it reads and go back to the queue."""
        self._closing = True
        self._wake.set()
        for stop in self._stops.values():
            stop.set()
        if self.running:
            _, late = await asyncio.wait(list(self.running.values()), timeout=STOP_WAIT)
            for task in late:
                task.cancel()
        await cancel_and_wait(self._task)
        self._task = None

    # -- one job ---------------------------------------------------------------------------------
    async def _heartbeat(self, job: JobRecord, stop: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.lease_seconds / 3))
            try:
                kept = await self.store.renew_job(job.id, self.runner_id, lease_until=self._lease())
            except HandleError as exc:
                log.warning("job %s: lease not renewed: %s", job.id, exc.message)
                continue
            if not kept:
                log.warning("job %s: another runner holds it now; stopping here", job.id)
                stop.set()
                return

    def _lease(self) -> int:
        return self.registry.clock() + self.lease_seconds

    async def _file(self, job: JobRecord) -> str:
        """The job's file on this machine: the upload itself when it was received here, else read
        back from the store (and checked against its digest)."""
        path = job_file(self.workdir, job)
        if os.path.exists(path) and os.path.getsize(path) == job.file_bytes:
            return path
        spool = path + ".spool"
        sha = hashlib.sha256()
        with open(spool, "wb") as fh:
            for seq in range(job.file_parts):
                data = await self.store.job_part(job.id, seq)
                if data is None:
                    raise _Failed(f"part {seq} of the job's file is missing from the store")
                sha.update(data)
                await asyncio.to_thread(fh.write, data)
        if sha.hexdigest() != job.file_sha256:
            os.remove(spool)
            raise _Failed("the job's file in the store does not match its digest")
        os.replace(spool, path)
        return path

    async def _run(self, job: JobRecord) -> None:
        stop = self._stops[job.id]
        heartbeat = asyncio.create_task(self._heartbeat(job, stop))
        path = job_file(self.workdir, job)
        tally = Tally(
            **{f.name: getattr(job, f.name) for f in dataclasses.fields(Tally)},
        )
        self._observed[job.id] = dataclasses.replace(tally)
        finished = False
        try:
            path = await self._file(job)
            caller = await self.registry.caller_of(Identity.parse(job.owner))
            await self.jobs.require_submitter(caller, job.kind, job.prefix)  # its owner's rights now
            if job.fmt == "xlsx":  # its rows read once, in the helper process (registry.rows.write_cells)
                refused = await offload.run(write_cells, path)
                if refused is not None:
                    raise InvalidRequest(refused)
            reader = await self.jobs.reader(job, path)
            await asyncio.to_thread(reader.check)
            if tally.total is None:
                tally.total = await asyncio.to_thread(reader.count)
                await self._save(job, tally, [])

            async def checkpoint(done: Tally, rejects: list[JobReject]) -> None:
                await self._save(job, done, rejects)

            finished = await run_rows(
                self.registry,
                caller,
                reader,
                kind=job.kind,
                tally=tally,
                checkpoint=checkpoint,
                chunk=self.chunk,
                seconds=self.chunk_seconds,
                stop=stop,
                default_admin=await enterprise_admin(self.registry, caller, job.prefix),
            )
            if finished:
                await self._finish(job, tally, "done", None)
        except _LeaseLost:
            log.warning("job %s: another runner holds it now; stopped here", job.id)
        except StoreUnavailable as exc:  # the lease runs out, and a runner takes the job up again
            log.warning("job %s: paused, the store is unavailable: %s", job.id, exc.message)
        except HelperStopped as exc:  # the helper process died under it: released, taken up again
            deaths = self._helper_deaths[job.id] = self._helper_deaths.get(job.id, 0) + 1
            if deaths >= HELPER_DEATHS:  # the file itself kills it (out of memory, say): not again
                message = f"the node's helper process stopped {deaths} times reading this file"
                await self._finish(job, tally, "failed", message)
                finished = True
            else:
                log.warning("job %s: paused: %s", job.id, exc.message)
        except ServerBusy as exc:  # busy for now (secret checks): released, taken up again
            log.warning("job %s: paused: %s", job.id, exc.message)
        except (HandleError, _Failed) as exc:
            message = exc.message if isinstance(exc, HandleError) else str(exc)
            await self._finish(job, tally, "failed", message)
            finished = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed", job.id)
            await self._finish(job, tally, "failed", f"internal error ({type(exc).__name__}); see the node's log")
            finished = True
        finally:
            await cancel_and_wait(heartbeat)
            if not finished:
                with contextlib.suppress(HandleError):
                    await self.store.release_job(job.id, self.runner_id, now=self.registry.clock())
            if finished:
                self._helper_deaths.pop(job.id, None)
                for done in (path, cells_path(path)):
                    with contextlib.suppress(OSError):
                        os.remove(done)

    async def _save(self, job: JobRecord, tally: Tally, rejects: list[JobReject]) -> None:
        now = self.registry.clock()
        progress = dataclasses.replace(job, updated_at=now, **dataclasses.asdict(tally))
        if not await self.store.save_job_progress(progress, rejects, lease_until=now + self.lease_seconds):
            raise _LeaseLost
        self._observe_rows(job, tally)

    def _observe_rows(self, job: JobRecord, tally: Tally) -> None:
        """Tell the observer of the rows stored since it last heard of this job."""
        seen = self._observed.get(job.id)
        if self.observer is None or seen is None:
            return
        counts = row_counts(seen, tally)
        if counts:
            self._observed[job.id] = dataclasses.replace(tally)
            self.observer.rows(job.kind, counts)

    async def _finish(self, job: JobRecord, tally: Tally, state: str, error: str | None) -> None:
        now = self.registry.clock()
        end = dataclasses.replace(
            job, state=state, error=error, updated_at=now, finished_at=now, **dataclasses.asdict(tally)
        )
        counts = {k: v for k, v in dataclasses.asdict(tally).items() if k not in ("offset",)}
        detail = {"kind": job.kind, "prefix": job.prefix, **counts, **({"error": error} if error else {})}
        action = "job.done" if state == "done" else "job.failed"
        try:
            ended = await self.store.finish_job(
                end, audit=audit_record(self.registry.ns, job.owner, action, job.id, detail)
            )
        except HandleError as exc:
            log.warning("job %s: its end could not be recorded: %s", job.id, exc.message)
            return
        if ended:
            log.info("job %s %s: %s", job.id, state, counts)
            if self.observer is not None:
                self._observe_rows(job, tally)
                self.observer.ended(job.kind, state, max(0, now - (job.started_at or now)))


class _Failed(Exception):
    """The job cannot go on (its file is damaged): it fails with this message."""
