"""Which URLs the node sends a browser to, and in what form.

Only ``http`` and ``https`` URLs with a host are followed or shown as links: never ``javascript:``,
``data:`` or ``file:``, whatever a value holds. A URL value is an IRI as often as not (Chinese paths,
spaces): it leaves as a URI, with everything outside ASCII's printable characters percent-encoded,
so a ``Location`` header or an ``href`` can carry it and nothing in it can end a header line.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

__all__ = ["MAX_URL_LENGTH", "append_to", "safe_url", "value_text"]

MAX_URL_LENGTH = 4096  # characters of a URL the node redirects to or links (after encoding)
_SCHEMES = frozenset({"http", "https"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What stays as it is: the URI's reserved and unreserved characters and "%" (already-encoded bytes).
_KEEP = "!#$%&'()*+,-./:;=?@[]_~"


def value_text(data: bytes) -> str | None:
    """A value's data as text (UTF-8), or None for bytes that are not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def safe_url(text: str | None) -> str | None:
    """``text`` as a URI the node may redirect to or link, or None: an http(s) URL with a host,
    surrounding spaces dropped, no control characters, non-ASCII percent-encoded (UTF-8)."""
    if not text:
        return None
    text = text.strip(" ")
    if not text or len(text) > MAX_URL_LENGTH or _CONTROL.search(text):
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises for a port that is no number or out of range
    except ValueError:  # an invalid IPv6 literal, a bad port
        return None
    if parts.scheme.lower() not in _SCHEMES or not host:
        return None
    uri = quote(text, safe=_KEEP)
    return uri if len(uri) <= MAX_URL_LENGTH else None


def append_to(url: str, suffix: str) -> str | None:
    """``urlappend``: ``suffix`` added to the target as the DOI proxy does, or None when the result is
    no safe URL or names another scheme or host than ``url`` (``@evil.example`` would make the node
    an open redirect to any site)."""
    joined = safe_url(url + suffix)
    if joined is None:
        return None
    before, after = urlsplit(url), urlsplit(joined)
    if (before.scheme.lower(), before.netloc.lower()) != (after.scheme.lower(), after.netloc.lower()):
        return None
    return joined
