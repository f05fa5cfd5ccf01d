"""The public URL of a handle: what QR codes and label sheets encode and what pages link to.

``{public_base_url}/{prefix}/{suffix}``, which the proxy route ``GET /{prefix}/{suffix}`` answers. The
suffix is UTF-8, percent-encoded except for unreserved characters (RFC 3986 ``A-Z a-z 0-9 - . _ ~``)
and its slashes, so ``88.118.8.1001/批次/7`` becomes ``/88.118.8.1001/%E6%89%B9%E6%AC%A1/7``: every
scanner and browser opens it as it is, and the slashes stay readable. A suffix that a browser or proxy
would rewrite if its slashes stayed raw — an empty, ``.`` or ``..`` segment (``a//b``, ``x/../y``,
``..``), which URL normalisation merges or drops — goes as one segment, its slashes and the one after
the prefix as ``%2F`` (``/88.118.8.1001%2Fx%2F..%2Fy``), which the proxy route takes as well.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

from resolver.config import Config

__all__ = ["handle_path", "handle_url", "public_base_url"]

_DOT_SEGMENTS = frozenset(("", ".", ".."))


def public_base_url(config: Config) -> str:
    """``public_base_url`` without a trailing slash; unset: ``http(s)://<host>[:<port>]`` from
    ``advertise_host`` or ``host`` (a wildcard address becomes 127.0.0.1) and ``port``."""
    if config.public_base_url:
        return config.public_base_url.rstrip("/")
    scheme = "https" if config.tls_cert else "http"
    host = config.advertise_host or config.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None  # a name, such as localhost
    if address is not None and address.is_unspecified:
        host = "127.0.0.1"
    elif address is not None and address.version == 6:
        host = f"[{host}]"
    port = "" if config.port == (443 if scheme == "https" else 80) else f":{config.port}"
    return f"{scheme}://{host}{port}"


def handle_path(handle: str) -> str:
    """The URL path of ``handle`` (``prefix/suffix``) under the public base URL, from its leading slash."""
    prefix, _, suffix = handle.partition("/")
    if any(segment in _DOT_SEGMENTS for segment in suffix.split("/")):
        return "/" + quote(handle, safe="")
    return f"/{quote(prefix, safe='')}/{quote(suffix, safe='/')}"


def handle_url(base: str, handle: str) -> str:
    """The public URL of ``handle`` under ``base`` (a :func:`public_base_url`)."""
    return base + handle_path(handle)
