"""The few lines ``idnode serve`` prints once it is ready: where it listens, where its data lives,
the node administrator's identity in the forms clients take, the secret when one was just
generated (that once only), and how to stop it. Logs stay on standard error; this goes to
standard output, for the person who started the node."""

from __future__ import annotations

import importlib.metadata
import ipaddress
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from registry.stores import store_class
from registry.stores.sqlite import SQLiteStore, database_file
from resolver.cache.shared import without_password
from resolver.config import Config

__all__ = ["STARTUP_KEY", "StartupFacts", "banner", "secret_notice"]


@dataclass
class StartupFacts:
    """What the app's startup learnt that the banner tells (filled in by its lifecycle and the native
    listeners of resolver.server.node_app)."""

    generated_secret: str | None = None  # a node administrator secret generated on this start
    native_bound: bool | None = None  # whether this process bound the native port; None: not known here


STARTUP_KEY: web.AppKey[StartupFacts] = web.AppKey("startup", StartupFacts)


def _version() -> str:
    try:
        return importlib.metadata.version("idnode")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _where_data(config: Config) -> str:
    try:
        embedded = store_class(config.store_url) is SQLiteStore
    except ValueError:
        embedded = False
    if embedded:
        return f"SQLite {database_file(config.store_url) or ':memory:'}"
    url, had_password = without_password(config.store_url)
    return url + (" (password not shown)" if had_password else "")


def _advertised(config: Config) -> str | None:
    """A note when clients are told another address than the one listened on."""
    try:
        listening = ipaddress.ip_address(config.host)
    except ValueError:
        listening = None
    if config.advertise_host and config.advertise_host != config.host:
        return f"HS_SITE of 0.NA/{config.prefix} advertises {config.advertise_host}"
    if listening is not None and listening.is_unspecified:
        return "HS_SITE advertises 127.0.0.1: set advertise_host to the address clients use (--advertise-host)"
    return None


def admin_identity(config: Config) -> tuple[str, str]:
    """The node administrator's identity, and its percent-encoded form (curl -u, pyhandle)."""
    identity = f"300:0.NA/{config.prefix}"
    return identity, quote(identity, safe="")


def secret_notice(config: Config, secret: str) -> str:
    identity, _ = admin_identity(config)
    return f"secret   {secret}\n         new key of {identity}: shown this once, only its hash is stored"


def banner(config: Config, facts: StartupFacts, *, pid: int) -> str:
    scheme = "https" if config.tls_cert else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    base = f"{scheme}://{host}:{config.port}"
    identity, encoded = admin_identity(config)
    lines = [
        f"idnode {_version()} serving node prefix {config.prefix}",
        f"  HTTP     {base}   (try: curl {base}/api/handles/0.NA/{config.prefix})",
    ]
    if not config.native_port:
        native = "off (native_port 0): HTTP only"
    elif facts.native_bound is False:
        native = f"port {config.native_port} could not be bound (see the warning above): HTTP only"
    else:
        native = f"Handle protocol on UDP and TCP {host}:{config.native_port}"
        if facts.native_bound is None and config.workers > 1:
            native += " (each worker binds it)"
    lines.append(f"  native   {native}")
    note = _advertised(config)
    if note:
        lines.append(f"           {note}")
    lines.append(f"  data     {_where_data(config)}")
    lines.append(f"  admin    {identity}   (as curl -u and pyhandle send it: {encoded})")
    if facts.generated_secret:
        lines += ["  " + line for line in secret_notice(config, facts.generated_secret).splitlines()]
    else:
        lines.append("  secret   not shown: only its hash is stored. Lost? idnode admin reset-secret")
    workers = f", {config.workers} workers" if config.workers > 1 else ""
    lines.append(f"  stop     Ctrl-C, or kill -TERM {pid}{workers} (requests in flight finish first)")
    return "\n".join(lines)
