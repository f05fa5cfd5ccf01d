"""``GET /api/qr/{handle}`` (the QR code of a handle's public URL) and ``GET /api/labels`` (a PDF sheet of
labels for a prefix's handles).

A QR code is anonymous, like resolving: it encodes only the public URL, and it confirms that a handle
exists exactly as ``GET /api/handles/{handle}`` does (404 otherwise, through the same cached lookup).
A label sheet lists identifiers, so it takes the rights of listing them (the prefix's administrator or
the node administrator). Codes are made on worker threads, sheets in the node's helper process
(resolver.labels.renderer, registry.offload); a process takes at most ``SHEETS_AT_ONCE`` sheets at a time (503 with
Retry-After beyond), each of at most ``MAX_LABELS`` labels, read from the store ``CHUNK`` records
at a time.

Metrics (resolver.ops.metrics): codes served by format, made or from the cache; sheets made, their
labels and the seconds each took.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from contextlib import aclosing
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from aiohttp import web

from registry.auth import Caller
from registry.errors import HandleError, HandleNotFound, InvalidHandle, InvalidRequest, ServerBusy
from registry.inputs import parse_uint
from registry.model import HandleName, normalise_prefix
from registry.packing import unpack_record
from resolver.http.keys import CONFIG_KEY, registry_of, resolver_of
from resolver.http.public_url import handle_url, public_base_url
from resolver.http.web import request_caller
from resolver.labels.fields import FieldReader
from resolver.labels.layouts import Layout, layout_named
from resolver.labels.qr import MAX_SCALE, make_qr, png_bytes, svg_bytes
from resolver.labels.renderer import render_sheet
from resolver.labels.sheet import Label
from resolver.ops.metrics import LABEL_SHEET_SECONDS, LABEL_SHEETS, LABELS, QR_CODES

__all__ = ["LABELS_KEY", "LabelsState", "label_routes", "setup_labels"]

label_routes = web.RouteTableDef()

MAX_LABELS = 1000  # a request; a larger print run is several requests (from= the next suffix)
CHUNK = 100  # records read and laid out at a time
SHEETS_AT_ONCE = 2
CODES_AT_ONCE = 4
DEFAULT_SCALE = 8
CODE_CACHE_ENTRIES = 512
CODE_CACHE_MAX_BYTES = 65_536  # a larger image is made each time
CODE_MAX_AGE = 3600  # seconds a browser or CDN may keep a code
FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
MAX_FIELD_NAME = 64
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# (format, made for the request) -> its counter child, bound once
_CODES = {(kind, made): QR_CODES.labels(kind, str(made).lower()) for kind in FORMATS for made in (True, False)}


@dataclass
class LabelsState:
    """Per application: the bounds on concurrent work and the recently made codes."""

    sheets: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SHEETS_AT_ONCE))
    codes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CODES_AT_ONCE))
    made: OrderedDict[tuple[str, str, int], bytes] = field(default_factory=OrderedDict)

    async def code(self, url: str, kind: str, scale: int, title: str) -> bytes:
        key = (url, kind, scale)
        body = self.made.get(key)
        if body is not None:
            self.made.move_to_end(key)
            _CODES[kind, False].inc()
            return body
        async with self.codes:
            body = await asyncio.to_thread(_render, url, kind, scale, title)
        _CODES[kind, True].inc()
        if len(body) <= CODE_CACHE_MAX_BYTES:
            self.made[key] = body
            if len(self.made) > CODE_CACHE_ENTRIES:
                self.made.popitem(last=False)
        return body


LABELS_KEY = web.AppKey("labels", LabelsState)


def setup_labels(app: web.Application) -> None:
    app[LABELS_KEY] = LabelsState()
    app.router.add_routes(label_routes)


def _render(url: str, kind: str, scale: int, title: str) -> bytes:
    code = make_qr(url)
    return png_bytes(code, scale) if kind == "png" else svg_bytes(code, scale, title)


def _handle(request: web.Request) -> HandleName:
    """The handle from the raw path, percent-decoded strictly (invalid UTF-8: 102), as /api/handles does."""
    raw = request.raw_path.split("?", 1)[0]
    raw = raw[len("/api/qr/") :] if raw.startswith("/api/qr/") else request.match_info["handle"]
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidHandle("handle is not valid UTF-8", None) from None
    return registry_of(request).parse(text)


def _filename(handle: str, extension: str) -> str:
    """``inline`` with an ASCII name and the UTF-8 one (RFC 6266)."""
    flat = handle.replace("/", "_")
    plain = _FILENAME_UNSAFE.sub("_", flat)
    return f"inline; filename=\"{plain}.{extension}\"; filename*=UTF-8''{quote(flat, safe='')}.{extension}"


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


@label_routes.get("/api/qr/{handle:.+}")
async def qr_code(request: web.Request) -> web.Response:
    name = _handle(request)
    try:
        registry_of(request).require_responsible(name)
        record = await resolver_of(request).lookup(name.key)
        if record is None:
            raise HandleNotFound("Handle Not Found", name.text)
        kind = request.query.get("format", "svg").strip().lower()
        if kind not in FORMATS:
            raise InvalidRequest("format must be svg or png")
        raw_scale = request.query.get("scale", "").strip()
        scale = parse_uint(raw_scale, "scale", minimum=1, maximum=MAX_SCALE) if raw_scale else DEFAULT_SCALE
    except HandleError as exc:
        if exc.handle is None:
            exc.handle = name.text
        raise
    url = handle_url(public_base_url(request.app[CONFIG_KEY]), record.handle)
    digest = hashlib.sha256(f"{kind}\n{scale}\n{url}\n{record.handle}".encode()).hexdigest()[:32]
    headers = {
        "ETag": f'"{digest}"',
        "Cache-Control": f"public, max-age={CODE_MAX_AGE}",
        "Content-Disposition": _filename(record.handle, kind),
    }
    if _matches(request.headers.get("If-None-Match"), headers["ETag"]):
        return web.Response(status=304, headers=headers)
    try:
        body = await request.app[LABELS_KEY].code(url, kind, scale, record.handle)
    except HandleError as exc:
        exc.handle = name.text
        raise
    return web.Response(body=body, content_type=FORMATS[kind], headers=headers)


def _field_name(request: web.Request) -> str | None:
    name = request.query.get("field")
    if name is None or name.strip() == "":
        return None
    name = name.strip()
    if len(name) > MAX_FIELD_NAME or not name.isprintable():
        raise InvalidRequest(f"field must be a template field's name (at most {MAX_FIELD_NAME} printable characters)")
    return name


@label_routes.get("/api/labels")
async def label_sheet(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    caller.require_authenticated()
    prefix = request.query.get("prefix", "").strip()
    if not prefix:
        raise InvalidRequest("a label sheet needs ?prefix=")
    if prefix.upper().startswith("0.NA/"):
        prefix = prefix[5:]
    layout = layout_named(request.query.get("layout"))
    raw_count = request.query.get("count", "").strip()
    count = parse_uint(raw_count, "count", minimum=1, maximum=MAX_LABELS) if raw_count else layout.per_page
    start = request.query.get("from") or None
    field_name = _field_name(request)
    state = request.app[LABELS_KEY]
    if state.sheets.locked():
        raise ServerBusy(f"{SHEETS_AT_ONCE} label sheets are being made; try again shortly", retry_after=5)
    async with state.sheets:
        started = time.perf_counter()
        pdf, labels = await _make_sheet(request, caller, prefix, start, count, layout, field_name)
        LABEL_SHEET_SECONDS.observe(time.perf_counter() - started)
    LABEL_SHEETS.inc()
    LABELS.inc(labels)
    headers = {
        "Content-Disposition": f'inline; filename="labels-{_FILENAME_UNSAFE.sub("_", prefix)}.pdf"',
        "Cache-Control": "no-store",
    }
    return web.Response(body=pdf, content_type="application/pdf", headers=headers)


async def _make_sheet(
    request: web.Request,
    caller: Caller,
    prefix: str,
    start: str | None,
    count: int,
    layout: Layout,
    field_name: str | None,
) -> tuple[bytes, int]:
    """Read the handles chunk by chunk and lay each chunk out on a worker thread; the PDF at the end
    and how many labels it holds."""
    registry = registry_of(request)
    config = request.app[CONFIG_KEY]
    base = public_base_url(config)
    reader = FieldReader(registry, normalise_prefix(prefix), field_name) if field_name else None
    labels = []
    async with aclosing(registry.handles_from(caller, prefix, start, count, chunk=CHUNK)) as chunks:
        async for rows in chunks:
            for row in rows:
                note = await reader.value(unpack_record(row.packed)) if reader is not None else None
                labels.append(Label(row.handle, handle_url(base, row.handle), note))
    if not labels:
        raise HandleNotFound(f"no handles under {prefix} to print", prefix)
    return await render_sheet(layout, f"idnode labels {prefix}", config.label_font, labels), len(labels)
