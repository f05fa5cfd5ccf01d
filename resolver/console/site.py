"""What every console page shares: its state, how pages are rendered and how errors reach a browser
(HTML pages, never JSON). The page modules import this one; :mod:`resolver.console.app` wires them.

:func:`console_pages` is the one middleware, and it does nothing outside ``/console``: inside,
it runs aiohttp-session with :class:`~resolver.console.sessions.ConsoleSessionStorage`, turns every
error into a page in the person's language (403, 404, 405, 429 with ``Retry-After``, 503, …),
remembers a ``?lang=`` choice in a cookie, and marks every answer ``no-store`` (unless the handler
chose its own caching, as the console's script does) with a content security policy that allows
scripts and requests only from this site (the one script of :mod:`resolver.console.scripts`; no
inline script, no ``eval``), no frames, and forms only to this site.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from babel.dates import format_timedelta

from promotion_tracker.webpages import LOCALES, PageSources, negotiate_locale, render_page
from promotion_tracker.webpages.locales import babel_locale
from registry.errors import HandleError
from resolver.console.forms import N_
from resolver.console.guard import SignedIn
from resolver.console.scripts import SCRIPT_URL
from resolver.console.sessions import ConsoleSessionStorage
from resolver.http.statuses import http_status
from resolver.http.throttle import TooManyFailures

__all__ = ["CONSOLE_KEY", "CONSOLE_PAGES", "ConsoleState", "clock_now", "console_state", "render"]

log = logging.getLogger("idnode.console")
CONSOLE_PAGES = PageSources(Path(__file__).parent / "templates", Path(__file__).parent / "locale")
PREFIX = "/console"
LANG_COOKIE_AGE = 365 * 86400
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# The headline of an error page by status (English message ids; the catalogue translates them).
HEADLINES = {
    400: N_("The request could not be answered"),
    401: N_("Please sign in"),
    403: N_("Not allowed"),
    404: N_("Page not found"),
    405: N_("Not allowed this way"),
    409: N_("Already there"),
    413: N_("Too large"),
    415: N_("Not a form of this console"),
    429: N_("Too many attempts"),
    503: N_("Busy or unavailable"),
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ConsoleState:
    storage: ConsoleSessionStorage
    sessions: Callable[..., Awaitable[web.StreamResponse]]  # aiohttp-session's middleware
    clock: Callable[[], int]


CONSOLE_KEY: web.AppKey[ConsoleState] = web.AppKey("console", ConsoleState)


def console_state(request: web.Request) -> ConsoleState:
    return request.app[CONSOLE_KEY]


def clock_now() -> int:
    return int(time.time())


@web.middleware
async def console_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside ``/console``: straight through. Inside: sessions, HTML errors, headers."""
    path = request.path
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return await handler(request)

    async def pages(req: web.Request) -> web.StreamResponse:
        try:
            return await handler(req)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_page(req, exc.status, "")
        except HandleError as exc:
            return _handle_error_page(req, exc)

    try:
        response = await console_state(request).sessions(request, pages)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    except HandleError as exc:  # the session store failed while the session was saved
        response = _handle_error_page(request, exc)
    except Exception:
        log.exception("console error on %s %s", request.method, request.path)
        response = error_page(request, 500, "internal error; the node's log has the details")
    cache = response.headers.get("Cache-Control")
    response.headers.update(SECURITY_HEADERS)
    if cache is not None:
        response.headers["Cache-Control"] = cache
    lang = request.query.get("lang")
    if lang in LOCALES and request.cookies.get("lang") != lang and isinstance(response, web.Response):
        response.set_cookie("lang", lang, path="/", max_age=LANG_COOKIE_AGE, samesite="Lax", httponly=True)
    return response


def _handle_error_page(request: web.Request, exc: HandleError) -> web.Response:
    if isinstance(exc, TooManyFailures):
        return error_page(request, 429, exc.message, retry_after=exc.retry_after)
    status = http_status(exc.code)
    retry = getattr(exc, "retry_after", None)
    return error_page(request, status, exc.message, retry_after=retry if status == 503 else None)


def error_page(request: web.Request, status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    """An error as a page: a headline in the page's language, the detail and a way back."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    locale = negotiate_locale(request)
    context = {
        "status": status,
        "headline": HEADLINES.get(status, N_("Something went wrong") if status >= 500 else HEADLINES[400]),
        "message": message,
        "wait": format_timedelta(retry_after or 0, threshold=1.5, locale=babel_locale(locale)),
        "me": None,
        "nav": "",
        "csrf": "",
    }
    return render_page(request, "console/error.html", context, status=status, headers=headers)


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    me: SignedIn | None,
    *,
    status: int = 200,
    nav: str = "",
) -> web.Response:
    """A console page: ``context`` plus who is signed in (for the menu) and the form token."""
    full = {"me": _me(me), "nav": nav, "csrf": me.csrf if me is not None else "", "script_url": SCRIPT_URL, **context}
    return render_page(request, template, full, status=status)


def _me(me: SignedIn | None) -> dict[str, Any] | None:
    if me is None:
        return None
    return {
        "identity": str(me.identity),
        "role": me.role,
        "prefix": me.enterprise.prefix if me.enterprise is not None else "",
        "name": me.enterprise.name if me.enterprise is not None else "",
    }
