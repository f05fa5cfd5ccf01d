"""The console's one script, ``/console/static/progress.js``: the upload's progress on the import form
and a job's counts kept current on its page (:mod:`resolver.console.imports`). Every page works
without it; the content security policy (:mod:`resolver.console.site`) lets pages load scripts from
this site only (``script-src 'self'``: no inline script, no ``eval``).

Its address carries a hash of its text (:data:`SCRIPT_URL`), so a browser may keep it for a year and
still gets a changed script at once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aiohttp import web

__all__ = ["SCRIPT_URL", "script_routes"]

script_routes = web.RouteTableDef()
SCRIPT = (Path(__file__).parent / "static" / "progress.js").read_bytes()
SCRIPT_VERSION = hashlib.sha256(SCRIPT).hexdigest()[:12]
SCRIPT_URL = f"/console/static/progress.js?v={SCRIPT_VERSION}"
CACHE = "public, max-age=31536000, immutable"


@script_routes.get("/console/static/progress.js")
async def progress_script(request: web.Request) -> web.Response:
    headers = {"Cache-Control": CACHE if request.query.get("v") == SCRIPT_VERSION else "no-cache"}
    return web.Response(body=SCRIPT, content_type="text/javascript", charset="utf-8", headers=headers)
