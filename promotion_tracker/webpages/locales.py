"""Which language a page is rendered in, decided in one place, and the message catalogues.

Order (as pypi/warehouse does it): the ``lang`` query parameter, then a ``lang`` cookie, then the
best match in ``Accept-Language``, then Chinese. Catalogues are the ``.po`` files themselves, read
with Babel when first needed: there is no compile step, so a fresh clone, ``pip install -e .`` and CI
all work from the sources. Message ids are English; ``en`` needs no catalogue.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web
from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALES",
    "babel_locale",
    "choose_locale",
    "negotiate_locale",
    "parse_accept_language",
    "translations",
]

LOCALES: tuple[str, ...] = ("zh", "en")
DEFAULT_LOCALE = "zh"
_BABEL = {"zh": "zh_Hans_CN", "en": "en"}
DOMAIN = "messages"
_catalogue_dirs: list[Path] = []


def babel_locale(code: str) -> Locale:
    return Locale.parse(_BABEL.get(code, _BABEL[DEFAULT_LOCALE]))


def _known(tag: str | None) -> str | None:
    """``zh-CN``, ``zh_Hans``, ``ZH`` → ``zh``; None for a language without pages."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LOCALES else None


def parse_accept_language(header: str) -> list[str]:
    """Language tags by preference (q-values honoured, ties in header order, q=0 dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, i, tag.strip()))
    return [tag for _, _, tag in sorted(ranked)]


def choose_locale(query_lang: str | None, cookie_lang: str | None, accept_language: str | None) -> str:
    """A page's language from the ``lang`` query parameter, the ``lang`` cookie and ``Accept-Language``."""
    for explicit in (query_lang, cookie_lang):
        code = _known(explicit)
        if code:
            return code
    for tag in parse_accept_language(accept_language or ""):
        code = _known(tag)
        if code:
            return code
    return DEFAULT_LOCALE


def negotiate_locale(request: web.Request) -> str:
    """The one place that picks a page's language (:func:`choose_locale` of the request's inputs)."""
    return choose_locale(request.query.get("lang"), request.cookies.get("lang"), request.headers.get("Accept-Language"))


def add_catalogue_dir(path: Path) -> None:
    """Register a ``locale/`` directory (``<lang>/LC_MESSAGES/messages.po``); later ones add to earlier."""
    if path not in _catalogue_dirs:
        _catalogue_dirs.append(path)
        translations.cache_clear()


def _load_po(path: Path, code: str) -> Translations:
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=_BABEL[code], domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(buf, domain=DOMAIN)


@functools.cache
def translations(code: str) -> NullTranslations:
    """The merged catalogues of every registered directory for ``code`` (English: none needed)."""
    merged: NullTranslations = NullTranslations()
    found: Iterable[Path] = (d / code / "LC_MESSAGES" / f"{DOMAIN}.po" for d in _catalogue_dirs)
    for po in found:
        if not po.is_file():
            continue
        loaded = _load_po(po, code)
        if isinstance(merged, Translations):
            merged.merge(loaded)
        else:
            merged = loaded
    return merged
