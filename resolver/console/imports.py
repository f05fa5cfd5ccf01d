"""The enterprise administrator's imports: a CSV or XLSX file uploaded from a form becomes a job of
the node's job machinery (:mod:`registry.jobs`, run by :mod:`registry.job_runner`, as ``POST
/api/jobs`` and ``idnode import`` do), a page follows its progress, and its rejected rows download as
CSV with the file's line numbers.

The job page stays current in two ways: with scripts, :mod:`resolver.console.scripts`' script asks
``/console/jobs/{id}/progress`` (the counts as JSON) every second and updates the page in place;
without, a ``<noscript>`` refresh reloads the page every ``REFRESH_SECONDS`` (never both: a
``Refresh`` header would reload the page under the script too). The import form posts the file
with the script (to show how much of it is sent) or as a plain form.

Rejected rows show their reason in the page's language (:mod:`resolver.console.reasons`).

The file is streamed to the jobs' private directory within ``job_max_bytes`` (a larger one gets a
page saying so, 413), hashed as it arrives and submitted as the signed-in identity under its own
prefix. Submitting the same file again while its job is unfinished, or after it failed, continues
that job; after it is done, a new job finds every row already registered and registers none twice.
The job pages show only the enterprise's own jobs: any other id is a 404.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import tempfile
from typing import Any

from aiohttp import BodyPartReader, web

from promotion_tracker.webpages import negotiate_locale
from promotion_tracker.webpages.locales import translations
from registry.errors import HandleError, HandleNotFound, InvalidRequest, PermissionDenied
from registry.jobs import JobOptions, job_file, job_json
from registry.model import normalise_prefix
from registry.private_files import private_dir
from registry.stores.base import JobRecord
from resolver.console.enterprise import templates_for
from resolver.console.forms import N_, active_fields
from resolver.console.guard import ENTERPRISE, CrossSiteRequest, SignedIn, check_origin, tokens_match
from resolver.console.reasons import reason_text
from resolver.console.signin import require
from resolver.console.site import render
from resolver.http.keys import CONFIG_KEY, STATE_KEY, registry_of
from resolver.http.statuses import http_status

__all__ = ["import_routes"]

import_routes = web.RouteTableDef()
CHUNK = 256 * 1024
MAX_FIELD = 4096  # bytes of a form field other than the file
RECENT_JOBS = 20
REJECTS_SHOWN = 20
REFRESH_SECONDS = 2  # how often a page of an unfinished job reloads itself without scripts
POLL_MS = 1000  # how often the page's script asks for the counts
STATE_LABELS = {"queued": N_("Queued"), "running": N_("Running"), "done": N_("Done"), "failed": N_("Failed")}
DRAIN_LIMIT = 64 << 20  # bytes of a too large upload read (and dropped) so that the browser sees the page
XLSX_MAGIC = b"PK\x03\x04"
FILE_TYPES = ".csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class _TooLarge(Exception):
    pass


async def _me(request: web.Request) -> SignedIn:
    me = await require(request, ENTERPRISE)
    assert me.enterprise is not None
    return me


def _runner(request: web.Request) -> Any:
    runner = request.app[STATE_KEY].jobs
    if runner is None:
        raise HandleNotFound("the node runs no jobs")
    return runner


def size_text(n: int) -> str:
    """Bytes as a person reads them: ``200 MiB``, ``4 KiB``, ``900 B``."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + " " + unit
    return f"{n} B"


# -- the form and the list -----------------------------------------------------------------------
async def _page(
    request: web.Request, me: SignedIn, *, error: str = "", detail: str = "", status: int = 200
) -> web.Response:
    assert me.enterprise is not None
    prefix = me.enterprise.prefix
    jobs = await _runner(request).jobs.list(me.caller, prefix=prefix, limit=RECENT_JOBS)
    templates = await templates_for(registry_of(request), prefix)
    context = {
        "prefix": prefix,
        "jobs": [_job_view(j) for j in jobs],
        "templates": [
            {"ref": f"{t.id}@{t.version}", "id": t.id, "fields": [f.name for f in active_fields(t)]} for t in templates
        ],
        "limit": size_text(request.app[CONFIG_KEY].job_max_bytes),
        "file_types": FILE_TYPES,
        "error": error,
        "detail": detail,
    }
    return render(request, "console/imports.html", context, me, status=status, nav="imports")


@import_routes.get("/console/imports")
async def imports_page(request: web.Request) -> web.Response:
    return await _page(request, await _me(request))


