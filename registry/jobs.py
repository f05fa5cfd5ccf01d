"""Jobs: work too big for one request (an import of millions of rows, a bulk replace or delete),
submitted as a file and run by the node in the background (registry.job_runner).

Who may do what:

- submit: the node administrator, or an administrator of the job's prefix (ADD_HANDLE on its
  prefix handle) while the enterprise is active; never the bureau's auditors;
- read a job, its rejected rows and the list: the node administrator, administrators of the job's
  prefix and the identity that submitted it; auditors may read the list and a job's state and
  counts (no identifiers: not its rejected rows).

A job's file is kept in the store (``job_parts``, 1 MiB each), so any worker of any node sharing
the store can run or resume it; it is dropped once the job is done or failed. Submitting the same
file again (same kind, prefix, template and columns) while its job is queued or running returns that
job; after it failed, the job is queued again and continues from its checkpoint; after it is done,
a new job runs and finds every row present. Every submission and every end is in the audit log,
stored with the change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

from registry import offload, valuedata
from registry.audit import audit_record
from registry.auth import Caller, Identity, has_right
from registry.errors import HandleNotFound, InvalidHandle, InvalidRequest, PermissionDenied, ServerBusy
from registry.job_run import KINDS
from registry.model import normalise_prefix, prefix_handle_of
from registry.rows import FORMATS, ColumnSpec, RowReader, check_file, parse_column
from registry.stores.base import JobRecord, JobReject
from registry.templates import Template, parse_version

__all__ = [
    "MAX_UNFINISHED",
    "PART_BYTES",
    "JobOptions",
    "JobService",
    "job_json",
    "reject_json",
]

PART_BYTES = 1 << 20  # a job's file is kept in the store in parts of this size
MAX_UNFINISHED = 10  # queued or running jobs per prefix; more are refused (503) until some finish
MAX_COLUMNS = 100  # column mappings of one job
MAX_PAGE = 1000


def _iso(ts: int | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_json(job: JobRecord) -> dict[str, Any]:
    """A job as the API shows it (the routes add its URLs)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "prefix": job.prefix,
        "state": job.state,
        "total": job.total,
        "processed": job.processed,
        "created": job.created,
        "replaced": job.replaced,
        "deleted": job.deleted,
        "present": job.present,
        "absent": job.absent,
        "rejected": job.rejected,
        "line": job.line,
        "error": job.error,
        "owner": job.owner,
        "format": job.fmt,
        "bytes": job.file_bytes,
        "sha256": job.file_sha256,
        "options": json.loads(job.options),
        "submitted": _iso(job.created_at),
        "started": _iso(job.started_at),
        "updated": _iso(job.updated_at),
        "finished": _iso(job.finished_at),
    }


def reject_json(r: JobReject) -> dict[str, Any]:
    return {"line": r.line, "handle": r.handle, "responseCode": r.code, "message": r.message}


class JobOptions:
    """What a job is asked to do besides its kind: a template the columns follow, column mappings."""

    def __init__(self, template: str | None = None, columns: Sequence[str] = ()) -> None:
        if len(columns) > MAX_COLUMNS:
            raise InvalidRequest(f"at most {MAX_COLUMNS} column mappings")
        self.columns: list[ColumnSpec] = [parse_column(c) for c in columns]
        self.template_ref = template
        if template is not None:
            ident, sep, version = template.partition("@")
            if not sep or parse_version(version) is None or not ident:
                raise InvalidRequest("template is ID@VERSION, e.g. sku-basic@2")

    def to_text(self) -> str:
        """The canonical JSON the store keeps (and compares, to find a rerun of the same job)."""
        return json.dumps(
            {"template": self.template_ref, "columns": [str(c) for c in self.columns]},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str) -> JobOptions:
        data = json.loads(text)
        return cls(data.get("template"), data.get("columns") or ())


