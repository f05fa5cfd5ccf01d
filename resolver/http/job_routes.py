"""The jobs API: ``POST /api/jobs`` (a file becomes a background job), ``GET /api/jobs/{id}`` (its state
and counts), ``GET /api/jobs/{id}/rejects`` (the rows it rejected, by line), ``GET /api/jobs`` (the list).

The file is streamed to the data directory (``jobs/``, private) within ``job_max_bytes`` (413
above), hashed as it arrives, checked (its header), kept in the store and queued; the reply is 202
with the job's URL. The rules of jobs are in :mod:`registry.jobs`, their running in
:mod:`registry.job_runner`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from typing import Any

from aiohttp import web

from registry.errors import InvalidRequest
from registry.inputs import parse_uint
from registry.job_runner import JobRunner
from registry.jobs import JobOptions, job_file, job_json, reject_json
from registry.private_files import private_dir
from registry.stores.base import JobRecord
from resolver.http.bodies import BodyDecoder, body_coding
from resolver.http.keys import CONFIG_KEY, STATE_KEY
from resolver.http.web import error_response, json_response, request_caller

__all__ = ["CONTENT_TYPES", "job_routes"]

job_routes = web.RouteTableDef()
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CONTENT_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    XLSX_TYPE: "xlsx",
    "text/plain": "lines",
}
CHUNK = 256 * 1024
NO_STORE = {"Cache-Control": "no-store"}


class UploadTooLarge(InvalidRequest):
    """Answered 413."""


class UnsupportedFile(InvalidRequest):
    """A Content-Type the jobs API does not take: answered 415."""


def _runner(request: web.Request) -> JobRunner:
    runner = request.app[STATE_KEY].jobs
    assert runner is not None, "node not started"
    return runner


def _urls(job: JobRecord) -> dict[str, str]:
    return {"status_url": f"/api/jobs/{job.id}", "rejects_url": f"/api/jobs/{job.id}/rejects"}


def _body(job: JobRecord) -> dict[str, Any]:
    return {"responseCode": 1, **job_json(job), **_urls(job)}


def _number(request: web.Request, name: str, default: int, maximum: int, minimum: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return parse_uint(raw.strip(), name, minimum=minimum, maximum=maximum)


async def _receive(request: web.Request, workdir: str, limit: int) -> tuple[str, int, str]:
    """The body, decoded (gzip, deflate), into a private file: (path, bytes, SHA-256)."""
    coding = body_coding(request)
    decoder = BodyDecoder(coding) if coding is not None else None
    too_large = UploadTooLarge(f"the file is larger than {limit} bytes (job_max_bytes)")
    fd, path = tempfile.mkstemp(dir=workdir, prefix="upload-", suffix=".tmp")
    sha, size, sent = hashlib.sha256(), 0, 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.content.iter_chunked(CHUNK):
                sent += len(chunk)
                if sent > limit and decoder is None:
                    raise too_large
                pieces = decoder.feed(chunk) if decoder is not None else (chunk,)
                for piece in pieces:
                    size += len(piece)
                    if size > limit:
                        raise too_large
                    sha.update(piece)
                    fh.write(piece)
            if decoder is not None:
                decoder.close()
    except BaseException:
        os.remove(path)
        raise
    return path, size, sha.hexdigest()


@job_routes.post("/api/jobs")
async def submit_job(request: web.Request) -> web.Response:
    """``?kind=import|replace|delete&prefix=P[&template=ID@V][&column=NAME=TYPE@INDEX…]``, the file as
    the body → 202 and the job's URLs (``Location``: its state)."""
    caller = await request_caller(request)
    caller.require_authenticated()
    runner = _runner(request)
    config = request.app[CONFIG_KEY]
    kind = request.query.get("kind", "import")
    prefix = request.query.get("prefix", "")
    await runner.jobs.require_submitter(caller, kind, prefix)  # before the file is read
    fmt = CONTENT_TYPES.get(request.content_type)
    if fmt is None:
        shown = request.content_type or "none"
        error = UnsupportedFile(
            f"Content-Type {shown[:60]} is not a job file: send text/csv, application/x-ndjson, "
            f"{XLSX_TYPE}, or text/plain (a list of suffixes, for kind=delete)"
        )
        return error_response(request, error, 415)
    options = JobOptions(request.query.get("template"), request.query.getall("column", []))
    limit = config.job_max_bytes
    if request.content_length is not None and request.content_length > limit and body_coding(request) is None:
        return error_response(request, UploadTooLarge(f"the file is larger than {limit} bytes (job_max_bytes)"), 413)
    private_dir(runner.workdir)
    try:
        path, size, sha = await _receive(request, runner.workdir, limit)
    except UploadTooLarge as exc:
        return error_response(request, exc, 413)
    try:
        job, new = await runner.jobs.submit(
            caller, kind=kind, prefix=prefix, fmt=fmt, path=path, size=size, sha256=sha, options=options
        )
        kept = job_file(runner.workdir, job)
        if job.state == "queued" and not os.path.exists(kept):
            os.replace(path, kept)  # the runner on this machine reads it here, not from the store
    finally:
        if os.path.exists(path):
            os.remove(path)
    runner.nudge()
    body = {**_body(job), "continued": not new}
    return json_response(request, body, 202, headers={"Location": f"/api/jobs/{job.id}", **NO_STORE})


