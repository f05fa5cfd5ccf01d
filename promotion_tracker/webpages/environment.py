"""The Jinja2 environment of the node's pages (through aiohttp-jinja2) and how a page is rendered.

``setup_pages(app, *sources)`` is called once per application with the template and catalogue
directories of every package that serves pages; this package's own ``templates/`` (``base.html``,
``error.html``) always comes first, so every page can ``{% extends "base.html" %}``. Views pass a
context dict to :func:`render_page` and never build HTML in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from promotion_tracker.webpages import formatting
from promotion_tracker.webpages.locales import LOCALES, add_catalogue_dir, negotiate_locale, translations

__all__ = ["BASE_TEMPLATES", "PageSources", "make_environment", "render_page", "setup_pages", "url_with"]

BASE_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class PageSources:
    """Where a package keeps its page templates and its ``locale/`` catalogues."""

    templates: Path
    catalogues: Path | None = None


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    return translations(context.get("locale", LOCALES[0])).gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return translations(context.get("locale", LOCALES[0])).ngettext(singular, plural, n)


def _with_locale(fn: Any) -> Any:
    @jinja2.pass_context
    def filter_(context: jinja2.runtime.Context, value: Any) -> str:
        return "" if value is None else fn(value, context.get("locale", LOCALES[0]))

    return filter_


def url_with(path: str, params: Mapping[str, Any]) -> str:
    """``path?query`` from a mapping; list values repeat the parameter, None and "" are left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for v in value if isinstance(value, list | tuple) else [value]:
            if v is not None and v != "":
                pairs.append((key, str(v)))
    return f"{path}?{urlencode(pairs)}" if pairs else path


def make_environment(*sources: PageSources) -> jinja2.Environment:
    """The environment alone (also what the template tests render with)."""
    dirs = [BASE_TEMPLATES, *(s.templates for s in sources)]
    for s in sources:
        if s.catalogues is not None:
            add_catalogue_dir(s.catalogues)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.filters["number"] = _with_locale(formatting.format_number)
    env.filters["money"] = _with_locale(formatting.format_money)
    env.filters["date"] = _with_locale(formatting.format_date)
    env.filters["datetime"] = _with_locale(formatting.format_datetime)
    env.filters["month"] = _with_locale(formatting.format_month)
    env.filters["month_short"] = _with_locale(formatting.format_month_short)
    env.filters["year"] = _with_locale(formatting.format_year)
    env.globals["url_with"] = url_with
    env.globals["locales"] = LOCALES
    return env


def setup_pages(app: web.Application, *sources: PageSources) -> jinja2.Environment:
    """Install the page environment on ``app`` (once, with every package's sources)."""
    env = make_environment(*sources)
    app[aiohttp_jinja2.APP_KEY] = env
    return env


def render_page(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Render ``template`` in the negotiated language. ``context`` gets ``locale`` and
    ``language_links`` (this page in each language); the reply varies with the language inputs."""
    locale = negotiate_locale(request)
    query = {k: request.query.getall(k) for k in request.query if k != "lang"}
    links = {code: url_with(request.path, {**query, "lang": code}) for code in LOCALES}
    full = {"locale": locale, "language_links": links, **context}
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    response.headers["Content-Language"] = "zh-CN" if locale == "zh" else locale
    response.headers["Vary"] = "Accept-Language, Cookie"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