class JobService:
    """Jobs as callers see them: submission, state, rejected rows, the list."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.ns = registry.ns
        self.store = registry.store

    # -- rights --------------------------------------------------------------------------------
    async def _prefix_record(self, prefix: str) -> Any:
        try:
            name = self.ns.parse(prefix_handle_of(prefix))
        except InvalidHandle:
            raise InvalidRequest(f"invalid prefix {prefix[:80]!r}") from None
        self.ns.require_responsible(name)
        record = await self.ns.read_record(name.key)
        if record is None:
            raise InvalidRequest(f"prefix {prefix} is not allocated on this node")
        return record

    async def _administers(self, identity: Identity, prefix: str, perm: int = valuedata.ADD_HANDLE) -> bool:
        try:
            record = await self._prefix_record(prefix)
        except InvalidRequest:
            return False
        return await has_right(identity, record, perm, self.ns.read_record)

    async def require_submitter(self, caller: Caller, kind: str, prefix: object) -> str:
        """The normalised prefix, if ``caller`` may submit a job of ``kind`` under it (checked
        before the file is read)."""
        identity = caller.require_authenticated()
        if caller.role == "auditor":
            raise PermissionDenied("the auditor identity cannot write")
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}")
        if not isinstance(prefix, str) or not prefix.strip():
            raise InvalidRequest("prefix is required: the prefix the job writes under")
        prefix = prefix.strip()
        record = await self._prefix_record(prefix)
        norm = normalise_prefix(prefix)
        if caller.node_admin:
            return norm
        perm = valuedata.DELETE_HANDLE if kind == "delete" else valuedata.ADD_HANDLE
        if not await has_right(identity, record, perm, self.ns.read_record):
            raise PermissionDenied(f"{identity} does not administer prefix {prefix}", prefix)
        enterprise = await self.store.get_enterprise(prefix)
        if enterprise is not None and enterprise.status != "active":
            raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled", prefix)
        return norm

    async def _may_read(self, caller: Caller, job: JobRecord, *, identifiers: bool) -> None:
        identity = caller.require_authenticated()
        if caller.node_admin or job.owner == str(identity):
            return
        if caller.role == "auditor":
            if identifiers:
                raise PermissionDenied("the auditor identity does not read identifiers")
            return
        if not await self._administers(identity, job.prefix, valuedata.LIST_HANDLES):
            raise PermissionDenied(f"{identity} may not read job {job.id}")

    # -- submission ---------------------------------------------------------------------------------
    async def template(self, prefix: str, options: JobOptions) -> Template | None:
        """The template the job's columns follow (the enterprise's own before a node-wide one)."""
        if options.template_ref is None:
            return None
        ident, _, version_text = options.template_ref.partition("@")
        version = parse_version(version_text)
        found = await self.registry.template(prefix, ident, version) or await self.registry.template("", ident, version)
        if found is None:
            raise InvalidRequest(f"no template {options.template_ref} for prefix {prefix}")
        return found

    async def reader(self, job: JobRecord, path: str) -> RowReader:
        options = JobOptions.from_text(job.options)
        kind = "delete" if job.kind == "delete" else "write"
        template = await self.template(job.prefix, options)
        return RowReader(
            path, job.fmt, prefix=job.prefix, kind=kind, template=template, columns=options.columns, read_cells=True
        )

    async def submit(
        self,
        caller: Caller,
        *,
        kind: str,
        prefix: str,
        fmt: str,
        path: str,
        size: int,
        sha256: str,
        options: JobOptions,
    ) -> tuple[JobRecord, bool]:
        """Queue a job for the file at ``path`` (already received: ``size`` bytes, digest
        ``sha256``); (the job, True) — or (the job of an earlier submission of this file that is
        unfinished or failed and now continues, False)."""
        norm = await self.require_submitter(caller, kind, prefix)
        if fmt not in FORMATS:
            raise InvalidRequest(f"unknown file format {fmt!r}")
        if size == 0:
            raise InvalidRequest("the file is empty")
        probe = JobRecord("", 0, kind, norm, str(caller.identity), "queued", fmt, options.to_text(), sha256, size, 0)
        reader = await self.reader(probe, path)
        # The header: refused now rather than in the background. A workbook's is read in the helper
        # process: opening one is seconds of pure Python (registry.offload).
        if fmt == "xlsx":
            refused = await offload.run(check_file, reader)
            if refused is not None:
                raise InvalidRequest(refused)
        else:
            await asyncio.to_thread(reader.check)
        earlier = await self.store.find_job(kind, norm, sha256, probe.options)
        if earlier is not None and earlier.state in ("queued", "running"):
            return earlier, False
        if earlier is not None and earlier.state == "failed":
            parts = await self._store_file(earlier.id, path)
            detail = {"line": earlier.line, "processed": earlier.processed}
            audit = audit_record(self.ns, caller, "job.resume", earlier.id, detail)
            if await self.store.requeue_job(earlier.id, parts=parts, now=self.ns.clock(), audit=audit):
                return (await self.store.get_job(earlier.id)) or earlier, False
        if await self.store.unfinished_jobs(norm) >= MAX_UNFINISHED:
            raise ServerBusy(
                f"{MAX_UNFINISHED} jobs of prefix {prefix} are queued or running: wait for one", retry_after=30
            )
        job_id = uuid.uuid4().hex
        parts = await self._store_file(job_id, path)
        now = self.ns.clock()
        job = JobRecord(
            job_id,
            0,
            kind,
            norm,
            str(caller.identity),
            "queued",
            fmt,
            probe.options,
            sha256,
            size,
            parts,
            created_at=now,
            updated_at=now,
        )
        detail = {"kind": kind, "prefix": norm, "format": fmt, "bytes": size, "sha256": sha256}
        return await self.store.add_job(job, audit=audit_record(self.ns, caller, "job.submit", job_id, detail)), True

    async def _store_file(self, job_id: str, path: str) -> int:
        seq = 0
        with open(path, "rb") as fh:
            while data := await asyncio.to_thread(fh.read, PART_BYTES):
                await self.store.add_job_part(job_id, seq, data)
                seq += 1
        return seq

    # -- reading -------------------------------------------------------------------------------------
    async def get(self, caller: Caller, job_id: str) -> JobRecord:
        job = await self.store.get_job(job_id) if _is_job_id(job_id) else None
        if job is None:
            raise HandleNotFound(f"no job {job_id[:40]}")
        await self._may_read(caller, job, identifiers=False)
        return job

    async def rejects(self, caller: Caller, job_id: str, *, after_line: int, limit: int) -> list[JobReject]:
        job = await self.get(caller, job_id)
        await self._may_read(caller, job, identifiers=True)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        return await self.store.job_rejects(job.id, after_line=after_line, limit=limit)

    async def list(
        self, caller: Caller, *, prefix: str | None, limit: int, before: str | None = None
    ) -> list[JobRecord]:
        """Newest first: the node administrator and auditors see every job (of ``prefix`` when
        given); an enterprise's administrator those of a prefix it administers (``prefix``), or
        else the ones it submitted."""
        identity = caller.require_authenticated()
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        before_seq = None
        if before is not None:
            mark = await self.store.get_job(before) if _is_job_id(before) else None
            if mark is None:
                raise InvalidRequest("before must be the id of a job")
            before_seq = mark.seq
        norm = normalise_prefix(prefix) if prefix else None
        if caller.node_admin or caller.role == "auditor":
            return await self.store.list_jobs(prefix=norm, owner=None, limit=limit, before_seq=before_seq)
        if norm is not None:
            if not await self._administers(identity, norm, valuedata.LIST_HANDLES):
                raise PermissionDenied(f"{identity} does not administer prefix {prefix}", prefix)
            return await self.store.list_jobs(prefix=norm, owner=None, limit=limit, before_seq=before_seq)
        return await self.store.list_jobs(prefix=None, owner=str(identity), limit=limit, before_seq=before_seq)


def _is_job_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def file_digest(path: str) -> str:
    """SHA-256 of a file, as the jobs API computes it over an upload."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(PART_BYTES):
            sha.update(data)
    return sha.hexdigest()


def job_file(workdir: str, job: JobRecord) -> str:
    """Where a worker keeps a job's file while it runs it."""
    return os.path.join(workdir, f"{job.id}.{job.fmt}")