@job_routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """``?prefix=&limit=&before=``: jobs, newest first."""
    caller = await request_caller(request)
    limit = _number(request, "limit", 100, 1000, minimum=1)
    before = request.query.get("before") or None
    prefix = request.query.get("prefix") or None
    jobs = await _runner(request).jobs.list(caller, prefix=prefix, limit=limit, before=before)
    body: dict[str, Any] = {"responseCode": 1, "jobs": [{**job_json(j), **_urls(j)} for j in jobs]}
    if len(jobs) == limit:
        query = {k: v for k, v in request.query.items() if k != "before"}
        body["next"] = str(request.rel_url.with_query({**query, "before": jobs[-1].id}))
    return json_response(request, body, headers=NO_STORE)


@job_routes.get("/api/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    job = await _runner(request).jobs.get(caller, request.match_info["id"])
    return json_response(request, _body(job), headers=NO_STORE)


@job_routes.get("/api/jobs/{id}/rejects")
async def job_rejects(request: web.Request) -> web.StreamResponse:
    """``?after=LINE&limit=N`` (JSON, a page) or ``?format=csv`` (every rejected row, a download)."""
    caller = await request_caller(request)
    jobs = _runner(request).jobs
    job_id = request.match_info["id"]
    after = _number(request, "after", 0, 2**53)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("format is json or csv")
    if fmt == "json":
        limit = _number(request, "limit", 1000, 1000, minimum=1)
        rejects = await jobs.rejects(caller, job_id, after_line=after, limit=limit)
        body: dict[str, Any] = {"responseCode": 1, "id": job_id, "rejects": [reject_json(r) for r in rejects]}
        if len(rejects) == limit:
            body["next"] = str(request.rel_url.with_query({**request.query, "after": str(rejects[-1].line)}))
        return json_response(request, body, headers=NO_STORE)
    page = await jobs.rejects(caller, job_id, after_line=after, limit=1000)  # rights checked before streaming
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="job-{job_id}-rejects.csv"',
            **NO_STORE,
        }
    )
    await response.prepare(request)
    out = io.StringIO()
    out.write("\ufeff")  # so that spreadsheet programs read the file as UTF-8
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["line", "handle", "responseCode", "message"])
    while True:
        for r in page:
            writer.writerow([r.line, r.handle or "", r.code, r.message])
        await response.write(out.getvalue().encode("utf-8"))
        out.seek(0)
        out.truncate()
        if len(page) < 1000:
            break
        page = await jobs.rejects(caller, job_id, after_line=page[-1].line, limit=1000)
    await response.write_eof()
    return response