# -- the upload ----------------------------------------------------------------------------------
async def _field(part: BodyPartReader) -> str:
    data = b""
    while chunk := await part.read_chunk(1024):
        data += chunk
        if len(data) > MAX_FIELD:
            raise InvalidRequest(f"the form field {part.name} is too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"the form field {part.name} is not UTF-8") from None


async def _save(part: BodyPartReader, workdir: str, limit: int) -> tuple[str, int, str, bytes]:
    """The file part into a private file: (path, bytes, SHA-256, its first bytes); _TooLarge beyond ``limit``."""
    fd, path = tempfile.mkstemp(dir=workdir, prefix="console-", suffix=".tmp")
    sha, size, head = hashlib.sha256(), 0, b""
    try:
        with os.fdopen(fd, "wb") as fh:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                if len(head) < 8:
                    head += chunk[: 8 - len(head)]
                sha.update(chunk)
                fh.write(chunk)
    except BaseException:
        os.remove(path)
        raise
    return path, size, sha.hexdigest(), head


async def _drain(request: web.Request) -> None:
    """Read what is left of a refused upload (up to DRAIN_LIMIT), so the browser gets to read the page."""
    left = DRAIN_LIMIT
    while left > 0 and (chunk := await request.content.readany()):
        left -= len(chunk)


def _format(filename: str, head: bytes) -> str | None:
    """``xlsx`` for a workbook (a ZIP file), ``csv`` for text; None for what is neither."""
    name = filename.lower()
    if head.startswith(XLSX_MAGIC):
        return "xlsx" if not name.endswith(".csv") else None
    if name.endswith((".xlsx", ".xls", ".xlsm", ".zip", ".pdf", ".png", ".jpg", ".doc", ".docx")):
        return None
    return "csv"


@import_routes.post("/console/imports")
async def upload(request: web.Request) -> web.StreamResponse:
    """A ``multipart/form-data`` form: ``csrf``, ``template`` (optional, ``ID@VERSION``) and ``file``."""
    me = await _me(request)
    assert me.enterprise is not None
    check_origin(request)
    if request.content_type != "multipart/form-data":
        raise web.HTTPUnsupportedMediaType(reason="an import is sent from the console's upload form")
    limit = request.app[CONFIG_KEY].job_max_bytes
    too_large = N_("The file is larger than %(n)s, the most this node takes. Split it into smaller files.")
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        await _drain(request)
        return await _page(request, me, error=too_large, status=413)
    runner = _runner(request)
    private_dir(runner.workdir)
    fields: dict[str, str] = {}
    path, size, sha, head, filename = "", 0, "", b"", ""
    try:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise InvalidRequest("nested multipart forms are not taken")
                if part.name == "file" and not path:
                    filename = part.filename or ""
                    path, size, sha, head = await _save(part, runner.workdir, limit)
                elif part.name in ("csrf", "template") and part.name not in fields:
                    fields[part.name] = await _field(part)
                else:
                    await part.release()
        except _TooLarge:
            await _drain(request)
            return await _page(request, me, error=too_large, status=413)
        except (HandleError, web.HTTPException):
            raise
        except Exception:  # a malformed multipart body: aiohttp's parser raises several kinds
            raise InvalidRequest("the upload form could not be read") from None
        if not tokens_match(fields.get("csrf"), me.csrf):
            raise CrossSiteRequest("the form's security token is missing or wrong; reload the page and try again")
        if not path or size == 0:
            return await _page(request, me, error=N_("Choose a file to import (CSV or XLSX)."), status=400)
        fmt = _format(filename, head)
        if fmt is None:
            return await _page(request, me, error=N_("This is not a CSV or XLSX file."), status=400)
        template = fields.get("template") or None
        templates = await templates_for(registry_of(request), me.enterprise.prefix)
        if template is not None and template not in {f"{t.id}@{t.version}" for t in templates}:
            return await _page(request, me, error=N_("Choose one of the templates listed."), status=400)
        try:
            job, new = await runner.jobs.submit(
                me.caller,
                kind="import",
                prefix=me.enterprise.prefix,
                fmt=fmt,
                path=path,
                size=size,
                sha256=sha,
                options=JobOptions(template),
            )
        except HandleError as exc:
            if isinstance(exc, PermissionDenied):
                raise
            return await _page(
                request, me, error=N_("The file was not imported:"), detail=exc.message, status=http_status(exc.code)
            )
        kept = job_file(runner.workdir, job)
        if job.state == "queued" and not os.path.exists(kept):
            os.replace(path, kept)  # the runner on this machine reads it here, not from the store
    finally:
        if path and os.path.exists(path):
            os.remove(path)
    runner.nudge()
    raise web.HTTPSeeOther(f"/console/jobs/{job.id}" + ("" if new else "?continued=1"))


# -- one job -------------------------------------------------------------------------------------
async def _job(request: web.Request, me: SignedIn) -> JobRecord:
    """The job of the path, if it is one of the enterprise's own prefix (404 otherwise, whoever's it is)."""
    assert me.enterprise is not None
    job_id = request.match_info["id"]
    try:
        job = await _runner(request).jobs.get(me.caller, job_id)
    except PermissionDenied:
        job = None
    if job is None or normalise_prefix(job.prefix) != normalise_prefix(me.enterprise.prefix):
        raise HandleNotFound(f"no job {job_id[:40]} of prefix {me.enterprise.prefix}")
    return job


def _job_view(job: JobRecord) -> dict[str, Any]:
    view = job_json(job)
    total = job.total or 0
    view["percent"] = 100 if job.state == "done" else (min(99, job.processed * 100 // total) if total else 0)
    view["unfinished"] = job.state in ("queued", "running")
    view["template"] = view["options"].get("template") or ""
    view["submitted_at"] = dt.datetime.fromtimestamp(job.created_at or 0, dt.UTC)
    return view


@import_routes.get("/console/jobs/{id}")
async def job_page(request: web.Request) -> web.Response:
    me = await _me(request)
    job = await _job(request, me)
    locale = negotiate_locale(request)
    rejects = []
    if job.rejected:
        found = await _runner(request).jobs.rejects(me.caller, job.id, after_line=0, limit=REJECTS_SHOWN)
        rejects = [
            {"line": r.line, "handle": r.handle, "reason": reason_text(locale, r.code, r.message)} for r in found
        ]
    unfinished = job.state in ("queued", "running")
    context = {
        "job": _job_view(job),
        "rejects": rejects,
        "refresh": REFRESH_SECONDS if unfinished else 0,  # a <noscript> refresh, for browsers without scripts
        "poll_url": f"/console/jobs/{job.id}/progress" if unfinished else "",
        "poll_ms": POLL_MS,
        "continued": request.query.get("continued") == "1",
    }
    return render(request, "console/job.html", context, me, nav="imports")


@import_routes.get("/console/jobs/{id}/progress")
async def job_progress(request: web.Request) -> web.Response:
    """The job's state and counts as JSON, for the script of its page (the enterprise's own jobs only)."""
    me = await _me(request)
    job = await _job(request, me)
    view = _job_view(job)
    label = translations(negotiate_locale(request)).gettext(STATE_LABELS.get(job.state, STATE_LABELS["failed"]))
    keys = ("state", "total", "processed", "created", "present", "rejected", "percent")
    return web.json_response({**{k: view[k] for k in keys}, "state_label": label, "error": bool(job.error)})


@import_routes.get("/console/jobs/{id}/rejects.csv")
async def job_rejects(request: web.Request) -> web.StreamResponse:
    """Every rejected row: its line in the file, the identifier, the response code, the registry's reason
    and the reason in the page's language.

    Both reasons, in fixed columns whatever the language: the people who fix the rows in a spreadsheet
    read the localized one (in Guangzhou, Chinese); the registry's own words stay for the tools that
    read the file and for asking support, who see the same words in the API and the node's log."""
    me = await _me(request)
    job = await _job(request, me)
    jobs = _runner(request).jobs
    locale = negotiate_locale(request)
    page = await jobs.rejects(me.caller, job.id, after_line=0, limit=1000)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="import-{job.id}-rejected.csv"',
        }
    )
    await response.prepare(request)
    out = io.StringIO()
    out.write("\ufeff")  # so that spreadsheet programs read the file as UTF-8
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["line", "handle", "responseCode", "reason", "localizedReason"])
    while True:
        for r in page:
            writer.writerow([r.line, r.handle or "", r.code, r.message, reason_text(locale, r.code, r.message)])
        await response.write(out.getvalue().encode("utf-8"))
        out.seek(0)
        out.truncate()
        if len(page) < 1000:
            break
        page = await jobs.rejects(me.caller, job.id, after_line=page[-1].line, limit=1000)
    await response.write_eof()
    return response
